"""One process per run: the lock file ``results/<profile>/runs/<run>/seed<k>/run.lock``.

Two processes training the same run and seed would write the same checkpoints and continue the same
MLflow run, each logging every epoch; an evaluation during a training would read a ``final.pth`` the
training is about to replace. So training (rank 0 of a torchrun job) and evaluation hold the run's lock
while they work, and a second process stops with one line naming the holder.

The lock is a POSIX record lock (``lockf``) on the file, which holds the holder's process id, host,
activity and start time. The kernel drops such a lock when its process ends, however it ends (SIGKILL,
a crash), so a lock can never outlive its holder: a record left behind by a killed process is taken
over by the next one, with a log line. Unlike ``flock`` locks, record locks are not inherited by forked
children, so a DataLoader worker outliving a killed trainer for a moment does not keep the run locked,
and they work on NFS. The holder removes the file on every exit (SIGTERM unwinds through ``finally``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .. import io
from ..errors import PipelineError

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# Errors of lockf on a file system without record locks (some FUSE and network mounts)
_UNSUPPORTED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})
# How long a refused process waits for the holder's record (written right after its lock is taken)
RECORD_WAIT_S = 1.0
# Tries when a releasing holder removed the file between this process's open and its lock
_ATTEMPTS = 5
# Locks this process holds (record locks do not exclude their own process: a second lock of the same
# file here would succeed, and its release would drop the first)
_held: set[str] = set()


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, activity: str, *, required: bool = True) -> Iterator[None]:
    """Hold the run's lock while the body runs; ``activity`` ("trained", "evaluated") is what a refused
    process is told. Raises :class:`PipelineError` naming ``run_dir`` and the holder when another
    process holds it. ``required=False`` (evaluation, which only reads the run folder): a missing or
    unwritable folder means going on without the lock instead of failing."""
    folder = Path(run_dir)
    key = str(folder.resolve() / LOCK_NAME)
    if key in _held:
        raise PipelineError(str(folder), f"run is already being {activity} by this process")
    fd = _acquire(folder, activity, required)
    if fd is None:
        yield
        return
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        _release(folder / LOCK_NAME, fd)


def _acquire(folder: Path, activity: str, required: bool) -> int | None:
    """The open, locked lock file's descriptor holding this process's record; None when going on
    without a lock (see :func:`run_lock`)."""
    path = folder / LOCK_NAME
    if required:
        io.make_dirs(folder)
    elif not folder.is_dir():
        return None
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if required:
                raise PipelineError(str(path), f"cannot create the run's lock file ({exc.strerror or exc})") from None
            log.info("%s: cannot create the run's lock file (%s): going on without it", path, exc.strerror or exc)
            return None
        try:
            locked = _try_lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        if locked is None:
            os.close(fd)
            return None
        if not locked:
            holder = _wait_for_record(fd)
            os.close(fd)
            raise PipelineError(str(folder), _busy_message(holder, path))
        if _same_file(fd, path):
            try:
                _take_over(fd, path, activity)
            except OSError as exc:  # a full disk
                _release(path, fd)
                raise PipelineError(str(path), f"cannot write the run's lock file ({exc.strerror or exc})") from None
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the new one
    raise PipelineError(str(path), f"could not take the run's lock in {_ATTEMPTS} tries: other processes "
                                   "keep replacing it")


def _try_lock(fd: int, path: Path) -> bool | None:
    """True when the lock was taken, False when another process holds it, None when the file system
    has no record locks (logged: the run goes on unguarded rather than not at all)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if exc.errno in _UNSUPPORTED:
            log.warning("%s: this file system has no file locks (%s): nothing stops a second process of "
                        "this run", path, exc.strerror)
            return None
        raise PipelineError(str(path), f"cannot lock the run's lock file ({exc.strerror or exc})") from None
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file ``fd`` locked (a releasing holder unlinks it)."""
    mine = os.fstat(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _take_over(fd: int, path: Path, activity: str) -> None:
    """Write this process's record; a record already there is a holder's that ended without
    releasing (killed): say so."""
    previous = _read_record(fd)
    if previous is not None:
        log.warning("%s: taking over the lock of process %s on %s (%s since %s), which ended without "
                    "releasing it", path, previous.get("pid", "?"), previous.get("host", "?"),
                    previous.get("activity", "?"), previous.get("since", "?"))
    record = {"pid": os.getpid(), "host": socket.gethostname(), "activity": activity,
              "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_record(fd: int) -> dict[str, Any] | None:
    """The record in the lock file; None when it is empty or not one of ours."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    return record if isinstance(record, dict) else None


def _wait_for_record(fd: int) -> dict[str, Any] | None:
    """The holder's record, waiting up to :data:`RECORD_WAIT_S` for a holder that has only just
    taken the lock to write it."""
    deadline = time.monotonic() + RECORD_WAIT_S
    while True:
        record = _read_record(fd)
        if record is not None or time.monotonic() >= deadline:
            return record
        time.sleep(0.05)


def _busy_message(holder: dict[str, Any] | None, path: Path) -> str:
    """What a refused process says: who holds the run, where and since when."""
    if holder is None:
        return f"run is locked by another process ({path} holds no record yet): wait for it to end"
    host = str(holder.get("host", "?"))[:80]
    where = "" if host == socket.gethostname() else f" on {host}"
    return (f"run is being {str(holder.get('activity', 'used'))[:20]} by process {holder.get('pid', '?')}{where} "
            f"(since {str(holder.get('since', '?'))[:40]}; lock {path.name}): wait for it to end or stop it; "
            "two processes of one run would mix their checkpoints and MLflow records")


def _release(path: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (in this order: a process that opened the file in
    between sees it unlinked and locks a new one)."""
    try:
        if _same_file(fd, path):  # never another process's file (ours removed by hand, theirs made since)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)
