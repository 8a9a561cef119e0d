"""``run.py study gradients --quick`` end to end, and the task and measurement it rests on."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from data.long_range import first_token_task
from models.recurrence import VARIANTS, build_sequence_classifier, gradient_through_time
from pipelines import study_gradients as study
from tests.conftest import ROOT


def test_first_token_task_is_learnable_only_from_the_first_step():
    x, y = first_token_task(100, 30, seed=1)
    assert np.array_equal(x[:, 0, 1] > 0, y == 1)
    assert np.all(x[:, 1:, 1] == 0)


@pytest.mark.parametrize("variant", VARIANTS.names())
def test_gradient_through_time_last_step_matches_keras(variant):
    """The unrolled dL/dh_T equals the gradient Keras computes for the layer's output."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_sequence_classifier(
        variant, 8, features=2, recurrent_init="identity", gate_bias=2.0
    )
    x, y = first_token_task(16, 12, seed=0)
    curve = gradient_through_time(model, x, y)
    assert curve.shape == (12,) and np.all(np.isfinite(curve))
    rnn_out = keras.Model(model.inputs, model.get_layer("rnn").output)
    with tf.GradientTape() as tape:
        h = rnn_out(x)
        tape.watch(h)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, model.get_layer("out")(h))
        )
    expected = float(tf.reduce_mean(tf.norm(tape.gradient(loss, h), axis=-1)))
    assert curve[-1] == pytest.approx(expected, rel=1e-4)


def run_quick_study(run_dir) -> subprocess.CompletedProcess:
    """``run.py study gradients --quick`` (two memory cells, one clipping cell), as a subprocess."""
    return subprocess.run(
        [
            sys.executable,
            "run.py",
            "study",
            "gradients",
            "--quick",
            "--run-dir",
            str(run_dir),
            # two memory cells and one clipping cell keep it short; every code path still runs
            "--set",
            "study.cells=[simple_rnn_tanh, lstm]",
            "--set",
            "study.clipping.cells=[simple_rnn_relu]",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_study_quick_end_to_end(tmp_path):
    result = run_quick_study(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    # memory: 2 cells x (1 seed at length 10 + 2 seeds at 100); clipping: relu, with and
    # without clipping, 2 seeds
    assert len(rows) == 2 * 3 + 2 * 2
    assert {r["experiment"] for r in rows} == {"memory", "clipping"}
    for row in rows:
        assert {
            "cell",
            "activation",
            "seq_len",
            "clipnorm",
            "final_accuracy",
            "grad_first_over_last",
            "diverged",
            "steps_to_target",
        } <= set(row)
    report = (tmp_path / "report.md").read_text()
    assert "| variant |" in report and "## Findings" in report
    for plot in ("accuracy_vs_length.png", "grad_through_time.png", "clipping.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 1000
    # (reruns and resumes: test_rerun_reuses_only_units_with_the_same_settings, in process)


@pytest.mark.parametrize("variant", ["lstm", "gru"])
def test_gated_init_carries_the_first_step_to_the_last(variant):
    """Chrono-initialized gates: dL/dh_1 at init is not vanishing at length 200, unlike Keras'
    default gate biases, and a short training run learns length 20."""
    import tensorflow as tf

    x, y = first_token_task(64, 200, seed=0)
    ratios = {}
    for init in ("chrono", "keras"):
        keras.utils.set_random_seed(0)
        model = build_sequence_classifier(
            variant, 16, features=2, chrono_length=200 if init == "chrono" else None
        )
        curve = gradient_through_time(model, x, y)
        ratios[init] = curve[0] / curve[-1]
    assert ratios["chrono"] > 1e-2, ratios
    assert ratios["keras"] < 1e-4 * ratios["chrono"], ratios

    keras.utils.set_random_seed(0)
    model = build_sequence_classifier(variant, 16, features=2, chrono_length=20)
    x, y = first_token_task(512, 20, seed=1)
    x_test, y_test = first_token_task(256, 20, seed=2)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01, clipnorm=1.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(tf.constant(x), y, batch_size=32, epochs=4, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.95


def test_gru_gate_bias_sets_the_input_row_only():
    """A reset_after GRU adds its two bias rows: the update gate's bias is set once, not twice."""
    model = build_sequence_classifier("gru", 4, features=2, gate_bias=3.0)
    bias = model.get_layer("rnn").cell.bias.numpy()
    assert bias.shape == (2, 12)
    np.testing.assert_allclose(bias[0, :4] + bias[1, :4], 3.0)
    lstm = build_sequence_classifier("lstm", 4, features=2, chrono_length=50)
    b = lstm.get_layer("rnn").cell.bias.numpy()
    assert np.all(b[4:8] >= 0) and np.all(b[4:8] <= np.log(49) + 1e-6)  # forget gate open
    np.testing.assert_allclose(b[:4], -b[4:8] / 2)  # input gate: half closed, can still write


TINY = {
    "cells": ("simple_rnn_tanh",),
    "seq_lens": (4, 6),
    "train_examples": 32,
    "val_examples": 16,
    "test_examples": 16,
    "grad_examples": 8,
    "batch_size": 16,
    "epochs": 1,
    "seeds": 2,
    "seeded_lengths": 1,
    "units": 4,
}


def tiny_config(**changes) -> study.GradientStudyConfig:
    clipping = study.ClippingSettings(cells=("simple_rnn_relu",), seq_len=4, epochs=1, seeds=2)
    settings = study.StudySettings(**{**TINY, "clipping": clipping, **changes})
    return study.GradientStudyConfig(study=settings)


def test_rerun_reuses_only_units_with_the_same_settings(tmp_path, monkeypatch):
    first = study.run_study(tiny_config(), tmp_path)
    # memory: length 4 one seed, 6 (the longest) two; clipping: relu, off and 1.0, two seeds
    assert len(first) == 3 + 4
    assert len({r["fingerprint"] for r in first}) == 7

    calls = []
    real = study.run_one
    monkeypatch.setattr(study, "run_one", lambda unit: calls.append(unit) or real(unit))
    assert study.run_study(tiny_config(), tmp_path) == first
    assert calls == []  # everything reused

    changed = study.run_study(tiny_config(learning_rate=0.01), tmp_path)
    # only the memory units use study.learning_rate: they rerun, the clipping ones are reused
    assert len(calls) == 3 and {u.learning_rate for u in calls} == {0.01}
    assert {r["learning_rate"] for r in changed if r["experiment"] == "memory"} == {0.01}
    assert [r for r in changed if r["experiment"] == "clipping"] == first[3:]
    saved = (tmp_path / "config.yaml").read_text()
    assert "learning_rate: 0.01" in saved
    assert json.loads((tmp_path / "results.json").read_text()) == changed

    calls.clear()
    assert study.run_study(tiny_config(), tmp_path) == first  # back: all stored
    assert calls == []


def test_diverged_run_is_reported_as_diverged_not_given_an_accuracy(tmp_path):
    config = tiny_config(
        cells=("simple_rnn_relu",),
        seq_lens=(40,),
        seeds=1,
        recurrent_gain=10.0,
        recurrent_init="orthogonal",
        optimizer="sgd",
        learning_rate=50.0,
        clipnorm=0.0,
        clipping=study.ClippingSettings(cells=()),
    )
    rows = study.run_study(config, tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["diverged"] is True
    assert row["final_accuracy"] is None and row["grad_first_over_last"] is None
    text = (tmp_path / "report.md").read_text()
    assert "1 of 1 diverged" in text and "Divergence in the memory experiment" in text
    assert "0.5" not in text.split("| simple_rnn_relu | 40 |")[1].split("\n")[0]
