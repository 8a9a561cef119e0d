"""Value checks shared by the config sections defined in ``data/`` and ``models/``."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Raised for an unknown key or a value of the wrong type or range."""


def check(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raises ``ConfigError`` naming ``key`` unless ``condition`` holds.

    Example:
        >>> check(3 > 0, "train.epochs", 3, "a positive integer")
    """
    if not condition:
        raise ConfigError(f"Bad value for {key}: expected {expected}. Received: {value!r}")
