"""Hyperparameter tuning: the config space, each tuner, failures, resume, best config, distributed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner
import pytest

from data.checks import ConfigError
from models.tuning import TUNERS, ParamSpec, build_oracle, declare, overrides
from pipelines import config as cfg
from tests.conftest import ROOT
from tests.fake_pipeline import FAKE, FakeConfig

SPACE = {
    "model.x": {"type": "float", "min": 0.0, "max": 1.0},
    "model.kind": {"type": "choice", "values": ["a", "b"]},
}


def fake_config(**tune) -> FakeConfig:
    raw = {"tune": {"objective": "val_loss", "max_trials": 4, "space": SPACE, **tune}}
    return cfg.build(FakeConfig, raw)


def read_trials(run_dir: Path) -> list[dict]:
    with (run_dir / "tuning" / "trials.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ the space


def test_space_is_parsed_from_yaml_and_declared():
    config = fake_config(
        space={**SPACE, "model.y": {"type": "int", "min": 1, "max": 64, "log": True}}
    )
    assert config.tune.space["model.x"] == ParamSpec(type="float", min=0.0, max=1.0)
    hp = keras_tuner.HyperParameters()
    declare(hp, config.tune.space)
    assert set(hp.values) == {"model.x", "model.kind", "model.y"}
    nested = overrides({"model.x": 0.2, "model.y": 8.0, "tuner/epochs": 3}, config.tune.space)
    assert nested == {"model": {"x": 0.2, "y": 8}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "choice", "values": []}, "tune.space.model.x.values"),
        ({"type": "float", "min": 1.0, "max": 0.5}, "tune.space.model.x.max"),
        ({"type": "float", "min": 0.0, "max": 1.0, "log": True}, "tune.space.model.x.min"),
        (
            {"type": "int", "min": 32, "max": 128, "step": 32, "log": True},
            r"tune.space.model.x.step: expected 0 with log: true.*Received: 32",
        ),
        ({"type": "float", "max": 1.0}, "both min and max"),
        ({"type": "gaussian"}, "tune.space.model.x.type"),
        ({"type": "int", "min": 0.5, "max": 3}, "an integer"),
        ({"kind": "float"}, "Unknown config key 'tune.space.model.x.kind'"),
    ],
)
def test_malformed_space_is_rejected(spec, message):
    with pytest.raises(ConfigError, match=message):
        fake_config(space={"model.x": spec})


def test_bad_budget_tuner_and_empty_space_are_rejected():
    with pytest.raises(ConfigError, match="tune.max_trials"):
        fake_config(max_trials=0)
    with pytest.raises(ConfigError, match="tune.tuner"):
        fake_config(tuner="grid")
    with pytest.raises(ConfigError, match="a dotted config key"):
        fake_config(space={"units": {"type": "int", "min": 1, "max": 2}})
    with pytest.raises(ConfigError, match="tune.space is empty"):
        build_oracle(fake_config(space={}).tune, 0)


def test_unknown_objective_fails_every_trial_with_a_clear_error(tmp_path):
    from pipelines.tuning import tune_pipeline

    config = fake_config(objective="val_bleu", max_trials=2)
    with pytest.raises(RuntimeError, match="All 2 trials failed.*val_bleu"):
        tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path)


# ------------------------------------------------------------------ searches


@pytest.mark.parametrize("tuner", sorted(TUNERS.names()))
def test_each_tuner_finds_and_retrains_the_best(tmp_path, tuner):
    from pipelines.tuning import tune_pipeline

    config = fake_config(tuner=tuner, max_trials=5, epochs=3, hyperband_factor=3)
    rows, best, report = tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path)
    trials = read_trials(tmp_path)
    assert len(trials) == len(rows) >= 2
    assert all(t["status"] == "COMPLETED" for t in trials)
    values = [(t["model.x"], t["model.kind"]) for t in trials]
    if tuner != "hyperband":  # hyperband reruns promising configurations with more epochs
        assert len(set(values)) == len(values)
    objectives = [float(t["objective"]) for t in trials]
    best_row = trials[objectives.index(min(objectives))]
    assert best.model.x == pytest.approx(float(best_row["model.x"]))
    assert best.train.epochs == 3 and best.export.enabled  # the base config, not trial settings
    assert report is not None and (tmp_path / "export").is_dir()
    assert (tmp_path / "tuning" / "tuning.png").stat().st_size > 0


def test_best_yaml_round_trips_through_run_config(tmp_path):
    from pipelines.tuning import tune_pipeline

    config = fake_config(max_trials=3, retrain=False)
    _, best, report = tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path)
    assert report is None
    again = cfg.build(FakeConfig, cfg.load_raw("_", [str(tmp_path / "tuning" / "best.yaml")]))
    assert again == best


def test_the_search_draws_the_same_trials_for_the_same_seed(tmp_path):
    from pipelines.tuning import tune_pipeline

    config = fake_config(max_trials=4, retrain=False)  # runtime.seed 0, the default
    drawn = []
    for run in ("first", "second"):
        tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path / run)
        drawn.append([(t["model.x"], t["model.kind"]) for t in read_trials(tmp_path / run)])
    assert drawn[0] == drawn[1]


def test_failed_trials_are_recorded_and_the_search_finishes(tmp_path):
    from pipelines.tuning import tune_pipeline

    space = {
        "model.kind": {"type": "choice", "values": ["a", "bad"]},
        **{"model.x": SPACE["model.x"]},
    }
    config = fake_config(max_trials=6, space=space, retrain=False)
    tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path)
    trials = read_trials(tmp_path)
    failed = [t for t in trials if t["status"] == "FAILED"]
    assert failed and all("always fails" in t["error"] for t in failed)
    assert all(t["model.kind"] == "bad" for t in failed)
    assert any(t["status"] == "COMPLETED" for t in trials)


def test_all_trials_failing_is_an_error(tmp_path):
    from pipelines.tuning import tune_pipeline

    config = fake_config(max_trials=2, space={"model.kind": {"type": "choice", "values": ["bad"]}})
    with pytest.raises(RuntimeError, match="All 1 trials failed|All 2 trials failed"):
        tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path)


# ------------------------------------------------------------------ resume after a kill

RESUME_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pipelines import config as cfg
from pipelines.tuning import tune_pipeline
from tests.fake_pipeline import FAKE, FakeConfig
from tests.test_tuning import fake_config
config = fake_config(max_trials=3, retrain=False)
tune_pipeline(FAKE, cfg.to_dict(config), config.tune, {run_dir!r})
"""


def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "train.log"
    pause = tmp_path / "pause"
    pause.write_text("1")  # trial 1 hangs in training the first time
    env = {**os.environ, "FAKE_TRAIN_LOG": str(log), "FAKE_PAUSE_FILE": str(pause)}
    script = RESUME_SCRIPT.format(root=str(ROOT), run_dir=str(run_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    started = run_dir / "tuning" / "trials" / "1" / "started"
    deadline = time.time() + 120
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert started.exists(), "trial 1 never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pause.unlink()
    subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, timeout=300)
    trials = read_trials(run_dir)
    assert [t["status"] for t in trials] == ["COMPLETED"] * 3
    runs = log.read_text().split()
    assert runs.count("0") == 1  # finished before the kill: not rerun
    assert runs.count("1") == 2  # cut off by the kill: retried
    assert runs.count("2") == 1


# ------------------------------------------------------------------ distributed


def _worker_pids(run_dir: Path) -> dict[str, int]:
    pids = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if str(run_dir) not in cmdline:
            continue
        for item in environ:
            if item.startswith("KERASTUNER_TUNER_ID=tuner"):
                pids[item.split("=", 1)[1]] = int(proc.name)
    return pids


def test_chief_and_two_workers_on_loopback_survive_a_killed_worker(tmp_path):
    run_dir = tmp_path / "run"
    sets = [
        "data.synthetic.examples=300",
        "data.val_percent=10",
        "data.test_percent=10",
        "model.units=8",
        "model.embedding_dim=8",
        "tune.max_trials=4",
        "tune.epochs=1",
        "tune.retrain=false",
        "tune.space={model.units: {type: int, min: 4, max: 32, step: 4}, model.embedding_dim: null, model.attention: null, model.dropout: null}",
    ]
    args = [
        sys.executable,
        "run.py",
        "tune",
        "translation",
        "--workers",
        "2",
        "--run-dir",
        str(run_dir),
    ]
    args += [a for s in sets for a in ("--set", s)]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        for trial_dir in sorted((run_dir / "tuning" / "trials").glob("*")):
            owner = trial_dir / "tuner_id.txt"
            if owner.is_file() and owner.read_text().startswith("tuner"):
                pid = _worker_pids(run_dir).get(owner.read_text().strip())
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed = owner.read_text().strip()
                    break
        time.sleep(0.3)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert killed, "no worker was running a trial to kill"
    assert f"worker {killed} exited" in output and "restarting it" in output
    trials = read_trials(run_dir)
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials), trials
    assert {t["tuner_id"] for t in trials} <= {"tuner0", "tuner1"}
    assert len({t["trial"] for t in trials}) == 4
    best = json.loads((run_dir / "tuning" / "best.json").read_text())
    assert best["trial"] in {t["trial"] for t in trials}


def test_wall_time_budget_stops_starting_trials(tmp_path, monkeypatch):
    from pipelines.tuning import tune_pipeline

    monkeypatch.setenv("FAKE_SLEEP", "0.4")
    config = fake_config(max_trials=20, max_minutes=0.02, retrain=False)  # 1.2 s
    rows, _, _ = tune_pipeline(FAKE, cfg.to_dict(config), config.tune, tmp_path)
    assert 2 <= len(rows) < 20
    assert all(r["status"] == "COMPLETED" for r in rows)  # the running trial was allowed to finish
