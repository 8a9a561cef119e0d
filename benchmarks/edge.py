"""On-device numbers of a speech run: size, accuracy and latency of each export variant.

For each ``--quantize`` variant (``none``, ``dynamic``, ``int8``) the run's trained model is
converted again (``models.tflite.export_tflite``, into a temporary folder: the run's own
``export/tflite`` is left alone), with the export stage's calibration and parity check. Then,
in one process on one core, each variant and, as the plain baseline, the run's SavedModel get:

- file sizes (``classify.tflite`` and ``stream_step.tflite``; the SavedModel folder);
- accuracy on the run's test split, each clip as stored and each at a random place in a full
  window of the run's background noise (-50 to -35 dBFS, seed 0: the evaluate stage's
  ``test_accuracy_windowed`` recipe), through the window model and, for the windowed clips,
  through the streaming step (hop by hop from silence, the answer after the last hop: an
  ``int8`` variant differs from ``dynamic`` only there);
- latency of one full-window call and of one streaming step (median of ``--repeats``), as
  milliseconds, as times faster than real time (audio seconds per compute second), and as a
  ratio against the SavedModel measured in the same run (machines are noisy: compare ratios).

A variant the export's parity check refuses is listed with the check's reason. Not part of the
test suite.

    python benchmarks/edge.py runs/fsdd-*/ [--quantize none dynamic int8] [--clips 500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(call: Any, repeats: int) -> float:  # noqa: ANN401 - any callable
    """Median wall time of ``call()`` in milliseconds (``speedlib.timed``: warm-up untimed)."""
    from benchmarks.speedlib import timed

    return statistics.median(timed(call, repeats)) * 1000


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def measure(model: Any, clips: list, windowed: list, repeats: int) -> dict[str, Any]:  # noqa: ANN401
    """Accuracy (as stored, windowed) and latency of a loaded ``models.serving.SpeechModel``."""
    import numpy as np

    truth = np.array([label for _, label in clips])
    stored = [
        model.classify(y[None], np.array([y.size]))[0].argmax() for y, _ in clips
    ]  # one clip a call: how a device sends them
    placed = [model.classify(w[None])[0].argmax() for w in windowed]
    window = np.zeros((1, model.window), np.float32)
    out = {
        "accuracy": round(float(np.mean(np.array(stored) == truth)), 4),
        "accuracy_windowed": round(float(np.mean(np.array(placed) == truth)), 4),
        "window_ms": median_ms(lambda: model.classify(window), repeats),
    }
    if not model.stream_reason:
        stream = model.stream(1)
        # each windowed clip streamed hop by hop from silence: the answer after the last hop
        whole = model.window - model.window % stream.hop
        answers = []
        for start in range(0, len(windowed), 50):
            group = np.stack(windowed[start : start + 50])[:, :whole]
            answers += list(model.stream(len(group)).run_segments(group)[:, -1].argmax(1))
        out["stream_windowed"] = round(float(np.mean(np.array(answers) == truth)), 4)
        hop = np.zeros(stream.hop, np.float32)
        out["step_ms"] = median_ms(lambda: stream.push(hop), repeats * 10)
        out["hop_seconds"] = stream.hop / model.rate
    return out


def variants(
    run_dir: Path, clips: list, quantizations: list[str], work: Path, limit: int
) -> dict[str, Any]:
    """Converts the run's model once per quantization; returns folder or refusal per variant.

    ``clips``: the run's ``data.clips.Clip`` listing (``stages/ingest/clips.json``).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    import models.features  # noqa: F401 - registers the custom layers for loading
    from data.audio import feature_shape, fit_length, load_audio
    from data.clips import spread_by_label
    from data.files import read_json
    from models.export import ExportCheckError
    from models.tflite import export_tflite
    from pipelines.cli import resolve_config

    _, config = resolve_config("_", [str(run_dir / "config.yaml")])
    features, rate = config.features, config.features.sample_rate
    window = feature_shape(features).clip_samples
    labels = read_json(run_dir / "stages" / "ingest" / "labels.json")
    model = keras.models.load_model(run_dir / "stages" / "train" / "model.keras")
    serve = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]

    def windows(split: str, n: int) -> list[tuple[np.ndarray, int]]:  # as the export stage
        usable = [c for c in clips if c.split == split and c.label in labels]
        return [
            (fit_length(load_audio(c.path, rate), window, full=True), labels.index(c.label))
            for c in spread_by_label(usable, n, config.runtime.seed)
        ]

    calibration = [w for w, _ in windows("validation", 100) or windows("train", 100)]
    check_clips = windows("test", min(limit, config.export.check_clips))
    out: dict[str, Any] = {}
    for quantize in quantizations:
        folder = work / quantize
        try:
            export_tflite(
                model,
                features,
                labels,
                folder,
                quantize,
                calibration=calibration,
                check_clips=check_clips,
                reference=lambda x: serve(waveform=tf.constant(x))["probabilities"].numpy(),
            )
            out[quantize] = folder
        except ExportCheckError as err:
            out[quantize] = f"refused by the parity check: {err}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="finished speech runs")
    parser.add_argument(
        "--quantize", nargs="+", default=["none", "dynamic", "int8"], help="variants to build"
    )
    parser.add_argument("--clips", type=int, default=500, help="test clips for the accuracy")
    parser.add_argument("--repeats", type=int, default=50, help="calls timed (steps: 10x)")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # one core
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from data.audio import load_audio
    from data.augment import place_in_window
    from data.clips import Clip, spread_by_label
    from data.files import read_json
    from models.serving import SpeechModel, load_speech_model, read_metadata

    report = []
    for run_dir in args.run_dirs:
        baseline = load_speech_model(run_dir / "export")
        rate, labels = baseline.rate, baseline.labels
        clips = [Clip(**c) for c in read_json(run_dir / "stages" / "ingest" / "clips.json")]
        test = spread_by_label(
            [c for c in clips if c.split == "test" and c.label in labels], args.clips
        )
        audio = [(load_audio(c.path, rate), labels.index(c.label)) for c in test]
        noises = [
            load_audio(p, rate) for p in read_json(run_dir / "stages" / "ingest" / "noise.json")
        ]
        rng = np.random.default_rng(0)
        windowed = [place_in_window(y, baseline.window, noises, rng) for y, _ in audio]
        rows = [
            (
                "SavedModel",
                folder_bytes(run_dir / "export"),
                None,
                measure(baseline, audio, windowed, args.repeats),
            )
        ]
        with tempfile.TemporaryDirectory() as work:
            for quantize, built in variants(
                run_dir, clips, args.quantize, Path(work), args.clips
            ).items():
                if isinstance(built, str):
                    rows.append((f"tflite {quantize}", None, None, built))
                    continue
                folder, meta, kind = read_metadata(built)
                sizes = meta["bytes"]
                model = SpeechModel(folder, meta, kind)
                rows.append(
                    (
                        f"tflite {quantize}",
                        sizes.get("classify.tflite"),
                        sizes.get("stream_step.tflite"),
                        measure(model, audio, windowed, args.repeats),
                    )
                )
        print(
            f"\n{run_dir} ({len(audio)} test clips; window {baseline.window / rate:g} s; one core)"
        )
        base = rows[0][3]
        header = (
            "| variant | classify bytes | stream_step bytes | test accuracy | windowed | "
            "streamed, windowed | window call ms | x real time | vs SavedModel | step ms | "
            "x real time | vs SavedModel |"
        )
        print(header)
        print("| --- " * 12 + "|")
        for name, classify_bytes, step_bytes, m in rows:
            if isinstance(m, str):
                print(f"| {name} | {m} |")
                report.append({"run": str(run_dir), "variant": name, "refused": m})
                continue
            window_s = baseline.window / rate
            step = (
                f"{m['step_ms']:.3f} | {m['hop_seconds'] * 1000 / m['step_ms']:.0f}x | "
                f"{base['step_ms'] / m['step_ms']:.2f}x faster"
                if "step_ms" in m and "step_ms" in base
                else "- | - | -"
            )
            print(
                f"| {name} | {classify_bytes or '-'} | {step_bytes or '-'} | {m['accuracy']:.4f} | "
                f"{m['accuracy_windowed']:.4f} | {m.get('stream_windowed', '-')} | "
                f"{m['window_ms']:.2f} | "
                f"{window_s * 1000 / m['window_ms']:.0f}x | "
                f"{base['window_ms'] / m['window_ms']:.2f}x faster | {step} |"
            )
            report.append(
                {
                    "run": str(run_dir),
                    "variant": name,
                    "classify_bytes": classify_bytes,
                    "stream_step_bytes": step_bytes,
                    **m,
                }
            )
        print("(the SavedModel's size is its whole folder: MFCC front end and every signature)")
    out = ROOT / "runs" / "benchmarks" / "edge.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
