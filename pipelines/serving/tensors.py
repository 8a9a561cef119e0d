"""TensorFlow Serving's predict API in JSON: requests checked against a signature, and answers.

A request is ``{"signature_name": ..., "instances": [...]}`` (row format: one item per example)
or ``{"inputs": ...}`` (columnar: whole tensors); the answer is ``{"predictions": [...]}`` or
``{"outputs": ...}``, without the output names when the signature has one output, as TF Serving
does (https://www.tensorflow.org/tfx/serving/api_rest). Every problem is a ``RequestError``
naming the input and what was expected, so the client gets a 400 instead of an error deep in
TensorFlow.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np


class RequestError(ValueError):
    """A request the server cannot answer; ``status`` is the HTTP code (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: name, dtype and shape (``None`` = any size).

    ``dtype`` is a NumPy name (``float32``, ``int32``) or ``string``. The first dimension is the
    batch.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        """E.g. ``float32 [?, ?]``."""
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"

    def to_json(self) -> dict[str, Any]:
        """TF Serving's ``TensorInfo`` in JSON (what its metadata API returns)."""
        dtype = {"float32": "DT_FLOAT", "int32": "DT_INT32", "int64": "DT_INT64"}
        return {
            "dtype": dtype.get(self.dtype, "DT_STRING" if self.dtype == "string" else self.dtype),
            "tensor_shape": {
                "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in self.shape],
                "unknown_rank": False,
            },
            "name": self.name,
        }


@dataclass(frozen=True)
class PredictRequest:
    """A parsed predict request: the signature and each input's JSON value (whole tensors)."""

    signature_name: str
    values: dict[str, Any]  # input name -> nested lists (row format: one item per instance)
    row: bool  # row format ("instances"): answer with "predictions"


def parse_json(body: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """The JSON value of a request body.

    Raises:
        RequestError: the body is not UTF-8 JSON; the message gives the position.
    """
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RequestError(f"malformed JSON: the body is not UTF-8 ({err.reason})") from None
    except RecursionError:
        raise RequestError(
            "malformed JSON: nested too deeply; expected an object such as "
            '{"instances": [...]} with tensors of a few dimensions'
        ) from None
    except json.JSONDecodeError as err:
        raise RequestError(
            f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}; expected an "
            'object such as {"instances": [...]} or {"inputs": ...}'
        ) from None


def parse_predict(body: Any, inputs: list[TensorSpec], default_signature: str) -> PredictRequest:  # noqa: ANN401
    """Reads a predict request for a signature with these ``inputs``.

    Args:
        body: the parsed JSON body.
        inputs: the signature's inputs (used to map single-input shorthand to the input's name).
        default_signature: used when the request names none.

    Raises:
        RequestError: not an object, both or neither of ``instances`` / ``inputs``, unknown
            keys, missing or unknown input names, or instances that are not a non-empty list.
    """
    if not isinstance(body, dict):
        raise RequestError(
            f'expected a JSON object such as {{"instances": [...]}}; got {type(body).__name__}'
        )
    unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
    if unknown:
        raise RequestError(
            f"unknown keys {unknown}: expected 'instances' or 'inputs' (and 'signature_name')"
        )
    if ("instances" in body) == ("inputs" in body):
        raise RequestError(
            "expected exactly one of 'instances' (row format) and 'inputs' (columnar format)"
        )
    signature = body.get("signature_name") or default_signature
    if not isinstance(signature, str):
        raise RequestError(f"signature_name: expected a string; got {signature!r}")
    names = [spec.name for spec in inputs]
    if "inputs" in body:
        value = body["inputs"]  # an object names the inputs; anything else is the one input
        named = isinstance(value, dict) or len(names) > 1
        values = _check_names(value if named else {names[0]: value}, names, "inputs")
        return PredictRequest(signature, values, row=False)
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError("instances: expected a non-empty list, one item per example")
    if len(names) > 1 or all(isinstance(i, dict) for i in instances):
        rows = []
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(
                    f"instances[{index}]: expected an object with the inputs {names}; got "
                    f"{type(instance).__name__}"
                )
            rows.append(_check_names(instance, names, f"instances[{index}]"))
        values = {name: [row[name] for row in rows] for name in names}
    else:
        values = {names[0]: instances}
    return PredictRequest(signature, values, row=True)


def _check_names(values: Any, names: list[str], where: str) -> dict[str, Any]:  # noqa: ANN401
    if not isinstance(values, dict):
        raise RequestError(f"{where}: expected an object with the inputs {names}")
    unknown = sorted(set(values) - set(names))
    missing = [n for n in names if n not in values]
    if unknown or missing:
        problem = f"unknown inputs {unknown}" if unknown else f"missing inputs {missing}"
        raise RequestError(f"{where}: {problem}; expected the inputs {names}")
    return values


def to_array(value: Any, spec: TensorSpec) -> np.ndarray:  # noqa: ANN401
    """A JSON value as an array of the spec's dtype and rank (batch dimension included).

    Raises:
        RequestError: ragged lists, the wrong kind of values (strings for numbers, numbers for
            strings, non-integers for an integer input), the wrong rank or a fixed size that
            does not match; the message names the input and its expected dtype and shape.
    """
    expected = f"expected {spec.describe()}"
    try:
        array = np.asarray(value)
    except ValueError:
        raise RequestError(
            f"input '{spec.name}': rows of different lengths; {expected} (rectangular lists)"
        ) from None
    kind = array.dtype.kind
    if array.size == 0:
        array = array.astype(object if spec.dtype == "string" else spec.dtype)
    elif spec.dtype == "string":
        # numpy turns ["a", 1] into strings too: each value must have been one
        mixed = kind == "U" and _leaf_types(value) != {str}
        if kind != "U" or mixed:
            got = "numbers among the strings" if kind == "U" else _kind(array)
            raise RequestError(f"input '{spec.name}': {expected}: strings; got {got}")
        array = array.astype(object)
    else:
        # booleans are not numbers here; numpy reads [0.5, true] as [0.5, 1.0]
        mixed = kind in "iuf" and bool in _leaf_types(value)
        if kind not in "iuf" or mixed:
            got = "booleans among the numbers" if mixed else _kind(array)
            raise RequestError(f"input '{spec.name}': {expected}: numbers; got {got}")
        finite = array[np.isfinite(array)] if kind == "f" else array
        if spec.dtype.startswith("int"):
            if finite.size != array.size or np.any(finite != np.round(finite)):
                raise RequestError(f"input '{spec.name}': {expected}: integers; got fractions")
            limits = np.iinfo(spec.dtype)
        else:
            limits = np.finfo(spec.dtype)
        if finite.size and (finite.min() < limits.min or finite.max() > limits.max):
            # else the cast would wrap an integer around or make a float infinite
            raise RequestError(
                f"input '{spec.name}': {expected}: values in [{limits.min:g}, {limits.max:g}]; "
                f"got {finite.min():g} to {finite.max():g}"
            )
        array = array.astype(spec.dtype)
    if array.ndim != len(spec.shape):
        raise RequestError(
            f"input '{spec.name}': {expected} ({len(spec.shape)} dimensions, the first one the "
            f"batch); got shape {list(array.shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want is not None and want != got:
            raise RequestError(
                f"input '{spec.name}': {expected}; got size {got} in dimension {axis}"
            )
    return array


def _leaf_types(value: Any) -> set[type]:  # noqa: ANN401 - a JSON value
    """The Python types of a rectangular JSON value's scalars (``map`` runs each row in C)."""
    if not isinstance(value, list):
        return {type(value)}
    if value and isinstance(value[0], list):
        return set().union(*map(_leaf_types, value))
    return set(map(type, value))


def _kind(array: np.ndarray) -> str:
    return {"U": "strings", "b": "booleans", "O": "nulls, objects or mixed values"}.get(
        array.dtype.kind, "numbers"
    )


def bind(request: PredictRequest, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Each input of the request as an array checked against its spec."""
    arrays = {spec.name: to_array(request.values[spec.name], spec) for spec in inputs}
    if request.row:
        sizes = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(sizes.values())) > 1:  # cannot happen from instances; kept as a guard
            raise RequestError(f"instances: inputs of different batch sizes {sizes}")
    return arrays


def answer(outputs: dict[str, np.ndarray], row: bool) -> dict[str, Any]:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), as TF Serving writes.

    One output is written without its name; several as objects keyed by name. Strings are
    text, or ``{"b64": ...}`` when they are not UTF-8 (TF Serving's encoding of binary values).
    """
    values = {name: _plain(np.asarray(value).tolist()) for name, value in outputs.items()}
    single = len(values) == 1
    if not row:
        return {"outputs": next(iter(values.values())) if single else values}
    if single:
        return {"predictions": next(iter(values.values()))}
    count = len(next(iter(values.values())))
    return {"predictions": [{name: v[i] for name, v in values.items()} for i in range(count)]}


def _plain(value: Any) -> Any:  # noqa: ANN401 - nested lists from tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def ragged_rows(value: Any) -> tuple[np.ndarray, np.ndarray] | None:  # noqa: ANN401
    """A list of number lists of different lengths, zero-padded, and each row's length.

    None when ``value`` is not such a list (rectangular lists, anything else): those go through
    ``to_array`` and its checks.
    """
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        return None
    lengths = [len(r) for r in value]
    if len(set(lengths)) == 1:
        return None
    padded = np.zeros((len(value), max(lengths)), np.float32)
    for index, row in enumerate(value):
        array = to_array([row], TensorSpec(f"row {index}", "float32", (None, None)))
        padded[index, : len(row)] = array[0]
    return padded, np.asarray(lengths, np.int32)
