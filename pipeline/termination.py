"""SIGTERM as an exception (:class:`~pipeline.errors.Terminated`), held back while a store write runs.

A SLURM time limit or ``kill`` sends SIGTERM; the CLI turns it into an exception so the stage unwinds
like Ctrl-C (temporary files removed, the MLflow run marked KILLED, one line on stderr, status 143).
Raised in the middle of an MLflow write, though, the exception lands inside SQLAlchemy's commit: its
rollback then meets the still-locked SQLite file and logs a traceback of its own. Writes therefore run
inside :func:`deferred_termination`: a SIGTERM arriving there is remembered and raised as soon as the
outermost write has returned, a few milliseconds later.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from .errors import Terminated

_state = {"depth": 0, "pending": False}


def on_sigterm(signum: int, frame: object) -> None:
    """The SIGTERM handler the CLI installs: raise now, or after the store write in progress."""
    if _state["depth"]:
        _state["pending"] = True
        return
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """Hold a SIGTERM back while the body runs; raise it when the outermost such body has returned.
    When the body raises, its exception propagates and a held-back SIGTERM stays pending (raised at the
    end of the next deferred write; the stage is ending anyway)."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if _state["depth"] == 0 and _state["pending"]:
        _state["pending"] = False
        raise Terminated("SIGTERM")
