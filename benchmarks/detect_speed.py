"""Speed of ``run.py detect``: seconds of audio per second of compute, on one core.

Builds a recording of ``--minutes`` of background noise with test clips of the run spread through
it, then times, in the same process: the detector end to end (block reading, resampling, sliding
windows, the SavedModel, smoothing) and, as the plain baseline, the SavedModel alone on the same
windows already in memory. Prints the real-time factor of each and their ratio. For a causal
(streaming) export it also times ``detect --stream`` (``stream_step`` restarted every
``1 / stream_overlap`` of a window, many runs in one call) and prints how much cheaper per second
of audio it is than the sliding window. The detector settings are the export's own.

    python benchmarks/detect_speed.py runs/speech_commands-*/ --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished speech run (export and clips)")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--hop-ms", type=float, default=None, help="default: the export's own")
    parser.add_argument(
        "--stream-overlap", type=int, default=None, help="default: the export's own"
    )
    args = parser.parse_args()

    import numpy as np
    import soundfile
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # one core
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models.detection import windows
    from pipelines.detect import detect_file

    export = args.run_dir / "export"
    meta = json.loads((export / "assets.extra" / "metadata.json").read_text())
    rate = int(meta["sample_rate"])
    clips = json.loads((args.run_dir / "stages" / "ingest" / "clips.json").read_text())
    test = [c["path"] for c in clips if c["split"] == "test"]
    rng = np.random.default_rng(0)
    total = int(args.minutes * 60 * rate)
    audio = rng.normal(0, 0.003, total).astype(np.float32)
    position = rate
    while position < total - 2 * rate:
        y = soundfile.read(test[int(rng.integers(len(test)))], dtype="float32")[0]
        audio[position : position + y.size] += y[: total - position]
        position += y.size + int(rng.uniform(1.0, 3.0) * rate)
    path = Path(tempfile.mkdtemp()) / "recording.wav"
    soundfile.write(path, audio, rate)
    from models.serving import load_speech_model

    model = load_speech_model(export)
    serve = model._loaded.signatures["serving_default"]
    config = model.detector.with_overrides(  # the export's own settings unless given
        hop_ms=args.hop_ms, stream_overlap=args.stream_overlap
    )
    detect_file(model, str(path), config)  # warm up (tracing)

    start = time.perf_counter()
    events = detect_file(model, str(path), config)
    detect_seconds = time.perf_counter() - start

    window = int(rate * float(meta["features"]["clip_seconds"]))
    hop = config.hop_samples(rate)
    batches = [w.copy() for _, w in windows(iter([audio]), window, hop)]
    start = time.perf_counter()
    for i in range(0, len(batches), 32):
        serve(waveform=tf.constant(np.stack(batches[i : i + 32])))
    model_seconds = time.perf_counter() - start

    duration = total / rate
    print(f"{duration / 60:.1f} min of audio, {len(batches)} windows, {len(events)} detections")
    print(f"detect end to end: {duration / detect_seconds:.1f}x real time ({detect_seconds:.1f} s)")
    print(f"model alone (baseline): {duration / model_seconds:.1f}x real time")
    print(f"ratio detect / model alone: {detect_seconds / model_seconds:.2f}")
    if model.stream_reason:
        print(f"--stream not measured: {model.stream_reason}")
        return
    detect_file(model, str(path), config, stream=True)  # warm up (tracing)
    start = time.perf_counter()
    streamed = detect_file(model, str(path), config, stream=True)
    stream_seconds = time.perf_counter() - start
    print(
        f"detect --stream ({config.stream_overlap} overlapping runs): "
        f"{duration / stream_seconds:.1f}x real time ({stream_seconds:.1f} s, "
        f"{len(streamed)} detections)"
    )
    print(
        f"sliding window / stream cost per second of audio: {detect_seconds / stream_seconds:.1f}x"
    )
    # stream_step is XLA-compiled, serving_default is not (it takes any length, and XLA would
    # compile again for each): the same windows through an XLA-compiled serving_default too, so
    # the gain of streaming itself shows apart from the compiler's.
    import keras

    import models.features  # noqa: F401 - registers the custom layers for loading
    from models.features import MfccLayer
    from pipelines.cli import resolve_config
    from pipelines.speech_commands import build_model

    _, config = resolve_config("_", [str(args.run_dir / "config.yaml")])
    trained = keras.models.load_model(args.run_dir / "stages" / "train" / "model.keras")
    portable = build_model(config, len(meta["labels"]), use_cudnn=False)  # as exported
    portable.set_weights(trained.get_weights())
    mfcc = MfccLayer(config.features)
    compiled = tf.function(lambda x: portable(mfcc(x), training=False), jit_compile=True)
    stacked = [np.stack(batches[i : i + 32]) for i in range(0, len(batches), 32)]
    for chunk in {c.shape: c for c in stacked}.values():
        compiled(tf.constant(chunk))  # compile each batch shape before timing
    start = time.perf_counter()
    for chunk in stacked:
        compiled(tf.constant(chunk))
    xla_seconds = time.perf_counter() - start
    print(f"model alone, XLA-compiled: {duration / xla_seconds:.1f}x real time")
    print(f"XLA model alone / stream cost per second of audio: {xla_seconds / stream_seconds:.1f}x")


if __name__ == "__main__":
    main()
