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
