"""How cost grows with size: features, one epoch, tokenization and decoding at 3 sizes each.

Each is timed at three sizes, 4x apart end to end, and the slope of log(seconds) on log(size) is
fitted: 1 is linear, below 1 means fixed costs still weigh, above ``FLAG`` is flagged as growing
faster than linear.

- features: the feature cache's cold path (``data.feature_store.compute_many``, one process, an
  empty cache) on 500 / 1,000 / 2,000 FSDD clips (the faster of two runs) (skipped without ``../shared/data``);
- one epoch: the train stage (``run.py run ... --until train --set train.epochs=1``) of both
  pipelines, speech on ``data.max_per_label`` 60 / 120 / 240 of the eSpeak data, translation on
  3,000 / 6,000 / 12,000 generated dates;
- tokenization: ``tokenize_many`` + ``build_vocabulary`` + ``encode`` (what the tokenize stage
  does per split) on 5,000 / 20,000 / 80,000 generated date sentences;
- decoding: the translation export's ``serving_default`` (beam 4 or greedy, as exported) on one
  batch of 32 / 128 / 512 held-out sentences (needs ``--translation-run``).

Usage: python benchmarks/cost_growth.py [--translation-run RUN_DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.speedlib import FSDD, Row, loglog_slope, run_pipeline, save_rows  # noqa: E402
from data.files import read_json_lines  # noqa: E402

FLAG = 1.15  # slopes above this grow faster than linear (measurement noise allowed for)


def row(name: str, unit: str, sizes: list[int], seconds: list[float]) -> Row:
    slope = loglog_slope(sizes, seconds)
    points = ", ".join(f"{s:,} {unit}: {t:.2f} s" for s, t in zip(sizes, seconds, strict=True))
    return Row("growth", name, f"slope {slope:.2f}", f"<= {FLAG} (linear)", slope <= FLAG, points)


def features(work: Path) -> Row:
    from data.feature_store import FeatureTask, compute_many
    from pipelines.cli import resolve_config

    _, config = resolve_config("fsdd", (), [f"data.source=fsdd:{FSDD}"])
    paths = sorted(str(p) for p in FSDD.glob("*.wav"))
    sizes, seconds = [500, 1000, 2000], []
    for size in sizes:
        best = []
        for _ in range(2):  # the faster of two: other work on the machine only adds time
            cache = work / f"features-{size}"
            start = time.perf_counter()
            tasks = [FeatureTask(p) for p in paths[:size]]
            compute_many(tasks, config.features, cache_dir=str(cache))
            best.append(time.perf_counter() - start)
            shutil.rmtree(cache, ignore_errors=True)
        seconds.append(min(best))
    return row("features, cold cache, one process", "clips", sizes, seconds)


def epochs(work: Path) -> list[Row]:
    cases = {
        "speech_commands": ("data.max_per_label", [60, 120, 240]),
        "translation": ("data.synthetic.examples", [3000, 6000, 12000]),
    }
    rows = []
    for pipeline, (key, values) in cases.items():
        sizes, seconds = [], []
        for value in values:
            sets = [f"{key}={value}", "train.epochs=1", "train.early_stopping=0"]
            metrics = run_pipeline(pipeline, work / f"{pipeline}-{value}", sets, until="train")
            sizes.append(metrics["examples"]["train"] + metrics.get("augmented_train_examples", 0))
            seconds.append(metrics["stage_seconds"]["train"])
        rows.append(row(f"{pipeline} train stage, one epoch", "examples", sizes, seconds))
    return rows


def tokenization() -> Row:
    from data.synthetic_text import generate_dates
    from data.text import TextConfig, build_vocabulary, encode, tokenize_many

    text = TextConfig()
    sizes, seconds = [5000, 20000, 80000], []
    pairs = generate_dates(max(sizes), 0)
    for size in sizes:
        sentences = [source for source, _ in pairs[:size]]
        start = time.perf_counter()
        tokens = tokenize_many(sentences, text, "source")
        encode(tokens, build_vocabulary(tokens, text.source_vocab, text.min_count))
        seconds.append(time.perf_counter() - start)
    return row("tokenization (tokenize, vocabulary, encode)", "sentences", sizes, seconds)


def decoding(run_dir: Path, export: Path) -> Row:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the Unicode normalization op the export uses

    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    test = read_json_lines(run_dir / "stages" / "ingest" / "test.jsonl")
    sentences = [p["source"] for p in test]
    serve(text=tf.constant(sentences[:32]))  # warm-up
    sizes, seconds = [32, 128, 512], []
    for size in sizes:
        batch = tf.constant((sentences * (size // len(sentences) + 1))[:size])
        start = time.perf_counter()
        serve(text=batch)
        seconds.append(time.perf_counter() - start)
    return row("translation export, decoding one batch", "sentences", sizes, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translation-run", type=Path, help="a run with test.json and export")
    parser.add_argument("--export", type=Path, help="the export to decode (default: the run's)")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    rows = []
    if (FSDD / "3_george_1.wav").is_file():
        rows.append(features(work))
    else:
        rows.append(Row("growth", "features", "skipped", note=f"FSDD not found at {FSDD}"))
    rows += epochs(work)
    rows.append(tokenization())
    if args.translation_run:
        export = args.export or args.translation_run / "export"
        rows.append(decoding(args.translation_run, export))
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
