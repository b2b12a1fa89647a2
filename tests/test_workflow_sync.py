"""Snakefile and dvc.yaml are two front-ends over one CLI: same stages, commands and outputs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipeline.config import load_params, run_names

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def snakemake_jobs(*extra: str, cwd: Path = ROOT) -> set[tuple[str, str, frozenset[str]]]:
    """(rule, CLI arguments, outputs) of every job of a forced dry run."""
    out = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--forceall", *extra], cwd=cwd,
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


def dvc_jobs(root: Path = ROOT) -> set[tuple[str, str, frozenset[str]]]:
    from dvc.repo import Repo

    jobs = set()
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            args = stage.cmd.split(" -m pipeline ", 1)[1]
            outs = frozenset(str(o.def_path) for o in stage.outs)
            jobs.add((stage.name.split("@")[0], args, outs))
    return jobs


def test_snakemake_and_dvc_define_the_same_jobs():
    from pipeline.pretrain.spec import pinned_archs

    params = load_params(ROOT / "params.yaml")
    snake = snakemake_jobs()
    dvc = dvc_jobs()
    pretrain = len(pinned_archs(params, params["profile"]))
    assert len(snake) == 2 + 1 + pretrain + 2 * len(run_names(params)) * len(params["seeds"]) + 1
    assert snake == dvc  # the main runs only: study.runs are the Snakemake study target's
    study_only = set(run_names(params, study=True)) - set(run_names(params))
    assert study_only and not any(f"--run {r} " in a for _, a, _ in snake for r in study_only)


def test_every_demo_arch_has_a_pretrain_job():
    """One pretrain job per architecture, writing the folder the arch's pin points into."""
    params = load_params(ROOT / "params.yaml", "demo")
    archs = params["profiles"]["demo"]["archs"]
    jobs = {(a, o) for r, a, o in dvc_jobs() if r == "pretrain"}
    assert jobs == {(f"--profile demo pretrain --arch {a}", frozenset({f"pretrained/demo/{a}"})) for a in archs}
    for a, spec in archs.items():
        assert spec["model"]["backbone_weights"]["path"] == f"pretrained/demo/{a}/backbone.pth"
    assert {a for r, a, _ in snakemake_jobs() if r == "pretrain"} == {j[0] for j in jobs}


def test_every_run_and_seed_has_train_and_evaluate_jobs(tmp_path):
    """Both front-ends key the runs by seed: with seeds [0, 3], every run has one job per seed."""
    import shutil

    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seeds"] = [0, 3]
    for name in ("Snakefile", "dvc.yaml", "workflow", "pipeline", ".dvc"):
        src = ROOT / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, tmp_path / name))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)  # DVC needs a repository
    want = {(r, f"--run {n} --seed {s}") for r in ("train", "evaluate") for n in params["runs"] for s in (0, 3)}
    for jobs in (dvc_jobs(tmp_path), snakemake_jobs(cwd=tmp_path)):
        got = {(r, a.split(f" {r} ", 1)[1]) for r, a, _ in jobs if r in ("train", "evaluate")}
        assert got == want
    outs = {o for r, _, outs in snakemake_jobs(cwd=tmp_path) if r == "train" for o in outs}
    assert "results/demo/runs/coco_hrnet_w32_hdm/seed3/final.pth" in outs
    # the paper profile's dry run lists its jobs per seed too
    paper = snakemake_jobs("--config", "profile=paper", cwd=tmp_path)
    outs = {o for r, _, outs in paper if r == "train" for o in outs}
    assert len(outs) == 2 * len(params["runs"]) and "results/paper/runs/mpii_hrnet_w48_hdm/seed3/final.pth" in outs


def test_dvc_cmds_use_params_profile():
    text = (ROOT / "dvc.yaml").read_text()
    assert text.count("--profile ${profile}") == 6
