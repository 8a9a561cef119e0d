"""An exported speech model behind one interface, whether a SavedModel or TFLite files.

``load_speech_model(path)`` accepts a SavedModel export folder, a TFLite folder
(``export/tflite``) or one ``.tflite`` file of it. ``classify`` answers zero-padded batches of
clips (each row as if sent alone, given its length); ``stream()`` returns a ``Stream`` that takes
audio in pieces of any size and returns the probabilities so far (``stream_step``), or None when
the model is not causal (``stream_reason`` says why).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data.audio import fit_length


class ExportError(ValueError):
    """The path is not a usable speech export; the message says what was found."""


class Stream:
    """Pieces of audio in, probabilities for the stream so far out; keeps partial hops."""

    def __init__(self, hop: int) -> None:
        self.hop = hop
        self._pending = np.zeros(0, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feeds samples; returns the probabilities after each whole hop ``[hops, classes]``.

        A partial hop waits for the next call (no rows until a hop is complete).
        """
        data = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        whole = data.size - data.size % self.hop
        self._pending = data[whole:]
        return self._step(data[:whole]) if whole else np.zeros((0, 0), np.float32)

    def _step(self, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _SavedModelStream(Stream):
    def __init__(self, signature: Any, meta: dict) -> None:  # noqa: ANN401
        import tensorflow as tf

        super().__init__(int(meta["stream"]["hop_samples"]))
        self._tf, self._signature = tf, signature
        self.state = {
            s["name"]: tf.zeros([1, *s["shape"][1:]], tf.float32) for s in meta["stream"]["state"]
        }

    def _step(self, samples: np.ndarray) -> np.ndarray:
        out = self._signature(samples=self._tf.constant(samples[None]), **self.state)
        self.state = {name: out[name] for name in self.state}
        return out["hop_probabilities"].numpy()[0]


class _TFLiteStream(Stream):
    def __init__(self, path: Path, meta: dict) -> None:
        from models.tflite import TFLiteStream

        super().__init__(int(meta["stream"]["hop_samples"]))
        self._runner = TFLiteStream(path, meta)

    def _step(self, samples: np.ndarray) -> np.ndarray:
        return self._runner.push(samples)


class SpeechModel:
    """A loaded speech export: ``meta`` (labels, sample rate, features) and how to run it."""

    def __init__(self, path: Path, meta: dict, kind: str) -> None:
        self.path, self.meta, self.kind = path, meta, kind
        self.labels: list[str] = meta["labels"]
        self.rate = int(meta["sample_rate"])
        self.window = int(round(self.rate * float(meta["features"]["clip_seconds"])))
        stream = meta.get("stream") or {
            "available": False,
            "reason": "the export predates stream_step (export it again)",
        }
        self.stream_reason = "" if stream["available"] else stream["reason"]
        if kind == "savedmodel":
            import tensorflow as tf

            self._loaded = tf.saved_model.load(str(path))
        else:
            from models.tflite import interpreter

            self._classify = interpreter(path / "classify.tflite").get_signature_runner("classify")

    def classify(self, batch: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``[n, classes]`` of a zero-padded batch ``[n, samples]``.

        ``lengths`` (samples of each row) makes padding irrelevant: each row is answered as if
        it were sent alone.
        """
        batch = np.asarray(batch, np.float32)
        if self.kind == "tflite":  # one fixed window per call
            lengths = lengths if lengths is not None else [batch.shape[1]] * len(batch)
            return np.stack(
                [
                    self._classify(waveform=fit_length(row[:n], self.window, full=True)[None])[
                        "probabilities"
                    ][0]
                    for row, n in zip(batch, lengths, strict=True)
                ]
            )
        import tensorflow as tf

        signatures = self._loaded.signatures
        if lengths is not None and "serving_lengths" in signatures:
            out = signatures["serving_lengths"](
                waveform=tf.constant(batch), lengths=tf.constant(np.asarray(lengths, np.int32))
            )
            return out["probabilities"].numpy()
        if lengths is not None:  # an export from before serving_lengths: one clip at a time
            rows = zip(batch, lengths, strict=True)
            return np.concatenate([self.classify(row[None, :n]) for row, n in rows])
        return signatures["serving_default"](waveform=tf.constant(batch))["probabilities"].numpy()

    def stream(self) -> Stream:
        """A new stream (state at zero).

        Raises:
            ExportError: the model cannot stream; the message names the settings.
        """
        if self.stream_reason:
            raise ExportError(f"{self.path} cannot stream: {self.stream_reason}")
        if self.kind == "tflite":
            return _TFLiteStream(self.path / "stream_step.tflite", self.meta)
        return _SavedModelStream(self._loaded.signatures["stream_step"], self.meta)


def read_metadata(path: str | Path) -> tuple[Path, dict, str]:
    """``(folder, metadata, kind)`` of an export path; kind is ``savedmodel`` or ``tflite``.

    Raises:
        ExportError: no export metadata at ``path``.
    """
    path = Path(path)
    folder = path.parent if path.suffix == ".tflite" else path
    for meta_path, kind in (
        (folder / "assets.extra" / "metadata.json", "savedmodel"),
        (folder / "metadata.json", "tflite"),
    ):
        if meta_path.is_file():
            return folder, json.loads(meta_path.read_text(encoding="utf-8")), kind
    raise ExportError(
        f"{path} is not an export: expected a SavedModel folder (with assets.extra/"
        "metadata.json), a TFLite folder (with metadata.json) or a .tflite file in one"
    )


def load_speech_model(path: str | Path) -> SpeechModel:
    """Loads a speech export (SavedModel or TFLite).

    Raises:
        ExportError: not an export, or not a speech export.
    """
    folder, meta, kind = read_metadata(path)
    if meta.get("task") != "speech_commands":
        raise ExportError(f"{path} is a {meta.get('task')!r} export; expected a speech export")
    return SpeechModel(folder, meta, kind)
