"""An exported speech model behind one interface, whether a SavedModel or TFLite files.

``load_speech_model(path)`` accepts a SavedModel export folder, a TFLite folder
(``export/tflite``) or one ``.tflite`` file of it. ``classify`` answers zero-padded batches of
clips (each row as if sent alone, given its length); ``stream()`` returns a ``Stream`` that takes
audio in pieces of any size and returns the probabilities after each hop (``stream_step``), or
raises ``ExportError`` naming the settings when the model is not causal (``stream_reason``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data.audio import fit_length
from models.detection import DetectorConfig


class ExportError(ValueError):
    """The path is not a usable speech export; the message says what was found."""


class Stream:
    """Pieces of audio in, probabilities for the stream so far out; keeps partial hops.

    ``rows`` independent streams hear the same audio (``push``), or each its own segment
    (``run_segments``).
    """

    def __init__(self, hop: int, specs: list[dict], rows: int = 1) -> None:
        self.hop, self.rows, self.specs = hop, rows, specs
        self._pending = np.zeros(0, np.float32)
        self.state = {s["name"]: np.zeros([rows, *s["shape"][1:]], np.float32) for s in specs}

    def reset(self) -> None:
        """Starts every row again from silence: the state back to zero, no partial hop kept."""
        for value in self.state.values():
            value[:] = 0.0
        self._pending = np.zeros(0, np.float32)

    def reset_row(self, row: int) -> None:
        """Starts row ``row`` again from silence (its state back to zero); the others go on."""
        for value in self.state.values():
            value[row] = 0.0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feeds samples to every row; returns the probabilities after each whole hop.

        Shape ``[rows, hops, classes]`` (``hops`` may be 0: a partial hop waits for more audio).
        A SavedModel's ``stream_step`` is compiled with XLA once per number of hops per call
        (about half a second each): feed pieces of a steady size.
        """
        data = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        whole = data.size - data.size % self.hop
        self._pending = data[whole:]
        if not whole:
            return np.zeros((self.rows, 0, 0), np.float32)
        return self._step(np.repeat(data[None, :whole], self.rows, axis=0))

    def run_segments(self, segments: np.ndarray) -> np.ndarray:
        """Each row of ``segments`` ``[rows, k * hop]`` heard from silence: every row is reset.

        Returns the probabilities after each hop, ``[rows, k, classes]``; the state is left at
        the end of each row's segment. ``run.py detect --stream`` runs its staggered restarts
        this way, many in one call.
        """
        segments = np.asarray(segments, np.float32)
        if segments.ndim != 2 or segments.shape[0] != self.rows or segments.shape[1] % self.hop:
            raise ValueError(
                f"segments of shape {segments.shape}: expected [{self.rows}, k * {self.hop}]"
            )
        self.reset()
        return self._step(segments)

    def _step(self, samples: np.ndarray) -> np.ndarray:
        """Whole hops ``[rows, k * hop]`` -> probabilities ``[rows, k, classes]``; updates state."""
        raise NotImplementedError


class _SavedModelStream(Stream):
    def __init__(self, signature: Any, meta: dict, rows: int) -> None:  # noqa: ANN401
        super().__init__(int(meta["stream"]["hop_samples"]), meta["stream"]["state"], rows)
        self._signature = signature

    def _step(self, samples: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = self._signature(samples=tf.constant(samples), **self.state)
        self.state = {name: out[name].numpy() for name in self.state}
        return out["hop_probabilities"].numpy()


def _detector(path: Path, values: dict, window_s: float) -> DetectorConfig:
    """The export's detector settings; keys this version does not know are left out."""
    from data.checks import ConfigError

    known = {k: v for k, v in values.items() if k in DetectorConfig.__dataclass_fields__}
    try:
        config = DetectorConfig(**known)
        config.check_window(window_s)
        return config
    except (ConfigError, TypeError) as err:
        raise ExportError(f"{path}: metadata.json detector: {err}") from None


class SpeechModel:
    """A loaded speech export: ``meta`` (labels, sample rate, features) and how to run it.

    ``detector`` holds the detector settings chosen for its preset (``metadata.json``
    ``detector``; Speech Commands' ``RecognizeCommands`` defaults for an export without them).
    """

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
        self.detector = _detector(path, meta.get("detector", {}), self.window / self.rate)
        if kind == "savedmodel":
            import tensorflow as tf

            self._loaded = tf.saved_model.load(str(path))
        else:
            from models.tflite import interpreter

            runner = interpreter(_tflite_file(path, "classify.tflite"))
            self._classify = runner.get_signature_runner("classify")
            # a window-filling model has no classify_lengths (nor has a masked one's file
            # from before it): the padded window
            self._classify_lengths = (
                runner.get_signature_runner("classify_lengths")
                if "classify_lengths" in runner.get_signature_list()
                else None
            )

    @property
    def signatures(self) -> dict[str, Any]:
        """The SavedModel's signatures (concrete functions) by name; empty for TFLite files."""
        return dict(self._loaded.signatures) if self.kind == "savedmodel" else {}

    def classify(self, batch: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``[n, classes]`` of a zero-padded batch ``[n, samples]``.

        ``lengths`` (samples of each row) makes padding irrelevant: each row is answered as if
        it were sent alone. Without ``lengths`` a row is as wide as the batch, as
        ``serving_default`` hears it. (A ``features.window: masked`` model's ``classify.tflite``
        exported before its ``classify_lengths`` signature hears every row padded to the
        window instead.)

        Raises:
            ValueError: ``lengths`` is not one length per row, each from 1 to the batch's width.
        """
        batch = np.asarray(batch, np.float32)
        if lengths is not None:  # what serving_lengths refuses, refused for TFLite files too
            lengths = np.asarray(lengths)
            if (
                lengths.shape != (len(batch),)
                or not np.issubdtype(lengths.dtype, np.integer)
                or np.any(lengths < 1)
                or np.any(lengths > batch.shape[1])
            ):
                raise ValueError(
                    f"lengths {lengths.tolist()}: expected {len(batch)} integers (one per row), "
                    f"each from 1 to the batch's width {batch.shape[1]}"
                )
        if self.kind == "tflite":  # one fixed window per call
            # no lengths: every row is as wide as the batch, as serving_default hears it
            lengths = lengths if lengths is not None else [batch.shape[1]] * len(batch)
            return np.stack(
                [self._classify_one(row[:n]) for row, n in zip(batch, lengths, strict=True)]
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

    def _classify_one(self, clip: np.ndarray) -> np.ndarray:
        """One clip through ``classify.tflite``, zero-padded to the window and answered alone."""
        window = fit_length(clip, self.window, full=True)[None]
        if clip.size >= self.window or self._classify_lengths is None:
            return self._classify(waveform=window)["probabilities"][0]
        length = np.array([clip.size], np.int32)
        return self._classify_lengths(waveform=window, lengths=length)["probabilities"][0]

    def stream(self, rows: int = 1) -> Stream:
        """A new stream of ``rows`` independent rows (state at zero).

        Raises:
            ExportError: the model cannot stream; the message names the settings.
        """
        if self.stream_reason:
            raise ExportError(f"{self.path} cannot stream: {self.stream_reason}")
        if self.kind == "tflite":
            from models.tflite import TFLiteStream

            return TFLiteStream(_tflite_file(self.path, "stream_step.tflite"), self.meta, rows)
        return _SavedModelStream(self._loaded.signatures["stream_step"], self.meta, rows)


TFLITE_FILES = ("classify.tflite", "stream_step.tflite")


def _tflite_file(folder: Path, name: str) -> Path:
    """``folder / name``, which must exist.

    Raises:
        ExportError: the file is missing (the message names it).
    """
    path = folder / name
    if not path.is_file():
        raise ExportError(f"{folder} has metadata.json but no {name}: export it again")
    return path


def read_metadata(path: str | Path) -> tuple[Path, dict, str]:
    """``(folder, metadata, kind)`` of an export path; kind is ``savedmodel`` or ``tflite``.

    Raises:
        ExportError: no export metadata at ``path``.
    """
    path = Path(path)
    if path.suffix == ".tflite" and path.name not in TFLITE_FILES:
        raise ExportError(
            f"{path}: expected one of the export's TFLite files ({', '.join(TFLITE_FILES)}) or "
            "their folder; a renamed file cannot be told apart"
        )
    if path.suffix == ".tflite" and not path.is_file():
        raise ExportError(f"{path}: no such file")
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
