"""The gradient monitor: its norms equal norms computed independently with tf.GradientTape."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.gradients import GradientConfig, GradientMonitor


def tiny_model(clipnorm=None, global_clipnorm=None, lr=0.01):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3))
    x = keras.layers.LSTM(4, name="rnn")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(lr, clipnorm=clipnorm, global_clipnorm=global_clipnorm),
        loss="sparse_categorical_crossentropy",
    )
    return model


@pytest.mark.parametrize("clip", [{"global_clipnorm": 0.05}, {"clipnorm": 0.01}, {}])
def test_norms_match_gradient_tape(tmp_path, clip):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.integers(0, 2, size=8)
    model = tiny_model(**clip)
    # Independent computation on the same weights, before the step.
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_variables)
    by_layer = {}
    for var, grad in zip(model.trainable_variables, grads, strict=True):
        by_layer.setdefault(var.path.split("/")[0], []).append(float(tf.reduce_sum(grad**2)))
    expected = {k: np.sqrt(sum(v)) for k, v in by_layer.items()}
    expected_global = np.sqrt(sum(sum(v) for v in by_layer.values()))
    if "global_clipnorm" in clip:
        expected_after = min(expected_global, clip["global_clipnorm"])
    elif "clipnorm" in clip:
        expected_after = np.sqrt(sum(min(float(tf.norm(g)), clip["clipnorm"]) ** 2 for g in grads))
    else:
        expected_after = expected_global

    monitor = GradientMonitor(GradientConfig(every=1), tmp_path / "gradients.csv")
    monitor.install(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[monitor], shuffle=False)
    row = monitor.rows[0]
    assert set(monitor.layers) == {"rnn", "out"}
    for name, value in expected.items():
        assert row[f"norm/{name}"] == pytest.approx(value, rel=1e-4)
    assert row["global_norm"] == pytest.approx(expected_global, rel=1e-4)
    assert row["clipped_norm"] == pytest.approx(expected_after, rel=1e-4)
    assert row["clipped"] == float(bool(clip))
    with (tmp_path / "gradients.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 1


def test_interval_and_summary(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 6, 3)).astype("float32")
    y = np.arange(40) % 2
    model = tiny_model(clipnorm=1.0)
    monitor = GradientMonitor(
        GradientConfig(every=2, histogram_every=4), tmp_path / "g.csv", tmp_path / "logs"
    )
    monitor.install(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[monitor])
    assert [r["step"] for r in monitor.rows] == [1, 2, 4, 6, 8, 10]
    summary = monitor.summary()
    assert summary["steps_recorded"] == 6 and summary["first_nonfinite_step"] is None
    assert set(summary["layers"]) == {"rnn", "out"} and 0 <= summary["fraction_clipped"] <= 1
    assert any((tmp_path / "logs" / "gradients").iterdir())


def test_vanishing_advice_depends_on_the_layer_kind():
    from models.gradients import GradientConfig, diagnose

    summary = {
        "global_norm_max": 1.0,
        "layers": {
            "lstm": {"median": 1e-7},
            "key_projection": {"median": 1e-8},
            "out": {"median": 0.1},
        },
    }
    rows = [{"global_norm": 1.0}] * 4
    warnings = diagnose(summary, rows, ["lstm"], GradientConfig())
    lstm = next(w for w in warnings if "'lstm' has" in w)
    attention = next(w for w in warnings if "'key_projection'" in w)
    assert "LSTM or GRU" in lstm
    assert "not recurrent" in attention and "LSTM or GRU" not in attention
