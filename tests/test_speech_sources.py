"""Each speech source on tiny generated or real data, and the split rules."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from data.clips import UNKNOWN, SourceListing, hash_split
from data.speech_sources import (
    DataConfig,
    SyntheticConfig,
    assign_splits,
    balance,
    list_source,
)
from tests.conftest import shared_path, tone


def test_fsdd_lists_and_rejects_bad_names(wav_folder, tmp_path):
    listing = list_source(DataConfig(source=f"fsdd:{wav_folder}"), tmp_path, 0)
    assert len(listing.clips) == 3 * 3 * 2 + 1  # the garbage a_s1_9.wav is caught later, by header
    assert [r.item for r in listing.rejected] == [str(wav_folder / "badname.wav")]
    assert {c.speaker for c in listing.clips} == {"s1", "s2", "s3"}


def test_fsdd_holdout_and_takes_splits(wav_folder, tmp_path):
    config = DataConfig(
        source=f"fsdd:{wav_folder}", split="holdout", test_speakers=("s3",), val_speakers=("s2",)
    )
    clips = assign_splits(list_source(config, tmp_path, 0), config)
    assert {c.speaker for c in clips if c.split == "test"} == {"s3"}
    assert {c.speaker for c in clips if c.split == "validation"} == {"s2"}
    takes = DataConfig(source=f"fsdd:{wav_folder}", split="takes", test_takes=1, val_percent=0)
    clips = assign_splits(list_source(takes, tmp_path, 0), takes)
    assert all((c.split == "test") == (c.take == "0") for c in clips)


def test_unknown_speaker_is_an_error(wav_folder, tmp_path):
    config = DataConfig(source=f"fsdd:{wav_folder}", split="holdout", test_speakers=("nobody",))
    with pytest.raises(ValueError, match="speaker 'nobody' not found"):
        assign_splits(list_source(config, tmp_path, 0), config)


def test_fsdd_real_data_holdout():
    folder = shared_path("fsdd", "recordings")
    config = DataConfig(source=f"fsdd:{folder}", split="holdout", test_speakers=("george",))
    clips = assign_splits(list_source(config, Path("/tmp"), 0), config)
    assert len(clips) == 2500
    test = [c for c in clips if c.split == "test"]
    assert len(test) == 500 and {c.speaker for c in test} == {"george"}


def test_fsdd_preset_adds_speech_commands_digits_to_training():
    """The fsdd preset's extras on the real data: the ten digit words, relabelled, train only."""
    from pipelines.cli import resolve_config

    fsdd, commands = shared_path("fsdd", "recordings"), shared_path("speech_commands_subset")
    _, config = resolve_config(
        "fsdd",
        overrides=[
            f"data.source=fsdd:{fsdd}",
            f"data.train_extra=[speech_commands:{commands}]",
        ],
    )
    clips = assign_splits(list_source(config.data, Path("/tmp"), 0), config.data)
    extra = [c for c in clips if c.origin == "extra"]
    assert Counter(c.label for c in extra) == {str(d): 13 for d in range(10)}
    assert {c.split for c in extra} == {"train"}
    assert {c.split for c in clips if c.speaker == "george"} == {"test"}


def test_speech_commands_uses_lists_and_folds_unknown():
    folder = shared_path("speech_commands_subset")
    config = DataConfig(
        source=f"speech_commands:{folder}", commands=("yes", "no"), unknown_percent=50
    )
    listing = list_source(config, Path("/tmp"), 0)
    assert len(listing.noise_files) == 6
    clips = assign_splits(listing, config)
    listed_test = set((folder / "testing_list.txt").read_text().split())
    for clip in clips:
        relative = "/".join(Path(clip.path).parts[-2:])
        assert (clip.split == "test") == (relative in listed_test)
    assert {c.label for c in clips} == {"yes", "no", UNKNOWN}
    kept, left_out = balance(clips, config)
    for split in ("train", "validation", "test"):
        counts = Counter(c.label for c in kept if c.split == split)
        assert counts[UNKNOWN] == round((counts["yes"] + counts["no"]) * 0.5)
    assert left_out == len(clips) - len(kept) > 0


def test_speech_commands_hash_split_is_by_speaker(tmp_path):
    for word in ("yes", "no"):
        (tmp_path / word).mkdir()
        for speaker in ("aa11", "bb22", "cc33", "dd44"):
            soundfile.write(tmp_path / word / f"{speaker}_nohash_0.wav", tone(seconds=0.2), 16000)
    config = DataConfig(
        source=f"speech_commands:{tmp_path}", split="hash", val_percent=30, test_percent=30
    )
    clips = assign_splits(list_source(config, tmp_path, 0), config)
    for clip in clips:
        assert clip.split == hash_split(clip.speaker, 30, 30)


def test_manifest_source(tmp_path):
    soundfile.write(tmp_path / "one.wav", tone(), 16000)
    (tmp_path / "m.csv").write_text(
        "path,label,speaker,split\none.wav,yes,s1,train\n,no,s2,test\none.wav,no,s3,holdout\n"
    )
    listing = list_source(DataConfig(source=f"manifest:{tmp_path / 'm.csv'}"), tmp_path, 0)
    assert [c.path for c in listing.clips] == [str(tmp_path / "one.wav")]
    reasons = sorted(r.reason for r in listing.rejected)
    assert reasons[0] == "empty path or label" and "holdout" in reasons[1]
    (tmp_path / "bad.csv").write_text("file,label\nx,y\n")
    with pytest.raises(ValueError, match=r"missing \['path'\]"):
        list_source(DataConfig(source=f"manifest:{tmp_path / 'bad.csv'}"), tmp_path, 0)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list_source(DataConfig(source="fsdd:/no/such/dir"), tmp_path, 0)
    with pytest.raises(ValueError, match="needs a folder"):
        list_source(DataConfig(source="fsdd"), tmp_path, 0)


def test_tfds_speech_commands_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        listing = list_source(DataConfig(source="tfds:speech_commands"), tmp_path, 0)
    assert Counter(c.split for c in listing.clips) == {"train": 6, "validation": 6, "test": 6}
    y, sr = soundfile.read(listing.clips[0].path)
    assert sr == 16000 and y.size > 0


def test_synthetic_is_deterministic_and_voice_disjoint(tmp_path):
    config = DataConfig(
        synthetic=SyntheticConfig(words=("yes", "no"), voices=6, takes=1, unknown_takes=1)
    )
    first = list_source(config, tmp_path, seed=3)
    again = list_source(config, tmp_path / "other", seed=3)
    assert [Path(c.path).name for c in first.clips] == [Path(c.path).name for c in again.clips]
    assert np.array_equal(
        soundfile.read(first.clips[0].path)[0], soundfile.read(again.clips[0].path)[0]
    )
    voices = {
        split: {c.speaker for c in first.clips if c.split == split}
        for split in ("train", "validation", "test")
    }
    assert all(voices.values())
    assert not (voices["train"] & voices["test"]) and not (voices["train"] & voices["validation"])
    assert Counter(c.label for c in first.clips) == {"yes": 6, "no": 6, UNKNOWN: 6}
    assert len(first.noise_files) == 4
    y, sr = soundfile.read(first.clips[0].path)
    assert sr == 16000 and y.shape == (16000,)


def test_concurrent_generators_share_one_synthetic_set(tmp_path):
    """Two processes generating the same set at once (e.g. tuning workers): both get it whole."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import json, sys; from pathlib import Path\n"
        "from data.speech_sources import DataConfig, SyntheticConfig, list_source\n"
        "config = DataConfig(synthetic=SyntheticConfig(words=('yes', 'no'), voices=8, takes=2))\n"
        "listing = list_source(config, Path(sys.argv[1]), seed=5)\n"
        "print(json.dumps(sorted(c.path for c in listing.clips)))\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    listed = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert listed[0] == listed[1] and len(listed[0]) >= 32
    assert all(Path(path).is_file() for path in listed[0])
    folder = tmp_path / "synthetic"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no leftovers
    assert len([p for p in folder.iterdir()]) == 1


def test_balance_caps_labels():
    listing = SourceListing()
    from data.clips import Clip

    listing.clips = [
        Clip(f"/x/{i}.wav", "a" if i % 2 else "b", f"s{i}", "train") for i in range(20)
    ]
    kept, left_out = balance(listing.clips, DataConfig(max_per_label=3))
    assert Counter(c.label for c in kept) == {"a": 3, "b": 3} and left_out == 14


def test_train_extra_adds_synthetic_voices_to_training_only(wav_folder, tmp_path):
    config = DataConfig(
        source=f"fsdd:{wav_folder}",
        split="holdout",
        test_speakers=("s3",),
        val_percent=50,
        train_extra=("synthetic",),
        synthetic=SyntheticConfig(
            words=("one", "two"), labels=("a", "b"), voices=4, takes=1, unknown_takes=0
        ),
    )
    clips = assign_splits(list_source(config, tmp_path, 0), config)
    extra = [c for c in clips if c.origin == "extra"]
    assert len(extra) == 8 and {c.split for c in extra} == {"train"}
    assert {c.label for c in extra} == {"a", "b"}
    assert all(c.speaker.startswith("synthetic:") for c in extra)
    assert {c.speaker for c in clips if c.split == "test"} == {"s3"}


def test_label_map_lets_speech_commands_words_train_fsdd_labels(wav_folder, tmp_path):
    commands = tmp_path / "sc"
    for word in ("one", "two", "bed"):
        (commands / word).mkdir(parents=True)
        soundfile.write(commands / word / "ab12_nohash_0.wav", tone(440, 0.5, 16000), 16000)
    (commands / "_background_noise_").mkdir()
    soundfile.write(commands / "_background_noise_" / "hum.wav", tone(50, 2.0, 16000), 16000)
    config = DataConfig(
        source=f"fsdd:{wav_folder}",
        split="holdout",
        test_speakers=("s3",),
        train_extra=(f"speech_commands:{commands}",),
        label_map={"one": "a", "two": "b"},
    )
    listing = list_source(config, tmp_path, 0)
    extra = [c for c in listing.clips if c.origin == "extra"]
    assert sorted(c.label for c in extra) == ["a", "b"]
    assert {c.source for c in extra} == {"speech_commands"}
    assert {c.source for c in listing.clips if c.origin != "extra"} == {"fsdd"}
    # a word that maps to no FSDD label is a reported skip, never a new class
    assert not any("bed" in r.item for r in listing.rejected)
    skipped = [r for r in listing.left_out if "bed" in r.item]
    assert len(skipped) == 1 and "label 'bed' is not a label of data.source" in skipped[0].reason
    assert listing.noise_files == [str(commands / "_background_noise_" / "hum.wav")]


def test_label_map_renames_the_main_source(wav_folder, tmp_path):
    config = DataConfig(source=f"fsdd:{wav_folder}", label_map={"a": "alpha"})
    labels = {c.label for c in list_source(config, tmp_path, 0).clips}
    assert labels == {"alpha", "b", "c"}


def test_synthetic_labels_must_match_words():
    from data.checks import ConfigError

    with pytest.raises(ConfigError, match="data.synthetic.labels"):
        SyntheticConfig(words=("one", "two"), labels=("1",))
