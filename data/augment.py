"""Waveform augmentation for training clips, and noise for ``_silence_`` examples."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.audio import FeatureConfig
from data.checks import OMIT_IF_DEFAULT, check
from data.clips import SILENCE, Clip


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` config section (applied to training clips only).

    Each training clip is kept clean and ``copies`` augmented versions are added; each copy gets
    a random time shift, speed change (resampling, which also shifts pitch like a different
    speaker's voice), a random frequency response (``eq_db``: another microphone or room), with
    probability ``reverb_prob`` a random room's reverberation and, with probability
    ``noise_prob``, background noise at a random SNR.

    Attributes:
        copies: augmented copies per training clip (0 disables augmentation).
        time_shift_ms: the largest shift, earlier or later, in milliseconds.
        speed_min: slowest speed factor; speed_max: fastest.
        noise_prob: probability that a copy gets background noise.
        snr_db_min: lowest signal-to-noise ratio in dB; snr_db_max: highest.
        gain_db: random gain range (+-) in dB.
        eq_db: the largest boost or cut (+-, dB) of a random smooth frequency response, drawn
            at ``EQ_BANDS`` points evenly spaced in mel and interpolated between them (0: none).
        hiss_prob: probability that the noise drawn (for a noisy copy, and around a placed clip)
            is generated white-to-pink noise, a microphone's own hiss, instead of an excerpt of
            a background recording (without recordings, noisy copies get generated noise
            anyway, white to brown, and the window around a placed clip white noise).
        reverb_prob: probability that a copy is heard in a room: convolved with a synthetic
            impulse response (a direct path and an exponentially decaying noise tail).
        rt60_min: shortest reverberation time (s, the tail's decay by 60 dB); rt60_max: longest.
        drr_db_min: lowest direct-to-reverberant energy ratio (dB; lower is farther from the
            microphone); drr_db_max: highest.
        copies_by_source: augmented copies for the training clips of one source, by source name
            (``fsdd``, ``synthetic``, ``speech_commands``, ...), overriding ``copies``; e.g. more
            copies of a small set of real speakers added with ``data.train_extra``.
        gap_silence_prob: with ``features.window: full``, the share of training windows whose
            gaps around the clip are digital silence (the others get background noise).
        gap_db_min: quietest background noise around a placed clip, dBFS (RMS);
            gap_db_max: loudest.
        voice_prob: probability that a copy is spoken by another voice: Praat's "Change
            gender" (``change_voice``) scales the formants (the vocal tract's length) and moves
            the pitch independently, where ``speed_min``/``speed_max`` move both together.
        formant_min: smallest formant ratio; formant_max: largest.
        pitch_hz_min: lowest new median pitch (Hz, drawn log-uniformly); pitch_hz_max: highest.
    """

    copies: int = 0
    time_shift_ms: float = 100.0
    speed_min: float = 0.9
    speed_max: float = 1.1
    noise_prob: float = 0.8
    snr_db_min: float = 5.0
    snr_db_max: float = 30.0
    gain_db: float = 6.0
    eq_db: float = 0.0
    hiss_prob: float = 0.0
    reverb_prob: float = 0.0
    rt60_min: float = 0.15
    rt60_max: float = 0.6
    drr_db_min: float = 0.0
    drr_db_max: float = 15.0
    copies_by_source: dict[str, int] = field(default_factory=dict)
    gap_silence_prob: float = 0.2
    gap_db_min: float = -70.0
    gap_db_max: float = -30.0
    voice_prob: float = field(default=0.0, metadata=OMIT_IF_DEFAULT)
    formant_min: float = field(default=0.85, metadata=OMIT_IF_DEFAULT)
    formant_max: float = field(default=1.2, metadata=OMIT_IF_DEFAULT)
    pitch_hz_min: float = field(default=80.0, metadata=OMIT_IF_DEFAULT)
    pitch_hz_max: float = field(default=300.0, metadata=OMIT_IF_DEFAULT)

    def __post_init__(self) -> None:
        check(0 <= self.voice_prob <= 1, "augment.voice_prob", self.voice_prob, "in [0, 1]")
        check(
            0.5 <= self.formant_min <= self.formant_max <= 2.0,
            "augment.formant_min/formant_max",
            (self.formant_min, self.formant_max),
            "0.5 <= formant_min <= formant_max <= 2",
        )
        check(
            50 <= self.pitch_hz_min <= self.pitch_hz_max <= 600,
            "augment.pitch_hz_min/pitch_hz_max",
            (self.pitch_hz_min, self.pitch_hz_max),
            "50 <= pitch_hz_min <= pitch_hz_max <= 600 Hz",
        )
        check(
            0 <= self.gap_silence_prob <= 1,
            "augment.gap_silence_prob",
            self.gap_silence_prob,
            "in [0, 1]",
        )
        check(
            self.gap_db_min <= self.gap_db_max <= 0,
            "augment.gap_db_min/gap_db_max",
            (self.gap_db_min, self.gap_db_max),
            "gap_db_min <= gap_db_max <= 0 dBFS",
        )
        check(self.copies >= 0, "augment.copies", self.copies, ">= 0")
        check(self.time_shift_ms >= 0, "augment.time_shift_ms", self.time_shift_ms, ">= 0")
        check(0 <= self.eq_db <= 24, "augment.eq_db", self.eq_db, "in [0, 24] dB")
        check(0 <= self.hiss_prob <= 1, "augment.hiss_prob", self.hiss_prob, "in [0, 1]")
        check(0 <= self.reverb_prob <= 1, "augment.reverb_prob", self.reverb_prob, "in [0, 1]")
        check(
            0 < self.rt60_min <= self.rt60_max <= 2.0,
            "augment.rt60_min/rt60_max",
            (self.rt60_min, self.rt60_max),
            "0 < rt60_min <= rt60_max <= 2 s",
        )
        check(
            self.drr_db_min <= self.drr_db_max,
            "augment.drr_db_min/drr_db_max",
            (self.drr_db_min, self.drr_db_max),
            "drr_db_min <= drr_db_max",
        )
        check(
            0.5 <= self.speed_min <= self.speed_max <= 2.0,
            "augment.speed_min/speed_max",
            (self.speed_min, self.speed_max),
            "0.5 <= speed_min <= speed_max <= 2",
        )
        for source, copies in self.copies_by_source.items():
            check(copies >= 0, f"augment.copies_by_source.{source}", copies, ">= 0")
        check(0 <= self.noise_prob <= 1, "augment.noise_prob", self.noise_prob, "in [0, 1]")
        check(
            self.snr_db_min <= self.snr_db_max,
            "augment.snr_db_min",
            self.snr_db_min,
            f"<= snr_db_max ({self.snr_db_max})",
        )

    def copies_for(self, source: str) -> int:
        """Augmented copies made of each training clip of the source named ``source``."""
        return self.copies_by_source.get(source, self.copies)


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def rms(y: np.ndarray) -> float:
    """Root mean square of a waveform."""
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def noise_excerpt(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample excerpt of ``noise`` (tiled if it is shorter)."""
    if noise.size < n:
        noise = np.tile(noise, int(np.ceil(n / noise.size)))
    start = int(rng.integers(0, noise.size - n + 1))
    return noise[start : start + n]


def mix_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Adds ``noise`` to ``y`` scaled to the given signal-to-noise ratio."""
    scale = rms(y) / (rms(noise) * 10 ** (snr_db / 20))
    return (y + scale * noise).astype(np.float32)


def speed_perturb(y: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Plays ``y`` ``factor`` times faster by resampling (tempo and pitch change together)."""
    import librosa

    if abs(factor - 1.0) < 1e-3:
        return y
    return librosa.resample(
        y, orig_sr=int(round(sample_rate * factor)), target_sr=sample_rate, res_type="soxr_qq"
    ).astype(np.float32)


def change_voice(
    y: np.ndarray, formant_ratio: float, pitch_hz: float, sample_rate: int, seed: int = 0
) -> np.ndarray:
    """``y`` as another voice would say it: formants scaled, pitch moved, timing kept.

    Praat's "Change gender" (through ``parselmouth``): pitch-synchronous overlap-add moves the
    median pitch to ``pitch_hz`` (keeping the intonation's shape) and a resampling scales every
    formant by ``formant_ratio`` (above 1: a shorter vocal tract). Unvoiced stretches, and a clip
    with nothing voiced, get the formant scaling only. Praat resynthesizes them with its own
    random generator, which is seeded with ``seed`` first (for the whole process), so a copy
    repeats exactly.

    Args:
        y: the clip.
        formant_ratio: factor applied to the formant frequencies.
        pitch_hz: the new median pitch in Hz.
        sample_rate: samples per second.
        seed: seed of Praat's random generator.

    Returns:
        float32, the length of ``y``; ``y`` itself if Praat cannot analyse it.
    """
    import parselmouth
    from parselmouth.praat import call, run

    sound = parselmouth.Sound(np.asarray(y, np.float64), sampling_frequency=sample_rate)
    try:
        run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
        with warnings.catch_warnings():  # "no voiced segments": the formants are still scaled
            warnings.simplefilter("ignore", parselmouth.PraatWarning)
            changed = call(sound, "Change gender", 75, 600, formant_ratio, pitch_hz, 1.0, 1.0)
    except parselmouth.PraatError:
        return np.asarray(y, np.float32)
    out = changed.values[0][: len(y)]
    if out.size != len(y) or not np.all(np.isfinite(out)):
        return np.asarray(y, np.float32)
    return out.astype(np.float32)


EQ_BANDS = 6  # points of a random frequency response: smooth, like a microphone's or a room's


def random_eq(y: np.ndarray, max_db: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` through a random smooth frequency response of at most +-``max_db`` dB.

    The gains are drawn at ``EQ_BANDS`` points evenly spaced on the mel scale (from 0 Hz to the
    Nyquist frequency) and interpolated linearly in dB between them; the filter has zero phase.
    """
    if max_db <= 0 or y.size < 2:
        return y
    spectrum = np.fft.rfft(y.astype(np.float64))
    mel = np.log1p(np.fft.rfftfreq(y.size) / 0.0875)  # 700 Hz at 8 kHz; the shape, not the rate
    gain_db = np.interp(
        mel / mel[-1], np.linspace(0, 1, EQ_BANDS), rng.uniform(-max_db, max_db, EQ_BANDS)
    )
    return np.fft.irfft(spectrum * 10 ** (gain_db / 20), y.size).astype(np.float32)


def room_reverb(
    y: np.ndarray, rt60: float, drr_db: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """``y`` as heard in a room: convolved with a synthetic impulse response.

    The response is a unit direct path followed by Gaussian noise whose amplitude falls 60 dB in
    ``rt60`` seconds (Schroeder's statistical model of late reverberation), scaled so that the
    direct path carries ``drr_db`` dB more energy than the tail. The tail after the clip is
    kept, as a microphone records it, and the result has the clip's RMS.

    Args:
        y: the clip.
        rt60: reverberation time in seconds.
        drr_db: direct-to-reverberant energy ratio in dB.
        sample_rate: samples per second.
        rng: draws the tail's noise.

    Returns:
        float32 ``[y.size + rt60 * sample_rate]``.
    """
    from scipy.signal import fftconvolve

    n = max(int(rt60 * sample_rate), 1)
    tail = rng.standard_normal(n) * np.exp(-np.log(1000.0) * np.arange(n) / n)  # -60 dB at n
    tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    response = np.concatenate([[1.0], tail])
    out = fftconvolve(y.astype(np.float64), response)[: y.size + n]
    return (out * (rms(y) / (rms(out) + 1e-12))).astype(np.float32)


def time_shift(y: np.ndarray, shift: int) -> np.ndarray:
    """Shifts ``y`` by ``shift`` samples (positive: later), padding with zeros."""
    if shift > 0:
        return np.concatenate([np.zeros(shift, np.float32), y])
    if shift < 0:
        return y[-shift:] if -shift < y.size else y
    return y


def augment(
    y: np.ndarray,
    config: AugmentConfig,
    sample_rate: int,
    noises: list[np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """One augmented copy of ``y``, every choice drawn from ``rng``.

    Maybe another voice (with ``voice_prob``), speed, shift, gain, equalization (with
    ``eq_db``), maybe a room (with ``reverb_prob``) and, maybe, noise.
    """
    if config.voice_prob and rng.random() < config.voice_prob:  # drawn only when asked
        formant = float(rng.uniform(config.formant_min, config.formant_max))
        pitch = float(np.exp(rng.uniform(np.log(config.pitch_hz_min), np.log(config.pitch_hz_max))))
        y = change_voice(y, formant, pitch, sample_rate, int(rng.integers(2**31)))
    y = speed_perturb(y, float(rng.uniform(config.speed_min, config.speed_max)), sample_rate)
    if config.eq_db:  # drawn only when asked: other settings keep their copies
        y = random_eq(y, config.eq_db, rng)
    if config.reverb_prob and rng.random() < config.reverb_prob:  # likewise
        rt60 = float(rng.uniform(config.rt60_min, config.rt60_max))
        y = room_reverb(
            y, rt60, float(rng.uniform(config.drr_db_min, config.drr_db_max)), sample_rate, rng
        )
    max_shift = int(sample_rate * config.time_shift_ms / 1000)
    if max_shift:
        y = time_shift(y, int(rng.integers(-max_shift, max_shift + 1)))
    y = y * np.float32(10 ** (rng.uniform(-config.gain_db, config.gain_db) / 20))
    if rng.random() < config.noise_prob:
        if noises and not (config.hiss_prob and rng.random() < config.hiss_prob):
            noise = noises[int(rng.integers(len(noises)))]
        else:
            noise = colored_noise(y.size, rng, rng.uniform(0, 2 if not noises else 1))
        y = mix_at_snr(
            y, noise_excerpt(noise, y.size, rng), rng.uniform(config.snr_db_min, config.snr_db_max)
        )
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def silence_clip(noises: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """A ``_silence_`` example: background noise (or generated noise) at a random low level."""
    if noises:
        y = noise_excerpt(noises[int(rng.integers(len(noises)))], n, rng)
        y = y / (rms(y) + 1e-9)
    else:
        y = colored_noise(n, rng, float(rng.uniform(0, 2)))
    level = 10 ** (rng.uniform(-60, -20) / 20)  # -60 to -20 dBFS
    return np.clip(y * level, -1, 1).astype(np.float32)


def write_silence_clips(
    noise_files: list[str],
    counts: dict[str, int],
    out_dir: Path,
    listed_dir: Path,
    features: FeatureConfig,
    seed: int,
) -> list[Clip]:
    """Writes ``counts[split]`` ``_silence_`` clips per split, cut from the background noises.

    Args:
        noise_files: background-noise recordings (generated noise when empty).
        counts: clips to write per split.
        out_dir: where the files are written.
        listed_dir: the folder the clips are listed under (where ``out_dir`` will be published).
        features: the sample rate and clip length.
        seed: random seed.

    Returns:
        The clips, labelled ``_silence_``, with one pseudo-speaker per split.
    """
    import soundfile

    from data.audio import load_audio

    rng = np.random.default_rng(seed)
    noises = [load_audio(p, features.sample_rate) for p in noise_files]
    n_samples = int(features.sample_rate * features.clip_seconds)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for split, count in counts.items():
        for i in range(count):
            name = f"{split}_{i:05d}.wav"
            soundfile.write(
                out_dir / name, silence_clip(noises, n_samples, rng), features.sample_rate
            )
            clips.append(Clip(str(listed_dir / name), SILENCE, f"silence-{split}", split))
    return clips


def place_in_window(
    y: np.ndarray,
    n: int,
    noises: list[np.ndarray],
    rng: np.random.Generator,
    level_db: tuple[float, float] = (-50.0, -35.0),
    silence_prob: float = 0.0,
    hiss_prob: float = 0.0,
) -> np.ndarray:
    """``y`` at a random position inside ``n`` samples of background noise, as a microphone hears it.

    Args:
        y: the clip (trimmed to ``n`` if longer).
        n: window length in samples.
        noises: background recordings to cut the noise from (white noise when empty).
        rng: random generator (position, noise excerpt, level).
        level_db: the noise level range in dBFS (RMS).
        silence_prob: probability that the gaps are digital silence instead of noise.
        hiss_prob: probability that the noise is generated white-to-pink hiss instead of an
            excerpt of ``noises``.

    Returns:
        float32 ``[n]``: noise everywhere, the clip added at a random offset.
    """
    y = np.asarray(y, np.float32)[:n]
    if hiss_prob and rng.random() < hiss_prob:  # drawn only when asked: other settings keep theirs
        noise = colored_noise(n, rng, float(rng.uniform(0, 1)))
    elif noises:
        noise = noise_excerpt(noises[int(rng.integers(len(noises)))], n, rng)
    else:
        noise = rng.standard_normal(n).astype(np.float32)
    level = 10 ** (rng.uniform(*level_db) / 20)
    out = noise / (rms(noise) + 1e-9) * level
    if rng.random() < silence_prob:
        out = np.zeros(n, np.float32)
    start = int(rng.integers(0, n - y.size + 1))
    out[start : start + y.size] += y
    return np.clip(out, -1, 1).astype(np.float32)
