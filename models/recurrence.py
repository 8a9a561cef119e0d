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
) -> keras.Model:
    """One recurrent layer (named ``rnn``) reading the whole sequence, then a softmax (``out``).

    ``recurrent_gain`` scales the orthogonal initialization of the recurrent weights: above 1 the
    hidden state of an unbounded (relu) cell grows step after step, the classic recipe for
    exploding gradients. ``recurrent_init="identity"`` (for simple RNNs: the IRNN of Le et al.,
    2015) starts relu RNNs with a recurrence that neither shrinks nor forgets. ``gate_bias`` sets
    the initial bias of the LSTM forget gate or the GRU update gate (Keras uses 1 and 0): a large
    value starts the cell with its memory open, so the gradient reaches early steps from the
    start.
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
    if gate_bias is not None and cell in ("lstm", "gru"):
        bias = rnn.cell.bias
        value = np.array(bias.numpy())
        # LSTM bias blocks are [input, forget, cell, output]; GRU's are [update, reset, new].
        block = slice(units, 2 * units) if cell == "lstm" else slice(0, units)
        value[..., block] = gate_bias
        bias.assign(value)
    return model


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
