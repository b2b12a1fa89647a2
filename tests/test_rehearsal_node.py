"""The rehearsal's HRFormer run trained as on a GPU node, on the CPU: the train rule's command from the
project root relaunches itself under torchrun as two Gloo processes with AdamW and warm-up, float16
autocast with a GradScaler and synchronised BatchNorm (GlooSyncBatchNorm), one checkpoint per epoch;
then stopped by SIGTERM to the launcher in epoch 2 (a SLURM time limit or pre-emption) and run again,
it resumes and ends with the uninterrupted run's weights, bit for bit.

The job runs in a scratch copy of the project whose rehearsal profile trains on synthetic data from a
random initialisation (``data.source: synthetic``, ``pretrained: false``, no HRFormer checkpoint: the
real rehearsal's downloads and weights are not needed here); everything else is the rehearsal profile,
i.e. the paper profile at toy sizes, with the full-size HRFormer-B. Four training people, so each of the
two processes takes one step of 2 per epoch. The checks themselves are in :mod:`node_checks`, for use
on a real rehearsal project too.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

import node_checks
from project_copy import copy_project

RUN = "coco_hrformer_base_mse"  # AdamW, warm-up, float16 AMP and SyncBN (gpus: 2, batch_size: 2)

# the rehearsal profile's only changes here: synthetic data, no pretrained weights to fetch
SYNTHETIC = {"image_size": [160, 120], "difficulty": 0.5,
             "coco": {"train_images": 4, "val_images": 1, "test_images": 1, "max_people": 1},
             "mpii": {"train_images": 2, "val_images": 1, "max_people": 1}}


def _scratch_rehearsal(params: dict) -> None:
    params["profile"] = "rehearsal"
    prof = params["profiles"]["rehearsal"]
    prof["data"]["source"] = "synthetic"
    prof["data"]["synthetic"] = SYNTHETIC
    prof["archs"]["hrformer_base"]["model"] = {"pretrained": False, "weights": None}
    params["runs"] = {RUN: params["runs"][RUN]}
    params.pop("verdict", None)  # its fine-tune runs start from main runs left out here


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """(project dir, environment): the scratch rehearsal project after its data and mlflow-init stages."""
    d = tmp_path_factory.mktemp("rehearsal_node") / "project"
    d.mkdir()
    copy_project(d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    _scratch_rehearsal(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "PYTHONPATH": str(d)}
    for stage in (["data", "--dataset", "coco"], ["mlflow-init"]):
        res = subprocess.run([sys.executable, "-m", "pipeline", "--profile", "rehearsal", "--quiet", *stage],
                             cwd=d, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    return d, env


@pytest.fixture(scope="module")
def trained(project):
    """The job run once, uninterrupted, as the train rule runs it."""
    d, env = project
    t0 = time.time()
    res = node_checks.train(d, RUN, env)
    print(f"\nuninterrupted rehearsal job: {time.time() - t0:.1f} s")
    return d, env, res


def test_the_rehearsal_job_trains_as_on_a_node(trained):
    d, env, res = trained
    assert "relaunching under torchrun" in res.stderr
    node_checks.assert_node_job(d, RUN, env)


def test_sigterm_to_the_launcher_then_a_rerun_resumes_exactly(trained, tmp_path):
    d, env, _ = trained
    seen = node_checks.assert_resume_matches(d, RUN, env, scratch=tmp_path / "clone")
    print(f"\nstopped {seen['stop_s']:.1f} s after SIGTERM; resumed from {seen['checkpoints'][-1]} "
          f"in {seen['rerun_s']:.1f} s")
