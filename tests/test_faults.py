"""Faults with real processes: ``kill -9`` during features, training and export; locks; a full or
read-only run directory. Every rerun of the same command must finish and reuse what was whole."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.conftest import ROOT, tone

SPEAKERS = ("s0", "s1", "s2", "s3", "s4", "s5")


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory) -> Path:
    """An FSDD-style folder: 3 labels x 6 speakers x 40 takes of one-second tones (720 clips)."""
    folder = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300), ("mid", 800), ("high", 2000)):
        for speaker in SPEAKERS:
            for take in range(40):
                y = tone(freq * (1 + 0.04 * rng.standard_normal()), 1.0, 16000, 0.2)
                y = y + rng.normal(0, 0.01, y.size).astype(np.float32)
                soundfile.write(folder / f"{label}_{speaker}_{take}.wav", y, 16000)
    return folder


def run_args(folder: Path, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    sets = [
        f"data.source=fsdd:{folder}",
        "data.split=holdout",
        "data.test_speakers=[s5]",
        "data.val_speakers=[s4]",
        "data.silence_percent=0",
        f"runtime.cache_dir={cache}",
        "runtime.workers=1",
        "augment.copies=0",
        "model.units=8",
        "model.layers=1",
        "train.epochs=4",
        "train.batch_size=8",
        "train.early_stopping=0",
        *extra,
    ]
    return [sys.executable, "run.py", "run", "speech_commands", "--run-dir", str(run_dir)] + [
        a for s in sets for a in ("--set", s)
    ]


def finish(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_when(args: list[str], ready, what: str, timeout: float = 300, poll: float = 0.01) -> None:
    """Starts ``args``, waits until ``ready()`` is true (checked every ``poll`` s), then SIGKILLs it."""
    process = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                raise AssertionError(
                    f"the run ended before {what}: {process.stderr.read()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(poll)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"not killed during {what}"


def history_epochs(run_dir: Path) -> list[int]:
    path = next((run_dir / "checkpoints").glob("*/history.csv"))
    with path.open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference(tone_folder, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run; its cache is shared by the other runs (features are reused)."""
    root = tmp_path_factory.mktemp("reference")
    finish(run_args(tone_folder, root / "run", root / "cache"))
    return root / "run", root / "cache"


def test_kill_during_features_then_export_resumes_and_matches(reference, tone_folder, tmp_path):
    reference_dir, _ = reference
    run_dir, cache = tmp_path / "run", tmp_path / "cache"  # a cold cache: features really run
    args = run_args(tone_folder, run_dir, cache)
    # the cache holds chunks of ~32 clips (about 22 files for 720 clips), written as they finish
    chunks = lambda: [p for p in (cache / "features").rglob("*.npz") if ".tmp" not in p.name]  # noqa: E731
    kill_when(args, lambda: len(chunks()) >= 2, "feature extraction", poll=0.002)
    assert not (run_dir / "stages" / "features" / "_stage.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in chunks()}  # written whole before the kill
    assert len(finished) >= 2

    result = finish([*args, "--until", "evaluate"])
    assert "reusing stage ingest" in result.stderr and "running stage features" in result.stderr
    # the chunks finished before the kill came from the cache, not recomputed
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert not list((run_dir / "stages").glob(".*.tmp"))

    writing = lambda: any((run_dir / "stages").glob(".export.*.tmp/_outputs/*"))  # noqa: E731
    kill_when(args, writing, "export")
    assert not (run_dir / "stages" / "export" / "_stage.json").exists()
    assert not (run_dir / "export" / "saved_model.pb").exists()  # no half model published
    result = finish(args)
    assert result.stderr.count("reusing stage") == 4 and "running stage export" in result.stderr
    assert (run_dir / "export" / "saved_model.pb").is_file()
    assert not list((run_dir / "stages").glob(".*.tmp"))
    # deterministic: the interrupted run ends exactly where the uninterrupted one did
    got, want = metrics(run_dir), metrics(reference_dir)
    assert got["test_accuracy"] == want["test_accuracy"]
    assert got["val_accuracy"] == want["val_accuracy"]


def test_kill_mid_epoch_resumes_from_the_last_epoch(reference, tone_folder, tmp_path):
    reference_dir, cache = reference
    run_dir = tmp_path / "run"
    args = run_args(tone_folder, run_dir, cache)
    backups = run_dir / "checkpoints"

    def in_epoch_two() -> bool:
        meta = list(backups.glob("*/backup/training_metadata.json"))
        if not meta:
            return False
        try:
            return json.loads(meta[0].read_text())["epoch"] >= 1
        except (OSError, ValueError):
            return False

    kill_when(args, in_epoch_two, "training")
    assert not (run_dir / "stages" / "train" / "_stage.json").exists()
    epochs_before = history_epochs(run_dir)
    assert epochs_before[0] == 0 and len(epochs_before) <= 3

    result = finish(args)
    assert "reusing stage features" in result.stderr and "running stage train" in result.stderr
    assert history_epochs(run_dir) == [0, 1, 2, 3]  # no epoch logged twice, none lost
    got, want = metrics(run_dir), metrics(reference_dir)
    assert got["epochs_trained"] == 4
    # the resumed epochs see their batches in another order, so: equal within noise
    assert abs(got["test_accuracy"] - want["test_accuracy"]) <= 0.1
    with (run_dir / "gradients.csv").open(newline="") as handle:
        steps = [float(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(set(steps))  # the gradient log was trimmed to the backup too


def test_second_command_on_a_locked_run_dir_stops_at_once(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pipelines.locking import RunDirLock\n"
            f"with RunDirLock(Path({str(tmp_path / 'run')!r})):\n"
            "    print('held', flush=True); time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "run.py", "run", "translation", "--run-dir", str(tmp_path / "run")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 3, result.stderr
        assert str(tmp_path / "run") in result.stderr and f"process {holder.pid}" in result.stderr
        assert time.monotonic() - start < 60  # it did not wait for the holder
        assert not (tmp_path / "run" / "stages").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder releases the lock
        holder.wait()
    from pipelines.locking import RunDirLock

    with RunDirLock(tmp_path / "run"):
        pass


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.decode().strip()})")


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_unwritable_run_dir_is_one_clear_error(tmp_path, kind):
    if os.geteuid() != 0 and kind == "read-only":
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o555)
    else:
        target = tmp_path / "mnt"
        _mount_tmpfs(target, "size=64k" if kind == "full" else "size=64k,ro")
    try:
        if kind == "full":  # fill it up
            with (target / "filler").open("wb") as handle, pytest.raises(OSError):
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        result = subprocess.run(
            [
                sys.executable,
                "run.py",
                "run",
                "translation",
                "--run-dir",
                str(target / "run"),
                "--set",
                f"runtime.cache_dir={tmp_path / 'cache'}",
                "--set",
                "data.synthetic.examples=400",
                "--until",
                "tokenize",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 4, result.stderr
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "cannot use" in lines[0], result.stderr
    finally:
        if target.name == "mnt":
            subprocess.run(["umount", str(target)], check=False)
