"""MLflow bookkeeping: one store, one experiment per profile, one MLflow run per benchmark run.

The training stage opens the run (params, per-epoch curves, tags naming its table rows); the
evaluation stage reopens the same run by id and adds the final metrics and artifacts; the report
stage searches the experiment. The SQLite store is created once by :func:`init_store` before
any parallel job starts, because several processes creating a fresh SQLite store at once race on
its schema migration and corrupt it.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

import requests

from ..errors import PipelineError, Terminated, shorten
from ..termination import deferred_termination
from .metric_names import SEP, canonical_key, legacy_key

log = logging.getLogger(__name__)

BUSY_TIMEOUT_ENV = "HDM_MLFLOW_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_S = 60.0
# Statuses of a run that no process finished: a rerun of the same training reuses such a run
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


# The experiment tag by which MLflow 3's UI picks the page an experiment opens on, and its value for
# model training (the runs table); the UI's other kinds, e.g. "genai_development", open on traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

# MLflow's HTTP client as the project sets it where the user has not (a user's own value wins). Each
# request waits up to TIMEOUT seconds to connect and as long for each read, and is tried MAX_RETRIES
# more times after pauses of 0, 2 x BACKOFF_FACTOR, 4 x BACKOFF_FACTOR, ... seconds (plus up to JITTER).
# MLflow's own defaults (120 s, 7 retries, factor 2) make a server that does not answer look like a hang
# of many minutes.
HTTP_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
HTTP_JITTER_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
HTTP_DEFAULTS: dict[str, str] = {HTTP_TIMEOUT_ENV: "5", HTTP_RETRIES_ENV: "2", HTTP_BACKOFF_ENV: "1",
                                 HTTP_JITTER_ENV: "0.5"}
# Loggers of the libraries behind the store. MLflow gives its own (and alembic's, SQLAlchemy's) a
# console handler of their own when it is imported, which prints a whole traceback for a failure that
# reaches us anyway and becomes one line; routed to the root logger instead, their records go where the
# stage's log configuration sends them (pipeline.cli: the stage's log file).
LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "huey", "urllib3", "requests")
# http(s) tracking URIs whose server answered in this process: checked once, not before every call
_ANSWERED: set[str] = set()


def _configure_mlflow() -> None:
    """Environment MLflow reads when it runs: synchronous logging (the bounded HTTP client of a tracking
    server: :func:`http_settings`, via :func:`check_server`)."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def route_library_logs() -> None:
    """Send the store libraries' log records through the root logger, at WARNING and above.

    Called again after every ``import mlflow`` point (:func:`connect`): importing MLflow re-installs its
    console handlers. Any of their descendants that got a handler of its own is routed the same way.
    """
    for name in list(logging.root.manager.loggerDict):
        if name.split(".", 1)[0] not in LIBRARY_LOGGERS:
            continue
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class HttpSettings:
    """MLflow's HTTP client settings in effect (``MLFLOW_HTTP_REQUEST_*``), validated."""

    timeout: int
    retries: int
    backoff_factor: int
    backoff_jitter: float

    @property
    def tries(self) -> int:
        return self.retries + 1

    def pause(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` consecutive failures (urllib3's schedule, no jitter)."""
        return 0.0 if failures <= 1 else float(self.backoff_factor * 2 ** (failures - 1))

    def bound_s(self) -> float:
        """The longest one request to a server that never answers can take: every try waits out its
        connect and its read timeout, then the pauses between the tries, each with its whole jitter."""
        pauses = sum(self.pause(n) + self.backoff_jitter for n in range(1, self.tries))
        return self.tries * 2 * self.timeout + pauses


def _env_number(name: str, kind: type, minimum: float) -> Any:
    """``kind(os.environ[name])``, at least ``minimum``; a one-line error naming the variable otherwise
    (MLflow itself would fail deep inside a request with a traceback)."""
    raw = os.environ.get(name, HTTP_DEFAULTS[name])
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise PipelineError(name, f"must be {what} >= {minimum:g}, got {shorten(repr(raw), 60)}") from None
    if value < minimum:
        raise PipelineError(name, f"must be {what} >= {minimum:g}, got {shorten(raw, 60)}")
    return value


def http_settings() -> HttpSettings:
    """The bounded HTTP settings MLflow will use (the project's defaults where the user set none)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return HttpSettings(timeout=_env_number(HTTP_TIMEOUT_ENV, int, 1),
                        retries=_env_number(HTTP_RETRIES_ENV, int, 0),
                        backoff_factor=_env_number(HTTP_BACKOFF_ENV, int, 0),
                        backoff_jitter=_env_number(HTTP_JITTER_ENV, float, 0))


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def _shown_uri(uri: str) -> str:
    """The URI as messages show it: a password in it is masked."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _uri_source(uri: str) -> tuple[str, str]:
    """(where the URI comes from, what the user can change there), for messages."""
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        return f"MLFLOW_TRACKING_URI={_shown_uri(uri)}", "start it or unset the variable"
    return (f"mlflow.tracking_uri={_shown_uri(uri)}",
            "start it or set mlflow.tracking_uri in params.yaml to a running server")


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (causes, contexts, urllib3's ``reason``, wrapped arguments)."""
    todo, seen = [exc], set()
    while todo and len(seen) < 50:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        more = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo.extend(m for m in more if isinstance(m, BaseException))


def _connection_cause(exc: BaseException, timeout: int) -> str:
    """Why a request got no answer, in a few words."""
    for e in _exception_chain(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "host not found"
        if isinstance(e, TimeoutError) or type(e).__name__ in ("ConnectTimeout", "ReadTimeout",
                                                                "ConnectTimeoutError", "ReadTimeoutError"):
            return f"no answer within {timeout} s"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
    lines = str(exc).strip().splitlines()
    return shorten(lines[0] if lines else type(exc).__name__, 120)


def _probe(uri: str, timeout: int) -> str | None:
    """Ask the server for ``/health`` once; None when it answered anything, else why not.

    Any HTTP answer counts (even 401 or 404: something serves the URI, and MLflow reports what is wrong
    with it); so does a TLS failure after connecting, which MLflow's own TLS settings decide.
    """
    verify: bool | str = True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        verify = False
    elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=(timeout, timeout), verify=verify,
                     allow_redirects=False).close()
    except requests.exceptions.SSLError as exc:
        cause = _connection_cause(exc, timeout)
        return cause if cause.startswith(("no answer", "connection ")) else None
    except requests.exceptions.RequestException as exc:
        return _connection_cause(exc, timeout)
    return None


def check_server(uri: str) -> None:
    """Stop with one line unless the tracking server at an http(s) ``uri`` answers (other URIs: no-op).

    Tried as often and with the same timeout and pauses as MLflow's own requests (:func:`http_settings`),
    so a server that is down ends the stage within :meth:`HttpSettings.bound_s` seconds, before any real
    work, instead of in the middle of it. A server that answered once in this process is not asked again.
    """
    if not _is_http(uri) or uri in _ANSWERED:
        return
    settings = http_settings()
    started = time.monotonic()
    cause = ""
    for attempt in range(1, settings.tries + 1):
        cause = _probe(uri, settings.timeout)
        if cause is None:
            _ANSWERED.add(uri)
            return
        if attempt < settings.tries:
            time.sleep(settings.pause(attempt))
    where, advice = _uri_source(uri)
    tries = f"{settings.tries} tr{'y' if settings.tries == 1 else 'ies'}"
    raise PipelineError(where, f"tracking server not reachable ({cause}) after {tries} in "
                               f"{time.monotonic() - started:.0f} s; {advice}")


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return None


def store_name(uri: str) -> str:
    """What error messages call the store: the SQLite file, else the URI."""
    db = _sqlite_path(uri)
    return str(db) if db is not None else uri


def busy_timeout() -> float:
    """Seconds to wait for a locked SQLite store before stopping (``HDM_MLFLOW_BUSY_TIMEOUT``, default 60).

    Another process holding the store's lock (a parallel job logging, a user's ``mlflow ui``) is
    normal for a few seconds; waiting out such locks is what keeps metrics in the right run.
    """
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_BUSY_TIMEOUT_S
    except ValueError:
        raise PipelineError(BUSY_TIMEOUT_ENV, f"must be a number of seconds, got {raw!r}") from None
    return max(0.0, value)


def check_sqlite_store(db: Path, *, write: bool) -> None:
    """Open the SQLite store ourselves, waiting up to :func:`busy_timeout` for a lock; one-line errors.

    MLflow reports a locked, corrupt or read-only file as a many-line traceback (or, before this check,
    as a missing run); here each becomes a :class:`PipelineError` naming the file and the cause.
    ``write``: also take the write lock (released at once), so a read-only store is caught up front.
    """
    timeout = busy_timeout()
    try:
        con = sqlite3.connect(str(db), timeout=timeout)
    except sqlite3.Error as exc:
        raise PipelineError(str(db), f"cannot open the MLflow store ({exc})") from None
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if write:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise PipelineError(str(db), _describe_store_error(str(exc), timeout)) from None
    finally:
        con.close()


def _describe_store_error(text: str, timeout: float | None = None) -> str:
    """A one-line cause for an SQLite/MLflow store failure."""
    low = text.lower()
    if "locked" in low or "busy" in low:
        waited = f" for {timeout:g} s" if timeout is not None else ""
        return (f"MLflow store is locked by another process (waited{waited}; set {BUSY_TIMEOUT_ENV} "
                "to wait longer); nothing was logged")
    if "not a database" in low or "malformed" in low or "no such table" in low:
        return ("not a usable MLflow store (corrupt, or not an SQLite database): restore it from a "
                "backup, or move it away and run `python -m pipeline mlflow-init`")
    if "readonly" in low or "read-only" in low or "permission" in low:
        return "the MLflow store is read-only: make the file and its folder writable"
    if "unable to open" in low:
        return "cannot open the MLflow store (missing folder or no permission)"
    if "api request to" in low and ("timeout" in low or "timed out" in low or "connection" in low):
        waits = ", ".join(f"{name}={os.environ.get(name, '?')}" for name in (HTTP_TIMEOUT_ENV, HTTP_RETRIES_ENV))
        return (f"the tracking server stopped answering ({waits}): check that it is running, or raise "
                "these to wait longer")
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return f"MLflow store error ({shorten(first, 200)})"


def is_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the tracking store (MLflow, SQLAlchemy, sqlite3) rather than our code."""
    module = type(exc).__module__ or ""
    return module.startswith(("mlflow", "sqlalchemy", "sqlite3", "_sqlite3", "requests", "urllib3"))


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turn a failure of the MLflow store inside the block into a one-line :class:`PipelineError`."""
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:
        if not is_store_error(exc):
            raise
        raise PipelineError(store_name(uri), _describe_store_error(str(exc))) from None


def connect(uri: str, *, write: bool = False) -> Any:
    """Point MLflow at ``uri`` and return the module (imported lazily: it is slow to import).

    A SQLite store is checked first (:func:`check_sqlite_store`): it must exist (made by
    ``mlflow-init``), be a readable SQLite file, and not stay locked longer than the busy timeout. A
    tracking server must answer (:func:`check_server`); every request MLflow makes to it is bounded
    (:data:`HTTP_DEFAULTS`).
    """
    _configure_mlflow()
    db = _sqlite_path(uri)
    if db is not None:
        if not db.exists() and os.environ.get("HDM_MLFLOW_ALLOW_CREATE") != "1":
            raise PipelineError(str(db), "MLflow store not found: run the `mlflow-init` stage first "
                                         "(python -m pipeline mlflow-init)")
        if db.exists():
            check_sqlite_store(db, write=write)
    check_server(uri)
    import mlflow

    route_library_logs()  # the import gave MLflow's loggers their own console handlers again
    mlflow.set_tracking_uri(uri)
    return mlflow


def experiment_id(mlflow: Any, experiment: str) -> str:
    """The id of ``experiment``, created if missing, marked as a model-training experiment.

    MLflow 3's UI opens an experiment on the page of its kind (tag :data:`EXPERIMENT_KIND_TAG`): the
    GenAI overview of traces and token usage unless the tag says custom model development, which opens
    the runs table (MLflow 3.17 lets its GenAI / Model training switch decide instead: docs/mlflow.md).
    An experiment made before the project set the tag (an older store) gets it here; one whose kind a
    user chose in the UI keeps it.
    """
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return mlflow.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    if not exp.tags.get(EXPERIMENT_KIND_TAG):
        mlflow.tracking.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG,
                                                          MODEL_TRAINING_KIND)
    return exp.experiment_id


def init_store(uri: str, experiment: str) -> dict[str, str]:
    """Create the store (schema migration happens here, once) and the profile's experiment."""
    os.environ["HDM_MLFLOW_ALLOW_CREATE"] = "1"
    try:
        db = _sqlite_path(uri)
        if db is not None:
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PipelineError(str(db.parent), f"cannot create the MLflow store's folder ({exc.strerror})") from None
        mlflow = connect(uri, write=True)
        with store_errors(uri):
            exp_id = experiment_id(mlflow, experiment)
            location = mlflow.get_experiment(exp_id).artifact_location
    finally:
        os.environ.pop("HDM_MLFLOW_ALLOW_CREATE", None)
    check_artifact_location(uri, location, f"experiment {experiment!r}")
    return {"tracking_uri": uri, "experiment": experiment, "experiment_id": str(exp_id)}


def check_artifact_location(uri: str, location: str, what: str) -> None:
    """A local artifact location must lie inside the project (the working directory).

    MLflow stores an absolute artifact path per experiment and run when the store is created; in a
    copied project (or a store shared between projects) that path still points into the original
    folder, and logging would write there. Remote locations (s3://, mlflow-artifacts:, ...) are fine.
    """
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file") or not location:
        return
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else location)
    project = Path.cwd().resolve()
    try:
        path.resolve().relative_to(project)
    except ValueError:
        raise PipelineError(store_name(uri), f"{what} keeps its artifacts in {path}, outside this project "
                            f"({project}): the store was created by another copy of the project. Use a "
                            "store of this project (move the copied store away and run `python -m pipeline "
                            "mlflow-init`), or an MLflow server (MLFLOW_TRACKING_URI)") from None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → flat ``a.b.c`` params (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _existing_run(mlflow: Any, uri: str, run_id: str) -> Any | None:
    """The MLflow run ``run_id``, or None when the store truly has no such run.

    Only MLflow's "does not exist" answer means missing; any other failure (a locked or broken store)
    is an error, never a reason to start a replacement run.
    """
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise PipelineError(store_name(uri), _describe_store_error(str(exc))) from None


def require_run(uri: str, run_id: str | None, run_name: str) -> None:
    """Stop unless the store is usable and holds ``run_id`` (checked before any slow work)."""
    if not run_id:
        raise PipelineError(run_name, "its checkpoint names no MLflow run: train the run again")
    mlflow = connect(uri, write=True)
    with store_errors(uri):
        if _existing_run(mlflow, uri, run_id) is None:
            raise PipelineError(store_name(uri), f"MLflow run {run_id} of {run_name!r} is not in this store "
                                "(the store was replaced since training): train the run again")


def _unfinished_run(mlflow: Any, exp_id: str, run_name: str, match_tags: dict[str, str]) -> str | None:
    """The newest run named ``run_name`` with ``match_tags`` that never finished and holds no metric yet
    (killed or stopped before its first epoch was logged): a rerun continues it instead of adding a
    second run. A run with metrics had checkpoints; if they are gone, a new run is the honest record."""
    clauses = [f"tags.mlflow.runName = '{run_name}'"] + [f"tags.{k} = '{v}'" for k, v in match_tags.items()]
    df = mlflow.search_runs(experiment_ids=[exp_id], filter_string=" and ".join(clauses),
                            order_by=["attributes.start_time DESC"])
    if df.empty:
        return None
    metric_cols = [c for c in df.columns if c.startswith("metrics.")]
    unstarted = df[metric_cols].isna().all(axis=1) if metric_cols else True
    df = df[df["status"].isin(UNFINISHED) & unstarted]
    return None if df.empty else str(df.iloc[0]["run_id"])


def _end_run(mlflow: Any, status: str) -> None:
    """End the active run; a store that fails now only gets a log line (the original error matters)."""
    try:
        mlflow.end_run(status=status)
    except Exception as exc:  # the store broke while the run was open
        log.warning("could not mark the MLflow run %s (%s)", status, _describe_store_error(str(exc)))


# The writes of the mlflow module a stage makes on its open run: a SIGTERM waits until each has committed.
_WRITES = frozenset({"log_metric", "log_metrics", "log_param", "log_params", "set_tag", "set_tags",
                     "log_artifact", "log_artifacts", "log_dict", "start_run", "end_run"})


class DeferredWrites:
    """The mlflow module as :func:`open_run` yields it: every write in :data:`_WRITES` runs inside
    :func:`~pipeline.termination.deferred_termination`, so a SIGTERM never lands inside SQLite's commit;
    everything else is the module's own attribute."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if name not in _WRITES or not callable(attr):
            return attr

        @functools.wraps(attr)
        def write(*args: Any, **kwargs: Any) -> Any:
            with deferred_termination():
                return attr(*args, **kwargs)

        return write


@contextlib.contextmanager
def open_run(uri: str, experiment: str, *, run_name: str, run_id: str | None = None,
             tags: dict[str, str] | None = None, missing: str = "new",
             reuse_tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Start a new MLflow run (or resume ``run_id``) and yield the mlflow module.

    ``missing``: what to do when ``run_id`` is not in the store: ``"new"`` starts a new run (training,
    whose caller replays the curves), ``"error"`` stops (evaluation: metrics belong to the training's
    run). Without ``run_id``, ``reuse_tags`` makes a rerun continue the newest unfinished run of the same
    name and tags rather than add a second one. Errors of the store stop with one line. On an exception
    the run is marked FAILED (KILLED when interrupted or terminated), so the report never takes it for
    a result.
    """
    mlflow = DeferredWrites(connect(uri, write=True))
    with store_errors(uri):
        run = _existing_run(mlflow, uri, run_id) if run_id is not None else None
        if run_id is not None and run is None:
            if missing == "error":
                raise PipelineError(store_name(uri), f"MLflow run {run_id} of {run_name!r} is not in this store "
                                    "(the store was replaced since training): train the run again")
            log.warning("MLflow run %s not found in %s; starting a new run", run_id, store_name(uri))
            run_id = None
        if run is not None:
            check_artifact_location(uri, run.info.artifact_uri, f"MLflow run {run_id}")
        exp_id = experiment_id(mlflow, experiment)
        if run_id is None:
            check_artifact_location(uri, mlflow.get_experiment(exp_id).artifact_location,
                                    f"experiment {experiment!r}")
            if reuse_tags:
                run_id = _unfinished_run(mlflow, exp_id, run_name, reuse_tags)
                if run_id is not None:
                    log.info("continuing MLflow run %s of %s (it never finished)", run_id, run_name)
        mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                         run_name=None if run_id else run_name, tags=tags)
    try:
        with store_errors(uri):
            yield mlflow
    except BaseException as exc:
        _end_run(mlflow, "KILLED" if isinstance(exc, (KeyboardInterrupt, Terminated)) else "FAILED")
        raise
    with store_errors(uri):
        mlflow.end_run(status="FINISHED")


def log_new_metrics(mlflow: Any, metrics: dict[str, float], step: int = 0) -> dict[str, float]:
    """Log the metrics whose value differs from the active run's latest one; returns those logged.

    A rerun of an evaluation gives the same numbers; logging them again would put each metric twice
    at the same step in the run's history.
    """
    run = mlflow.tracking.MlflowClient().get_run(mlflow.active_run().info.run_id)
    current = run.data.metrics
    new = {k: v for k, v in metrics.items() if k not in current or current[k] != v}
    if new:
        mlflow.log_metrics(new, step=step)
    return new


def _history(client: Any, run_id: str, key: str) -> list[Any]:
    """The logged values of metric ``key`` of run ``run_id``; for a run logged before the metric
    had its group (``train/loss``), those under its older name (``train_loss``)."""
    return client.get_metric_history(run_id, key) or client.get_metric_history(run_id, legacy_key(key))


def logged_steps(mlflow: Any, run_id: str, key: str) -> set[int]:
    """The steps at which ``key`` is already logged in run ``run_id``."""
    return {m.step for m in _history(mlflow.tracking.MlflowClient(), run_id, key)}


def finished_runs(uri: str, experiment: str) -> "Any":
    """All evaluated runs of the experiment as a DataFrame, newest first (one row per run)."""
    mlflow = connect(uri)
    with store_errors(uri):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            import pandas as pd

            return pd.DataFrame()
        df = mlflow.search_runs(experiment_ids=[exp.experiment_id],
                                filter_string="attributes.status = 'FINISHED' and tags.evaluated = 'true'",
                                order_by=["attributes.start_time DESC"])
    return canonical_metric_columns(df)


def canonical_metric_columns(df: "Any") -> "Any":
    """``df`` (a :func:`mlflow.search_runs` table) with its ``metrics.*`` columns under today's metric
    names (:func:`~.metric_names.canonical_key`): a store holding runs logged before the names had
    their groups (``metrics.coco_val.AP``) and after (``metrics.coco_val/AP``) gives one column per
    metric, each run's value in it, so every reader sees one name whatever version logged the run."""
    prefix = "metrics."
    columns: dict[str, Any] = {}
    metric_cols = [c for c in df.columns if c.startswith(prefix)]
    for col in sorted(metric_cols, key=lambda c: SEP not in c):  # today's name first: its value wins
        name = prefix + canonical_key(col[len(prefix):])
        columns[name] = df[col] if name not in columns else columns[name].combine_first(df[col])
    others = [c for c in df.columns if c not in metric_cols]
    import pandas as pd

    return pd.concat([df[others], pd.DataFrame(columns, index=df.index)], axis=1) if columns else df


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Per-epoch values of one metric of one run, as (step, value) pairs."""
    mlflow = connect(uri)
    with store_errors(uri):
        client = mlflow.tracking.MlflowClient()
        return [(m.step, m.value) for m in _history(client, run_id, key)]
