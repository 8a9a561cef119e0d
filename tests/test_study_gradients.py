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
    """``run.py study gradients --quick`` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "run.py", "study", "gradients", "--quick", "--run-dir", str(run_dir)],
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
    assert len(rows) == 5 * 2 * 2
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
    for plot in ("accuracy_vs_length.png", "grad_through_time.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 1000
    # resumable: a rerun finds every configuration done and only rewrites the report
    again = run_quick_study(tmp_path)
    assert again.returncode == 0 and json.loads((tmp_path / "results.json").read_text()) == rows
