"""One exception type for every user-facing failure.

The CLI catches :class:`PipelineError` and prints its message as a single line
(``error: <file or key>: <what is wrong>``) before exiting with status 1, so a bad
input never ends in a traceback and always names the file or config key at fault.
"""
from __future__ import annotations

import re

# The longest parts of a one-line message, in characters. A message that echoes a value in full (a whole
# YAML list, a line of a file) could otherwise print megabytes; the cut keeps the start, which names the
# problem, and the end, which says what to do.
MAX_WHERE = 300
MAX_WHAT = 1000


def shorten(text: str, limit: int, *, keep_end: int = 0) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit - keep_end`` and last
    ``keep_end`` characters around a mark saying how many were cut."""
    if len(text) <= limit:
        return text
    head, tail = text[:limit - keep_end], text[len(text) - keep_end:] if keep_end else ""
    return f"{head}…[{len(text) - limit} characters cut]…{tail}"


class PipelineError(Exception):
    """A problem with the user's input (file, annotation, config value)."""

    def __init__(self, where: str, what: str | None = None) -> None:
        if what is None:  # rebuilt from a message: see _split_wrapped
            where, what = _split_wrapped(str(where))
        self.where = shorten(str(where), MAX_WHERE, keep_end=MAX_WHERE // 3)
        what = " ".join(str(what).split())  # keep it on one line
        self.what = shorten(what, MAX_WHAT, keep_end=MAX_WHAT // 3)
        super().__init__(f"{self.where}: {self.what}")


def _split_wrapped(message: str) -> tuple[str, str]:
    """(where, what) of an error raised in a DataLoader worker process.

    PyTorch re-raises a worker's exception in the main process as ``type(exc)(text)``, the text holding
    the worker's whole traceback; the last ``...PipelineError: <where>: <what>`` line of it is the
    original one-line message (so a truncated image read by a worker still ends in one line).
    """
    lines = [ln for ln in message.splitlines() if ln.strip()]
    for line in reversed(lines):
        m = re.match(r"^\s*(?:[\w.]+\.)?\w*(?:PipelineError|CheckpointError): (.+?): (.+)$", line)
        if m:
            return m.group(1), m.group(2)
    first = lines[0] if lines else message
    return first, "(details in the log above)"


class Terminated(BaseException):
    """The process received SIGTERM (a SLURM time limit, ``kill``, a scheduler stopping the job).

    A ``BaseException`` like ``KeyboardInterrupt``: it unwinds through ``except Exception`` blocks, so
    every ``finally`` runs (temporary files removed, the MLflow run marked KILLED) before the CLI prints
    one line and exits with status 143.
    """
