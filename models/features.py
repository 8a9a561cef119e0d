"""Keras layers for audio features: in-graph MFCC, normalization with deltas, SpecAugment.

``MfccLayer`` reproduces ``data.audio.mfcc`` (librosa) inside the TensorFlow graph so an exported
model can take raw waveforms. ``FeatureNormalization`` turns raw MFCC frames into model inputs the
same way in training and serving (utterance mean removal, deltas, standardization).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from data.audio import FeatureConfig, feature_shape

QUANTIZE_MIN_ELEMENTS = 1024  # TFLite's default: smaller constant weights stay float


def librosa_constants(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The analysis window (padded to ``n_fft``), the mel filter bank and the DCT-II matrix.

    The orthonormal DCT is a ``[n_mels, n_mfcc]`` matmul, which TFLite runs as a builtin.
    """
    import librosa
    import scipy.fft

    shape = feature_shape(config)
    window = librosa.filters.get_window("hann", shape.win_length, fftbins=True)
    window = librosa.util.pad_center(window, size=shape.n_fft)
    mel = librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=shape.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=shape.fmax,
    )
    dct = scipy.fft.dct(np.eye(config.n_mels), type=2, norm="ortho", axis=1)[:, : config.n_mfcc]
    return window.astype(np.float32), mel.T.astype(np.float32), dct.astype(np.float32)


def float_blocks(matrix: np.ndarray) -> list[list[tf.Tensor]]:
    """``matrix`` cut into blocks of fewer than ``QUANTIZE_MIN_ELEMENTS`` numbers.

    Returns a list of column groups, each a list of row blocks; ``blocks_matmul`` multiplies by
    them as by the whole matrix. A matrix of few rows is cut into column groups only.
    """
    rows = min(matrix.shape[0], QUANTIZE_MIN_ELEMENTS - 1)
    columns = max(1, (QUANTIZE_MIN_ELEMENTS - 1) // rows)
    return [
        [
            tf.constant(matrix[r : r + rows, c : c + columns])
            for r in range(0, matrix.shape[0], rows)
        ]
        for c in range(0, matrix.shape[1], columns)
    ]


def blocks_matmul(x: tf.Tensor, blocks: list[list[tf.Tensor]]) -> tf.Tensor:
    """``x @ matrix`` over the last axis, from ``float_blocks(matrix)``."""
    out = []
    for group in blocks:
        if len(group) == 1:  # the presets' matrices: one slice-free product per column group
            out.append(tf.tensordot(x, group[0], axes=1))
            continue
        start, parts = 0, []
        for block in group:
            rows = block.shape[0]
            parts.append(tf.tensordot(x[..., start : start + rows], block, axes=1))
            start += rows
        out.append(tf.add_n(parts))
    return out[0] if len(out) == 1 else tf.concat(out, -1)


@keras.saving.register_keras_serializable("rnn_speech")
class MfccLayer(keras.layers.Layer):
    """Waveforms ``[batch, samples]`` -> MFCC ``[batch, frames, n_mfcc]``, matching librosa.

    Matches ``librosa.feature.mfcc`` with ``center=True`` (constant padding), a periodic Hann
    window, power 2, Slaney mel filters, ``power_to_db(ref=1, amin=1e-10, top_db)`` per clip and
    an orthonormal DCT-II. Input longer than ``clip_seconds`` is trimmed. With
    ``features.streaming`` the frames are causal (left padding only, no ``top_db`` floor), as
    ``data.audio.mfcc`` computes them, and ``frame_mfcc`` computes one frame of a stream.
    """

    def __init__(self, feature_config: dict | FeatureConfig, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        if isinstance(feature_config, dict):
            feature_config = FeatureConfig(**feature_config)
        self.feature_config = feature_config
        self.shape_info = feature_shape(feature_config)
        window, mel, dct = librosa_constants(feature_config)
        self._window = tf.constant(window)
        # The mel filter bank and the DCT in blocks of under 1,024 numbers: TFLite's
        # dynamic-range quantization only quantizes weights from that size up, so the front end
        # stays float (quantized, its MFCC error is large enough to change answers).
        self._mel_blocks = float_blocks(mel)
        self._dct_blocks = float_blocks(dct)

    def _log_mel(self, frames: tf.Tensor) -> tf.Tensor:
        """Frames ``[..., n_fft]`` of samples -> log-mel power in dB ``[..., n_mels]``."""
        spectrum = tf.signal.rfft(frames * self._window, fft_length=[self.shape_info.n_fft])
        power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
        mel = blocks_matmul(power, self._mel_blocks)
        log_mel = 10.0 * tf.math.log(tf.maximum(mel, 1e-10)) / tf.math.log(10.0)
        if self.feature_config.streaming:  # an absolute floor: the clip's peak is unknown
            log_mel = tf.maximum(log_mel, self.feature_config.floor_db)
        return log_mel

    def frame_mfcc(self, frame: tf.Tensor) -> tf.Tensor:
        """One streaming frame: the newest ``n_fft`` samples ``[batch, n_fft]`` -> ``[batch, n_mfcc]``."""
        return blocks_matmul(self._log_mel(frame), self._dct_blocks)

    def call(self, waveform: tf.Tensor) -> tf.Tensor:
        s = self.shape_info
        waveform = tf.convert_to_tensor(waveform, tf.float32)[:, : s.clip_samples]
        if self.feature_config.window == "full":  # as data.audio.fit_length: fill the window
            short = tf.maximum(0, s.clip_samples - tf.shape(waveform)[1])
            waveform = tf.pad(waveform, [[0, 0], [0, short]])
        if self.feature_config.streaming:  # under one hop: padded to one frame, not none
            short = tf.maximum(0, s.hop_length - tf.shape(waveform)[1])
            padded = tf.pad(waveform, [[0, 0], [s.n_fft - s.hop_length, short]])
        else:
            padded = tf.pad(waveform, [[0, 0], [s.n_fft // 2, s.n_fft // 2]])
        frames = tf.signal.frame(padded, s.n_fft, s.hop_length)  # [b, t, n_fft]
        log_mel = self._log_mel(frames)
        if not self.feature_config.streaming:
            peak = tf.reduce_max(log_mel, axis=[1, 2], keepdims=True)
            log_mel = tf.maximum(log_mel, peak - self.feature_config.top_db)
        return blocks_matmul(log_mel, self._dct_blocks)

    def get_config(self) -> dict:
        import dataclasses

        return {**super().get_config(), "feature_config": dataclasses.asdict(self.feature_config)}


def _masked_mean(x: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    if mask is None:
        return tf.reduce_mean(x, axis=1, keepdims=True)
    weights = tf.cast(mask, x.dtype)[..., None]
    total = tf.reduce_sum(x * weights, axis=1, keepdims=True)
    return total / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)


DELTA_WIDTH = 2  # frames each side of the HTK regression


def _delta_weights(window: tf.Tensor, width: int, center: int) -> tf.Tensor:
    """HTK regression delta at ``window[:, center + k]`` (k = 0, 1, ...) over +-``width`` frames."""
    steps = tf.shape(window)[1] - 2 * width
    total = 0.0
    for n in range(1, width + 1):
        total += n * (
            window[:, center + n : center + n + steps] - window[:, center - n : center - n + steps]
        )
    return total / (2.0 * sum(n * n for n in range(1, width + 1)))


def _deltas(x: tf.Tensor, width: int = DELTA_WIDTH, causal: bool = False) -> tf.Tensor:
    """Regression deltas over +-``width`` frames with edge replication (HTK formula).

    ``causal``: frame t gets the delta of frame t - width, from past frames only (the first frame
    replicated before the start), so a stream computes it as soon as frame t arrives.
    """
    first = tf.repeat(x[:, :1], width, axis=1)
    if causal:
        return _delta_weights(tf.concat([first, first, x], axis=1), width, width)
    last = tf.repeat(x[:, -1:], width, axis=1)
    return _delta_weights(tf.concat([first, x, last], axis=1), width, width)


def running_mean(
    x: tf.Tensor,
    mean: tf.Tensor,
    count: tf.Tensor,
    horizon: int,
    prior: tf.Tensor | None = None,
    prior_frames: int = 0,
) -> tf.Tensor:
    """The mean of a stream's frames so far, at each of its newest frames.

    Frame n (0-based, ``count`` frames came before ``x``) moves the mean by ``1 / min(n + 1 +
    prior_frames, horizon + prior_frames)`` of its distance: the exact mean for the first
    ``horizon`` frames, an exponential average over about ``horizon`` frames after that. Without
    a prior a stream starts at its first frame; with one (``prior``, worth ``prior_frames``
    frames) it starts there, so the first frames of a stream are not measured against themselves.

    Args:
        x: the newest frames ``[batch, k, size]``.
        mean: the mean before them ``[batch, size]`` (ignored when ``count`` is 0).
        count: frames before ``x``, float ``[batch, 1]``.
        horizon: frames of the window.
        prior: ``[size]``, the mean a stream starts from (with ``prior_frames`` > 0).
        prior_frames: how many frames the prior counts for.

    Returns:
        ``[batch, k, size]``: the mean after each frame.
    """
    index = count + tf.cast(tf.range(tf.shape(x)[1]), tf.float32)[None, :]  # [batch, k]
    extra = float(prior_frames)
    rate = 1.0 / tf.minimum(index + 1.0 + extra, float(max(horizon, 2)) + extra)
    fresh = tf.equal(count, 0.0)  # [batch, 1]: a stream starts in this block
    if prior_frames:
        mean = tf.where(fresh, tf.broadcast_to(prior, tf.shape(mean)), mean)
    if x.shape[1] == 1:  # one frame (static): no scan loop, which TFLite int8 cannot calibrate
        step = (mean + (x[:, 0] - mean) * rate)[:, None]
        return step if prior_frames else tf.where(fresh[..., None], x, step)

    # m_n = (1 - r_n) m_(n-1) + r_n x_n, solved for all n at once (no per-frame loop): with
    # P_n = prod (1 - r_j), m_n = P_n (m_start + sum_(j<=n) r_j x_j / P_j). In float64, as
    # P_n shrinks geometrically past the horizon (keep blocks to a few thousand frames).
    rate64 = tf.cast(rate, tf.float64)[..., None]  # [batch, k, 1]
    start = mean
    if not prior_frames:  # a stream that starts here begins at its first frame: m_0 = x_0
        starts = tf.equal(index, 0.0)[..., None]  # only ever frame 0 of a block
        rate64 = tf.where(starts, tf.zeros_like(rate64), rate64)
        start = tf.where(fresh, x[:, 0], mean)
    product = tf.math.cumprod(1.0 - rate64, axis=1)  # >= (1 - 1/2)^k: no division by zero
    weighted = tf.math.cumsum(rate64 * tf.cast(x, tf.float64) / product, axis=1)
    return tf.cast(product * (tf.cast(start, tf.float64)[:, None] + weighted), tf.float32)


RUNNING_VAR_FLOOR = 1e-2  # raw MFCC variance floor: a stretch of digital silence has none


def _running_std(mean: tf.Tensor, mean_square: tf.Tensor) -> tf.Tensor:
    """The standard deviation from running means of ``x`` and ``x**2``, floored.

    Both are of ``x`` less the prior (the training data's mean): the same variance, without
    the cancellation of squares in the hundreds of thousands (the energy coefficient's).
    """
    return tf.sqrt(tf.maximum(mean_square - mean * mean, RUNNING_VAR_FLOOR))


@keras.saving.register_keras_serializable("rnn_speech")
class FeatureNormalization(keras.layers.Layer):
    """Raw MFCC -> model features: optional utterance mean (and variance) removal, deltas, standardization.

    The mean and variance are non-trainable weights set by ``adapt`` from training data, so they
    travel with the model into the export. Padded frames (masked) stay zero.

    ``running_mean`` subtracts the mean of the frames so far (``running_var`` also divides by their
    standard deviation), and ``causal`` makes the deltas use past frames only: with both (or
    neither mean removal), ``stream_step`` computes the same features one frame at a time. A
    stream longer than ``window_frames`` keeps an exponential average over that many frames (the
    window a non-streaming call sees never exceeds it).
    """

    def __init__(
        self,
        n_mfcc: int,
        deltas: int = 0,
        utterance_mean: bool = False,
        utterance_var: bool = False,
        running_mean: bool = False,
        causal: bool = False,
        window_frames: int = 0,
        prior_frames: int = 0,
        running_var: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if running_var and not running_mean:
            raise ValueError("FeatureNormalization: running_var needs running_mean")
        self.supports_masking = True
        self.n_mfcc = n_mfcc
        self.deltas = deltas
        self.utterance_mean = utterance_mean
        self.utterance_var = utterance_var
        self.running_mean = running_mean
        self.running_var = running_var
        self.causal = causal
        self.window_frames = window_frames
        self.prior_frames = prior_frames if running_mean else 0
        size = n_mfcc * (1 + deltas)
        self.mean = self.add_weight(
            shape=(size,), initializer="zeros", trainable=False, name="mean"
        )
        self.variance = self.add_weight(
            shape=(size,), initializer="ones", trainable=False, name="variance"
        )
        if self.prior_frames:  # the raw training-set mean a running mean starts from
            self.prior = self.add_weight(
                shape=(n_mfcc,), initializer="zeros", trainable=False, name="prior"
            )
            if running_var:  # and the training frames' variance, which a running one starts from
                self.prior_sq = self.add_weight(
                    shape=(n_mfcc,), initializer="zeros", trainable=False, name="prior_sq"
                )

    def transform(self, x: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
        """Mean removal and deltas, before standardization."""
        x = tf.convert_to_tensor(x, tf.float32)
        if self.running_mean:  # padding comes after a clip's frames, so it never enters a sum
            count = tf.cast(tf.range(1, tf.shape(x)[1] + 1), x.dtype)[None, :, None]
            total = tf.cumsum(x, axis=1)
            if self.prior_frames:
                total += self.prior_frames * self.prior
            mean = total / (count + self.prior_frames)
            if self.running_var:
                shift = self.prior if self.prior_frames else 0.0
                squares = tf.cumsum((x - shift) ** 2, axis=1)
                if self.prior_frames:
                    squares += self.prior_frames * self.prior_sq
                spread = _running_std(mean - shift, squares / (count + self.prior_frames))
                x = (x - mean) / spread
            else:
                x = x - mean
        elif self.utterance_mean or self.utterance_var:
            x = x - _masked_mean(x, mask)
        if self.utterance_var:
            x = x / tf.sqrt(_masked_mean(x**2, mask) + 1e-6)
        if self.deltas and mask is not None and not self.causal:
            # Repeat each clip's last real frame over its padding, so deltas at the end of a clip
            # see edge replication (as for an unpadded clip) rather than the zeros of padding.
            last = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1, 0)
            last_frame = tf.gather(x, last, axis=1, batch_dims=1)[:, None]
            x = tf.where(mask[..., None], x, last_frame)
        feats = [x]
        for _ in range(self.deltas):
            feats.append(_deltas(feats[-1], causal=self.causal))
        return tf.concat(feats, axis=-1)

    def stream_state(self) -> dict[str, tuple[int, ...]]:
        """Shapes (without batch) of the state ``stream_step`` carries; all start at zero."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.running_mean:
            shapes["cmn"] = (self.n_mfcc,)
        if self.running_var:
            shapes["cmn_sq"] = (self.n_mfcc,)
        for order in range(1, self.deltas + 1):
            shapes[f"delta_{order}"] = (2 * DELTA_WIDTH, self.n_mfcc)
        return shapes

    def _running(
        self, x: tf.Tensor, start: tf.Tensor, count: tf.Tensor, prior: tf.Tensor | None
    ) -> tf.Tensor:
        """``running_mean`` over this layer's window, from ``prior`` when it has one."""
        return running_mean(x, start, count, self.window_frames, prior, self.prior_frames)

    def stream_step(
        self, x: tf.Tensor, count: tf.Tensor, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The next frames of a stream: raw MFCC ``[batch, k, n_mfcc]`` -> features, new state.

        Args:
            x: the newest ``k`` frames' raw MFCC.
            count: frames before them, float ``[batch, 1]`` (0 starts a stream).
            state: as ``stream_state`` names it.
        """
        if not self.causal or self.utterance_mean or self.utterance_var:
            raise ValueError(
                "FeatureNormalization.stream_step needs causal deltas and no utterance statistics"
            )
        first = tf.equal(count, 0.0)[:, :, None]  # [batch, 1, 1]
        new: dict[str, tf.Tensor] = {}
        if self.running_mean:
            prior_mean = self.prior if self.prior_frames else None
            means = self._running(x, state["cmn"], count, prior_mean)
            new["cmn"] = means[:, -1]
            if self.running_var:
                shift = self.prior if self.prior_frames else 0.0
                prior_var = self.prior_sq if self.prior_frames else None
                squares = self._running((x - shift) ** 2, state["cmn_sq"], count, prior_var)
                new["cmn_sq"] = squares[:, -1]
                x = (x - means) / _running_std(means - shift, squares)
            else:
                x = x - means
        feats, current = [x], x
        for order in range(1, self.deltas + 1):
            key = f"delta_{order}"
            start = tf.repeat(current[:, :1], 2 * DELTA_WIDTH, axis=1)
            window = tf.concat([tf.where(first, start, state[key]), current], axis=1)
            new[key] = window[:, -2 * DELTA_WIDTH :]
            current = _delta_weights(window, DELTA_WIDTH, DELTA_WIDTH)
            feats.append(current)
        return (tf.concat(feats, axis=-1) - self.mean) / tf.sqrt(self.variance), new

    def adapt(self, batches) -> None:  # noqa: ANN001 - any iterable of (features, ...) batches
        """Sets mean and variance from batches of raw MFCC (zero rows are padding).

        With a running-mean prior, a first pass sets it (the mean of the raw frames, and with
        ``running_var`` their variance).
        """
        if self.prior_frames:
            total = squares = count = 0.0
            for batch in batches:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                weights = tf.cast(tf.reduce_any(tf.not_equal(x, 0.0), axis=-1), tf.float32)
                total += tf.reduce_sum(x * weights[..., None], axis=[0, 1]).numpy()
                if self.running_var:
                    square = tf.reduce_sum(x * x * weights[..., None], axis=[0, 1])
                    squares += square.numpy().astype(np.float64)
                count += float(tf.reduce_sum(weights))
            mean = total / max(count, 1.0)
            self.prior.assign(mean.astype(np.float32))
            if self.running_var:  # E[x^2] - E[x]^2 of the training set, the squares in float64
                variance = squares / max(count, 1.0) - np.asarray(mean, np.float64) ** 2
                self.prior_sq.assign(np.maximum(variance, RUNNING_VAR_FLOOR).astype(np.float32))
        total = count = squares = 0.0
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            mask = tf.reduce_any(tf.not_equal(x, 0.0), axis=-1)
            feats = self.transform(x, mask)
            weights = tf.cast(mask, tf.float32)[..., None]
            total += tf.reduce_sum(feats * weights, axis=[0, 1]).numpy().astype(np.float64)
            squares += tf.reduce_sum(feats**2 * weights, axis=[0, 1]).numpy().astype(np.float64)
            count += float(tf.reduce_sum(weights))
        if count == 0:
            raise ValueError("FeatureNormalization.adapt received no non-padding frames")
        mean = total / count
        self.mean.assign(mean.astype(np.float32))
        self.variance.assign(np.maximum(squares / count - mean**2, 1e-8).astype(np.float32))

    def call(self, x: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
        feats = (self.transform(x, mask) - self.mean) / tf.sqrt(self.variance)
        if mask is not None:
            feats = feats * tf.cast(mask, feats.dtype)[..., None]
        return feats

    def compute_output_shape(self, input_shape):  # noqa: ANN001, ANN201 - Keras signature
        return (*input_shape[:-1], self.n_mfcc * (1 + self.deltas))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_mfcc": self.n_mfcc,
            "deltas": self.deltas,
            "utterance_mean": self.utterance_mean,
            "utterance_var": self.utterance_var,
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "causal": self.causal,
            "window_frames": self.window_frames,
            "prior_frames": self.prior_frames,
        }


@keras.saving.register_keras_serializable("rnn_speech")
class SpecAugment(keras.layers.Layer):
    """SpecAugment-style masking (training only): zero random time spans and feature bands."""

    def __init__(
        self,
        time_masks: int = 2,
        time_width: int = 10,
        freq_masks: int = 2,
        freq_width: int = 3,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _spans(self, batch: tf.Tensor, size: tf.Tensor, count: int, width: int) -> tf.Tensor:
        """A boolean ``[batch, size]`` that is True inside ``count`` random spans."""
        keep = tf.zeros([batch, size], tf.bool)
        positions = tf.range(size)[None, :]
        for _ in range(count):
            u = keras.random.uniform([batch, 2], seed=self.seed_generator)
            w = tf.cast(tf.floor(u[:, :1] * (width + 1)), tf.int32)
            room = tf.cast(tf.maximum(size - w + 1, 1), tf.float32)
            start = tf.cast(tf.floor(u[:, 1:] * room), tf.int32)
            keep |= (positions >= start) & (positions < start + w)
        return keep

    def call(
        self, x: tf.Tensor, training: bool = False, mask: tf.Tensor | None = None
    ) -> tf.Tensor:
        if not training or (self.time_masks == 0 and self.freq_masks == 0):
            return x
        shape = tf.shape(x)
        time = self._spans(shape[0], shape[1], self.time_masks, self.time_width)
        freq = self._spans(shape[0], shape[2], self.freq_masks, self.freq_width)
        drop = time[:, :, None] | freq[:, None, :]
        return tf.where(drop, tf.zeros_like(x), x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "freq_masks": self.freq_masks,
            "freq_width": self.freq_width,
            "seed": self.seed,
        }
