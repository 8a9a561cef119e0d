"""Value checks shared by the config sections defined in ``data/`` and ``models/``."""

from __future__ import annotations

from typing import Any

# Field metadata for a setting added after runs already exist: while it is at its default it is
# left out of stage fingerprints, so adding it does not make those runs redo (or fail to resume)
# stages it does not change. ``field(default=..., metadata=OMIT_IF_DEFAULT)``.
OMIT_IF_DEFAULT = {"fingerprint": "omit_if_default"}


class ConfigError(ValueError):
    """Raised for an unknown key or a value of the wrong type or range."""


def check(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raises ``ConfigError`` naming ``key`` unless ``condition`` holds.

    Example:
        >>> check(3 > 0, "train.epochs", 3, "a positive integer")
    """
    if not condition:
        raise ConfigError(f"Bad value for {key}: expected {expected}. Received: {value!r}")
