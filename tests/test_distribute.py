"""tf.distribute: strategy choice from TF_CONFIG, and two loopback workers against one process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipelines import distribute
from pipelines.launch import tf_configs
from tests.test_cli import TINY, run_cli

CLUSTER = json.dumps(
    {
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 1},
    }
)


def test_auto_picks_multi_worker_only_for_a_cluster():
    assert distribute.resolve("auto", {"TF_CONFIG": CLUSTER}) == "multi_worker"
    assert distribute.resolve("auto", {}) in ("default", "mirrored")
    assert distribute.resolve("default", {"TF_CONFIG": CLUSTER}) == "default"
    with pytest.raises(KeyError, match="multi_worker"):
        distribute.resolve("horovod", {})


def test_chief_is_worker_zero_unless_a_chief_is_named():
    assert not distribute.is_chief({"TF_CONFIG": CLUSTER})
    assert distribute.is_chief({"TF_CONFIG": tf_configs([5, 6])[0]})
    assert distribute.is_chief({})
    with_chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker"}}
    assert not distribute.is_chief({"TF_CONFIG": json.dumps(with_chief)})
    assert distribute.cluster_size({"TF_CONFIG": json.dumps(with_chief)}) == 2


def test_bad_tf_config_names_what_was_expected():
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.cluster_spec({"TF_CONFIG": "{cluster"})
    with pytest.raises(ValueError, match="no 'cluster'"):
        distribute.cluster_spec({"TF_CONFIG": "[]"})


def _history(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "stages" / "train" / "history.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_two_loopback_workers_train_like_one_process_on_the_same_global_batch(tmp_path):
    """Two workers with 8 clips each per step against one process with 16 per step: the same
    losses (a fixed data order, no dropout), and only the chief's folder keeps the results."""
    cache = tmp_path / "cache"
    sets = [
        *TINY,
        f"runtime.cache_dir={cache}",
        "train.epochs=2",
        "train.shuffle=false",
        "model.dropout=0",
    ]
    args = [a for s in sets for a in ("--set", s)]
    two = tmp_path / "two"
    result = run_cli(
        "run", "speech_commands", "--workers", "2", "--run-dir", str(two),
        *args, "--set", "train.batch_size=8",
    )  # fmt: skip
    assert "2 workers on 127.0.0.1" in result.stderr
    one = tmp_path / "one"
    run_cli(
        "run", "speech_commands", "--run-dir", str(one), "--until", "train",
        *args, "--set", "train.batch_size=16",
    )  # fmt: skip

    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["stage_seconds"]["train"] > 0  # the chief's own run wrote it
    assert metrics["distribution"] == {
        "strategy": "multi_worker",
        "workers": 2,
        "replicas": 2,
        "global_batch_size": 16,
    }
    assert json.loads((one / "metrics.json").read_text())["distribution"]["strategy"] == "default"
    assert (two / "export" / "saved_model.pb").is_file()
    distributed, single = _history(two), _history(one)
    assert len(distributed) == len(single) == 2
    for a, b in zip(distributed, single, strict=True):
        for key in ("loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-2), (key, distributed, single)
    # the other worker's folder was temporary
    assert not any(p.name.startswith("worker-") for p in two.iterdir())


def test_workers_refuses_to_stop_before_training():
    bad = run_cli("run", "speech_commands", "--workers", "2", "--until", "features", check=False)
    assert bad.returncode != 0 and "--until features stops before train" in bad.stderr


def test_two_workers_translation_loss_is_not_scaled_by_the_replicas(tmp_path):
    """The seq2seq loss is a reduced scalar, which Keras does not divide by the replicas itself:
    two workers must log (and step on) the same loss as one process, not twice it."""
    from tests.test_translation import TINY as TEXT

    sets = [*TEXT, "train.shuffle=false", "model.dropout=0"]
    args = [a for s in sets for a in ("--set", s)]
    two, one = tmp_path / "two", tmp_path / "one"
    run_cli(
        "run", "translation", "--workers", "2", "--run-dir", str(two), "--until", "train",
        *args, "--set", "train.batch_size=16",
    )  # fmt: skip
    run_cli(
        "run", "translation", "--run-dir", str(one), "--until", "train",
        *args, "--set", "train.batch_size=32",
    )  # fmt: skip
    for a, b in zip(_history(two), _history(one), strict=True):
        for key in ("loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-3), key
