"""Recurrent sequence classifier: MFCC frames -> (Bi)LSTM/GRU/SimpleRNN stack -> softmax."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import keras
import numpy as np
import scipy.fft
import tensorflow as tf

from data.checks import OMIT_IF_DEFAULT, check
from data.registry import Registry
from models.features import FeatureNormalization, SpecAugment

CELLS: Registry = Registry("cell")


@CELLS.register("lstm")
def _lstm(units: int, activation: str, recurrent_activation: str, **kwargs) -> keras.layers.Layer:
    return keras.layers.LSTM(
        units, activation=activation, recurrent_activation=recurrent_activation, **kwargs
    )


@CELLS.register("gru")
def _gru(units: int, activation: str, recurrent_activation: str, **kwargs) -> keras.layers.Layer:
    return keras.layers.GRU(
        units, activation=activation, recurrent_activation=recurrent_activation, **kwargs
    )


@CELLS.register("simple_rnn")
def _simple_rnn(units: int, activation: str, recurrent_activation: str, **kwargs):  # noqa: ANN201
    kwargs.pop("use_cudnn", None)  # SimpleRNN has no cuDNN kernel and no recurrent activation
    return keras.layers.SimpleRNN(units, activation=activation, **kwargs)


@keras.saving.register_keras_serializable("rnn_speech")
class MaskedMaxPooling1D(keras.layers.Layer):
    """The maximum over time of each feature, padding (masked steps) left out.

    Keras' ``GlobalMaxPooling1D`` ignores the mask, so a padded step would count.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):  # noqa: ANN001, ANN201 - Keras layer API
        if mask is not None:
            floor = keras.ops.cast(-1e9, x.dtype)
            x = keras.ops.where(keras.ops.expand_dims(mask, -1), x, floor)
        return keras.ops.max(x, axis=1)

    def compute_mask(self, inputs, mask=None):  # noqa: ANN001, ANN201
        return None

    def compute_output_shape(self, input_shape):  # noqa: ANN001, ANN201
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable("rnn_speech")
class MaskedAttentionPooling1D(keras.layers.Layer):
    """A learned weighted average over time: softmax(h_t . w) weights, padding left out.

    Each step's output gets a score ``h_t . w``; the pooled vector is the softmax-weighted mean of
    the outputs, so training can weigh the frames that carry the word above the noise around them
    (mean pooling gives every frame of the window the same weight). ``w`` starts at zero: training
    starts from mean pooling. It streams exactly with an online softmax
    (``models.streaming.running_attention``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape) -> None:  # noqa: ANN001 - Keras layer API
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1],), initializer="zeros", trainable=True
        )

    def scores(self, x):  # noqa: ANN001, ANN201
        """Each step's score ``[batch, steps]``."""
        return keras.ops.sum(x * keras.ops.cast(self.kernel, x.dtype), axis=-1)

    def call(self, x, mask=None):  # noqa: ANN001, ANN201 - Keras layer API
        scores = self.scores(x)
        if mask is not None:
            scores = keras.ops.where(mask, scores, keras.ops.cast(-1e9, scores.dtype))
        weights = keras.ops.softmax(scores, axis=1)
        return keras.ops.sum(x * keras.ops.expand_dims(weights, -1), axis=1)

    def compute_mask(self, inputs, mask=None):  # noqa: ANN001, ANN201
        return None

    def compute_output_shape(self, input_shape):  # noqa: ANN001, ANN201
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable("rnn_speech")
class FrequencyConv(keras.layers.Layer):
    """Convolutions along frequency, one frame at a time, in front of the recurrent layers.

    Each frame's coefficient groups (the cepstra and each delta order, one channel each) go back
    along frequency through the transposed DCT: ``n_mfcc`` coefficients over ``n_mels`` bands,
    the liftered log-mel spectrum. The layer sits after ``FeatureNormalization``, so what it maps
    back are the standardized coefficients (each divided by its deviation over the training data,
    which weighs the finer detail up: a fixed filter along frequency that the convolutions learn
    around), with the running mean removed. Then ``Conv2D`` layers with ``(1, kernel)``
    kernels, each followed by a ``(1, pool)`` max-pool: the same filters slide over every band,
    and the pooling lets a pattern move by a band or two, which is what a longer or shorter vocal
    tract does to the formants (why conv front ends are used in keyword spotting). Nothing
    crosses frames, so it streams with no state. SpecAugment, before it, masks coefficients, not
    bands.

    Args:
        n_mfcc: coefficients per stream.
        n_mels: mel bands of the spectrum the coefficients came from.
        streams: coefficient groups per frame (1 + delta orders), the conv's input channels.
        filters: output channels of each conv layer.
        kernel: the width of every kernel, in bands of its input (the first conv's are mel
            bands, the later ones' pooled bands).
        pool: max-pool factor along frequency after each conv.
    """

    def __init__(
        self,
        n_mfcc: int,
        n_mels: int,
        streams: int = 1,
        filters: tuple[int, ...] = (16, 32),
        kernel: int = 5,
        pool: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.n_mfcc, self.n_mels, self.streams = n_mfcc, n_mels, streams
        self.filters, self.kernel, self.pool = tuple(filters), kernel, pool
        self.convs = [
            keras.layers.Conv2D(f, (1, kernel), padding="same", activation="relu", name=f"conv_{i}")
            for i, f in enumerate(self.filters)
        ]
        self.pools = [
            keras.layers.MaxPooling2D((1, pool), padding="same", name=f"pool_{i}")
            for i in range(len(self.filters))
        ]
        bands = n_mels
        for _ in self.filters:
            bands = -(-bands // pool)  # "same" pooling rounds up
        self.units = bands * self.filters[-1]
        # the transposed orthonormal DCT-II: cepstra -> the (liftered) log-mel they describe
        dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=1)[:, :n_mfcc]
        self._inverse = dct.T.astype(np.float32)  # [n_mfcc, n_mels]

    def build(self, input_shape) -> None:  # noqa: ANN001 - Keras layer API
        size = self.streams * self.n_mfcc
        if input_shape[-1] is not None and input_shape[-1] != size:
            raise ValueError(
                f"FrequencyConv {self.name} expects {size} features a frame ({self.streams} "
                f"groups of {self.n_mfcc} coefficients); received {input_shape[-1]}"
            )
        shape = (None, None, self.n_mels, self.streams)
        for conv, pool in zip(self.convs, self.pools, strict=True):
            conv.build(shape)
            shape = pool.compute_output_shape(conv.compute_output_shape(shape))

    def call(self, x, mask=None):  # noqa: ANN001, ANN201 - Keras layer API
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, steps, self.streams, self.n_mfcc])
        x = tf.tensordot(x, tf.constant(self._inverse, x.dtype), axes=1)  # [b, t, streams, mels]
        x = tf.transpose(x, [0, 1, 3, 2])  # bands along width, streams as channels
        for conv, pool in zip(self.convs, self.pools, strict=True):
            x = pool(conv(x))
        x = tf.reshape(x, [batch, steps, self.units])
        if mask is not None:  # padding frames stay zero, as the layers after them expect
            x = x * tf.cast(mask, x.dtype)[..., None]
        return x

    def compute_mask(self, inputs, mask=None):  # noqa: ANN001, ANN201
        return mask

    def compute_output_shape(self, input_shape):  # noqa: ANN001, ANN201
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_mfcc": self.n_mfcc,
            "n_mels": self.n_mels,
            "streams": self.streams,
            "filters": list(self.filters),
            "kernel": self.kernel,
            "pool": self.pool,
        }


# pooling over time of the last recurrent layer's outputs (``last`` needs none)
POOLING = {
    "mean": lambda: keras.layers.GlobalAveragePooling1D(name="mean_pool"),
    "max": lambda: MaskedMaxPooling1D(name="max_pool"),
    # float32 under mixed precision: a softmax over hundreds of steps in bfloat16 is coarse
    "attention": lambda: MaskedAttentionPooling1D(name="attention_pool", dtype="float32"),
}

ACTIVATIONS = ("tanh", "sigmoid", "relu", "hard_sigmoid", "linear", "elu", "softsign")


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` config section for the speech classifier.

    Attributes:
        cell: recurrent cell, one of ``models.classifier.CELLS`` (lstm, gru, simple_rnn).
        layers: number of stacked recurrent layers.
        units: units per recurrent layer (per direction if bidirectional).
        bidirectional: wrap each recurrent layer in ``keras.layers.Bidirectional``.
        dropout: dropout on the inputs of each recurrent layer and before the output layer.
        recurrent_dropout: dropout on the recurrent state (disables the fused cuDNN kernel).
        activation: the cell's output activation (tanh by default; relu shows explosions).
        recurrent_activation: the gate activation of LSTM/GRU (sigmoid by default).
        pooling: ``last`` uses the final state; ``mean`` averages all (unmasked) outputs; ``max``
            takes each unit's largest (unmasked) output: the moment the evidence peaked;
            ``attention`` averages them with learned weights (``MaskedAttentionPooling1D``).
        dense_units: size of a hidden dense layer before the output, 0 for none.
        spec_augment: time and feature masks applied during training (SpecAugment style).
        time_masks: number of time masks; time_width: maximum frames per mask.
        freq_masks: number of feature masks; freq_width: maximum coefficients per mask.
        label_smoothing: weight moved from the true class to a uniform target (0 = off).
        mixup_alpha: train on mixup blends of pairs of clips and their labels, the blend
            weights drawn from Beta(alpha, alpha) (``data.datasets.mixup``; 0 = off).
        freq_filters: channels of each convolution along frequency in front of the recurrent
            layers (``FrequencyConv``; empty = none).
        freq_kernel: the width of those kernels, in bands of their input.
        freq_pool: max-pool factor along frequency after each of them.
    """

    cell: str = "lstm"
    layers: int = 2
    units: int = 128
    bidirectional: bool = False
    dropout: float = 0.1
    recurrent_dropout: float = 0.0
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    pooling: Literal["last", "mean", "max", "attention"] = "last"
    dense_units: int = 0
    spec_augment: bool = False
    time_masks: int = 2
    time_width: int = 8
    freq_masks: int = 2
    freq_width: int = 2
    label_smoothing: float = field(default=0.0, metadata=OMIT_IF_DEFAULT)
    mixup_alpha: float = field(default=0.0, metadata=OMIT_IF_DEFAULT)
    freq_filters: tuple[int, ...] = field(default=(), metadata=OMIT_IF_DEFAULT)
    freq_kernel: int = field(default=5, metadata=OMIT_IF_DEFAULT)
    freq_pool: int = field(default=2, metadata=OMIT_IF_DEFAULT)

    def __post_init__(self) -> None:
        check(self.cell in CELLS, "model.cell", self.cell, f"one of {CELLS.names()}")
        check(self.layers >= 1, "model.layers", self.layers, ">= 1")
        check(self.units >= 1, "model.units", self.units, ">= 1")
        check(0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        check(
            0 <= self.recurrent_dropout < 1,
            "model.recurrent_dropout",
            self.recurrent_dropout,
            "in [0, 1)",
        )
        for key in ("activation", "recurrent_activation"):
            value = getattr(self, key)
            check(value in ACTIVATIONS, f"model.{key}", value, f"one of {list(ACTIVATIONS)}")
        check(self.dense_units >= 0, "model.dense_units", self.dense_units, ">= 0")
        for key in ("time_masks", "time_width", "freq_masks", "freq_width"):
            check(getattr(self, key) >= 0, f"model.{key}", getattr(self, key), ">= 0")
        check(
            0 <= self.label_smoothing < 1,
            "model.label_smoothing",
            self.label_smoothing,
            "in [0, 1) (0 = off)",
        )
        check(self.mixup_alpha >= 0, "model.mixup_alpha", self.mixup_alpha, ">= 0 (0 = off)")
        check(
            all(f >= 1 for f in self.freq_filters),
            "model.freq_filters",
            list(self.freq_filters),
            "channel counts >= 1 (an empty list for no frequency convolution)",
        )
        check(self.freq_kernel >= 1, "model.freq_kernel", self.freq_kernel, ">= 1")
        check(self.freq_pool >= 1, "model.freq_pool", self.freq_pool, ">= 1")

    @property
    def soft_targets(self) -> bool:
        """Whether training uses one-hot (smoothed or mixed) targets and a categorical loss."""
        return self.label_smoothing > 0 or self.mixup_alpha > 0


def build_classifier(
    config: ModelConfig,
    n_classes: int,
    n_mfcc: int,
    deltas: int = 0,
    utterance_mean: bool = False,
    utterance_var: bool = False,
    running_mean: bool = False,
    running_var: bool = False,
    causal: bool = False,
    window_frames: int = 0,
    prior_frames: int = 0,
    n_mels: int = 0,
    use_cudnn: bool | str = "auto",
    seed: int | None = None,
) -> keras.Model:
    """Builds the classifier on raw MFCC frames ``[batch, frames, n_mfcc]``; zero rows are padding.

    Args:
        config: the model section.
        n_classes: size of the softmax output.
        n_mfcc: coefficients per frame.
        deltas: delta orders added in-model (see ``FeatureNormalization``).
        utterance_mean: subtract each clip's mean before standardization.
        utterance_var: also divide by each clip's standard deviation (per coefficient).
        running_mean: subtract the mean of the frames so far (causal; see ``FeatureNormalization``).
        running_var: also divide by the standard deviation of the frames so far.
        causal: deltas from past frames only (a streaming front end).
        window_frames: frames in one window (the running mean's horizon in a stream).
        prior_frames: the running mean starts from the training data's mean, worth this many
            frames (0: from the clip's first frame).
        n_mels: mel bands behind the coefficients (needed by ``config.freq_filters``).
        use_cudnn: passed to LSTM/GRU; ``False`` builds the portable kernel used for export.
        seed: seed of the SpecAugment masks.

    Returns:
        An uncompiled ``keras.Model`` with one softmax output. Its ``FeatureNormalization`` layer
        (named ``normalization``) must be adapted on training data before training.
    """
    inputs = keras.Input(shape=(None, n_mfcc), name="mfcc")
    x = keras.layers.Masking(mask_value=0.0, name="padding_mask")(inputs)
    x = FeatureNormalization(
        n_mfcc,
        deltas=deltas,
        utterance_mean=utterance_mean,
        utterance_var=utterance_var,
        running_mean=running_mean,
        running_var=running_var,
        causal=causal,
        window_frames=window_frames,
        prior_frames=prior_frames,
        name="normalization",
        dtype="float32",  # statistics over time stay float32 under a mixed precision policy
    )(x)
    if config.spec_augment:
        x = SpecAugment(
            config.time_masks,
            config.time_width,
            config.freq_masks,
            config.freq_width,
            seed=seed,
            name="spec_augment",
        )(x)
    if config.freq_filters:
        check(
            n_mels >= n_mfcc,
            "features.n_mels",
            n_mels,
            f">= features.n_mfcc ({n_mfcc}) for model.freq_filters",
        )
        x = FrequencyConv(
            n_mfcc,
            n_mels,
            streams=1 + deltas,
            filters=config.freq_filters,
            kernel=config.freq_kernel,
            pool=config.freq_pool,
            name="frequency_conv",
        )(x)
    make_cell = CELLS.get(config.cell)
    for index in range(config.layers):
        last = index == config.layers - 1
        layer = make_cell(
            config.units,
            config.activation,
            config.recurrent_activation,
            return_sequences=not last or config.pooling != "last",
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            use_cudnn=use_cudnn,
            name=f"{config.cell}_{index}",
        )
        if config.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bi_{config.cell}_{index}")
        x = layer(x)
    if config.pooling in POOLING:
        x = POOLING[config.pooling]()(x)
    if config.dense_units:
        x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="output_dropout")(x)
    # float32 whatever the precision policy: a softmax in bfloat16 loses the small probabilities
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", name="probabilities", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=f"{config.cell}_classifier")


def recurrent_layer_names(model: keras.Model) -> list[str]:
    """Names of the model's recurrent layers, input side first."""
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)
    ]
