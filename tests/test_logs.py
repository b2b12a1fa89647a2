"""Logs a person or ``tail -f`` can read: a stage's stderr redirected to a file (Snakemake's
``logs/<profile>/*.log``, a cluster job's output) holds one line per training epoch and a start and an end
line per evaluation split, never a redrawn progress bar; on a terminal the bars are drawn.

One smoke project per module: the data stage, a 2-epoch training and its evaluation run as the workflow
runs them (``python -m pipeline ... 2> log``, a child process each, without ``--quiet``).
"""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import zipfile
from pathlib import Path

import pytest

from pipeline import cli, progress
from pipeline.config import load_params, run_label, run_names, resolve_run
from pipeline.data.download import extract
from project_copy import copy_project
from run_project import edit_params, smoke_train
from test_download import run as download, server, src  # noqa: F401 - server: the local HTTP server fixture

RUN = "coco_hrnet_w32_mse"
# The log of a full demo training job, at most (bytes)
DEMO_LOG_LIMIT = 5 * 1024
EPOCH_LINE = re.compile(r" (?P<label>\S+) epoch (?P<epoch>\d+)/(?P<epochs>\d+) "
                        r"\(elapsed \d+:\d\d:\d\d, eta \d+:\d\d:\d\d\)  train_loss=\S+ .*images_per_s=\d")
# A redraw: a carriage return that does not end a line (a terminal's line ends are "\r\n")
REDRAW = re.compile(r"\r(?!\n)")
STAGE_TIMEOUT_S = 600  # a bound, far above the seconds a stage takes (tests share loaded machines)


def _env(d: Path) -> dict[str, str]:
    """The child's environment: the copy's package and store, no library bar settings of this process."""
    env = {k: v for k, v in os.environ.items() if k not in progress.LIBRARY_BARS_OFF}
    return {**env, "PYTHONPATH": str(d), "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"}


def _stage_to_file(d: Path, log: Path, *args: str) -> str:
    """``python -m pipeline <args>`` in ``d`` with stderr redirected to ``log`` (as a workflow rule does);
    the log's text, carriage returns kept."""
    with log.open("wb") as err:
        res = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=d, env=_env(d), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, timeout=STAGE_TIMEOUT_S)
    text = log.read_bytes().decode(errors="replace")
    assert res.returncode == 0, text[-3000:]
    return text


def _stage_on_terminal(d: Path, *args: str) -> str:
    """``python -m pipeline <args>`` in ``d`` with stderr on a pseudo-terminal of 24 × 120 characters (a
    new one has 0 columns, where tqdm draws nothing); what it wrote there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=d, env=_env(d),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + STAGE_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    text = b"".join(chunks).decode(errors="replace")
    assert rc == 0, text[-3000:]
    return text


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A smoke project whose data stage, training of :data:`RUN` and evaluation wrote their stderr to
    ``logs/data.log``, ``logs/train.log`` and ``logs/evaluate.log``."""
    d = tmp_path_factory.mktemp("logs")
    copy_project(d)
    edit_params(d, smoke_train)
    (d / "logs").mkdir()
    _stage_to_file(d, d / "logs/data.log", "data", "--dataset", "coco")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        for name in progress.LIBRARY_BARS_OFF:  # undone when the context ends: set for this call only
            mp.setenv(name, "")
            mp.delenv(name)
        assert cli.main(["--quiet", "mlflow-init"]) == 0
    _stage_to_file(d, d / "logs/train.log", "train", "--run", RUN)
    _stage_to_file(d, d / "logs/evaluate.log", "evaluate", "--run", RUN)
    return d


def _epoch_lines(text: str) -> list[re.Match]:
    return [m for m in map(EPOCH_LINE.search, text.splitlines()) if m]


# ----------------------------------------------------------------------------- a log file
def test_a_training_log_file_holds_one_line_per_epoch_and_no_redraw(project):
    text = (project / "logs/train.log").read_bytes().decode()
    assert not REDRAW.search(text) and "\r" not in text, text[:2000]
    epochs = [(m["label"], int(m["epoch"]), int(m["epochs"])) for m in _epoch_lines(text)]
    assert epochs == [(run_label(RUN, 0), 1, 2), (run_label(RUN, 0), 2, 2)], text
    for epoch in (1, 2):  # no other line speaks of the epoch (no bar, no second summary)
        assert sum(f"epoch {epoch}/2" in line for line in text.splitlines()) == 1, text


def test_the_log_of_a_full_demo_training_job_fits_in_5_kb(project):
    """Estimated from the smoke log: its lines other than the epochs' once, and its longest epoch line,
    lengthened by the longest demo run label and an HDM run's extra value, once per demo epoch."""
    text = (project / "logs/train.log").read_text()
    lines = [line + "\n" for line in text.splitlines()]
    epoch_lines = [line for line in lines if EPOCH_LINE.search(line)]
    assert epoch_lines, text
    other = sum(len(line.encode()) for line in lines if line not in epoch_lines)
    demo = load_params(Path(__file__).resolve().parent.parent / "params.yaml", "demo")
    names = run_names(demo, verdict=True)
    epochs = max(resolve_run(demo, name, seed=0)["train"]["epochs"] for name in names)
    longer_label = max(len(run_label(name, 0)) for name in names) - len(run_label(RUN, 0))
    per_epoch = max(len(line.encode()) for line in epoch_lines) + longer_label + len("  dead_heatmaps=1234")
    estimate = other + epochs * per_epoch
    assert estimate <= DEMO_LOG_LIMIT, (estimate, text)


def test_an_evaluation_log_file_holds_a_start_and_an_end_line_per_split(project):
    text = (project / "logs/evaluate.log").read_bytes().decode()
    assert "\r" not in text, text[:2000]
    lines = text.splitlines()
    for split in ("coco_val", "coco_val_gtbox", "coco_testdev"):
        desc = f"{RUN} {split}"
        assert sum(bool(re.search(rf"{desc}: started, \d+ (person|people) to go", line))
                   for line in lines) == 1, text
        assert sum(bool(re.search(rf"{desc}: \d+ (person|people) in \d+\.\d s", line)) for line in lines) == 1, text
    assert len(lines) <= 3 * 3 + 2, text  # a few lines per split, one for the whole stage


def test_the_data_stage_log_file_holds_no_redraw(project):
    text = (project / "logs/data.log").read_bytes().decode()
    assert "\r" not in text, text[:2000]
    assert re.search(r"synthetic coco train2017: \d+ images in \d+\.\d s", text), text


def test_a_download_and_an_extraction_log_a_start_and_an_end_line(server, tmp_path, capsys, caplog):  # noqa: F811
    base, _ = server
    archive = tmp_path / "annotations.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("a.json", "b.json", "c.json"):
            zf.writestr(f"annotations/{name}", "{}")
    with caplog.at_level("INFO", logger=progress.__name__):
        download(src(base), tmp_path / "cache", progress=True)
        extract(archive, tmp_path / "out", progress=True)
    assert "\r" not in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert len(lines) == 4, lines
    assert lines[0] == "val2017.zip: started, 3.0 MiB to go"
    assert re.fullmatch(r"val2017.zip: 3.0 MiB in \d+\.\d s, \d+\.\d [KMG]iB/s", lines[1]), lines
    assert lines[2] == "extract annotations.zip: started, 3 files to go"
    assert re.fullmatch(r"extract annotations.zip: 3 files in \d+\.\d s, \d+(\.\d)? files/s", lines[3]), lines


# ----------------------------------------------------------------------------- a terminal
def test_a_terminal_gets_the_training_bar(project):
    """The same stage on a terminal draws its bar (the switch is stderr, not the stage)."""
    text = _stage_on_terminal(project, "train", "--run", RUN, "--seed", "1")
    assert REDRAW.search(text), text[:2000]
    assert re.search(rf"{RUN} epoch 1/2:.*\|", text), text[:2000]
    assert len(_epoch_lines(text)) == 2, text[-2000:]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal_only_and_never_when_quiet(monkeypatch, caplog):
    shown = _Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    assert list(progress.track(range(3), "loop", unit="image")) == [0, 1, 2]
    assert "\r" in shown.getvalue() and not caplog.records
    shown.truncate(0)
    assert list(progress.track(range(3), "loop", unit="image", enabled=False)) == [0, 1, 2]
    assert shown.getvalue() == "" and not caplog.records  # --quiet: neither a bar nor lines
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level("INFO", logger="pipeline.progress"):
        assert list(progress.track(range(3), "loop", unit="image")) == [0, 1, 2]
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["loop: started, 3 images to go",
                                                                          "loop: 3 images"]


def test_library_bars_are_turned_off_where_ours_are(monkeypatch):
    """Off a terminal the CLI turns off Hugging Face's and MLflow's own bars (a user's setting wins)."""
    for name in progress.LIBRARY_BARS_OFF:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    assert cli.main(["--params", str(Path(__file__).resolve().parent.parent / "params.yaml"), "runs"]) == 0
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    env: dict[str, str] = {}
    monkeypatch.setattr(sys, "stderr", _Terminal())
    progress.quiet_library_bars(True, env)
    assert env == {}
    progress.quiet_library_bars(False, env)
    assert env == progress.LIBRARY_BARS_OFF
