"""Tiny trained runs for the ``run.py serve`` tests, trained once per test session.

Both serve test files ask for them; the runs live under the session's base temporary folder
(shared by all pytest-xdist workers, under a file lock), so whichever file comes first trains
them (speech and translation at the same time) and the other waits for them and reuses them. The
speech model is trained long enough to be sure of its training clips (the browser test needs a
clip it gets right); the translator to emit a date-shaped answer.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

SPEECH = [
    "data.synthetic.voices=6",
    "data.synthetic.takes=2",
    "data.synthetic.words=[yes, no, up]",
    "data.synthetic.unknown_takes=1",
    "augment.copies=0",
    "model.units=32",
    "model.pooling=mean",
    "optimizer.learning_rate=0.01",
    "train.epochs=25",
    "train.early_stopping=0",
    "train.batch_size=16",
    "eval.stream_clips=0",
    "export.tflite=true",  # a TFLite folder to serve too (about 4 s more)
    "export.check_clips=20",
    "detect.stream_threshold=0.55",  # its own, so the page's two Listen modes start apart
]
TEXT = [
    "data.synthetic.examples=600",
    "data.val_percent=10",
    "data.test_percent=10",
    "model.units=32",
    "model.embedding_dim=16",
    "optimizer.learning_rate=0.01",
    "train.epochs=8",
    "train.batch_size=32",
    "decode.beam_width=2",
    "decode.max_length=12",
    "eval.attention_plots=1",
]


def session_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary root, the same for every pytest-xdist worker.

    Under xdist each worker's base folder is a child of the session's (``popen-gw0``, ...); run
    alone, the base folder is the session's own.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def tiny_runs(base: Path) -> tuple[Path, Path]:
    """``(speech run, translation run)`` under ``base/serve_runs``, trained if not there yet.

    A blocking lock on ``base/serve_runs.lock`` makes a second worker wait for the first one's
    training instead of training the same runs again.
    """
    root = base / "serve_runs"
    root.mkdir(parents=True, exist_ok=True)
    with open(base / "serve_runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _train_tiny_runs(root)


def _train_tiny_runs(root: Path) -> tuple[Path, Path]:
    speech, text = root / "speech_commands", root / "translation"
    if (root / "done").is_file():
        return speech, text
    if (root / "failed").is_file():  # another worker's training failed: say so once, do not retry
        raise AssertionError(f"training a tiny run failed:\n{(root / 'failed').read_text()}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs = []
    for pipeline, run_dir, sets in (
        ("speech_commands", speech, SPEECH),
        ("translation", text, TEXT),
    ):
        sets = [*sets, f"runtime.cache_dir={root / 'cache'}"]
        args = [
            "run",
            pipeline,
            "--run-dir",
            str(run_dir),
            *(a for s in sets for a in ("--set", s)),
        ]
        jobs.append(
            subprocess.Popen(
                [sys.executable, "run.py", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        for job in jobs:
            try:
                output, _ = job.communicate(timeout=600)
            except subprocess.TimeoutExpired:  # its log so far, then why it stopped
                job.kill()
                output, _ = job.communicate()
                output += f"\n{' '.join(job.args)} took more than 600 s"
            if job.returncode != 0:
                (root / "failed").write_text(output)
                raise AssertionError(f"training a tiny run failed:\n{output}")
    finally:  # a failed or slow training leaves no other training running behind the tests
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.communicate(timeout=60)
    (root / "done").write_text("")
    return speech, text


def clips(run_dir: Path, split: str | None = None) -> list[dict]:
    """The run's clips (``stages/ingest/clips.json``), optionally of one split."""
    listed = json.loads((run_dir / "stages" / "ingest" / "clips.json").read_text())
    return [c for c in listed if split is None or c["split"] == split]


def recording(run_dir: Path, count: int = 6, seed: int = 0) -> np.ndarray:
    """Test clips one after another with faint noise between them (16 kHz)."""
    import soundfile

    rng = np.random.default_rng(seed)
    parts = []
    for clip in clips(run_dir, "test")[:count]:
        parts += [
            rng.normal(0, 0.003, 8000).astype(np.float32),
            soundfile.read(clip["path"], dtype="float32")[0],
        ]
    parts.append(rng.normal(0, 0.003, 8000).astype(np.float32))
    return np.concatenate(parts)
