"""A tiny, fast pipeline for tuning tests: 'training' writes a history whose val_loss depends on
the hyperparameters, so searches run in seconds without TensorFlow training."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from data.checks import check
from models.tuning import TuneConfig
from pipelines.runner import Pipeline, Stage, StageContext


@dataclass(frozen=True)
class ModelSection:
    x: float = 0.5
    kind: str = "a"

    def __post_init__(self) -> None:
        check(self.kind in ("a", "b", "bad"), "model.kind", self.kind, "a, b or bad")


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 3
    early_stopping: int = 0
    monitor: str = "val_loss"


@dataclass(frozen=True)
class ExportSection:
    enabled: bool = True


@dataclass(frozen=True)
class FakeConfig:
    pipeline: str = "fake"
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    export: ExportSection = field(default_factory=ExportSection)
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(objective="val_loss"))


def _train(ctx: StageContext) -> dict:
    config: FakeConfig = ctx.config
    if config.model.kind == "bad":
        raise ValueError("kind 'bad' always fails")
    log = Path(os.environ.get("FAKE_TRAIN_LOG", "/dev/null"))
    with log.open("a") as handle:
        handle.write(f"{ctx.run_dir.name}\n")
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    pause = Path(os.environ.get("FAKE_PAUSE_FILE", "/nonexistent"))
    if pause.exists() and ctx.run_dir.name == pause.read_text().strip():
        (ctx.run_dir / "started").write_text("1")
        time.sleep(60)  # the test kills the process here
    with (ctx.out_dir / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "val_loss"])
        for epoch in range(config.train.epochs):
            bonus = 0.0 if config.model.kind == "a" else 0.05
            writer.writerow([epoch, (config.model.x - 0.3) ** 2 + bonus + 1.0 / (epoch + 1)])
    return {"epochs": config.train.epochs}


def _export(ctx: StageContext) -> dict:
    if ctx.config.export.enabled:
        (ctx.output("export") / "model.txt").parent.mkdir(parents=True, exist_ok=True)
        (ctx.output("export") / "model.txt").write_text("a model")
    return {"metrics": {"exported": ctx.config.export.enabled}}


FAKE = Pipeline(
    name="fake",
    config_class=FakeConfig,
    stages=(
        Stage("train", _train, version=1, sections=("model", "train")),
        Stage(
            "export",
            _export,
            version=1,
            reads=("train",),
            sections=("export",),
            outputs=("export",),
        ),
    ),
)
