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
    ``x = w x_i + (1 - w) x_j``, ``y = w y_i + (1 - w) y_j`` (one-hot labels). The draws are
    stateless, keyed by ``seed`` and the batch's index, so a run is repeatable. Padded frames
    (zero rows) of the shorter clip take the longer clip's frames, scaled.

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

    def blend(index: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        targets = tf.one_hot(tf.cast(y, tf.int32), n_classes)
        key = tf.stack([tf.cast(seed, tf.int64), index])
        batch = tf.shape(x)[:1]
        # Beta(a, a) as G1 / (G1 + G2) with G ~ Gamma(a)
        g1 = tf.random.stateless_gamma(batch, key, alpha)
        g2 = tf.random.stateless_gamma(batch, key + [0, 1 << 40], alpha)
        w = g1 / tf.maximum(g1 + g2, 1e-12)
        w = tf.maximum(w, 1.0 - w)
        mixed_x = w[:, None, None] * x + (1.0 - w[:, None, None]) * tf.reverse(x, [0])
        mixed_y = w[:, None] * targets + (1.0 - w[:, None]) * tf.reverse(targets, [0])
        return mixed_x, mixed_y

    return ds.enumerate().map(
        lambda i, batch: blend(i, *batch), num_parallel_calls=tf.data.AUTOTUNE
    )
