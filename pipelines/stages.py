"""What both pipelines share: the train stage, the export guard and the data checks.

A pipeline supplies a ``TrainTask`` (its datasets, model, loss and metrics; TF Model Garden's
``Task`` and SpeechBrain's ``Brain`` are the models for it) and gets back the stage function that
fits it the project's way: gradient clipping, the gradient monitor, checkpoints, resumable
backups, logs and plots.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.runner import StageContext
from pipelines.runtime import set_seed

TRAIN_OUTPUTS = ("gradients.csv", "plots/training.png", "plots/gradients.png")
# what a fit depends on, for both pipelines (the datasets and model come from the stages read)
TRAIN_SECTIONS = (
    "model",
    "optimizer",
    "gradients",
    "train",
    "runtime.seed",
    "runtime.deterministic",
)


@dataclass(frozen=True)
class TrainTask:
    """What a pipeline supplies to the shared train stage.

    Attributes:
        datasets: ``ctx -> (train_ds, val_ds, n_train_examples)``.
        build_model: ``(ctx, train_ds) -> model``, built (and adapted) but not compiled.
        recurrent_layers: ``model -> names`` of its recurrent layers, input side first.
        loss: the Keras loss.
        metrics: ``() -> list`` of Keras metrics (fresh objects per fit).
        save_as: ``model.keras`` (whole model) or ``*.weights.h5`` (rebuilt from config).
        accuracy_key: the name under which the best epoch's ``val_accuracy`` is reported.
    """

    datasets: Callable[[StageContext], tuple[Any, Any, int]]
    build_model: Callable[[StageContext, Any], Any]
    recurrent_layers: Callable[[Any], list[str]]
    loss: Any = "sparse_categorical_crossentropy"
    metrics: Callable[[], list] = field(default=lambda: ["accuracy"])
    save_as: str = "model.keras"
    accuracy_key: str = "val_accuracy"


def train_stage(task: TrainTask) -> Callable[[StageContext], dict[str, Any]]:
    """The train stage for ``task``; reads ``ctx.config.{train,optimizer,gradients,runtime}``."""

    def train(ctx: StageContext) -> dict[str, Any]:
        import numpy as np

        from models.training import fit_resumable, precision_policy
        from pipelines import distribute

        config = ctx.config
        set_seed(config.runtime.seed, config.runtime.deterministic)
        name = distribute.resolve(config.runtime.strategy)
        strategy = distribute.strategy(name)
        replicas = int(strategy.num_replicas_in_sync)
        # train.batch_size is per replica: the datasets are batched globally and split by the
        # strategy, so every replica steps on batch_size examples.
        global_batch = config.train.batch_size * replicas
        global_ctx = replace(
            ctx, config=replace(config, train=replace(config.train, batch_size=global_batch))
        )
        train_ds, val_ds, n_train = task.datasets(global_ctx)
        train_ds, val_ds = distribute.shard_for(train_ds, name), distribute.shard_for(val_ds, name)
        steps = config.train.steps_per_epoch or int(np.ceil(n_train / global_batch))
        # Checkpoints are keyed by the stage fingerprint: a changed config never resumes a stale
        # run, and a rerun of the same stage resumes (or reuses a finished fit). And by the
        # replica count, which sets the global batch, so the steps per epoch and the schedule's
        # position: a run killed alone and resumed on 2 workers starts afresh.
        key = ctx.fingerprint if replicas == 1 else f"{ctx.fingerprint}-{replicas}replicas"
        ckpt_dir = ctx.run_dir / "checkpoints" / key
        if ctx.force:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        # The default strategy runs without a scope, exactly as before strategies existed.
        scope = strategy.scope() if name != "default" else contextlib.nullcontext()
        with precision_policy(config.train.precision), scope:
            model = task.build_model(ctx, train_ds)
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
                task.recurrent_layers(model),
                loss=task.loss,
                metrics=task.metrics(),
            )
        distribution = {
            "strategy": name,
            "workers": distribute.cluster_size() if name == "multi_worker" else 1,
            "replicas": replicas,
            "global_batch_size": global_batch,
        }
        saved = model
        if config.train.precision != "float32":
            # The saved model (and so evaluate and the export) computes in float32.
            saved = task.build_model(ctx, train_ds)
            saved.set_weights(model.get_weights())
        return _finish(ctx, model, result, config.train.monitor, task, distribution, saved)

    return train


def _finish(
    ctx: StageContext,
    model: Any,
    result: Any,
    monitor: str,
    task: TrainTask,
    distribution: dict[str, Any],
    saved: Any,
) -> dict:
    """Saves the kept model, logs and plots of a fit; returns the train stage's summary."""
    import keras

    from models.gradients import clip_threshold
    from pipelines.reporting import plot_gradients, plot_history

    if task.save_as.endswith(".weights.h5"):
        saved.save_weights(ctx.out_dir / task.save_as)
    else:
        saved.save(ctx.out_dir / task.save_as)
    ckpt_dir = result.kept_weights.parent
    for name in ("history.csv", "gradients.csv"):
        if (ckpt_dir / name).is_file():
            shutil.copy(ckpt_dir / name, ctx.out_dir / name)
    if (ckpt_dir / "gradients.csv").is_file():
        shutil.copy(ckpt_dir / "gradients.csv", ctx.output("gradients.csv"))
    plot_history(ckpt_dir / "history.csv", ctx.output("plots/training.png"))
    plot_gradients(
        result.gradient_rows,
        result.gradient_layers,
        clip_threshold(model.optimizer),
        ctx.output("plots/gradients.png"),
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
            task.accuracy_key: float(best_row["val_accuracy"]),
            "parameters": int(model.count_params()),
            "keras_version": keras.__version__,
            "gradients": result.gradient_summary,
            "gradient_warnings": result.gradient_warnings,
            "diverged_at_step": result.diverged_step,
            "distribution": distribution,
            "precision": ctx.config.train.precision,
        },
    }


def require_trained(ctx: StageContext) -> None:
    """The export guard: refuses to export a model the train stage did not finish training."""
    if not ctx.results.get("train", {}).get("epochs"):
        raise RuntimeError("Refusing to export: the train stage reports no completed epoch")


def check_splits(counts: dict[str, int], what: str, source: str, hint: str) -> None:
    """Stops before training if a split is empty.

    Args:
        counts: examples per split.
        what: what the examples are (``clips``, ``pairs``).
        source: the data source, for the message.
        hint: which settings to check.
    """
    for split, count in counts.items():
        if not count:
            raise ValueError(
                f"The {split} split is empty after ingesting {source!r} (examples per split: "
                f"{counts}). {hint}"
            )


def check_rejected(
    kept: int,
    rejected: list[tuple[str, str]],
    max_percent: float,
    what: str,
    total_rejected: int | None = None,
) -> None:
    """Stops before training if more than ``max_percent`` of the input was unusable.

    Args:
        kept: usable examples.
        rejected: ``(item, reason)`` of each unusable one (or of the first few, see below).
        max_percent: ``data.max_rejected_percent``.
        what: what the examples are, for the message.
        total_rejected: the number of unusable examples when ``rejected`` lists only some.
    """
    n_rejected = len(rejected) if total_rejected is None else total_rejected
    total = kept + n_rejected
    percent = 100.0 * n_rejected / total if total else 0.0
    if percent > max_percent:
        shown = "; ".join(f"{item}: {reason}" for item, reason in rejected[:5])
        more = f" (and {n_rejected - 5} more)" if n_rejected > 5 else ""
        raise ValueError(
            f"{n_rejected} of {total} {what} ({percent:.1f}%) are unusable, more than "
            f"data.max_rejected_percent={max_percent:g}: {shown}{more}. Fix the data or raise "
            "data.max_rejected_percent."
        )
