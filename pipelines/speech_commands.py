"""The speech-command pipeline: ingest -> features -> train -> evaluate -> export."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from data.audio import load_audio
from data.augment import write_silence_clips
from data.clips import SPLITS, Clip, SourceListing, is_audio_name
from data.feature_shards import write_split
from data.files import read_json, write_json
from data.speech_sources import (
    assign_splits,
    balance,
    keep_trained_labels,
    list_source,
    readable_clips,
    source_state,
    usable_noise_files,
)
from pipelines.reporting import plot_confusion, speech_summary
from pipelines.runner import PIPELINES, Pipeline, Stage, StageContext
from pipelines.speech_config import SpeechConfig
from pipelines.stages import (
    TRAIN_OUTPUTS,
    TRAIN_SECTIONS,
    TrainTask,
    check_rejected,
    check_splits,
    require_trained,
    train_stage,
)

# ---------------------------------------------------------------- ingest


def ingest(ctx: StageContext) -> dict[str, Any]:
    """Lists clips, assigns deterministic splits, adds ``_silence_`` clips, records rejections."""
    config: SpeechConfig = ctx.config
    data = config.data
    listing = list_source(data, Path(config.runtime.cache_dir), config.runtime.seed)
    usable, rejected = readable_clips(listing)
    # what counts against data.max_rejected_percent: audio files that cannot be used
    unusable = [(r.item, r.reason) for r in rejected if r.clip_entry or is_audio_name(r.item)]
    check_rejected(len(usable), unusable, data.max_rejected_percent, "audio files")
    clips, left_out = balance(assign_splits(SourceListing(clips=usable), data), data)
    listing.noise_files = usable_noise_files(listing.noise_files, rejected)

    if data.silence_percent:
        per_split = {split: sum(c.split == split for c in clips) for split in SPLITS}
        clips += write_silence_clips(
            listing.noise_files,
            {k: int(round(v * data.silence_percent / 100)) for k, v in per_split.items()},
            ctx.out_dir / "silence",
            ctx.final_dir / "silence",  # where they will be once the runner publishes the stage
            config.features,
            config.runtime.seed,
        )

    clips, train_labels = keep_trained_labels(clips, rejected)
    counts = {s: sum(c.split == s for c in clips) for s in SPLITS}
    check_splits(counts, "clips", data.source, "Check data.split and its percentages or speakers.")
    wanted = [c for c in data.commands if c not in train_labels]
    if wanted:
        raise ValueError(
            f"data.commands {wanted}: no training clips for these words in {data.source!r}; "
            f"the labels with training clips are {train_labels}"
        )
    if len(train_labels) < 2:
        raise ValueError(f"Need at least 2 labels to train a classifier; found {train_labels}")

    write_json(ctx.out_dir / "clips.json", [c.to_dict() for c in clips])
    write_json(ctx.out_dir / "rejected.json", [r.to_dict() for r in rejected])
    write_json(ctx.out_dir / "left_out.json", [r.to_dict() for r in listing.left_out])
    write_json(ctx.out_dir / "labels.json", train_labels)
    write_json(ctx.out_dir / "audio_files.json", {"usable": len(usable), "unusable": unusable})
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
        # written shard by shard as the MFCC arrive: a large split is never held whole
        manifest, failed = write_split(
            in_split,
            index,
            {
                c.path: config.augment.copies_for(c.source) if split == "train" else 0
                for c in in_split
            },
            ctx.out_dir,
            split,
            place=split == "train" and config.features.window == "full",
            features=config.features,
            aug=config.augment,
            noise_files=noise_files,
            cache_dir=cache,
            seed=config.runtime.seed,
            workers=config.runtime.workers,
            description=f"MFCC {split}",
        )
        rejected += [{"item": path, "reason": reason, "split": split} for path, reason in failed]
        counts[split] = manifest["clean"]
        if split == "train":
            augmented, failed_copies = manifest["augmented"], manifest["failed_copies"]
    write_json(ctx.out_dir / "rejected.json", rejected)
    previous = ctx.results.get("ingest", {}).get("metrics", {})
    audio = read_json(ingest_dir / "audio_files.json")  # what ingest found unusable, and the rest
    check_rejected(
        audio["usable"] - len(rejected),
        [tuple(r) for r in audio["unusable"]] + [(r["item"], r["reason"]) for r in rejected],
        config.data.max_rejected_percent,
        "audio files",
    )
    return {
        "metrics": {
            "examples": counts,
            "augmented_train_examples": augmented,
            "augmented_copies_failed": failed_copies,  # of usable clips: counted, not hidden
            "rejected": {**previous.get("rejected", {}), "features": len(rejected)},
            # ingest rejects files before they have a split; decoding failures are counted per split
            "rejected_by_split": {
                split: sum(r["split"] == split for r in rejected) for split in SPLITS
            },
        }
    }


# ---------------------------------------------------------------- train


def _datasets(ctx: StageContext, split: str, shuffle: bool):  # noqa: ANN202
    """``(examples, batches)`` of a split, streamed from its shards."""
    from data.feature_shards import count, split_dataset

    config: SpeechConfig = ctx.config
    folder = ctx.input("features")
    return count(folder, split), split_dataset(
        folder,
        split,
        config.train.batch_size if shuffle else config.eval.batch_size,
        shuffle=shuffle and config.train.shuffle,
        seed=config.runtime.seed,
        bucket_by_length=config.train.bucket_by_length,
    )


def build_model(config: SpeechConfig, n_classes: int, use_cudnn: bool | str = "auto"):  # noqa: ANN201
    """The classifier for this config (one builder for run, export and tuning)."""
    from data.audio import feature_shape
    from models.classifier import build_classifier

    return build_classifier(
        config.model,
        n_classes,
        config.features.n_mfcc,
        deltas=config.features.deltas,
        utterance_mean=config.features.normalize in ("utterance", "utterance_var"),
        utterance_var=config.features.normalize == "utterance_var",
        running_mean=config.features.normalize in ("running", "running_var"),
        running_var=config.features.normalize == "running_var",
        causal=config.features.streaming,
        window_frames=feature_shape(config.features).max_frames,
        prior_frames=round(
            config.features.running_prior_seconds * 1000 / config.features.stride_ms
        ),
        n_mels=config.features.n_mels,
        use_cudnn=use_cudnn,
        seed=config.runtime.seed,
    )


def _n_classes(ctx: StageContext) -> int:
    return len(read_json(ctx.input("ingest") / "labels.json"))


def _train_datasets(ctx: StageContext) -> tuple[Any, Any, int]:
    from data.datasets import mixup, soft_targets

    n_train, train_ds = _datasets(ctx, "train", shuffle=True)
    _, val_ds = _datasets(ctx, "validation", shuffle=False)
    model: Any = ctx.config.model
    if model.soft_targets:  # a categorical loss: one-hot targets, mixed or not
        n = _n_classes(ctx)
        val_ds = soft_targets(val_ds, n)
        if model.mixup_alpha:
            train_ds = mixup(train_ds, n, model.mixup_alpha, ctx.config.runtime.seed)
        else:
            train_ds = soft_targets(train_ds, n)
    return train_ds, val_ds, n_train


def _build_for_training(ctx: StageContext, train_ds: Any) -> Any:
    model = build_model(ctx.config, _n_classes(ctx))
    if ctx.config.model.mixup_alpha:
        # the normalization's statistics come from the clips as a served model sees them, not
        # from mixtures (whose variance is smaller)
        _, train_ds = _datasets(ctx, "train", shuffle=False)
    model.get_layer("normalization").adapt(train_ds)
    return model


def _recurrent_layers(model: Any) -> list[str]:
    from models.classifier import recurrent_layer_names

    return recurrent_layer_names(model)


def train(ctx: StageContext) -> dict[str, Any]:
    """Fits the classifier with the shared train stage (clipping, monitor, backups).

    With ``model.label_smoothing`` or ``model.mixup_alpha`` the targets are one-hot and the loss
    categorical; otherwise integer labels and sparse cross-entropy.
    """
    import keras

    model: Any = ctx.config.model
    task = TrainTask(_train_datasets, _build_for_training, _recurrent_layers)
    if model.soft_targets:
        task = dataclasses.replace(
            task,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=model.label_smoothing),
            metrics=lambda: [keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
    return train_stage(task)(ctx)


# ---------------------------------------------------------------- evaluate


def _load_model(ctx: StageContext):  # noqa: ANN202
    import keras

    import models.features  # noqa: F401 - registers the custom layers for loading

    return keras.models.load_model(ctx.input("train") / "model.keras")


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Test-split accuracy, per-class precision/recall/F1, confusion matrix, misclassified clips."""
    from models.evaluation import classification_report, stream_metrics, windowed_accuracy

    config: SpeechConfig = ctx.config
    labels = read_json(ctx.input("ingest") / "labels.json")
    model = _load_model(ctx)
    from data.feature_shards import load_split

    test_set = load_split(ctx.input("features"), "test")  # the test split is evaluated whole
    from data.datasets import sequence_dataset

    probs = model.predict(
        sequence_dataset(test_set, config.eval.batch_size).map(lambda x, y: x), verbose=0
    )
    report = classification_report(
        probs, test_set.labels, labels, test_set.paths, config.eval.misclassified
    )
    matrix = np.array(report["confusion_matrix"]["matrix"])
    plot_confusion(
        matrix,
        labels,
        ctx.output("plots/confusion_matrix.png"),
        f"test accuracy {report['test_accuracy']:.3f}",
    )
    write_json(ctx.out_dir / "confusion_matrix.json", report["confusion_matrix"])
    # how the model does on audio as a microphone delivers it (models.evaluation)
    rate = config.features.sample_rate
    noises = [load_audio(p, rate) for p in read_json(ctx.input("ingest") / "noise.json")]
    clean = np.flatnonzero(test_set.copies == 0)
    test_clips = [
        (load_audio(str(test_set.paths[i]), rate), labels[test_set.labels[i]]) for i in clean
    ]
    report["test_accuracy_windowed"] = windowed_accuracy(
        model, test_clips, labels, config.features, noises, config.runtime.seed
    )
    if config.eval.stream_clips:
        report["stream"] = stream_metrics(
            model,
            test_clips,
            labels,
            config.features,
            noises,
            config.runtime.seed,
            config.eval.stream_clips,
            config.eval.batch_size,
            config.detect,
        )
    return {"metrics": report}


# ---------------------------------------------------------------- export


def export(ctx: StageContext) -> dict[str, Any]:
    """Writes ``RUN_DIR/export``: a SavedModel serving raw waveforms (portable, non-cuDNN LSTM)."""
    from models.export import export_speech_classifier

    config: SpeechConfig = ctx.config
    if not config.export.enabled:
        return {"skipped": "export.enabled is false"}
    require_trained(ctx)
    labels = read_json(ctx.input("ingest") / "labels.json")
    trained = _load_model(ctx)
    portable = build_model(config, len(labels), use_cudnn=False)
    portable.set_weights(trained.get_weights())
    clips = [Clip(**c) for c in read_json(ctx.input("ingest") / "clips.json")]
    sample = load_audio(
        next(c.path for c in clips if c.split == "test"), config.features.sample_rate
    )
    export_speech_classifier(
        portable,
        config.features,
        labels,
        ctx.output("export"),
        metadata={
            "top_k": config.export.top_k,
            "test_accuracy": ctx.results.get("evaluate", {})
            .get("metrics", {})
            .get("test_accuracy"),
            "source": config.data.source,
            "detector": dataclasses.asdict(config.detect),
        },
        check_waveform=sample,
    )
    final = ctx.run_dir / "export"
    summary: dict[str, Any] = {"path": str(final), "metrics": {"export_dir": str(final)}}
    if config.export.tflite:
        report = _export_tflite(ctx, portable, labels, clips)
        summary["metrics"]["tflite"] = {
            "dir": str(final / "tflite"),
            "quantize": report["quantize"],
            "bytes": report["bytes"],
            "latency_ms": report["latency_ms"],
            "parity": {k: v for k, v in report["parity"].items() if k != "failures"},
        }
    return summary


def _export_tflite(ctx: StageContext, model: Any, labels: list[str], clips: list[Clip]) -> dict:
    """``export/tflite``: calibrated on validation audio, checked on test clips."""
    import tensorflow as tf

    from data.audio import feature_shape, fit_length
    from data.clips import spread_by_label
    from models.tflite import export_tflite

    config: SpeechConfig = ctx.config
    rate = config.features.sample_rate
    window = feature_shape(config.features).clip_samples

    def windows(split: str, limit: int) -> list[tuple[np.ndarray, int]]:
        # every label in turn: a listing's first clips are often all one word
        usable = [c for c in clips if c.split == split and c.label in labels]
        chosen = spread_by_label(usable, limit, config.runtime.seed)
        return [
            (fit_length(load_audio(c.path, rate), window, full=True), labels.index(c.label))
            for c in chosen
        ]

    calibration = [w for w, _ in windows("validation", 100) or windows("train", 100)]
    serve = tf.saved_model.load(str(ctx.output("export"))).signatures["serving_default"]
    return export_tflite(
        model,
        config.features,
        labels,
        ctx.output("export") / "tflite",
        config.export.quantize,
        calibration=calibration,
        check_clips=windows("test", config.export.check_clips),
        reference=lambda x: serve(waveform=tf.constant(x))["probabilities"].numpy(),
        metadata={"detector": dataclasses.asdict(config.detect), "top_k": config.export.top_k},
    )


PIPELINE = PIPELINES.register("speech_commands")(
    Pipeline(
        name="speech_commands",
        config_class=SpeechConfig,
        stages=(
            Stage(
                "ingest",
                ingest,
                version=3,
                sections=("data", "features.sample_rate", "features.clip_seconds", "runtime.seed"),
                watch=lambda config: source_state(config.data),
            ),
            Stage(
                "features",
                features,
                version=3,
                reads=("ingest",),
                sections=("features", "augment", "runtime.seed", "data.max_rejected_percent"),
            ),
            Stage(
                "train",
                train,
                version=2,
                reads=("ingest", "features"),
                sections=TRAIN_SECTIONS,
                outputs=TRAIN_OUTPUTS,
            ),
            Stage(
                "evaluate",
                evaluate,
                version=5,
                reads=("ingest", "features", "train"),
                sections=("eval", "detect"),
                outputs=("plots/confusion_matrix.png",),
            ),
            Stage(
                "export",
                export,
                version=4,
                reads=("ingest", "train", "evaluate"),
                sections=("export", "features", "detect"),
                outputs=("export",),
            ),
        ),
        summarize=speech_summary,
    )
)
