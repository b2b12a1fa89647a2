"""Progress of long loops: a bar redrawn on a terminal, plain lines anywhere else.

A progress bar redraws its line with carriage returns. On a terminal that is one line that changes;
in a log file, a pipe or a cluster job's output file every redraw stays as text (a bar over a six-epoch demo
training leaves about 67 KB of them, and ``tail -f`` shows a smear). So every loop of the pipeline asks
:func:`bars_wanted` whether to draw: only when progress is asked for (no ``--quiet``) and stderr is a
terminal. Elsewhere a loop logs a line when it starts and one when it ends (:class:`Progress`), and
training logs one line per epoch with its elapsed time and ETA (:class:`EpochClock`). ``--quiet``
shows neither bars nor the start and end lines; the epoch lines stay (they are the training's record).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, MutableMapping, TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)

# Libraries that draw bars of their own (Hugging Face downloads of ImageNet weights, MLflow's artifact
# transfers) and the setting that turns each off; set only where the user has not set it
LIBRARY_BARS_OFF = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
# Plurals of the units loops count in that do not just add an "s"
_PLURALS = {"person": "people", "batch": "batches"}


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current stderr) is a terminal; a closed or replaced stream
    without ``isatty`` is not."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bars_wanted(enabled: bool = True) -> bool:
    """Whether to draw progress bars: asked for (``enabled``, the CLI's ``--quiet`` unset) and stderr is
    a terminal, the one place where a redrawn line stays one line."""
    return enabled and on_terminal()


def quiet_library_bars(enabled: bool, env: MutableMapping[str, str] | None = None) -> None:
    """Turn off the libraries' own progress bars where ours are off (:data:`LIBRARY_BARS_OFF`), unless
    the user set those variables. Called before a stage imports the libraries: Hugging Face reads its
    setting when imported."""
    if bars_wanted(enabled):
        return
    env = os.environ if env is None else env
    for name, value in LIBRARY_BARS_OFF.items():
        env.setdefault(name, value)


def amount(count: float, unit: str) -> str:
    """``count`` in words: ``"1 batch"``, ``"12 people"``, ``"83.5 images"``, or with unit ``"B"`` bytes
    in binary units (``"1.2 GiB"``)."""
    if unit == "B":
        return _bytes(count)
    number = f"{int(count)}" if float(count).is_integer() else f"{count:.1f}"
    return f"{number} {unit if count == 1 else _PLURALS.get(unit, unit + 's')}"


def _bytes(count: float) -> str:
    for prefix in ("", "Ki", "Mi", "Gi"):
        if abs(count) < 1024:
            return f"{count:.0f} B" if not prefix else f"{count:.1f} {prefix}B"
        count /= 1024
    return f"{count:.1f} TiB"


def duration(seconds: float) -> str:
    """``h:mm:ss``: elapsed times and ETAs, as a person reads them in a log."""
    whole = max(0, int(round(seconds)))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Progress:
    """One long loop: a tqdm bar on a terminal (:func:`bars_wanted`); elsewhere, with ``lines``, one
    log line when the loop starts and one when it ends, with the count and the time, never a redraw.
    Training passes ``lines=False``: its epoch line (:class:`EpochClock`) says the same once per epoch.

    Count with :meth:`update`, or iterate with :meth:`over`; :meth:`close` (or the ``with`` block's
    end) logs the end line, unless the loop ended in an exception, which says what happened itself.
    """

    def __init__(self, desc: str, *, total: float | None = None, unit: str = "item", enabled: bool = True,
                 lines: bool = True, initial: float = 0, **bar_options: Any) -> None:
        self.desc, self.unit, self.count, self._initial = desc, unit, initial, initial
        self._started = time.monotonic()
        drawn = bars_wanted(enabled)
        self._lines = lines and enabled and not drawn
        self._bar = None
        if drawn:
            if unit == "B":
                bar_options = {"unit_scale": True, "unit_divisor": 1024, **bar_options}
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, **bar_options)
        if self._lines:
            log.info("%s: started%s", desc, "" if total is None else f", {amount(total - initial, unit)} to go")

    def update(self, n: float = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def postfix(self, **values: Any) -> None:
        """Values shown beside the bar (a running loss), redrawn with the bar's next update only."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def over(self, items: Iterable[Any], weigh: Callable[[Any], float] | None = None) -> Iterator[Any]:
        """``items``, counting one per item (or ``weigh(item)``: the people of a batch); the end line
        follows the last one, the bar is cleared however the loop ends."""
        finished = False
        try:
            for item in items:
                yield item
                self.update(1 if weigh is None else weigh(item))
            finished = True
        finally:
            self.close(finished)

    def close(self, finished: bool = True) -> None:
        """Clear the bar; log the end line (count, time, rate) when the loop ``finished``."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._lines and finished:
            self._lines = False
            took, done = time.monotonic() - self._started, self.count - self._initial
            rate = f", {amount(done / took, self.unit)}/s" if took > 0 and done else ""
            log.info("%s: %s in %.1f s%s", self.desc, amount(done, self.unit), took, rate)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(exc_type is None)


def track(items: Iterable[Any], desc: str, *, total: float | None = None, **options: Any) -> Iterator[Any]:
    """``items`` with their :class:`Progress` (``total`` defaults to ``len(items)`` where it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return Progress(desc, total=total, **options).over(items)


@dataclass
class EpochClock:
    """Elapsed time and ETA of a training over epochs ``first`` to ``last``, counted from when this
    process started its first epoch (a resumed run: the epochs left), for the one line per epoch a log
    file gets instead of a bar."""

    first: int
    last: int
    started: float = field(default_factory=time.monotonic)

    def status(self, epoch: int) -> str:
        """``"epoch 3/6 (elapsed 0:00:36, eta 0:00:36)"`` after ``epoch`` has ended."""
        elapsed = time.monotonic() - self.started
        done = epoch - self.first + 1
        eta = elapsed / max(done, 1) * (self.last - epoch)
        return f"epoch {epoch}/{self.last} (elapsed {duration(elapsed)}, eta {duration(eta)})"
