"""Accuracy of the ``fsdd`` preset on real spoken digits, on speakers never heard in training.

Runs the real CLI for: the preset's held-out speaker with several seeds, leave-one-speaker-out for
every speaker (validation on held-back clips of the training speakers, never the test one), and FSDD's own takes-0-4 split.
Prints a table and writes it to ``runs/benchmarks/fsdd_accuracy.json``.
Usage: python benchmarks/fsdd_accuracy.py [--data DIR] [--seeds 0 1 2] [--skip-loso] [--skip-takes]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET_SPEAKER = "george"  # data.test_speakers of pipelines/configs/fsdd.yaml
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "yweweler")


def run(name: str, sets: list[str]) -> dict:
    run_dir = ROOT / "runs" / "benchmarks" / name
    args = [sys.executable, "run.py", "run", "fsdd", "--run-dir", str(run_dir)]
    for item in sets:
        args += ["--set", item]
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "run": name,
        "test_accuracy": round(metrics["test_accuracy"], 4),
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "train_seconds": round(metrics["stage_seconds"].get("train", 0), 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/fsdd/recordings"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--speakers", nargs="+", default=list(SPEAKERS), help="LOSO speakers")
    parser.add_argument("--skip-loso", action="store_true")
    parser.add_argument("--skip-takes", action="store_true")
    args = parser.parse_args()
    source = f"data.source=fsdd:{args.data}"
    rows = [run(f"preset-seed{s}", [source, f"runtime.seed={s}"]) for s in args.seeds]
    if not args.skip_loso:
        for speaker in args.speakers:
            if speaker == PRESET_SPEAKER and 0 in args.seeds:  # the preset's own seed-0 run
                rows.append({**rows[args.seeds.index(0)], "run": f"loso-{speaker}"})
                continue
            rows.append(run(f"loso-{speaker}", [source, f"data.test_speakers=[{speaker}]"]))
    if not args.skip_takes:
        rows.append(
            run(
                "takes-0-4",
                [source, "data.split=takes", "data.test_takes=5", "data.test_speakers=[]"],
            )
        )
    out = ROOT / "runs" / "benchmarks" / "fsdd_accuracy.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"{'run':<16} {'test acc':>9} {'val acc':>8} {'train s':>8}")
    for row in rows:
        print(
            f"{row['run']:<16} {row['test_accuracy']:>9.4f} {row['val_accuracy']:>8.4f} {row['train_seconds']:>8.1f}"
        )


if __name__ == "__main__":
    main()
