"""Crash-safe file helpers: everything is written to a temporary sibling and
renamed into place, so a killed process never leaves a file that looks good."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.errors import AgentError

TMP_PREFIX = ".tmp-"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def clone_or_copy(src: Path, dest: Path) -> str:
    """Write ``dest`` as an independent copy of ``src``: a reflink (shared extents,
    copy-on-write: writing to either file never changes the other) where the
    filesystem supports one (btrfs, XFS, bcachefs...), else a plain copy
    (``copy_file_range``, which may still share extents, else read/write).
    Never a hard link. ``dest`` is fsynced. Returns ``"reflink"`` or ``"copy"``."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        how = "copy"
        try:
            import fcntl

            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            how = "reflink"
        except (OSError, ImportError):
            try:
                while os.copy_file_range(fin.fileno(), fout.fileno(), 1 << 30):
                    pass
            except (OSError, AttributeError):  # not supported here: start over, plainly
                fin.seek(0)
                fout.seek(0)
                fout.truncate()
                shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    return how


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success.

    Works for files and directories. On error the temporary is removed and
    ``dest`` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dest.name}-", dir=dest.parent))
    target = tmp / dest.name
    try:
        yield target
        if not target.exists():
            raise AgentError(f"internal: nothing was written for {dest}")
        if target.is_file():
            with open(target, "rb") as f:
                os.fsync(f.fileno())
        if dest.is_dir() and not dest.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-", dir=dest.parent))
            os.rename(dest, old / dest.name)
            os.rename(target, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, dest)
        _fsync_dir(dest.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def atomic_write_json(dest: Path, data: Any) -> None:
    atomic_write_text(dest, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_temporaries(directory: Path) -> None:
    """Delete leftovers of killed writers (``.tmp-*``) below ``directory``."""
    if not directory.is_dir():
        return
    for p in directory.rglob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove we can write there, or raise AgentError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=TMP_PREFIX):
            pass
    except OSError as e:
        raise AgentError(f"output directory {path} is not writable: {e.strerror or e}") from e
    return path
