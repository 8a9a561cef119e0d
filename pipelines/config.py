"""Typed, frozen configuration: preset YAML -> ``--config`` files -> ``--set`` overrides.

Each pipeline declares a root dataclass whose fields are sections (dataclasses themselves). Values
are checked against the field types; an unknown key or a bad value raises ``ConfigError`` naming
the key, what was received and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from data.checks import OMIT_IF_DEFAULT, ConfigError, check

__all__ = [
    "ConfigError",
    "check",
    "build",
    "load_raw",
    "save",
    "to_dict",
    "fingerprint_dict",
    "parse_override",
]

CONFIG_DIR = Path(__file__).parent / "configs"


class _Loader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 booleans.

    YAML 1.1 would read the command words yes, no, on and off as booleans.
    """


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

# YAML 1.2 floats: 1e-4 is a number (YAML 1.1 wants 1.0e-4 and reads 1e-4 as a string).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parses YAML text with 1.2-style booleans (``yes`` and ``on`` stay strings).

    Example:
        >>> load_yaml("[yes, no, on, off, true, 1e-4]")
        ['yes', 'no', 'on', 'off', True, 0.0001]
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of names to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and returns it in canonical form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"Bad value for {key}: expected {_type_name(tp)}. Received: {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        key_type, item = typing.get_args(tp)
        return {  # a null entry removes what an earlier layer (preset, file) declared
            _coerce(k, key_type, f"{key}.{k}"): _coerce(v, item, f"{key}.{k}")
            for k, v in value.items()
            if v is not None
        }
    if origin is tuple:
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list | tuple):
            raise bad
        item = typing.get_args(tp)[0]
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return build(tp, value, prefix=key)
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is Any:
        return value
    raise TypeError(f"Unsupported config type {tp!r} for {key}")


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Builds the dataclass ``cls`` from a nested dict, rejecting unknown keys.

    Args:
        cls: a dataclass type whose fields may be dataclasses themselves.
        values: nested mapping of field names to values.
        prefix: dotted path of ``cls`` inside the root config, for messages.

    Returns:
        An instance of ``cls``; its ``__post_init__`` runs range checks.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = (
                f" Did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
            )
            raise ConfigError(
                f"Unknown config key {path!r}. Expected one of {sorted(fields)}.{hint}"
            )
        default = fields[key].default_factory
        if isinstance(value, dict) and default is not dataclasses.MISSING:
            # a section's defaults may differ from its class's (e.g. train.monitor)
            base = default()
            if dataclasses.is_dataclass(base):
                value = deep_merge(to_dict(base), value)
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{err}") from None


def fingerprint_dict(config: Any) -> Any:
    """``to_dict`` for hashing: fields marked ``OMIT_IF_DEFAULT`` are left out at their default."""
    return to_dict(config, omit_defaults=True)


def to_dict(config: Any, omit_defaults: bool = False) -> dict[str, Any]:
    """Converts a (nested) config dataclass to plain dicts and lists, every field (for YAML).

    ``omit_defaults`` leaves out fields marked ``OMIT_IF_DEFAULT`` while at their default.
    """

    def kept(value: Any, f: dataclasses.Field) -> bool:
        marked = f.metadata.get("fingerprint") == OMIT_IF_DEFAULT["fingerprint"]
        return not (omit_defaults and marked and getattr(value, f.name) == f.default)

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {
                f.name: convert(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if kept(value, f)
            }
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(config)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Returns ``base`` updated recursively by ``update`` (later files win)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """Turns ``a.b=VALUE`` into ``{"a": {"b": VALUE}}``; VALUE is parsed as YAML.

    Example:
        >>> parse_override("train.epochs=3")
        {'train': {'epochs': 3}}
    """
    if "=" not in text:
        raise ConfigError(f"Bad --set {text!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Bad --set {text!r}: the key must be dotted names, e.g. train.epochs")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"Bad --set {text!r}: value is not valid YAML ({err})") from None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping, with a clear error for a missing file or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {str(path)!r}")
    data = load_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


def preset_names() -> list[str]:
    """Names of the presets in ``pipelines/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_raw(
    name: str, config_files: list[str] | tuple[str, ...] = (), overrides: list[str] | tuple = ()
) -> dict[str, Any]:
    """Merges the preset ``name`` (if one exists), config files and ``--set`` overrides."""
    raw: dict[str, Any] = {}
    preset = CONFIG_DIR / f"{name}.yaml"
    if preset.is_file():
        raw = read_yaml(preset)
    for path in config_files:
        data = read_yaml(path)
        # A saved (resolved) config is complete: it replaces what came before instead of merging,
        # so mappings such as tune.space come back exactly as saved.
        raw = data if _is_resolved(path) else deep_merge(raw, data)
    for text in overrides:
        raw = deep_merge(raw, parse_override(text))
    return raw


RESOLVED_MARK = "# resolved config: complete; with --config it replaces the preset"


def _is_resolved(path: str | Path) -> bool:
    with Path(path).open(encoding="utf-8") as handle:
        return handle.readline().strip() == RESOLVED_MARK


def save(config: Any, path: str | Path) -> None:
    """Writes the resolved config as YAML (loadable again with ``--config``, unchanged)."""
    from data.files import write_text_atomic

    text = yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
    write_text_atomic(Path(path), f"{RESOLVED_MARK}\n{text}")
