"""Optimizer (with gradient clipping), learning-rate schedules and training callbacks."""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf

from data.checks import check
from data.registry import Registry
from models.gradients import GradientConfig

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("learning-rate schedule")

OPTIMIZERS.register("adam")(keras.optimizers.Adam)
OPTIMIZERS.register("adamw")(keras.optimizers.AdamW)
OPTIMIZERS.register("rmsprop")(keras.optimizers.RMSprop)
OPTIMIZERS.register("sgd")(keras.optimizers.SGD)


@SCHEDULES.register("constant")
def _constant(learning_rate: float, total_steps: int, warmup_steps: int):  # noqa: ANN202
    return learning_rate


@SCHEDULES.register("cosine")
def _cosine(learning_rate: float, total_steps: int, warmup_steps: int):  # noqa: ANN202
    warmup = min(warmup_steps, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate if not warmup else learning_rate * 0.1,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.05,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


@SCHEDULES.register("exponential")
def _exponential(learning_rate: float, total_steps: int, warmup_steps: int):  # noqa: ANN202
    # Decays to a tenth of the initial rate over the whole run.
    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=max(total_steps, 1), decay_rate=0.1
    )


@dataclass(frozen=True)
class OptimizerConfig:
    """The ``optimizer`` config section.

    Gradient clipping (Keras accepts at most one of the three; setting two is an error):
        clipnorm: rescales EACH variable's gradient so its own L2 norm is at most this value.
        global_clipnorm: rescales ALL gradients together so their joint L2 norm is at most this
            value; the update's direction is kept.
        clipvalue: clips each gradient ELEMENT to [-clipvalue, clipvalue]; the direction changes.

    Attributes:
        name: one of ``models.training.OPTIMIZERS`` (adam, adamw, rmsprop, sgd).
        learning_rate: peak learning rate.
        schedule: one of ``models.training.SCHEDULES`` (constant, cosine, exponential).
        warmup_epochs: linear warm-up length for the cosine schedule, in epochs.
        weight_decay: decoupled weight decay (adamw) or L2-style decay of the optimizer.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float | None = None
    clipnorm: float | None = 1.0
    clipvalue: float | None = None
    global_clipnorm: float | None = None

    def __post_init__(self) -> None:
        check(self.name in OPTIMIZERS, "optimizer.name", self.name, f"one of {OPTIMIZERS.names()}")
        check(
            self.schedule in SCHEDULES,
            "optimizer.schedule",
            self.schedule,
            f"one of {SCHEDULES.names()}",
        )
        check(self.learning_rate > 0, "optimizer.learning_rate", self.learning_rate, "> 0")
        check(self.warmup_epochs >= 0, "optimizer.warmup_epochs", self.warmup_epochs, ">= 0")
        clips = {
            k: getattr(self, k)
            for k in ("clipnorm", "clipvalue", "global_clipnorm")
            if getattr(self, k) is not None
        }
        for key, value in clips.items():
            check(value > 0, f"optimizer.{key}", value, "> 0, or null to disable")
        check(
            len(clips) <= 1,
            "optimizer clipping",
            clips,
            "at most one of clipnorm, clipvalue, global_clipnorm (Keras applies only one; set the "
            "others to null)",
        )


def build_optimizer(
    config: OptimizerConfig, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    """Builds the Keras optimizer with its schedule and clipping from the config."""
    total = max(steps_per_epoch * epochs, 1)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    lr = SCHEDULES.get(config.schedule)(config.learning_rate, total, warmup)
    kwargs = {
        "learning_rate": lr,
        "clipnorm": config.clipnorm,
        "clipvalue": config.clipvalue,
        "global_clipnorm": config.global_clipnorm,
    }
    if config.weight_decay is not None:
        kwargs["weight_decay"] = config.weight_decay
    return OPTIMIZERS.get(config.name)(**kwargs)


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` config section.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: examples per step.
        steps_per_epoch: cap on steps per epoch (0 = one pass over the training data).
        early_stopping: patience in epochs on ``monitor`` (0 disables early stopping).
        monitor: metric watched by early stopping and the best checkpoint.
        restore_best: keep the weights of the best epoch on ``monitor`` (true), or the last
            epoch's (false: for a validation split that cannot rank epochs well, e.g. one drawn
            from the training speakers when the test is on an unheard speaker).
        bucket_by_length: batch clips of similar length together (less padding, faster).
        shuffle: reshuffle the training examples every epoch (false: one fixed order, e.g. to
            compare a distributed run with a single process step by step).
        precision: ``float32``, or ``mixed_bfloat16`` (Keras' mixed precision policy: layers
            compute in bfloat16, weights stay float32; the saved model and the export are
            float32 either way).
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        average_weights: momentum of an exponential moving average of the weights, updated
            every step (Polyak averaging, the continuous form of checkpoint averaging; 0 = off,
            0.999 averages over roughly the last thousand steps). Validation, the checkpoints
            and the saved model use the averaged weights; training steps the raw ones. A run
            resumed from a backup continues from the averaged weights of its last epoch.
    """

    epochs: int = 30
    batch_size: int = 64
    steps_per_epoch: int = 0
    early_stopping: int = 8
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    restore_best: bool = True
    bucket_by_length: bool = True
    shuffle: bool = True
    precision: Literal["float32", "mixed_bfloat16"] = "float32"
    verbose: int = 2
    average_weights: float = 0.0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        check(
            0 <= self.average_weights < 1,
            "train.average_weights",
            self.average_weights,
            "in [0, 1) (0 = off)",
        )
        check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        check(self.steps_per_epoch >= 0, "train.steps_per_epoch", self.steps_per_epoch, ">= 0")
        check(self.early_stopping >= 0, "train.early_stopping", self.early_stopping, ">= 0")
        check(self.verbose in (0, 1, 2), "train.verbose", self.verbose, "0, 1 or 2")


class TrainingDivergedError(RuntimeError):
    """Raised when the loss became NaN/Inf and no finite checkpoint from before exists."""


@dataclass
class FitResult:
    """What ``fit_resumable`` did."""

    history: list[dict[str, str]]
    kept_weights: Path
    gradient_summary: dict
    gradient_warnings: list[str]
    gradient_rows: list[dict[str, float]]
    gradient_layers: list[str]
    diverged_step: int | None


def fit_resumable(
    model: keras.Model,
    train_ds,  # noqa: ANN001 - a tf.data.Dataset
    val_ds,  # noqa: ANN001
    train: TrainConfig,
    optimizer: OptimizerConfig,
    gradients: GradientConfig,
    steps_per_epoch: int,
    checkpoint_dir: Path,
    log_dir: Path,
    recurrent_layers: list[str],
    loss: Any = "sparse_categorical_crossentropy",
    metrics: list | None = None,
) -> FitResult:
    """Compiles and fits ``model`` the project's way, shared by every pipeline.

    Clipping from ``optimizer``; the gradient monitor; early stopping; best and last checkpoints;
    ``BackupAndRestore`` so a killed run resumes at its last finished epoch; CSV and TensorBoard
    logs. A NaN/Inf loss stops training at once; checkpoints written after it are deleted, and
    the best finite checkpoint from before is kept (or ``TrainingDivergedError`` is raised).

    Returns:
        The history rows, the weights file that was loaded into ``model``, and the gradients'
        summary and warnings.
    """
    from models.gradients import GradientMonitor, diagnose

    model.compile(
        optimizer=build_optimizer(optimizer, steps_per_epoch, train.epochs),
        loss=loss,
        metrics=metrics if metrics is not None else ["accuracy"],
    )
    history_csv = checkpoint_dir / "history.csv"
    done_file = checkpoint_dir / FIT_DONE
    monitor = GradientMonitor(gradients, checkpoint_dir / "gradients.csv", log_dir)
    monitor.install(model)
    reduce_before_clipping(model.optimizer)  # outermost: the monitor sees the global gradient
    done = read_fit_done(done_file)
    if done is not None:
        # The fit finished before a later step of the stage failed: reuse it, do not retrain.
        kept = checkpoint_dir / done["kept"]
        monitor.load_rows()
        monitor.diverged_step = done["diverged_step"]
    else:
        resume_logs(checkpoint_dir, history_csv)
        callbacks, kept = build_callbacks(train, checkpoint_dir, log_dir, history_csv)
        model.fit(
            train_ds.repeat() if train.steps_per_epoch else train_ds,
            validation_data=val_ds,
            epochs=train.epochs,
            steps_per_epoch=train.steps_per_epoch or None,
            callbacks=[*callbacks, monitor],
            verbose=train.verbose,
        )
    gradient_summary = monitor.summary()
    warnings = diagnose(gradient_summary, monitor.rows, recurrent_layers, gradients)
    if monitor.diverged_step is not None:
        # Whatever was saved at the end of the diverged epoch holds NaN weights: drop it.
        shutil.rmtree(checkpoint_dir / "backup", ignore_errors=True)
        for path in (checkpoint_dir / "last.weights.h5", checkpoint_dir / "best.weights.h5"):
            if path.is_file() and not _finite_weights_file(model, path):
                path.unlink()
        kept = checkpoint_dir / "best.weights.h5"
        if not kept.is_file():
            raise TrainingDivergedError(
                f"Training diverged: the loss became NaN/Inf at step {monitor.diverged_step} "
                f"and no finite checkpoint exists. Gradient log: {checkpoint_dir / 'gradients.csv'}"
                f". {warnings[0] if warnings else ''}"
            )
    if not kept.is_file():
        logged = [
            v
            for v in logged_values(history_csv, train.monitor)
            if v is not None and math.isfinite(v)
        ]
        raise RuntimeError(
            f"Training produced no checkpoint: expected {kept.name} (train.restore_best: "
            f"{train.restore_best}, monitor {train.monitor}); {len(logged)} epochs logged a "
            f"finite {train.monitor}. See {history_csv}"
        )
    model.load_weights(kept)
    if done is None:
        from data.files import write_json

        # Names relative to the checkpoint folder: a moved or copied run keeps its own weights.
        write_json(done_file, {"kept": kept.name, "diverged_step": monitor.diverged_step})
        # Only now is the backup redundant (it is kept through fit's end, see build_callbacks).
        shutil.rmtree(checkpoint_dir / "backup", ignore_errors=True)
    with history_csv.open(newline="") as handle:
        history = list(csv.DictReader(handle))
    return FitResult(
        history=history,
        kept_weights=kept,
        gradient_summary=gradient_summary,
        gradient_warnings=warnings,
        gradient_rows=monitor.rows,
        gradient_layers=monitor.layers,
        diverged_step=monitor.diverged_step,
    )


FIT_DONE = "fit_done.json"


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``name`` inside the block, and restored after it.

    Keras keeps the policy process-wide; scoping it here keeps it from leaking into the
    evaluate and export stages, which run float32.
    """
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def reduce_before_clipping(optimizer: keras.optimizers.Optimizer) -> None:
    """Under a strategy with several replicas, clips the all-reduced gradient, as one process does.

    Keras 3 clips each replica's own gradient and sums the clipped gradients afterwards, so
    ``clipnorm`` would bound each replica's part rather than the step. This sums the gradients
    over the replicas first (the same one all-reduce, moved earlier) and turns the optimizer's
    own sum off, so every replica clips and applies the same global gradient. Without a strategy
    (or with one replica) it does nothing.
    """
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync <= 1:
        return
    original = optimizer.apply

    def apply(grads, trainable_variables=None):  # noqa: ANN001, ANN202 - Keras signature
        grads = list(grads)
        context = tf.distribute.get_replica_context()
        if context is not None:
            present = [i for i, g in enumerate(grads) if g is not None]
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
            for i, g in zip(present, summed, strict=True):
                grads[i] = g
        return original(grads, trainable_variables)

    optimizer.apply = apply
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars


def read_fit_done(path: Path) -> dict[str, Any] | None:
    """The record of a finished fit (its kept weights still on disk and readable), or None."""
    import json

    try:
        done = json.loads(path.read_text(encoding="utf-8"))
        kept = path.parent / Path(done["kept"]).name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return done if _readable_weights(kept) else None


def _backup_epochs(backup: Path, suffix: str) -> int | None:
    """Epochs held by a ``BackupAndRestore`` backup, or None if it is missing or damaged.

    ``suffix`` ".bkp" reads the previous backup that ``double_checkpoint`` keeps.
    """
    import json

    try:
        meta = json.loads((backup / f"training_metadata.json{suffix}").read_text())
        epochs = int(meta["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return epochs if _readable_weights(backup / f"latest.weights.h5{suffix}") else None


def _readable_weights(path: Path) -> bool:
    """Whether ``path`` is a whole HDF5 weights file (a kill mid-save leaves a broken one)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            handle.visit(lambda name: None)
        return True
    except (OSError, ValueError, KeyError, RuntimeError):
        return False


def resume_logs(checkpoint_dir: Path, history_csv: Path) -> None:
    """Makes the logs agree with where ``BackupAndRestore`` will resume.

    Keeps the history rows of the epochs the backup holds (a killed run may have logged an epoch
    whose backup was never written) and drops every log when there is no backup, so a resumed or
    restarted fit never appends to stale rows. A backup damaged by a kill mid-save is replaced by
    the previous one (``double_checkpoint``), or dropped; damaged checkpoints are deleted. The
    gradient log is trimmed by the monitor itself, once the backup has restored the optimizer's
    step.
    """
    backup = checkpoint_dir / "backup"
    epochs = _backup_epochs(backup, "")
    if epochs is None:  # killed while the backup was written: fall back to the previous one
        epochs = _backup_epochs(backup, ".bkp")
        if epochs is not None:
            for name in ("latest.weights.h5", "training_metadata.json"):
                shutil.copyfile(backup / f"{name}.bkp", backup / name)
    epochs = epochs or 0
    for name in ("best.weights.h5", "last.weights.h5"):
        if (checkpoint_dir / name).exists() and not _readable_weights(checkpoint_dir / name):
            (checkpoint_dir / name).unlink()
    if not epochs:
        shutil.rmtree(backup, ignore_errors=True)
        for name in (history_csv.name, "gradients.csv", "best.weights.h5", "last.weights.h5"):
            (checkpoint_dir / name).unlink(missing_ok=True)
        return
    if history_csv.is_file():
        with history_csv.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        fields = list(rows[0]) if rows else []
        kept = [r for r in rows if int(r["epoch"]) < epochs]
        tmp = history_csv.with_suffix(".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(history_csv)


def _finite_weights_file(model: keras.Model, path: Path) -> bool:
    model.load_weights(path)
    import numpy as np

    return all(np.all(np.isfinite(w)) for w in model.get_weights())


def best_logged_value(csv_path: Path, monitor: str) -> float | None:
    """Best value of ``monitor`` in a CSVLogger file, so a resumed run keeps its best checkpoint."""
    if not csv_path.is_file():
        return None
    with csv_path.open(newline="") as handle:
        values = [float(row[monitor]) for row in csv.DictReader(handle) if row.get(monitor)]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return min(values) if monitor.endswith("loss") else max(values)


def logged_values(csv_path: Path, monitor: str) -> list[float | None]:
    """``monitor`` per logged epoch of a CSVLogger file, in order (None: not logged; NaN kept)."""
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as handle:
        return [float(v) if v else None for v in (r.get(monitor) for r in csv.DictReader(handle))]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that goes on counting across a resume.

    Keras starts its patience afresh at every ``fit``; a run killed 7 epochs after its best and
    resumed would train up to ``patience`` more, where the uninterrupted run stops after one. So
    the epochs already logged (``history_csv``, trimmed to the restored backup by the time
    training begins) are replayed into the count and the best value first.
    """

    def __init__(self, history_csv: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history_csv = Path(history_csv)

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()
        for epoch, value in enumerate(logged_values(self.history_csv, self.monitor)):
            if value is None or epoch < self.start_from_epoch:
                continue  # as Keras: an epoch without the value is not counted
            self.wait += 1  # a NaN counts as an epoch without improvement, as in Keras
            if self._is_improvement(value, self.best):
                self.best, self.best_epoch = value, epoch
                if self.baseline is None or self._is_improvement(value, self.baseline):
                    self.wait = 0


class WeightAverage(keras.callbacks.Callback):
    """Exponential moving average of the trainable weights, swapped in wherever they are judged.

    The average is updated after every training step with momentum
    ``min(momentum, (1 + t) / (10 + t))`` at step t (the warm-up of TensorFlow's
    ``ExponentialMovingAverage``, so early epochs are not dominated by the initial weights). The
    averaged weights are swapped into the model for validation and at the end of every epoch
    (place this callback before the checkpoints so they save the average), and swapped out
    again when the next epoch trains.
    """

    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self._shadow: list[tf.Variable] = []
        self._swapped = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        weights = self.model.trainable_weights
        self._shadow = [tf.Variable(w.value, trainable=False) for w in weights]
        self._step = tf.Variable(0.0, trainable=False)
        self._swapped = False

        @tf.function
        def update() -> None:
            self._step.assign_add(1.0)
            m = tf.minimum(self.momentum, (1.0 + self._step) / (10.0 + self._step))
            for shadow, w in zip(self._shadow, weights, strict=True):
                shadow.assign(m * shadow + (1.0 - m) * w.value)

        self._update = update

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update()

    def _swap(self, averaged: bool) -> None:
        if self._swapped == averaged:
            return
        for shadow, w in zip(self._shadow, self.model.trainable_weights, strict=True):
            raw = tf.identity(w.value)
            w.assign(shadow)
            shadow.assign(raw)
        self._swapped = averaged

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._swap(True)

    def on_test_end(self, logs: dict | None = None) -> None:
        self._swap(False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._swap(True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._swap(False)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._swap(True)


def build_callbacks(
    config: TrainConfig, checkpoint_dir: Path, log_dir: Path, history_csv: Path
) -> tuple[list[keras.callbacks.Callback], Path]:
    """Callbacks for resumable, logged training.

    Returns:
        The callbacks and the weights file to keep: the best epoch's, or with
        ``restore_best: false`` the last epoch's. ``BackupAndRestore`` lets a killed
        run resume at the epoch where it stopped; the best checkpoint's threshold is restored
        from the CSV log so a resume never overwrites a better earlier epoch.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    best = checkpoint_dir / "best.weights.h5"
    last = checkpoint_dir / "last.weights.h5"
    mode = "min" if config.monitor.endswith("loss") else "max"
    # Order matters at each epoch's end: the log row and checkpoints are written before the
    # backup, so a kill in between repeats that epoch (its row is trimmed) instead of losing it.
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(best),
            monitor=config.monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_logged_value(history_csv, config.monitor)
            if best.exists()
            else None,
        ),
        keras.callbacks.ModelCheckpoint(str(last), save_weights_only=True),
        # double_checkpoint: a kill while saving leaves the previous backup usable;
        # delete_checkpoint=False: fit_resumable deletes it once the fit is recorded as done.
        keras.callbacks.BackupAndRestore(
            str(checkpoint_dir / "backup"), double_checkpoint=True, delete_checkpoint=False
        ),
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0),
    ]
    if config.average_weights:
        callbacks.insert(0, WeightAverage(config.average_weights))  # before the checkpoints
    if config.early_stopping:
        callbacks.append(
            ResumableEarlyStopping(
                history_csv, monitor=config.monitor, mode=mode, patience=config.early_stopping
            )
        )
    return callbacks, best if config.restore_best else last
