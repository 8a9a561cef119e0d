"""The in-graph layers: MFCC parity with librosa, normalization, masking, SpecAugment."""

import glob

import numpy as np
import pytest
import tensorflow as tf

from data.audio import FeatureConfig, load_audio, mfcc
from models.features import FeatureNormalization, MfccLayer, SpecAugment
from tests.conftest import shared_path, tone

TOLERANCE = 1e-3  # after per-coefficient standardization; measured: about 2e-5


def _standardized_gap(reference: list[np.ndarray], graph: list[np.ndarray]) -> float:
    ref, got = np.concatenate(reference), np.concatenate(graph)
    mean, std = ref.mean(0), ref.std(0)
    return float(np.abs((ref - mean) / std - (got - mean) / std).max())


@pytest.mark.parametrize("deltas", [0])
@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(sample_rate=8000, window_ms=25, n_mels=26, n_mfcc=20, fmin=100, fmax=3800),
        FeatureConfig(window="full"),
    ],
)
def test_mfcc_layer_matches_librosa_on_generated_audio(config, deltas):
    rng = np.random.default_rng(0)
    layer = MfccLayer(config)
    clips = [
        tone(f, s, config.sample_rate)
        + 0.01 * rng.standard_normal(int(config.sample_rate * s)).astype(np.float32)
        for f, s in ((200, 0.3), (700, 1.0), (2500, 1.7))
    ]
    ref = [mfcc(y, config) for y in clips]
    got = [layer(y[None])[0].numpy() for y in clips]
    assert [r.shape for r in ref] == [g.shape for g in got]
    assert _standardized_gap(ref, got) < TOLERANCE


@pytest.mark.parametrize(("folder", "rate"), [("speech_commands_subset", 16000), ("fsdd", 8000)])
def test_mfcc_layer_matches_librosa_on_real_clips(folder, rate):
    root = shared_path(folder)
    files = sorted(glob.glob(str(root / "**" / "*.wav"), recursive=True))
    files = [f for f in files if "_background_noise_" not in f][::25][:30]
    config = FeatureConfig(sample_rate=rate)
    layer = MfccLayer(config)
    ref, got = [], []
    for path in files:
        y = load_audio(path, rate)
        ref.append(mfcc(y, config))
        got.append(layer(y[None])[0].numpy())
    assert _standardized_gap(ref, got) < TOLERANCE


def _librosa_mfcc(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The reference: librosa's own calls, as ``data.audio.mfcc`` made them before NumPy."""
    import librosa

    from data.audio import feature_shape, fit_length

    shape = feature_shape(config)
    y = fit_length(y, shape.clip_samples, config.window == "full")
    if config.streaming:
        y = np.pad(y, (shape.n_fft - shape.hop_length, 0))
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=config.sample_rate,
        n_fft=shape.n_fft,
        hop_length=shape.hop_length,
        win_length=shape.win_length,
        center=not config.streaming,
        pad_mode="constant",
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=shape.fmax,
    )
    log_mel = librosa.power_to_db(
        mel, ref=1.0, amin=1e-10, top_db=None if config.streaming else config.top_db
    )
    if config.streaming:
        log_mel = np.maximum(log_mel, config.floor_db)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc, norm="ortho").T


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(window="full", clip_seconds=1.0),
        FeatureConfig(sample_rate=8000, clip_seconds=2.0, n_mfcc=10, streaming=True),
        FeatureConfig(sample_rate=8000, window_ms=25, n_mels=26, n_mfcc=20, fmin=100, fmax=3800),
    ],
)
def test_numpy_mfcc_equals_librosa(config):
    rng = np.random.default_rng(1)
    for f, s in ((200, 0.05), (700, 0.6), (2500, 1.7)):
        y = tone(f, s, config.sample_rate) + 0.01 * rng.standard_normal(
            int(config.sample_rate * s)
        ).astype(np.float32)
        ours, ref = mfcc(y, config), _librosa_mfcc(y, config)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=1e-4)


def test_normalization_adapt_and_masking():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=(4, 20, 13)).astype(np.float32)
    x[0, 15:] = 0.0  # padding
    layer = FeatureNormalization(13, deltas=1, utterance_mean=False)
    layer.adapt([x])
    mask = tf.reduce_any(x != 0, axis=-1)
    out = layer(x, mask=mask).numpy()
    assert out.shape == (4, 20, 26)
    assert np.all(out[0, 15:] == 0)  # padded frames stay zero
    valid = out[mask.numpy()]
    np.testing.assert_allclose(valid.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(valid.std(0), 1.0, atol=1e-3)


def test_utterance_mean_ignores_padding():
    x = np.ones((1, 6, 2), np.float32) * 3.0
    x[0, 4:] = 0.0
    layer = FeatureNormalization(2, utterance_mean=True)
    out = layer(x, mask=tf.constant([[True] * 4 + [False] * 2])).numpy()
    np.testing.assert_allclose(out, 0.0, atol=1e-6)  # each clip's own mean removed


def test_spec_augment_only_in_training():
    x = tf.ones((3, 50, 13))
    layer = SpecAugment(time_masks=2, time_width=5, freq_masks=1, freq_width=2, seed=0)
    assert np.array_equal(layer(x, training=False).numpy(), x.numpy())
    out = layer(x, training=True).numpy()
    assert 0 < (out == 0).mean() < 0.5


def test_utterance_variance_normalization():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 5.0, size=(2, 30, 4)).astype(np.float32)
    x[1, 20:] = 0.0
    mask = tf.constant(np.any(x != 0, axis=-1))
    out = FeatureNormalization(4, utterance_var=True).transform(x, mask).numpy()
    np.testing.assert_allclose(out[1, :20].std(0), 1.0, atol=1e-3)  # padding not counted
    np.testing.assert_allclose(out[0].mean(0), 0.0, atol=1e-4)


@pytest.mark.parametrize("prior_frames", [0, 6])
def test_running_variance_is_the_standardization_of_the_frames_so_far(prior_frames):
    """normalize: running_var. Frame t is standardized by the mean and standard deviation of the
    frames up to it, the prior counting as ``prior_frames`` frames of the training data's mean
    and variance (here literally such frames: that mean plus and minus that deviation)."""
    rng = np.random.default_rng(3)
    train = rng.normal([-300.0, 4.0, -2.0], [40.0, 3.0, 1.0], size=(8, 50, 3)).astype(np.float32)
    layer = FeatureNormalization(
        3, running_mean=True, running_var=True, prior_frames=prior_frames, window_frames=50
    )
    layer.adapt([train])
    x = rng.normal([-250.0, 1.0, 0.0], [60.0, 5.0, 2.0], size=(2, 12, 3)).astype(np.float32)
    out = layer.transform(x).numpy()
    flat = train.reshape(-1, 3).astype(np.float64)
    pseudo = np.stack([flat.mean(0) + flat.std(0), flat.mean(0) - flat.std(0)])
    pseudo = pseudo[[0, 1] * (prior_frames // 2)].reshape(-1, 3)
    for t in range(1, 12):  # frame 0 of a stream without a prior has no spread yet
        for b in range(2):
            seen = np.concatenate([pseudo, x[b, : t + 1]])
            want = (x[b, t] - seen.mean(0)) / seen.std(0)
            np.testing.assert_allclose(out[b, t], want, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="running_var needs running_mean"):
        FeatureNormalization(3, running_var=True)


def test_full_window_pads_every_clip_to_the_window_and_ignores_padding():
    from data.audio import feature_shape

    config = FeatureConfig(window="full", clip_seconds=1.0)
    frames = feature_shape(config).max_frames
    short, long = tone(440, 0.3), tone(440, 1.4)
    assert mfcc(short, config).shape == (frames, 13) and mfcc(long, config).shape == (frames, 13)
    layer = MfccLayer(config)
    padded = np.zeros((1, 12000), np.float32)
    padded[0, : short.size] = short
    np.testing.assert_allclose(layer(short[None]).numpy(), layer(padded).numpy(), atol=1e-5)


def test_training_placement_puts_the_clip_somewhere_in_noise_or_silence(tmp_path):
    import soundfile

    from data.augment import AugmentConfig
    from data.feature_store import FeatureTask, compute_one

    path = tmp_path / "word.wav"
    soundfile.write(path, tone(600, 0.3), 16000)
    config = FeatureConfig(window="full")
    aug = AugmentConfig(gap_silence_prob=0.0, gap_db_min=-40, gap_db_max=-40)
    placed = compute_one(FeatureTask(str(path), 0, place=True), config, aug, (), None, seed=0)
    plain = compute_one(FeatureTask(str(path), 0), config, aug, (), None, seed=0)
    assert placed.shape == plain.shape == (101, 13)
    assert not np.allclose(placed, plain)  # moved, with noise around it
    again = compute_one(FeatureTask(str(path), 0, place=True), config, aug, (), None, seed=0)
    np.testing.assert_array_equal(placed, again)  # seeded: the same every run


def test_feature_cache_key_covers_the_noise_of_augmented_copies(tmp_path):
    """An augmented copy mixes in background noise: other noise files must not hit the cache."""
    import os

    import soundfile

    from data.augment import AugmentConfig
    from data.feature_store import FeatureTask, compute_one

    clip, noise = tmp_path / "clip.wav", tmp_path / "noise.wav"
    soundfile.write(clip, tone(440, 1.0), 16000)
    rng = np.random.default_rng(0)
    soundfile.write(noise, 0.3 * rng.standard_normal(16000).astype(np.float32), 16000)
    aug = AugmentConfig(noise_prob=1.0)
    args = (FeatureConfig(), aug, (str(noise),), str(tmp_path / "cache"), 0)
    first = compute_one(FeatureTask(str(clip), copy=1), *args)
    assert np.array_equal(compute_one(FeatureTask(str(clip), copy=1), *args), first)  # cached
    soundfile.write(noise, 0.3 * rng.standard_normal(16000).astype(np.float32), 16000)
    os.utime(noise, ns=(1, 1))  # edited in place: same size, another mtime
    from data import feature_store

    feature_store._noises.cache_clear()  # a new run reads the noise files afresh
    assert not np.array_equal(compute_one(FeatureTask(str(clip), copy=1), *args), first)


def test_feature_cache_key_ignores_settings_applied_in_the_model(tmp_path):
    """Deltas, normalization and the number of copies do not change a clip's MFCC: cache hits."""
    import soundfile

    from data.augment import AugmentConfig
    from data.feature_store import FeatureTask, _cache_key

    clip = tmp_path / "clip.wav"
    soundfile.write(clip, tone(440, 0.5), 16000)
    task = FeatureTask(str(clip), copy=1)
    key = _cache_key(task, FeatureConfig(), AugmentConfig(copies=1), 0)
    same = [
        (FeatureConfig(deltas=2), AugmentConfig(copies=1)),
        (FeatureConfig(normalize="utterance"), AugmentConfig(copies=1)),
        (FeatureConfig(), AugmentConfig(copies=4, copies_by_source={"fsdd": 2})),
        (FeatureConfig(), AugmentConfig(copies=1, rt60_max=1.0)),  # reverberation is off
        (FeatureConfig(), AugmentConfig(copies=1, formant_max=1.5)),  # other voices are off
    ]
    assert all(_cache_key(task, f, a, 0) == key for f, a in same)
    other = [
        (FeatureConfig(n_mfcc=20), AugmentConfig(copies=1), 0),
        (FeatureConfig(), AugmentConfig(copies=1, snr_db_min=3.0), 0),
        (FeatureConfig(), AugmentConfig(copies=1, eq_db=6.0), 0),
        (FeatureConfig(), AugmentConfig(copies=1, reverb_prob=0.5), 0),
        (FeatureConfig(), AugmentConfig(copies=1, hiss_prob=0.5), 0),
        (FeatureConfig(), AugmentConfig(copies=1, voice_prob=0.5), 0),
        (FeatureConfig(), AugmentConfig(copies=1), 1),
    ]
    assert all(_cache_key(task, f, a, seed) != key for f, a, seed in other)


def test_random_eq_is_a_smooth_bounded_filter_drawn_from_the_rng():
    from data.augment import AugmentConfig, random_eq

    rng = np.random.default_rng(0)
    y = rng.standard_normal(16000).astype(np.float32)
    out = random_eq(y, 6.0, np.random.default_rng(1))
    assert out.dtype == np.float32 and out.shape == y.shape
    np.testing.assert_array_equal(out, random_eq(y, 6.0, np.random.default_rng(1)))
    assert not np.allclose(out, random_eq(y, 6.0, np.random.default_rng(2)))
    gain_db = 20 * np.log10(np.abs(np.fft.rfft(out)) / np.abs(np.fft.rfft(y)))
    assert np.abs(gain_db).max() <= 6.0 + 1e-3 and np.ptp(gain_db) > 1.0  # bounded, not flat
    assert np.abs(np.diff(gain_db)).max() < 0.05  # smooth: no step between neighbouring bins
    assert random_eq(y, 0.0, rng) is y
    with pytest.raises(ValueError, match=r"augment.eq_db.*Received: 30"):
        AugmentConfig(eq_db=30)


def test_place_in_window_puts_the_clip_in_noise_at_the_drawn_level_or_in_hiss():
    from data.augment import place_in_window

    n, rate = 16000, 8000
    hum = (np.sin(2 * np.pi * 50 * np.arange(4 * n) / rate)).astype(np.float32)  # one tone
    word = np.full(2000, 0.5, np.float32)
    out = place_in_window(word, n, [hum], np.random.default_rng(0), (-40.0, -40.0))
    assert out.shape == (n,) and out.dtype == np.float32
    start = int(np.argmax(out > 0.4))
    noise = np.delete(out, np.arange(start, start + 2000))
    assert 20 * np.log10(np.sqrt(np.mean(noise**2))) == pytest.approx(-40.0, abs=0.5)
    spectrum = np.abs(np.fft.rfft(noise))
    assert spectrum.argmax() == pytest.approx(50 * noise.size / rate, abs=2)  # the hum
    silent = place_in_window(word, n, [hum], np.random.default_rng(0), silence_prob=1.0)
    assert np.count_nonzero(silent) == 2000
    for seed in range(5):  # white to pink: broadband, and not the hum
        hiss = place_in_window(
            word, n, [hum], np.random.default_rng(seed), (-40.0, -40.0), hiss_prob=1
        )
        start = int(np.argmax(hiss > 0.4))
        gaps = np.delete(hiss, np.arange(start, start + 2000))
        assert 20 * np.log10(np.sqrt(np.mean(gaps**2))) == pytest.approx(-40.0, abs=0.5)
        spectrum = np.abs(np.fft.rfft(gaps))
        hum_bin = int(round(50 * gaps.size / rate))
        assert spectrum[hum_bin] < 10 * np.median(spectrum[hum_bin - 20 : hum_bin + 20])
        assert spectrum[spectrum.size // 2 :].mean() > 0.05 * spectrum[: spectrum.size // 2].mean()


def test_room_reverb_decays_at_the_drawn_rt60_and_keeps_the_direct_sound():
    from data.augment import AugmentConfig, augment, room_reverb

    rate = 8000
    click = np.zeros(800, np.float32)
    click[0] = 1.0
    out = room_reverb(click, 0.5, 10.0, rate, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.size == 800 + 4000  # the tail after the clip is kept
    np.testing.assert_array_equal(
        out, room_reverb(click, 0.5, 10.0, rate, np.random.default_rng(0))
    )
    direct, tail = out[0] ** 2, np.sum(out[1:] ** 2)
    assert 10 * np.log10(direct / tail) == pytest.approx(10.0, abs=0.01)
    # Schroeder's decay: the tail's energy in its last 10th is about 54 dB below its first 10th
    tenths = [np.sum(out[1 + i * 400 : 1 + (i + 1) * 400] ** 2) for i in (0, 9)]
    assert 10 * np.log10(tenths[0] / tenths[1]) == pytest.approx(54.0, abs=6.0)
    y = np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.1
    assert np.sqrt(np.mean(room_reverb(y, 0.3, 5.0, rate, np.random.default_rng(2)) ** 2)) == (
        pytest.approx(np.sqrt(np.mean(y**2)), rel=1e-3)
    )
    # with reverb_prob 1 every copy is heard in a room, its tail after the word
    plain = AugmentConfig(copies=1, noise_prob=0.0)
    rooms = AugmentConfig(copies=1, noise_prob=0.0, reverb_prob=1.0)
    a = augment(y, plain, rate, [], np.random.default_rng(3))
    b = augment(y, rooms, rate, [], np.random.default_rng(3))
    assert a.size < b.size
    with pytest.raises(ValueError, match=r"augment.rt60_min/rt60_max.*Received: \(0.5, 0.2\)"):
        AugmentConfig(rt60_min=0.5, rt60_max=0.2)
    with pytest.raises(ValueError, match=r"augment.reverb_prob.*Received: 2"):
        AugmentConfig(reverb_prob=2)


@pytest.fixture
def clip_folder(tmp_path):
    import soundfile

    paths = []
    for i in range(120):
        path = tmp_path / "clips" / f"c{i:03d}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, tone(200 + 10 * i, 0.2), 16000)
        paths.append(str(path))
    return paths


def _counting(monkeypatch):
    from data import feature_store

    calls = []
    real = feature_store.compute_uncached

    def counted(task, *args):
        calls.append(task.path)
        return real(task, *args)

    monkeypatch.setattr(feature_store, "compute_uncached", counted)
    return calls


def test_feature_cache_chunks_are_reused_and_an_inserted_clip_costs_one_chunk(
    tmp_path, clip_folder, monkeypatch
):
    from data.feature_store import CHUNK_MAX, FeatureTask, compute_many

    calls = _counting(monkeypatch)
    cache, config = str(tmp_path / "cache"), FeatureConfig()
    tasks = [FeatureTask(p) for p in clip_folder[:100]]
    cold = compute_many(tasks, config, cache_dir=cache)
    assert len(calls) == 100
    calls.clear()
    warm = compute_many(tasks, config, cache_dir=cache)
    assert not calls  # every chunk from the cache
    assert all(np.array_equal(a, b) for a, b in zip(cold, warm, strict=True))
    grown = [*tasks[:50], FeatureTask(clip_folder[110]), *tasks[50:]]
    out = compute_many(grown, config, cache_dir=cache)
    assert 1 <= len(calls) <= CHUNK_MAX and len(calls) < 60  # the chunk around the new clip
    assert np.array_equal(out[50], mfcc(load_audio(clip_folder[110], 16000), config))
    assert all(np.array_equal(a, b) for a, b in zip(out[51:], cold[50:], strict=True))


def test_damaged_chunk_is_recomputed_and_a_bad_clip_is_reported_not_cached(
    tmp_path, clip_folder, monkeypatch
):
    from pathlib import Path

    from data.feature_store import FeatureTask, compute_many

    cache, config = tmp_path / "cache", FeatureConfig()
    tasks = [FeatureTask(p) for p in clip_folder[:40]]
    first = compute_many(tasks, config, cache_dir=str(cache))
    # not a zip, empty (a power cut before the data reached the disk), truncated
    for damage in (lambda b: b"damaged", lambda b: b"", lambda b: b[: len(b) // 2]):
        for path in cache.rglob("*.npz"):
            path.write_bytes(damage(path.read_bytes()))
        assert all(
            np.array_equal(a, b)
            for a, b in zip(compute_many(tasks, config, cache_dir=str(cache)), first, strict=True)
        )
    Path(clip_folder[5]).unlink()
    calls = _counting(monkeypatch)
    out = compute_many(tasks, config, cache_dir=str(cache))
    assert isinstance(out[5], str) and "cannot read file" in out[5]
    calls.clear()
    compute_many(tasks, config, cache_dir=str(cache))
    assert calls  # the chunk holding the missing clip is tried again every time


def test_feature_worker_processes_give_the_same_features(tmp_path, clip_folder, monkeypatch):
    from data import feature_store
    from data.feature_store import FeatureTask, compute_many

    monkeypatch.setattr(feature_store, "POOL_MIN_TASKS", 1)
    tasks = [FeatureTask(p) for p in clip_folder[:80]]
    pooled = compute_many(tasks, FeatureConfig(), cache_dir=str(tmp_path / "a"), workers=2)
    alone = compute_many(tasks, FeatureConfig(), cache_dir=None)
    assert all(np.array_equal(a, b) for a, b in zip(pooled, alone, strict=True))


def _vowel(pitch_hz: float, formants: tuple[float, ...], rate: int, seconds: float) -> np.ndarray:
    """A synthetic vowel: a glottal pulse train through one two-pole resonator per formant."""
    from scipy.signal import lfilter

    n = int(rate * seconds)
    y = np.zeros(n)
    y[:: int(rate / pitch_hz)] = 1.0
    for formant in formants:
        r, theta = np.exp(-np.pi * 80 / rate), 2 * np.pi * formant / rate
        y = lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], y)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def test_change_voice_moves_the_pitch_and_scales_the_formants_keeping_the_timing():
    import parselmouth

    from data.augment import AugmentConfig, augment, change_voice

    rate = 8000
    y = _vowel(110.0, (700.0, 1200.0), rate, 0.6)

    def pitch(z):
        f0 = parselmouth.Sound(z.astype(np.float64), rate).to_pitch().selected_array["frequency"]
        return float(np.median(f0[f0 > 0]))

    def first_formant(z):
        formants = parselmouth.Sound(z.astype(np.float64), rate).to_formant_burg()
        return float(np.nanmedian([formants.get_value_at_time(1, t) for t in formants.ts()]))

    assert pitch(y) == pytest.approx(110.0, rel=0.03)
    higher = change_voice(y, 1.0, 200.0, rate)
    assert higher.dtype == np.float32 and higher.shape == y.shape
    assert pitch(higher) == pytest.approx(200.0, rel=0.05)
    assert first_formant(higher) == pytest.approx(first_formant(y), rel=0.08)
    shorter_tract = change_voice(y, 1.2, 110.0, rate)
    assert shorter_tract.shape == y.shape
    assert pitch(shorter_tract) == pytest.approx(110.0, rel=0.05)
    assert first_formant(shorter_tract) / first_formant(y) == pytest.approx(1.2, rel=0.08)
    # Praat's own random generator is seeded: the same seed, the same copy
    np.testing.assert_array_equal(
        change_voice(y, 1.1, 150.0, rate, 7), change_voice(y, 1.1, 150.0, rate, 7)
    )
    # nothing voiced (noise): the formants are scaled all the same, the length is kept
    noise = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    hiss = change_voice(noise, 1.2, 200.0, rate, 7)
    assert hiss.shape == noise.shape and hiss.dtype == np.float32 and np.all(np.isfinite(hiss))
    assert not np.allclose(hiss, noise, atol=1e-3)
    np.testing.assert_array_equal(hiss, change_voice(noise, 1.2, 200.0, rate, 7))
    assert not np.allclose(hiss, change_voice(noise, 1.2, 200.0, rate, 8), atol=1e-3)
    # voice_prob 0 (the default) draws nothing for it: the copies made before it existed stay
    rngs = [np.random.default_rng(5), np.random.default_rng(5)]
    augment(y, AugmentConfig(copies=1), rate, [], rngs[0])
    augment(y, AugmentConfig(copies=1, formant_max=1.5, pitch_hz_min=60), rate, [], rngs[1])
    assert rngs[0].random() == rngs[1].random()
    # voice_prob 1: every copy is another voice, repeated exactly by its rng
    still = {
        "noise_prob": 0.0,
        "speed_min": 1.0,
        "speed_max": 1.0,
        "gain_db": 0,
        "time_shift_ms": 0,
    }
    plain = AugmentConfig(copies=1, **still)
    voiced = AugmentConfig(copies=1, voice_prob=1.0, **still)
    a = augment(y, plain, rate, [], np.random.default_rng(3))
    b = augment(y, voiced, rate, [], np.random.default_rng(3))
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)
    np.testing.assert_array_equal(b, augment(y, voiced, rate, [], np.random.default_rng(3)))
    assert 80.0 * 0.95 <= pitch(b) <= 300.0 * 1.05
    with pytest.raises(ValueError, match=r"augment.voice_prob.*Received: 1.5"):
        AugmentConfig(voice_prob=1.5)
    with pytest.raises(
        ValueError, match=r"augment.formant_min/formant_max.*Received: \(1.2, 0.9\)"
    ):
        AugmentConfig(formant_min=1.2, formant_max=0.9)
    with pytest.raises(ValueError, match=r"augment.pitch_hz_min/pitch_hz_max.*Received: \(20"):
        AugmentConfig(pitch_hz_min=20)


@pytest.mark.parametrize("shape", [(257, 40), (40, 13), (1025, 80), (80, 13), (1, 5)])
def test_front_end_matrices_are_cut_below_the_quantizer_threshold(shape):
    """TFLite's dynamic-range quantization takes constants of 1,024 numbers and up; the front
    end's blocks stay under it whatever the FFT size or number of mel bands (2,048-point FFTs at
    48 kHz, 80 mel bands with 13 coefficients), and multiply as the whole matrix."""
    import tensorflow as tf

    from models.features import QUANTIZE_MIN_ELEMENTS, blocks_matmul, float_blocks

    rng = np.random.default_rng(0)
    matrix = rng.normal(size=shape).astype(np.float32)
    blocks = float_blocks(matrix)
    assert all(int(tf.size(b)) < QUANTIZE_MIN_ELEMENTS for group in blocks for b in group)
    x = rng.normal(size=(2, 3, shape[0])).astype(np.float32)
    np.testing.assert_allclose(
        blocks_matmul(tf.constant(x), blocks), x @ matrix, rtol=1e-4, atol=1e-4
    )
