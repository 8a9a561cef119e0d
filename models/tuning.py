"""Hyperparameter search spaces declared in config, and the keras-tuner oracles that sample them.

A space maps config keys (``model.units``, ``optimizer.learning_rate``, ``features.n_mfcc``...) to
a ``ParamSpec``. ``declare`` turns it into keras-tuner ``HyperParameters``; a trial's values become
``--set``-style overrides of the same config that ``run`` uses, so ``run`` and ``tune`` build every
model through one path (the pipeline's ``build_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data.checks import ConfigError, check
from data.registry import Registry

TUNERS: Registry = Registry("tuner")
PARAM_TYPES = ("int", "float", "choice", "bool")


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter of a search space.

    Attributes:
        type: ``int``, ``float``, ``choice`` or ``bool``.
        min: lower bound (int, float).
        max: upper bound (int, float).
        step: grid step (int, float; 0 = continuous float / step 1 int).
        log: sample on a log scale (int, float; needs ``min > 0``).
        values: the choices (choice); numbers, strings or booleans.
    """

    type: str = "float"
    min: float | None = None
    max: float | None = None
    step: float = 0.0
    log: bool = False
    values: tuple[Any, ...] = ()

    def validate(self, name: str) -> None:
        """Raises ``ConfigError`` naming ``tune.space.NAME`` if the spec is malformed."""
        key = f"tune.space.{name}"
        check(self.type in PARAM_TYPES, f"{key}.type", self.type, f"one of {PARAM_TYPES}")
        if self.type == "choice":
            check(len(self.values) >= 1, f"{key}.values", list(self.values), "a non-empty list")
            return
        if self.type == "bool":
            return
        check(
            self.min is not None and self.max is not None,
            key,
            {"min": self.min, "max": self.max},
            "both min and max for a numeric hyperparameter",
        )
        check(self.min < self.max, f"{key}.max", self.max, f"> min ({self.min})")
        check(self.step >= 0, f"{key}.step", self.step, ">= 0")
        check(not self.log or self.min > 0, f"{key}.min", self.min, "> 0 with log: true")
        # keras-tuner reads a log-sampled step as a ratio: step 32 from 32 to 128 is {32} alone
        check(
            not (self.log and self.step),
            f"{key}.step",
            self.step,
            "0 with log: true (a log-sampled range has no grid step; drop one of them)",
        )
        if self.type == "int":
            for bound in ("min", "max"):
                value = getattr(self, bound)
                check(float(value).is_integer(), f"{key}.{bound}", value, "an integer")


@dataclass(frozen=True)
class TuneConfig:
    """The ``tune`` config section.

    Attributes:
        tuner: ``random``, ``bayesian`` or ``hyperband``.
        objective: a metric logged by training (``val_accuracy``, ``val_loss``...).
        direction: ``max``, ``min`` or ``auto`` (min for names ending in ``loss``).
        max_trials: most trials (random, bayesian); hyperband sizes its brackets from ``epochs``.
        max_minutes: wall-time budget: no new trial starts after it (0 = none).
        epochs: epochs per trial (hyperband: the most epochs a trial gets).
        early_stopping: per-trial patience in epochs on the objective (0 = off).
        hyperband_factor: hyperband's reduction factor.
        retrain: after the search, run the best configuration through the whole pipeline
            (train, evaluate, export) with its own ``train.epochs``.
        space: config key -> ``ParamSpec``.
    """

    tuner: str = "random"
    objective: str = "val_accuracy"
    direction: str = "auto"
    max_trials: int = 6
    max_minutes: float = 0.0
    epochs: int = 3
    early_stopping: int = 2
    hyperband_factor: int = 3
    retrain: bool = True
    space: dict[str, ParamSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.tuner in TUNERS, "tune.tuner", self.tuner, f"one of {TUNERS.names()}")
        check(
            self.direction in ("max", "min", "auto"),
            "tune.direction",
            self.direction,
            "max, min or auto",
        )
        check(self.max_trials >= 1, "tune.max_trials", self.max_trials, ">= 1 (a budget of zero)")
        check(self.max_minutes >= 0, "tune.max_minutes", self.max_minutes, ">= 0 (0 = no limit)")
        check(self.epochs >= 1, "tune.epochs", self.epochs, ">= 1")
        check(self.early_stopping >= 0, "tune.early_stopping", self.early_stopping, ">= 0")
        check(self.hyperband_factor >= 2, "tune.hyperband_factor", self.hyperband_factor, ">= 2")
        for name, spec in self.space.items():
            check(
                "." in name,
                f"tune.space.{name}",
                name,
                "a dotted config key such as model.units",
            )
            spec.validate(name)

    @property
    def goal(self) -> str:
        if self.direction != "auto":
            return self.direction
        return "min" if self.objective.endswith("loss") else "max"


def declare(hp, space: dict[str, ParamSpec]) -> None:  # noqa: ANN001 - keras_tuner.HyperParameters
    """Declares every hyperparameter of ``space`` on ``hp``."""
    for name, spec in space.items():
        if spec.type == "choice":
            hp.Choice(name, list(spec.values))
        elif spec.type == "bool":
            hp.Boolean(name)
        elif spec.type == "int":
            hp.Int(
                name,
                int(spec.min),
                int(spec.max),
                step=int(spec.step) or None,
                sampling="log" if spec.log else "linear",
            )
        else:
            hp.Float(
                name,
                float(spec.min),
                float(spec.max),
                step=spec.step or None,
                sampling="log" if spec.log else "linear",
            )


def overrides(values: dict[str, Any], space: dict[str, ParamSpec]) -> dict[str, Any]:
    """A nested config mapping from a trial's values (tuner-internal ``tuner/...`` keys dropped)."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        if name not in space:
            continue
        if isinstance(value, float) and space[name].type == "int":
            value = int(value)
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _objective(config: TuneConfig):  # noqa: ANN202
    import keras_tuner

    return keras_tuner.Objective(config.objective, direction=config.goal)


def _hyperparameters(config: TuneConfig):  # noqa: ANN202
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    declare(hp, config.space)
    return hp


def _common(config: TuneConfig, seed: int) -> dict[str, Any]:
    return {
        "objective": _objective(config),
        "hyperparameters": _hyperparameters(config),
        "allow_new_entries": False,
        "tune_new_entries": False,
        # keras-tuner takes a seed of 0 as "none" and draws a random one (`seed or randint`), so
        # runtime.seed 0, the default, made every search different: shift by one
        "seed": seed + 1,
        # failed trials are recorded and the search goes on; the caller reports them
        "max_consecutive_failed_trials": max(config.max_trials, 100),
    }


@TUNERS.register("random")
def _random(config: TuneConfig, seed: int):  # noqa: ANN202
    import keras_tuner

    return keras_tuner.oracles.RandomSearchOracle(
        max_trials=config.max_trials, **_common(config, seed)
    )


@TUNERS.register("bayesian")
def _bayesian(config: TuneConfig, seed: int):  # noqa: ANN202
    import keras_tuner

    return keras_tuner.oracles.BayesianOptimizationOracle(
        max_trials=config.max_trials,
        num_initial_points=max(2, min(config.max_trials // 3, 5)),
        **_common(config, seed),
    )


@TUNERS.register("hyperband")
def _hyperband(config: TuneConfig, seed: int):  # noqa: ANN202
    import keras_tuner

    common = _common(config, seed)
    return keras_tuner.oracles.HyperbandOracle(
        max_epochs=config.epochs,
        factor=config.hyperband_factor,
        hyperband_iterations=1,
        **common,
    )


def build_oracle(config: TuneConfig, seed: int):  # noqa: ANN201
    """The keras-tuner oracle named by ``tune.tuner``."""
    if not config.space:
        raise ConfigError(
            "tune.space is empty: declare at least one hyperparameter, e.g. "
            "--set 'tune.space={model.units: {type: int, min: 32, max: 128, step: 32}}'"
        )
    return TUNERS.get(config.tuner)(config, seed)
