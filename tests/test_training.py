import keras
import pytest

from data.checks import ConfigError
from models.training import (
    OptimizerConfig,
    ResumableEarlyStopping,
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
        ResumableEarlyStopping,  # keras.callbacks.EarlyStopping, counting across a resume
        keras.callbacks.TerminateOnNaN,
    } <= kinds
    assert best.name == "best.weights.h5"


def test_restore_best_false_keeps_last_epoch(tmp_path):
    _, kept = build_callbacks(
        TrainConfig(restore_best=False), tmp_path / "ck", tmp_path / "logs", tmp_path / "h.csv"
    )
    assert kept.name == "last.weights.h5"


def _tiny(activation="tanh", cell="simple_rnn", init=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((20, 2))
    layer_kwargs = {"recurrent_initializer": init} if init else {}
    x = keras.layers.SimpleRNN(16, activation=activation, name="rnn", **layer_kwargs)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def _data(n=64, nan_from=None):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 20, 2)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    if nan_from is not None:
        x[nan_from:] = np.nan
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8), tf.data.Dataset.from_tensor_slices(
        (x[:16], y[:16])
    ).batch(8)


def test_planted_explosion_is_diagnosed(tmp_path):
    from models.gradients import GradientConfig
    from models.training import fit_resumable

    train_ds, val_ds = _data()
    # relu and recurrent weights of gain 2: the gradient grows with every one of the 20 steps
    # back (about 5e4 at the first step). A tiny learning rate keeps the weights, and so the
    # explosion, as they were: at 1e-3 the loss became NaN within a few steps on some runs.
    model = _tiny(activation="relu", init=keras.initializers.Orthogonal(gain=2.0))
    result = fit_resumable(
        model,
        train_ds,
        val_ds,
        TrainConfig(epochs=2, verbose=0, early_stopping=0),
        OptimizerConfig(name="sgd", learning_rate=1e-7, clipnorm=None),
        GradientConfig(every=1, explode_threshold=20),
        8,
        tmp_path / "ck",
        tmp_path / "logs",
        ["rnn"],
    )
    assert any("Exploding gradients" in w and "clipnorm" in w for w in result.gradient_warnings)
    assert (tmp_path / "ck" / "gradients.csv").is_file()


def test_planted_nan_stops_cleanly_and_keeps_finite_best(tmp_path):
    import numpy as np

    from models.gradients import GradientConfig
    from models.training import TrainingDivergedError, fit_resumable

    # NaN from the very first batch: no finite checkpoint can exist -> a clear error.
    train_ds, val_ds = _data(nan_from=0)
    with pytest.raises(TrainingDivergedError, match=r"NaN/Inf at step 1 .*gradients.csv"):
        fit_resumable(
            _tiny(),
            train_ds,
            val_ds,
            TrainConfig(epochs=3, verbose=0),
            OptimizerConfig(),
            GradientConfig(every=5),
            8,
            tmp_path / "a",
            tmp_path / "la",
            ["rnn"],
        )
    assert not (tmp_path / "a" / "backup").exists()

    # A good first epoch, then the poisoned data of epoch 2: stop at once, keep epoch 1's weights.
    _, val_ds = _data()
    import tensorflow as tf

    flag = tf.Variable(0)

    class Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            flag.assign(1)

    x = np.random.default_rng(0).normal(size=(64, 20, 2)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(8)
        .map(lambda a, b: (tf.where(flag > 0, a * np.nan, a), b))
    )
    import models.training as training

    real = training.build_callbacks

    def with_poison(*args, **kwargs):
        callbacks, kept = real(*args, **kwargs)
        return [*callbacks, Poison()], kept

    training.build_callbacks = with_poison
    try:
        result = fit_resumable(
            _tiny(),
            ds,
            val_ds,
            TrainConfig(epochs=4, verbose=0, early_stopping=0),
            OptimizerConfig(),
            GradientConfig(every=5),
            8,
            tmp_path / "b",
            tmp_path / "lb",
            ["rnn"],
        )
    finally:
        training.build_callbacks = real
    assert result.diverged_step == 9  # first step of epoch 2
    assert result.kept_weights.name == "best.weights.h5"
    assert len(result.history) == 1 or all(
        np.isfinite(float(r["loss"])) for r in result.history[:1]
    )
    assert (
        not (tmp_path / "b" / "backup").exists()
        and not (tmp_path / "b" / "last.weights.h5").exists()
    )


def test_resume_logs_trims_to_the_backup_and_recovers_a_damaged_one(tmp_path):
    """What a kill leaves behind, crafted: logs ahead of the backup, a backup cut mid-save."""
    import json

    import keras
    import numpy as np

    from models.training import resume_logs

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    backup = tmp_path / "backup"
    backup.mkdir()
    model.save_weights(tmp_path / "good.weights.h5")
    (backup / "latest.weights.h5.bkp").write_bytes((tmp_path / "good.weights.h5").read_bytes())
    (backup / "training_metadata.json.bkp").write_text(json.dumps({"epoch": 2, "batch": -1}))
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n cut short")  # killed mid-save
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": -1}))
    (tmp_path / "best.weights.h5").write_bytes(b"half")
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n1,0.8\n2,0.7\n3,0.6\n")
    resume_logs(tmp_path, history)
    assert history.read_text().splitlines() == ["epoch,loss", "0,1.0", "1,0.8"]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    restored = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    restored.load_weights(backup / "latest.weights.h5")
    np.testing.assert_array_equal(restored.get_weights()[0], model.get_weights()[0])
    assert not (tmp_path / "best.weights.h5").exists()  # a damaged checkpoint is not kept

    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):  # nothing usable: start over
        (backup / name).write_bytes(b"junk")
    (tmp_path / "gradients.csv").write_text("step,loss\n1,1.0\n")
    resume_logs(tmp_path, history)
    assert not backup.exists() and not history.exists()
    assert not (tmp_path / "gradients.csv").exists()


def test_mixed_precision_policy_is_scoped_and_keeps_outputs_float32():
    from models.classifier import ModelConfig, build_classifier
    from models.training import precision_policy

    with precision_policy("mixed_bfloat16"):
        model = build_classifier(ModelConfig(units=8), 3, 13)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert model.get_layer("normalization").compute_dtype == "float32"
    recurrent = [layer for layer in model.layers if "lstm" in layer.name]
    assert recurrent and all(layer.compute_dtype == "bfloat16" for layer in recurrent)
    assert all(w.dtype == "float32" for w in model.weights)


def test_mixed_precision_run_saves_a_float32_model(tmp_path):
    """train.precision=mixed_bfloat16 trains in bfloat16; what the train stage saves (and so
    evaluate and the export) computes in float32."""
    from tests.test_cli import TINY, run_cli

    sets = [*TINY, f"runtime.cache_dir={tmp_path / 'cache'}", "train.precision=mixed_bfloat16"]
    run_cli(
        "run", "speech_commands", "--run-dir", str(tmp_path / "run"), "--until", "train",
        *(a for s in sets for a in ("--set", s)),
    )  # fmt: skip
    import json

    import models.features  # noqa: F401 - registers the custom layers

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == "mixed_bfloat16"
    saved = keras.models.load_model(tmp_path / "run" / "stages" / "train" / "model.keras")
    assert {layer.compute_dtype for layer in saved.layers} == {"float32"}


def test_weight_average_is_validated_and_kept(tmp_path):
    import numpy as np

    from models.training import WeightAverage

    model = _tiny()
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    raw, validated = [], []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: raw.append(model.get_weights()),
        on_test_begin=lambda logs: validated.append(model.get_weights()),
    )
    expected = model.get_weights()  # the average starts from the initial weights
    averages = []
    train, val = _data()
    model.fit(
        train, validation_data=val, epochs=2, callbacks=[WeightAverage(0.9), record], verbose=0
    )
    for t, weights in enumerate(raw, start=1):  # warm-up momentum, then 0.9
        m = min(0.9, (1 + t) / (10 + t))
        expected = [m * e + (1 - m) * w for e, w in zip(expected, weights, strict=True)]
        averages.append(expected)
    steps = len(raw) // 2
    for epoch, weights in enumerate(validated):  # validation sees the average of its epoch
        for got, want in zip(weights, averages[(epoch + 1) * steps - 1], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # the model keeps it
    assert not all(np.allclose(a, b) for a, b in zip(expected, raw[-1], strict=True))
    with pytest.raises(ConfigError, match="train.average_weights"):
        TrainConfig(average_weights=1.0)


def test_early_stopping_counts_the_epochs_logged_before_a_resume(tmp_path):
    from models.training import ResumableEarlyStopping

    history = tmp_path / "history.csv"
    # best at epoch 1, then 3 epochs without improvement (one of them NaN, one not logged): a
    # resumed fit with patience 4 stops after one more epoch without improvement, as the
    # uninterrupted one would
    history.write_text("epoch,val_loss\n0,1.0\n1,0.5\n2,0.6\n3,nan\n4,\n5,0.7\n")
    stopper = ResumableEarlyStopping(history, monitor="val_loss", mode="min", patience=4)
    stopper.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stopper.model.stop_training = False  # as fit sets it
    stopper.on_train_begin()
    assert (stopper.wait, float(stopper.best), stopper.best_epoch) == (3, 0.5, 1)
    stopper.on_epoch_end(6, {"val_loss": 0.8})
    assert stopper.model.stop_training  # 4 epochs since the best, counted across the resume
    fresh = ResumableEarlyStopping(tmp_path / "none.csv", monitor="val_loss", patience=4)
    fresh.set_model(stopper.model)
    fresh.on_train_begin()
    assert fresh.wait == 0 and fresh.best is None  # a first fit starts from nothing
