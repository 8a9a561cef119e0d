"""A served speech export: TF Serving signatures, an audio file's label, commands in a recording.

A SavedModel's own signatures are served as they are (``serving_default``, ``serving_lengths``,
``stream_step``); a TFLite folder answers ``serving_default`` and ``serving_lengths`` through its
``classify.tflite``. ``classify_file`` and ``detect_file`` are ``run.py predict`` and ``run.py
detect`` on one file, so the server and the command line give the same answers.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.detection import DetectorConfig
from models.serving import ExportError, load_speech_model
from pipelines.serving.served import (
    DEFAULT_SIGNATURE,
    TASKS,
    ExportPath,
    Served,
    run_signature,
    signature_specs,
)
from pipelines.serving.tensors import PredictRequest, RequestError, TensorSpec, ragged_rows

_WAVEFORM = TensorSpec("waveform", "float32", (None, None))
_LENGTHS = TensorSpec("lengths", "int32", (None,))
_OUTPUTS = [
    TensorSpec("label", "string", (None,)),
    TensorSpec("probabilities", "float32", (None, None)),
]


@TASKS.register("speech_commands")
class SpeechServed(Served):
    """A speech export (SavedModel, TFLite folder or ``.tflite`` file)."""

    task = "speech_commands"

    def __init__(self, export: ExportPath, meta: dict) -> None:
        super().__init__(export, meta)
        self.model = load_speech_model(export.path)
        if self.model.kind == "tflite":  # one interpreter is not thread-safe: one call at a time
            self.model.classify = _one_at_a_time(self.model.classify)
        self.top_k = min(int(meta.get("top_k", 3)), len(self.model.labels))
        self._functions = self.model.signatures
        if self._functions:
            self._specs = {name: signature_specs(f) for name, f in self._functions.items()}
        else:  # TFLite: the classifier behind the two SavedModel signatures it can answer
            self._specs = {
                DEFAULT_SIGNATURE: ([_WAVEFORM], _OUTPUTS),
                "serving_lengths": ([_WAVEFORM, _LENGTHS], _OUTPUTS),
            }

    def signatures(self) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
        return self._specs

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._functions:
            return run_signature(self._functions[signature], arrays)
        waveform, lengths = arrays["waveform"], arrays.get("lengths")
        if waveform.shape[1] == 0 or not np.all(np.isfinite(waveform)):
            raise RequestError(
                "the model refused the input: waveform: expected float32 [batch, samples] with "
                "samples >= 1, all finite"
            )
        if lengths is not None and (
            lengths.shape[0] != waveform.shape[0]
            or np.any(lengths < 1)
            or np.any(lengths > waveform.shape[1])
        ):
            raise RequestError(
                "the model refused the input: lengths: expected one length per waveform row, "
                "each between 1 and the waveform's width"
            )
        return self._answer(self.model.classify(waveform, lengths))

    def _answer(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        labels = np.asarray(self.model.labels, dtype=object)[np.argmax(probabilities, axis=1)]
        return {"label": labels, "probabilities": probabilities}

    def _predict(self, request: PredictRequest) -> dict[str, np.ndarray]:
        """Also takes rows of different lengths (TF Serving would refuse them).

        They are zero-padded and sent through ``serving_lengths``, so each row is answered as if
        it came alone.
        """
        if request.signature_name == DEFAULT_SIGNATURE and "serving_lengths" in self._specs:
            ragged = ragged_rows(request.values["waveform"])
            if ragged is not None:
                padded, lengths = ragged
                return self.run("serving_lengths", {"waveform": padded, "lengths": lengths})
        return super()._predict(request)

    def classify_file(self, path: str, top_k: int | None = None) -> dict[str, Any]:
        """``run.py predict``'s answer for one audio file (a long one is searched for commands).

        Raises:
            RequestError: the file is not audio this server can read.
        """
        from data.audio import header_problem
        from pipelines.predict import _classify_group  # the command line's own code

        k = self.top_k if top_k is None else top_k
        (result,) = _classify_group(self.model, [path], k)
        if "error" in result:  # the header's problem says more than the fallback decoder's
            problem = header_problem(path) or result["error"]
            raise RequestError(f"not usable audio: {problem}; {AUDIO_EXPECTED}")
        del result["input"]
        return result

    def detect_file(self, path: str, config: DetectorConfig, stream: bool) -> list[dict]:
        """``run.py detect``'s events in one file (``file`` left out).

        Raises:
            RequestError: the file is not audio, or ``stream`` on a model that cannot stream.
        """
        from data.audio import AudioError
        from data.checks import ConfigError
        from pipelines.detect import detect_file, stream_schedule

        try:
            config.check_window(self.model.window / self.model.rate)
        except ConfigError as err:
            raise RequestError(f"query parameters: {err}") from None
        try:
            if stream:  # a non-causal model, or a hop too long for the runs, is refused
                stream_schedule(self.model, config)
            events = detect_file(self.model, path, config, stream=stream)
        except (ExportError, ConfigError) as err:
            raise RequestError(f"stream=true: {err}") from None
        except AudioError as err:
            raise RequestError(f"not usable audio: {err}; {AUDIO_EXPECTED}") from None
        return [{k: v for k, v in event.items() if k != "file"} for event in events]

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, str]]:
        from pipelines.reporting import speech_summary

        if metrics:
            return speech_summary(metrics)
        rows = [("source", str(self.meta.get("source", "?")))]
        if "test_accuracy" in self.meta:
            rows.append(("test accuracy", f"{self.meta['test_accuracy']:.4f}"))
        return rows + [("run directory", "not found next to the export: no metrics or plots")]

    def info(self) -> dict[str, Any]:
        model = self.model
        return {
            **super().info(),
            "labels": model.labels,
            "sample_rate": model.rate,
            "clip_seconds": model.window / model.rate,
            "top_k": self.top_k,
            "format": model.kind,
            "stream": model.stream_reason or True,
            "detector": dataclasses.asdict(model.detector),
        }


def _one_at_a_time(function: Callable) -> Callable:
    lock = threading.Lock()

    def locked(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        with lock:
            return function(*args, **kwargs)

    return locked


AUDIO_EXPECTED = "expected an audio file soundfile can read (WAV, FLAC, OGG, MP3, ...), any rate"


def upload_suffix(filename: str) -> str:
    """A safe suffix for a temporary copy of an upload (decoders look at it for some formats)."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ".audio"
