"""Train stage throughput against a bare ``model.fit`` of the same model on NumPy arrays.

For each pipeline: ``run.py run PIPELINE --until train`` (the stage users run: tf.data input,
clipping, the gradient monitor, checkpoints, backups, logs, plots) gives examples/s over the
train stage's own seconds (``stage_seconds.train``: model building and adaptation, every epoch
with its validation, saving). The baseline, in a fresh process: the same model built by the
pipeline's own builder, compiled with the same optimizer, loss and metrics, ``fit`` on the
stage's training data as zero-padded NumPy arrays with the same batch size, epochs and validation
data, no callbacks; timed around ``fit`` only. Each side is run ``--rounds`` times, alternating,
and the fastest counts (other work on the machine only adds time). A ratio below 0.9 is explained
by a breakdown: the stage's epochs against its set-up, and the bare fit again on the stage's own
``tf.data`` input pipeline, which separates the input's cost from the stage's other machinery.

Usage: python benchmarks/train_throughput.py [--epochs 3] [--json FILE]
       python benchmarks/train_throughput.py --bare RUN_DIR   (the baseline alone, prints JSON)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.speedlib import ROOT, Row, run_pipeline, save_rows  # noqa: E402

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


def bare_fit(run_dir: Path, tfdata: bool = False) -> dict:
    """The baseline on the run's own config and stage outputs: seconds of ``model.fit``.

    With ``tfdata``, the same bare fit reads the stage's own ``tf.data`` pipelines instead of
    NumPy arrays: what separates the input pipeline's cost from the stage's other machinery.
    """
    import numpy as np

    from models.training import build_optimizer
    from pipelines.cli import resolve_config
    from pipelines.runtime import set_seed

    name = "translation" if (run_dir / "stages" / "tokenize").is_dir() else "speech_commands"
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
        if tfdata:
            x, y = (
                sequence_dataset(
                    sets["train"], batch, train.shuffle, config.runtime.seed, train.bucket_by_length
                ),
                None,
            )
            validation = sequence_dataset(
                sets["validation"], config.eval.batch_size, bucket_by_length=train.bucket_by_length
            )
        labels = json.loads((stages / "ingest" / "labels.json").read_text())
        model = build_model(config, len(labels))
        # adapting the normalization is part of building the model, outside the timed fit
        model.get_layer("normalization").adapt(sequence_dataset(sets["train"], batch))
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        from data.text import END_ID, START_ID, read_vocabulary
        from data.text_datasets import PairIds, load_split
        from models.seq2seq import TokenAccuracy, smoothed_loss
        from pipelines.translation import build_model

        def arrays(ids: PairIds):  # noqa: ANN202
            src = ids.sources()
            tgt = np.split(ids.target, np.cumsum(ids.target_lengths)[:-1])
            width = int(ids.target_lengths.max()) + 1
            t_in = _pad([[START_ID, *t] for t in tgt], width)
            t_out = _pad([[*t, END_ID] for t in tgt], width)
            return (_pad(src, int(ids.source_lengths.max())), t_in), t_out

        ids = {s: load_split(stages / "tokenize", s) for s in ("train", "validation")}
        x, y = arrays(ids["train"])
        validation = arrays(ids["validation"])
        if tfdata:
            from data.text_datasets import pair_dataset

            bucket = train.bucket_by_length
            x, y = (
                pair_dataset(ids["train"], batch, train.shuffle, config.runtime.seed, bucket),
                None,
            )
            validation = pair_dataset(ids["validation"], batch, bucket_by_length=bucket)
        vs, vt = (
            len(read_vocabulary(stages / "tokenize" / f))
            for f in ("source_vocab.txt", "target_vocab.txt")
        )
        model = build_model(config, vs, vt).build_with_dummy()
        loss, metrics = smoothed_loss(config.model.label_smoothing), [TokenAccuracy()]
    n = len(ids["train"]) if name == "translation" else len(sets["train"])
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


def _bare(run_dir: Path, tfdata: bool = False) -> dict:
    args = [sys.executable, __file__, "--bare", str(run_dir), *(["--tfdata"] if tfdata else [])]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _epoch_seconds(log: Path) -> list[int]:
    """Each epoch's seconds as Keras printed them (``80/80 - 5s - ...``, verbose 2)."""
    return [int(m) for m in re.findall(r"^\d+/\d+ - (\d+)s - ", log.read_text(), re.M)]


def measure(pipeline: str, epochs: int, rounds: int, work: Path) -> Row:
    """The stage and the bare fit, alternating ``rounds`` times; the fastest of each."""
    sets = [*PIPELINES[pipeline], f"train.epochs={epochs}", "train.early_stopping=0"]
    stage, bare, n = [], [], 0
    for i in range(rounds):
        # round 0 leaves the run that serving_speed.py and cost_growth.py continue
        run_dir = work / (pipeline if i == 0 else f"{pipeline}-{i}")
        metrics = run_pipeline(pipeline, run_dir, sets, until="train")
        stage.append(metrics["stage_seconds"]["train"])
        n = metrics["examples"]["train"] + metrics.get("augmented_train_examples", 0)
        bare.append(_bare(work / pipeline)["seconds"])
    best = int(np.argmin(stage))
    stage_rate, bare_rate = n * epochs / min(stage), n * epochs / min(bare)
    ratio = stage_rate / bare_rate
    row = Row(
        "train",
        f"{pipeline} train stage vs bare model.fit (examples/s)",
        f"{ratio:.2f}x",
        ">= 0.9x",
        ratio >= 0.9,
        f"{n} examples x {epochs} epochs, fastest of {rounds}: stage {min(stage):.1f} s = "
        f"{stage_rate:.0f}/s, bare fit on NumPy arrays {min(bare):.1f} s = {bare_rate:.0f}/s",
    )
    if not row.met:
        log = work / f"{pipeline if best == 0 else f'{pipeline}-{best}'}.log"
        fit = _epoch_seconds(log)
        tfdata = _bare(work / pipeline, tfdata=True)["seconds"]
        # the stage makes TensorFlow's ops deterministic (runtime.deterministic, the default);
        # the bare fit does not
        loose = min(
            run_pipeline(
                pipeline,
                work / f"{pipeline}-nondeterministic-{i}",
                [*sets, "runtime.deterministic=false"],
                until="train",
            )["stage_seconds"]["train"]
            for i in range(rounds)
        )
        row.profile = [
            f"train stage {min(stage):.1f} s: model.fit's epochs {' + '.join(map(str, fit))} s "
            f"(Keras' log, whole seconds), the rest (build, adapt, compile, save, plots) "
            f"{min(stage) - sum(fit):.1f} s",
            f"the same stage with runtime.deterministic=false: {loose:.1f} s (fastest of {rounds})",
            f"bare fit, no callbacks: on NumPy arrays {min(bare):.1f} s; on the stage's own "
            f"tf.data input pipeline {tfdata:.1f} s",
            "so, roughly: deterministic ops "
            f"{max(min(stage) - loose, 0):.1f} s, the input pipeline "
            f"{max(tfdata - min(bare), 0):.1f} s, the stage's callbacks, gradient monitor and "
            f"set-up {max(loose - tfdata, 0):.1f} s (runs on shared cores vary by 2-5 s)",
        ]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pipeline", action="append", choices=sorted(PIPELINES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare", type=Path, help="run only the baseline on this run directory")
    parser.add_argument("--tfdata", action="store_true", help="--bare on the stage's tf.data")
    parser.add_argument("--work", type=Path, help="keep the run directories here (run_all.py)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(bare_fit(args.bare, args.tfdata)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-train-"))
    rows = [measure(p, args.epochs, args.rounds, work) for p in args.pipeline or sorted(PIPELINES)]
    save_rows(rows, args.json)


if __name__ == "__main__":
    main()
