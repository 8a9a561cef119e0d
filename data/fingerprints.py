"""The state of input files, so a stage reruns when the data it read has changed.

A folder is summarized by the relative path, size and modification time of every file under it
(cheap even for 100k clips); a single file such as a TSV or a manifest by a hash of its content.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HASH_LIMIT = 1 << 30  # files above 1 GiB are summarized by size and mtime, not read


def file_state(path: Path) -> str:
    """A content hash of one file (size and mtime for very large files), or ``"missing"``."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    if stat.st_size > HASH_LIMIT:
        return f"size={stat.st_size};mtime={stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_state(folder: Path, depth: int | None = None) -> str:
    """A hash over every file under ``folder``: relative path, size and mtime (ns).

    Args:
        folder: the folder.
        depth: only files at most this many levels down (1 = the folder's own files), so a
            source is not disturbed by what is written beside its clips; None = all.
    """
    digest = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for root, dirs, files in os.walk(folder):
        level = len(Path(root).relative_to(folder).parts) + 1
        if depth is not None and level >= depth:
            dirs.clear()  # files of this folder are the deepest read
        if root != str(folder) and ".lock" in files:
            dirs.clear()  # a run directory placed inside the data: not data
            continue
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:  # vanished while listing: still a change
                continue
            rel = path.relative_to(folder).as_posix()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def paths_state(paths: list[Path]) -> str:
    """A hash over the size and mtime of a list of files (missing ones included as such)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def path_state(path: Path) -> str:
    """``folder_state`` for a folder, ``file_state`` for a file."""
    return folder_state(path) if path.is_dir() else file_state(path)
