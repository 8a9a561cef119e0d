"""Peak memory of the features and train stages as the speech data grows.

Generates N one-second clips (tones with noise, FSDD-style names: 10 labels, 40 speakers) for
each size, runs the real pipeline on them (``run.py run fsdd``, the preset's front end and model)
in two steps, ``--until features`` and then ``--until train`` (one epoch of 50 steps: the reader
streams the same way however many steps), and reports each process's peak resident memory.
Flat memory means the stage never holds the whole split; the baseline is the smallest size.
Usage: python benchmarks/memory_scaling.py [--sizes 2500 10000 40000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]


def generate(folder: Path, n: int, sample_rate: int = 8000) -> None:
    """``n`` clips named ``LABEL_SPEAKER_TAKE.wav``: a label's tone, varied, with noise."""
    rng = np.random.default_rng(n)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(sample_rate) / sample_rate
    for i in range(n):
        label, speaker, take = i % 10, (i // 10) % 40, i // 400
        freq = 200 * (1 + label) * (1 + 0.03 * rng.standard_normal())
        y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
        soundfile.write(
            folder / f"{label}_s{speaker}_{take}.wav", y.astype(np.float32), sample_rate
        )


# A fresh parent per measurement: RUSAGE_CHILDREN's ru_maxrss is the largest descendant it
# has waited for, so each command's peak is reported alone (its worker processes included).
_MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_mb(command: list[str]) -> tuple[float, float]:
    """Runs ``command``; returns its peak resident memory (MB) and wall seconds."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True, cwd=ROOT
    )
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 10000, 40000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            data, run_dir = Path(tmp) / f"clips-{n}", Path(tmp) / f"run-{n}"
            generate(data, n)
            sets = [
                f"data.source=fsdd:{data}",
                "data.test_speakers=[s0]",
                "augment.copies=0",
                f"runtime.cache_dir={Path(tmp) / 'cache'}",
                "train.epochs=1",
                "train.steps_per_epoch=50",
                "train.verbose=0",
            ]
            base = [sys.executable, "run.py", "run", "fsdd", "--run-dir", str(run_dir)]
            base += [a for s in sets for a in ("--set", s)]
            rows.append((n, "ingest + features", *peak_mb([*base, "--until", "features"])))
            rows.append((n, "train", *peak_mb([*base, "--until", "train"])))
    print("peak resident memory of each command (flat = the stage does not grow with the data)")
    first = {stage: mb for n, stage, mb, _ in rows if n == min(args.sizes)}
    for n, stage, mb, seconds in rows:
        print(
            f"{n:6d} clips  {stage:18s} {mb:8.0f} MB  {mb / first[stage]:5.2f}x the "
            f"{min(args.sizes)}-clip run  ({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
