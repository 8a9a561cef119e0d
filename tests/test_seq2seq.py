"""The encoder-decoder: step decoding equals teacher forcing, masking, loss and metric."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from data.checks import ConfigError
from models.gradients import GradientConfig, GradientMonitor
from models.seq2seq import Seq2SeqConfig, TokenAccuracy, Translator, masked_loss

SRC = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], np.int32)
TGT_IN = np.array([[2, 5, 6], [2, 7, 0]], np.int32)


def tiny(attention: str = "luong", **kwargs) -> Translator:
    config = {"units": 8, "embedding_dim": 8, "attention": attention, **kwargs}
    return Translator(30, 20, config, name="translator").build_with_dummy()


@pytest.mark.parametrize(
    ("attention", "tie"), [("luong", False), ("bahdanau", False), ("none", False), ("luong", True)]
)
def test_step_decoding_equals_teacher_forcing(attention, tie):
    model = tiny(attention, tie_embeddings=tie, attention_units=8)
    logits = model((SRC, TGT_IN)).numpy()
    memory, state = model.encode(tf.constant(SRC))
    steps = []
    for t in range(TGT_IN.shape[1]):
        step, state, weights = model.decode_step(tf.constant(TGT_IN[:, t]), state, memory)
        steps.append(step.numpy())
        if attention != "none":
            w = weights.numpy()
            np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
            assert np.all(w[1, 2:] < 1e-6)  # padding positions get no attention
    np.testing.assert_allclose(np.stack(steps, 1), logits, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_source_padding_is_masked(bidirectional):
    model = tiny(bidirectional=bidirectional, encoder_layers=2)
    wider = np.pad(SRC, [[0, 0], [0, 3]])
    np.testing.assert_allclose(
        model((SRC, TGT_IN)).numpy(), model((wider, TGT_IN)).numpy(), atol=1e-5
    )


def test_loss_and_accuracy_ignore_padding():
    logits = np.full((1, 3, 5), -10.0, np.float32)
    logits[0, 0, 4] = logits[0, 1, 2] = 10.0  # right, wrong (true is 3)
    y = np.array([[4, 3, 0]])
    y_longer = np.array([[4, 3, 0, 0]])
    logits_longer = np.concatenate([logits, np.zeros((1, 1, 5), np.float32)], 1)
    assert float(masked_loss(y, logits)) == pytest.approx(
        float(masked_loss(y_longer, logits_longer))
    )
    metric = TokenAccuracy()
    metric.update_state(y, logits)
    metric.update_state(np.array([[4, 0, 0]]), logits)  # one more token, right
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_gradient_monitor_groups_a_subclassed_models_layers(tmp_path):
    model = tiny()
    model.compile(optimizer=keras.optimizers.Adam(clipnorm=1.0), loss=masked_loss)
    monitor = GradientMonitor(GradientConfig(every=1), None, print_warnings=False)
    monitor.install(model)
    model.fit(
        (SRC, TGT_IN), np.array([[5, 6, 3], [7, 3, 0]]), epochs=1, verbose=0, callbacks=[monitor]
    )
    assert {"encoder_0", "decoder_lstm", "attention_combine", "output_projection"} <= set(
        monitor.layers
    )
    assert monitor.rows and monitor.rows[0]["norm/decoder_lstm"] > 0


def test_tied_output_reuses_the_target_embedding():
    model = tiny(tie_embeddings=True, attention_units=8)
    names = [w.path for w in model.weights]
    assert not any("output_projection/kernel" in n for n in names)
    assert len(names) == len(set(names)) == len(tiny(attention_units=8).weights) - 1
    with tf.GradientTape() as tape:
        score = tf.reduce_sum(model((SRC, TGT_IN))[:, :, 3])
    grad = tape.gradient(score, model.target_embedding.embeddings.value)
    assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)[3]))) > 0  # the output side
    with pytest.raises(ConfigError, match=r"model.tie_embeddings.*\(16\)"):
        Seq2SeqConfig(embedding_dim=16, attention_units=8, tie_embeddings=True)


def test_model_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="model.attention"):
        Seq2SeqConfig(attention="transformer")
    with pytest.raises(ConfigError, match="model.dropout"):
        Seq2SeqConfig(dropout=1.5)
