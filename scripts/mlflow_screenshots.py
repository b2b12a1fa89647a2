"""Screenshots of the MLflow UI on a store: the experiment's runs table and its metric charts.

    python -m scripts.mlflow_screenshots --store sqlite:///mlflow.db --experiment hdm-benchmark-smoke

starts ``mlflow server`` on a free 127.0.0.1 port on the store, waits until it answers, opens two pages of
the experiment in headless Chromium (Debian package ``chromium``; no Python driver: Chromium's own
``--screenshot`` mode, with virtual time for the page's JavaScript), writes ``<out>/mlflow_runs.png``
(the runs table, with its Dataset column) and ``<out>/mlflow_charts.png`` (the chart view, one section
per metric group: ``coco_val``, ``diag``, ``train``, ...), and stops the server. Every wait is bounded
(``--timeout`` seconds in all); a failure prints one line, ``error: <what>: <why>``, and exits 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError, shorten

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = "1600,1000"
# MLflow 3.17's UI takes an experiment's kind from its "GenAI | Model training" switch (kept in the
# browser, GenAI in a fresh one) rather than from the experiment's tag; this query sets it
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
# JavaScript time the page gets before the shot: the UI loads, then fetches the runs and their metrics
VIRTUAL_TIME_MS = 30000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def browser() -> str:
    """The Chromium executable; one line saying how to install it when there is none."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise PipelineError("chromium", "not installed: apt-get install -y chromium (as root)")


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own local server
        return response.read()


def _log_tail(log: Path) -> str:
    """The server log's last line, for a one-line message."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    return shorten(lines[-1].strip(), 300) if lines else "no output"


@contextlib.contextmanager
def mlflow_server(store: str, port: int, deadline: float, log: Path) -> Iterator[str]:
    """``mlflow server`` on ``store`` at 127.0.0.1:``port``, answering its health check before
    ``deadline``; yields its base URL and stops it (its whole process group) on the way out. Uploads
    would go beside ``log`` (a scratch folder), never into the working directory."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--artifacts-destination", str(log.parent / "artifacts")]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base, deadline, log)
        yield base
    finally:
        _stop(proc)


def _wait_healthy(proc: subprocess.Popen, base: str, deadline: float, log: Path) -> None:
    """Poll ``/health`` until the server answers; one line when it exits or the deadline passes."""
    while True:
        if proc.poll() is not None:
            raise PipelineError("mlflow server", f"exited with status {proc.returncode} ({_log_tail(log)})")
        with contextlib.suppress(OSError):
            if _get(f"{base}/health", timeout=2).strip() == b"OK":
                return
        if time.monotonic() > deadline:
            raise PipelineError("mlflow server", f"did not answer at {base} in time ({_log_tail(log)})")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """End the server and the workers it started: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def experiment_id(base: str, experiment: str) -> str:
    """The id of ``experiment`` as the server reports it."""
    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        body = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10)
    except urllib.error.HTTPError as exc:
        raise PipelineError(f"experiment {experiment!r}", f"not in this store (server answered {exc.code})") from None
    return str(json.loads(body)["experiment"]["experiment_id"])


def screenshot(chrome: str, url: str, out: Path, deadline: float, window: str = WINDOW) -> Path:
    """``url`` as a PNG at ``out``, written whole (a temporary name, renamed when Chromium succeeded)."""
    tmp = out.with_name(f".{out.name}.tmp.png")
    left = deadline - time.monotonic()
    if left <= 0:
        raise PipelineError(str(out), "no time left for the screenshot (raise --timeout)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={window}",
               f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--screenshot={tmp}", url]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left, start_new_session=True)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise PipelineError(str(out), f"Chromium took longer than {left:.0f} s for {url}") from None
    if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(str(out), f"Chromium made no screenshot of {url} (status {done.returncode}: "
                                      f"{shorten(detail, 300)})")
    tmp.replace(out)
    return out


def check_store(store: str) -> None:
    """A SQLite store must exist: the server would otherwise create an empty one and show nothing."""
    parsed = urllib.parse.urlsplit(store)
    if parsed.scheme == "sqlite":
        path = Path(urllib.parse.unquote(parsed.path[1:]))  # sqlite:///rel.db, sqlite:////abs.db
        if not path.is_file():
            raise PipelineError(str(path), "MLflow store not found (make one: python -m pipeline mlflow-init, "
                                           "then train and evaluate runs)")


def take(store: str, experiment: str, out_dir: Path, timeout: float) -> list[Path]:
    """Both screenshots of ``experiment`` in ``store``; returns the files written."""
    check_store(store)
    chrome = browser()
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="mlflow-server-") as scratch:
        with mlflow_server(store, free_port(), deadline, Path(scratch) / "server.log") as base:
            exp = experiment_id(base, experiment)
            landing = f"{base}/#/experiments/{exp}?{MODEL_TRAINING_VIEW}"
            charts = f"{base}/#/experiments/{exp}/runs?{MODEL_TRAINING_VIEW}&compareRunsMode=CHART"
            return [screenshot(chrome, landing, out_dir / "mlflow_runs.png", deadline),
                    screenshot(chrome, charts, out_dir / "mlflow_charts.png", deadline, window="1600,1400")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="sqlite:///mlflow.db", help="the MLflow store (default sqlite:///mlflow.db)")
    ap.add_argument("--experiment", default="hdm-benchmark-smoke", help="the experiment to show")
    ap.add_argument("--out", type=Path, default=Path("docs/images"), help="folder of the PNGs (default docs/images)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for everything (default 300)")
    args = ap.parse_args(argv)
    try:
        written = take(args.store, args.experiment, args.out, args.timeout)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
