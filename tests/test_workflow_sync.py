"""Snakefile and dvc.yaml are two front-ends over one CLI: same stages, commands and outputs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipeline.config import load_params

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def snakemake_jobs(*extra: str) -> set[tuple[str, str, frozenset[str]]]:
    """(rule, CLI arguments, outputs) of every job of a forced dry run."""
    out = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--forceall", *extra], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    jobs = set()
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", out):
        m = re.search(r"^rule (\w+):", block, re.M)
        cmd = re.search(r"^Shell command: (.*)$", block, re.M)
        outs = re.search(r"^    output: (.*)$", block, re.M)
        if not (m and cmd and outs):
            continue
        args = cmd.group(1).split(" -m pipeline ", 1)[1].split(" 2> ")[0]
        jobs.add((m.group(1), args, frozenset(o.strip() for o in outs.group(1).split(","))))
    return jobs


def dvc_jobs() -> set[tuple[str, str, frozenset[str]]]:
    from dvc.repo import Repo

    jobs = set()
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            args = stage.cmd.split(" -m pipeline ", 1)[1]
            outs = frozenset(str(o.def_path) for o in stage.outs)
            jobs.add((stage.name.split("@")[0], args, outs))
    return jobs


def test_snakemake_and_dvc_define_the_same_jobs():
    snake = snakemake_jobs()
    dvc = dvc_jobs()
    assert len(snake) == 2 + 1 + 2 * len(load_params(ROOT / "params.yaml")["runs"]) + 1
    assert snake == dvc


def test_every_run_has_train_and_evaluate_jobs():
    import yaml

    runs = yaml.safe_load((ROOT / "params.yaml").read_text())["runs"]
    rules = {(r, a.split("--run ")[-1]) for r, a, _ in dvc_jobs() if r in ("train", "evaluate")}
    assert rules == {(r, n) for r in ("train", "evaluate") for n in runs}


def test_dvc_cmds_use_params_profile():
    text = (ROOT / "dvc.yaml").read_text()
    assert text.count("--profile ${profile}") == 5
