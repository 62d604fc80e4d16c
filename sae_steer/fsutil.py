"""Crash-safe files and directories, per-entry cache locks, and where the cache lives.

Standard library only, and platformdirs for the user cache directory. A file is written to a temp name beside it and
renamed into place (``os.replace`` is atomic on POSIX); a directory is built under a hidden
temp name beside it and renamed the same way. So a crash or a kill never leaves half a
file or half a cache entry. An entry that two processes could build at once is guarded by
an exclusive lock file beside it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """Where built artifacts live: ``$SAE_STEER_CACHE``, else the user cache directory."""
    env = os.environ.get("SAE_STEER_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path(user_cache_dir("sae_steer"))


def _fsync_dir(path: Path) -> None:
    # Make a rename itself durable; some filesystems refuse, which is fine.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON via a temp file and rename, so a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden temp directory beside ``path``; on success it is renamed to ``path``.

    Files written inside should be complete when the block ends (fsync them if they must
    survive a power cut). ``replace=True`` removes an existing ``path`` first (a stale or
    incomplete entry); ``replace=False`` keeps an existing ``path`` and drops the new copy
    (someone else finished the same entry first). On error the temp directory is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp_{path.name}_"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache entry is readable like any other
    try:
        yield tmp
        _fsync_dir(tmp)
        if path.exists():
            if not replace:
                return
            shutil.rmtree(path)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(entry: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on cache entry ``entry`` (a hidden ``.NAME.lock`` beside it)."""
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # POSIX only
    except ImportError:  # Windows: no lock; the atomic rename still keeps entries whole
        yield
        return
    with open(entry.parent / f".{entry.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
