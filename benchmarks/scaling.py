"""Two loopback workers against one process on the same global batch: train stage examples/s.

``python run.py run speech_commands --workers 2`` with ``train.batch_size=B/2`` (per replica)
against ``python run.py run speech_commands`` with ``train.batch_size=B``, the stages before
train shared (same cache). Both processes of the two-worker run share this machine's cores, so
no speed-up is expected here; the figure says what the synchronization costs.

What TensorFlow documents (``tf.distribute.MultiWorkerMirroredStrategy``): synchronous
data-parallel training; every worker holds a copy of every variable and runs the same step on
its shard of the global batch, and the gradients are all-reduced across workers every step
(collective ops; every worker must take part). So on N machines a step costs one worker's compute
on B/N examples plus an all-reduce of all gradients: throughput grows toward N times one
worker's only while that compute dominates the all-reduce. The API reference gives no measured
scaling figure.

Usage: python benchmarks/scaling.py [--epochs 2] [--batch 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.speedlib import Row, run_pipeline, save_rows, stage_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    # fixed order and no early stop, so both do the same number of steps on the same data
    sets = [f"train.epochs={args.epochs}", "train.early_stopping=0", "train.shuffle=false"]
    one = run_pipeline(
        "speech_commands", work / "one", [*sets, f"train.batch_size={args.batch}"], until="train"
    )
    two = run_pipeline(
        "speech_commands",
        work / "two",
        [*sets, f"train.batch_size={args.batch // 2}"],
        until="train",
        extra=["--workers", "2"],
    )
    n = (one["examples"]["train"] + one.get("augmented_train_examples", 0)) * args.epochs
    secs_one, secs_two = stage_seconds(work / "one", "train"), stage_seconds(work / "two", "train")
    rate_one, rate_two = n / secs_one, n / secs_two
    dist = two.get("distribution", {})
    rows = [
        Row(
            "scaling",
            "speech train stage, 2 loopback workers vs 1 process (same global batch)",
            f"{rate_two / rate_one:.2f}x",
            "reported (no speed-up possible on 2 shared cores)",
            None,
            f"global batch {args.batch}, {n} examples trained: 1 process "
            f"{secs_one:.1f} s = {rate_one:.0f}/s; 2 workers "
            f"({dist.get('strategy')}, {dist.get('replicas')} replicas) "
            f"{secs_two:.1f} s = {rate_two:.0f}/s; whole command "
            f"{one['wall_seconds']:.0f} s vs {two['wall_seconds']:.0f} s",
        )
    ]
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
