"""Train stage throughput against a bare ``model.fit`` of the same model on NumPy arrays.

For each pipeline: ``run.py run PIPELINE --until train`` (the stage users run: tf.data input,
clipping, the gradient monitor, checkpoints, backups, logs, plots) gives examples/s over the
train stage's own seconds (``stage_seconds.train``: model building and adaptation, every epoch
with its validation, saving). The baseline, in a fresh process: the same model built by the
pipeline's own builder, compiled with the same optimizer, loss and metrics, ``fit`` on the
stage's training data as zero-padded NumPy arrays with the same batch size, epochs and validation
data, no callbacks; timed around ``fit`` only. A ratio below 0.9 is explained by a cProfile of
the stage.

Usage: python benchmarks/train_throughput.py [--epochs 3] [--json FILE]
       python benchmarks/train_throughput.py --bare RUN_DIR   (the baseline alone, prints JSON)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.speedlib import ROOT, Row, profile_lines, run_pipeline, save_rows  # noqa: E402

PIPELINES = {
    # the default speech data (eSpeak voices; generated once into the project's cache)
    "speech_commands": [],
    # the dates task, a third of the default size
    "translation": ["data.synthetic.examples=8000"],
}


def _pad(rows: list, width: int, shape: tuple = ()):  # noqa: ANN001, ANN202
    import numpy as np

    out = np.zeros((len(rows), width, *shape), np.float32 if shape else np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def bare_fit(run_dir: Path) -> dict:
    """The baseline on the run's own config and stage outputs: seconds of ``model.fit``."""
    import numpy as np

    from models.training import build_optimizer
    from pipelines.cli import resolve_config
    from pipelines.runtime import set_seed

    config = json.loads((run_dir / "metrics.json").read_text())
    name = "translation" if "tokenize" in config["stage_seconds"] else "speech_commands"
    _, config = resolve_config(name, [str(run_dir / "config.yaml")])
    set_seed(config.runtime.seed, config.runtime.deterministic)
    train, epochs, batch = config.train, config.train.epochs, config.train.batch_size
    stages = run_dir / "stages"
    if name == "speech_commands":
        from data.datasets import sequence_dataset
        from data.feature_store import FeatureSet
        from pipelines.speech_commands import build_model

        sets = {
            s: FeatureSet.load(stages / "features" / f"{s}.npz") for s in ("train", "validation")
        }

        def arrays(fs: FeatureSet):  # noqa: ANN202
            seqs = np.split(fs.frames, np.cumsum(fs.lengths)[:-1])
            return _pad(seqs, int(fs.lengths.max()), (fs.frames.shape[1],)), fs.labels

        x, y = arrays(sets["train"])
        validation = arrays(sets["validation"])
        labels = json.loads((stages / "ingest" / "labels.json").read_text())
        model = build_model(config, len(labels))
        # adapting the normalization is part of building the model, outside the timed fit
        model.get_layer("normalization").adapt(sequence_dataset(sets["train"], batch))
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        from data.text import END_ID, START_ID, read_vocabulary
        from data.text_datasets import PairIds
        from models.seq2seq import TokenAccuracy, smoothed_loss
        from pipelines.translation import build_model

        def arrays(ids: PairIds):  # noqa: ANN202
            src = ids.sources()
            tgt = np.split(ids.target, np.cumsum(ids.target_lengths)[:-1])
            width = int(ids.target_lengths.max()) + 1
            t_in = _pad([[START_ID, *t] for t in tgt], width)
            t_out = _pad([[*t, END_ID] for t in tgt], width)
            return (_pad(src, int(ids.source_lengths.max())), t_in), t_out

        ids = {s: PairIds.load(stages / "tokenize" / f"{s}.npz") for s in ("train", "validation")}
        x, y = arrays(ids["train"])
        validation = arrays(ids["validation"])
        vs, vt = (
            len(read_vocabulary(stages / "tokenize" / f))
            for f in ("source_vocab.txt", "target_vocab.txt")
        )
        model = build_model(config, vs, vt).build_with_dummy()
        loss, metrics = smoothed_loss(config.model.label_smoothing), [TokenAccuracy()]
    n = len(y)
    steps = int(np.ceil(n / batch))
    model.compile(
        optimizer=build_optimizer(config.optimizer, steps, epochs), loss=loss, metrics=metrics
    )
    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=epochs,
        validation_data=validation,
        shuffle=train.shuffle,
        verbose=0,
    )
    return {"seconds": time.perf_counter() - start, "examples": n, "epochs": epochs}


def measure(pipeline: str, epochs: int, work: Path) -> Row:
    sets = [*PIPELINES[pipeline], f"train.epochs={epochs}", "train.early_stopping=0"]
    run_dir = work / pipeline
    metrics = run_pipeline(pipeline, run_dir, sets, until="train")
    stage = metrics["stage_seconds"]["train"]
    n = metrics["examples"]["train"] + metrics.get("augmented_train_examples", 0)
    proc = subprocess.run(
        [sys.executable, __file__, "--bare", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    bare = json.loads(proc.stdout.strip().splitlines()[-1])
    stage_rate = n * epochs / stage
    bare_rate = bare["examples"] * bare["epochs"] / bare["seconds"]
    ratio = stage_rate / bare_rate
    row = Row(
        "train",
        f"{pipeline} train stage vs bare model.fit (examples/s)",
        f"{ratio:.2f}x",
        ">= 0.9x",
        ratio >= 0.9,
        f"{n} examples x {epochs} epochs: stage {stage:.1f} s = {stage_rate:.0f}/s, bare fit "
        f"{bare['seconds']:.1f} s = {bare_rate:.0f}/s",
    )
    if not row.met:
        stats = work / f"{pipeline}.prof"
        profiled = run_pipeline(
            pipeline, work / f"{pipeline}-profiled", sets, until="train", profile=stats
        )
        row.profile = [
            f"cProfile of the train stage ({profiled['stage_seconds']['train']:.1f} s under the "
            "profiler), project and Keras functions by cumulative time:"
        ] + profile_lines(
            stats, 18, r"main/(models|pipelines|data)/|keras/src/(trainers|callbacks)"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pipeline", action="append", choices=sorted(PIPELINES))
    parser.add_argument("--bare", type=Path, help="run only the baseline on this run directory")
    parser.add_argument("--work", type=Path, help="keep the run directories here (run_all.py)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(bare_fit(args.bare)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-train-"))
    rows = [measure(p, args.epochs, work) for p in args.pipeline or sorted(PIPELINES)]
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
