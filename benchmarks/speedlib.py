"""What the speed benchmarks share: running the real command line, result rows, slopes.

Each benchmark script can run alone and print its own report, or be run by ``run_all.py`` with
``--json FILE``, which writes its rows (figure, value, target, met) for the one table.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FSDD = SHARED_DATA / "fsdd" / "recordings"


@dataclass
class Row:
    """One figure of the table.

    Attributes:
        section: which benchmark (features, train, serving, scaling, growth).
        figure: what was measured.
        value: the measurement, formatted.
        target: the target, formatted ("" when the figure is reported only).
        met: whether the target was met; None when there is no target (or it was skipped).
        note: the baseline figures behind a ratio, or why it was skipped.
        profile: where the time goes, for a target not met (lines of text).
    """

    section: str
    figure: str
    value: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    profile: list[str] = field(default_factory=list)


def save_rows(rows: list[Row], path: str | None) -> None:
    """Writes ``rows`` as JSON to ``path`` (``run_all.py`` reads it); prints them either way."""
    for row in rows:
        mark = {True: "met", False: "NOT MET", None: ""}[row.met]
        print(f"[{row.section}] {row.figure}: {row.value}  target {row.target or '-'} {mark}")
        if row.note:
            print(f"    {row.note}")
        for line in row.profile:
            print(f"    | {line}")
    if path:
        Path(path).write_text(json.dumps([asdict(r) for r in rows], indent=1))


def run_cli(
    args: list[str],
    log: Path | None = None,
    env: dict[str, str] | None = None,
    profile: Path | None = None,
) -> float:
    """Runs ``python run.py ARGS`` from the repository root; its wall seconds.

    With ``profile``, runs it under cProfile and writes the statistics there.

    Raises:
        RuntimeError: the command failed; the message carries the end of its output.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "run.py"]
        + args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    seconds = time.perf_counter() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"run.py {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return seconds


def run_pipeline(
    pipeline: str,
    run_dir: Path,
    sets: list[str],
    until: str | None = None,
    extra: list[str] | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """``run.py run PIPELINE --run-dir RUN_DIR --set ...``; the run's ``metrics.json``."""
    args = ["run", pipeline, "--run-dir", str(run_dir)]
    for item in sets:
        args += ["--set", item]
    if until:
        args += ["--until", until]
    log = run_dir.parent / f"{run_dir.name}.log"
    wall = run_cli(args + (extra or []), log=log, profile=profile)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_seconds"] = wall  # the whole command, process start-up included
    return metrics


def stage_seconds(run_dir: Path, stage: str) -> float:
    """Seconds of the last run of ``stage``, from its record in ``RUN_DIR/stages/STAGE``.

    ``metrics.json`` lists only the stages that ran in the last command; ``--workers`` ends with
    a pass that reuses every stage, so there the record is the only place left.
    """
    return float(json.loads((run_dir / "stages" / stage / "_stage.json").read_text())["seconds"])


def loglog_slope(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(size): 1 is linear, 2 quadratic."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-9)) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def profile_lines(stats_file: Path, limit: int = 12, match: str = "") -> list[str]:
    """The ``limit`` functions with the most cumulative time in a cProfile output file.

    Args:
        stats_file: what ``cProfile`` wrote.
        limit: how many functions.
        match: a regular expression the ``file:line(function)`` must match (pstats' filter).
    """
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=out)
    stats.sort_stats("cumulative").print_stats(*([match] if match else []), limit)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return [line for line in lines[start:] if line.strip()]


def timed(fn: Any, repeats: int) -> list[float]:  # noqa: ANN401 - any callable
    """Seconds of each of ``repeats`` calls of ``fn`` after two untimed warm-up calls."""
    fn()
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out
