"""Speed of MFCC extraction: the project's cached, parallel path against a plain librosa loop.

Prints ratios against the plain loop measured in the same run (absolute times vary by machine).
Usage: python benchmarks/feature_extraction.py [FOLDER_OF_WAVS] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.audio import FeatureConfig, load_audio, mfcc  # noqa: E402
from data.feature_store import FeatureTask, compute_many  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "folder",
        nargs="?",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/fsdd/recordings"),
    )
    parser.add_argument("--limit", type=int, default=600)
    args = parser.parse_args()
    files = sorted(str(p) for p in Path(args.folder).rglob("*.wav"))[: args.limit]
    if not files:
        sys.exit(f"no .wav files under {args.folder}")
    config = FeatureConfig(sample_rate=16000)
    tasks = [FeatureTask(f) for f in files]

    mfcc(load_audio(files[0], config.sample_rate), config)  # librosa's first-call set-up, untimed
    start = time.perf_counter()
    for path in files:
        mfcc(load_audio(path, config.sample_rate), config)
    plain = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as cache:
        timings = {}
        for name, workers in (("1 worker, cold cache", 1), ("2 workers, cold cache", 2)):
            sub = f"{cache}/{workers}"
            start = time.perf_counter()
            compute_many(tasks, config, cache_dir=sub, workers=workers)
            timings[name] = time.perf_counter() - start
        start = time.perf_counter()
        compute_many(tasks, config, cache_dir=f"{cache}/2", workers=1)
        timings["warm cache"] = time.perf_counter() - start

    print(f"{len(files)} clips; plain librosa loop = 1.00 (its time: {plain:.2f} s)")
    for name, seconds in timings.items():
        print(
            f"{name:>24}: {seconds / plain:5.2f} x the plain loop's time  ({plain / seconds:5.1f}x speed)"
        )


if __name__ == "__main__":
    main()
