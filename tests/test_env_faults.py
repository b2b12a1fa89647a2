"""Failures of the environment that must stay one line: a library's own traceback on the console (a
read-only MLflow store), a params.yaml whose YAML aliases expand to millions of values, values echoed
whole into an error message, YAML nested too deeply to read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import MAX_ECHOED_VALUE, MAX_YAML_VALUES, YamlTooLarge, expanded_yaml_values, load_params
from pipeline.errors import MAX_WHAT, MAX_WHERE, PipelineError
from project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"
# A line a person can read on a terminal: the longest part of a message plus its frame
READABLE = MAX_WHERE + MAX_WHAT + 100


def _alias_bomb(levels: int, key: str = "profile") -> str:
    """``key: [...]`` holding the anchored lists ``l0 = [x] * 9`` and ``l(k+1) = [*lk] * 9``: ``9 ** levels``
    values once expanded, from a few lines."""
    lists = ["&l0 [" + ", ".join(["x"] * 9) + "]"]
    lists += [f"&l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, levels)]
    return f"{key}: [{', '.join(lists)}]\n"


def _without_profile() -> str:
    """The project's params.yaml without its ``profile:`` line (the bomb takes that key's place)."""
    lines = PARAMS.read_text().splitlines(keepends=True)
    return "".join(ln for ln in lines if not ln.startswith("profile:"))


def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


# ----------------------------------------------------------------------------- a library's traceback
@pytest.fixture
def read_only_store(tmp_path, monkeypatch):
    """A smoke project with an MLflow store that refuses every write MLflow makes.

    As root (the CI) a chmod does not stop writes, so SQLite is told so instead: every connection
    SQLAlchemy opens gets ``PRAGMA query_only``, and a write fails as on a read-only file ("attempt to
    write a readonly database"), after the project's own check of the file (a plain sqlite3 connection)
    has passed, as it does for a read-only file of another user.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    copy_project(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    made = subprocess.run([sys.executable, "-m", "pipeline", "--profile", "smoke", "mlflow-init"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)  # its own process: no engine cached here
    assert made.returncode == 0, made.stderr
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    def query_only(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(Engine, "connect", query_only)
    yield tmp_path
    event.remove(Engine, "connect", query_only)


def test_a_read_only_store_ends_in_one_line_without_mlflow_s_traceback(read_only_store, capsys):
    """MLflow logs the SQLite failure with a ~90-line traceback on its own console handler before the
    error reaches the CLI; the console shows only the CLI's line."""
    capsys.readouterr()
    rc = cli.main(["--profile", "demo", "mlflow-init"])  # a new experiment: the store must be written
    lines = _stderr_lines(capsys)
    assert rc == 1
    assert lines == [f"error: {read_only_store / 'mlflow.db'}: the MLflow store is read-only: make the file "
                     "and its folder writable"], "\n".join(lines[-40:])


def test_library_records_go_to_the_log_file_and_stay_off_the_console(tmp_path, capsys):
    """A library's records (tracebacks included) are written to the stage's log file and never to the
    console, which keeps the project's own."""
    import logging

    log_file = tmp_path / "stage.log"
    try:
        raise RuntimeError("inner failure")
    except RuntimeError:
        failure = sys.exc_info()
    for has_file in (True, False):
        capsys.readouterr()
        cli._setup_logging(log_file if has_file else None)
        library = logging.getLogger("somelibrary.store")
        library.error("database error", exc_info=failure)
        library.warning("retrying")
        logging.getLogger("pipeline.engine").info("ours")
        err = capsys.readouterr().err
        assert "pipeline.engine: ours" in err and len(err.splitlines()) == 1, err
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])  # closes the file handler
    text = log_file.read_text()
    assert "database error" in text and "RuntimeError: inner failure" in text and "retrying" in text


# ----------------------------------------------------------------------------- YAML aliases and echoes
def test_an_alias_bomb_in_params_yaml_is_refused_in_one_short_line(tmp_path, capsys):
    """Six levels: 531441 values from 6 lines; its echo made a line of megabytes."""
    bad = tmp_path / "params.yaml"
    bad.write_text(_alias_bomb(6) + _without_profile())
    rc = cli.main(["--params", str(bad), "validate"])
    lines = _stderr_lines(capsys)
    assert rc == 1 and len(lines) == 1, [ln[:300] for ln in lines]
    assert lines[0] == (f"error: {bad}: refused: its aliases (*name) expand it to more than {MAX_YAML_VALUES} "
                        "values (aliases of lists of aliases multiply): write the values out, or use fewer "
                        "aliases")


def test_expanded_values_are_counted_without_expanding():
    compose = yaml.compose
    # the mapping, its key, the outer list, then l0 (1 + 9), l1 (1 + 9 x 10) and l2 (1 + 9 x 91)
    assert expanded_yaml_values(compose(_alias_bomb(3))) == 3 + 10 + 91 + 820
    with pytest.raises(YamlTooLarge, match="more than 1000 values"):
        expanded_yaml_values(compose(_alias_bomb(4)), limit=1000)
    with pytest.raises(YamlTooLarge, match="refers to a value that contains it"):
        expanded_yaml_values(compose("a: &a [1, *a]"))
    # the project's own params.yaml is far below the limit
    assert expanded_yaml_values(compose(PARAMS.read_text())) < MAX_YAML_VALUES // 5


def test_yaml_nested_too_deeply_is_one_line(tmp_path):
    deep = tmp_path / "params.yaml"
    deep.write_text("profile: " + "[" * 600 + "]" * 600 + "\n")
    with pytest.raises(PipelineError) as exc:
        load_params(deep)
    assert exc.value.where == str(deep) and exc.value.what == "refused: its values are nested too deeply to read"


def test_a_long_value_echoed_by_the_schema_is_cut(tmp_path):
    """Without aliases too: a 5000-entry list where a name belongs is echoed in 200 characters."""
    params = yaml.safe_load(PARAMS.read_text())
    params["profile"] = [f"entry{i}" for i in range(5000)]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError) as exc:
        load_params(bad)
    what = exc.value.what
    assert exc.value.where == f"{bad}: profile" and what.endswith(" is not of type 'string'"), what[:400]
    assert what.startswith("['entry0', 'entry1', ") and "characters cut]" in what
    assert len(what) < MAX_ECHOED_VALUE + 60


def test_no_error_message_grows_past_a_readable_line():
    """Whatever a caller echoes: the start (the problem) and the end (what to do) stay, the middle goes."""
    exc = PipelineError("f" * 10_000, "bad value " + "x" * 1_000_000 + " ; do this")
    assert len(str(exc)) < READABLE
    assert exc.where.startswith("fff") and exc.what.startswith("bad value xxx") and exc.what.endswith("; do this")
    assert f"…[{len('bad value ') + 1_000_000 + len(' ; do this') - MAX_WHAT} characters cut]…" in exc.what


def test_a_huge_command_line_argument_is_echoed_cut(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--params", str(PARAMS), "evaluate", "--run", "r", "--seed", "9" * 50_000 + "x"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("python -m pipeline evaluate: error: argument --seed: not an integer: '999")
    assert len(last) < cli.MAX_ARGUMENT_ERROR + 100


def test_snakemake_refuses_an_alias_bomb_before_reading_the_config(tmp_path):
    copy_project(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(_alias_bomb(6) + _without_profile())
    res = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert lines == [f"error: params.yaml: refused: its aliases (*name) expand it to more than {MAX_YAML_VALUES} "
                     "values (aliases of lists of aliases multiply): write the values out, or use fewer aliases"]
    assert max(map(len, res.stderr.splitlines())) < READABLE
