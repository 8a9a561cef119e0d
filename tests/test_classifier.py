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
