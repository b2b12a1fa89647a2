"""Atomic output: nothing appears under its final name until it is complete.

Every stage writes through these helpers, so a crash or a bad input never leaves a
partial file that Snakemake or DVC would later mistake for a finished output.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import PipelineError


_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"
_TMP_RE = re.compile(r"^(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
# A temporary path of another machine (shared file system), or of the code before temporary names
# carried their process, is taken as abandoned once this old
STALE_AFTER_S = 24 * 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _is_stale(entry: Path, rest: str) -> bool:
    """Whether a temporary path (``rest``: its name after ``.<final name>.``) belongs to no live writer.

    Names carry host and process id (``<host>-<pid>.<random>.tmp``), so a leftover of a killed process on
    this machine is recognised at once; others only after :data:`STALE_AFTER_S`.
    """
    m = _TMP_RE.match(rest)
    if m and m["host"] == _HOST:
        return int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]))
    try:
        return time.time() - entry.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def clean_stale(final: Path) -> list[Path]:
    """Remove the temporary paths that killed writers of ``final`` left beside it; returns them."""
    prefix = f".{final.name}."
    removed = []
    try:
        entries = [e for e in final.parent.iterdir() if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return removed
    for entry in entries:
        if _is_stale(entry, entry.name[len(prefix):]):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def _write_error(path: Path, exc: OSError) -> PipelineError:
    """One line naming the output and why it cannot be written (read-only folder, a file in the way...)."""
    cause = exc.strerror or type(exc).__name__
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        cause = "a file stands where a folder is needed"
    if exc.filename and Path(exc.filename) != path:
        cause += f": {exc.filename}"
    return PipelineError(str(path), f"cannot write this output ({cause})")


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p`` with a one-line error naming the folder (a read-only parent, a file in the way)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(p, exc) from None
    return p


@contextlib.contextmanager
def temporary_dir(beside: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder next to ``beside`` (same file system, so its contents can be renamed into
    place), named so that :func:`clean_stale` removes it should this process be killed."""
    final = Path(beside)
    make_dirs(final.parent)
    clean_stale(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_HOST}-{os.getpid()}.", suffix=".tmp",
                                    dir=final.parent))
    except OSError as exc:
        raise _write_error(final, exc) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and directories alike. On an exception the temporary path is
    removed and ``path`` is left untouched; leftovers of killed writers are removed first.
    A folder or file that cannot be written is a one-line :class:`PipelineError` naming ``path``.
    """
    final = Path(path)
    with temporary_dir(final) as tmp:
        target = tmp / final.name
        yield target
        try:
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(target, final)
        except OSError as exc:
            raise _write_error(final, exc) from None


def publish(staged: Path, dest: str | os.PathLike) -> list[Path]:
    """Move every file under ``staged`` to the same relative place under ``dest`` (renames only: all
    outputs were complete before the first one appears). Returns the final paths."""
    out = []
    dest = Path(dest)
    for src in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = dest / src.relative_to(staged)
        make_dirs(target.parent)
        try:
            os.replace(src, target)
        except OSError as exc:
            raise _write_error(target, exc) from None
        out.append(target)
    return out


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        try:
            tmp.write_text(text)
        except OSError as exc:  # a full disk
            raise _write_error(Path(path), exc) from None


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


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks (archives of many GB never sit in memory): the
    one checksum the project pins downloads, weights, test-dev submissions and derived files with."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
