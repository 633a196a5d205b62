"""Atomic file writes: a temporary file in the destination folder, fsync, `os.replace`, so a
crash never leaves a half-written file under the final name (and no temporary behind)."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Iterable
from typing import Any

PathLike = str | os.PathLike


def atomic_write_chunks(path: PathLike, chunks: Iterable[str] | Iterable[bytes]) -> None:
    """Write the text (or bytes) chunks to `path` atomically (parent folders are created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    chunks = iter(chunks)
    first = next(chunks, "")
    try:
        with os.fdopen(fd, "wb" if isinstance(first, bytes) else "w") as f:
            f.write(first)
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; results are meant to be read by others, like any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_chunks(path, [text])


def atomic_write_json(path: PathLike, obj: Any, **kwargs: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=kwargs.pop("indent", 1), **kwargs) + "\n")
