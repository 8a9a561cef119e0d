"""Token-id storage and ``tf.data`` pipelines for sentence pairs.

The tokenize stage writes each split as ``PairIds`` shards of at most ``SHARD_PAIRS`` pairs
(``SPLIT-00000.npz``, ...) plus ``SPLIT.shards.json`` (shard names, number of pairs, a histogram
of lengths), a batch of sentences at a time. ``split_dataset`` streams a sharded split through
``tf.data``; a split of one shard is read in memory as before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from data.files import read_shard_manifest, shard_files, write_shard_manifest
from data.text import END_ID, START_ID


@dataclass
class PairIds:
    """Token ids of one split: flat arrays plus per-sentence lengths (no start/end tokens)."""

    source: np.ndarray
    source_lengths: np.ndarray
    target: np.ndarray
    target_lengths: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[PairIds]) -> PairIds:
        """One ``PairIds`` of several, in order."""
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in _FIELDS))

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
            return cls(**{k: data[k] for k in _FIELDS})

    def rows(self) -> Any:
        """Each pair's ``(source ids, target ids)``, one at a time."""
        src_ends, tgt_ends = np.cumsum(self.source_lengths), np.cumsum(self.target_lengths)
        for i in range(len(self)):
            yield (
                self.source[src_ends[i] - self.source_lengths[i] : src_ends[i]],
                self.target[tgt_ends[i] - self.target_lengths[i] : tgt_ends[i]],
            )

    def sources(self) -> list[np.ndarray]:
        """Each sentence's source ids."""
        return np.split(self.source, np.cumsum(self.source_lengths)[:-1])


_FIELDS = ("source", "source_lengths", "target", "target_lengths")

# A pair of Tatoeba sentences is about 20 token ids (80 bytes): a shard is a few MB on disk and in
# memory, while a split the size of Tatoeba's training split is still a few shards.
SHARD_PAIRS = 65_536
# Pairs held by the training shuffle. A split up to this size is shuffled exactly as in memory
# (same order for the same seed, however it is sharded); a larger one is shuffled by shard order
# plus this buffer, so memory stops growing here.
SHUFFLE_PAIRS = 200_000


def bucket_length(source_length: int, target_length: int) -> int:
    """The length a pair is bucketed by: its longer side (the decoder also reads START)."""
    return max(source_length, target_length + 1)


class PairShardWriter:
    """Collects a split's token ids and writes a shard each time ``shard_pairs`` are held."""

    def __init__(self, out_dir: Path, split: str, shard_pairs: int | None = None) -> None:
        self.out_dir, self.split = out_dir, split
        self.size = shard_pairs or SHARD_PAIRS
        self.shards: list[str] = []
        self.pairs = 0
        self.lengths: Counter = Counter()  # bucket length -> pairs
        self._source: list[list[int]] = []
        self._target: list[list[int]] = []

    def add(self, source: list[list[int]], target: list[list[int]]) -> None:
        """Adds a batch of pairs (ids without START/END)."""
        for s, t in zip(source, target, strict=True):
            self._source.append(s)
            self._target.append(t)
            self.lengths[bucket_length(len(s), len(t))] += 1
            if len(self._source) >= self.size:
                self._flush()
        self.pairs += len(source)

    def _flush(self) -> None:
        if not self._source and self.shards:
            return
        name = f"{self.split}-{len(self.shards):05d}.npz"
        PairIds.from_lists(self._source, self._target).save(self.out_dir / name)
        self.shards.append(name)
        self._source, self._target = [], []

    def close(self) -> dict[str, Any]:
        """Writes the last shard and ``SPLIT.shards.json``; returns the manifest."""
        self._flush()
        manifest = {
            "shards": self.shards,
            "pairs": self.pairs,
            "length_counts": {str(k): v for k, v in sorted(self.lengths.items())},
        }
        write_shard_manifest(self.out_dir, self.split, manifest)
        return manifest


def load_split(folder: Path, split: str) -> PairIds:
    """The whole split in memory (evaluation, small data)."""
    return PairIds.concatenate([PairIds.load(p) for p in shard_files(folder, split)])


def quantiles_from_counts(counts: dict[int, int], qs: np.ndarray) -> np.ndarray:
    """``np.quantile`` (linear) of the values a histogram describes, without expanding it."""
    values = np.array(sorted(counts), np.float64)
    cum = np.cumsum([counts[int(v)] for v in values])
    positions = (cum[-1] - 1) * np.asarray(qs, np.float64)
    lower = np.floor(positions)
    below = values[np.searchsorted(cum, lower, side="right")]
    above = values[np.searchsorted(cum, np.minimum(lower + 1, cum[-1] - 1), side="right")]
    return below + (positions - lower) * (above - below)


def bucket_edges(counts: dict[int, int]) -> list[int]:
    """Length-bucket boundaries at the deciles of the pairs' bucket lengths."""
    quantiles = quantiles_from_counts(counts, np.linspace(0.1, 0.9, 9))
    return np.unique(quantiles.astype(int) + 1).tolist()


def split_dataset(
    folder: Path,
    split: str,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_by_length: bool = True,
    shuffle_pairs: int = SHUFFLE_PAIRS,
) -> tf.data.Dataset:
    """``pair_dataset`` batches of a split written by the tokenize stage, streamed from shards.

    One shard is read into memory (``pair_dataset``). Several are streamed a shard at a time: in
    file order when the split fits the shuffle buffer, which then makes the same order as one
    in-memory split with the same seed; in a shuffled shard order, two interleaved, when it
    does not. Memory is one shard per open file plus the shuffle buffer.
    """
    paths = shard_files(folder, split)
    manifest = read_shard_manifest(folder, split)
    if len(paths) == 1 or manifest is None:
        return pair_dataset(PairIds.load(paths[0]), batch_size, shuffle, seed, bucket_by_length)
    n = int(manifest["pairs"])
    big = n > shuffle_pairs

    def load(path: bytes) -> tuple[np.ndarray, ...]:
        ids = PairIds.load(Path(path.decode()))
        return tuple(getattr(ids, k) for k in _FIELDS)

    def read(path: tf.Tensor) -> tf.data.Dataset:
        # a whole shard per call: no Python runs per pair
        src, src_len, tgt, tgt_len = tf.numpy_function(
            load, [path], [tf.int32, tf.int64, tf.int32, tf.int64], stateful=False
        )
        rows = [
            tf.RaggedTensor.from_row_lengths(
                tf.ensure_shape(values, [None]), tf.ensure_shape(lengths, [None])
            )
            for values, lengths in ((src, src_len), (tgt, tgt_len))
        ]
        return tf.data.Dataset.from_tensor_slices(tuple(rows))

    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if shuffle and big:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if big:
        # not parallel: a parallel interleave opened more shards ahead as the split grew (measured)
        ds = files.interleave(read, cycle_length=2, block_length=1)
    else:  # file order: the order of the split in memory
        ds = files.flat_map(read)
    counts = {int(k): v for k, v in manifest["length_counts"].items()}
    return _batches(ds, n, batch_size, shuffle, seed, bucket_by_length, counts, shuffle_pairs)


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
    counts = Counter(
        np.maximum(ids.source_lengths, ids.target_lengths + 1).tolist()  # bucket_length
    )
    return _batches(ds, len(ids), batch_size, shuffle, seed, bucket_by_length, counts)


def _batches(
    ds: tf.data.Dataset,
    n: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    bucket_by_length: bool,
    length_counts: dict[int, int],
    shuffle_pairs: int = SHUFFLE_PAIRS,
) -> tf.data.Dataset:
    """Teacher forcing, shuffling and length-bucketed padded batches of ``(source, target)``."""

    def teacher_forcing(src, tgt):  # noqa: ANN001, ANN202
        tgt_in = tf.concat([[START_ID], tgt], 0)
        tgt_out = tf.concat([tgt, [END_ID]], 0)
        return (src, tgt_in), tgt_out

    if shuffle:  # before the map: the buffer holds 2 tensors a pair, not 3 (same order)
        ds = ds.shuffle(min(n, shuffle_pairs), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE)
    if bucket_by_length and n > batch_size * 8:
        edges = bucket_edges(length_counts)
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.maximum(tf.shape(x[0])[0], tf.shape(y)[0]),
            bucket_boundaries=edges,
            bucket_batch_sizes=[batch_size] * (len(edges) + 1),
        )
    else:
        ds = ds.padded_batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_size(folder: Path, split: str) -> int:
    """Number of pairs in a split written by the tokenize stage."""
    manifest = read_shard_manifest(folder, split)
    if manifest is None:
        return len(PairIds.load(folder / f"{split}.npz"))
    return int(manifest["pairs"])
