"""TFLite exports for devices: a fixed-window classifier and the streaming step, raw audio in.

``classify.tflite`` takes one window of raw samples ``[1, clip_samples]`` and returns the class
probabilities (for a ``features.window: masked`` model, its second signature ``classify_lengths``
also takes the clip's length and ignores the padding beyond it); ``stream_step.tflite`` takes
one hop ``[1, hop]`` plus the state tensors (passed in and out by the caller) and returns the
probabilities so far and the new state. Both include the MFCC front end and use TFLite builtin
ops only, so the standard interpreter (``ai-edge-litert``) runs them. Parity with the float
model is measured when exporting and written next to them.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from data.audio import FeatureConfig, feature_shape
from data.checks import check
from models.features import MfccLayer
from models.serving import Stream

QUANTIZATIONS = ("none", "dynamic", "int8")
FLOAT_TOLERANCE = 1e-4  # max probability difference, float TFLite vs the SavedModel
QUANTIZED_ACCURACY_DROP = 0.01  # a quantized file may lose at most one point of accuracy
SIGNATURE_FILES = {
    "classify": "classify.tflite",
    "classify_lengths": "classify.tflite",
    "stream_step": "stream_step.tflite",
}


def interpreter(path: str | Path, threads: int | None = None):  # noqa: ANN201 - LiteRT
    """A TFLite interpreter with its tensors allocated.

    It comes from ``ai-edge-litert``: TF's own ``tf.lite.Interpreter`` is deprecated.
    """
    from ai_edge_litert.interpreter import Interpreter

    from pipelines.runtime import muted_stderr

    # LiteRT's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate" on fd 2
    with muted_stderr():
        runner = Interpreter(model_path=str(path), num_threads=threads)
        runner.allocate_tensors()
    return runner


class TFLiteStream(Stream):
    """Runs ``stream_step.tflite`` (batch 1, one hop per call) for each row, hop by hop."""

    def __init__(self, path: str | Path, meta: dict, rows: int = 1) -> None:
        super().__init__(int(meta["stream"]["hop_samples"]), meta["stream"]["state"], rows)
        self.runner = interpreter(path).get_signature_runner("stream_step")

    def _step(self, samples: np.ndarray) -> np.ndarray:
        rows = []
        for row in range(self.rows):
            state = {name: value[row : row + 1] for name, value in self.state.items()}
            answers = []
            for start in range(0, samples.shape[1], self.hop):
                result = self.runner(
                    samples=samples[row : row + 1, start : start + self.hop], **state
                )
                state = {name: result[name] for name in state}
                answers.append(result["probabilities"][0])
            for name, value in state.items():
                self.state[name][row] = value[0]
            rows.append(np.stack(answers))
        return np.stack(rows)


def _classify_fn(model: keras.Model, mfcc: MfccLayer):  # noqa: ANN202
    def classify(waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": model(mfcc(waveform), training=False)}

    return classify


def _classify_lengths_fn(model: keras.Model, mfcc: MfccLayer):  # noqa: ANN202
    """``classify_lengths``: the window plus the clip's length, as ``serving_lengths`` answers.

    ``lengths`` is clamped to 1..window instead of checked: TFLite has no builtin Assert op.
    """
    from models.export import features_of_lengths

    window = mfcc.shape_info.clip_samples

    def classify_lengths(waveform: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        lengths = tf.clip_by_value(lengths, 1, window)
        return {
            "probabilities": model(features_of_lengths(mfcc, waveform, lengths), training=False)
        }

    return classify_lengths


def _stream_fn(streamer: Any):  # noqa: ANN001, ANN202
    names = list(streamer.state_shapes())

    def step(samples: tf.Tensor, *state: tf.Tensor) -> dict[str, tf.Tensor]:
        per_hop, new = streamer.step(samples, dict(zip(names, state, strict=True)))
        return {"probabilities": per_hop[:, -1], **{f"state_{k}": v for k, v in new.items()}}

    return step


def _convert(saved_model: Path, signatures: list[str], quantize: str, representative: Any) -> bytes:
    """Converts ``signatures`` of a SavedModel into one TFLite file of builtin ops.

    Args:
        saved_model: the folder ``keras.export.ExportArchive`` wrote.
        signatures: the endpoints to convert (one subgraph each, weights shared).
        quantize: ``none``, ``dynamic`` (int8 weights) or ``int8`` (calibrated on
            ``representative``, then only ops under ``QUANTIZABLE_SCOPE`` quantized).
        representative: for ``int8``, a generator function of input dicts keyed by name.

    Returns:
        The flatbuffer.
    """
    if isinstance(signatures, str):  # a str would be read as one signature per letter
        raise TypeError(f"signatures: expected a list of names, got the string {signatures!r}")
    if quantize == "int8" and len(signatures) != 1:  # _quantize_scope reads one subgraph
        raise ValueError(f"int8: expected one signature, got {signatures}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=signatures
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with warnings.catch_warnings():  # the calibrator's own use of the deprecated interpreter
        warnings.simplefilter("ignore", UserWarning)
        if quantize != "int8":
            return converter.convert()
        converter.representative_dataset = representative
        # Calibrate, then quantize only the learned layers (QUANTIZABLE_SCOPE): int8 weights and
        # activations there, float everywhere else. Quantized whole, the stream's state
        # bookkeeping breaks: its carried samples are clipped to the calibration audio's range,
        # its frame count drifts when fed back hop by hop, and the front end's log-mel loses
        # most of its precision. These are the two private calls tf.lite's QuantizationDebugger
        # makes for its denylisted nodes (tested with TensorFlow 2.21: _quantize_scope refuses
        # to go on if another version names the ops otherwise); the public debugger cannot
        # take a list built from the calibrated model itself without calibrating twice.
        converter._experimental_calibrate_only = True  # noqa: SLF001
        calibrated = converter.convert()
    return _quantize_scope(calibrated)


def _quantize_scope(calibrated: bytes) -> bytes:
    """Quantizes a calibrated model's ops under ``QUANTIZABLE_SCOPE``; the rest stays float.

    The quantizer matches an op by its whole location name, which is the name of the tensor it
    writes: fused ops join their names with ";" (quantized only when every part is under the
    scope) and an op that writes a signature output is named after the output
    (``StatefulPartitionedCall:N``), so those last ops (a cell's new state, the softmax) stay
    float as well.
    """
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python.convert import mlir_quantize

    from models.streaming import QUANTIZABLE_SCOPE

    details = Interpreter(model_content=calibrated).get_tensor_details()
    # TensorFlow numbers a scope entered more than once ("quantizable_1/...")
    learned = re.compile(rf"{QUANTIZABLE_SCOPE}(_\d+)?/")
    float_nodes = sorted(
        {
            d["name"]
            for d in details
            if not all(learned.match(part) for part in d["name"].split(";"))
        }
    )
    if len(float_nodes) == len({d["name"] for d in details}):  # else an all-float "int8" file
        from models.export import ExportCheckError

        raise ExportCheckError(
            f"int8: no op of the stream step is named under {QUANTIZABLE_SCOPE}/ (this "
            "TensorFlow names them otherwise); use --quantize dynamic"
        )
    from pipelines.runtime import muted_stderr

    with muted_stderr():  # the quantizer prints its settings on fd 2
        return mlir_quantize(calibrated, denylisted_nodes=float_nodes)


def export_tflite(
    model: keras.Model,
    features: FeatureConfig,
    labels: list[str],
    out_dir: Path,
    quantize: str,
    calibration: list[np.ndarray],
    check_clips: list[tuple[np.ndarray, int]],
    reference: Any,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes ``out_dir/classify.tflite``, ``stream_step.tflite`` (causal models) and metadata.

    ``classify.tflite`` has the signature ``classify`` and, for a ``features.window: masked``
    model, ``classify_lengths`` (the window and the clip's length in samples).

    Args:
        model: the trained classifier (portable kernels, as for the SavedModel).
        features: its feature settings.
        labels: class names in output order.
        out_dir: the folder to write (replaced atomically).
        quantize: ``none`` (float32), ``dynamic`` (int8 weights) or ``int8`` (the stream
            step's learned layers with int8 weights and activations, calibrated on
            ``calibration``, its front end and bookkeeping in float; ``classify.tflite`` then
            gets ``dynamic``).
        calibration: windows of training or validation audio, never test audio.
        check_clips: ``(window of samples, true label index)`` pairs from the test split.
        reference: float32 ``[n, samples]`` -> probabilities: the SavedModel the files must match.
        metadata: extra fields for ``metadata.json`` (e.g. the detector's settings).

    Returns:
        The report written to ``metadata.json`` (``parity``, sizes, latency).

    Raises:
        models.export.ExportCheckError: a file's answers differ from the SavedModel's beyond
            the tolerance (float: ``FLOAT_TOLERANCE`` in probability; quantized: more than one
            point of accuracy).
    """
    from models.export import ExportCheckError
    from models.streaming import StreamingClassifier, stream_problems

    check(quantize in QUANTIZATIONS, "--quantize", quantize, f"one of {list(QUANTIZATIONS)}")
    shape = feature_shape(features)
    mfcc = MfccLayer(features, name="mfcc")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="classify",
        fn=_classify_fn(model, mfcc),
        input_signature=[tf.TensorSpec([1, shape.clip_samples], tf.float32, name="waveform")],
    )
    # A window-filling model hears a short clip zero-padded to the window in any case, so only
    # a masked one needs the lengths (a second signature in the file: about 100 kB float, 130
    # kB dynamic, on the presets)
    with_lengths = features.window != "full"
    if with_lengths:
        archive.add_endpoint(
            name="classify_lengths",
            fn=_classify_lengths_fn(model, mfcc),
            input_signature=[
                tf.TensorSpec([1, shape.clip_samples], tf.float32, name="waveform"),
                tf.TensorSpec([1], tf.int32, name="lengths"),
            ],
        )
    problems = stream_problems(model, features)
    # int8 applies to the stream step only (see below): without one it would mean nothing
    check(
        quantize != "int8" or not problems,
        "--quantize",
        quantize,
        "none or dynamic for a model that cannot stream (int8 quantizes the stream step only; "
        f"this model has none: {'; '.join(problems)})",
    )
    streamer = None if problems else StreamingClassifier(model, features)
    if streamer is not None:
        shapes = streamer.state_shapes()
        archive.add_endpoint(
            name="stream_step",
            fn=_stream_fn(streamer),
            input_signature=[tf.TensorSpec([1, streamer.hop], tf.float32, name="samples")]
            + [tf.TensorSpec([1, *s], tf.float32, name=f"state_{n}") for n, s in shapes.items()],
        )
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as saved:
        archive.write_out(saved, verbose=False)

        def windows() -> Iterator[dict[str, np.ndarray]]:
            for w in calibration:
                yield {"waveform": w[None].astype(np.float32)}

        # The int8 calibrator crashes on the recurrent layers' WHILE loop over a window, so a
        # window classifier gets int8 weights (dynamic range); the stream step has no loop.
        classify_quantize = "dynamic" if quantize == "int8" else quantize
        (tmp / "classify.tflite").write_bytes(
            _convert(
                Path(saved),
                ["classify", "classify_lengths"] if with_lengths else ["classify"],
                classify_quantize,
                windows,
            )
        )
        if streamer is not None:
            (tmp / "stream_step.tflite").write_bytes(
                _convert(
                    Path(saved),
                    ["stream_step"],
                    quantize,
                    lambda: _stream_samples(streamer, calibration),
                )
            )
    meta: dict[str, Any] = {
        "task": "speech_commands",
        "format": "tflite",
        "quantize": quantize,
        "labels": list(labels),
        "sample_rate": features.sample_rate,
        "features": {k: getattr(features, k) for k in features.__dataclass_fields__},
        "classify": {
            "file": "classify.tflite",
            "signature": "classify",
            "quantize": classify_quantize,
            "inputs": {"waveform": f"float32 [1, {shape.clip_samples}]"},
            "outputs": {"probabilities": f"float32 [1, {len(labels)}]"},
        },
        "stream": {"available": False, "reason": "; ".join(problems)},
        **(metadata or {}),
    }
    if with_lengths:
        # the same file's second signature: a clip shorter than the window, answered as if
        # alone (the window's zero padding beyond `lengths` is ignored)
        meta["classify"]["lengths"] = {
            "signature": "classify_lengths",
            "inputs": {
                "waveform": f"float32 [1, {shape.clip_samples}]",
                "lengths": "int32 [1]",
            },
            "outputs": {"probabilities": f"float32 [1, {len(labels)}]"},
            "note": "lengths: the clip's samples (clamped to 1..window); the rest of the "
            "window is ignored",
        }
    if streamer is not None:
        meta["stream"] = {
            "available": True,
            "file": "stream_step.tflite",
            "signature": "stream_step",
            "quantize": quantize,
            "hop_samples": streamer.hop,
            "hop_seconds": streamer.hop / features.sample_rate,
            "window_frames": shape.max_frames,
            "state": [
                {"name": f"state_{n}", "shape": [1, *s], "dtype": "float32", "initial": 0.0}
                for n, s in streamer.state_shapes().items()
            ],
        }
    meta["classify"]["tensors"] = _tensor_table(tmp / "classify.tflite", "classify")
    if with_lengths:
        meta["classify"]["lengths"]["tensors"] = _tensor_table(
            tmp / "classify.tflite", "classify_lengths"
        )
    if streamer is not None:
        meta["stream"]["tensors"] = _tensor_table(tmp / "stream_step.tflite", "stream_step")
    meta["parity"] = _parity(tmp, meta, check_clips, reference)
    meta["bytes"] = {f.name: f.stat().st_size for f in sorted(tmp.glob("*.tflite"))}
    meta["latency_ms"] = _latency(tmp, meta)
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
    failures = meta["parity"]["failures"]
    if failures:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportCheckError("TFLite export check failed: " + "; ".join(failures))
    from data.files import replace_dir

    replace_dir(tmp, out_dir)
    return meta


def summary_lines(meta: dict[str, Any]) -> list[str]:
    """One line per file and signature of a TFLite folder's ``metadata.json``: what a user checks.

    Size, quantization, the parity check's accuracy against the SavedModel's on the same test
    clips with the largest probability difference, and the time of one call.
    """
    parity, latency, sizes = meta["parity"], meta.get("latency_ms", {}), meta["bytes"]
    timings = {"classify": ("classify_ms", "a window"), "stream_step": ("stream_ms", "a hop")}
    lines = []
    for name, file in SIGNATURE_FILES.items():
        part = parity.get(name)
        if part is None:
            continue
        timing, per = timings.get(name, (None, ""))
        where = f"{file} ({sizes[file]:,} bytes)" if name != "classify_lengths" else f"  {name}"
        line = (
            f"{where}: {_quantization(meta, name)}, accuracy {part['accuracy']:.3f} against the SavedModel's "
            f"{part['savedmodel_accuracy']:.3f} on {part['clips']} test clips"
            f"{' cut short' if name == 'classify_lengths' else ''}, largest "
            f"probability difference {part['max_abs_difference']:.2g}"
        )
        if timing and timing in latency:
            line += f", {latency[timing]:g} ms {per}"
        lines.append(line)
    return lines


def _quantization(meta: dict[str, Any], signature: str) -> str | None:
    """How the file holding ``signature`` was quantized (``metadata.json``)."""
    part = meta["stream"] if signature == "stream_step" else meta["classify"]
    return part.get("quantize")


def _tensor_table(path: Path, signature: str) -> dict[str, list[dict[str, Any]]]:
    """Each input and output of ``signature`` with its interpreter tensor index.

    The converter numbers tensors in no particular order (a state input may come before the
    samples), and runtimes without signature support (TFLite Micro, some mobile wrappers) address
    tensors by index: the table is how such a client knows which same-shaped state is which.
    """
    runner = interpreter(path).get_signature_runner(signature)

    # a file of several signatures has a subgraph for each, and each numbers its tensors from 0
    subgraph = getattr(runner, "_subgraph_index", None)

    def rows(details: dict[str, dict]) -> list[dict[str, Any]]:
        ordered = sorted(details.items(), key=lambda item: int(item[1]["index"]))
        return [
            {
                "name": name,
                "index": int(d["index"]),
                "shape": [int(s) for s in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name,
            }
            for name, d in ordered
        ]

    return {
        "subgraph": None if subgraph is None else int(subgraph),
        "inputs": rows(runner.get_input_details()),
        "outputs": rows(runner.get_output_details()),
    }


def _stream_samples(streamer: Any, calibration: list[np.ndarray]) -> Iterator[dict]:  # noqa: ANN401
    """Calibration inputs of the stream step: hops of audio with the state reached before them."""
    names = list(streamer.state_shapes())
    step = tf.function(streamer.step)
    for w in calibration[:50]:
        state = streamer.initial_state(1)
        for start in range(0, w.size - streamer.hop + 1, streamer.hop):
            hop = w[None, start : start + streamer.hop].astype(np.float32)
            if (start // streamer.hop) % 5 == 0:  # a sample of the states along the clip
                yield {"samples": hop, **{f"state_{n}": state[n].numpy() for n in names}}
            _, state = step(tf.constant(hop), state)


def _parity(folder: Path, meta: dict, clips: list[tuple[np.ndarray, int]], reference: Any) -> dict:
    """The files' answers on test clips against the SavedModel's."""
    quantized = meta["quantize"] != "none"
    batch = np.stack([w for w, _ in clips]).astype(np.float32)
    truth = np.array([y for _, y in clips])
    expected = np.asarray(reference(batch))
    lite = interpreter(folder / "classify.tflite")
    runner = lite.get_signature_runner("classify")
    got = np.stack([runner(waveform=w[None])["probabilities"][0] for w in batch])
    report: dict[str, Any] = {
        "clips": len(clips),
        "split": "test",
        "savedmodel_accuracy": round(float(np.mean(expected.argmax(1) == truth)), 4),
        "classify": {"clips": len(clips), **_compare(got, expected, truth)},
        "failures": [],
    }
    if "lengths" in meta["classify"]:
        lengths_runner = lite.get_signature_runner("classify_lengths")
        report["classify_lengths"] = _short_clips(lengths_runner, batch, truth, reference)

    if meta["stream"]["available"]:
        stream = TFLiteStream(folder / "stream_step.tflite", meta)
        sample = batch[: min(len(batch), 20)]  # hop by hop through the interpreter: slower
        streamed = []
        for w in sample:
            stream.reset()
            streamed.append(stream.push(w)[0, -1])
        report["stream_step"] = {
            "clips": len(sample),
            **_compare(np.stack(streamed), expected[: len(sample)], truth[: len(sample)]),
        }
    for name in SIGNATURE_FILES:
        part = report.get(name)
        if part is None:
            continue
        if quantized:
            drop = part["savedmodel_accuracy"] - part["accuracy"]  # on the same clips
            if drop > QUANTIZED_ACCURACY_DROP + 1e-9:  # exactly one point is within it
                report["failures"].append(
                    f"{name} ({SIGNATURE_FILES[name]}, {_quantization(meta, name)}) accuracy "
                    f"{part['accuracy']:.4f} is more "
                    f"than one point below the SavedModel's {part['savedmodel_accuracy']:.4f} on "
                    f"the same {part['clips']} test clips"
                )
        elif part["max_abs_difference"] > FLOAT_TOLERANCE:
            report["failures"].append(
                f"{name} ({SIGNATURE_FILES[name]}) probabilities differ from the SavedModel's by "
                f"{part['max_abs_difference']:.2e} (expected <= {FLOAT_TOLERANCE:g})"
            )
    report["tolerance"] = (
        f"accuracy within {QUANTIZED_ACCURACY_DROP * 100:g} point of the SavedModel"
        if quantized
        else f"max probability difference <= {FLOAT_TOLERANCE:g}"
    )
    return report


def _short_clips(
    runner: Any,  # noqa: ANN401 - LiteRT's signature runner of classify_lengths
    batch: np.ndarray,
    truth: np.ndarray,
    reference: Any,  # noqa: ANN401 - any callable
) -> dict:
    """``classify_lengths`` on clips cut short, against the SavedModel on each short clip alone.

    Each clip is cut (the cut points spread from a quarter to all of the window) and
    zero-padded back to the window, as a device would send it with its length.
    """
    width = batch.shape[1]
    steps = max(len(batch) - 1, 1)
    cuts = [width // 4 + (width - width // 4) * i // steps for i in range(len(batch))]
    got_cut, want_cut = [], []
    for w, n in zip(batch, cuts, strict=True):
        padded = np.zeros_like(w)
        padded[:n] = w[:n]
        lengths = np.array([n], np.int32)
        got_cut.append(runner(waveform=padded[None], lengths=lengths)["probabilities"][0])
        want_cut.append(np.asarray(reference(w[None, :n]))[0])
    return {
        "clips": len(batch),
        "cut_to_samples": [int(cuts[0]), int(cuts[-1])],
        **_compare(np.stack(got_cut), np.stack(want_cut), truth),
    }


def _compare(got: np.ndarray, expected: np.ndarray, truth: np.ndarray) -> dict:
    return {
        "accuracy": round(float(np.mean(got.argmax(1) == truth)), 4),
        "savedmodel_accuracy": round(float(np.mean(expected.argmax(1) == truth)), 4),
        "agreement": round(float(np.mean(got.argmax(1) == expected.argmax(1))), 4),
        "max_abs_difference": float(np.abs(got - expected).max()),
    }


def _latency(folder: Path, meta: dict, repeats: int = 50) -> dict[str, float]:
    """Mean time of one interpreter call on this machine (one thread), in milliseconds."""
    out = {}
    for name, key in (("classify", "classify"), ("stream_step", "stream")):
        path = folder / f"{name}.tflite"
        if not path.is_file():
            continue
        signature = interpreter(path, threads=1).get_signature_runner(name)
        inputs = {
            detail_name: np.zeros(detail["shape"], np.float32)
            for detail_name, detail in signature.get_input_details().items()
        }
        signature(**inputs)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            signature(**inputs)
        out[f"{key}_ms"] = round((time.perf_counter() - start) / repeats * 1000, 3)
    if "stream_ms" in out:
        out["stream_real_time_factor"] = round(
            meta["stream"]["hop_seconds"] * 1000 / max(out["stream_ms"], 1e-6), 1
        )
    return out
