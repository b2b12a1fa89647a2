"""The CLI's own paths (pipeline.cli): `validate`, argument errors, the one-line ending of every failure
(an unconverted OSError, Ctrl-C, an unwritable log, a failed torchrun relaunch), and running outside the
main thread."""
from __future__ import annotations

import errno
import json
import signal
import sys
import threading
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import load_params, run_names
from pipeline.engine import train as train_mod

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
SMOKE = ["--params", str(PARAMS), "--profile", "smoke"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_validate_counts_the_runs(capsys):
    rc, out, err = _run(capsys, *SMOKE, "validate")
    params = load_params(PARAMS, "smoke")
    study_only = len(run_names(params, study=True)) - len(run_names(params))
    assert study_only == len(params["study"]["runs"]) > 0
    assert (rc, err) == (0, "")
    verdict_only = len(run_names(params, verdict=True)) - len(run_names(params, study=True))
    assert verdict_only == len((params.get("verdict") or {}).get("runs") or {})
    assert out == (f"{PARAMS}: valid (profile smoke, {len(params['runs'])} runs, {study_only} study-only, "
                   f"{verdict_only} verdict-only)\n")


@pytest.mark.parametrize("seed, message", [("-1", "must be >= 0, got -1"), ("one", "not an integer: 'one'")])
def test_a_bad_seed_is_an_argument_error(capsys, seed, message):
    with pytest.raises(SystemExit) as exc:
        cli.main([*SMOKE, "evaluate", "--run", "coco_hrnet_w32_mse", "--seed", seed])
    assert exc.value.code == 2
    assert f"argument --seed: {message}" in capsys.readouterr().err


def test_an_os_error_no_layer_converted_ends_as_one_line(capsys, monkeypatch):
    def broken(args, params):
        raise OSError(errno.EXDEV, "Invalid cross-device link", "data/a", None, "data/b")

    monkeypatch.setattr(cli, "cmd_validate", broken)
    rc, _, err = _run(capsys, *SMOKE, "validate")
    assert (rc, err) == (1, "error: data/a: Invalid cross-device link (to data/b)\n")
    # without a file name or an OS message: where and what are still named
    assert cli._os_error_line(OSError()) == "(file system): OSError"
    assert cli._os_error_line(PermissionError(errno.EACCES, "Permission denied", "x")) == "x: Permission denied"


def test_ctrl_c_ends_as_one_line_with_status_130(capsys, monkeypatch):
    def interrupted(args, params):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_evaluate", interrupted)
    rc, _, err = _run(capsys, *SMOKE, "evaluate", "--run", "coco_hrnet_w32_mse")
    assert rc == 130
    assert err == "error: evaluate --run coco_hrnet_w32_mse: interrupted; rerun the stage to continue\n"


def test_main_runs_outside_the_main_thread_without_touching_signals(capsys):
    """A front-end may call the CLI from a worker thread, where Python refuses signal handlers."""
    before = signal.getsignal(signal.SIGTERM)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", cli.main([*SMOKE, "validate"])))
    t.start()
    t.join()
    assert result == {"rc": 0} and signal.getsignal(signal.SIGTERM) is before
    assert "valid (profile smoke" in capsys.readouterr().out


def test_an_unwritable_log_stops_the_stage_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs" / "smoke" / "report.log").mkdir(parents=True)  # a folder where the log goes
    rc, _, err = _run(capsys, *SMOKE, "report")
    assert rc == 1
    assert err.startswith("error: logs/smoke/report.log: cannot write the log (") and err.count("\n") == 1


def test_testdev_scores_refuses_an_mpii_run(tmp_path, capsys):
    rc, _, err = _run(capsys, *SMOKE, "testdev-scores", "--run", "mpii_hrnet_w32_mse", "--scores",
                      str(tmp_path / "scores.json"))
    assert (rc, err) == (1, "error: --run mpii_hrnet_w32_mse: a mpii run has no COCO test-dev scores\n")


def test_a_failed_torchrun_relaunch_names_the_run_and_its_log(tmp_path, capsys, monkeypatch):
    """train.gpus > 1: the CLI relaunches itself under torchrun; a non-zero exit is one error line."""
    params = yaml.safe_load(PARAMS.read_text())
    params["profiles"]["smoke"]["train"]["gpus"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    seen = tmp_path / "argv.json"
    launched = []

    def fake_torchrun(nproc, pipeline_args):
        launched.append(nproc)
        code = f"import json, sys; open({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:])); sys.exit(3)"
        return [sys.executable, "-c", code, *pipeline_args]

    monkeypatch.chdir(tmp_path)
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(train_mod, "torchrun_command", fake_torchrun)
    rc, _, err = _run(capsys, "--params", "params.yaml", "--profile", "smoke", "--quiet", "train",
                      "--run", "coco_hrnet_w32_mse", "--seed", "1")
    assert launched == [2]
    assert json.loads(seen.read_text()) == ["--params", "params.yaml", "--profile", "smoke", "--quiet", "train",
                                            "--run-name", "coco_hrnet_w32_mse", "--seed", "1"]
    assert rc == 1
    assert err.splitlines()[-1] == ("error: train --run coco_hrnet_w32_mse --seed 1: torchrun exited with status 3 "
                                    "(see results/smoke/runs/coco_hrnet_w32_mse/seed1/train.log)")


def test_paper_config_warns_about_an_undocumented_difference(tmp_path, capsys, caplog):
    params = yaml.safe_load(PARAMS.read_text())
    params["runs"]["coco_hrnet_w48_hdm_it500"]["hdm"]["iterations"] = 600
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "paper-config.md"
    with caplog.at_level("WARNING", logger="pipeline"):
        rc, stdout, _ = _run(capsys, "--params", str(tmp_path / "params.yaml"), "paper-config", "--output", str(out))
    assert rc == 0 and stdout == f"wrote {out}\n" and out.is_file()
    assert ("undocumented difference from the reference: coco_hrnet_w48_hdm_it500: hdm.iterations = 600, "
            "reference W48-COCO has 500") in caplog.messages
