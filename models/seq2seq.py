"""LSTM encoder-decoder with attention (Luong or Bahdanau), for translation-style tasks.

Training uses teacher forcing over whole target sequences (``call``); decoding runs one step at a
time (``decode_step``) through the decoder's own LSTM cell, so both paths share every weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import layers, ops

from data.checks import check
from data.registry import Registry
from data.text import PAD_ID

ATTENTIONS: Registry[type] = Registry("attention")
NEG = -1e9  # added to masked attention scores (finite, so no NaN from -inf - -inf)


@dataclass(frozen=True)
class Seq2SeqConfig:
    """The ``model`` section of the translation pipeline.

    Attributes:
        embedding_dim: size of the token embeddings (both languages).
        units: LSTM units of each encoder direction; the decoder has ``units`` times the number of
            encoder directions, so it can start from the encoder's final state.
        encoder_layers: stacked encoder LSTM layers.
        bidirectional: read the source both ways.
        attention: ``luong`` (multiplicative, "general"), ``bahdanau`` (additive) or ``none``
            (the decoder sees only the encoder's final state: shows what attention buys).
        dropout: dropout on embeddings and on the decoder output.
        label_smoothing: training-loss label smoothing (0 = plain cross-entropy); spreads this
            much probability mass over the whole target vocabulary.
        attention_units: size of the attentional vector tanh(W [h; context]) that feeds the
            output layer (Luong's h~); 0 means the decoder's size. Smaller is faster: the output
            layer multiplies it by the whole target vocabulary at every step.
        tie_embeddings: the output layer reuses the target embedding matrix (transposed, plus
            its own bias) instead of a separate ``[attention_units, target_vocab]`` matrix
            (Press & Wolf, 2017): fewer weights, and a rare target token's input and output
            vectors learn from each other. Needs ``attention_units`` (or the decoder's size
            without attention) equal to ``embedding_dim``.
    """

    embedding_dim: int = 128
    units: int = 128
    encoder_layers: int = 1
    bidirectional: bool = True
    attention: str = "luong"
    dropout: float = 0.1
    attention_units: int = 0
    label_smoothing: float = 0.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        check(
            0 <= self.label_smoothing < 1,
            "model.label_smoothing",
            self.label_smoothing,
            "in [0, 1)",
        )
        check(self.attention_units >= 0, "model.attention_units", self.attention_units, ">= 0")
        check(self.embedding_dim >= 1, "model.embedding_dim", self.embedding_dim, ">= 1")
        check(self.units >= 1, "model.units", self.units, ">= 1")
        check(self.encoder_layers >= 1, "model.encoder_layers", self.encoder_layers, ">= 1")
        check(
            self.attention in ATTENTIONS or self.attention == "none",
            "model.attention",
            self.attention,
            f"one of {[*ATTENTIONS.names(), 'none']}",
        )
        check(0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        check(
            not self.tie_embeddings or self.readout_units == self.embedding_dim,
            "model.tie_embeddings",
            self.tie_embeddings,
            f"false, or model.attention_units (here {self.readout_units} wide) equal to "
            f"model.embedding_dim ({self.embedding_dim})",
        )

    @property
    def readout_units(self) -> int:
        """Width of the vector the output layer reads (the attentional vector, or the decoder)."""
        if self.attention == "none":
            return self.decoder_units
        return self.attention_units or self.decoder_units

    @property
    def decoder_units(self) -> int:
        return self.units * (2 if self.bidirectional else 1)


def _masked_softmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis of ``[b, tq, tk]`` scores, ignoring keys where ``mask`` is False."""
    scores = ops.where(ops.expand_dims(mask, 1), scores, NEG)
    return ops.softmax(scores, axis=-1)


@ATTENTIONS.register("luong")
@keras.saving.register_keras_serializable("rnn_pipeline")
class LuongAttention(layers.Layer):
    """Multiplicative attention, score(q, k) = q^T W k / sqrt(units) (Luong et al., 2015, "general").

    The scaling (as in scaled dot-product attention) keeps the scores' spread independent of the
    width: unscaled, a wide decoder saturates the softmax and the key projection gets almost no
    gradient (the gradient monitor shows it).
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.key_projection = layers.Dense(units, use_bias=False, name="key_projection")

    def prepare(self, values: tf.Tensor) -> tf.Tensor:
        """Projects the encoder outputs once per sentence (reused at every decoding step)."""
        return self.key_projection(values)

    def call(self, query, keys, values, mask):  # noqa: ANN001, ANN201 - tensors
        scores = ops.matmul(query, ops.transpose(keys, (0, 2, 1))) / float(self.units) ** 0.5
        weights = _masked_softmax(scores, mask)
        return ops.matmul(weights, values), weights

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@ATTENTIONS.register("bahdanau")
@keras.saving.register_keras_serializable("rnn_pipeline")
class BahdanauAttention(layers.Layer):
    """Additive attention, score(q, k) = v^T tanh(W1 q + W2 k) (Bahdanau et al., 2015)."""

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.key_projection = layers.Dense(units, use_bias=False, name="key_projection")
        self.query_projection = layers.Dense(units, use_bias=False, name="query_projection")
        self.score = layers.Dense(1, use_bias=False, name="score")

    def prepare(self, values: tf.Tensor) -> tf.Tensor:
        return self.key_projection(values)

    def call(self, query, keys, values, mask):  # noqa: ANN001, ANN201 - tensors
        # [b, tq, 1, u] + [b, 1, tk, u] -> scores [b, tq, tk]
        hidden = ops.tanh(
            ops.expand_dims(self.query_projection(query), 2) + ops.expand_dims(keys, 1)
        )
        weights = _masked_softmax(ops.squeeze(self.score(hidden), -1), mask)
        return ops.matmul(weights, values), weights

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("rnn_pipeline")
class TiedOutput(layers.Layer):
    """Logits from an embedding matrix: ``x @ E^T + b``, in float32 (the weights stay E's).

    The embedding is held outside Keras' tracking (it belongs to the model), so its matrix is
    saved once; this layer owns only the bias.
    """

    def __init__(self, embedding: layers.Embedding, **kwargs) -> None:
        super().__init__(dtype="float32", **kwargs)
        self._tied = [embedding]  # a plain list: not tracked as a sublayer a second time
        self.bias = self.add_weight(shape=(embedding.input_dim,), initializer="zeros", name="bias")

    def call(self, x):  # noqa: ANN001, ANN201 - tensors
        matrix = ops.cast(self._tied[0].embeddings, "float32")
        return ops.matmul(ops.cast(x, "float32"), ops.transpose(matrix)) + self.bias


@keras.saving.register_keras_serializable("rnn_pipeline")
class Translator(keras.Model):
    """Embedding + (Bi)LSTM encoder; LSTM decoder with attention; teacher-forced ``call``.

    ``call((source_ids, decoder_input_ids))`` returns logits ``[b, t, target_vocab]``. Id 0 is
    padding on both sides; the source padding is masked in the encoder and in attention.
    """

    def __init__(
        self,
        source_vocab: int,
        target_vocab: int,
        model_config: dict | None = None,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        config = Seq2SeqConfig(**(model_config or {}))
        self.model_config = config
        self.source_vocab, self.target_vocab, self.seed = source_vocab, target_vocab, seed
        self.source_embedding = layers.Embedding(
            source_vocab, config.embedding_dim, mask_zero=True, name="source_embedding"
        )
        self.encoder_layers = []
        for i in range(config.encoder_layers):
            lstm = layers.LSTM(
                config.units, return_sequences=True, return_state=True, name=f"encoder_lstm_{i}"
            )
            if config.bidirectional:
                lstm = layers.Bidirectional(lstm, name=f"encoder_{i}")
            self.encoder_layers.append(lstm)
        self.target_embedding = layers.Embedding(
            target_vocab, config.embedding_dim, name="target_embedding"
        )
        units = config.decoder_units
        self.decoder = layers.LSTM(
            units, return_sequences=True, return_state=True, name="decoder_lstm"
        )
        self.attention = (
            None
            if config.attention == "none"
            else ATTENTIONS.get(config.attention)(units, name="attention")
        )
        self.combine = (
            layers.Dense(
                config.attention_units or units, activation="tanh", name="attention_combine"
            )
            if self.attention
            else None
        )
        self.dropout = layers.Dropout(config.dropout, seed=seed)
        # float32 logits whatever the precision policy: the cross-entropy over the vocabulary
        if config.tie_embeddings:
            self.output_projection = TiedOutput(self.target_embedding, name="output_projection")
        else:
            self.output_projection = layers.Dense(
                target_vocab, name="output_projection", dtype="float32"
            )

    # ------------------------------------------------------------ encoder

    def encode(self, source: tf.Tensor, training: bool = False) -> tuple[dict, list]:
        """Encodes ``[b, s]`` source ids.

        Returns:
            ``memory`` (encoder outputs ``values``, attention ``keys``, source ``mask``) and the
            decoder's initial ``[h, c]`` state (the last encoder layer's final states).
        """
        mask = ops.not_equal(source, PAD_ID)
        x = self.dropout(self.source_embedding(source), training=training)
        state: list = []
        for layer in self.encoder_layers:
            outputs = layer(x, mask=mask, training=training)
            x = outputs[0]
            if self.model_config.bidirectional:  # [seq, h_fw, c_fw, h_bw, c_bw]
                state = [
                    ops.concatenate([outputs[1], outputs[3]], -1),
                    ops.concatenate([outputs[2], outputs[4]], -1),
                ]
            else:
                state = [outputs[1], outputs[2]]
        keys = self.attention.prepare(x) if self.attention else x
        return {"values": x, "keys": keys, "mask": mask}, state

    # ------------------------------------------------------------ decoder

    def _readout(self, hidden, memory: dict, training: bool):  # noqa: ANN001, ANN202
        if self.attention is None:
            return self.output_projection(self.dropout(hidden, training=training)), None
        context, weights = self.attention(hidden, memory["keys"], memory["values"], memory["mask"])
        combined = self.combine(ops.concatenate([hidden, context], -1))
        return self.output_projection(self.dropout(combined, training=training)), weights

    def decode(self, target_in: tf.Tensor, state: list, memory: dict, training: bool = False):  # noqa: ANN201
        """Teacher-forced decoding of ``[b, t]`` ids: logits ``[b, t, v]`` and attention weights."""
        y = self.dropout(self.target_embedding(target_in), training=training)
        hidden, _, _ = self.decoder(y, initial_state=state, training=training)
        return self._readout(hidden, memory, training)

    def decode_step(self, token: tf.Tensor, state: list, memory: dict):  # noqa: ANN201
        """One decoding step from ``[b]`` previous ids.

        Returns:
            Logits ``[b, v]``, the new ``[h, c]`` state and attention weights ``[b, s]`` (or None).
        """
        y = self.target_embedding(token)
        hidden, state = self.decoder.cell(y, state, training=False)
        logits, weights = self._readout(ops.expand_dims(hidden, 1), memory, False)
        return logits[:, 0], list(state), None if weights is None else weights[:, 0]

    def call(self, inputs, training: bool = False):  # noqa: ANN001, ANN201 - Keras signature
        source, target_in = inputs
        memory, state = self.encode(source, training=training)
        logits, _ = self.decode(target_in, state, memory, training=training)
        return logits

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "source_vocab": self.source_vocab,
            "target_vocab": self.target_vocab,
            "model_config": dict(self.model_config.__dict__),
            "seed": self.seed,
        }

    def build_with_dummy(self) -> Translator:
        """Creates the weights with a tiny batch (before ``load_weights``)."""
        dummy = ops.ones((1, 2), "int32")
        self((dummy, dummy))
        return self


def masked_loss(y_true: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Token cross-entropy averaged over non-padding target positions.

    With ``label_smoothing`` e the target distribution is (1 - e) on the true token plus e spread
    uniformly over the vocabulary.
    """
    y_true = ops.cast(y_true, "int32")
    losses = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    if label_smoothing:
        uniform = -ops.mean(ops.log_softmax(logits, axis=-1), axis=-1)
        losses = (1.0 - label_smoothing) * losses + label_smoothing * uniform
    mask = ops.cast(ops.not_equal(y_true, PAD_ID), losses.dtype)
    value = ops.sum(losses * mask) / ops.maximum(ops.sum(mask), 1.0)
    # Under a strategy Keras divides per-example losses by the number of replicas before the
    # gradients are summed over them (and multiplies the logged loss back), but leaves an
    # already reduced scalar such as this one alone: divide here, or the step would be that
    # many times too large.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


def smoothed_loss(label_smoothing: float):  # noqa: ANN201
    """``masked_loss`` with label smoothing, as a named Keras loss function."""
    if not label_smoothing:
        return masked_loss

    def loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        return masked_loss(y_true, logits, label_smoothing)

    loss.__name__ = "masked_loss_smoothed"
    return loss


@keras.saving.register_keras_serializable("rnn_pipeline")
class TokenAccuracy(keras.metrics.Metric):
    """Teacher-forced token accuracy over all non-padding target positions seen.

    Counts hits and tokens over the whole epoch (a mean of per-batch ratios would weight a
    short batch like a long one).
    """

    def __init__(self, name: str = "accuracy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.tokens = self.add_variable((), initializer="zeros", name="tokens")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:  # noqa: ANN001
        y_true = ops.cast(y_true, "int32")
        mask = ops.not_equal(y_true, PAD_ID)
        predicted = ops.cast(ops.argmax(y_pred, -1), "int32")
        hits = ops.logical_and(ops.equal(predicted, y_true), mask)
        self.hits.assign_add(ops.sum(ops.cast(hits, "float32")))
        self.tokens.assign_add(ops.sum(ops.cast(mask, "float32")))

    def result(self):  # noqa: ANN201
        return self.hits / ops.maximum(self.tokens, 1.0)

    def reset_state(self) -> None:
        self.hits.assign(0.0)
        self.tokens.assign(0.0)
