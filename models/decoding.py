"""Greedy and beam-search decoding in TensorFlow graph ops (used by evaluation and the export).

Both stop at the end token or after ``max_length`` steps, whichever comes first for every row.
Outputs are ``[batch, steps]`` token ids; after a row's end token come padding ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from data.checks import check
from data.text import END_ID, PAD_ID, START_ID, UNK_ID
from models.seq2seq import NEG, Translator


@dataclass(frozen=True)
class DecodeConfig:
    """The ``decode`` config section.

    Attributes:
        beam_width: 1 decodes greedily; more keeps that many hypotheses per sentence.
        length_penalty: GNMT length normalization exponent alpha: hypotheses are ranked by
            log-probability / ((5 + length) / 6) ** alpha (0: no normalization, favours short).
        max_length: most target tokens generated (the end token included).
        batch_size: sentences decoded together during evaluation.
        allow_unknown: let the decoder output ``[UNK]``; off by default, so it writes its best
            real word instead (padding and ``[START]`` are never generated).
    """

    beam_width: int = 4
    length_penalty: float = 0.6
    max_length: int = 50
    batch_size: int = 128
    allow_unknown: bool = False

    def __post_init__(self) -> None:
        check(self.beam_width >= 1, "decode.beam_width", self.beam_width, ">= 1")
        check(self.length_penalty >= 0, "decode.length_penalty", self.length_penalty, ">= 0")
        check(self.max_length >= 1, "decode.max_length", self.max_length, ">= 1")
        check(self.batch_size >= 1, "decode.batch_size", self.batch_size, ">= 1")


def _ban(logits: tf.Tensor, allow_unknown: bool) -> tf.Tensor:
    """Makes padding, ``[START]`` (and ``[UNK]`` unless allowed) impossible outputs."""
    banned = [PAD_ID, START_ID] + ([] if allow_unknown else [UNK_ID])
    vocab = tf.shape(logits)[-1]
    mask = tf.reduce_sum(tf.one_hot(banned, vocab, dtype=logits.dtype), axis=0)
    return logits + mask * NEG


def greedy_decode(
    model: Translator, source: tf.Tensor, max_length: int, allow_unknown: bool = False
):  # noqa: ANN201
    """Most probable token at every step.

    Returns:
        Ids ``[b, t]`` and attention weights ``[b, t, s]`` (zeros without attention).
    """
    memory, state = model.encode(source)
    batch = tf.shape(source)[0]
    src_len = tf.shape(source)[1]
    token = tf.fill([batch], START_ID)
    finished = tf.zeros([batch], tf.bool)
    ids = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
    attn = tf.TensorArray(tf.float32, size=0, dynamic_size=True)

    def cond(t, token, state, finished, ids, attn):  # noqa: ANN001, ANN202
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, token, state, finished, ids, attn):  # noqa: ANN001, ANN202
        logits, state, weights = model.decode_step(token, state, memory)
        nxt = tf.cast(tf.argmax(_ban(logits, allow_unknown), -1), tf.int32)
        nxt = tf.where(finished, PAD_ID, nxt)
        if weights is None:
            weights = tf.zeros([batch, src_len])
        return (
            t + 1,
            nxt,
            state,
            tf.logical_or(finished, tf.equal(nxt, END_ID)),
            ids.write(t, nxt),
            attn.write(t, tf.cast(weights, tf.float32)),
        )

    _, _, _, _, ids, attn = tf.while_loop(
        cond, body, (tf.constant(0), token, state, finished, ids, attn)
    )
    return tf.transpose(ids.stack(), [1, 0]), tf.transpose(attn.stack(), [1, 0, 2])


def _lp(lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def beam_decode(
    model: Translator,
    source: tf.Tensor,
    max_length: int,
    beam_width: int,
    length_penalty: float,
    allow_unknown: bool = False,
) -> tf.Tensor:
    """Beam search; returns the best hypothesis' ids ``[b, t]`` under the length penalty.

    Finished hypotheses stay in the beam with their score frozen (they can only be extended by
    padding at no cost), so ``beam_width=1`` gives exactly the greedy output.
    """
    k = beam_width
    memory, state = model.encode(source)
    batch = tf.shape(source)[0]
    memory = {name: tf.repeat(value, k, axis=0) for name, value in memory.items()}
    state = [tf.repeat(s, k, axis=0) for s in state]
    scores = tf.concat([tf.zeros([batch, 1]), tf.fill([batch, k - 1], NEG)], axis=1)
    finished = tf.zeros([batch, k], tf.bool)
    lengths = tf.zeros([batch, k], tf.int32)
    seqs = tf.zeros([batch, k, 0], tf.int32)
    token = tf.fill([batch * k], START_ID)

    def cond(t, token, state, scores, finished, lengths, seqs):  # noqa: ANN001, ANN202
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, token, state, scores, finished, lengths, seqs):  # noqa: ANN001, ANN202
        logits, state, _ = model.decode_step(token, state, memory)
        vocab = tf.shape(logits)[-1]
        logits = _ban(tf.cast(logits, tf.float32), allow_unknown)
        logp = tf.reshape(tf.nn.log_softmax(logits), [batch, k, vocab])
        pad_only = tf.where(tf.range(vocab) == PAD_ID, 0.0, NEG)
        logp = tf.where(finished[..., None], pad_only[None, None], logp)
        total = tf.reshape(scores[..., None] + logp, [batch, k * vocab])
        scores, flat = tf.math.top_k(total, k)
        beam, nxt = flat // vocab, flat % vocab
        finished = tf.gather(finished, beam, batch_dims=1)
        lengths = tf.gather(lengths, beam, batch_dims=1) + tf.cast(~finished, tf.int32)
        seqs = tf.concat([tf.gather(seqs, beam, batch_dims=1), nxt[..., None]], axis=-1)
        finished = tf.logical_or(finished, tf.equal(nxt, END_ID))
        rows = tf.reshape(beam + tf.range(batch)[:, None] * k, [-1])
        state = [tf.gather(s, rows) for s in state]
        return t + 1, tf.reshape(nxt, [-1]), state, scores, finished, lengths, seqs

    _, _, _, scores, finished, lengths, seqs = tf.while_loop(
        cond,
        body,
        (tf.constant(0), token, state, scores, finished, lengths, seqs),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None]),
            [tf.TensorShape([None, None])] * len(state),
            tf.TensorShape([None, k]),
            tf.TensorShape([None, k]),
            tf.TensorShape([None, k]),
            tf.TensorShape([None, k, None]),
        ),
    )
    best = tf.argmax(scores / _lp(lengths, length_penalty), axis=1, output_type=tf.int32)
    return tf.gather(seqs, best, batch_dims=1)


def decode_ids(model: Translator, source: tf.Tensor, config: DecodeConfig) -> tf.Tensor:
    """Greedy when ``beam_width`` is 1, else beam search."""
    if config.beam_width == 1:
        return greedy_decode(model, source, config.max_length, config.allow_unknown)[0]
    return beam_decode(
        model,
        source,
        config.max_length,
        config.beam_width,
        config.length_penalty,
        config.allow_unknown,
    )


def ids_to_tokens(ids: tf.Tensor, vocabulary: tf.Tensor) -> tf.RaggedTensor:
    """Token strings up to (not including) the end token; padding and specials dropped."""
    before_end = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, END_ID), tf.int32), axis=1), 0)
    keep = before_end & tf.not_equal(ids, PAD_ID) & tf.not_equal(ids, START_ID)  # [UNK] stays
    return tf.ragged.boolean_mask(tf.gather(vocabulary, ids), keep)


def translate_ids(model, sources: list[np.ndarray], decode: DecodeConfig) -> list[list[int]]:  # noqa: ANN001
    """Decodes id sequences in length-sorted batches; returns output ids in input order."""
    import tensorflow as tf

    fn = tf.function(
        lambda src: decode_ids(model, src, decode),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    order = np.argsort([len(s) for s in sources], kind="stable")
    outputs: list[list[int]] = [[] for _ in sources]
    from rich.progress import track

    batches = range(0, len(order), decode.batch_size)
    for start in track(batches, description="Translating test split", transient=True):
        chosen = order[start : start + decode.batch_size]
        width = max(1, max(len(sources[i]) for i in chosen))
        batch = np.zeros((len(chosen), width), np.int32)
        for row, i in enumerate(chosen):
            batch[row, : len(sources[i])] = sources[i]
        ids = fn(tf.constant(batch)).numpy()
        for row, i in enumerate(chosen):
            outputs[i] = ids[row].tolist()
    return outputs


def detokenize(rows: list[list[int]], vocabulary: list[str], codec: Any) -> list[str]:
    """Output ids -> sentences, with the same graph ops as the export.

    Args:
        rows: output ids per sentence (specials are dropped).
        vocabulary: target tokens by id.
        codec: the target side's ``data.subword.Codec`` (or a level name, ``word`` or ``char``).
    """
    import tensorflow as tf

    from data.subword import Codec

    if isinstance(codec, str):
        codec = Codec(codec)

    if not rows:
        return []
    width = max(1, max(len(r) for r in rows))
    ids = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    tokens = ids_to_tokens(tf.constant(ids), tf.constant(vocabulary))
    return [s.decode("utf-8") for s in codec.join(tokens).numpy()]


def attention_panel(
    model: Translator,
    source_ids: np.ndarray,
    source_tokens: list[str],
    target_vocabulary: list[str],
    decode: DecodeConfig,
) -> tuple[list[str], list[str], np.ndarray]:
    """Greedy-decodes one sentence; returns its source tokens, output tokens and attention."""
    ids, weights = greedy_decode(
        model, tf.constant(source_ids[None], tf.int32), decode.max_length, decode.allow_unknown
    )
    out = ids.numpy()[0].tolist()
    steps = out.index(END_ID) + 1 if END_ID in out else len(out)
    target_tokens = [target_vocabulary[t] for t in out[:steps]]
    return source_tokens, target_tokens, weights.numpy()[0, :steps, : len(source_tokens)]
