"""Gradient monitoring: per-layer norms before clipping, global norms before and after clipping.

The monitor wraps the optimizer's ``apply`` of one compiled model (an instance attribute, so the
optimizer's class and saved config do not change). Inside the traced train step it writes the
norms of the step into a few non-trainable variables; a callback reads them every ``every`` steps
and appends them to a CSV file and TensorBoard. Reading small variables every N steps keeps the
cost low (see ``benchmarks/gradient_monitor.py``).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from data.checks import check


@dataclass(frozen=True)
class GradientConfig:
    """The ``gradients`` config section.

    Attributes:
        every: record the norms every this many training steps.
        histogram_every: write gradient histograms to TensorBoard every this many steps (0: never).
        vanish_threshold: a layer whose median gradient norm stays below this is reported as
            vanishing.
        vanish_ratio: also reported when the first recurrent layer's median norm is this many
            times smaller than the last layer's.
        explode_threshold: a global norm (before clipping) above this is reported as exploding.
    """

    every: int = 10
    histogram_every: int = 0
    vanish_threshold: float = 1e-5
    vanish_ratio: float = 1e3
    explode_threshold: float = 1e3

    def __post_init__(self) -> None:
        check(self.every >= 1, "gradients.every", self.every, ">= 1")
        check(self.histogram_every >= 0, "gradients.histogram_every", self.histogram_every, ">= 0")
        check(self.vanish_threshold > 0, "gradients.vanish_threshold", self.vanish_threshold, "> 0")
        check(self.vanish_ratio > 1, "gradients.vanish_ratio", self.vanish_ratio, "> 1")
        check(
            self.explode_threshold > 0, "gradients.explode_threshold", self.explode_threshold, "> 0"
        )


def layer_of(variable: keras.Variable, model_name: str = "") -> str:
    """The top-level layer a variable belongs to (its path's first part).

    Variables of a subclassed model's layers have paths ``MODEL/LAYER/...``; the model's own
    name is skipped so they group by layer too.
    """
    parts = variable.path.split("/")
    if model_name and parts[0] == model_name and len(parts) > 2:
        return parts[1]
    return parts[0]


def clip_threshold(optimizer: keras.optimizers.Optimizer) -> tuple[str, float] | None:
    """The optimizer's clipping mode and value, or None when it does not clip."""
    for mode in ("clipnorm", "global_clipnorm", "clipvalue"):
        value = getattr(optimizer, mode, None)
        if value:
            return mode, float(value)
    return None


class GradientMonitor(keras.callbacks.Callback):
    """Records gradient norms of a compiled model's training steps.

    Call ``install(model)`` after ``model.compile`` and before ``fit``; pass the monitor to ``fit``
    as a callback. Rows go to ``csv_path``: ``step``, ``loss``, ``global_norm`` (before clipping),
    ``clipped_norm`` (after), ``clipped`` (1 if clipping changed the update) and one
    ``norm/LAYER`` column per trainable layer (before clipping).
    """

    def __init__(
        self,
        config: GradientConfig,
        csv_path: Path | None,
        log_dir: Path | None = None,
        print_warnings: bool = True,
    ) -> None:
        super().__init__()
        self.print_warnings = print_warnings
        self.config = config
        self.csv_path = Path(csv_path) if csv_path else None  # None: keep rows in memory only
        self.log_dir = log_dir
        self.layers: list[str] = []
        self.rows: list[dict[str, float]] = []
        self._writer = None
        self._installed_on = None
        self.diverged_step: int | None = None
        self.warned: set[str] = set()

    def install(self, model: keras.Model) -> None:
        """Wraps ``model.optimizer.apply`` so each step stores its gradient norms."""
        optimizer = model.optimizer
        variables = model.trainable_variables
        self.layers = list(dict.fromkeys(layer_of(v, model.name) for v in variables))
        groups = [self.layers.index(layer_of(v, model.name)) for v in variables]
        n = len(self.layers)
        # Written inside the train step, in replica context under a distribution strategy:
        # the first replica's values are kept (the gradients are already summed over the
        # replicas there, see models.training.reduce_before_clipping).
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self._layer_norms = tf.Variable(
            tf.zeros([n]), trainable=False, name="grad_layer_norms", aggregation=first
        )
        self._global = tf.Variable(0.0, trainable=False, name="grad_global_norm", aggregation=first)
        self._clipped_global = tf.Variable(
            0.0, trainable=False, name="grad_clipped_norm", aggregation=first
        )
        self._snapshot = None
        if self.config.histogram_every:
            self._snapshot = [
                tf.Variable(
                    tf.zeros_like(v), trainable=False, name=f"grad_snapshot_{i}", aggregation=first
                )
                for i, v in enumerate(variables)
            ]
        original = optimizer.apply
        monitor = self

        def apply(grads, trainable_variables=None):  # noqa: ANN001, ANN202 - Keras signature
            grads = list(grads)
            squares = [
                tf.reduce_sum(tf.square(tf.cast(g, tf.float32)))
                if g is not None
                else tf.constant(0.0)
                for g in grads
            ]
            per_layer = tf.math.unsorted_segment_sum(tf.stack(squares), groups, n)
            monitor._layer_norms.assign(tf.sqrt(per_layer))
            monitor._global.assign(tf.sqrt(tf.add_n(squares)))
            clipped = optimizer._clip_gradients(grads)  # what the optimizer is about to apply
            monitor._clipped_global.assign(
                tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in clipped if g is not None]))
            )
            if monitor._snapshot is not None:
                for slot, g in zip(monitor._snapshot, grads, strict=True):
                    if g is not None:
                        slot.assign(g)
            return original(grads, trainable_variables)

        optimizer.apply = apply
        model.train_function = None  # retrace with the wrapped apply
        self._installed_on = model

    # -- callback side -------------------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._installed_on is None:
            raise RuntimeError("GradientMonitor.install(model) must be called before fit")
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "gradients"))
        # A resumed run continues the log, minus the steps the restored backup does not hold.
        self.load_rows(upto=int(self.model.optimizer.iterations.numpy()))

    def load_rows(self, upto: int | None = None) -> None:
        """Reads the rows already in the CSV log, keeping steps ``<= upto`` (rewriting the file).

        Args:
            upto: the last step to keep (the restored optimizer step); None keeps all.
        """
        self.rows = []
        if self.csv_path is None or not self.csv_path.is_file():
            return
        rows = []
        with self.csv_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    rows.append({k: float(v) for k, v in row.items()})
                except (TypeError, ValueError):  # a row cut short by a kill
                    continue
        self.rows = [r for r in rows if upto is None or r["step"] <= upto]
        if not self.rows:
            self.csv_path.unlink()
        elif len(self.rows) != len(rows):  # rewritten whole, then renamed over the old log
            tmp = self.csv_path.with_suffix(".tmp")
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
            os.replace(tmp, self.csv_path)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        loss = float((logs or {}).get("loss", 0.0))
        diverged = not math.isfinite(loss) or not math.isfinite(float(self._global.numpy()))
        if diverged and self.diverged_step is None:
            self.diverged_step = step
            self.model.stop_training = True
            self._warn(
                "nan",
                f"Training stopped: the loss or gradient became NaN/Inf at step {step}. "
                + (f"Gradient log: {self.csv_path}. " if self.csv_path else "")
                + f"{ADVICE_EXPLODE[0].upper()}{ADVICE_EXPLODE[1:]}.",
            )
        elif step % self.config.every and step != 1:
            return
        norms = self._layer_norms.numpy()
        before = float(self._global.numpy())
        after = float(self._clipped_global.numpy())
        row = {
            "step": step,
            "loss": float((logs or {}).get("loss", math.nan)),
            "global_norm": before,
            "clipped_norm": after,
            "clipped": float(not math.isclose(before, after, rel_tol=1e-5)),
        }
        row.update({f"norm/{name}": float(v) for name, v in zip(self.layers, norms, strict=True)})
        if before > self.config.explode_threshold:
            self._warn(
                "explode",
                f"Exploding gradients: global norm {before:.3g} at step {step} (threshold "
                f"{self.config.explode_threshold:g}); {ADVICE_EXPLODE}.",
            )
        self.rows.append(row)
        self._append_csv(row)
        if self._writer is not None:
            with self._writer.as_default(step=step):
                tf.summary.scalar("global_norm/before_clipping", before)
                tf.summary.scalar("global_norm/after_clipping", after)
                for name, value in zip(self.layers, norms, strict=True):
                    tf.summary.scalar(f"layer_norm/{name}", float(value))
                every = self.config.histogram_every
                if self._snapshot is not None and every and step % every == 0:
                    for slot, var in zip(
                        self._snapshot, self._installed_on.trainable_variables, strict=True
                    ):
                        tf.summary.histogram(f"gradient/{var.path}", slot)

    def _warn(self, key: str, message: str) -> None:
        """Prints a warning once per kind during training."""
        if key not in self.warned:
            self.warned.add(key)
            if self.print_warnings:
                print(f"WARNING: {message}", flush=True)

    def _append_csv(self, row: dict[str, float]) -> None:
        if self.csv_path is None:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.is_file()
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()

    # -- summary -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Per-layer median/max norms, fraction of steps clipped, first non-finite step."""
        if not self.rows:
            return {"steps_recorded": 0}
        layers = {}
        for name in self.layers:
            values = np.array([r[f"norm/{name}"] for r in self.rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            layers[name] = {
                "median": float(np.median(finite)) if finite.size else math.nan,
                "max": float(finite.max()) if finite.size else math.nan,
            }
        bad = [r["step"] for r in self.rows if not math.isfinite(r["global_norm"])]
        return {
            "steps_recorded": len(self.rows),
            "every": self.config.every,
            "layers": layers,
            "fraction_clipped": float(np.mean([r["clipped"] for r in self.rows])),
            "global_norm_median": float(np.nanmedian([r["global_norm"] for r in self.rows])),
            "global_norm_max": float(np.nanmax([r["global_norm"] for r in self.rows])),
            "first_nonfinite_step": int(bad[0]) if bad else None,
        }


ADVICE_VANISH = (
    "try an LSTM or GRU instead of a simple RNN, mean pooling over time, shorter sequences, "
    "or tanh instead of sigmoid activations"
)
ADVICE_VANISH_OTHER = (
    "it is not recurrent, so look at what feeds it: a saturated softmax or tanh (e.g. attention "
    "scores too large: scale them), or a layer the loss barely depends on"
)
ADVICE_EXPLODE = (
    "try a lower learning rate, clipping (optimizer.clipnorm or global_clipnorm), "
    "tanh instead of relu, or an LSTM/GRU"
)


def diagnose(
    summary: dict[str, Any],
    rows: list[dict[str, float]],
    recurrent_layers: list[str],
    config: GradientConfig,
) -> list[str]:
    """Warnings about vanishing or exploding gradients, each with what to try.

    Args:
        summary: ``GradientMonitor.summary()``.
        rows: the recorded rows (for trends).
        recurrent_layers: names of the recurrent layers, input side first.
        config: thresholds.

    Returns:
        Human-readable warnings; empty when the gradients look healthy.
    """
    warnings: list[str] = []
    if not rows:
        return warnings
    if summary.get("first_nonfinite_step") is not None:
        warnings.append(
            f"Exploding gradients: the gradient norm became NaN/Inf at step "
            f"{summary['first_nonfinite_step']}; {ADVICE_EXPLODE}."
        )
    if summary["global_norm_max"] > config.explode_threshold:
        warnings.append(
            f"Exploding gradients: the global gradient norm reached "
            f"{summary['global_norm_max']:.3g} (threshold {config.explode_threshold:g}); "
            f"{ADVICE_EXPLODE}."
        )
    norms = np.array([r["global_norm"] for r in rows], dtype=np.float64)
    if norms.size >= 8 and np.all(np.isfinite(norms)):
        quarter = norms.size // 4
        early, late = np.median(norms[:quarter]), np.median(norms[-quarter:])
        rising = np.mean(np.diff(np.log(norms + 1e-30)) > 0)
        if late > 10 * early and rising > 0.6:
            warnings.append(
                f"Exploding gradients: the global norm grew steadily from {early:.3g} to "
                f"{late:.3g}; {ADVICE_EXPLODE}."
            )
    layers = summary.get("layers", {})
    for name, stats in layers.items():
        if stats["median"] < config.vanish_threshold:
            advice = ADVICE_VANISH if name in recurrent_layers else ADVICE_VANISH_OTHER
            warnings.append(
                f"Vanishing gradients: layer {name!r} has a median gradient norm of "
                f"{stats['median']:.2e} (threshold {config.vanish_threshold:g}); {advice}."
            )
    present = [n for n in recurrent_layers if n in layers]
    if len(present) >= 1:
        first = layers[present[0]]["median"]
        last_name = list(layers)[-1]
        last = layers[last_name]["median"]
        if first > 0 and last / first > config.vanish_ratio:
            warnings.append(
                f"Vanishing gradients: the first recurrent layer {present[0]!r} gets "
                f"{last / first:.2g}x less gradient than the last layer {last_name!r}; "
                f"{ADVICE_VANISH}."
            )
    return warnings
