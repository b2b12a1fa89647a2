"""Atomic output: nothing appears under its final name until it is complete.

Every stage writes through these helpers, so a crash or a bad input never leaves a
partial file that Snakemake or DVC would later mistake for a finished output.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import PipelineError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and directories alike. On an exception the temporary path is
    removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Atomically write JSON."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line :class:`PipelineError`."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(str(p), "file not found")
    try:
        with p.open() as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(str(p), f"not valid JSON ({exc})") from None
