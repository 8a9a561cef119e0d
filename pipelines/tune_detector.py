"""``run.py tune-detector RUN_DIR``: choose ``detect``'s settings on a speech run's held-out clips.

The evaluate stage's stream recording (clips of one split laid end to end with noisy pauses,
``models.evaluation.detection_recording``) is scored once per mode: the sliding window, and for a
causal model ``--stream`` with each number of overlapping runs. Every threshold and averaging
window of the grid then runs the detector over those posteriors (cheap: no model call), and the
setting with the highest recall under ``max_false_alarms`` a minute is chosen for each mode.
Choose on validation clips, or on the test split of a development run whose test speakers are
not your real test data; never on the split you report.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.checks import check

MODES = ("sliding", "stream")


@dataclass(frozen=True)
class DetectorGrid:
    """The settings tried.

    Attributes:
        thresholds: smoothed-probability thresholds.
        average_ms: posterior averaging windows.
        overlaps: ``stream_overlap`` values (``--stream`` only).
        listen_ms: ``listen_ms`` values (each costs a pass of the model per mode); empty: the
            run's own. One value serves both modes: ``--stream`` is chosen among the rows with
            the sliding window's choice.
        max_false_alarms: the most false alarms a minute a chosen setting may raise.
    """

    thresholds: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)
    average_ms: tuple[float, ...] = (250.0, 500.0, 750.0, 1000.0)
    overlaps: tuple[int, ...] = (2, 3, 4)
    listen_ms: tuple[float, ...] = ()
    max_false_alarms: float = 1.0

    def __post_init__(self) -> None:
        check(
            all(0 < t <= 1 for t in self.thresholds) and self.thresholds,
            "--thresholds",
            self.thresholds,
            "values in (0, 1]",
        )
        check(
            all(a >= 0 for a in self.average_ms) and self.average_ms,
            "--average-ms",
            self.average_ms,
            "values >= 0",
        )
        check(all(o >= 2 for o in self.overlaps), "--overlaps", self.overlaps, "values >= 2")
        check(all(v > 0 for v in self.listen_ms), "--listen-ms", self.listen_ms, "values > 0")
        for flag, values in (("--average-ms", self.average_ms), ("--listen-ms", self.listen_ms)):
            check(all(math.isfinite(v) for v in values), flag, values, "finite values")
        check(self.max_false_alarms > 0, "--max-false-alarms", self.max_false_alarms, "> 0")


def tune_detector(
    run_dir: Path, split: str, max_clips: int, seed: int, grid: DetectorGrid
) -> dict[str, Any]:
    """Scores every setting of ``grid`` on ``split``; returns the rows and the choice per mode.

    Raises:
        FileNotFoundError: ``run_dir`` has no trained speech model.
        ConfigError: ``--clips`` below 1, or a split without command clips (named).
    """
    import keras

    import models.features  # noqa: F401 - registers the custom layers for loading
    from data.audio import feature_shape, load_audio
    from data.clips import SILENCE, UNKNOWN
    from data.feature_shards import load_split
    from data.files import read_json
    from models.detection import DetectorConfig
    from models.evaluation import detection_recording, detection_scores, scored_posteriors
    from models.streaming import stream_problems
    from pipelines.cli import resolve_config
    from pipelines.detect import RunSchedule

    check(max_clips >= 1, "--clips", max_clips, "at least 1")
    model_path = run_dir / "stages" / "train" / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no trained speech model at {model_path}")
    _, config = resolve_config("_", [str(run_dir / "config.yaml")])
    features, base = config.features, config.detect
    rate = features.sample_rate
    window = feature_shape(features).clip_samples
    # a span of the window or more is the whole window (None), as listen_samples clamps it
    spans = {
        None if ms is None or round(rate * ms / 1000) >= window else ms
        for ms in grid.listen_ms or (base.listen_ms,)
    }
    # each span's samples; every setting checked before the model runs, so errors name it
    listens = {
        ms: DetectorConfig(listen_ms=ms, hop_ms=base.hop_ms).listen_samples(rate, window)
        for ms in spans
    }
    for listen in listens.values():
        if config.causal:  # --stream is scored only for a model that streams
            for overlap in grid.overlaps:
                RunSchedule.of(
                    feature_shape(features).hop_length, listen, overlap, base.hop_samples(rate)
                )
    labels = read_json(run_dir / "stages" / "ingest" / "labels.json")
    noises = [load_audio(p, rate) for p in read_json(run_dir / "stages" / "ingest" / "noise.json")]
    data = load_split(run_dir / "stages" / "features", split)
    clips = [
        (load_audio(str(data.paths[i]), rate), labels[data.labels[i]])
        for i in range(len(data.labels))
        if data.copies[i] == 0
    ]
    audio, placed = detection_recording(clips, rate, noises, seed, max_clips)
    commands = sum(p.label not in (SILENCE, UNKNOWN) for p in placed)
    check(commands > 0, "--split", split, f"a split with command clips ({run_dir})")
    model = keras.models.load_model(model_path)
    runs: list[tuple[str, int | None]] = [("sliding", None)]
    if not stream_problems(model, features):
        runs += [("stream", overlap) for overlap in grid.overlaps]
    rows = []
    for (mode, overlap), listen_ms in itertools.product(
        runs, sorted(spans, key=lambda ms: ms or float("inf"))
    ):
        listen = listens[listen_ms]
        scored = scored_posteriors(
            model, features, audio, base.hop_samples(rate), config.eval.batch_size, overlap, listen
        )
        for threshold, average in itertools.product(grid.thresholds, grid.average_ms):
            detector = DetectorConfig(
                threshold=threshold,
                average_ms=average,
                suppression_ms=base.suppression_ms,
                hop_ms=base.hop_ms,
                listen_ms=listen_ms,
            )
            score = detection_scores(
                scored, labels, listen / rate, detector, placed, audio.size / rate
            )
            rows.append(
                {
                    "mode": mode,
                    "stream_overlap": overlap,
                    "listen_ms": listen_ms,
                    "threshold": threshold,
                    "average_ms": average,
                    "recall": score["recall"],
                    "wrong_label_rate": score["wrong_label_rate"],
                    "false_alarms_per_minute": round(score["false_alarms_per_hour"] / 60, 3),
                    "mean_delay_seconds": score["mean_delay_seconds"],
                }
            )
    sliding = _best(rows, "sliding", grid.max_false_alarms)
    same_span = [r for r in rows if sliding is None or r["listen_ms"] == sliding["listen_ms"]]
    chosen = {"sliding": sliding, "stream": _best(same_span, "stream", grid.max_false_alarms)}
    return {
        "split": split,
        "commands": commands,
        "seconds": round(audio.size / rate, 1),
        "max_false_alarms_per_minute": grid.max_false_alarms,
        "chosen": chosen,
        "set": _set_flags(chosen),
        "rows": rows,
    }


def _best(rows: list[dict], mode: str, limit: float) -> dict | None:
    """Highest recall under ``limit`` false alarms a minute; then fewer alarms, fewer runs."""
    fit = [  # a setting that found nothing is no choice
        r
        for r in rows
        if r["mode"] == mode and r["false_alarms_per_minute"] < limit and r["recall"] > 0
    ]
    key = lambda r: (-r["recall"], r["false_alarms_per_minute"], r["stream_overlap"] or 0)  # noqa: E731
    return min(fit, key=key) if fit else None


def _set_flags(chosen: dict[str, dict | None]) -> list[str]:
    """The ``--set`` overrides that make a run's ``detect`` section the chosen one."""
    flags = []
    chosen_span = next((c for c in chosen.values() if c), None)
    if chosen_span:
        listen = chosen_span["listen_ms"]
        flags.append(f"detect.listen_ms={'null' if listen is None else listen}")
    if chosen["sliding"]:
        flags += [
            f"detect.threshold={chosen['sliding']['threshold']}",
            f"detect.average_ms={chosen['sliding']['average_ms']}",
        ]
    if chosen["stream"]:
        flags += [
            f"detect.stream_overlap={chosen['stream']['stream_overlap']}",
            f"detect.stream_threshold={chosen['stream']['threshold']}",
            f"detect.stream_average_ms={chosen['stream']['average_ms']}",
        ]
    return flags
