"""Cost of the gradient monitor: training steps/s with it (at several intervals) against without.

Each variant trains the same BiLSTM classifier on the same random batches, interleaved in rounds
so machine noise hits all of them alike; prints the ratio of steps/s to the no-monitor baseline.
Usage: python benchmarks/gradient_monitor.py [--steps 150] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.classifier import ModelConfig, build_classifier  # noqa: E402
from models.gradients import GradientConfig, GradientMonitor  # noqa: E402


def make_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_classifier(
        ModelConfig(units=64, bidirectional=True, pooling="mean"), 12, n_mfcc=13, deltas=1
    )
    model.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0), "sparse_categorical_crossentropy")
    return model


def steps_per_second(every: int | None, data: tf.data.Dataset, steps: int) -> float:
    model = make_model()
    callbacks = []
    if every:
        monitor = GradientMonitor(GradientConfig(every=every), csv_path=None)
        monitor.install(model)
        callbacks.append(monitor)
    model.fit(data.take(3), epochs=1, verbose=0, callbacks=callbacks)  # trace and warm up
    start = time.perf_counter()
    model.fit(data.take(steps), epochs=1, verbose=0, callbacks=callbacks)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * 8, 50, 13)).astype("float32")
    y = rng.integers(0, 12, size=64 * 8)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()
    variants = {
        "no monitor (baseline)": None,
        "monitor every 1": 1,
        "monitor every 10 (default)": 10,
        "monitor every 50": 50,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(args.rounds):
        # rotate the order each round so warm-up and machine drift do not favour one variant
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            results[name].append(steps_per_second(variants[name], data, args.steps))
    base = np.median(results["no monitor (baseline)"])
    for name, values in results.items():
        rate = np.median(values)
        print(
            f"{name:>28}: {rate / base:5.3f} x baseline steps/s  (cost {100 * (1 - rate / base):+5.1f}%)"
        )


if __name__ == "__main__":
    main()
