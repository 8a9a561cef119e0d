"""Atomic file and folder replacement, so a crash never leaves half an output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def replace_dir(tmp: Path, final: Path) -> None:
    """Moves the finished folder ``tmp`` to ``final``, replacing any previous ``final``."""
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # surrogateescape: file names that are not valid UTF-8 round-trip instead of crashing
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as indented UTF-8 JSON (non-ASCII kept readable), atomically."""
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False, default=str))


def read_json(path: Path) -> Any:
    """Reads a UTF-8 JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))
