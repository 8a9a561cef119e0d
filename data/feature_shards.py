"""A split's MFCC sequences as shards on disk, written as they are computed and streamed back.

The features stage writes each split as ``FeatureSet`` files of at most ``SHARD_EXAMPLES``
sequences plus ``SPLIT.shards.json``; a split that fits in one shard is one file, ``SPLIT.npz``,
as before shards existed. Training reads several shards through ``tf.data`` (interleaved,
shuffled through a buffer), so neither the features stage nor training holds a whole large split
in memory; a one-shard split is read exactly as before (same batches, same order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data.feature_store import FeatureSet, FeatureTask, iter_many
from data.files import read_shard_manifest, shard_files, write_shard_manifest

# ~5 KB per one-second clip (100 frames x 13 MFCC float32): about 40 MB per shard.
SHARD_EXAMPLES = 8192


class ShardWriter:
    """Collects sequences and writes a shard each time ``shard_examples`` are held."""

    def __init__(self, out_dir: Path, split: str, shard_examples: int, single: bool) -> None:
        self.out_dir, self.split, self.size, self.single = out_dir, split, shard_examples, single
        self.shards: list[str] = []
        # failed_copies: augmented copies of usable clips that failed (e.g. shifted too short)
        self.counts = {"examples": 0, "clean": 0, "augmented": 0, "failed_copies": 0}
        self._rows: list[tuple[np.ndarray, int, str, int]] = []
        self._lengths: list[int] = []
        self._first_shape: tuple[int, ...] | None = None

    def add(self, sequence: np.ndarray, label: int, path: str, copy: int) -> None:
        self._rows.append((sequence, label, path, copy))
        self._lengths.append(len(sequence))
        self._first_shape = self._first_shape or sequence.shape
        self.counts["examples"] += 1
        self.counts["clean" if copy == 0 else "augmented"] += 1
        if len(self._rows) >= self.size and not self.single:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        seqs, labels, paths, copies = zip(*self._rows, strict=True)
        name = f"{self.split}.npz" if self.single else f"{self.split}-{len(self.shards):05d}.npz"
        FeatureSet(
            frames=np.concatenate(seqs).astype(np.float32),
            lengths=np.array([len(s) for s in seqs], np.int32),
            labels=np.array(labels, np.int32),
            paths=np.array(paths),
            copies=np.array(copies, np.int32),
        ).save(self.out_dir / name)
        self.shards.append(name)
        self._rows = []

    def close(self) -> dict[str, Any]:
        """Writes the last shard and the manifest; returns the manifest."""
        self._flush()
        # the bucket edges sequence_dataset would pick for the whole split
        edges = np.unique(np.quantile(self._lengths, [0.25, 0.5, 0.75]).astype(int) + 1)
        n_mfcc = int(self._first_shape[1]) if self._first_shape else 0
        manifest = {
            "shards": self.shards,
            **self.counts,
            "length_edges": edges.tolist(),
            "n_mfcc": n_mfcc,
        }
        write_shard_manifest(self.out_dir, self.split, manifest)
        return manifest


def write_split(
    clips: list,
    index: dict[str, int],
    copies: dict[str, int],
    out_dir: Path,
    split: str,
    shard_examples: int = SHARD_EXAMPLES,
    place: bool = False,
    **compute: Any,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """MFCC of one split's clips and their augmented copies, written as shards.

    Args:
        clips: the split's ``data.clips.Clip`` records.
        index: label -> class id.
        copies: clip path -> number of augmented copies (0 outside training).
        out_dir: where the shards and the manifest go.
        split: the split's name (the files' prefix).
        shard_examples: sequences per shard.
        place: put every clip at a random position in a full window.
        **compute: ``iter_many``'s settings (features, aug, noise_files, cache_dir, seed,
            workers, description).

    Returns:
        The manifest (shard names, example counts; ``failed_copies``: augmented copies of usable
        clips that failed, e.g. shifted too short) and ``(path, reason)`` of every clip that
        could not be decoded.

    Raises:
        ValueError: no clip of the split could be decoded.
    """
    tasks, owners = [], []
    for clip in clips:  # copy 0 is the clean clip, 1.. the augmented ones
        for k in range(1 + copies.get(clip.path, 0)):
            tasks.append(FeatureTask(clip.path, k, place))
            owners.append(clip)
    writer = ShardWriter(out_dir, split, shard_examples, single=len(tasks) <= shard_examples)
    failed = []
    for task, clip, result in zip(tasks, owners, iter_many(tasks, **compute), strict=True):
        if isinstance(result, str):
            if task.copy == 0:
                failed.append((clip.path, result))
            elif not any(path == clip.path for path, _ in failed[-1:]):
                writer.counts["failed_copies"] += 1  # the clip is fine, this copy is not
            continue
        writer.add(result, index[clip.label], clip.path, task.copy)
    if not writer.counts["examples"]:
        raise ValueError(
            f"No usable audio among {len(clips)} clips ({split}); first failures: {failed[:3]}"
        )
    return writer.close(), failed


def count(folder: Path, split: str) -> int:
    """Number of sequences in ``split``."""
    manifest = read_shard_manifest(folder, split)
    if manifest is not None:
        return int(manifest["examples"])
    return len(FeatureSet.load(folder / f"{split}.npz"))


def load_split(folder: Path, split: str) -> FeatureSet:
    """The whole split in memory (evaluation of the test split; small data)."""
    sets = [FeatureSet.load(p) for p in shard_files(folder, split)]
    if len(sets) == 1:
        return sets[0]
    return FeatureSet(
        **{
            key: np.concatenate([getattr(s, key) for s in sets])
            for key in ("frames", "lengths", "labels", "paths", "copies")
        }
    )


def split_dataset(
    folder: Path,
    split: str,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_by_length: bool = False,
    shuffle_buffer: int = SHARD_EXAMPLES,
):  # noqa: ANN201 - a tf.data.Dataset
    """Batches of ``(mfcc [b, frames, n_mfcc] zero-padded, label [b])`` of a split's shards.

    One shard: ``data.datasets.sequence_dataset`` over it (in memory, exact shuffle). Several:
    the shards are read two at a time, interleaved, in a shuffled order, and examples are
    shuffled through a buffer of ``shuffle_buffer``: memory stays about two shards plus the
    buffer however large the split.
    """
    import tensorflow as tf

    from data.datasets import sequence_dataset

    paths = shard_files(folder, split)
    if len(paths) == 1:
        return sequence_dataset(
            FeatureSet.load(paths[0]), batch_size, shuffle, seed, bucket_by_length
        )
    manifest = read_shard_manifest(folder, split)
    n_mfcc = int(manifest["n_mfcc"])

    def examples(path: bytes):  # noqa: ANN202 - a generator for tf.data
        shard = FeatureSet.load(Path(path.decode()))
        ends = np.cumsum(shard.lengths)
        for i, end in enumerate(ends):
            yield shard.frames[end - shard.lengths[i] : end], shard.labels[i]

    signature = (
        tf.TensorSpec([None, n_mfcc], tf.float32),
        tf.TensorSpec([], tf.int32),
    )
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda p: tf.data.Dataset.from_generator(examples, args=(p,), output_signature=signature),
        cycle_length=2,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    edges = manifest["length_edges"]
    if bucket_by_length:
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.shape(x)[0],
            bucket_boundaries=edges,
            bucket_batch_sizes=[batch_size] * (len(edges) + 1),
        )
    else:
        ds = ds.padded_batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
