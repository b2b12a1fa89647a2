"""One exception type for every user-facing failure.

The CLI catches :class:`PipelineError` and prints its message as a single line
(``error: <file or key>: <what is wrong>``) before exiting with status 1, so a bad
input never ends in a traceback and always names the file or config key at fault.
"""
from __future__ import annotations


class PipelineError(Exception):
    """A problem with the user's input (file, annotation, config value)."""

    def __init__(self, where: str, what: str) -> None:
        self.where = str(where)
        self.what = " ".join(str(what).split())  # keep it on one line
        super().__init__(f"{self.where}: {self.what}")


class Terminated(BaseException):
    """The process received SIGTERM (a SLURM time limit, ``kill``, a scheduler stopping the job).

    A ``BaseException`` like ``KeyboardInterrupt``: it unwinds through ``except Exception`` blocks, so
    every ``finally`` runs (temporary files removed, the MLflow run marked KILLED) before the CLI prints
    one line and exits with status 143.
    """
