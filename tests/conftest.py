"""Shared fixtures: tiny generated audio, the shared real data (skipped when absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(ROOT))


def shared_path(*parts: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available here: {path} (only in the project's workspace)")
    return path


def tone(
    freq: float = 440.0, seconds: float = 0.5, sr: int = 16000, amp: float = 0.3
) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def wav_folder(tmp_path: Path) -> Path:
    """An FSDD-style folder: 3 labels x 3 speakers x 2 takes of tones, plus bad files."""
    import soundfile

    rng = np.random.default_rng(0)
    for label, freq in (("a", 300), ("b", 600), ("c", 1200)):
        for speaker in ("s1", "s2", "s3"):
            for take in range(2):
                y = tone(freq * (1 + 0.05 * rng.standard_normal()), 0.3 + 0.1 * take, 8000)
                soundfile.write(tmp_path / f"{label}_{speaker}_{take}.wav", y, 8000)
    (tmp_path / "badname.wav").write_bytes(b"RIFF")
    (tmp_path / "a_s1_9.wav").write_bytes(b"not audio at all")
    return tmp_path
