import numpy as np
import pytest
import soundfile

from data.audio import AudioError, FeatureConfig, feature_shape, load_audio, mfcc
from tests.conftest import tone


def test_feature_shape_derives_all_sizes():
    s = feature_shape(
        FeatureConfig(sample_rate=8000, clip_seconds=2.0, window_ms=25, stride_ms=10, deltas=2)
    )
    assert (s.clip_samples, s.win_length, s.hop_length, s.n_fft) == (16000, 200, 80, 256)
    assert s.max_frames == 1 + 16000 // 80
    assert s.feature_size == 13 * 3
    assert s.fmax == 4000.0


def test_mfcc_shape_and_trim():
    config = FeatureConfig()
    short = mfcc(tone(seconds=0.5), config)
    assert short.shape == (1 + 8000 // 160, 13) and short.dtype == np.float32
    long = mfcc(tone(seconds=3.0), config)  # trimmed to clip_seconds
    assert long.shape == (feature_shape(config).max_frames, 13)
    assert np.all(np.isfinite(long))


def test_mfcc_distinguishes_tones():
    config = FeatureConfig()
    low, high = mfcc(tone(300), config), mfcc(tone(3000), config)
    assert np.abs(low.mean(0) - high.mean(0)).max() > 1.0


def test_load_audio_resamples(tmp_path):
    path = tmp_path / "x.wav"
    soundfile.write(path, tone(seconds=1.0, sr=8000), 8000)
    y = load_audio(str(path), 16000)
    assert y.shape == (16000,) and y.dtype == np.float32


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"garbage bytes", "unreadable audio"), (None, "empty audio"), ("zeros", "all zeros")],
)
def test_load_audio_rejects_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    if content is None:
        soundfile.write(path, np.zeros(0, np.float32), 16000)
    elif content == "zeros":
        soundfile.write(path, np.zeros(1000, np.float32), 16000)
    else:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        load_audio(str(path), 16000)


def test_missing_file():
    with pytest.raises(AudioError, match="file not found"):
        load_audio("/no/such/file.wav", 16000)


def test_bad_feature_settings_named():
    from data.checks import ConfigError

    with pytest.raises(ConfigError, match="features.fmax"):
        FeatureConfig(sample_rate=8000, fmax=6000)
    with pytest.raises(ConfigError, match="features.n_fft"):
        FeatureConfig(n_fft=128)
