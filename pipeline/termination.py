"""SIGTERM as an exception (:class:`~pipeline.errors.Terminated`), held back while a store write runs.

A SLURM time limit or ``kill`` sends SIGTERM; the CLI turns it into an exception so the stage unwinds
like Ctrl-C (temporary files removed, the MLflow run marked KILLED, one line on stderr, status 143).
Raised in the middle of an MLflow write, though, the exception lands inside SQLAlchemy's commit: its
rollback then meets the still-locked SQLite file and logs a traceback of its own. Writes therefore run
inside :func:`deferred_termination`: a SIGTERM arriving there is remembered and raised as soon as the
outermost write has returned, a few milliseconds later.

Training holds SIGTERM back for its whole run the same way and stops at the next step boundary
(:func:`sigterm_pending`, :func:`stop_now`), all processes of a multi-process job at the same one: an
exception raised wherever the signal lands could leave another process waiting in a collective for
one that is gone (it then fails with a connection error instead of stopping), or be swallowed where
Python ignores exceptions (an at-fork handler, as a DataLoader starts its workers).

A stage that runs its work in a child process (training with ``train.gpus`` > 1 under torchrun) waits
for it with :func:`run_child`, which forwards the signal so the child's processes stop the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from typing import Iterator, Mapping, Sequence

from .errors import Terminated

log = logging.getLogger(__name__)

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


def sigterm_pending() -> bool:
    """Whether a SIGTERM is being held back (by :func:`deferred_termination`)."""
    return bool(_state["pending"])


def stop_now() -> None:
    """Raise :class:`Terminated` for the held-back SIGTERM (or another process's, in a multi-process
    job) at a point where stopping is safe, so it is not raised again when the deferral ends."""
    _state["pending"] = False
    raise Terminated("SIGTERM")


def _die_with_parent() -> None:
    """In the child, before it runs: receive SIGTERM when the parent dies (Linux; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_child(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, stop_timeout: float = 120.0) -> int:
    """Run ``cmd`` (the torchrun launcher of a multi-process job) and return its exit status; a SIGTERM
    or Ctrl-C of this process reaches it exactly once, and this process waits for it to stop.

    torchrun starts its workers in sessions of their own and passes a SIGTERM or SIGINT it receives on
    to them, waiting for them to finish (then killing them). So the child runs in a session of its own
    too (a signal to this process's group, Ctrl-C or a scheduler's ``killpg``, reaches it once, through
    here, rather than twice), gets SIGTERM if this process dies without forwarding (SIGKILL), and when
    :class:`Terminated` or :exc:`KeyboardInterrupt` interrupts the wait the signal is forwarded and the
    child awaited (up to ``stop_timeout`` s, further signals ignored meanwhile) before the exception
    goes on: never the SIGKILL of :func:`subprocess.run`, which would leave the workers running."""
    proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), start_new_session=True,
                            preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    except BaseException as exc:
        sig = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        _stop_child(proc, sig, stop_timeout)
        raise


def _stop_child(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s of %s: killing it", proc.args[0], timeout,
                        signal.Signals(sig).name)
            proc.kill()
            proc.wait()
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the pipeline's DataLoaders. A worker process leaves its owner's process
    group, so a signal to that group (torchrun stopping a training process, Ctrl-C) reaches the owner
    alone, which stops its workers as it unwinds; a SIGTERM sent to the worker itself (a scheduler
    signalling every process of a job, or the loader's own last-resort ``terminate()``) ends it at once
    with status 0. Killed by the signal instead, it would make the loader raise "worker killed by
    signal" wherever its owner happens to be, burying the owner's clean stop under that error."""
    try:
        os.setpgid(0, 0)
    except OSError:  # not permitted here (e.g. a session leader): keep the group
        pass
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum: int, frame: object) -> None:
    os._exit(0)
