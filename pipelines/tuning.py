"""``run.py tune``: keras-tuner search over a pipeline's config, on one machine or several.

Each trial runs the pipeline's own stages (ingest ... train) in ``RUN_DIR/tuning/trials/ID`` with
the trial's hyperparameters applied as config overrides, so a tuned model is built, trained and
checkpointed exactly like ``run`` does. keras-tuner's oracle samples, records and resumes the
search (``overwrite=False``); with ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` /
``KERASTUNER_ORACLE_PORT`` set the same command acts as the chief (``chief``) or a worker.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keras_tuner

from data.files import write_json
from models.tuning import TuneConfig, build_oracle, overrides
from pipelines import config as cfg
from pipelines.locking import RunDirLock
from pipelines.runner import Pipeline, run_pipeline

TRIAL_COLUMNS = ("trial", "status", "objective", "epochs", "seconds", "tuner_id", "error")


def _best_logged(history_csv: Path, objective: str, goal: str) -> tuple[float, int]:
    """Best value of ``objective`` in a CSVLogger file and the number of epochs logged."""
    with history_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    values = [float(r[objective]) for r in rows if r.get(objective) not in (None, "")]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        raise RuntimeError(
            f"Objective {objective!r} was not logged (or never finite) in {history_csv}; "
            f"logged columns: {sorted(rows[0]) if rows else []}"
        )
    return (min(values) if goal == "min" else max(values)), len(rows)


class PipelineTuner(keras_tuner.Tuner):
    """A keras-tuner ``Tuner`` whose trial is the pipeline's own ingest-to-train run."""

    def __init__(
        self, pipeline: Pipeline, base_raw: dict[str, Any], tune: TuneConfig, run_dir: Path
    ) -> None:
        seed = int(base_raw.get("runtime", {}).get("seed", 0))
        oracle = build_oracle(tune, seed)
        oracle.max_trials = tune.max_trials  # hyperband too: the budget is a number of trials
        self.pipeline = pipeline
        self.base_raw = base_raw
        self.tune = tune
        self.run_dir = Path(run_dir)
        super().__init__(
            oracle=oracle,
            directory=str(self.run_dir / "tuning"),
            project_name="search",
            overwrite=False,
        )

    def trial_config(self, values: dict[str, Any], epochs: int | None = None):  # noqa: ANN201
        """The pipeline config of a trial: the base config plus the trial's hyperparameters."""
        raw = cfg.deep_merge(self.base_raw, overrides(values, self.tune.space))
        if epochs is not None:
            train = {"epochs": epochs, "early_stopping": self.tune.early_stopping}
            if self.tune.objective in ("val_accuracy", "val_loss"):
                train["monitor"] = self.tune.objective
            raw = cfg.deep_merge(raw, {"train": train, "export": {"enabled": False}})
        return cfg.build(self.pipeline.config_class, raw)

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:  # noqa: ANN001, ANN002, ANN003
        values = trial.hyperparameters.values
        epochs = int(values.get("tuner/epochs", self.tune.epochs))
        config = self.trial_config(values, epochs)
        trial_dir = self.run_dir / "tuning" / "trials" / trial.trial_id
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "tuner_id.txt").write_text(os.environ.get("KERASTUNER_TUNER_ID", "local"))
        start = time.perf_counter()
        print(f"trial {trial.trial_id}: {_describe(values, self.tune)}", flush=True)
        run_pipeline(self.pipeline, config, trial_dir, until="train")
        value, logged = _best_logged(
            trial_dir / "stages" / "train" / "history.csv", self.tune.objective, self.tune.goal
        )
        return {
            self.tune.objective: value,
            "epochs": float(logged),
            "seconds": round(time.perf_counter() - start, 1),
        }


def _describe(values: dict[str, Any], tune: TuneConfig) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items() if k in tune.space)


def format_value(value: Any) -> str:
    """Floats with 3 significant digits, the rest as they are."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _stop_at_deadline(oracle, minutes: float) -> threading.Timer | None:  # noqa: ANN001
    """After ``minutes``, no new trial starts (running trials finish)."""
    if not minutes:
        return None

    def stop() -> None:
        oracle.max_trials = max(len(oracle.trials), 1)

    timer = threading.Timer(minutes * 60, stop)
    timer.daemon = True
    timer.start()
    return timer


def _last_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return lines[-1][:300] if lines else ""


def _read_tuner_id(trial_dir: Path) -> str:
    path = trial_dir / "tuner_id.txt"
    return path.read_text().strip() if path.is_file() else ""


def trial_rows(oracle, tune: TuneConfig, trial_dirs: Path) -> list[dict[str, Any]]:  # noqa: ANN001
    """One row per trial: hyperparameters, objective, epochs, status, seconds, error."""
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        metrics = trial.metrics
        objective = (
            metrics.get_best_value(tune.objective) if metrics.exists(tune.objective) else None
        )
        row = {
            "trial": trial_id,
            "status": str(trial.status),
            "objective": objective,
            "epochs": int(metrics.get_last_value("epochs")) if metrics.exists("epochs") else None,
            "seconds": metrics.get_last_value("seconds") if metrics.exists("seconds") else None,
            "tuner_id": _read_tuner_id(trial_dirs / trial_id),
            "error": _last_line(getattr(trial, "message", None)),
        }
        for name in tune.space:
            row[name] = trial.hyperparameters.values.get(name)
        rows.append(row)
    return rows


def write_trials_csv(rows: list[dict[str, Any]], path: Path, tune: TuneConfig) -> None:
    import io

    from data.files import write_text_atomic

    columns = [*TRIAL_COLUMNS, *tune.space]
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_distributed(argv: list[str], workers: int, max_restarts: int = 3) -> int:
    """Starts a chief and ``workers`` workers on 127.0.0.1 and supervises them.

    The chief serves the oracle and, once every trial is done, writes the results and retrains
    the best configuration. A worker that dies (killed, crashed) is restarted with the same tuner
    id, so the oracle hands it back its unfinished trial, which resumes.

    Args:
        argv: the ``run.py tune ...`` arguments without ``--workers``.
        workers: number of worker processes.
        max_restarts: restarts allowed per worker.

    Returns:
        The chief's exit code.
    """
    port = _free_port()
    base_env = {
        **os.environ,
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
    }
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "run.py"), *argv]

    def start(tuner_id: str) -> subprocess.Popen:
        return subprocess.Popen(command, env={**base_env, "KERASTUNER_TUNER_ID": tuner_id})

    chief = start("chief")
    time.sleep(3)  # let the chief open its port before the workers dial in
    procs = {f"tuner{i}": start(f"tuner{i}") for i in range(workers)}
    restarts = dict.fromkeys(procs, 0)
    print(f"tune: chief on 127.0.0.1:{port}, workers {sorted(procs)}", flush=True)
    while chief.poll() is None:
        for tuner_id, proc in list(procs.items()):
            code = proc.poll()
            if code not in (None, 0) and restarts[tuner_id] < max_restarts:
                restarts[tuner_id] += 1
                print(
                    f"tune: worker {tuner_id} exited with code {code}; restarting it "
                    f"({restarts[tuner_id]}/{max_restarts}) to resume its trial",
                    flush=True,
                )
                procs[tuner_id] = start(tuner_id)
        time.sleep(1)
    for proc in procs.values():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return chief.returncode


def tune_pipeline(pipeline: Pipeline, base_raw: dict[str, Any], tune: TuneConfig, run_dir: Path):  # noqa: ANN201
    """Runs (or resumes) the search; on the chief or alone, also reports and retrains the best.

    Returns:
        ``None`` on a worker; else ``(rows, best_config, report)`` where ``report`` is the
        runner's report of the retrained best configuration (``None`` without retraining).
    """
    from keras_tuner.src.distribute import utils as dist_utils

    run_dir = Path(run_dir)
    base_raw = {k: v for k, v in base_raw.items() if k != "tune"}
    is_worker = dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()
    if is_worker:  # workers share the chief's folder; each trial folder is locked by its runner
        PipelineTuner(pipeline, base_raw, tune, run_dir).search()
        return None
    with RunDirLock(run_dir / "tuning", what="tuning directory"):
        tuner = PipelineTuner(pipeline, base_raw, tune, run_dir)
        _stop_at_deadline(tuner.oracle, tune.max_minutes)
        tuner.search()
        return _report(tuner, pipeline, tune, run_dir)


def _report(tuner: PipelineTuner, pipeline: Pipeline, tune: TuneConfig, run_dir: Path):  # noqa: ANN202
    """Writes trials.csv, best.yaml/json and the plot; retrains the best configuration."""
    tuning_dir = run_dir / "tuning"
    rows = trial_rows(tuner.oracle, tune, tuning_dir / "trials")
    write_trials_csv(rows, tuning_dir / "trials.csv", tune)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r["objective"] is not None]
    if not completed:
        errors = sorted({r["error"] for r in rows if r["error"]})
        raise RuntimeError(
            f"All {len(rows)} trials failed; nothing to report. Errors: {errors or 'none recorded'}"
            f". See {tuning_dir / 'trials.csv'}"
        )
    best = (min if tune.goal == "min" else max)(completed, key=lambda r: r["objective"])
    best_values = {k: best[k] for k in tune.space}
    best_config = tuner.trial_config(best_values)
    cfg.save(best_config, tuning_dir / "best.yaml")
    write_json(
        tuning_dir / "best.json",
        {"trial": best["trial"], "objective": best["objective"], "values": best_values},
    )
    from pipelines.reporting import plot_tuning

    plot_tuning(rows, tune, tuning_dir / "tuning.png")
    report = None
    if tune.retrain:
        report = run_pipeline(pipeline, best_config, run_dir)
    return rows, best_config, report
