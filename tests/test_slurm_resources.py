"""The SLURM submission of the paper's training jobs asks for what params.yaml declares.

Two halves, each with the real code: (1) Snakemake's dry run with the SLURM profile prints every job's
resources after the profile's default-/set-resources are applied, so every paper `train` job must show
gpu / gpu_model / cpus_per_gpu / mem_mb / runtime from params.yaml; (2) those resources go through the
SLURM executor plugin's own sbatch builders (`get_submit_command`, `set_gres_string`), which is exactly
what the plugin runs before calling sbatch. (Submitting for real needs sbatch, sinfo and sacct;
faking all three would test our fakes more than the workflow.)
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline.config import load_params, resolve_run, run_names

from project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


_copy_project = copy_project


def _value(v: str):
    return int(v) if re.fullmatch(r"-?\d+", v) else v


def dry_run_train_jobs(project: Path, *targets: str) -> dict[str, dict]:
    """run name -> {"threads": int, "resources": {...}} of every train job of a forced dry run (of the
    default target, or of ``targets``)."""
    out = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", "--workflow-profile", "workflow/profiles/slurm",
                          *targets, "--config", "profile=paper"], cwd=project, capture_output=True, text=True,
                         check=True, timeout=300).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", out):
        if not re.search(r"^rule train:", block, re.M):
            continue
        run = re.search(r"^    wildcards: .*run=(\w+)", block, re.M).group(1)
        res = re.search(r"^    resources: (.*)$", block, re.M).group(1)
        resources = dict(kv.split("=", 1) for kv in res.split(", "))
        threads = re.search(r"^    threads: (\d+)", block, re.M)  # printed only when > 1
        jobs[run] = {"threads": int(threads.group(1)) if threads else 1,
                     "resources": {k: _value(v) for k, v in resources.items()}}
    return jobs


class _Resources(dict):
    """The parts of snakemake's job.resources the plugin uses: .get() and attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def sbatch_call(job: dict) -> str:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    fake = SimpleNamespace(resources=_Resources(job["resources"]), threads=job["threads"], name="train",
                           is_group=lambda: False)
    res = fake.resources
    params = {"run_uuid": "test-uuid", "slurm_logfile": "slurm.log", "comment_str": "rule_train",
              "account": f" -A {res['slurm_account']}" if res.get("slurm_account") else "",
              "partition": f" -p {res['slurm_partition']}" if res.get("slurm_partition") else "",
              "workdir": "."}
    return get_submit_command(fake, params) + set_gres_string(fake)


@pytest.mark.parametrize("gpu_model", ["a100", ""])
def test_paper_train_jobs_ask_slurm_for_params_resources(tmp_path, gpu_model):
    _copy_project(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["profiles"]["paper"]["cluster"]["gpu_model"] = gpu_model
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    params = load_params(tmp_path / "params.yaml")
    cluster = params["profiles"]["paper"]["cluster"]

    jobs = dry_run_train_jobs(tmp_path)
    assert set(jobs) == set(params["runs"])
    for run, job in jobs.items():
        gpus = resolve_run(params, run, "paper")["train"]["gpus"]
        assert gpus > 0
        res = job["resources"]
        assert res["gpu"] == gpus
        assert res.get("gpu_model", "") == gpu_model
        assert res["cpus_per_gpu"] == cluster["cpus_per_gpu"]
        assert res["mem_mb"] == cluster["mem_mb_per_gpu"] * gpus
        assert res["runtime"] == cluster["runtime_min"]
        assert res["slurm_partition"] == "gpu"  # the profile's defaults reach the job

        call = sbatch_call(job)
        gpu_flag = f"--gpus={gpu_model}:{gpus}" if gpu_model else f"--gpus={gpus}"
        assert gpu_flag in call.split(), call
        assert f"--cpus-per-gpu={cluster['cpus_per_gpu']}" in call.split(), call
        assert f"--mem {cluster['mem_mb_per_gpu'] * gpus}" in call, call
        assert f"-t {cluster['runtime_min']}" in call, call
        assert " -p gpu" in call, call
        # one launcher per job (torchrun starts the per-GPU processes): no task geometry, no per-task CPUs
        assert "--ntasks" not in call and "--cpus-per-task" not in call, call


def test_paper_study_runs_train_with_the_same_slurm_resources(tmp_path):
    """`snakemake study --config profile=paper` also trains the study-only runs (params.yaml study.runs),
    as GPU jobs with the resources of every other training job of their architecture."""
    _copy_project(tmp_path)
    params = load_params(tmp_path / "params.yaml")
    study_only = set(run_names(params, study=True)) - set(run_names(params))
    assert study_only

    jobs = dry_run_train_jobs(tmp_path, "study")
    assert set(jobs) == set(run_names(params, study=True))
    main = dry_run_train_jobs(tmp_path)
    assert set(main) == set(run_names(params))  # the default target leaves them out
    for run in study_only:
        res = jobs[run]["resources"]
        assert res["gpu"] == resolve_run(params, run, "paper")["train"]["gpus"] > 0
        twin = next(r for r in run_names(params) if params["runs"][r]["arch"] == params["study"]["runs"][run]["arch"])
        assert jobs[run] == main[twin], run  # threads, gpu, gpu_model, cpus_per_gpu, mem_mb, runtime, partition
        assert "--gpus=" in sbatch_call(jobs[run])
