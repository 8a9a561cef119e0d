"""Atomic file and folder replacement, and JSON files written or read one record at a time."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
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


class JsonLinesWriter:
    """Writes one JSON record per line as records arrive (nothing is held in memory)."""

    def __init__(self, path: Path) -> None:
        self.path, self.count = path, 0
        self._handle = path.open("w", encoding="utf-8")

    def write(self, record: Any) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonArrayWriter(JsonLinesWriter):
    """Writes a JSON array one element at a time: the file ``read_json`` reads as a list."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._handle.write("[")

    def write(self, record: Any) -> None:
        separator = "\n " if self.count == 0 else ",\n "
        self._handle.write(separator + json.dumps(record, ensure_ascii=False, default=str))
        self.count += 1

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.write("\n]\n" if self.count else "]\n")
        super().close()


def iter_json_lines(path: Path) -> Iterator[Any]:
    """The records of a JSON-lines file, one at a time."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def read_json_lines(path: Path, limit: int | None = None) -> list[Any]:
    """The first ``limit`` records of a JSON-lines file (all by default)."""
    return list(itertools.islice(iter_json_lines(path), limit))


def read_shard_manifest(folder: Path, split: str) -> dict[str, Any] | None:
    """``SPLIT.shards.json`` of a split written as shards (None: a folder from before shards)."""
    path = folder / f"{split}.shards.json"
    return read_json(path) if path.is_file() else None


def write_shard_manifest(folder: Path, split: str, manifest: dict[str, Any]) -> None:
    """Writes ``SPLIT.shards.json``: shard file names (``shards``), counts, length statistics."""
    write_json(folder / f"{split}.shards.json", manifest)


def shard_files(folder: Path, split: str) -> list[Path]:
    """The shard files of ``split``, in order (a folder from before shards: its ``SPLIT.npz``)."""
    manifest = read_shard_manifest(folder, split)
    if manifest is None:
        return [folder / f"{split}.npz"]
    return [folder / name for name in manifest["shards"]]
