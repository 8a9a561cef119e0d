"""Cost of ``runtime.deterministic``: train-stage time with and without it, in the same run.

Runs a pipeline's train stage (earlier stages are prepared once and reused) alternately with
deterministic ops off and on, ``--repeats`` times each, in fresh processes, and prints the median
train seconds and their ratio, plus whether each setting reproduced its own metrics.

    python benchmarks/determinism.py                      # the default speech pipeline
    python benchmarks/determinism.py --pipeline translation --set train.epochs=3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(pipeline: str, run_dir: Path, sets: list[str]) -> dict:
    args = [
        sys.executable,
        "run.py",
        "run",
        pipeline,
        "--run-dir",
        str(run_dir),
        "--until",
        "train",
    ]
    for item in sets:
        args += ["--set", item]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="speech_commands")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="determinism-"))
    base = [f"runtime.cache_dir={root / 'cache'}", *args.set]  # a --set may override
    run(args.pipeline, root / "warm", [*base, "train.epochs=1"])  # data and features cached
    seconds: dict[bool, list[float]] = {False: [], True: []}
    results: dict[bool, list[tuple]] = {False: [], True: []}
    for i in range(args.repeats):
        for flag in (False, True):
            metrics = run(
                args.pipeline, root / f"{flag}-{i}", [*base, f"runtime.deterministic={flag}"]
            )
            seconds[flag].append(metrics["stage_seconds"]["train"])
            key = "val_accuracy" if "val_accuracy" in metrics else "val_token_accuracy"
            results[flag].append((metrics[key], metrics["epochs_trained"]))
    plain, det = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"train stage, median of {args.repeats}: deterministic off {plain:.1f} s, on {det:.1f} s")
    print(f"ratio on/off: {det / plain:.2f}")
    for flag in (False, True):
        same = len(set(results[flag])) == 1
        print(f"deterministic={flag}: results {results[flag]} -> reproduced: {same}")


if __name__ == "__main__":
    main()
