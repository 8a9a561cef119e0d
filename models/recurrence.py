"""Small recurrent models for studying gradients through time, and dL/dh_t measurement."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from data.registry import Registry
from models.classifier import CELLS

# Study variants: (cell, activation). Each is a name a user can list in the study config.
VARIANTS: Registry[tuple[str, str]] = Registry("study cell")
VARIANTS.register("simple_rnn_tanh")(("simple_rnn", "tanh"))
VARIANTS.register("simple_rnn_sigmoid")(("simple_rnn", "sigmoid"))
VARIANTS.register("simple_rnn_relu")(("simple_rnn", "relu"))
VARIANTS.register("lstm")(("lstm", "tanh"))
VARIANTS.register("gru")(("gru", "tanh"))


def build_sequence_classifier(
    variant: str,
    units: int,
    features: int,
    classes: int = 2,
    recurrent_gain: float = 1.0,
    recurrent_init: str = "orthogonal",
    gate_bias: float | None = None,
    chrono_length: int | None = None,
    seed: int = 0,
) -> keras.Model:
    """One recurrent layer (named ``rnn``) reading the whole sequence, then a softmax (``out``).

    ``recurrent_gain`` scales the orthogonal initialization of the recurrent weights: above 1 the
    hidden state of an unbounded (relu) cell grows step after step, the classic recipe for
    exploding gradients. ``recurrent_init="identity"`` (for simple RNNs: the IRNN of Le et al.,
    2015) starts relu RNNs with a recurrence that neither shrinks nor forgets. The memory gates of
    an LSTM or GRU start open (``set_gate_bias``): with ``chrono_length`` by chrono
    initialization over that many steps, else with the constant ``gate_bias``; with neither,
    Keras' defaults stay (LSTM forget bias 1, GRU update bias 0).
    """
    cell, activation = VARIANTS.get(variant)
    inputs = keras.Input((None, features))
    rnn = CELLS.get(cell)(
        units,
        activation,
        "sigmoid",
        name="rnn",
        recurrent_initializer=(
            keras.initializers.Identity(gain=recurrent_gain)
            if recurrent_init == "identity" and cell == "simple_rnn"
            else keras.initializers.Orthogonal(gain=recurrent_gain)
        ),
    )
    outputs = keras.layers.Dense(classes, activation="softmax", name="out")(rnn(inputs))
    model = keras.Model(inputs, outputs, name=variant)
    if cell in ("lstm", "gru") and (gate_bias is not None or chrono_length):
        set_gate_bias(rnn, cell, units, gate_bias, chrono_length, seed)
    return model


def set_gate_bias(
    rnn: keras.layers.RNN,
    cell: str,
    units: int,
    gate_bias: float | None = None,
    chrono_length: int | None = None,
    seed: int = 0,
) -> None:
    """Initializes the memory gates of an LSTM or GRU layer so the first input can be kept.

    The gate that keeps the past (LSTM forget gate; GRU update gate ``z`` in Keras'
    ``h = z * h_prev + (1 - z) * candidate``) gets bias ``b``. With ``chrono_length`` T,
    ``b = log(u)`` with ``u ~ Uniform(1, T - 1)`` per unit (chrono initialization, Tallec &
    Ollivier 2018): units start with memory time scales spread from 1 to T steps, so some write
    the first token at once and others keep it for up to T steps. Otherwise every unit gets
    ``gate_bias``. The LSTM input gate gets ``-b / 2``: a unit that keeps long writes less of
    each noisy step, yet can still take in the first one. (Measured on the study's task at
    length 500, 3 seeds: the paper's ``-b`` makes dL/dh_1 at init ~1e-4 of dL/dh_T and needs 6-8
    epochs; Keras' 0 lets noise pile up in the cell and 2 of 3 seeds stay below 0.63; ``-b / 2``
    gives a ratio of 0.05-0.3 and learns in 1-4 epochs.) A GRU with ``reset_after`` has two
    bias rows (input and recurrent) that add up: only the input row is set, the recurrent row
    becomes 0.
    """
    bias = rnn.cell.bias
    value = np.array(bias.numpy())
    if chrono_length:
        rng = np.random.default_rng(seed)
        keep = np.log(rng.uniform(1.0, max(chrono_length - 1, 2), size=units))
    else:
        keep = np.full(units, float(gate_bias))
    row = value[0] if value.ndim == 2 else value  # reset_after GRU: [input row, recurrent row]
    if cell == "lstm":  # blocks [input, forget, cell, output]
        row[units : 2 * units] = keep
        row[:units] = -keep / 2
    else:  # GRU blocks [update, reset, new]
        row[:units] = keep
        if value.ndim == 2:
            value[1, :units] = 0.0
    bias.assign(value)


def gradient_through_time(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean L2 norm of dL/dh_t for every time step t (t = 0 first), by unrolling the cell.

    The loss is the model's cross-entropy at the last step; dL/dh_t counts every path from h_t to
    the loss through the recurrence, so its size at t = 0 shows how much learning signal reaches
    the start of the sequence.
    """
    cell = model.get_layer("rnn").cell
    dense = model.get_layer("out")
    x = tf.convert_to_tensor(x, tf.float32)
    batch, steps = int(x.shape[0]), int(x.shape[1])
    sizes = cell.state_size if isinstance(cell.state_size, list | tuple) else [cell.state_size]
    states = [tf.zeros((batch, int(size))) for size in sizes]
    hidden = []
    with tf.GradientTape() as tape:
        for t in range(steps):
            output, states = cell(x[:, t], states)
            states = list(states) if isinstance(states, list | tuple) else [states]
            tape.watch(output)
            hidden.append(output)
        probs = dense(hidden[-1])
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probs))
    grads = tape.gradient(loss, hidden)
    return np.array(
        [float(tf.reduce_mean(tf.norm(g, axis=-1))) if g is not None else 0.0 for g in grads]
    )
