"""A long test recording with known command times, made from test clips.

The clips are laid one after another with gaps of background noise between them, as a stream of
speech with pauses; the time of every clip is recorded so a detector can be scored against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.augment import noise_excerpt, rms


@dataclass(frozen=True)
class Placed:
    """One clip in the recording: its label and where it is, in seconds."""

    label: str
    start: float
    end: float


def build_recording(
    clips: list[tuple[np.ndarray, str]],
    sample_rate: int,
    noises: list[np.ndarray],
    rng: np.random.Generator,
    gap_seconds: tuple[float, float] = (0.5, 2.0),
    noise_db: tuple[float, float] = (-55.0, -40.0),
) -> tuple[np.ndarray, list[Placed]]:
    """Lays ``clips`` end to end with noisy gaps; returns the recording and each clip's span.

    Args:
        clips: ``(waveform, label)`` pairs, in the order they are laid out.
        sample_rate: their sample rate.
        noises: background recordings for the bed of noise (white noise when empty).
        rng: random generator (gap lengths, noise level and excerpts).
        gap_seconds: range of the pause before each clip (and after the last).
        noise_db: range of the noise level, dBFS (RMS), drawn once for the recording.
    """
    gaps = [int(rng.uniform(*gap_seconds) * sample_rate) for _ in range(len(clips) + 1)]
    total = sum(gaps) + sum(y.size for y, _ in clips)
    if noises:
        bed = np.concatenate(
            [
                noise_excerpt(
                    noises[int(rng.integers(len(noises)))], min(total, sample_rate * 10), rng
                )
                for _ in range(total // (sample_rate * 10) + 1)
            ]
        )[:total]
    else:
        bed = rng.standard_normal(total).astype(np.float32)
    audio = bed / (rms(bed) + 1e-9) * 10 ** (rng.uniform(*noise_db) / 20)
    placed = []
    position = 0
    for (y, label), gap in zip(clips, gaps, strict=False):
        position += gap
        audio[position : position + y.size] += y
        placed.append(Placed(label, position / sample_rate, (position + y.size) / sample_rate))
        position += y.size
    return np.clip(audio, -1, 1).astype(np.float32), placed
