"""Feature shards: written as computed, read back whole or streamed, the same examples either way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from data.audio import FeatureConfig
from data.augment import AugmentConfig
from data.clips import Clip
from data.feature_shards import count, load_split, split_dataset, write_split
from data.files import shard_files
from tests.conftest import tone


@pytest.fixture
def clips(tmp_path):
    out = []
    for i in range(11):
        path = tmp_path / f"clip{i}.wav"
        soundfile.write(path, tone(200 + 90 * i, 0.2 + 0.05 * (i % 4)), 16000)
        out.append(Clip(str(path), "ab"[i % 2], split="train"))
    (tmp_path / "broken.wav").write_bytes(b"RIFF")
    return [*out, Clip(str(tmp_path / "broken.wav"), "a", split="train")]


def _write(clips, folder, shard_examples):
    folder.mkdir()
    return write_split(
        clips,
        {"a": 0, "b": 1},
        {c.path: 1 for c in clips},  # one augmented copy each
        folder,
        "train",
        shard_examples=shard_examples,
        features=FeatureConfig(),
        aug=AugmentConfig(),
        cache_dir=None,
    )


def _examples(ds) -> np.ndarray:
    """Every example as (label, sum of its frames), sorted: the same set whatever the order."""
    out = []
    for x, y in ds:
        for row, label in zip(x.numpy(), y.numpy(), strict=True):
            out.append((int(label), float(row.astype(np.float64).sum())))
    return np.array(sorted(out))


def test_sharded_and_single_file_splits_hold_the_same_examples(clips, tmp_path):
    one, failed = _write(clips, tmp_path / "one", 1000)
    many, _ = _write(clips, tmp_path / "many", 4)
    assert failed == [(clips[-1].path, failed[0][1])]  # the broken file, counted once
    assert one["shards"] == ["train.npz"]  # one shard: the file name from before shards
    assert len(many["shards"]) == 6 and many["examples"] == one["examples"] == 22
    assert many["clean"] == 11 and many["augmented"] == 11
    assert many["failed_copies"] == 0  # the broken file's own copy is not counted twice
    assert count(tmp_path / "many", "train") == 22
    whole, sharded = load_split(tmp_path / "one", "train"), load_split(tmp_path / "many", "train")
    np.testing.assert_array_equal(whole.frames, sharded.frames)
    np.testing.assert_array_equal(whole.paths, sharded.paths)

    reference = _examples(split_dataset(tmp_path / "one", "train", 5))
    for shuffle in (False, True):
        for bucket in (False, True):
            streamed = split_dataset(
                tmp_path / "many", "train", 5, shuffle, bucket_by_length=bucket, shuffle_buffer=7
            )
            np.testing.assert_allclose(_examples(streamed), reference, rtol=1e-5)


def test_a_folder_from_before_shards_is_one_shard(clips, tmp_path):
    _write(clips, tmp_path / "old", 1000)
    (tmp_path / "old" / "train.shards.json").unlink()
    assert shard_files(tmp_path / "old", "train") == [tmp_path / "old" / "train.npz"]
    assert count(tmp_path / "old", "train") == 22


def test_manifest_names_every_shard(clips, tmp_path):
    manifest, _ = _write(clips, tmp_path / "m", 5)
    on_disk = json.loads((tmp_path / "m" / "train.shards.json").read_text())
    assert on_disk == manifest
    assert all((tmp_path / "m" / name).is_file() for name in manifest["shards"])


def test_a_failed_augmented_copy_of_a_usable_clip_is_counted(clips, tmp_path, monkeypatch):
    from data import feature_shards

    real = feature_shards.iter_many

    def copy_one_fails(tasks, **compute):
        for task, result in zip(tasks, real(tasks, **compute), strict=True):
            yield "clip too short for features (3 samples)" if task.copy == 1 else result

    monkeypatch.setattr(feature_shards, "iter_many", copy_one_fails)
    manifest, failed = _write(clips, tmp_path / "m", 1000)
    assert len(failed) == 1  # the broken file
    assert manifest["augmented"] == 0 and manifest["failed_copies"] == 11  # counted, not hidden
