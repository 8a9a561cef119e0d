"""Greedy and beam decoding: consistency, stopping, and a tiny model that learns its pairs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from data.text import END_ID, PAD_ID
from data.text_datasets import PairIds, pair_dataset
from models.decoding import DecodeConfig, beam_decode, decode_ids, greedy_decode, ids_to_tokens
from models.seq2seq import Translator, masked_loss
from pipelines.runtime import set_seed as seeded

PAIRS = [  # reversing and relabelling: the target depends on every source position
    ([4, 5, 6], [7, 6, 5]),
    ([5, 4], [6, 7]),
    ([6, 6, 4, 5], [5, 7, 9, 9]),
    ([4], [8]),
    ([5, 6, 4, 4], [7, 7, 9, 6]),
    ([6, 5], [8, 6]),
]


@pytest.fixture(scope="module")
def trained() -> Translator:
    seeded(0)
    ids = PairIds.from_lists([p[0] for p in PAIRS], [p[1] for p in PAIRS])
    ds = pair_dataset(ids, batch_size=6, bucket_by_length=False).repeat()
    model = Translator(
        10, 10, {"units": 32, "embedding_dim": 16, "dropout": 0.0}
    ).build_with_dummy()
    model.compile(optimizer=keras.optimizers.Adam(0.02, clipnorm=1.0), loss=masked_loss)
    model.fit(ds, steps_per_epoch=150, epochs=1, verbose=0)
    return model


def _batch(rows):
    width = max(len(r) for r in rows)
    return tf.constant([r + [PAD_ID] * (width - len(r)) for r in rows], tf.int32)


def _strip(row):
    row = list(row)
    return row[: row.index(END_ID)] if END_ID in row else row


def test_tiny_model_learns_its_pairs_exactly(trained):
    out = greedy_decode(trained, _batch([p[0] for p in PAIRS]), 10)[0].numpy()
    assert [_strip(r) for r in out] == [p[1] for p in PAIRS]
    beam = beam_decode(trained, _batch([p[0] for p in PAIRS]), 10, 3, 0.6).numpy()
    assert [_strip(r) for r in beam] == [p[1] for p in PAIRS]


def test_beam_width_one_equals_greedy():
    seeded(1)
    model = Translator(12, 15, {"units": 8, "embedding_dim": 8}).build_with_dummy()
    source = tf.constant(np.random.default_rng(0).integers(4, 12, (5, 6)), tf.int32)
    greedy = greedy_decode(model, source, 9)[0].numpy()
    beam = beam_decode(model, source, 9, 1, 0.6).numpy()
    np.testing.assert_array_equal(greedy, beam)


def test_decoding_stops_at_max_length_and_pads_after_end(trained):
    out = decode_ids(trained, _batch([[4, 5, 6]]), DecodeConfig(beam_width=1, max_length=2)).numpy()
    assert out.shape == (1, 2)
    full = greedy_decode(trained, _batch([[4, 5, 6], [4]]), 10)[0].numpy()
    for row in full:
        end = list(row).index(END_ID)
        assert np.all(row[end + 1 :] == PAD_ID)


def test_ids_to_tokens_stops_at_end():
    vocab = tf.constant(["", "[UNK]", "[START]", "[END]", "a", "b"])
    ids = tf.constant([[4, 1, 5, 3, 4, 0], [3, 4, 4, 0, 0, 0]])
    tokens = ids_to_tokens(ids, vocab).to_list()
    assert tokens == [[b"a", b"[UNK]", b"b"], []]


def test_unknown_padding_and_start_are_never_generated_unless_allowed():
    seeded(2)
    model = Translator(12, 15, {"units": 8, "embedding_dim": 8}).build_with_dummy()
    bias = model.output_projection.bias
    bias.assign(bias.numpy() + np.eye(15, dtype="float32")[1] * 50)  # [UNK] would always win
    source = tf.constant([[4, 5, 6]], tf.int32)
    for allow in (False, True):
        greedy = greedy_decode(model, source, 5, allow_unknown=allow)[0].numpy()[0]
        beam = beam_decode(model, source, 5, 3, 0.6, allow_unknown=allow).numpy()[0]
        for out in (greedy, beam):
            assert (1 in out) == allow
            assert 2 not in out and (
                0 not in out[: list(out).index(3)] if 3 in out else 0 not in out
            )
