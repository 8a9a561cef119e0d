"""Mixed precision on this CPU: does ``train.precision=mixed_bfloat16`` train faster than float32?

Runs the real train stage (``run.py run PIPELINE --until train``) of both default pipelines with
``train.precision`` float32 (the baseline) and mixed_bfloat16, alternating in rounds so machine
noise hits both alike, with the same epochs and seed. Prints the train stage's seconds per epoch,
the ratio against float32, and the validation metric after the same epochs (the exports are
float32 either way).
Usage: python benchmarks/mixed_precision.py [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = {
    "speech_commands": "val_accuracy",
    "translation": "val_token_accuracy",
}


def train_once(pipeline: str, precision: str, epochs: int, run_dir: Path) -> dict[str, float]:
    """One train stage; returns its seconds per epoch and validation metric."""
    sets = [
        f"train.precision={precision}",
        f"train.epochs={epochs}",
        "train.early_stopping=0",
        "train.verbose=0",
    ]
    command = [sys.executable, str(ROOT / "run.py"), "run", pipeline, "--run-dir", str(run_dir)]
    command += ["--until", "train", "--force"] + [a for s in sets for a in ("--set", s)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "seconds_per_epoch": metrics["stage_seconds"]["train"] / epochs,
        "val": metrics[PIPELINES[pipeline]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.epochs} epochs per setting")
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in PIPELINES:
            results: dict[str, list[dict[str, float]]] = {"float32": [], "mixed_bfloat16": []}
            for _ in range(args.rounds):
                for precision in results:
                    run_dir = Path(tmp) / f"{pipeline}-{precision}"
                    results[precision].append(train_once(pipeline, precision, args.epochs, run_dir))
            base = min(r["seconds_per_epoch"] for r in results["float32"])
            for precision, rows in results.items():
                best = min(r["seconds_per_epoch"] for r in rows)
                print(
                    f"{pipeline:16s} {precision:15s} {best:6.2f} s/epoch (best of "
                    f"{len(rows)})  {best / base:5.2f}x float32's time  "
                    f"{PIPELINES[pipeline]} {rows[-1]['val']:.4f} after {args.epochs} epochs"
                )


if __name__ == "__main__":
    main()
