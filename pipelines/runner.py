"""The stage runner: fingerprints, skip-if-unchanged, atomic stage outputs, metrics.json.

A stage declares the stages it reads and the config sections it depends on. Its fingerprint hashes
those sections, the stage's version and its inputs' fingerprints, so changing ``train.epochs``
reruns training and what follows, but not ingestion or features.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.files import replace_dir, write_text_atomic
from data.registry import Registry
from pipelines import config as cfg

STAGE_FILE = "_stage.json"


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    Attributes:
        name: unique within the pipeline; its outputs go to ``RUN_DIR/stages/NAME/``.
        run: does the work; writes into ``ctx.out_dir`` and returns a JSON-able summary whose
            ``metrics`` entry (if any) is merged into ``metrics.json``.
        reads: names of earlier stages whose outputs it uses.
        sections: config sections (or ``section.key``) its result depends on.
        version: bump when the stage's code changes its outputs.
    """

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    reads: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    version: int = 1


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of stages with its root config class."""

    name: str
    config_class: type
    stages: tuple[Stage, ...]
    summarize: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None


PIPELINES: Registry[Pipeline] = Registry("pipeline")


@dataclass
class StageContext:
    """What a running stage sees."""

    run_dir: Path
    config: Any
    out_dir: Path
    inputs: dict[str, Path]
    results: dict[str, dict[str, Any]]
    fingerprint: str = ""
    force: bool = False
    final_dir: Path | None = None  # where out_dir is renamed to once the stage succeeds

    def input(self, name: str) -> Path:
        return self.inputs[name]


@dataclass
class RunReport:
    """What a run did: per-stage summaries, which ran and which were reused, and timings."""

    run_dir: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def fingerprint(stage: Stage, config: Any, inputs: dict[str, str]) -> str:
    """Hash of the stage's name, version, config sections and input fingerprints."""
    sections = {}
    for name in stage.sections:  # "section" or "section.key"
        value = config
        for part in name.split("."):
            value = getattr(value, part)
        sections[name] = cfg.to_dict(value)
    payload = {
        "stage": stage.name,
        "version": stage.version,
        "sections": sections,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


def read_stage(stage_dir: Path) -> dict[str, Any] | None:
    """The completion record of a finished stage, or None."""
    marker = stage_dir / STAGE_FILE
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None


def run_pipeline(
    pipeline: Pipeline,
    config: Any,
    run_dir: Path,
    until: str | None = None,
    force: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
) -> RunReport:
    """Runs the stages in order, skipping those whose fingerprint is unchanged.

    Args:
        pipeline: the pipeline to run.
        config: its resolved root config.
        run_dir: where everything goes; created if missing.
        until: stop after this stage.
        force: rerun every stage even if its outputs are current.
        on_stage: called with (stage name, "run" | "skip") before each stage.

    Returns:
        The run report; ``metrics.json`` has been written into ``run_dir``.
    """
    names = [s.name for s in pipeline.stages]
    if until is not None and until not in names:
        raise ValueError(f"--until {until!r}: expected one of {names}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(config, run_dir / "config.yaml")
    stages_root = run_dir / "stages"
    stages_root.mkdir(exist_ok=True)
    report = RunReport(run_dir)
    prints: dict[str, str] = {}
    for stage in pipeline.stages:
        missing = [r for r in stage.reads if r not in prints]
        if missing:
            raise RuntimeError(f"stage {stage.name!r} reads {missing}, which have not run")
        fp = fingerprint(stage, config, {r: prints[r] for r in stage.reads})
        final = stages_root / stage.name
        record = read_stage(final)
        if not force and record and record.get("fingerprint") == fp:
            if on_stage:
                on_stage(stage.name, "skip")
            report.skipped.append(stage.name)
            report.results[stage.name] = record.get("summary", {})
        else:
            if on_stage:
                on_stage(stage.name, "run")
            tmp = stages_root / f".{stage.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            ctx = StageContext(
                run_dir=run_dir,
                config=config,
                out_dir=tmp,
                inputs={r: stages_root / r for r in stage.reads},
                results=report.results,
                fingerprint=fp,
                force=force,
                final_dir=final,
            )
            start = time.perf_counter()
            summary = stage.run(ctx) or {}
            seconds = time.perf_counter() - start
            record = {
                "fingerprint": fp,
                "seconds": round(seconds, 3),
                "summary": summary,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            (tmp / STAGE_FILE).write_text(json.dumps(record, indent=1, default=str))
            replace_dir(tmp, final)
            report.ran.append(stage.name)
            report.seconds[stage.name] = round(seconds, 3)
            report.results[stage.name] = summary
        prints[stage.name] = fp
        report.metrics.update(report.results[stage.name].get("metrics", {}))
        if stage.name == until:
            break
    write_metrics(report)
    return report


def write_metrics(report: RunReport) -> None:
    """Writes ``RUN_DIR/metrics.json`` atomically (stage metrics + ``stage_seconds``)."""
    metrics = dict(report.metrics)
    metrics["stage_seconds"] = report.seconds
    metrics["stages_reused"] = report.skipped
    write_text_atomic(report.run_dir / "metrics.json", json.dumps(metrics, indent=1, default=str))
