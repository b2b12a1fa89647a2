"""The DVC front-end on the tiny `smoke` profile: `dvc repro` builds the tables, a second
`dvc repro` has nothing to do, and `dvc exp run -S key=value` reruns with the changed parameter."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUNS = ["coco_hrnet_w32_hdm", "mpii_hrnet_w32_mse"]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def test_dvc_repro_and_exp_run(tmp_path):
    d = tmp_path / "project"
    d.mkdir()
    for name in ("dvc.yaml", "params.yaml", "pipeline", "workflow", ".dvc", "pretrained"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        else:
            shutil.copy(src, d / name)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["runs"] = {k: v for k, v in params["runs"].items() if k in RUNS}
    params.pop("verdict", None)  # its fine-tune runs start from main runs left out here
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (d / ".gitignore").write_text("/data/\n/results/\n/logs/\n/mlflow.db\n/mlruns/\n__pycache__/\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], d, env)
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "init"], d, env)

    _run([str(BIN / "dvc"), "repro"], d, env)
    for i in range(1, 7):
        assert (d / "reports/smoke" / f"table{i}.md").is_file()
    csv = (d / "reports/smoke/table1.csv").read_text()
    assert "coco_hrnet_w32_hdm" in csv and "not run" in csv
    again = _run([str(BIN / "dvc"), "repro"], d, env)
    assert "up to date" in again.stdout + again.stderr

    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "lock"], d, env)
    _run([str(BIN / "dvc"), "exp", "run", "-S", "profiles.smoke.train.epochs=1"], d, env)
    summary = json.loads((d / "results/smoke/runs/coco_hrnet_w32_hdm/seed0/train_summary.json").read_text())
    assert summary["epochs"] == 1 and len(summary["history"]) == 1
    shown = json.loads(_run([str(BIN / "dvc"), "exp", "show", "--json"], d, env).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert exps, "dvc exp show lists the experiment"
    params_of = exps[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params_of["profiles"]["smoke"]["train"]["epochs"] == 1
