"""Loading ``.pth`` files without running code that may be inside them, and writing them whole or not at all.

A ``.pth`` file is a pickle, and unpickling can call any Python function the file names. Checkpoints
come from this pipeline, from other runs or machines, and (HRFormer's ImageNet weights) from the
internet, so every load goes through :func:`load_weights`, which uses ``torch.load(...,
weights_only=True)``: only tensors and plain data (dict, list, tuple, str, numbers, None) are built.
What the pipeline itself stores in a checkpoint is kept to those types (numpy RNG state as lists).

Every checkpoint the pipeline writes goes through :func:`save_checkpoint`: a temporary file renamed into
place, and a failed write (a full disk, a quota) one line naming the file, with the file already there
(the previous checkpoint) left as it was and no temporary file behind.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from . import io
from .errors import PipelineError

_GLOBAL_RE = re.compile(r"unsupported global:?\s*(?:GLOBAL\s+)?([A-Za-z_][\w.]*)", re.IGNORECASE)


class UnsafeCheckpointError(PipelineError):
    """A ``.pth`` file holds pickled objects other than tensors and plain data: it was not loaded.

    Its own type so that training's resume can skip such a file (as it skips a corrupt one) while
    evaluation and weight loading stop on it.
    """


def _refused_global(message: str) -> str:
    """The pickled global a weights-only load refused (``posix.system``), or "" when the load failed
    for another reason (garbage bytes give "Unsupported operand")."""
    m = _GLOBAL_RE.search(message)
    return m.group(1) if m else ""


def load_weights(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    Raises :class:`UnsafeCheckpointError` when the file asks to build anything but tensors and plain
    data (nothing from it runs), and :class:`PipelineError` when it is missing, truncated or not a
    torch file.
    """
    p = Path(path)
    if not p.is_file():
        raise PipelineError(str(p), f"{what} not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        name = _refused_global(text)
        if name:
            raise UnsafeCheckpointError(
                str(p), f"refused to load this {what}: it holds pickled Python objects other than tensors "
                        f"and plain data ({name}), which could run code; nothing from it "
                        "was run. Use a file of tensors only (e.g. a state_dict saved with torch.save)"
            ) from None
        detail = re.search(r"Unsupported operand \d+", text)  # garbage bytes, not a pickle
        raise PipelineError(str(p), f"not a readable {what} (corrupt or not a torch file: "
                                    f"{detail.group(0) if detail else _first_line(text)})") from None
    except Exception as exc:  # truncated zip, garbage bytes, a folder, an I/O error
        raise PipelineError(str(p), f"not a readable {what} ({type(exc).__name__}: {_first_line(str(exc))})") from None


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def save_checkpoint(obj: Any, path: str | Path, what: str = "checkpoint") -> None:
    """``torch.save(obj)`` to ``path`` atomically; a write that fails is a one-line :class:`PipelineError`
    naming ``path`` and the reason (the OS's, e.g. "No space left on device").

    Written through a Python file object, so the OS's error reaches here with its errno; torch's own
    writer reports a failed write as a ``RuntimeError`` without one ("PytorchStreamWriter failed writing
    file ...: file write failed"), whose reason is then told from the space left beside the file.
    """
    final = Path(path)
    with io.atomic_path(final) as tmp:
        try:
            with tmp.open("wb") as fh:
                torch.save(obj, fh)
        except OSError as exc:
            raise PipelineError(str(final), f"cannot write this {what} ({_os_reason(exc)})") from None
        except RuntimeError as exc:
            if not _is_write_failure(exc):
                raise
            reason = _failed_write_reason(final.parent, _tensor_bytes(obj), exc)
            raise PipelineError(str(final), f"cannot write this {what} ({reason})") from None


def _os_reason(exc: OSError) -> str:
    """The OS's words for a failed write; a full disk and an exceeded quota say what to free."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{os.strerror(exc.errno)}: free space on that file system and run the stage again"
    return exc.strerror or type(exc).__name__


def _is_write_failure(exc: RuntimeError) -> bool:
    """Whether torch's ``RuntimeError`` reports a failed write of the file (not a bug elsewhere)."""
    text = str(exc)
    return any(marker in text for marker in ("PytorchStreamWriter", "inline_container", "write failed"))


def _failed_write_reason(folder: Path, needed: int, exc: RuntimeError) -> str:
    """Why torch's writer failed: a full disk when less space is left than the checkpoint's tensors
    take (the partly written file still counts as used), else torch's own first line."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < needed:
        return (f"{os.strerror(errno.ENOSPC)}: {free / 2**20:.1f} MiB free, about {needed / 2**20:.1f} MiB "
                "needed: free space on that file system and run the stage again")
    return f"torch: {_first_line(str(exc))}"


def _tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in ``obj`` (nested dicts, lists and tuples): about a checkpoint's size."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0
