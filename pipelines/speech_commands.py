"""The speech-command pipeline: ingest -> features -> train -> evaluate -> export."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.audio import FeatureConfig, load_audio
from data.augment import AugmentConfig, silence_clip
from data.checks import check
from data.clips import SILENCE, SPLITS, Clip, Rejected, SourceListing
from data.feature_store import FeatureSet, FeatureTask, compute_many
from data.files import read_json, write_json
from data.speech_sources import DataConfig, assign_splits, balance, list_source
from models.classifier import ModelConfig
from models.gradients import GradientConfig
from models.training import OptimizerConfig, TrainConfig
from models.tuning import TuneConfig
from pipelines.reporting import plot_confusion, plot_history, summary_rows, training_rows
from pipelines.runner import PIPELINES, Pipeline, Stage, StageContext
from pipelines.runtime import RuntimeConfig, set_seed


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` config section.

    Attributes:
        misclassified: how many misclassified test clips to list in metrics.json.
        batch_size: batch size for evaluation.
    """

    misclassified: int = 10
    batch_size: int = 128

    def __post_init__(self) -> None:
        check(self.misclassified >= 0, "eval.misclassified", self.misclassified, ">= 0")
        check(self.batch_size >= 1, "eval.batch_size", self.batch_size, ">= 1")


@dataclass(frozen=True)
class ExportConfig:
    """The ``export`` config section.

    Attributes:
        enabled: write the SavedModel to ``RUN_DIR/export``.
        top_k: how many alternatives ``predict`` prints.
    """

    enabled: bool = True
    top_k: int = 3

    def __post_init__(self) -> None:
        check(self.top_k >= 1, "export.top_k", self.top_k, ">= 1")


@dataclass(frozen=True)
class SpeechConfig:
    """Root config of the ``speech_commands`` pipeline."""

    pipeline: str = "speech_commands"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    gradients: GradientConfig = field(default_factory=GradientConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


# ---------------------------------------------------------------- ingest


def _check_header(path: str) -> str | None:
    """Why the file cannot be used, from its header alone, or None."""
    import soundfile

    try:
        info = soundfile.info(path)
    except FileNotFoundError:
        return "file not found"
    except Exception as err:  # noqa: BLE001 - libsndfile reports many formats' errors
        return f"unreadable audio ({str(err).strip()[:120]})"
    if info.frames == 0:
        return "empty audio (0 samples)"
    return None


def ingest(ctx: StageContext) -> dict[str, Any]:
    """Lists clips, assigns deterministic splits, adds ``_silence_`` clips, records rejections."""
    config: SpeechConfig = ctx.config
    data = config.data
    listing = list_source(data, Path(config.runtime.cache_dir), config.runtime.seed)
    rejected = list(listing.rejected)
    usable = []
    from rich.progress import track

    for clip in track(listing.clips, description="Checking audio", transient=True):
        reason = _check_header(clip.path)
        if reason:
            rejected.append(Rejected(clip.path, reason))
        else:
            usable.append(clip)
    clips, left_out = balance(assign_splits(SourceListing(clips=usable), data), data)

    if data.silence_percent:
        rng = np.random.default_rng(config.runtime.seed)
        noises = [load_audio(p, config.features.sample_rate) for p in listing.noise_files]
        n_samples = int(config.features.sample_rate * config.features.clip_seconds)
        silence_dir = ctx.out_dir / "silence"
        silence_dir.mkdir()
        import soundfile

        for split in SPLITS:
            count = int(round(sum(c.split == split for c in clips) * data.silence_percent / 100))
            for i in range(count):
                path = silence_dir / f"{split}_{i:05d}.wav"
                soundfile.write(
                    path, silence_clip(noises, n_samples, rng), config.features.sample_rate
                )
                # listed at the path it will have once the runner renames out_dir to final_dir
                final = ctx.final_dir / "silence" / path.name
                clips.append(Clip(str(final), SILENCE, f"silence-{split}", split))

    train_labels = sorted({c.label for c in clips if c.split == "train"})
    kept = []
    for clip in clips:
        if clip.label in train_labels:
            kept.append(clip)
        else:
            rejected.append(Rejected(clip.path, f"label {clip.label!r} has no training clips"))
    clips = kept
    counts = {s: sum(c.split == s for c in clips) for s in SPLITS}
    for split, count in counts.items():
        if not count:
            raise ValueError(
                f"The {split} split is empty after ingesting {data.source!r} ({len(clips)} clips, "
                f"{len(rejected)} rejected). Check data.split and its percentages or speakers."
            )
    if len(train_labels) < 2:
        raise ValueError(f"Need at least 2 labels to train a classifier; found {train_labels}")

    write_json(ctx.out_dir / "clips.json", [c.to_dict() for c in clips])
    write_json(ctx.out_dir / "rejected.json", [r.to_dict() for r in rejected])
    write_json(ctx.out_dir / "left_out.json", [r.to_dict() for r in listing.left_out])
    write_json(ctx.out_dir / "labels.json", train_labels)
    write_json(ctx.out_dir / "noise.json", listing.noise_files)
    speakers = {s: len({c.speaker for c in clips if c.split == s}) for s in SPLITS}
    per_label = {s: dict(Counter(c.label for c in clips if c.split == s)) for s in SPLITS}
    return {
        "labels": train_labels,
        "speakers": speakers,
        "per_label": per_label,
        "metrics": {
            "source": data.source,
            "labels": train_labels,
            "examples": counts,
            "speakers": speakers,
            "rejected": {"ingest": len(rejected)},
            # good clips skipped by design, listed in left_out.json (balance: by hash, unlisted)
            "left_out": {"not a class": len(listing.left_out), "balance": left_out},
        },
    }


# ---------------------------------------------------------------- features


def features(ctx: StageContext) -> dict[str, Any]:
    """Computes (cached) MFCC for every clip, plus augmented copies of the training clips."""
    config: SpeechConfig = ctx.config
    ingest_dir = ctx.input("ingest")
    clips = [Clip(**c) for c in read_json(ingest_dir / "clips.json")]
    labels = read_json(ingest_dir / "labels.json")
    noise_files = tuple(read_json(ingest_dir / "noise.json"))
    index = {label: i for i, label in enumerate(labels)}
    cache = str(Path(config.runtime.cache_dir) / "features")
    rejected: list[dict[str, str]] = []
    counts = {}
    for split in SPLITS:
        in_split = [c for c in clips if c.split == split]
        tasks, owners = [], []
        for clip in in_split:  # copy 0 is the clean clip, 1.. the augmented ones
            copies = config.augment.copies_for(clip.source) if split == "train" else 0
            for k in range(1 + copies):
                tasks.append(FeatureTask(clip.path, k))
                owners.append(clip)
        results = compute_many(
            tasks,
            config.features,
            config.augment,
            noise_files,
            cache,
            config.runtime.seed,
            workers=config.runtime.workers,
            description=f"MFCC {split}",
        )
        seqs, labs, paths, copy_ids = [], [], [], []
        for task, clip, result in zip(tasks, owners, results, strict=True):
            if isinstance(result, str):
                if task.copy == 0:
                    rejected.append({"item": clip.path, "reason": result, "split": split})
                continue
            seqs.append(result)
            labs.append(index[clip.label])
            paths.append(clip.path)
            copy_ids.append(task.copy)
        if not seqs:
            raise ValueError(
                f"No usable audio in the {split} split ({len(in_split)} clips rejected)"
            )
        feature_set = FeatureSet(
            frames=np.concatenate(seqs).astype(np.float32),
            lengths=np.array([len(s) for s in seqs], np.int32),
            labels=np.array(labs, np.int32),
            paths=np.array(paths),
            copies=np.array(copy_ids, np.int32),
        )
        feature_set.save(ctx.out_dir / f"{split}.npz")
        counts[split] = int(sum(c == 0 for c in copy_ids))
        if split == "train":
            augmented = int(sum(c > 0 for c in copy_ids))
    write_json(ctx.out_dir / "rejected.json", rejected)
    previous = ctx.results.get("ingest", {}).get("metrics", {})
    return {
        "metrics": {
            "examples": counts,
            "augmented_train_examples": augmented,
            "rejected": {**previous.get("rejected", {}), "features": len(rejected)},
            # ingest rejects files before they have a split; decoding failures are counted per split
            "rejected_by_split": {
                split: sum(r["split"] == split for r in rejected) for split in SPLITS
            },
        }
    }


# ---------------------------------------------------------------- train


def _datasets(ctx: StageContext, split: str, shuffle: bool):  # noqa: ANN202
    from data.datasets import sequence_dataset

    config: SpeechConfig = ctx.config
    feature_set = FeatureSet.load(ctx.input("features") / f"{split}.npz")
    return feature_set, sequence_dataset(
        feature_set,
        config.train.batch_size if shuffle else config.eval.batch_size,
        shuffle=shuffle,
        seed=config.runtime.seed,
        bucket_by_length=config.train.bucket_by_length,
    )


def build_model(config: SpeechConfig, n_classes: int, use_cudnn: bool | str = "auto"):  # noqa: ANN201
    """The classifier for this config (one builder for run, export and tuning)."""
    from models.classifier import build_classifier

    return build_classifier(
        config.model,
        n_classes,
        config.features.n_mfcc,
        deltas=config.features.deltas,
        utterance_mean=config.features.normalize in ("utterance", "utterance_var"),
        utterance_var=config.features.normalize == "utterance_var",
        use_cudnn=use_cudnn,
        seed=config.runtime.seed,
    )


def train(ctx: StageContext) -> dict[str, Any]:
    """Fits the classifier with clipping, gradient monitoring, checkpoints and resumable backups."""
    from models.training import fit_resumable

    config: SpeechConfig = ctx.config
    set_seed(config.runtime.seed)
    labels = read_json(ctx.input("ingest") / "labels.json")
    train_set, train_ds = _datasets(ctx, "train", shuffle=True)
    _, val_ds = _datasets(ctx, "validation", shuffle=False)
    model = build_model(config, len(labels))
    model.get_layer("normalization").adapt(train_ds)
    steps = config.train.steps_per_epoch or int(np.ceil(len(train_set) / config.train.batch_size))
    # Checkpoints are keyed by the stage fingerprint: a changed config never resumes a stale run.
    ckpt_dir = ctx.run_dir / "checkpoints" / ctx.fingerprint
    if ctx.force:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    result = fit_resumable(
        model,
        train_ds,
        val_ds,
        config.train,
        config.optimizer,
        config.gradients,
        steps,
        ckpt_dir,
        ctx.run_dir / "logs",
        recurrent_layer_names(model),
    )
    return finish_training(ctx, model, result, config.train.monitor)


def recurrent_layer_names(model) -> list[str]:  # noqa: ANN001 - a keras.Model
    """Names of the model's recurrent layers, input side first."""
    import keras

    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)
    ]


def finish_training(
    ctx: StageContext,
    model,  # noqa: ANN001 - a keras.Model
    result,  # noqa: ANN001 - a FitResult
    monitor: str,
    save_as: str = "model.keras",
) -> dict[str, Any]:
    """Saves the kept model, logs and plots of a fit; returns the train stage's summary.

    ``save_as`` ending in ``.weights.h5`` saves the weights only (models rebuilt from config).
    """
    import keras

    from models.gradients import clip_threshold
    from pipelines.reporting import plot_gradients

    if save_as.endswith(".weights.h5"):
        model.save_weights(ctx.out_dir / save_as)
    else:
        model.save(ctx.out_dir / save_as)
    ckpt_dir = result.kept_weights.parent
    for name in ("history.csv", "gradients.csv"):
        if (ckpt_dir / name).is_file():
            shutil.copy(ckpt_dir / name, ctx.out_dir / name)
    if (ckpt_dir / "gradients.csv").is_file():
        shutil.copy(ckpt_dir / "gradients.csv", ctx.run_dir / "gradients.csv")
    plot_history(ckpt_dir / "history.csv", ctx.run_dir / "plots" / "training.png")
    plot_gradients(
        result.gradient_rows,
        result.gradient_layers,
        clip_threshold(model.optimizer),
        ctx.run_dir / "plots" / "gradients.png",
    )
    for warning in result.gradient_warnings:
        print(f"WARNING: {warning}", flush=True)
    rows = [r for r in result.history if r.get(monitor) not in (None, "", "nan")]
    best_row = (min if monitor.endswith("loss") else max)(rows, key=lambda r: float(r[monitor]))
    return {
        "epochs": len(result.history),
        "parameters": int(model.count_params()),
        "metrics": {
            "epochs_trained": len(result.history),
            "best_epoch": int(best_row["epoch"]) + 1,
            "val_accuracy": float(best_row["val_accuracy"]),
            "parameters": int(model.count_params()),
            "keras_version": keras.__version__,
            "gradients": result.gradient_summary,
            "gradient_warnings": result.gradient_warnings,
            "diverged_at_step": result.diverged_step,
        },
    }


# ---------------------------------------------------------------- evaluate


def _load_model(ctx: StageContext):  # noqa: ANN202
    import keras

    import models.features  # noqa: F401 - registers the custom layers for loading

    return keras.models.load_model(ctx.input("train") / "model.keras")


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Test-split accuracy, per-class precision/recall/F1, confusion matrix, misclassified clips."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    config: SpeechConfig = ctx.config
    labels = read_json(ctx.input("ingest") / "labels.json")
    model = _load_model(ctx)
    test_set, _ = _datasets(ctx, "test", shuffle=False)
    from data.datasets import sequence_dataset

    probs = model.predict(
        sequence_dataset(test_set, config.eval.batch_size).map(lambda x, y: x), verbose=0
    )
    predicted = probs.argmax(axis=1)
    truth = test_set.labels
    accuracy = float(np.mean(predicted == truth))
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=ids, zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=ids)
    plot_confusion(
        matrix,
        labels,
        ctx.run_dir / "plots" / "confusion_matrix.png",
        f"test accuracy {accuracy:.3f}",
    )
    write_json(ctx.out_dir / "confusion_matrix.json", {"labels": labels, "matrix": matrix.tolist()})
    wrong = np.flatnonzero(predicted != truth)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][: config.eval.misclassified]
    misclassified = [
        {
            "path": str(test_set.paths[i]),
            "true": labels[truth[i]],
            "predicted": labels[predicted[i]],
            "probability": round(float(probs[i, predicted[i]]), 4),
        }
        for i in wrong
    ]
    per_class = {
        label: {
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
            "support": int(s),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    return {
        "metrics": {
            "test_accuracy": accuracy,
            "test_examples": len(truth),
            "per_class": per_class,
            "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
            "misclassified": misclassified,
        }
    }


# ---------------------------------------------------------------- export


def export(ctx: StageContext) -> dict[str, Any]:
    """Writes ``RUN_DIR/export``: a SavedModel serving raw waveforms (portable, non-cuDNN LSTM)."""
    from models.export import export_speech_classifier

    config: SpeechConfig = ctx.config
    if not config.export.enabled:
        return {"skipped": "export.enabled is false"}
    train_summary = ctx.results.get("train", {})
    if not train_summary.get("epochs"):
        raise RuntimeError("Refusing to export: the train stage reports no completed epoch")
    labels = read_json(ctx.input("ingest") / "labels.json")
    trained = _load_model(ctx)
    portable = build_model(config, len(labels), use_cudnn=False)
    portable.set_weights(trained.get_weights())
    clips = [Clip(**c) for c in read_json(ctx.input("ingest") / "clips.json")]
    sample = load_audio(
        next(c.path for c in clips if c.split == "test"), config.features.sample_rate
    )
    out = export_speech_classifier(
        portable,
        config.features,
        labels,
        ctx.run_dir / "export",
        metadata={
            "top_k": config.export.top_k,
            "test_accuracy": ctx.results.get("evaluate", {})
            .get("metrics", {})
            .get("test_accuracy"),
            "source": config.data.source,
        },
        check_waveform=sample,
    )
    return {"path": str(out), "metrics": {"export_dir": str(out)}}


def summarize(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Run-summary rows for this pipeline."""
    rows = [("source", str(metrics.get("source", "")))]
    rows += summary_rows(metrics)
    left_out = {k: v for k, v in metrics.get("left_out", {}).items() if v}
    if left_out:
        rows.append(("left out by design", ", ".join(f"{k} {v}" for k, v in left_out.items())))
    if "val_accuracy" in metrics:
        rows.append(
            ("best val accuracy", f"{metrics['val_accuracy']:.4f} (epoch {metrics['best_epoch']})")
        )
    if "test_accuracy" in metrics:
        rows.append(
            ("test accuracy", f"{metrics['test_accuracy']:.4f} on {metrics['test_examples']} clips")
        )
        worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:3]
        rows.append(("weakest classes (F1)", ", ".join(f"{k} {v['f1']:.2f}" for k, v in worst)))
    for item in metrics.get("misclassified", [])[:3]:
        rows.append(
            (
                "misclassified",
                f"{Path(item['path']).name}: {item['true']} -> {item['predicted']} ({item['probability']:.2f})",
            )
        )
    return rows + training_rows(metrics)


PIPELINE = PIPELINES.register("speech_commands")(
    Pipeline(
        name="speech_commands",
        config_class=SpeechConfig,
        stages=(
            Stage(
                "ingest",
                ingest,
                sections=("data", "features.sample_rate", "features.clip_seconds", "runtime.seed"),
            ),
            Stage(
                "features",
                features,
                reads=("ingest",),
                sections=("features", "augment", "runtime.seed"),
            ),
            Stage(
                "train",
                train,
                reads=("ingest", "features"),
                sections=("model", "optimizer", "gradients", "train", "runtime.seed"),
            ),
            Stage("evaluate", evaluate, reads=("ingest", "features", "train"), sections=("eval",)),
            Stage(
                "export",
                export,
                reads=("ingest", "train", "evaluate"),
                sections=("export", "features"),
            ),
        ),
        summarize=summarize,
    )
)
