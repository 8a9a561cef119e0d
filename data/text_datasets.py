"""Token-id storage and ``tf.data`` pipelines for sentence pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from data.text import END_ID, START_ID


@dataclass
class PairIds:
    """Token ids of one split: flat arrays plus per-sentence lengths (no start/end tokens)."""

    source: np.ndarray
    source_lengths: np.ndarray
    target: np.ndarray
    target_lengths: np.ndarray

    @classmethod
    def from_lists(cls, source: list[list[int]], target: list[list[int]]) -> PairIds:
        def flat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
            lengths = np.array([len(r) for r in rows], np.int64)
            values = np.fromiter((t for r in rows for t in r), np.int32, int(lengths.sum()))
            return values, lengths

        return cls(*flat(source), *flat(target))

    def __len__(self) -> int:
        return len(self.source_lengths)

    def save(self, path: Path) -> None:
        np.savez(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> PairIds:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def sources(self) -> list[np.ndarray]:
        """Each sentence's source ids."""
        return np.split(self.source, np.cumsum(self.source_lengths)[:-1])


def pair_dataset(
    ids: PairIds,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_by_length: bool = True,
) -> tf.data.Dataset:
    """Teacher-forcing batches ``((source, [START] + target), target + [END])``, zero-padded.

    With ``bucket_by_length`` pairs of similar source length are batched together, so little
    time goes into padding.
    """
    source = tf.RaggedTensor.from_row_lengths(ids.source, ids.source_lengths)
    target = tf.RaggedTensor.from_row_lengths(ids.target, ids.target_lengths)
    ds = tf.data.Dataset.from_tensor_slices((source, target))

    def teacher_forcing(src, tgt):  # noqa: ANN001, ANN202
        tgt_in = tf.concat([[START_ID], tgt], 0)
        tgt_out = tf.concat([tgt, [END_ID]], 0)
        return (src, tgt_in), tgt_out

    ds = ds.map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(min(len(ids), 200_000), seed=seed, reshuffle_each_iteration=True)
    lengths = np.maximum(ids.source_lengths, ids.target_lengths + 1)
    if bucket_by_length and len(ids) > batch_size * 8:
        edges = np.unique(np.quantile(lengths, np.linspace(0.1, 0.9, 9)).astype(int) + 1)
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.maximum(tf.shape(x[0])[0], tf.shape(y)[0]),
            bucket_boundaries=edges.tolist(),
            bucket_batch_sizes=[batch_size] * (len(edges) + 1),
        )
    else:
        ds = ds.padded_batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
