import keras
import pytest

from data.checks import ConfigError
from models.training import (
    OptimizerConfig,
    TrainConfig,
    best_logged_value,
    build_callbacks,
    build_optimizer,
)


@pytest.mark.parametrize("clip", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_optimizer_gets_the_clipping(clip):
    kwargs = {"clipnorm": None, clip: 0.5}
    optimizer = build_optimizer(OptimizerConfig(**kwargs), steps_per_epoch=10, epochs=2)
    assert getattr(optimizer, clip) == 0.5
    for other in {"clipnorm", "clipvalue", "global_clipnorm"} - {clip}:
        assert getattr(optimizer, other) is None


def test_clipnorm_is_the_default():
    assert build_optimizer(OptimizerConfig(), 10, 2).clipnorm == 1.0


def test_combined_clipping_rejected():
    with pytest.raises(ConfigError, match="at most one of clipnorm"):
        OptimizerConfig(clipnorm=1.0, global_clipnorm=1.0)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential"])
def test_schedules(schedule):
    optimizer = build_optimizer(OptimizerConfig(schedule=schedule, warmup_epochs=1), 10, 3)
    lr = optimizer.learning_rate
    assert float(lr.numpy() if hasattr(lr, "numpy") else lr) > 0


def test_best_logged_value(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("epoch,val_accuracy,val_loss\n0,0.5,1.0\n1,0.7,0.8\n2,0.6,nan\n")
    assert best_logged_value(path, "val_accuracy") == 0.7
    assert best_logged_value(path, "val_loss") == 0.8
    assert best_logged_value(tmp_path / "none.csv", "val_loss") is None


def test_callbacks_include_resume_and_logs(tmp_path):
    callbacks, best = build_callbacks(
        TrainConfig(), tmp_path / "ck", tmp_path / "logs", tmp_path / "h.csv"
    )
    kinds = {type(c) for c in callbacks}
    assert {
        keras.callbacks.BackupAndRestore,
        keras.callbacks.ModelCheckpoint,
        keras.callbacks.CSVLogger,
        keras.callbacks.TensorBoard,
        keras.callbacks.EarlyStopping,
        keras.callbacks.TerminateOnNaN,
    } <= kinds
    assert best.name == "best.weights.h5"


def test_restore_best_false_keeps_last_epoch(tmp_path):
    _, kept = build_callbacks(
        TrainConfig(restore_best=False), tmp_path / "ck", tmp_path / "logs", tmp_path / "h.csv"
    )
    assert kept.name == "last.weights.h5"
