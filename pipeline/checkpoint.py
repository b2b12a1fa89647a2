"""Loading ``.pth`` files without running code that may be inside them.

A ``.pth`` file is a pickle, and unpickling can call any Python function the file names. Checkpoints
come from this pipeline, from other runs or machines, and (HRFormer's ImageNet weights) from the
internet, so every load goes through :func:`load_weights`, which uses ``torch.load(...,
weights_only=True)``: only tensors and plain data (dict, list, tuple, str, numbers, None) are built.
What the pipeline itself stores in a checkpoint is kept to those types (numpy RNG state as lists).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

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
    import torch

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
