"""Streaming inference: the trained classifier run one hop of raw audio at a time.

``StreamingClassifier`` reuses the trained model's weights (no retraining, no copy): each call
takes one or more hops of samples (a hop is the MFCC stride) and the state (the last
``n_fft - hop`` samples, the frame count, the running cepstral mean, the delta histories, every
recurrent layer's ``h``/``c``, and the running mean, maximum or attention-weighted mean of the
last layer's outputs for mean, max or attention pooling), computes one MFCC frame per hop, steps
every cell over them and returns the probabilities for the stream so far after each hop, with the
new state. Over a window-length clip, the final probabilities equal the non-streaming model's.
Only a causal model streams: ``stream_problems`` names each setting that prevents it.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from data.audio import FeatureConfig, feature_shape
from models.classifier import FrequencyConv, MaskedAttentionPooling1D, MaskedMaxPooling1D
from models.features import MfccLayer, running_mean
from models.serving import Stream

# The name scope of the step's learned layers (frequency convolutions, recurrent cells, the
# output layer): ``--quantize int8`` quantizes the ops under it and keeps everything else, the
# front end and the stream's bookkeeping (sample buffer, frame count, running means), in float.
QUANTIZABLE_SCOPE = "quantizable"
SKIPPED = (keras.layers.InputLayer, keras.layers.Masking, keras.layers.Dropout)
# pooling over time, kept up to date in the state "pool": the mean so far, the maximum so far, or
# the attention-weighted mean so far (with "pool_peak" and "pool_total", its softmax's running
# maximum score and sum of weights)
POOLS = {
    keras.layers.GlobalAveragePooling1D: "mean",
    MaskedMaxPooling1D: "max",
    MaskedAttentionPooling1D: "attention",
}


def stream_problems(model: keras.Model, features: FeatureConfig) -> list[str]:
    """Why ``model`` cannot run hop by hop, one reason per setting; empty if it can."""
    problems = []
    if not features.streaming:
        problems.append(
            "features.streaming is false: centered frames need half a window of future audio "
            "and the top_db floor needs the clip's peak (set features.streaming: true and retrain)"
        )
    if features.normalize in ("utterance", "utterance_var"):
        problems.append(
            f"features.normalize is {features.normalize}: it needs the whole clip's statistics "
            "(use running or running_var, its causal twins, or global)"
        )
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            problems.append(
                f"model.bidirectional is true (layer {layer.name}): the backward direction reads "
                "the future (set model.bidirectional: false)"
            )
        elif isinstance(layer, keras.layers.RNN) and layer.go_backwards:
            problems.append(f"layer {layer.name} runs backwards in time")
        elif not isinstance(
            layer,
            SKIPPED + (keras.layers.RNN, keras.layers.Dense, FrequencyConv) + tuple(POOLS),
        ) and layer.name not in ("normalization", "spec_augment"):
            problems.append(f"layer {layer.name} ({type(layer).__name__}) has no streaming step")
    return problems


class StreamingClassifier(tf.Module):
    """One hop of raw samples in, the probabilities so far and the new state out.

    Args:
        model: a trained classifier from ``models.classifier.build_classifier``.
        features: the feature settings it was trained with (``features.streaming`` true).

    Raises:
        ValueError: the model is not causal; the message lists ``stream_problems``.
    """

    def __init__(self, model: keras.Model, features: FeatureConfig) -> None:
        super().__init__(name="streaming_classifier")
        problems = stream_problems(model, features)
        if problems:
            raise ValueError("This model cannot stream: " + "; ".join(problems))
        self.model = model
        self.features = features
        self.shape = feature_shape(features)
        self.mfcc = MfccLayer(features, name="stream_mfcc")
        self.normalization = model.get_layer("normalization")
        # per-frame layers between the normalization and the recurrent layers (no state)
        self.frame_layers = [layer for layer in model.layers if isinstance(layer, FrequencyConv)]
        self.recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
        pools = [layer for layer in model.layers if type(layer) in POOLS]
        self.pool_layer = pools[0] if pools else None
        self.pool = POOLS[type(pools[0])] if pools else None  # None: the last step's output
        self.head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        # the trained cells, run over a block of frames from a given state (shared weights)
        self._runners = [
            keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
            for layer in self.recurrent
        ]

    @property
    def hop(self) -> int:
        """Samples per call."""
        return self.shape.hop_length

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every state tensor's shape without the batch axis, in signature order."""
        shapes: dict[str, tuple[int, ...]] = {
            "samples": (self.shape.n_fft - self.shape.hop_length,),
            "frames": (1,),
            **self.normalization.stream_state(),
        }
        for layer in self.recurrent:
            for name in self._cell_state_names(layer):
                shapes[name] = (layer.cell.units,)
        if self.pool:
            shapes["pool"] = (self.recurrent[-1].cell.units,)
        if self.pool == "attention":
            shapes["pool_peak"] = (1,)
            shapes["pool_total"] = (1,)
        return shapes

    def initial_state(self, batch: int = 1) -> dict[str, tf.Tensor]:
        """Zeros for every state tensor: the start of a stream."""
        return {
            name: tf.zeros((batch, *shape), tf.float32)
            for name, shape in self.state_shapes().items()
        }

    def step(
        self, samples: tf.Tensor, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The next ``k`` hops: ``samples`` float32 ``[batch, k * hop]`` -> probabilities, state.

        The probabilities ``[batch, k, classes]`` are those after each hop (the stream so far).
        ``k = 1`` is one hop; a larger ``k`` is the same computation in one call per block (much
        less overhead: a detector can feed seconds at a time and read every hop's answer).
        """
        samples = tf.convert_to_tensor(samples, tf.float32)
        count = state["frames"]
        buffer = tf.concat([state["samples"], samples], axis=1)
        frames = tf.signal.frame(buffer, self.shape.n_fft, self.hop)  # [batch, k, n_fft]
        new: dict[str, tf.Tensor] = {
            "samples": buffer[:, tf.shape(buffer)[1] - (self.shape.n_fft - self.hop) :],
            "frames": count + tf.cast(tf.shape(frames)[1], tf.float32),
        }
        x, norm_state = self.normalization.stream_step(
            self.mfcc.frame_mfcc(frames),
            count,
            {k: state[k] for k in self.normalization.stream_state()},
        )
        new.update(norm_state)
        with tf.name_scope(QUANTIZABLE_SCOPE):
            for layer in self.frame_layers:
                x = layer(x)
        one_hop = samples.shape[1] == self.hop  # static: a plain cell call, no loop op
        for layer, runner in zip(self.recurrent, self._runners, strict=True):
            names = self._cell_state_names(layer)
            with tf.name_scope(QUANTIZABLE_SCOPE):
                if one_hop:  # (TFLite's int8 calibration cannot run keras.layers.RNN's loop)
                    out, cell_state = layer.cell(x[:, 0], [state[n] for n in names], training=False)
                    x = out[:, None]
                    cell_state = (
                        cell_state if isinstance(cell_state, list | tuple) else [cell_state]
                    )
                else:
                    x, *cell_state = runner(
                        x, initial_state=[state[n] for n in names], training=False
                    )
            new.update(zip(names, cell_state, strict=True))
        if self.pool == "mean":
            x = running_mean(x, state["pool"], count, self.shape.max_frames)
        elif self.pool == "max":
            x = running_max(x, state["pool"], count, one_hop)
        elif self.pool == "attention":
            scores = self.pool_layer.scores(x)[..., None]
            x, peak, total = running_attention(
                x, scores, [state[k] for k in ("pool", "pool_peak", "pool_total")], count, one_hop
            )
            new.update(pool_peak=peak[:, -1], pool_total=total[:, -1])
        if self.pool:
            new["pool"] = x[:, -1]
        with tf.name_scope(QUANTIZABLE_SCOPE):
            for layer in self.head:
                x = layer(x)
        return x, new

    @staticmethod
    def _cell_state_names(layer: keras.layers.Layer) -> list[str]:
        if isinstance(layer.cell, keras.layers.LSTMCell):
            return [f"{layer.name}_h", f"{layer.name}_c"]
        return [f"{layer.name}_h"]

    def run(self, waveform: Any, hops: int = 1, state: dict[str, tf.Tensor] | None = None):  # noqa: ANN201
        """Feeds ``waveform`` ``[batch, samples]``, ``hops`` hops per call (drops a partial block).

        Returns:
            ``(probabilities after each call [batch, calls, classes], final state)``.
        """
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        state = state or self.initial_state(int(waveform.shape[0]))
        outputs, size = [], hops * self.hop
        for start in range(0, int(waveform.shape[1]) - size + 1, size):
            probabilities, state = self.step(waveform[:, start : start + size], state)
            outputs.append(probabilities[:, -1])
        return tf.stack(outputs, axis=1), state


def running_max(x: tf.Tensor, peak: tf.Tensor, count: tf.Tensor, one_hop: bool) -> tf.Tensor:
    """The maximum of a stream's outputs so far, at each of its newest steps.

    Args:
        x: the newest outputs ``[batch, k, size]``.
        peak: the maximum before them ``[batch, size]`` (ignored when ``count`` is 0, so the
            zero initial state means "nothing heard yet").
        count: steps before ``x``, float ``[batch, 1]``.
        one_hop: ``k`` is 1 (a plain maximum, no loop op: what TFLite converts).

    Returns:
        ``[batch, k, size]``: the maximum after each step. It never forgets: a long stream is
        restarted (``run.py detect --stream`` restarts every window).
    """
    if not one_hop:  # the maximum over the block's steps so far
        x = tf.transpose(tf.scan(tf.maximum, tf.transpose(x, [1, 0, 2])), [1, 0, 2])
    before = tf.where(tf.equal(count, 0.0), tf.fill(tf.shape(peak), -1e9), peak)
    return tf.maximum(x, before[:, None])


def running_attention(
    x: tf.Tensor, scores: tf.Tensor, state: list[tf.Tensor], count: tf.Tensor, one_hop: bool
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The attention-weighted mean of a stream's outputs so far (an online softmax).

    After each step the pooled vector is ``sum_t e^(s_t - m) h_t / sum_t e^(s_t - m)`` with ``m``
    the largest score so far, which makes the sums safe from overflow: a new maximum rescales
    what came before by ``e^(m_old - m_new)``.

    Args:
        x: the newest outputs ``[batch, k, size]``.
        scores: their scores ``[batch, k, 1]``.
        state: the pooled vector ``[batch, size]``, the largest score ``[batch, 1]`` and the sum
            of weights ``[batch, 1]`` before them (ignored when ``count`` is 0, so the zero
            initial state means "nothing heard yet").
        count: steps before ``x``, float ``[batch, 1]``.
        one_hop: ``k`` is 1 (plain ops, no loop op: what TFLite converts).

    Returns:
        ``(pooled, peak, total)`` after each step, ``[batch, k, size]``, ``[batch, k, 1]`` twice.
        Like the window model's softmax it never forgets: a long stream is restarted.
    """
    pooled, peak, total = state
    fresh = tf.equal(count, 0.0)
    peak = tf.where(fresh, tf.fill(tf.shape(peak), -1e9), peak)
    total = tf.where(fresh, tf.zeros_like(total), total)

    def update(carry, item):  # noqa: ANN001, ANN202
        pooled, peak, total = carry
        h, score = item
        top = tf.maximum(peak, score)
        old, new = total * tf.exp(peak - top), tf.exp(score - top)
        return (pooled * old + h * new) / (old + new), top, old + new

    if one_hop:
        out = update((pooled, peak, total), (x[:, 0], scores[:, 0]))
        return tuple(value[:, None] for value in out)
    steps = (tf.transpose(x, [1, 0, 2]), tf.transpose(scores, [1, 0, 2]))
    out = tf.scan(update, steps, initializer=(pooled, peak, total))
    return tuple(tf.transpose(value, [1, 0, 2]) for value in out)


class KerasStream(Stream):
    """``Stream`` rows over a ``StreamingClassifier`` in this process, with no export needed.

    The evaluate stage uses it to measure ``detect --stream`` on the trained model.
    """

    def __init__(self, streamer: StreamingClassifier, rows: int = 1) -> None:
        specs = [{"name": n, "shape": [None, *s]} for n, s in streamer.state_shapes().items()]
        super().__init__(streamer.hop, specs, rows)
        self._step_fn = tf.function(streamer.step, jit_compile=True)  # as the export's

    def _step(self, samples: np.ndarray) -> np.ndarray:
        per_hop, new = self._step_fn(tf.constant(samples), self.state)
        self.state = {name: value.numpy() for name, value in new.items()}
        return per_hop.numpy()
