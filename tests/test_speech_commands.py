"""The speech pipeline's stages in process: resume after a kill, bad files counted, refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile

import models.training
from pipelines.cli import resolve_config
from pipelines.runner import run_pipeline
from tests.conftest import tone
from tests.test_cli import TINY


def fsdd_config(folder, cache, *overrides):
    """The fsdd preset on a generated FSDD-style ``folder``, caching under ``cache``.

    The generated folders hold a few bad files on purpose (10% of ``wav_folder``), so the
    rejection limit is raised unless the test sets it.
    """
    return resolve_config(
        "fsdd",
        overrides=[
            f"data.source=fsdd:{folder}",
            f"runtime.cache_dir={cache}",
            "data.max_rejected_percent=20",
            *overrides,
        ],
    )


class KilledError(Exception):
    pass


class KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.kill_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.kill_epoch:
            raise KilledError(f"killed after epoch {epoch + 1}")


def test_killed_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    pipeline, config = resolve_config(
        "speech_commands",
        overrides=[
            *TINY,
            "train.epochs=4",
            f"runtime.cache_dir={tmp_path / 'cache'}",
            "export.enabled=false",
            "train.early_stopping=0",
        ],
    )
    real = models.training.build_callbacks

    def with_kill(*args, **kwargs):
        callbacks, best = real(*args, **kwargs)
        return [*callbacks, KillAfterEpoch(1)], best  # after BackupAndRestore has saved epoch 2

    monkeypatch.setattr(models.training, "build_callbacks", with_kill)
    with pytest.raises(KilledError):
        run_pipeline(pipeline, config, tmp_path / "run")
    assert not (tmp_path / "run" / "stages" / "train").exists()  # not marked done
    monkeypatch.setattr(models.training, "build_callbacks", real)
    report = run_pipeline(pipeline, config, tmp_path / "run")
    assert report.skipped == ["ingest", "features"]
    history = next((tmp_path / "run" / "checkpoints").glob("*/history.csv"))
    with history.open(newline="") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2, 3]  # epochs 1-2 were not redone
    assert report.metrics["epochs_trained"] == 4


def test_bad_files_are_counted_and_listed(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300), ("high", 2000)):
        for speaker in ("ann", "bob", "cid", "dan"):
            for take in range(3):
                y = tone(freq * (1 + 0.03 * rng.standard_normal()), 0.4, 8000)
                soundfile.write(folder / f"{label}_{speaker}_{take}.wav", y, 8000)
    (folder / "low_ann_7.wav").write_bytes(b"garbage")
    soundfile.write(folder / "high_bob_8.wav", np.zeros(400, np.float32), 8000)  # silent
    (folder / "README.txt").write_text("not audio")
    pipeline, config = fsdd_config(
        folder,
        tmp_path / "cache",
        "data.test_speakers=[dan]",
        "data.val_speakers=[cid]",
        "augment.copies=0",
        "data.train_extra=[]",
        "model.units=8",
    )
    report = run_pipeline(pipeline, config, tmp_path / "run", until="features")
    rejected = json.loads((tmp_path / "run" / "stages" / "ingest" / "rejected.json").read_text())
    reasons = {r["item"].split("/")[-1]: r["reason"] for r in rejected}
    assert "unreadable" in reasons["low_ann_7.wav"] and "not an audio file" in reasons["README.txt"]
    late = json.loads((tmp_path / "run" / "stages" / "features" / "rejected.json").read_text())
    assert [r["item"].split("/")[-1] for r in late] == ["high_bob_8.wav"]
    assert "all zeros" in late[0]["reason"]
    assert report.metrics["rejected"] == {"ingest": 2, "features": 1}
    assert report.metrics["rejected_by_split"] == {"train": 1, "validation": 0, "test": 0}
    assert report.metrics["examples"] == {"train": 12, "validation": 6, "test": 6}


def test_empty_split_is_a_clear_error(tmp_path, wav_folder):
    pipeline, config = fsdd_config(
        wav_folder,
        tmp_path,
        "data.test_speakers=[s1]",
        "data.val_speakers=[s2, s3]",
        "data.train_extra=[]",
    )
    with pytest.raises(ValueError, match="The train split is empty"):
        run_pipeline(pipeline, config, tmp_path / "run", until="ingest")


def test_augmented_copies_per_source(tmp_path, wav_folder):
    """``augment.copies_by_source`` gives the clips of one source their own number of copies."""
    pipeline, config = fsdd_config(
        wav_folder,
        tmp_path / "cache",
        "data.test_speakers=[s3]",
        "data.val_speakers=[s2]",
        "data.train_extra=[synthetic]",
        "data.synthetic.voices=3",
        "data.synthetic.words=[one, two, three]",
        "data.synthetic.labels=[a, b, c]",
        "augment.copies=1",
        "augment.copies_by_source={synthetic: 0}",
    )
    report = run_pipeline(pipeline, config, tmp_path / "run", until="features")
    features = np.load(tmp_path / "run" / "stages" / "features" / "train.npz")
    from_fsdd = np.array(["synthetic" not in p for p in features["paths"]])
    assert sorted(set(features["copies"][from_fsdd])) == [0, 1]  # fsdd: clean + 1 copy
    assert set(features["copies"][~from_fsdd]) == {0}  # synthetic: clean only
    assert report.metrics["augmented_train_examples"] == int(from_fsdd.sum()) // 2


def test_extra_clips_of_other_labels_are_left_out_and_reported(tmp_path, wav_folder):
    commands = tmp_path / "sc"
    for word in ("one", "bed"):
        (commands / word).mkdir(parents=True)
        soundfile.write(commands / word / "ab12_nohash_0.wav", tone(440, 0.5, 16000), 16000)
    pipeline, config = fsdd_config(
        wav_folder,
        tmp_path / "cache",
        "data.test_speakers=[s3]",
        "data.val_speakers=[s2]",
        f"data.train_extra=[speech_commands:{commands}]",
        "data.label_map={one: a}",
    )
    report = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    assert report.metrics["left_out"]["not a class"] == 1
    assert report.metrics["rejected"] == {"ingest": 2}  # the two bad files of wav_folder only
    left_out = json.loads((tmp_path / "run" / "stages" / "ingest" / "left_out.json").read_text())
    assert [Path(r["item"]).parent.name for r in left_out] == ["bed"]
    clips = json.loads((tmp_path / "run" / "stages" / "ingest" / "clips.json").read_text())
    assert [c["label"] for c in clips if c["origin"] == "extra"] == ["a"]


def _tiny_speech(tmp_path, *overrides):
    return resolve_config(
        "speech_commands",
        overrides=[
            *TINY,
            f"runtime.cache_dir={tmp_path / 'cache'}",
            "export.enabled=false",
            "train.early_stopping=0",
            *overrides,
        ],
    )


def test_a_failure_after_fit_does_not_lose_the_training(tmp_path, monkeypatch):
    import pipelines.reporting

    pipeline, config = _tiny_speech(tmp_path)
    real_plot = pipelines.reporting.plot_history

    def broken_plot(*args, **kwargs):
        raise OSError("disk hiccup while plotting")

    monkeypatch.setattr(pipelines.reporting, "plot_history", broken_plot)
    with pytest.raises(OSError, match="disk hiccup"):
        run_pipeline(pipeline, config, tmp_path / "run")
    monkeypatch.setattr(pipelines.reporting, "plot_history", real_plot)
    fits = []
    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    report = run_pipeline(pipeline, config, tmp_path / "run")
    assert fits == []  # the finished fit was reused, not redone
    assert report.metrics["epochs_trained"] == 3
    history = next((tmp_path / "run" / "checkpoints").glob("*/history.csv"))
    with history.open(newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2]
    assert (tmp_path / "run" / "plots" / "training.png").is_file()


def test_same_command_twice_gives_the_same_metrics(tmp_path):
    """runtime.deterministic (the default): two runs of the same command agree exactly."""
    from tests.test_cli import run_cli, tiny_args

    cache = tmp_path / "cache"
    for run in ("a", "b"):
        run_cli(*tiny_args(tmp_path / run, cache), "--until", "evaluate")
    first, second = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    for key in ("val_accuracy", "test_accuracy", "best_epoch", "confusion_matrix"):
        assert first[key] == second[key], key
    histories = [
        next((tmp_path / run / "checkpoints").glob("*/history.csv")).read_text() for run in "ab"
    ]
    assert histories[0] == histories[1]


def test_changed_data_folder_reruns_ingest(tmp_path, wav_folder):
    pipeline, config = fsdd_config(
        wav_folder,
        tmp_path / "cache",
        "data.test_speakers=[s3]",
        "data.val_speakers=[s2]",
        "data.train_extra=[]",  # the preset's extras live in ../shared/data, absent in a clone
    )
    first = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    assert run_pipeline(pipeline, config, tmp_path / "run", until="ingest").skipped == ["ingest"]
    soundfile.write(wav_folder / "a_s1_7.wav", tone(310, 0.4, 8000), 8000)  # a new clip
    second = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    assert second.ran == ["ingest"]
    assert second.metrics["examples"]["train"] == first.metrics["examples"]["train"] + 1
    (wav_folder / "a_s1_7.wav").unlink()  # removed again
    third = run_pipeline(pipeline, config, tmp_path / "run", until="ingest")
    assert third.ran == ["ingest"] and third.metrics["examples"] == first.metrics["examples"]


def test_mixup_and_label_smoothing_train_with_soft_targets(tmp_path):
    """model.mixup_alpha / model.label_smoothing: one-hot targets and a categorical loss, the
    usual accuracy columns, and a saved model that predicts like any other."""
    from tests.test_cli import run_cli

    sets = [
        *TINY,
        f"runtime.cache_dir={tmp_path / 'cache'}",
        "train.epochs=2",
        "export.enabled=false",
        "model.mixup_alpha=0.3",
        "model.label_smoothing=0.1",
    ]
    run_cli(
        "run", "speech_commands", "--run-dir", str(tmp_path / "run"), "--until", "train",
        *(a for s in sets for a in ("--set", s)),
    )  # fmt: skip
    import models.features  # noqa: F401 - registers the custom layers

    history = next((tmp_path / "run" / "checkpoints").glob("*/history.csv"))
    with history.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {"accuracy", "val_accuracy", "val_loss"} <= set(rows[0])
    saved = keras.models.load_model(tmp_path / "run" / "stages" / "train" / "model.keras")
    assert saved.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    probs = saved.predict(np.zeros((2, 50, saved.input_shape[-1]), np.float32) + 1.0, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    refused = run_cli(
        "run", "speech_commands", "--run-dir", str(tmp_path / "bad"),
        "--set", "model.label_smoothing=1.0", check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "model.label_smoothing" in refused.stderr
