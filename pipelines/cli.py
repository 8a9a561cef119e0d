"""The command line: each subcommand maps to one function."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PIPELINES = ("speech_commands", "translation")
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

EPILOG = """examples:
  python run.py                                   run the default pipelines on built-in data
  python run.py run speech_commands --set train.epochs=5
  python run.py run fsdd --set data.source=fsdd:../shared/data/fsdd/recordings
  python run.py predict runs/speech_commands-*/export clip.wav
  python run.py run tatoeba_spa_eng               Spanish -> English on Tatoeba pairs
  python run.py predict runs/translation-*/export "the 3rd of March, 2021"
  python run.py detect runs/speech_commands-*/export long_recording.wav
  python run.py tune-detector runs/speech_commands-*   detect's settings, chosen on validation clips
  python run.py serve runs/speech_commands-* runs/translation-*   REST API and page on :8501
  python run.py export runs/speech_commands-20260101-120000
  python run.py study gradients --quick           vanishing/exploding gradients, measured
  python run.py tune speech_commands --set tune.max_trials=4
  python run.py tune translation --workers 2       a chief and two workers on this machine
  python run.py list
"""


def _load_pipelines() -> None:
    import pipelines.speech_commands  # noqa: F401 - registers the pipelines
    import pipelines.translation  # noqa: F401


def resolve_config(name: str, config_files=(), overrides=()):  # noqa: ANN001, ANN201
    """Builds the typed config for a pipeline or preset ``name`` plus files and overrides.

    Returns:
        ``(pipeline, config)``.
    """
    from pipelines import config as cfg
    from pipelines.runner import PIPELINES

    _load_pipelines()
    raw = cfg.load_raw(name, config_files, overrides)
    pipeline_name = raw.get("pipeline", name)
    if pipeline_name not in PIPELINES:
        choices = sorted(set(PIPELINES.names()) | set(cfg.preset_names()))
        raise cfg.ConfigError(f"Unknown pipeline or preset {name!r}. Expected one of {choices}")
    pipeline = PIPELINES.get(pipeline_name)
    raw["pipeline"] = pipeline_name
    return pipeline, cfg.build(pipeline.config_class, raw)


def _default_run_dir(pipeline: str) -> Path:
    return Path("runs") / f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}"


def _progress(name: str, action: str) -> None:
    """Prints ``running stage NAME [(why)]`` or ``reusing stage NAME``."""
    from rich.console import Console

    verb, _, why = action.partition(" ")
    Console(stderr=True, highlight=False).print(
        f"[bold]{'running' if verb == 'run' else 'reusing'}[/] stage {name}"
        + (f" {why}" if why else "")
    )


def run_one(  # noqa: ANN201
    name: str,
    config_files=(),  # noqa: ANN001
    overrides=(),  # noqa: ANN001
    run_dir=None,  # noqa: ANN001
    until=None,  # noqa: ANN001
    force=False,  # noqa: ANN001
    show: bool = True,
):
    """Runs one pipeline and prints its summary (unless ``show`` is false).

    Returns:
        The runner's report and the summary rows.
    """
    from pipelines.runner import run_pipeline

    pipeline, config = resolve_config(name, config_files, overrides)
    run_dir = Path(run_dir) if run_dir else _default_run_dir(pipeline.name)
    from pipelines import distribute

    if distribute.cluster_size() > 1:
        # a multi-worker strategy must exist before TensorFlow runs its first op
        distribute.prepare(config.runtime.strategy)
    report = run_pipeline(pipeline, config, run_dir, until=until, force=force, on_stage=_progress)
    # in a cluster, the chief prints; the other workers' results are thrown away
    return report, _summary(pipeline, name, run_dir, show and distribute.is_chief())


def _summary(pipeline, name: str, run_dir: Path, show: bool = True) -> list:  # noqa: ANN001
    """The summary rows of a run's ``metrics.json`` (printed unless ``show`` is false)."""
    from pipelines.reporting import print_summary

    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = pipeline.summarize(metrics) if pipeline.summarize else []
    rows += [("run dir", str(run_dir)), ("metrics", str(run_dir / "metrics.json"))]
    if show:
        print_summary(f"{pipeline.name} ({name})", rows)
    return rows


def cmd_run(args: argparse.Namespace) -> int:
    if args.workers:
        return _launch_run(args)
    run_one(args.pipeline, args.config, args.set, args.run_dir, args.until, args.force)
    return 0


def _launch_run(args: argparse.Namespace) -> int:
    """``run PIPELINE --workers N``: a training cluster of N processes on this machine."""
    from pipelines import config as cfg
    from pipelines.launch import launch_workers

    if args.workers < 1:
        raise cfg.ConfigError(f"--workers {args.workers}; expected a number of processes >= 1")
    if "TF_CONFIG" in os.environ:
        raise cfg.ConfigError(
            "--workers starts its own cluster; do not combine it with TF_CONFIG (to join a "
            "cluster, run the command without --workers on each machine)"
        )
    pipeline, _ = resolve_config(args.pipeline, args.config, args.set)
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(pipeline.name)
    names = [stage.name for stage in pipeline.stages]
    if args.until and args.until in names and names.index(args.until) < names.index("train"):
        raise cfg.ConfigError(
            f"--workers trains: --until {args.until} stops before train; expected train or a "
            f"later stage ({', '.join(names[names.index('train') :])}), or no --workers"
        )
    before = names[names.index("train") - 1] if names.index("train") else None
    argv = _strip_option(_strip_option(sys.argv[1:], "--workers"), "--run-dir")
    code = launch_workers(argv, run_dir, args.workers, before)
    if code == 0:  # the chief's metrics.json, as its run wrote it
        _summary(pipeline, args.pipeline, run_dir)
    return code


def cmd_default(args: argparse.Namespace) -> int:
    """``python run.py`` alone: every default pipeline on built-in data."""
    from pipelines.reporting import print_summary

    rows = []
    start = time.perf_counter()
    for name in DEFAULT_PIPELINES:
        run_dir = Path(args.run_dir) / name if args.run_dir else None
        _, summary = run_one(name, run_dir=run_dir, show=False)
        rows += [(f"{name}: {key}", value) for key, value in summary]
    rows.append(("total wall time", f"{time.perf_counter() - start:.0f} s"))
    print_summary(f"default pipelines: {', '.join(DEFAULT_PIPELINES)}", rows)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Re-runs the export stage of a finished run; stops if an earlier stage is out of date."""
    from pipelines.runner import run_pipeline

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        print(f"error: {run_dir} is not a run directory (no config.yaml)", file=sys.stderr)
        return 2
    if args.format != "tflite" and args.quantize != "none":
        print("error: --quantize applies to --format tflite", file=sys.stderr)
        return 2
    pipeline, config = resolve_config("_", [str(run_dir / "config.yaml")])
    if args.format == "tflite":
        if pipeline.name != "speech_commands":
            print(
                f"error: --format tflite exports speech models; {run_dir} is a {pipeline.name} run",
                file=sys.stderr,
            )
            return 2
        overrides = ["export.tflite=true", f"export.quantize={args.quantize}"]
        pipeline, config = resolve_config("_", [str(run_dir / "config.yaml")], overrides)
    before = tuple(s.name for s in pipeline.stages if s.name != "export")
    run_pipeline(pipeline, config, run_dir, on_stage=_progress, rerun=("export",), frozen=before)
    if args.format == "tflite":  # the check's figures on stderr: stdout is the folder alone
        from models.tflite import summary_lines

        meta = json.loads((run_dir / "export" / "tflite" / "metadata.json").read_text())
        for line in summary_lines(meta):
            print(line, file=sys.stderr)
    print(run_dir / "export" / ("tflite" if args.format == "tflite" else ""))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """``study gradients``: the vanishing/exploding gradient experiment."""
    from pipelines import config as cfg
    from pipelines.reporting import print_summary
    from pipelines.study_gradients import QUICK, GradientStudyConfig, run_study, summary_lines

    overrides = [*(QUICK if args.quick else ()), *args.set]
    config = cfg.build(GradientStudyConfig, cfg.load_raw("study_gradients", args.config, overrides))
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir("study-gradients")
    rows = run_study(config, run_dir)
    print_summary(
        "gradient study",
        summary_lines(rows)
        + [("report", str(run_dir / "report.md")), ("results", str(run_dir / "results.json"))],
    )
    return 0


def _strip_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(f"{option}="):
            out.append(item)
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    """``tune PIPELINE``: keras-tuner search, then the best configuration retrained and exported."""
    import os

    from pipelines import config as cfg
    from pipelines.reporting import print_summary

    pipeline, config = resolve_config(args.pipeline, args.config, args.set)
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(f"tune-{pipeline.name}")
    if args.workers:
        if "KERASTUNER_TUNER_ID" in os.environ:
            raise cfg.ConfigError(
                "--workers starts its own chief and workers; do not combine it with KERASTUNER_* variables"
            )
        from pipelines.tuning import launch_distributed

        argv = _strip_option(sys.argv[1:], "--workers")
        if not args.run_dir:
            argv += ["--run-dir", str(run_dir)]
        return launch_distributed(argv, args.workers)
    from models.tuning import build_oracle

    # a malformed space or an unknown tuner fails here, before any work
    build_oracle(config.tune, config.runtime.seed)
    from pipelines.tuning import format_value, tune_pipeline

    result = tune_pipeline(pipeline, cfg.to_dict(config), config.tune, run_dir)
    if result is None:  # a worker: the chief reports
        return 0
    rows, _, report = result
    tune = config.tune
    done = [r for r in rows if r["objective"] is not None]
    done.sort(key=lambda r: r["objective"], reverse=tune.goal == "max")
    table = [
        (
            f"#{rank} trial {r['trial']}",
            f"{tune.objective} {r['objective']:.4f} ({r['epochs']} epochs, {r['seconds']} s): "
            + ", ".join(f"{k}={format_value(v)}" for k, v in r.items() if k in tune.space),
        )
        for rank, r in enumerate(done[:10], start=1)
    ]
    failed = [r for r in rows if r["status"] != "COMPLETED"]
    table += [(f"trial {r['trial']} {r['status']}", r["error"] or "-") for r in failed]
    tuning = run_dir / "tuning"
    table += [
        ("trials", str(tuning / "trials.csv")),
        ("best config", f"{tuning / 'best.yaml'} (python run.py run {pipeline.name} --config ...)"),
        ("plot", str(tuning / "tuning.png")),
    ]
    if report is not None:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows_summary = pipeline.summarize(metrics) if pipeline.summarize else []
        table += [(f"best retrained: {k}", v) for k, v in rows_summary]
    print_summary(f"tuning {pipeline.name} ({tune.tuner}, {len(rows)} trials)", table)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipelines.predict import predict

    return predict(args.export_dir, args.inputs, top_k=args.top_k)


def cmd_detect(args: argparse.Namespace) -> int:
    from pipelines.detect import detect

    overrides = {
        "threshold": args.threshold,
        "average_ms": args.average_ms,
        "suppression_ms": args.suppression_ms,
        "hop_ms": args.hop_ms,
        "stream_overlap": args.stream_overlap,
        "listen_ms": args.listen_ms,
    }
    return detect(args.export_dir, args.files, overrides, stream=args.stream)


def cmd_tune_detector(args: argparse.Namespace) -> int:
    """``tune-detector RUN_DIR``: detect's settings chosen on a split's clips end to end."""
    from rich.console import Console
    from rich.table import Table

    from data.files import write_json
    from pipelines.tune_detector import DetectorGrid, tune_detector

    grid = DetectorGrid(
        thresholds=tuple(args.thresholds),
        average_ms=tuple(args.average_ms),
        overlaps=tuple(args.overlaps),
        listen_ms=tuple(args.listen_ms or ()),
        max_false_alarms=args.max_false_alarms,
    )
    run_dir = Path(args.run_dir)
    result = tune_detector(run_dir, args.split, args.clips, args.seed, grid)  # errors: main()
    write_json(run_dir / "detector_sweep.json", result)
    table = Table(
        title=f"{result['commands']} {args.split} commands end to end ({result['seconds']} s); "
        f"best recall under {grid.max_false_alarms} false alarms a minute"
    )
    columns = ("mode", "runs", "listen ms", "threshold", "average ms", "recall", "wrong", "FA/min")
    for column in columns:
        table.add_column(column)
    for mode in ("sliding", "stream"):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        rows.sort(
            key=lambda r: (r["false_alarms_per_minute"] >= grid.max_false_alarms, -r["recall"])
        )
        for r in rows[:5]:
            mark = " *" if r == result["chosen"][mode] else ""
            table.add_row(
                mode + mark,
                str(r["stream_overlap"] or "-"),
                "window" if r["listen_ms"] is None else f"{r['listen_ms']:g}",
                str(r["threshold"]),
                str(int(r["average_ms"])),
                f"{r['recall']:.3f}",
                f"{r['wrong_label_rate']:.3f}",
                f"{r['false_alarms_per_minute']:.2f}",
            )
    Console(stderr=True).print(table)
    print(json.dumps({"chosen": result["chosen"], "set": result["set"]}))
    if result["set"]:
        flags = " ".join(f"--set {flag}" for flag in result["set"])
        print(  # the run's own resolved config: only evaluate and export run again
            f"use them: python run.py run speech_commands --config {run_dir / 'config.yaml'} "
            f"--run-dir {run_dir} {flags}",
            file=sys.stderr,
        )
    else:
        print("no setting stayed under the false-alarm limit", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve [NAME=]EXPORT...``: TF Serving's REST API and a page, until Ctrl-C."""
    from models.serving import ExportError
    from pipelines.serving.app import ServeError, serve

    try:
        return serve(args.exports, args.host, args.port, args.max_body_mb)
    except (ExportError, ServeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cmd_list(args: argparse.Namespace) -> int:
    from data.speech_sources import SOURCES
    from data.text import SPLITTERS
    from data.text_sources import TEXT_SOURCES
    from models.classifier import CELLS
    from models.seq2seq import ATTENTIONS
    from models.training import OPTIMIZERS, SCHEDULES
    from pipelines import config as cfg
    from pipelines.distribute import STRATEGIES
    from pipelines.runner import PIPELINES

    _load_pipelines()
    for title, names in (
        ("pipelines", PIPELINES.names()),
        ("presets", cfg.preset_names()),
        ("speech sources", SOURCES.names()),
        ("text sources", TEXT_SOURCES.names()),
        ("attention", [*ATTENTIONS.names(), "none"]),
        ("text levels", SPLITTERS.names()),
        ("cells", CELLS.names()),
        ("optimizers", OPTIMIZERS.names()),
        ("schedules", SCHEDULES.names()),
        ("distribution strategies (runtime.strategy)", ["auto", *STRATEGIES.names()]),
    ):
        print(f"{title}: {', '.join(names)}")
    return 0


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file merged over the preset (repeatable, later wins)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, e.g. --set train.epochs=5 (repeatable)",
    )
    parser.add_argument(
        "--run-dir", metavar="DIR", help="where results go (default: runs/<pipeline>-<timestamp>/)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Recurrent speech and text pipelines: raw data -> features -> LSTM -> "
        "evaluated, exported SavedModel. With no command, runs the default pipelines on "
        "built-in data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline or preset end to end")
    run.add_argument(
        "pipeline",
        help="speech_commands, translation, or a preset in pipelines/configs/ (e.g. fsdd, "
        "tatoeba_spa_eng)",
    )
    _add_config_options(run)
    run.add_argument("--until", metavar="STAGE", help="stop after this stage")
    run.add_argument("--force", action="store_true", help="rerun stages even if up to date")
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="train with N worker processes on 127.0.0.1 (tf.distribute MultiWorkerMirrored)",
    )
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser(
        "tune", help="search hyperparameters with keras-tuner, then retrain the best"
    )
    tune.add_argument("pipeline", help="speech_commands, translation, or a preset")
    _add_config_options(tune)
    tune.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="start a chief and N workers on 127.0.0.1 (keras-tuner's distributed mode)",
    )
    tune.set_defaults(func=cmd_tune)

    predict = sub.add_parser("predict", help="run an exported model on wav files or sentences")
    predict.add_argument(
        "export_dir", help="a RUN_DIR/export folder, its tflite/ folder or a .tflite file"
    )
    predict.add_argument(
        "inputs",
        nargs="+",
        help="wav files (any sample rate) for speech; sentences for translation ('-' reads "
        "one sentence per line from stdin)",
    )
    predict.add_argument("--top-k", type=int, default=None, help="alternatives to print")
    predict.set_defaults(func=cmd_predict)

    detect = sub.add_parser(
        "detect", help="find commands in recordings of any length (one JSON line per detection)"
    )
    detect.add_argument(
        "export_dir", help="a speech RUN_DIR/export folder, its tflite/ folder or a .tflite file"
    )
    detect.add_argument("files", nargs="+", help="audio files (any length, format, sample rate)")
    defaults = "default: the export's own (metadata.json detector)"
    detect.add_argument(
        "--threshold", type=float, metavar="P", help=f"smoothed probability to report; {defaults}"
    )
    detect.add_argument(
        "--hop-ms", type=float, metavar="N", help=f"step between windows; {defaults}"
    )
    detect.add_argument(
        "--average-ms", type=float, metavar="N", help=f"posterior smoothing; {defaults}"
    )
    detect.add_argument(
        "--suppression-ms",
        type=float,
        metavar="N",
        help="a same-label detection closer than this to the previous one is merged into it; "
        + defaults,
    )
    detect.add_argument(
        "--listen-ms",
        type=float,
        metavar="N",
        help="the newest audio each answer hears, at most the model's window (the rest of the "
        f"window is silence; --stream: how long each run lasts); {defaults}",
    )
    detect.add_argument(
        "--stream-overlap",
        type=int,
        metavar="N",
        help=f"--stream: runs of the streaming model overlapping at any moment; {defaults}",
    )
    detect.add_argument(
        "--stream",
        action="store_true",
        help="run the streaming model (stream_step) over the audio, as --stream-overlap "
        "staggered runs, instead of sliding the window (a causal model only)",
    )
    detect.set_defaults(func=cmd_detect)

    tuned = sub.add_parser(
        "tune-detector",
        help="choose detect's threshold, averaging and --stream overlap on a split's clips",
        description="Scores the run's model on a split's clips laid end to end with noisy "
        "pauses, for every threshold and averaging window (and --stream overlap), and prints the "
        "setting with the highest recall under --max-false-alarms a minute for each mode, as "
        "--set flags. Writes RUN_DIR/detector_sweep.json.",
    )
    tuned.add_argument("run_dir", help="a finished speech run (RUN_DIR)")
    tuned.add_argument(
        "--split",
        choices=("validation", "test"),
        default="validation",
        help="the clips to choose on (test only for a development run: never the split you report)",
    )
    tuned.add_argument("--clips", type=int, default=300, help="clips in the recording")
    tuned.add_argument("--seed", type=int, default=1, help="draws the clips and pauses")
    tuned.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    tuned.add_argument("--average-ms", type=float, nargs="+", default=[250, 500, 750, 1000])
    tuned.add_argument("--overlaps", type=int, nargs="+", default=[2, 3, 4])
    tuned.add_argument(
        "--listen-ms",
        type=float,
        nargs="+",
        help="spans each answer hears (a value of the window or more: the whole window); "
        "default: the run's own detect.listen_ms",
    )
    tuned.add_argument("--max-false-alarms", type=float, default=1.0, help="a minute")
    tuned.set_defaults(func=cmd_tune_detector)

    serve = sub.add_parser(
        "serve",
        help="serve exports over TensorFlow Serving's REST API, with a page to try them",
        description="Serves each export under a name: /v1/models/NAME (status, /metadata, "
        ":predict with instances or inputs, :classify_audio, :detect, :listen) and a page at /.",
    )
    serve.add_argument(
        "exports",
        nargs="+",
        metavar="[NAME=]PATH",
        help="an export (SavedModel, TFLite folder or .tflite file), a run directory, or a "
        "folder of run directories; named after the run (timestamp dropped) unless NAME= is given",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8501, help="port (8501, TF Serving's REST port)")
    serve.add_argument(
        "--max-body-mb",
        type=float,
        default=50.0,
        metavar="MB",
        help="largest request body in MiB (50); bigger requests get a 413",
    )
    serve.set_defaults(func=cmd_serve)

    export = sub.add_parser("export", help="(re)export the model of a finished run")
    export.add_argument("run_dir", help="a run directory holding config.yaml")
    export.add_argument(
        "--format",
        choices=["savedmodel", "tflite"],
        default="savedmodel",
        help="tflite: also RUN_DIR/export/tflite/ (classify.tflite, stream_step.tflite)",
    )
    export.add_argument(
        "--quantize",
        choices=["none", "dynamic", "int8"],
        default="none",
        help="TFLite quantization (int8 is calibrated on validation audio)",
    )
    export.set_defaults(func=cmd_export)

    study = sub.add_parser("study", help="run a built-in experiment (gradients)")
    study.add_argument("name", choices=["gradients"], help="which study")
    study.add_argument("--quick", action="store_true", help="a small version (under 3 minutes)")
    _add_config_options(study)
    study.set_defaults(func=cmd_study)

    lister = sub.add_parser("list", help="list pipelines, presets, sources and model choices")
    lister.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, then call one function. Config errors exit with code 2."""
    from pipelines.config import ConfigError

    args = build_parser().parse_args(argv)
    from pipelines.runtime import quiet_tensorflow

    quiet_tensorflow()
    from models.export import ExportCheckError
    from pipelines.locking import RunDirBusyError

    func: Any = getattr(args, "func", cmd_default)
    try:
        return func(args)
    except (ConfigError, FileNotFoundError, KeyError) as err:  # the user's input, not a bug
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except RunDirBusyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except ExportCheckError as err:  # the export is refused; the previous one stays
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in _DISK_ERRORS:
            raise
        hint = (
            "Free some space"
            if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else "Check the permissions"
        )
        print(
            f"error: cannot use {err.filename or 'the run directory'!s}: {err.strerror}. {hint}, "
            "or choose another --run-dir (and runtime.cache_dir).",
            file=sys.stderr,
        )
        return 4
