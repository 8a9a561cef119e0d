"""``run.py detect``: find commands anywhere in recordings of any length.

The speech export is slid over the audio in steps of ``hop_ms``; the window is the model's
``clip_seconds``. Files are read in blocks (soundfile) and resampled as a stream (soxr), so memory
stays flat for hours of audio. Each detection is one JSON line ``{"file", "label", "start", "end",
"score"}`` (seconds from the start of the file); ``_silence_`` and ``_unknown_`` are never reported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.detection import Detector, DetectorConfig, posteriors, windows


def read_blocks(path: str, sample_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``path`` at ``sample_rate``, resampled on the fly.

    Raises:
        data.audio.AudioError: the file cannot be opened or decoded.
    """
    import soundfile
    import soxr

    from data.audio import AudioError, header_problem

    problem = header_problem(path)
    if problem:
        raise AudioError(problem)
    try:
        info = soundfile.info(path)
        blocks = soundfile.blocks(
            path, blocksize=int(info.samplerate * block_seconds), dtype="float32", always_2d=True
        )
        resampler = (
            soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
            if info.samplerate != sample_rate
            else None
        )
        for block in blocks:
            mono = block.mean(axis=1)
            if not np.all(np.isfinite(mono)):
                raise AudioError("audio contains NaN or Inf samples")
            yield resampler.resample_chunk(mono) if resampler else mono
        if resampler:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
    except AudioError:
        raise
    except Exception as err:  # noqa: BLE001 - decoder errors vary by format
        raise AudioError(f"unreadable audio ({type(err).__name__}: {err})") from None


def detect_file(
    serve,  # noqa: ANN001 - the SavedModel's serving_default
    path: str,
    meta: dict,
    config: DetectorConfig,
    batch: int = 32,
) -> list[dict]:
    """The events found in one file, as dicts (``file``, ``label``, ``start``, ``end``, ``score``)."""
    import soundfile
    import tensorflow as tf
    from rich.console import Console
    from rich.progress import Progress

    rate = int(meta["sample_rate"])
    window = int(round(rate * float(meta["features"]["clip_seconds"])))
    hop = max(1, int(round(rate * config.hop_ms / 1000)))
    detector = Detector(meta["labels"], window / rate, config)
    events = []
    try:
        seconds = soundfile.info(path).duration  # for the progress bar only
    except Exception:  # noqa: BLE001 - read_blocks reports unreadable files
        seconds = None

    def classify(x: np.ndarray) -> np.ndarray:
        return serve(waveform=tf.constant(x))["probabilities"].numpy()

    with Progress(console=Console(stderr=True), transient=True) as progress:  # stdout: JSON
        bar = progress.add_task(f"Detecting in {Path(path).name}", total=seconds)
        spans = windows(read_blocks(path, rate), window, hop)
        for t, p in posteriors(spans, classify, rate, batch):
            events.extend(detector.push(t, p))
            progress.update(bar, completed=t)
    events.extend(detector.flush())
    return [{"file": path, **e.to_dict()} for e in events]


def detect(export_dir: str, files: list[str], config: DetectorConfig) -> int:
    """Prints one JSON line per detection; an ``error`` line (and exit code 1) per bad file."""
    import tensorflow as tf

    from data.audio import AudioError

    meta_path = Path(export_dir) / "assets.extra" / "metadata.json"
    if not meta_path.is_file():
        print(f"error: {export_dir} is not an export folder (no {meta_path})", file=sys.stderr)
        return 2
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("task") != "speech_commands":
        print(f"error: {export_dir} is a {meta.get('task')!r} export; detect needs speech")
        return 2
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    failed = 0
    for path in files:
        try:
            for event in detect_file(serve, path, meta, config):
                print(json.dumps(event, ensure_ascii=False), flush=True)
        except AudioError as err:
            print(json.dumps({"file": path, "error": str(err)}, ensure_ascii=False), flush=True)
            failed += 1
    return 1 if failed else 0
