"""Crash-safe file helpers shared by every module that writes to disk. Standard library only.

A file is written to a temp name beside it and renamed into place (``os.replace`` is atomic
on POSIX), so a crash or a kill never leaves half a file; a cache entry that two processes
could build at once is guarded by an exclusive lock file beside it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def exclusive_lock(entry: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on cache entry ``entry`` (a hidden ``.NAME.lock`` beside it)."""
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps entries whole
        yield
        return
    with open(entry.parent / f".{entry.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
