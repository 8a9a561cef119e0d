"""The stage runner: fingerprints, skip-if-unchanged, atomic stage outputs, locks, metrics.json.

A stage declares the stages it reads, the config sections it depends on, the state of the
external files it reads (``watch``) and the files it publishes into the run directory
(``outputs``). Its fingerprint hashes those sections, that state, the stage's version and its
inputs' fingerprints, so changing ``train.epochs`` reruns training and what follows, but not
ingestion or features, and adding a clip to the data folder reruns everything.

Everything a stage writes goes to a private temporary folder first. When the stage succeeds the
runner publishes its declared outputs (``export/``, ``vocab/``, ``plots/...``) with renames,
records their file sizes, and only then marks the stage complete. A later run reuses the stage
only if its fingerprint matches and every published output is still there, whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.files import replace_dir, write_text_atomic
from data.registry import Registry
from pipelines import config as cfg
from pipelines.locking import RunDirLock

STAGE_FILE = "_stage.json"
OUTPUTS = "_outputs"  # inside a stage's temporary folder: what the runner publishes


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    Attributes:
        name: unique within the pipeline; its outputs go to ``RUN_DIR/stages/NAME/``.
        run: does the work; writes into ``ctx.out_dir`` and returns a JSON-able summary whose
            ``metrics`` entry (if any) is merged into ``metrics.json``.
        version: bump when the stage's code changes its outputs (every stage sets it).
        reads: names of earlier stages whose outputs it uses.
        sections: config sections (or ``section.key``) its result depends on.
        outputs: paths relative to the run directory that the stage publishes (a file or a
            folder); the stage writes them at ``ctx.output(path)``.
        watch: returns the state of the external files the stage reads (e.g. a hash of the data
            folder's listing), given the config; part of the fingerprint.
    """

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    version: int
    reads: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    watch: Callable[[Any], Any] | None = None


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

    def output(self, path: str) -> Path:
        """Where to write the declared output ``path``; the runner publishes it on success."""
        target = self.out_dir / OUTPUTS / path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


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
    """Hash of the stage's name, version, config sections, watched files and input fingerprints."""
    sections = {}
    for name in stage.sections:  # "section" or "section.key"
        value = config
        for part in name.split("."):
            value = getattr(value, part)
        sections[name] = cfg.fingerprint_dict(value)
    payload = {
        "stage": stage.name,
        "version": stage.version,
        "sections": sections,
        "inputs": inputs,
        "watched": stage.watch(config) if stage.watch else None,
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
    rerun: tuple[str, ...] = (),
    frozen: tuple[str, ...] = (),
) -> RunReport:
    """Runs the stages in order, skipping those whose fingerprint and outputs are unchanged.

    The run directory is locked for the whole call (``RunDirBusyError`` if another process holds
    it).

    Args:
        pipeline: the pipeline to run.
        config: its resolved root config.
        run_dir: where everything goes; created if missing.
        until: stop after this stage.
        force: rerun every stage even if its outputs are current.
        on_stage: called with (stage name, "run" | "skip" | reason) before each stage.
        rerun: names of stages to rerun even if current (e.g. ``("export",)``).
        frozen: names of stages that must be reused: if one is out of date, stop with an error
            instead of recomputing it (``run.py export`` never retrains behind your back).

    Returns:
        The run report; ``metrics.json`` has been written into ``run_dir``.
    """
    names = [s.name for s in pipeline.stages]
    if until is not None and until not in names:
        raise ValueError(f"--until {until!r}: expected one of {names}")
    unknown = [name for name in rerun if name not in names]
    if unknown:
        raise ValueError(f"Stages to rerun {unknown}: expected some of {names}")
    with RunDirLock(run_dir):
        return _run_locked(pipeline, config, Path(run_dir), until, force, on_stage, rerun, frozen)


def _run_locked(
    pipeline: Pipeline,
    config: Any,
    run_dir: Path,
    until: str | None,
    force: bool,
    on_stage: Callable[[str, str], None] | None,
    rerun: tuple[str, ...],
    frozen: tuple[str, ...],
) -> RunReport:
    cfg.save(config, run_dir / "config.yaml")
    stages_root = run_dir / "stages"
    stages_root.mkdir(exist_ok=True)
    # left by a killed run (we hold the lock): private stage folders, replaced outputs
    for stale in [
        *stages_root.glob(".*.tmp"),
        *stages_root.glob(".*.old"),
        *run_dir.glob(".*.old"),
    ]:
        shutil.rmtree(stale, ignore_errors=True)
    report = RunReport(run_dir)
    prints: dict[str, str] = {}
    for stage in pipeline.stages:
        missing = [r for r in stage.reads if r not in prints]
        if missing:
            raise RuntimeError(f"stage {stage.name!r} reads {missing}, which have not run")
        fp = fingerprint(stage, config, {r: prints[r] for r in stage.reads})
        final = stages_root / stage.name
        record = read_stage(final)
        stale = _why_stale(record, fp, run_dir)
        if not force and stage.name not in rerun and stale is None:
            if on_stage:
                on_stage(stage.name, "skip")
            report.skipped.append(stage.name)
            report.results[stage.name] = record.get("summary", {})
        else:
            if stage.name in frozen:
                raise RuntimeError(
                    f"Stage {stage.name!r} of {run_dir} is out of date ({stale}); rerun the "
                    "pipeline with `run.py run` first."
                )
            if on_stage:
                on_stage(stage.name, "run" if stale in (None, "new") else f"run ({stale})")
            summary, seconds = _run_stage(stage, config, run_dir, fp, force, report.results)
            report.ran.append(stage.name)
            report.seconds[stage.name] = round(seconds, 3)
            report.results[stage.name] = summary
        prints[stage.name] = fp
        report.metrics.update(report.results[stage.name].get("metrics", {}))
        if stage.name == until:
            break
    write_metrics(report)
    return report


def _why_stale(record: dict[str, Any] | None, fp: str, run_dir: Path) -> str | None:
    """Why a finished stage cannot be reused, or None if it can."""
    if not record:
        return "new"
    if record.get("fingerprint") != fp:
        return "inputs or config changed"
    for path, expected in record.get("outputs", {}).items():
        if expected is None:
            continue  # declared, not produced (e.g. export disabled)
        if _manifest(run_dir / path) != expected:
            return f"output {path} is missing or changed"
    return None


def _run_stage(
    stage: Stage,
    config: Any,
    run_dir: Path,
    fp: str,
    force: bool,
    results: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], float]:
    """Runs one stage in a private folder, publishes its outputs, then marks it complete."""
    stages_root = run_dir / "stages"
    final = stages_root / stage.name
    tmp = stages_root / f".{stage.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ctx = StageContext(
        run_dir=run_dir,
        config=config,
        out_dir=tmp,
        inputs={r: stages_root / r for r in stage.reads},
        results=results,
        fingerprint=fp,
        force=force,
        final_dir=final,
    )
    start = time.perf_counter()
    try:
        summary = stage.run(ctx) or {}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    produced = tmp / OUTPUTS
    undeclared = _undeclared(produced, stage.outputs)
    if undeclared:
        raise RuntimeError(
            f"stage {stage.name!r} wrote undeclared outputs {undeclared}; declared: "
            f"{list(stage.outputs)}"
        )
    # The old completion mark goes first: a crash while publishing leaves the stage unfinished.
    (final / STAGE_FILE).unlink(missing_ok=True)
    outputs = {path: _publish(produced / path, run_dir / path) for path in stage.outputs}
    shutil.rmtree(produced, ignore_errors=True)
    record = {
        "fingerprint": fp,
        "version": stage.version,
        "seconds": round(seconds, 3),
        "summary": summary,
        "outputs": outputs,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / STAGE_FILE).write_text(json.dumps(record, indent=1, default=str))
    replace_dir(tmp, final)
    return summary, seconds


def _undeclared(produced: Path, declared: tuple[str, ...]) -> list[str]:
    if not produced.is_dir():
        return []
    found = []
    for path in produced.rglob("*"):
        rel = path.relative_to(produced).as_posix()
        inside = any(
            rel == d or rel.startswith(f"{d}/") or d.startswith(f"{rel}/") for d in declared
        )
        if not inside:
            found.append(rel)
    return sorted(found)


def _publish(src: Path, dest: Path) -> dict[str, int] | None:
    """Moves ``src`` (file or folder) to ``dest`` atomically; returns what was published.

    If the stage did not produce ``src``, a stale ``dest`` from an earlier run is removed.
    """
    if not src.exists():
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(src)
    if src.is_dir():
        replace_dir(src, dest)
    else:
        os.replace(src, dest)
    return manifest


def _manifest(path: Path) -> dict[str, int] | None:
    """Relative path -> size of every file of an output (``{".": size}`` for a single file)."""
    if path.is_file():
        return {".": path.stat().st_size}
    if not path.is_dir():
        return None
    return {
        p.relative_to(path).as_posix(): p.stat().st_size
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def write_metrics(report: RunReport) -> None:
    """Writes ``RUN_DIR/metrics.json`` atomically (stage metrics + ``stage_seconds``)."""
    metrics = dict(report.metrics)
    metrics["stage_seconds"] = report.seconds
    metrics["stages_reused"] = report.skipped
    write_text_atomic(report.run_dir / "metrics.json", json.dumps(metrics, indent=1, default=str))
