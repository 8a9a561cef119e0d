import keras
import numpy as np
import pytest

from models.classifier import CELLS, ModelConfig, build_classifier


@pytest.mark.parametrize("cell", CELLS.names())
@pytest.mark.parametrize(
    ("bidirectional", "pooling", "layers"), [(False, "last", 2), (True, "mean", 1)]
)
def test_builds_every_cell(cell, bidirectional, pooling, layers):
    config = ModelConfig(
        cell=cell,
        layers=layers,
        units=8,
        bidirectional=bidirectional,
        pooling=pooling,
        dense_units=4,
        spec_augment=True,
    )
    model = build_classifier(config, n_classes=5, n_mfcc=6, deltas=1)
    out = model(np.random.default_rng(0).normal(size=(3, 12, 6)).astype("float32"))
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_is_masked(pooling):
    """A zero-padded sequence gives the same output as the unpadded one."""
    model = build_classifier(
        ModelConfig(units=8, pooling=pooling, dropout=0.0),
        3,
        n_mfcc=4,
        utterance_mean=True,
        deltas=1,
    )
    if pooling == "attention":  # zero at first (mean pooling): give the steps unequal weights
        pool = model.get_layer("attention_pool")
        pool.kernel.assign(np.random.default_rng(2).normal(0, 3.0, 8).astype("float32"))
    x = np.random.default_rng(1).normal(size=(1, 7, 4)).astype("float32")
    padded = np.concatenate([x, np.zeros((1, 5, 4), "float32")], axis=1)
    np.testing.assert_allclose(model(x).numpy(), model(padded).numpy(), atol=1e-5)


def test_model_saves_and_loads(tmp_path):
    model = build_classifier(ModelConfig(units=4, spec_augment=True), 3, n_mfcc=4, deltas=2)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = np.ones((2, 5, 4), "float32")
    np.testing.assert_allclose(model(x).numpy(), again(x).numpy(), atol=1e-6)


def test_relu_activation_and_bad_cell():
    build_classifier(ModelConfig(cell="simple_rnn", activation="relu", units=4), 2, n_mfcc=3)
    from data.checks import ConfigError

    with pytest.raises(ConfigError, match="model.activation"):
        ModelConfig(activation="swishy")


def _identity_conv(n_mfcc: int, n_mels: int, streams: int):  # noqa: ANN202
    """A ``FrequencyConv`` whose one conv copies its input: its output is what the convs see."""
    from models.classifier import FrequencyConv

    layer = FrequencyConv(n_mfcc, n_mels, streams=streams, filters=(streams,), kernel=1, pool=1)
    layer.build((None, None, streams * n_mfcc))
    layer.convs[0].kernel.assign(np.eye(streams, dtype="float32")[None, None])
    return layer


def test_frequency_conv_sees_the_log_mel_spectrum_behind_each_coefficient_group():
    import librosa
    import scipy.fft

    rng = np.random.default_rng(3)
    spectra = rng.uniform(1, 2, size=(2, 1, 7, 16)).astype("float32")  # 2 groups, 7 frames
    # librosa's orthonormal DCT-II, as the MFCC front end computes it; groups side by side
    cepstra = [librosa.feature.mfcc(S=g[0].T, n_mfcc=16).T for g in spectra]
    frames = np.concatenate(cepstra, axis=-1)[None]  # [1, 7, 32]: mfcc then delta, per frame
    seen = _identity_conv(16, 16, 2)(frames).numpy().reshape(1, 7, 16, 2)  # [.., bands, groups]
    for group in range(2):  # every coefficient kept: the exact spectra, each in its channel
        np.testing.assert_allclose(seen[..., group], spectra[group], atol=1e-4)
    # 4 coefficients: the liftered spectrum, as scipy's inverse DCT of the zero-padded cepstra
    short = np.concatenate([c[:, :4] for c in cepstra], axis=-1)[None]
    seen = _identity_conv(4, 16, 2)(short).numpy().reshape(1, 7, 16, 2)
    for group in range(2):
        padded = np.pad(cepstra[group][:, :4], ((0, 0), (0, 12)))
        liftered = np.maximum(scipy.fft.idct(padded, type=2, norm="ortho", axis=-1), 0)  # relu
        np.testing.assert_allclose(seen[0, ..., group], liftered, atol=1e-4)


def test_frequency_conv_is_a_per_frame_front_end_that_keeps_padding_masked():
    config = ModelConfig(units=8, pooling="mean", dropout=0.0, freq_filters=(4, 6), freq_pool=2)
    model = build_classifier(config, 3, n_mfcc=5, deltas=1, running_mean=True, n_mels=20)
    layer = model.get_layer("frequency_conv")
    assert layer.streams == 2 and layer.units == 5 * 6  # 20 bands pooled twice by 2, 6 channels
    x = np.random.default_rng(1).normal(size=(2, 9, 5)).astype("float32")
    out = layer(np.random.default_rng(2).normal(size=(2, 9, 10)).astype("float32"))
    assert out.shape == (2, 9, 30)
    # per frame: changing frame 4 changes frame 4's output only
    frames = np.random.default_rng(4).normal(size=(1, 9, 10)).astype("float32")
    moved = frames.copy()
    moved[0, 4] += 1.0
    diff = np.abs(layer(moved).numpy() - layer(frames).numpy()).max(axis=-1)[0]
    assert diff[4] > 0 and np.all(np.delete(diff, 4) == 0)
    padded = np.concatenate([x, np.zeros((2, 4, 5), "float32")], axis=1)
    np.testing.assert_allclose(model(x).numpy(), model(padded).numpy(), atol=1e-5)


def test_frequency_conv_saves_loads_and_refuses_bad_settings(tmp_path):
    from data.checks import ConfigError
    from models.classifier import FrequencyConv

    config = ModelConfig(units=4, freq_filters=(3,), freq_kernel=3, freq_pool=3)
    model = build_classifier(config, 3, n_mfcc=4, deltas=2, n_mels=10)
    assert model.get_layer("frequency_conv").units == 4 * 3  # 10 bands -> ceil(10 / 3) = 4
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), again(x).numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match=r"model.freq_filters.*\[8, 0\]"):
        ModelConfig(freq_filters=(8, 0))
    with pytest.raises(ConfigError, match="model.freq_kernel"):
        ModelConfig(freq_kernel=0)
    with pytest.raises(ConfigError, match="features.n_mels"):
        build_classifier(ModelConfig(freq_filters=(3,)), 3, n_mfcc=4)  # no n_mels given
    with pytest.raises(ValueError, match="expects 8 features a frame .* received 6"):
        FrequencyConv(4, 10, streams=2)(np.zeros((1, 3, 6), "float32"))
