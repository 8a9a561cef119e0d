"""Speech clip sources, chosen by a URI in ``data.source`` (``NAME`` or ``NAME:ARGUMENT``).

Each source lists clips with labels, speakers and, where the data set defines them, splits. A file
that cannot be used is listed in ``SourceListing.rejected`` with the reason.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from data.checks import check
from data.clips import (
    AUDIO_EXTENSIONS,
    SPLITS,
    UNKNOWN,
    Clip,
    Rejected,
    SourceListing,
    hash_percent,
    hash_split,
    is_audio_name,
)
from data.fingerprints import file_state, folder_state, paths_state
from data.registry import Registry

SOURCES: Registry[Callable[..., SourceListing]] = Registry("speech source")

SPEECH_COMMANDS_10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the built-in ``synthetic`` source (eSpeak NG voices).

    Attributes:
        words: the command words (what eSpeak says).
        labels: the class name of each word (e.g. ``"2"`` for ``"two"``); empty means the words.
        unknown_words: other words, spoken as examples of ``_unknown_``.
        voices: number of eSpeak voice variants used; each is one "speaker". Variants are split
            between train, validation and test, so test voices are never heard in training.
        takes: how many times each voice says each command word (random dialect, speed, pitch).
        unknown_takes: how many unknown words each voice says.
        snr_db_min: lowest signal-to-noise ratio of the background noise mixed into each clip.
        snr_db_max: highest signal-to-noise ratio.
    """

    words: tuple[str, ...] = SPEECH_COMMANDS_10
    unknown_words: tuple[str, ...] = (
        "bed",
        "bird",
        "cat",
        "dog",
        "happy",
        "house",
        "marvin",
        "sheila",
        "tree",
        "wow",
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "learn",
        "follow",
        "forward",
        "backward",
        "visual",
    )
    labels: tuple[str, ...] = ()
    voices: int = 100
    takes: int = 2
    unknown_takes: int = 3
    snr_db_min: float = 10.0
    snr_db_max: float = 40.0

    def __post_init__(self) -> None:
        check(len(self.words) >= 2, "data.synthetic.words", self.words, "at least 2 words")
        check(
            not self.labels or len(self.labels) == len(self.words),
            "data.synthetic.labels",
            self.labels,
            f"empty or one label per word ({len(self.words)})",
        )
        check(self.voices >= 3, "data.synthetic.voices", self.voices, ">= 3 (train/val/test)")
        check(self.takes >= 1, "data.synthetic.takes", self.takes, ">= 1")
        check(self.unknown_takes >= 0, "data.synthetic.unknown_takes", self.unknown_takes, ">= 0")
        check(
            self.snr_db_min <= self.snr_db_max,
            "data.synthetic.snr_db_min",
            self.snr_db_min,
            f"<= snr_db_max ({self.snr_db_max})",
        )


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` config section of the speech pipeline.

    Attributes:
        source: ``synthetic``, ``speech_commands:DIR``, ``fsdd:DIR``, ``manifest:FILE.csv`` or
            ``tfds:speech_commands``.
        commands: labels kept as classes; others become ``_unknown_``. Empty keeps every label.
        unknown_percent: ``_unknown_`` clips kept, as a percentage of the command clips per split.
        silence_percent: ``_silence_`` clips made from background noise, as a percentage of the
            command clips per split (0 for none).
        split: ``auto`` uses the data set's own lists when it has them, else ``hash``;
            ``hash`` assigns speakers by a hash of their name; ``holdout`` puts ``test_speakers``
            in test; ``takes`` puts takes below ``test_takes`` in test (FSDD's convention).
        val_percent: percentage of speakers (hash split) in validation.
        test_percent: percentage of speakers (hash split) in test.
        test_speakers: speakers held out for test with ``split: holdout``.
        val_speakers: speakers for validation with ``holdout``/``takes``; empty means a hash of the
            clip name picks ``val_percent`` of the remaining training clips.
        test_takes: with ``split: takes``, takes numbered below this are test.
        max_per_label: cap on clips per label and split (0 = no cap), for quick runs.
        train_extra: more source URIs whose clips are added to the TRAINING split only, e.g.
            ``[synthetic]`` to add eSpeak voices to real recordings for speaker diversity; the
            validation and test splits stay those of ``source``.
        label_map: renames source labels before anything else, e.g. ``{zero: "0"}`` so that
            Speech Commands' digit words can train an FSDD model. Applies to every source.
        max_rejected_percent: stop before training when more than this percentage of the clips
            is unusable (listed in ``rejected.json``): a wrong folder or format, not bad luck.
        synthetic: settings of the ``synthetic`` source.
    """

    source: str = "synthetic"
    commands: tuple[str, ...] = ()
    unknown_percent: float = 10.0
    silence_percent: float = 10.0
    split: Literal["auto", "hash", "holdout", "takes"] = "auto"
    val_percent: float = 10.0
    test_percent: float = 10.0
    test_speakers: tuple[str, ...] = ()
    val_speakers: tuple[str, ...] = ()
    test_takes: int = 5
    max_per_label: int = 0
    train_extra: tuple[str, ...] = ()
    label_map: dict[str, str] = field(default_factory=dict)
    max_rejected_percent: float = 5.0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        name = self.source.split(":", 1)[0]
        check(
            name in SOURCES,
            "data.source",
            self.source,
            f"a URI starting with one of {SOURCES.names()}",
        )
        for key in (
            "unknown_percent",
            "silence_percent",
            "val_percent",
            "test_percent",
            "max_rejected_percent",
        ):
            value = getattr(self, key)
            check(0 <= value <= 100, f"data.{key}", value, "a percentage in [0, 100]")
        check(
            self.val_percent + self.test_percent < 100,
            "data.val_percent + data.test_percent",
            self.val_percent + self.test_percent,
            "< 100",
        )
        check(
            self.split != "holdout" or bool(self.test_speakers),
            "data.test_speakers",
            self.test_speakers,
            "at least one speaker when data.split is 'holdout'",
        )
        check(self.max_per_label >= 0, "data.max_per_label", self.max_per_label, ">= 0")
        for uri in self.train_extra:
            check(
                uri.split(":", 1)[0] in SOURCES,
                "data.train_extra",
                uri,
                f"URIs starting with one of {SOURCES.names()}",
            )


def parse_source(uri: str) -> tuple[str, str]:
    """Splits ``NAME:ARGUMENT`` into its parts; ``NAME`` alone has an empty argument."""
    name, _, argument = uri.partition(":")
    return name, argument


def list_source(config: DataConfig, cache_dir: Path, seed: int) -> SourceListing:
    """Lists the clips of ``config.source`` (generating or materializing them if needed).

    Labels are renamed by ``config.label_map``. Clips of ``config.train_extra`` sources are
    appended with their split set to ``train``; without ``data.commands`` (which folds other
    words into ``_unknown_``), an extra clip whose label is not one of the main source's labels
    is left out (``listing.left_out``, with the reason), so extras add examples, never classes.
    """
    name, argument = parse_source(config.source)
    listing = SOURCES.get(name)(argument, config=config, cache_dir=cache_dir, seed=seed)
    listing.clips = [replace(_relabel(c, config.label_map), source=name) for c in listing.clips]
    classes = {c.label for c in listing.clips}
    for uri in config.train_extra:
        name, argument = parse_source(uri)
        extra = SOURCES.get(name)(argument, config=config, cache_dir=cache_dir, seed=seed)
        for clip in extra.clips:
            clip = _relabel(clip, config.label_map)
            if not config.commands and clip.label not in classes:
                listing.left_out.append(
                    Rejected(
                        clip.path,
                        f"data.train_extra {uri}: label {clip.label!r} is not a label of "
                        f"data.source (expected one of {sorted(classes)}; see data.label_map)",
                    )
                )
                continue
            listing.clips.append(
                replace(
                    clip,
                    speaker=f"{name}:{clip.speaker}",
                    split="train",
                    origin="extra",
                    source=name,
                )
            )
        listing.rejected += extra.rejected
        listing.left_out += extra.left_out
        listing.noise_files += [p for p in extra.noise_files if p not in listing.noise_files]
    return listing


def source_state(config: DataConfig) -> dict[str, str]:
    """The state of every file the configured sources read, for the ingest stage's fingerprint.

    Folders (``fsdd``, ``speech_commands``) by each file's path, size and mtime; a manifest by its
    content and the size and mtime of the files it lists. ``synthetic`` and ``tfds`` are fully
    described by the config (and the generator's version).
    """
    return {
        uri: _STATE.get(parse_source(uri)[0], _no_state)(parse_source(uri)[1])
        for uri in (config.source, *config.train_extra)
    }


def _no_state(argument: str) -> str:
    return ""


def _manifest_state(argument: str) -> str:
    csv_path = Path(argument).expanduser()
    if not csv_path.is_file():
        return "missing"
    with csv_path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        listed = [
            (row.get("path") or "").strip() for row in csv.DictReader(handle) if row.get("path")
        ]
    paths = [Path(p) if Path(p).is_absolute() else csv_path.parent / p for p in listed]
    return f"{file_state(csv_path)}:{paths_state(paths)}"


_STATE: dict[str, Callable[[str], str]] = {  # the depth each source lists files at
    "fsdd": lambda argument: folder_state(Path(argument).expanduser(), depth=1),
    "speech_commands": lambda argument: folder_state(Path(argument).expanduser(), depth=2),
    "manifest": _manifest_state,
}


def _relabel(clip: Clip, label_map: dict[str, str]) -> Clip:
    if clip.label not in label_map:
        return clip
    return replace(clip, label=label_map[clip.label])


def _require_dir(argument: str, source: str, layout: str) -> Path:
    if not argument:
        raise ValueError(f"data.source {source!r} needs a folder: expected {source}:DIR ({layout})")
    folder = Path(argument).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data.source {source}:{argument}: folder not found ({layout})")
    return folder


@SOURCES.register("fsdd")
def fsdd_source(argument: str, **_) -> SourceListing:
    """Free Spoken Digit Dataset layout: a flat folder of ``{label}_{speaker}_{take}.wav``."""
    folder = _require_dir(argument, "fsdd", "a flat folder of {label}_{speaker}_{take}.wav")
    listing = SourceListing()
    pattern = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>.+)_(?P<take>\d+)$")
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            continue
        match = pattern.match(path.stem)
        if not is_audio_name(path.name):
            listing.rejected.append(
                Rejected(str(path), f"not an audio file (expected one of {AUDIO_EXTENSIONS})")
            )
            continue
        if not match:
            listing.rejected.append(
                Rejected(str(path), "name does not match {label}_{speaker}_{take}.wav")
            )
            continue
        listing.clips.append(Clip(str(path), match["label"], match["speaker"], take=match["take"]))
    return listing


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


@SOURCES.register("speech_commands")
def speech_commands_source(argument: str, config: DataConfig, **_) -> SourceListing:
    """Speech Commands layout: ``{word}/{speaker}_nohash_{n}.wav`` plus ``_background_noise_``.

    Splits come from ``validation_list.txt`` / ``testing_list.txt`` when present (and
    ``data.split`` is ``auto``), else from the hash of the speaker, as the data set defines it.
    """
    folder = _require_dir(argument, "speech_commands", "{word}/{speaker}_nohash_{n}.wav")
    listing = SourceListing()
    val_list = _read_list(folder / "validation_list.txt")
    test_list = _read_list(folder / "testing_list.txt")
    use_lists = config.split == "auto" and bool(val_list or test_list)
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not any(label_dir.iterdir()):
            listing.rejected.append(Rejected(str(label_dir), "empty label folder (no clips)"))
    for stray in sorted(p for p in folder.iterdir() if p.is_file() and is_audio_name(p.name)):
        listing.rejected.append(  # its label would be its folder's name: it has none
            Rejected(str(stray), "not in a label folder (expected WORD/NAME.wav)")
        )
    for path in sorted(folder.glob("*/*")):
        word = path.parent.name
        if word == "_background_noise_":
            if is_audio_name(path.name):
                listing.noise_files.append(str(path))
            elif path.name.upper() != "README.MD":
                listing.rejected.append(Rejected(str(path), "not an audio file (noise folder)"))
            continue
        relative = f"{word}/{path.name}"
        if not is_audio_name(path.name):
            listing.rejected.append(
                Rejected(str(path), f"not an audio file (expected one of {AUDIO_EXTENSIONS})")
            )
            continue
        speaker = path.stem.split("_nohash_")[0]
        split = ""
        if use_lists:
            split = (
                "validation"
                if relative in val_list
                else "test"
                if relative in test_list
                else "train"
            )
        listing.clips.append(Clip(str(path), word, speaker, split=split))
    return listing


@SOURCES.register("manifest")
def manifest_source(argument: str, **_) -> SourceListing:
    """A CSV with a header ``path,label[,speaker][,split]``; relative paths are from the CSV."""
    if not argument:
        raise ValueError("data.source 'manifest' needs a file: expected manifest:FILE.csv")
    csv_path = Path(argument).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"data.source manifest:{argument}: file not found")
    listing = SourceListing()
    try:  # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of "path"
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"manifest {argument}: not UTF-8 text (byte {err.start}: {err.reason}); save it as "
            "UTF-8 CSV"
        ) from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"manifest {argument}: header must include path,label[,speaker][,split]; "
                f"missing {sorted(missing)}, got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            split = (row.get("split") or "").strip()
            if not path or not label:
                listing.rejected.append(
                    Rejected(f"{argument}:{line}", "empty path or label", clip_entry=True)
                )
                continue
            if split and split not in SPLITS:
                listing.rejected.append(
                    Rejected(
                        f"{argument}:{line}",
                        f"split {split!r} is not one of {SPLITS}",
                        clip_entry=True,
                    )
                )
                continue
            full = Path(path) if Path(path).is_absolute() else csv_path.parent / path
            if None in row:  # DictReader puts the cells beyond the header under the key None
                listing.rejected.append(
                    Rejected(
                        f"{argument}:{line}",
                        f"{len(reader.fieldnames or ()) + len(row[None])} columns; the header "
                        f"has {len(reader.fieldnames or ())}",
                        clip_entry=True,
                    )
                )
                continue
            if not full.is_file():
                listing.rejected.append(Rejected(str(full), f"file not found ({argument}:{line})"))
                continue
            speaker = (row.get("speaker") or "").strip()
            listing.clips.append(Clip(str(full), label, speaker, split=split))
    return listing


@SOURCES.register("tfds")
def tfds_source(argument: str, cache_dir: Path, **_) -> SourceListing:
    """A TFDS audio data set (``tfds:speech_commands``), written once to WAV files in the cache."""
    import numpy as np
    import soundfile
    import tensorflow_datasets as tfds

    name = argument or "speech_commands"
    builder = tfds.builder(name)
    builder.download_and_prepare()
    rate = builder.info.features["audio"].sample_rate or 16000
    names = builder.info.features["label"].names
    out = cache_dir / "tfds" / name
    listing = SourceListing()
    available = set(builder.info.splits) or set(SPLITS)  # mock_data leaves info.splits empty
    for split in SPLITS:
        tfds_split = split
        if tfds_split not in available:
            continue
        marker = out / tfds_split / "_complete"
        for index, example in enumerate(tfds.as_numpy(builder.as_dataset(split=tfds_split))):
            label = names[int(example["label"])]
            path = out / tfds_split / f"{index:06d}_{label}.wav"
            if not marker.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                audio = np.asarray(example["audio"])
                scale = 32768.0 if np.issubdtype(audio.dtype, np.integer) else 1.0
                soundfile.write(path, audio.astype(np.float32) / scale, rate, subtype="PCM_16")
            listing.clips.append(Clip(str(path), label, f"tfds-{tfds_split}-{index}", split=split))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return listing


@SOURCES.register("synthetic")
def synthetic_source(argument: str, config: DataConfig, cache_dir: Path, seed: int, **_):  # noqa: ANN201
    """The built-in default: command words spoken by eSpeak NG voices (see ``SyntheticConfig``)."""
    from data.synthetic_speech import generate

    return generate(config.synthetic, cache_dir / "synthetic", seed)


def assign_splits(listing: SourceListing, config: DataConfig) -> list[Clip]:
    """Gives every clip a split following ``data.split`` and folds non-commands into unknown.

    Returns:
        New clips with ``split`` set and labels outside ``data.commands`` renamed ``_unknown_``.
    """
    val_speakers, test_speakers = set(config.val_speakers), set(config.test_speakers)
    known = {c.speaker for c in listing.clips}
    for speaker in test_speakers | val_speakers:
        if speaker not in known:
            raise ValueError(f"data speaker {speaker!r} not found; speakers are {sorted(known)}")
    out = []
    for clip in listing.clips:
        key = clip.speaker or Path(clip.path).stem
        if clip.origin == "extra":
            split = "train"
        elif config.split == "auto" and clip.split:
            split = clip.split
        elif config.split in ("auto", "hash"):
            split = hash_split(key, config.val_percent, config.test_percent)
        else:
            if config.split == "holdout":
                is_test = clip.speaker in test_speakers
            else:
                try:
                    is_test = int(clip.take) < config.test_takes
                except ValueError:
                    raise ValueError(
                        f"data.split 'takes' needs numbered takes; clip {clip.path} has take "
                        f"{clip.take!r}"
                    ) from None
            if is_test:
                split = "test"
            elif val_speakers:
                split = "validation" if clip.speaker in val_speakers else "train"
            else:
                split = (
                    "validation"
                    if hash_percent(Path(clip.path).name) < config.val_percent
                    else "train"
                )
        label = clip.label
        if config.commands and label not in config.commands:
            label = UNKNOWN
        out.append(replace(clip, label=label, split=split))
    return out


def balance(clips: list[Clip], config: DataConfig) -> tuple[list[Clip], int]:
    """Subsamples ``_unknown_`` (to ``unknown_percent``) and caps labels at ``max_per_label``.

    The choice is by a hash of the file name, so it is deterministic and stable as data grows.

    Returns:
        The kept clips and how many were left out by design (reported, not silently lost).
    """
    kept: list[Clip] = []
    for split in SPLITS:
        in_split = [c for c in clips if c.split == split]
        commands = sum(c.label != UNKNOWN for c in in_split)
        unknown = sorted(
            (c for c in in_split if c.label == UNKNOWN), key=lambda c: hash_percent(c.path)
        )
        if config.commands:
            unknown = unknown[: int(round(commands * config.unknown_percent / 100))]
        chosen = [c for c in in_split if c.label != UNKNOWN] + unknown
        if config.max_per_label:
            per_label: dict[str, int] = {}
            capped = []
            for clip in sorted(chosen, key=lambda c: hash_percent(c.path)):
                if per_label.get(clip.label, 0) < config.max_per_label:
                    per_label[clip.label] = per_label.get(clip.label, 0) + 1
                    capped.append(clip)
            chosen = capped
        kept.extend(chosen)
    return kept, len(clips) - len(kept)


def readable_clips(listing: SourceListing) -> tuple[list[Clip], list[Rejected]]:
    """The listed clips whose audio header can be read, and the rejected ones with reasons."""
    from rich.progress import track

    from data.audio import header_problem

    usable, rejected = [], list(listing.rejected)
    for clip in track(listing.clips, description="Checking audio", transient=True):
        reason = header_problem(clip.path)
        if reason:
            rejected.append(Rejected(clip.path, reason))
        else:
            usable.append(clip)
    return usable, rejected


def usable_noise_files(paths: list[str], rejected: list[Rejected]) -> list[str]:
    """The background-noise files that decode to some sound; the others go to ``rejected``.

    They are mixed into every augmented copy and cut into ``_silence_`` clips, so one bad file
    would otherwise stop ingest without naming itself or fail every augmented copy.
    """
    import soundfile

    from data.audio import AudioError, header_problem, load_audio

    usable = []
    for path in paths:
        reason = header_problem(path)
        if reason is None:
            try:
                load_audio(path, soundfile.info(path).samplerate)
            except AudioError as err:
                reason = str(err)
        if reason:
            rejected.append(Rejected(path, f"background noise: {reason}"))
        else:
            usable.append(path)
    return usable


def keep_trained_labels(
    clips: list[Clip], rejected: list[Rejected]
) -> tuple[list[Clip], list[str]]:
    """Drops (into ``rejected``) clips whose label has no training clip; returns the classes."""
    train_labels = sorted({c.label for c in clips if c.split == "train"})
    kept = []
    for clip in clips:
        if clip.label in train_labels:
            kept.append(clip)
        else:
            rejected.append(Rejected(clip.path, f"label {clip.label!r} has no training clips"))
    return kept, train_labels
