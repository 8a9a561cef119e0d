"""Every speed figure in one run: the table of figures, targets and whether each was met.

Runs, each in its own process and against a plain baseline measured in the same run:
``feature_extraction.py`` (features stage cold and warm against a librosa loop over FSDD, and
what the feature cache key covers), ``train_throughput.py`` (train stage against a bare
``model.fit``, both pipelines), ``serving_speed.py`` (both exports), ``cost_growth.py`` (three
sizes each, log-log slopes) and ``scaling.py`` (two loopback workers against one process).
Prints one table, then the profile of each target not met, and writes the table to
``runs/benchmarks/speed.md`` and ``speed.json`` (``--out``). About 10 minutes on 2 cores.

Usage: python benchmarks/run_all.py [--out DIR] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.speedlib import ROOT, Row  # noqa: E402

HERE = Path(__file__).resolve().parent


def sections(work: Path) -> dict[str, list[str]]:
    """Each benchmark's command line (the later ones reuse the train benchmark's runs)."""
    return {
        "features": ["feature_extraction.py"],
        "train": ["train_throughput.py", "--work", str(work)],
        "serving": ["serving_speed.py", "--work", str(work)],
        "growth": [
            "cost_growth.py",
            "--translation-run",
            str(work / "translation"),
            "--export",
            str(work / "translation-export-beam4"),
        ],
        "scaling": ["scaling.py"],
    }


def machine() -> str:
    """CPU model, cores, GPUs and versions, for the table's header."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else model
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tensorflow as tf, keras, librosa; "
            "print(tf.__version__, keras.__version__, librosa.__version__, "
            "len(tf.config.list_physical_devices('GPU')))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout.split()
    tf_v, keras_v, librosa_v, gpus = (versions + ["?"] * 4)[:4]
    return (
        f"{model}, {os.cpu_count()} cores, {gpus} GPU; Python {platform.python_version()}, "
        f"TensorFlow {tf_v}, Keras {keras_v}, librosa {librosa_v}"
    )


def run_section(name: str, argv: list[str], work: Path) -> tuple[list[Row], float]:
    out = work / f"{name}.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / argv[0]), *argv[1:], "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    seconds = time.perf_counter() - start
    (work / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode or not out.is_file():
        tail = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-6:]
        return [Row(name, f"{argv[0]} failed", "error", met=False, profile=tail)], seconds
    return [Row(**r) for r in json.loads(out.read_text())], seconds


def markdown(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| section | figure | value | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(f"| {r.section} | {r.figure} | {r.value} | {r.target or '-'} | {met} |")
    notes = [f"- {r.section}, {r.figure}: {r.note}" for r in rows if r.note]
    profiles = []
    for r in rows:
        if r.profile:
            profiles += [
                "",
                f"Where the time goes: {r.section}, {r.figure}",
                "",
                "```",
                *r.profile,
                "```",
            ]
    return "\n".join([*lines, "", "Baselines and details:", "", *notes, *profiles]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks")
    parser.add_argument("--only", nargs="*", help="run only these sections")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-all-"))
    start = time.perf_counter()
    rows: list[Row] = []
    took: dict[str, float] = {}
    for name, argv in sections(work).items():
        if args.only and name not in args.only:
            continue
        print(f"running {name} ...", flush=True)
        section_rows, took[name] = run_section(name, argv, work)
        rows += section_rows
    total = time.perf_counter() - start
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in took.items())
    header = (
        f"Speed figures, {time.strftime('%Y-%m-%d')}: {machine()}. run_all took "
        f"{total / 60:.1f} min ({spent})."
    )
    text = markdown(rows, header)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.md").write_text(text)
    (args.out / "speed.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "seconds": total,
                "sections": took,
                "rows": [r.__dict__ for r in rows],
            },
            indent=1,
        )
    )
    print(f"written: {args.out / 'speed.md'}, {args.out / 'speed.json'}; logs in {work}")


if __name__ == "__main__":
    main()
