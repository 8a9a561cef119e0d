"""MFCC extraction for many clips: cached by clip and settings in chunks, computed in parallel."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from data.audio import AudioError, FeatureConfig, feature_shape, load_audio, mfcc
from data.augment import AugmentConfig, augment, place_in_window

CACHE_VERSION = 3  # 2: augmentation seeded by content; 3: MFCC in NumPy, chunk files


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


REVERB = ("reverb_prob", "rt60_min", "rt60_max", "drr_db_min", "drr_db_max")
VOICE = ("voice_prob", "formant_min", "formant_max", "pitch_hz_min", "pitch_hz_max")


def _off(aug: AugmentConfig) -> tuple[str, ...]:
    """The augmentation settings that change nothing as set (eq, reverberation, hiss, voice off)."""
    return (
        (() if aug.eq_db else ("eq_db",))
        + (() if aug.reverb_prob else REVERB)
        + (() if aug.hiss_prob else ("hiss_prob",))
        + (() if aug.voice_prob else VOICE)
    )


def _drop(settings: dict, names: tuple[str, ...]) -> dict:
    return {k: v for k, v in settings.items() if k not in names}


class _Keys:
    """Cache keys of tasks: one clip's file state and copy, and the settings that shape it.

    The settings part is serialized once (not per clip): a warm rerun is mostly key making.
    """

    def __init__(
        self,
        features: FeatureConfig,
        aug: AugmentConfig | None,
        seed: int,
        noise_files: tuple[str, ...] = (),
    ) -> None:
        plain = {"features": _drop(asdict(features), IN_MODEL), "v": CACHE_VERSION}
        augment = None
        if aug:  # settings that are off are left out: features cached before they existed keep
            # their keys
            augment = _drop(asdict(aug), HOW_MANY + _off(aug))
        mixed = {  # only augmented and placed copies draw background noise
            **plain,
            "augment": augment,
            "seed": seed,
            # the noises mixed in: other or edited noise files give other features
            "noise": [_file_state(p) for p in noise_files],
        }
        self._settings = {
            False: json.dumps(plain, sort_keys=True),
            True: json.dumps(mixed, sort_keys=True),
        }

    def __call__(self, task: FeatureTask) -> str:
        stat = os.stat(task.path)
        settings = self._settings[bool(task.copy or task.place)]
        text = (
            f"{settings}|{os.path.abspath(task.path)}|{stat.st_size}|{stat.st_mtime_ns}|"
            f"{task.copy}|{task.place}"
        )
        return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def _cache_key(
    task: FeatureTask,
    features: FeatureConfig,
    aug: AugmentConfig | None,
    seed: int,
    noise_files: tuple[str, ...] = (),
) -> str:
    """The cache key of one task (``iter_many`` makes them in bulk)."""
    return _Keys(features, aug, seed, noise_files)(task)


@lru_cache(maxsize=4)
def _noises(paths: tuple[str, ...], sample_rate: int) -> list[np.ndarray]:
    return [load_audio(p, sample_rate) for p in paths]


def compute_uncached(
    task: FeatureTask,
    features: FeatureConfig,
    aug: AugmentConfig | None,
    noise_files: tuple[str, ...],
    seed: int,
) -> np.ndarray | str:
    """MFCC of one clip (or one augmented or placed copy), computed.

    Returns:
        The ``[frames, n_mfcc]`` array, or the reason the clip was rejected as a string.
    """
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
                aug.hiss_prob,
            )
        return mfcc(y, features)
    except AudioError as err:
        return str(err)


def compute_one(
    task: FeatureTask,
    features: FeatureConfig,
    aug: AugmentConfig | None,
    noise_files: tuple[str, ...],
    cache_dir: str | None,
    seed: int,
) -> np.ndarray | str:
    """MFCC of one clip through the cache (``iter_many`` of one task)."""
    return next(iter_many([task], features, aug, noise_files, cache_dir, seed, progress=False))


def _compute_chunk(tasks, *args):  # noqa: ANN001, ANN202 - runs in a worker process
    return [compute_uncached(task, *args) for task in tasks]


# The cache holds chunks of clips, one file each: creating a file costs more here than the MFCC
# of a short clip (0.3-0.4 ms against 0.1-0.2 ms per FSDD clip). A chunk ends after a clip whose
# name (with its copy number) hashes to 0 mod CHUNK_MEAN, or at CHUNK_MAX: inserting or removing
# a clip changes only the chunk around it, and an edited clip only its own chunk (the boundary
# does not depend on the file's state, only the chunk's cache key does).
CHUNK_MEAN, CHUNK_MAX = 32, 128
# Below this many clips to compute, worker processes cost more to start (0.3-0.5 s) than they save.
POOL_MIN_TASKS = 5000


def _chunks(tasks: list[FeatureTask]) -> list[list[int]]:
    """Task indices cut into content-defined chunks (see ``CHUNK_MEAN``)."""
    chunks, current = [], []
    for i, task in enumerate(tasks):
        current.append(i)
        name = f"{os.path.basename(task.path)}|{task.copy}|{task.place}"
        if zlib.crc32(name.encode("utf-8", "surrogateescape")) % CHUNK_MEAN == 0 or (
            len(current) >= CHUNK_MAX
        ):
            chunks.append(current)
            current = []
    return [*chunks, current] if current else chunks


def _chunk_file(cache_dir: str, keys: list[str]) -> Path:
    digest = hashlib.sha1("".join(keys).encode()).hexdigest()
    return Path(cache_dir) / digest[:2] / f"{digest}.npz"


def _read_chunk(path: Path, size: int) -> list[np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            frames, lengths = data["frames"], data["lengths"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing or damaged (empty, truncated, not a zip): recomputed
    if lengths.size != size:
        return None
    return np.split(frames, np.cumsum(lengths)[:-1])


def _write_chunk(path: Path, results: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, frames=np.concatenate(results), lengths=np.array([len(r) for r in results]))
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename: a power cut leaves no empty chunk
    os.replace(tmp, path)


def iter_many(
    tasks: list[FeatureTask],
    features: FeatureConfig,
    aug: AugmentConfig | None = None,
    noise_files: tuple[str, ...] = (),
    cache_dir: str | None = None,
    seed: int = 0,
    workers: int = 1,
    description: str = "MFCC",
    progress: bool = True,
) -> Iterator[np.ndarray | str]:
    """MFCC of ``tasks`` (arrays, or rejection reasons), in order, yielded as they come.

    Cached chunks are read in this process; the rest is computed here, or in ``workers``
    processes when there are at least ``POOL_MIN_TASKS`` of them, and cached. Nothing is kept
    after it is yielded, so a caller that writes results away holds about one chunk at a time.
    """
    from rich.progress import Progress

    noise_files = tuple(noise_files)
    keys: list[str] = []
    unreadable: dict[int, str] = {}
    key_of = _Keys(features, aug, seed, noise_files)
    for i, task in enumerate(tasks):
        try:
            keys.append(key_of(task))
        except OSError as err:
            unreadable[i] = f"cannot read file ({err.strerror})"
            keys.append(hashlib.sha1(f"unreadable:{task}".encode()).hexdigest())
    chunks = _chunks(tasks)
    files = [_chunk_file(cache_dir, [keys[i] for i in c]) if cache_dir else None for c in chunks]
    missing = [k for k, f in enumerate(files) if f is None or not f.is_file()]
    todo = [[tasks[i] for i in chunks[k]] for k in missing]
    args = (features, aug, noise_files, seed)
    if workers > 1 and sum(map(len, todo)) >= POOL_MIN_TASKS and len(todo) > 1:
        from joblib import Parallel, delayed

        computed = iter(
            Parallel(n_jobs=workers, return_as="generator")(
                delayed(_compute_chunk)(c, *args) for c in todo
            )
        )
    else:
        computed = (_compute_chunk(c, *args) for c in todo)
    missing_set = set(missing)
    with Progress(transient=True, disable=not progress) as bar:
        task_id = bar.add_task(description, total=len(tasks))
        for k, (chunk, path) in enumerate(zip(chunks, files, strict=True)):
            results = None if k in missing_set else _read_chunk(path, len(chunk))
            if results is None:
                # missing (computed above), or damaged (computed here)
                results = (
                    next(computed)
                    if k in missing_set
                    else _compute_chunk([tasks[i] for i in chunk], *args)
                )
                # a chunk with a clip that cannot be used is not cached: it is tried again
                if path is not None and not any(isinstance(r, str) for r in results):
                    _write_chunk(path, results)
            for i, result in zip(chunk, results, strict=True):
                yield unreadable.get(i, result)
            bar.advance(task_id, len(chunk))


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
    """``iter_many`` as a list."""
    return list(iter_many(tasks, features, aug, noise_files, cache_dir, seed, workers, description))
