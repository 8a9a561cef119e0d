"""Serving speed of the exported SavedModels, called in process (both cores, no HTTP).

Speech: ``serving_default`` on one 1-s window (p50/p99 latency over many calls) and on batches
of 64 windows (windows/s); the split between the in-graph MFCC front end (``MfccLayer`` with the
run's settings, alone) and the recurrent classifier (the trained Keras model on precomputed
MFCC, alone), each in a ``tf.function``. Translation: sentences/s of the export's
``serving_default`` at batch 1 and 32, exported with beam search (``decode.beam_width=4``, the
preset) and again greedily (``decode.beam_width=1``; only evaluate and export rerun). HTTP costs
are measured separately by ``serve_load.py``.

Usage: python benchmarks/serving_speed.py [--work DIR] [--json FILE]
  (``--work``: where ``train_throughput.py --work`` left its runs; otherwise they are made)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.speedlib import Row, run_pipeline, save_rows, timed  # noqa: E402
from benchmarks.train_throughput import PIPELINES  # noqa: E402
from data.files import read_json_lines  # noqa: E402

BEAM_EXPORT = "translation-export-beam4"  # a copy of the beam export, beside the runs


def exported(pipeline: str, work: Path, epochs: int, extra: list[str]) -> Path:
    """The run directory of ``pipeline`` carried through export (train reused when present)."""
    sets = [*PIPELINES[pipeline], f"train.epochs={epochs}", "train.early_stopping=0", *extra]
    run_pipeline(pipeline, work / pipeline, sets)
    return work / pipeline


def speech_rows(run_dir: Path) -> list[Row]:
    import keras
    import tensorflow as tf

    import models.features  # noqa: F401 - registers the custom layers
    from models.features import MfccLayer
    from pipelines.cli import resolve_config

    _, config = resolve_config("speech_commands", [str(run_dir / "config.yaml")])
    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    rate, seconds = config.features.sample_rate, config.features.clip_seconds
    rng = np.random.default_rng(0)
    one = tf.constant(rng.normal(0, 0.1, (1, int(rate * seconds))).astype(np.float32))
    batch = tf.constant(rng.normal(0, 0.1, (64, int(rate * seconds))).astype(np.float32))
    whole = timed(lambda: serve(waveform=one), 300)
    batched = timed(lambda: serve(waveform=batch), 20)
    mfcc = tf.function(MfccLayer(config.features))
    model = keras.models.load_model(run_dir / "stages" / "train" / "model.keras")
    classify = tf.function(lambda x: model(x, training=False))
    feats = mfcc(one)
    front = np.median(timed(lambda: mfcc(one), 300))
    back = np.median(timed(lambda: classify(feats), 300))
    p50, p99 = np.percentile(whole, 50) * 1000, np.percentile(whole, 99) * 1000
    share = front / (front + back)
    return [
        Row(
            "serving",
            "speech export, one 1-s window: p50 / p99 latency",
            f"{p50:.2f} / {p99:.2f} ms",
            note="300 calls of serving_default",
        ),
        Row(
            "serving",
            "speech export, batches of 64 windows",
            f"{64 / np.median(batched):.0f} windows/s",
            note=f"median of 20 calls: {np.median(batched) * 1000:.1f} ms per batch",
        ),
        Row(
            "serving",
            "speech, one window: in-graph MFCC / recurrent classifier",
            f"{front * 1000:.2f} / {back * 1000:.2f} ms ({share:.0%} / {1 - share:.0%})",
            note="each alone in a tf.function, median of 300 calls",
        ),
    ]


def translation_rates(export: Path, sentences: list[str]) -> dict[int, float]:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the Unicode normalization op the export uses

    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    rates = {}
    for size, repeats in ((1, 40), (32, 8)):
        chunks = [sentences[i : i + size] for i in range(0, size * repeats, size)]
        it = iter(chunks * 3)
        took = timed(lambda it=it: serve(text=tf.constant(next(it))), repeats)  # noqa: B023
        rates[size] = size / float(np.median(took))
    return rates


def translation_rows(run_dir: Path, epochs: int) -> list[Row]:
    test = read_json_lines(run_dir / "stages" / "ingest" / "test.jsonl")
    sentences = [p["source"] for p in test]
    beam = translation_rates(run_dir / "export", sentences)
    # kept for cost_growth.py, which decodes with the preset's beam search
    shutil.rmtree(run_dir.parent / BEAM_EXPORT, ignore_errors=True)
    shutil.copytree(run_dir / "export", run_dir.parent / BEAM_EXPORT)
    exported("translation", run_dir.parent, epochs, ["decode.beam_width=1"])
    greedy = translation_rates(run_dir / "export", sentences)
    return [
        Row(
            "serving",
            f"translation export, batch {size}: greedy / beam 4",
            f"{greedy[size]:.0f} / {beam[size]:.0f} sentences/s",
            note=f"beam costs {greedy[size] / beam[size]:.1f}x greedy; held-out dates, median of calls",
        )
        for size in (1, 32)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-serving-"))
    no_stream = ["eval.stream_clips=0"]  # evaluate only what serving needs, quickly
    speech = exported("speech_commands", work, args.epochs, no_stream)
    translation = exported("translation", work, args.epochs, [])
    rows = speech_rows(speech) + translation_rows(translation, args.epochs)
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
