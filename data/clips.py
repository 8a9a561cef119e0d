"""Clip records, rejections and deterministic splits."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

SPLITS = ("train", "validation", "test")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # as in the Speech Commands reference code
# Formats libsndfile decodes (others fall back to librosa's decoders when listed in a manifest).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".mp3")


def is_audio_name(path: str) -> bool:
    """Whether ``path`` has an audio file extension (case-insensitive).

    Example:
        >>> is_audio_name("a/b.FLAC"), is_audio_name("README.md")
        (True, False)
    """
    return path.lower().endswith(AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class Clip:
    """One audio clip: where it is, its label, who spoke it and (if known) its split.

    ``origin`` is ``"extra"`` for clips of ``data.train_extra`` sources, which only ever train;
    ``source`` names the source that listed the clip (``fsdd``, ``synthetic``, ...; empty for
    generated ``_silence_`` clips).
    """

    path: str
    label: str
    speaker: str = ""
    split: str = ""
    take: str = ""
    origin: str = ""
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rejected:
    """An input that was skipped, with the reason (never dropped silently)."""

    item: str
    reason: str
    # a clip's entry that is not itself an audio file (a manifest row) but counts, as an
    # unusable audio file does, against data.max_rejected_percent
    clip_entry: bool = False

    def to_dict(self) -> dict:
        return {"item": self.item, "reason": self.reason}


@dataclass
class SourceListing:
    """What a source found: usable clips, rejected items and background-noise files.

    ``left_out`` holds good clips skipped by design (e.g. extra clips of labels that are not
    classes), reported apart from ``rejected`` (unusable input).
    """

    clips: list[Clip] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    noise_files: list[str] = field(default_factory=list)
    left_out: list[Rejected] = field(default_factory=list)


def hash_percent(key: str) -> float:
    """A stable number in [0, 100) from ``key`` (the Speech Commands ``which_set`` hash).

    Example:
        >>> 0 <= hash_percent("speaker_a") < 100
        True
    """
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
    return (int(digest, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)


def hash_split(key: str, val_percent: float, test_percent: float) -> str:
    """Assigns ``key`` (a speaker, or a clip name when speakers are unknown) to a split."""
    p = hash_percent(re.sub(r"_nohash_.*$", "", key))
    if p < val_percent:
        return "validation"
    if p < val_percent + test_percent:
        return "test"
    return "train"


def spread_by_label(clips: list[Clip], limit: int, seed: int = 0) -> list[Clip]:
    """Up to ``limit`` of ``clips``, taking each label in turn (a seeded order within a label).

    Listings come sorted by folder or file name, so their first clips are often one or two
    labels: a check or a calibration set made of the first ``limit`` would see one class.

    Example:
        >>> clips = [Clip(f"{w}{i}.wav", w, "s", "test") for w in "ab" for i in range(3)]
        >>> sorted(c.label for c in spread_by_label(clips, 4))
        ['a', 'a', 'b', 'b']
    """
    import random

    by_label: dict[str, list[Clip]] = {}
    for clip in clips:
        by_label.setdefault(clip.label, []).append(clip)
    rng = random.Random(seed)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_label.items())]
    out: list[Clip] = []
    while len(out) < limit and any(queues):
        for queue in queues:
            if queue and len(out) < limit:
                out.append(queue.pop())
    return out
