"""Atomic file output: write to a temporary file beside the target, then `os.replace` it.

Readers (and a crash or Ctrl-C half-way) never see a partially written file: the destination
either keeps its previous contents or gets the complete new ones.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "write_atomically"]


def _current_umask() -> int:
    # There is no read-only getter for the umask; set-and-restore is the portable idiom.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it atomically replaces `path`.

    The temporary file lives in the destination's folder (so `os.replace` is a same-filesystem
    rename) and keeps its suffix (so writers that pick a format from the name still work). If
    the body raises, the temporary file is removed, the destination is left untouched and the
    exception propagates.

    Args:
        path: the final destination.

    Example:
        >>> with atomic_output("out.png") as tmp:   # doctest: +SKIP
        ...     image.save(tmp, format="PNG")
    """
    path = Path(path)
    with tempfile.NamedTemporaryFile(
        delete=False, dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix
    ) as handle:
        tmp = Path(handle.name)
    try:
        yield tmp
        # NamedTemporaryFile creates files as 0600; give the result the mode a plain open() would
        # (or the mode of the file it replaces).
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_current_umask()
        os.chmod(tmp, mode)
        # Flush to disk before the rename so a power loss cannot leave an empty file behind.
        with open(tmp, "rb+") as flushed:
            os.fsync(flushed.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_output`).

    Args:
        path: the destination file.
        data: its complete new contents.
    """
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
