"""The exports a server answers for: found from paths, named, loaded and described.

``find_exports`` turns ``[NAME=]PATH`` arguments into named export paths (an export, a run
directory, or a folder of run directories); ``load`` loads one as the ``Served`` class
registered for its task (``TASKS``). A ``Served`` lists its signatures as ``TensorSpec``s, runs
them on checked arrays (TF Serving's ``:predict``), and describes itself for the page (``info``:
labels, the run's summary and plots when the run directory is next to the export).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from data.registry import Registry
from models.serving import ExportError, read_metadata
from pipelines.serving.tensors import (
    PredictRequest,
    RequestError,
    TensorSpec,
    answer,
    bind,
    parse_predict,
)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TIMESTAMP = re.compile(r"-\d{8}-\d{6}$")  # what run.py appends to a default run directory
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class ExportPath:
    """An export to serve under ``name``; ``run_dir`` holds its metrics and plots, if known."""

    name: str
    path: Path
    run_dir: Path | None


def _is_export(path: Path) -> bool:
    try:
        read_metadata(path)
    except ExportError:
        return False
    return True


def _named(
    export: Path, run: Path | None, name: str, tflite: bool = False
) -> tuple[Path, Path | None, str, str]:
    """``(export, run dir, full name, short name)``: the short one without run.py's timestamp."""
    suffix = "-tflite" if tflite else ""
    return export, run, name + suffix, TIMESTAMP.sub("", name) + suffix


def _expand(path: Path) -> list[tuple[Path, Path | None, str, str]]:
    """``(export, run dir, full name, short name)`` of each export a path stands for."""
    if _is_export(path):
        folder = path.parent if path.suffix == ".tflite" else path
        if folder.name == "tflite" and folder.parent.name == "export":  # RUN/export/tflite
            return [_named(path, folder.parent.parent, folder.parent.parent.name, tflite=True)]
        if folder.name == "export":  # RUN/export
            return [_named(path, folder.parent, folder.parent.name)]
        return [_named(path, None, folder.name)]
    if _is_export(path / "export"):  # a run directory
        return [_named(path / "export", path, path.name)]
    runs = sorted(p for p in path.iterdir() if _is_export(p / "export")) if path.is_dir() else []
    if runs:  # e.g. python run.py --run-dir D writes D/speech_commands and D/translation
        return [_named(run / "export", run, run.name) for run in runs]
    raise ExportError(
        f"{path} holds no export: expected a SavedModel export folder (with assets.extra/"
        "metadata.json), a TFLite folder or .tflite file, a run directory holding export/, or "
        "a folder of run directories"
    )


def find_exports(specs: list[str]) -> list[ExportPath]:
    """Named exports from ``[NAME=]PATH`` arguments.

    Without ``NAME=``, an export is named after its run directory (``runs/x/export`` is ``x``;
    ``runs/x/export/tflite`` is ``x-tflite``) or, outside a run, after its folder; the timestamp
    that ``run.py`` appends to default run directories is dropped when the shorter name stays
    unique, so the default run serves ``speech_commands`` and ``translation``.

    Raises:
        ExportError: a path holds no export, a name is not URL-safe, ``NAME=`` names a folder of
            several runs, or two exports get the same name.
    """
    found: list[tuple[Path, Path | None]] = []  # (export, run dir)
    candidates: list[tuple[str, str]] = []  # (full, short) name; both the given name with NAME=
    for spec in specs:
        name, sep, rest = spec.partition("=")
        given = name if sep and NAME.fullmatch(name) and not Path(spec).exists() else None
        path = Path(rest if given else spec)
        if not path.exists():
            raise ExportError(f"{path} does not exist: expected an export or a run directory")
        expanded = _expand(path)
        if given and len(expanded) > 1:
            raise ExportError(
                f"{given}={path}: NAME= names one export; {path} holds {len(expanded)} runs "
                f"({', '.join(str(run) for _, run, _, _ in expanded)}): name each run instead"
            )
        for export, run, full, short in expanded:
            found.append((export, run))
            candidates.append((given, given) if given else (full, short))
    shorts = [short for _, short in candidates]
    names = [short if shorts.count(short) == 1 else full for full, short in candidates]
    for name, (export, _) in zip(names, found, strict=True):
        if not NAME.fullmatch(name):
            raise ExportError(
                f"Model name {name!r} (for {export}) is not usable in a URL: expected letters, "
                "digits, '_', '.' or '-' (give one with NAME=PATH)"
            )
        if names.count(name) > 1:
            paths = [str(e) for n, (e, _) in zip(names, found, strict=True) if n == name]
            raise ExportError(f"Two exports are named {name!r} ({paths}): name them with NAME=PATH")
    return [ExportPath(n, e, r) for n, (e, r) in zip(names, found, strict=True)]


class Served:
    """A loaded export under a name: its signatures, how to run them, and what the page shows."""

    task: ClassVar[str] = ""

    def __init__(self, export: ExportPath, meta: dict) -> None:
        self.name, self.path, self.run_dir = export.name, export.path, export.run_dir
        self.meta = meta

    def signatures(self) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
        """Signature name -> (inputs, outputs)."""
        raise NotImplementedError

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one signature on checked inputs."""
        raise NotImplementedError

    def signature_inputs(self, name: str) -> list[TensorSpec]:
        """The inputs of signature ``name``.

        Raises:
            RequestError: no such signature (the message lists them).
        """
        signatures = self.signatures()
        if name not in signatures:
            raise RequestError(
                f"signature_name {name!r} is not in model {self.name!r}: expected one of "
                f"{sorted(signatures)}"
            )
        return signatures[name][0]

    def predict(self, body: Any) -> dict[str, Any]:  # noqa: ANN401 - parsed JSON
        """TF Serving's ``:predict``: ``{"predictions": ...}`` or ``{"outputs": ...}``."""
        if not isinstance(body, dict):
            raise RequestError(
                f'expected a JSON object such as {{"instances": [...]}}; got {type(body).__name__}'
            )
        name = body.get("signature_name") or DEFAULT_SIGNATURE
        request = parse_predict(body, self.signature_inputs(str(name)), DEFAULT_SIGNATURE)
        return answer(self._predict(request), request.row)

    def _predict(self, request: PredictRequest) -> dict[str, np.ndarray]:
        return self.run(
            request.signature_name, bind(request, self.signature_inputs(request.signature_name))
        )

    def status(self) -> dict[str, Any]:
        """TF Serving's model status: one version, available."""
        return {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self) -> dict[str, Any]:
        """TF Serving's model metadata (signature defs), plus the export's ``metadata.json``."""
        defs = {
            name: {
                "inputs": {spec.name: spec.to_json() for spec in inputs},
                "outputs": {spec.name: spec.to_json() for spec in outputs},
                "method_name": "tensorflow/serving/predict",
            }
            for name, (inputs, outputs) in self.signatures().items()
        }
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": defs}, "export": self.meta},
        }

    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` when the run directory is known, else ``{}``."""
        path = self.run_dir / "metrics.json" if self.run_dir else None
        if path is None or not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a run being written: the card shows what it can
            return {}

    def plots(self) -> list[str]:
        """File names of the run's plots (``RUN_DIR/plots/*.png``)."""
        folder = self.run_dir / "plots" if self.run_dir else None
        return sorted(p.name for p in folder.glob("*.png")) if folder and folder.is_dir() else []

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, str]]:
        """The rows ``run.py`` prints for this run (or what ``metadata.json`` knows)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What the page needs: task, settings, signatures and the card."""
        metrics = self.metrics()
        return {
            "name": self.name,
            "task": self.task,
            "path": str(self.path),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "signatures": sorted(self.signatures()),
            "summary": [list(row) for row in self.summary(metrics)],
            "plots": [f"/api/models/{self.name}/plots/{name}" for name in self.plots()],
        }


TASKS: Registry[type[Served]] = Registry("served task")


def tensor_spec(name: str, spec: Any) -> TensorSpec:  # noqa: ANN401 - a tf.TensorSpec
    """A ``tf.TensorSpec`` as a ``TensorSpec``."""
    dtype = "string" if spec.dtype.name == "string" else spec.dtype.name
    return TensorSpec(name, dtype, tuple(spec.shape.as_list()))


def signature_specs(function: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:  # noqa: ANN401
    """Inputs and outputs of a SavedModel signature (a concrete function)."""
    _, inputs = function.structured_input_signature
    outputs = function.structured_outputs
    return (
        [tensor_spec(name, spec) for name, spec in inputs.items()],
        [tensor_spec(name, spec) for name, spec in outputs.items()],
    )


def run_signature(function: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # noqa: ANN401
    """Calls a SavedModel signature; the model's own input checks become a ``RequestError``."""
    import tensorflow as tf

    try:
        out = function(**{name: tf.constant(value) for name, value in arrays.items()})
    except tf.errors.InvalidArgumentError as err:
        raise RequestError(f"the model refused the input: {_first_line(err.message)}") from None
    return {name: value.numpy() for name, value in out.items()}


def _first_line(message: str) -> str:
    """The model's own words out of TensorFlow's long error message."""
    lines = [line.strip() for line in message.splitlines()]
    lines = [
        line
        for line in lines
        if line
        and not line.startswith(("[[", "Graph execution error", "Detected at node", "<stack"))
    ]
    if not lines:
        return message.strip()
    head = "assertion failed: ["  # tf.debugging.assert_*: [message] [details] [values]
    if lines[0].startswith(head):
        text = lines[0][len(head) :]
        end = text.find("] [")
        return (text[:end] if end >= 0 else text.rstrip("]")).strip(" .")
    return lines[0]


def load(export: ExportPath) -> Served:
    """Loads an export as the ``Served`` class of its task.

    Raises:
        ExportError: not an export, or a task nothing serves.
    """
    import pipelines.serving.speech  # noqa: F401 - registers the tasks
    import pipelines.serving.translation  # noqa: F401

    _, meta, _ = read_metadata(export.path)
    task = str(meta.get("task"))
    if task not in TASKS:
        raise ExportError(f"{export.path} is a {task!r} export: expected one of {TASKS.names()}")
    return TASKS.get(task)(export, meta)
