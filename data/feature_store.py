"""MFCC extraction for many clips: cached per clip and settings, computed in parallel."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from data.audio import AudioError, FeatureConfig, feature_shape, load_audio, mfcc
from data.augment import AugmentConfig, augment, place_in_window

CACHE_VERSION = 2  # 2: augmentation seeded by content


@dataclass(frozen=True)
class FeatureTask:
    """One MFCC computation: a clip, and which augmented copy (0 = the clean clip)."""

    path: str
    copy: int = 0
    place: bool = False  # placed at a random position in a full window (training, window: full)


@dataclass
class FeatureSet:
    """Variable-length MFCC sequences stored flat: ``frames[offsets[i]:offsets[i+1]]``."""

    frames: np.ndarray  # [total_frames, n_mfcc] float32
    lengths: np.ndarray  # [n] int32
    labels: np.ndarray  # [n] int32
    paths: np.ndarray  # [n] str
    copies: np.ndarray  # [n] int32, 0 for clean clips

    def save(self, path: Path) -> None:
        np.savez(
            path,
            frames=self.frames,
            lengths=self.lengths,
            labels=self.labels,
            paths=self.paths,
            copies=self.copies,
        )

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{k: data[k] for k in ("frames", "lengths", "labels", "paths", "copies")})

    def __len__(self) -> int:
        return int(self.lengths.size)


def _file_state(path: str) -> list:
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


# Settings that do not change one clip's MFCC, left out of its cache key: applied in the model
# (deltas, normalization), or how many copies are made (copy k is the same whatever the count).
IN_MODEL = ("deltas", "normalize", "running_prior_seconds")
HOW_MANY = ("copies", "copies_by_source")


def _drop(settings: dict, names: tuple[str, ...]) -> dict:
    return {k: v for k, v in settings.items() if k not in names}


def _cache_key(
    task: FeatureTask,
    features: FeatureConfig,
    aug: AugmentConfig | None,
    seed: int,
    noise_files: tuple[str, ...] = (),
) -> str:
    stat = os.stat(task.path)
    mixed = bool(task.copy or task.place)  # only these copies draw background noise
    payload = {
        "path": os.path.abspath(task.path),
        "size": stat.st_size,
        "mtime": stat.st_mtime_ns,
        "features": _drop(asdict(features), IN_MODEL),
        "copy": task.copy,
        "place": task.place,
        "v": CACHE_VERSION,
        "augment": _drop(asdict(aug), HOW_MANY) if mixed and aug else None,
        "seed": seed if mixed else None,
        # the noises mixed in: other or edited noise files give other features
        "noise": [_file_state(p) for p in noise_files] if mixed else None,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=4)
def _noises(paths: tuple[str, ...], sample_rate: int) -> list[np.ndarray]:
    return [load_audio(p, sample_rate) for p in paths]


def compute_one(
    task: FeatureTask,
    features: FeatureConfig,
    aug: AugmentConfig | None,
    noise_files: tuple[str, ...],
    cache_dir: str | None,
    seed: int,
) -> np.ndarray | str:
    """MFCC of one clip (or one augmented copy), from the cache when possible.

    Returns:
        The ``[frames, n_mfcc]`` array, or the reason the clip was rejected as a string.
    """
    try:
        key = _cache_key(task, features, aug, seed, noise_files)
    except OSError as err:
        return f"cannot read file ({err.strerror})"
    cached = Path(cache_dir) / key[:2] / f"{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            return np.load(cached)
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    try:
        y = load_audio(task.path, features.sample_rate)
        if task.copy:
            # Seeded by the audio itself, not by its path or mtime: the same clip gets the same
            # augmentation wherever it lives (e.g. _silence_ clips inside each run directory).
            rng = np.random.default_rng([seed, task.copy, zlib.crc32(y.tobytes())])
            y = augment(
                y, aug, features.sample_rate, _noises(noise_files, features.sample_rate), rng
            )
        if task.place:
            aug = aug or AugmentConfig()
            rng = np.random.default_rng([seed, task.copy, zlib.crc32(y.tobytes()), 1])
            y = place_in_window(
                y,
                feature_shape(features).clip_samples,
                _noises(noise_files, features.sample_rate),
                rng,
                (aug.gap_db_min, aug.gap_db_max),
                aug.gap_silence_prob,
            )
        result = mfcc(y, features)
    except AudioError as err:
        return str(err)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, result)
        os.replace(tmp, cached)
    return result


def _compute_chunk(tasks, *args):  # noqa: ANN001, ANN202 - runs in a worker process
    return [compute_one(task, *args) for task in tasks]


def iter_many(
    tasks: list[FeatureTask],
    features: FeatureConfig,
    aug: AugmentConfig | None = None,
    noise_files: tuple[str, ...] = (),
    cache_dir: str | None = None,
    seed: int = 0,
    workers: int = 1,
    description: str = "MFCC",
) -> Iterator[np.ndarray | str]:
    """``compute_one`` over ``tasks``, in order, yielded as they come (in ``workers`` processes).

    Nothing is kept after it is yielded, so a caller that writes results away holds only one
    chunk of them at a time, however many tasks there are.
    """
    from rich.progress import Progress

    chunk = 32
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    args = (features, aug, tuple(noise_files), cache_dir, seed)
    with Progress(transient=True) as progress:
        bar = progress.add_task(description, total=len(tasks))
        if workers <= 1 or len(chunks) <= 1:
            outputs = (_compute_chunk(c, *args) for c in chunks)
        else:
            from joblib import Parallel, delayed

            outputs = Parallel(n_jobs=workers, return_as="generator")(
                delayed(_compute_chunk)(c, *args) for c in chunks
            )
        for out in outputs:
            yield from out
            progress.advance(bar, len(out))


def compute_many(
    tasks: list[FeatureTask],
    features: FeatureConfig,
    aug: AugmentConfig | None = None,
    noise_files: tuple[str, ...] = (),
    cache_dir: str | None = None,
    seed: int = 0,
    workers: int = 1,
    description: str = "MFCC",
) -> list[np.ndarray | str]:
    """Runs ``compute_one`` over ``tasks`` with a progress bar, in ``workers`` processes."""
    return list(iter_many(tasks, features, aug, noise_files, cache_dir, seed, workers, description))
