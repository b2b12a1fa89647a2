"""A tracking server (MLFLOW_TRACKING_URI=http://...) that is down or never answers ends every stage that
uses it with one line within a bound of seconds that follows from MLflow's HTTP settings, instead of
MLflow's minutes of retries.

The servers are local sockets on 127.0.0.1: a port nobody listens on (connection refused), a listening
socket whose connections are accepted and never answered, and a server that answers ``/health`` but
never an API call. The time asserts are hang checks with a margin of several times the configured bound,
not speed checks.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from pipeline import cli
from pipeline.errors import PipelineError
from pipeline.tracking import mlflow_store as ms

ROOT = Path(__file__).resolve().parent.parent
RUN = "coco_hrnet_w32_mse"
# Seconds a `python -m pipeline` process may need before its first request (imports: MLflow's take long
# on a busy 2-core machine)
STARTUP_S = 120
# Settings that keep the tests short; a user's own values win over the project's defaults
FAST = {ms.HTTP_TIMEOUT_ENV: "1", ms.HTTP_RETRIES_ENV: "1", ms.HTTP_BACKOFF_ENV: "0", ms.HTTP_JITTER_ENV: "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A listening socket on 127.0.0.1 served by a thread: ``reply(request_line)`` gives the bytes to
    answer (None: keep the connection open and never answer)."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                request = conn.recv(65536).decode("latin-1")
            except OSError:
                request = ""
            answer = self.reply(request.split("\r\n", 1)[0])
            if answer is None:
                self.held.append(conn)  # accepted, read, never answered
                continue
            try:
                conn.sendall(answer)
            finally:
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


def _health_only(request_line: str) -> bytes | None:
    """An MLflow server whose backend hangs: ``/health`` answers, an API call never does."""
    if request_line.startswith("GET /health "):
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
    return None


@pytest.fixture
def silent_server() -> Iterator[_Server]:
    server = _Server(lambda request_line: None)
    yield server
    server.close()


@pytest.fixture
def hanging_api_server() -> Iterator[_Server]:
    server = _Server(_health_only)
    yield server
    server.close()


def _stage(tmp_path: Path, uri: str, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """One CLI stage of the smoke profile against ``uri`` in its own process, in a scratch folder, with
    the project's HTTP settings (none of the user's); (result, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # this checkout's code
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pipeline", "--params", str(ROOT / "params.yaml"), "--profile",
                          "smoke", "--quiet", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=timeout)
    return res, time.monotonic() - started


def _one_line(res: subprocess.CompletedProcess) -> str:
    """The failure contract: status 1 and stderr of exactly one line, the error."""
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _bound(http: dict[str, str]) -> float:
    """Hang bound of one stage: several times the settings' worst case, plus the process start."""
    values = {**ms.HTTP_DEFAULTS, **http}
    settings = ms.HttpSettings(timeout=int(values[ms.HTTP_TIMEOUT_ENV]), retries=int(values[ms.HTTP_RETRIES_ENV]),
                               backoff_factor=int(values[ms.HTTP_BACKOFF_ENV]),
                               backoff_jitter=float(values[ms.HTTP_JITTER_ENV]))
    return STARTUP_S + 4 * settings.bound_s()


def _unset_http_settings(monkeypatch) -> None:
    """No MLFLOW_HTTP_REQUEST_* in this process, and none left behind by the defaults the code sets."""
    for name in ms.HTTP_DEFAULTS:
        monkeypatch.setenv(name, "")  # recorded, so the test's end restores the variable's absence
        monkeypatch.delenv(name)


def test_the_project_bounds_mlflow_s_http_client_unless_the_user_did(monkeypatch):
    _unset_http_settings(monkeypatch)
    monkeypatch.setenv(ms.HTTP_TIMEOUT_ENV, "30")  # the user's own
    settings = ms.http_settings()
    assert os.environ[ms.HTTP_TIMEOUT_ENV] == "30" and settings.timeout == 30
    for name in (ms.HTTP_RETRIES_ENV, ms.HTTP_BACKOFF_ENV, ms.HTTP_JITTER_ENV):
        assert os.environ[name] == ms.HTTP_DEFAULTS[name]  # what MLflow reads when it sends a request
    assert (settings.retries, settings.backoff_factor, settings.backoff_jitter) == (2, 1, 0.5)
    assert settings.bound_s() == 3 * 2 * 30 + (0 + 0.5) + (2 + 0.5)


@pytest.mark.parametrize("name, value", [(ms.HTTP_TIMEOUT_ENV, "2.5"), (ms.HTTP_TIMEOUT_ENV, "0"),
                                         (ms.HTTP_RETRIES_ENV, "-1"), (ms.HTTP_JITTER_ENV, "lots")])
def test_a_bad_http_setting_is_one_line_naming_the_variable(monkeypatch, name, value):
    _unset_http_settings(monkeypatch)
    monkeypatch.setenv(name, value)
    with pytest.raises(PipelineError) as exc:
        ms.check_server(f"http://127.0.0.1:{_free_port()}")
    assert exc.value.where == name and "must be" in exc.value.what


@pytest.mark.parametrize("stage", [["mlflow-init"], ["train", "--run", RUN], ["evaluate", "--run", RUN], ["report"]])
def test_a_closed_port_stops_each_tracking_stage_within_the_bound(tmp_path, stage):
    """MLflow's defaults: 7 retries with pauses up to 120 s (minutes); the project's: seconds."""
    port = _free_port()
    res, took = _stage(tmp_path, f"http://127.0.0.1:{port}", *stage, timeout=_bound({}))
    line = _one_line(res)
    assert line.startswith(f"error: MLFLOW_TRACKING_URI=http://127.0.0.1:{port}: tracking server not reachable "
                           "(connection refused) after 3 tries in "), line
    assert line.endswith("; start it or unset the variable"), line
    assert took < _bound({})
    assert not (tmp_path / "results").exists() and not (tmp_path / "reports").exists()


def _in_process(capsys, monkeypatch, tmp_path, uri: str, *stage: str) -> tuple[int, list[str], float]:
    """One CLI stage of the smoke profile in this process, with :data:`FAST`; (status, stderr lines, seconds)."""
    import mlflow  # noqa: F401  (imported before the clock starts: an import is not a wait)

    _unset_http_settings(monkeypatch)
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    started = time.monotonic()
    rc = cli.main(["--params", str(ROOT / "params.yaml"), "--profile", "smoke", "--quiet", *stage])
    return rc, capsys.readouterr().err.splitlines(), time.monotonic() - started


def test_a_server_that_never_answers_stops_the_stage_within_the_bound(tmp_path, silent_server, capsys,
                                                                      monkeypatch):
    uri = f"http://127.0.0.1:{silent_server.port}"
    rc, lines, took = _in_process(capsys, monkeypatch, tmp_path, uri, "report")
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: MLFLOW_TRACKING_URI={uri}: tracking server not reachable (no answer "
                               "within 1 s) after 2 tries in "), lines[0]
    assert took < _bound(FAST)


def test_a_server_whose_api_hangs_stops_the_stage_within_the_bound(tmp_path, hanging_api_server, capsys,
                                                                   monkeypatch):
    """The pre-flight check passes (``/health`` answers); MLflow's own requests are bounded too, and
    urllib3's retry warnings stay off the console."""
    uri = f"http://127.0.0.1:{hanging_api_server.port}"
    rc, lines, took = _in_process(capsys, monkeypatch, tmp_path, uri, "mlflow-init")
    assert rc == 1 and lines == [f"error: {uri}: the tracking server stopped answering ({ms.HTTP_TIMEOUT_ENV}=1, "
                                 f"{ms.HTTP_RETRIES_ENV}=1): check that it is running, or raise these to wait "
                                 "longer"], lines
    assert took < _bound(FAST)


def test_every_store_connection_checks_the_server_first(monkeypatch):
    """Any caller of the store (not only the CLI's stages) gets the check, and a password stays hidden."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://user:secret@127.0.0.1:{_free_port()}"
    with pytest.raises(PipelineError) as exc:
        ms.connect(uri)
    assert exc.value.where == f"mlflow.tracking_uri=http://user:***@127.0.0.1:{uri.rsplit(':', 1)[1]}"
    assert exc.value.what.startswith("tracking server not reachable (connection refused) after 2 tries in ")
    assert exc.value.what.endswith("; start it or set mlflow.tracking_uri in params.yaml to a running server")
    assert "secret" not in str(exc.value)
