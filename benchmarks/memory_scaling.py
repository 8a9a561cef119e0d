"""Peak memory of the data and train stages as the data grows, both pipelines.

Speech: N one-second clips (tones with noise, FSDD-style names: 10 labels, 40 speakers) for
each size, run through the real pipeline (``run.py run fsdd``, the preset's front end and
model). Translation: a TSV of N distinct sentence pairs (Zipf-distributed words of a
20,000-word vocabulary on each side, 3-14 words) through ``run.py run translation`` with
``data.source=tsv:FILE``. Each runs in two commands, ``--until features`` (or ``tokenize``) and
then ``--until train`` (one epoch of 50 steps: the reader streams the same way however many
steps), and each command's peak resident memory is reported. Flat memory means the stage never
holds the whole split; the baseline is the smallest size.
Usage: python benchmarks/memory_scaling.py [--sizes 2500 10000 40000] [--pairs 20000 100000]
    [--only speech|text]
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


def measure_sizes(
    sizes: list[int],
    make_data,  # noqa: ANN001 - (n) -> the --set lines that point the run at size n's data
    preset: str,
    first_until: str,
    tmp: Path,
) -> list[tuple[int, str, float, float]]:
    """Peak memory of ``run.py run PRESET`` up to ``first_until`` and then ``train``, each size.

    One epoch of 50 steps: the reader streams the same way however many steps.
    """
    rows = []
    for n in sorted(sizes):
        sets = [*make_data(n), "train.epochs=1", "train.steps_per_epoch=50", "train.verbose=0"]
        base = [sys.executable, "run.py", "run", preset, "--run-dir", str(tmp / f"{preset}-{n}")]
        base += [a for s in sets for a in ("--set", s)]
        label = f"ingest + {first_until}"
        rows.append((n, label, *peak_mb([*base, "--until", first_until])))
        rows.append((n, "train", *peak_mb([*base, "--until", "train"])))
    return rows


def speech_rows(sizes: list[int], tmp: Path) -> list[tuple[int, str, float, float]]:
    """Peak memory of ``run.py run fsdd`` on generated clips, each size."""

    def clips(n: int) -> list[str]:
        generate(tmp / f"clips-{n}", n)
        return [
            f"data.source=fsdd:{tmp / f'clips-{n}'}",
            "data.test_speakers=[s0]",
            "augment.copies=0",
            f"runtime.cache_dir={tmp / 'cache'}",
        ]

    return measure_sizes(sizes, clips, "fsdd", "features", tmp)


def write_pairs(path: Path, n: int, words: int = 20_000) -> None:
    """``n`` distinct ``source<TAB>target`` lines of Zipf-distributed made-up words."""
    rng = np.random.default_rng(n)
    vocab = [f"w{i}" for i in range(words)]
    seen: set[str] = set()
    with path.open("w", encoding="utf-8") as handle:
        while len(seen) < n:
            ranks = np.minimum(rng.zipf(1.3, 28), words) - 1
            a, b = rng.integers(3, 15, 2)
            line = (
                " ".join(vocab[r] for r in ranks[:a])
                + "\t"
                + " ".join(vocab[r].upper() for r in ranks[14 : 14 + b])
            )
            if line not in seen:
                seen.add(line)
                handle.write(line + "\n")


def text_rows(sizes: list[int], tmp: Path) -> list[tuple[int, str, float, float]]:
    """Peak memory of ``run.py run translation`` on generated sentence pairs, each size."""

    def pairs(n: int) -> list[str]:
        write_pairs(tmp / f"pairs-{n}.tsv", n)
        return [
            f"data.source=tsv:{tmp / f'pairs-{n}.tsv'}",
            "text.max_source_tokens=20",
            "text.max_target_tokens=20",
            "text.source_vocab=8000",
            "text.target_vocab=8000",
            "eval.validation_bleu=false",
        ]

    return measure_sizes(sizes, pairs, "translation", "tokenize", tmp)


def report(rows: list[tuple[int, str, float, float]], unit: str) -> None:
    smallest = min(n for n, *_ in rows)
    first = {stage: mb for n, stage, mb, _ in rows if n == smallest}
    for n, stage, mb, seconds in rows:
        print(
            f"{n:7d} {unit}  {stage:18s} {mb:8.0f} MB  {mb / first[stage]:5.2f}x the "
            f"{smallest}-{unit[:-1]} run  ({seconds:.0f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 10000, 40000])
    parser.add_argument("--pairs", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--only", choices=("speech", "text"))
    args = parser.parse_args()
    print("peak resident memory of each command (flat = the stage does not grow with the data)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "text":
            report(speech_rows(args.sizes, Path(tmp)), "clips")
        if args.only != "speech":
            report(text_rows(args.pairs, Path(tmp)), "pairs")


if __name__ == "__main__":
    main()
