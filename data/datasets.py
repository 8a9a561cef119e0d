"""``tf.data`` pipelines over variable-length feature sequences."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.feature_store import FeatureSet


def sequence_dataset(
    features: FeatureSet,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_by_length: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(mfcc [b, frames, n_mfcc] zero-padded, label [b])``.

    Args:
        features: the sequences and their labels.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (training).
        seed: shuffle seed.
        bucket_by_length: group sequences of similar length to cut padding; batch sizes then
            vary a little at bucket edges.
    """
    ragged = tf.RaggedTensor.from_row_lengths(features.frames, features.lengths.astype(np.int64))
    ds = tf.data.Dataset.from_tensor_slices((ragged, features.labels.astype(np.int32)))
    ds = ds.map(lambda x, y: (x, y))  # ragged rows arrive as dense [frames, n_mfcc] tensors
    if shuffle:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    if bucket_by_length and len(features) > batch_size * 4:
        edges = np.unique(np.quantile(features.lengths, [0.25, 0.5, 0.75]).astype(int) + 1)
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.shape(x)[0],
            bucket_boundaries=edges.tolist(),
            bucket_batch_sizes=[batch_size] * (len(edges) + 1),
        )
    else:
        ds = ds.padded_batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def soft_targets(ds: tf.data.Dataset, n_classes: int) -> tf.data.Dataset:
    """Batches ``(x, label [b])`` -> ``(x, one-hot [b, n_classes])``, for a categorical loss."""
    return ds.map(
        lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), n_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def mixup(ds: tf.data.Dataset, n_classes: int, alpha: float, seed: int = 0) -> tf.data.Dataset:
    """Mixup (Zhang et al., 2018) within each batch: pairs of examples and their labels blended.

    Example i is blended with example ``b - 1 - i`` of the same batch by a weight drawn from
    Beta(alpha, alpha) and folded to at least 0.5, so each mixture keeps its own clip dominant:
    ``x = w x_i + (1 - w) x_j``, ``y = w y_i + (1 - w) y_j`` (one-hot labels). The dominant clip
    keeps its own length: where it is padding (zero rows) the mixture is too, and where only the
    partner is padding its frames stay as they are (raw MFCC are logarithms: scaling a frame
    towards zero would not make it quieter, it would make a different frame). The draws are
    stateless, keyed by a random number per batch from ``seed``: repeatable run to run, new every
    epoch.

    Args:
        ds: batches ``(x [b, frames, size], label [b])``.
        n_classes: number of classes.
        alpha: the Beta distribution's parameter (> 0; 0.1-0.4 is usual: most weights near 1).
        seed: the run's seed.

    Returns:
        Batches ``(mixed x, mixed one-hot [b, n_classes])``.
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0; received {alpha!r}")

    def blend(draw: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        targets = tf.one_hot(tf.cast(y, tf.int32), n_classes)
        key = tf.stack([draw, tf.constant(0, tf.int64)])
        batch = tf.shape(x)[:1]
        # Beta(a, a) as G1 / (G1 + G2) with G ~ Gamma(a)
        g1 = tf.random.stateless_gamma(batch, key, alpha)
        g2 = tf.random.stateless_gamma(batch, key + [0, 1], alpha)
        w = g1 / tf.maximum(g1 + g2, 1e-12)
        w = tf.maximum(w, 1.0 - w)
        partner = tf.reverse(x, [0])
        real = tf.reduce_any(tf.not_equal(x, 0.0), axis=-1, keepdims=True)
        both = real & tf.reduce_any(tf.not_equal(partner, 0.0), axis=-1, keepdims=True)
        blended = w[:, None, None] * x + (1.0 - w[:, None, None]) * partner
        mixed_x = tf.where(both, blended, tf.where(real, x, tf.zeros_like(x)))
        mixed_y = w[:, None] * targets + (1.0 - w[:, None]) * tf.reverse(targets, [0])
        return mixed_x, mixed_y

    # one random key per batch: the same sequence every run, a new one every epoch; zipping
    # keeps the batches' count (a finite ``ds`` ends the infinite key stream)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(draws, ds).map(
        lambda draw, batch: blend(draw, *batch), num_parallel_calls=tf.data.AUTOTUNE
    )
