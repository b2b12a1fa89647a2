"""``python -m pipeline.torchrun``: torchrun (``torch.distributed.run``, same arguments), ending a stop
by a signal with one line instead of a traceback.

When SIGTERM (or SIGINT) reaches torchrun, it passes the signal to its workers, waits for them to stop
(killing them after ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds) and raises ``SignalException``, also
when a second signal arrives during the wait (a scheduler that signals every process of a job reaches
torchrun directly and through the launcher). That exception is the expected end of a pre-empted job:
here it is one line and exit status 128 + the signal's number. Everything else is torchrun's own.
"""
from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main as torchrun_main


def main() -> int:
    try:
        torchrun_main()
    except SignalException as exc:
        print(f"torchrun: stopped by {exc.sigval.name}; its workers have stopped", file=sys.stderr)
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
