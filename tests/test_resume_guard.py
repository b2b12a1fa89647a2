"""A resume continues only epochs trained on the same inputs: regenerated data or a retrained ``init_from``
run make training start over (one log line saying why); unchanged inputs still resume (smoke profile)."""
from __future__ import annotations

import logging

import pytest
import torch

from pipeline.engine.train import find_resume_checkpoint
from run_project import RUN, RUN_DIR, build_base, cli, edit_params, runs, use_copy

FT = "coco_hrnet_w32_ft_mse"  # a verdict run that starts from RUN's final.pth (init_from)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("resume_guard"))


@pytest.fixture
def proj(base, tmp_path, monkeypatch):
    return use_copy(base, tmp_path / "p", monkeypatch)


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_log(proj) -> str:
    return (proj / RUN_DIR / "train.log").read_text()


def test_regenerated_data_retrain_instead_of_resuming(proj, capsys):
    old = _weights(proj / RUN_DIR / "final.pth")
    old_runs = {r for n, _, r in runs(proj) if n == f"{RUN}-seed0"}
    edit_params(proj, lambda p: p["profiles"]["smoke"]["data"]["synthetic"].update(difficulty=0.9))
    rc, err = cli(capsys, "data", "--dataset", "coco")
    assert rc == 0, err[-2000:]
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    log_text = _train_log(proj)
    assert "already holds all" not in log_text
    assert ("checkpoints/epoch_002.pth was trained on other inputs "
            "(data/smoke/coco/annotations/person_keypoints_train2017.json changed, "
            "data/smoke/coco/annotations/person_keypoints_val2017.json changed); not resuming from it") in log_text
    assert "starting over from epoch 1" in log_text
    assert not _same(_weights(proj / RUN_DIR / "final.pth"), old)
    new_runs = {r for n, _, r in runs(proj) if n == f"{RUN}-seed0"} - old_runs
    assert len(new_runs) == 1  # a new MLflow run: the old one holds the old data's curves


def test_unchanged_inputs_still_resume(proj, capsys):
    """The data stage run again with the same settings writes the same files: nothing is retrained."""
    old = _weights(proj / RUN_DIR / "final.pth")
    rc, err = cli(capsys, "data", "--dataset", "coco")
    assert rc == 0, err[-2000:]
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    assert f"{RUN}: {RUN_DIR / 'checkpoints/epoch_002.pth'} already holds all 2 epochs" in _train_log(proj)
    assert "other inputs" not in _train_log(proj)
    assert _same(_weights(proj / RUN_DIR / "final.pth"), old)


def test_retrained_init_run_retrains_the_runs_started_from_it(proj, capsys):
    ft_dir = proj / f"results/smoke/runs/{FT}/seed0"
    rc, err = cli(capsys, "train", "--run", FT)
    assert rc == 0, err[-2000:]
    first = _weights(ft_dir / "final.pth")
    # the init run's final.pth replaced (retrained since): other starting weights
    init = torch.load(proj / RUN_DIR / "final.pth", map_location="cpu", weights_only=True)
    name = next(k for k, v in init["model"].items() if v.is_floating_point())
    init["model"][name] = init["model"][name] + 0.5
    torch.save(init, proj / RUN_DIR / "final.pth")
    rc, err = cli(capsys, "train", "--run", FT)
    assert rc == 0, err[-2000:]
    log_text = (ft_dir / "train.log").read_text()
    assert (f"was trained on other inputs ({RUN_DIR / 'final.pth'} changed); not resuming from it") in log_text
    assert not _same(_weights(ft_dir / "final.pth"), first)


def _state(epoch: int, **extra) -> dict:
    return {"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}, "optimizer": {}, "scheduler": {},
            "config_hash": "cfg", "code_hash": "code", **extra}


def test_checkpoints_without_the_same_inputs_are_not_resumed(tmp_path, caplog):
    inputs = {"data": {"data/x/train.json": "a" * 64}, "weights": {"pretrained/x/backbone.pth": "b" * 64}}
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    torch.save(_state(1, inputs=inputs), ckpt / "epoch_001.pth")
    torch.save(_state(2), ckpt / "epoch_002.pth")  # written before inputs were recorded
    other = {"data": {"data/x/train.json": "c" * 64}, "weights": inputs["weights"]}
    torch.save(_state(3, inputs=other), ckpt / "epoch_003.pth")
    with caplog.at_level(logging.WARNING):
        state, path = find_resume_checkpoint(ckpt, "cfg", 5, "code", inputs)
    assert path == ckpt / "epoch_001.pth" and state["epoch"] == 1
    warned = "\n".join(caplog.messages)
    assert "epoch_003.pth was trained on other inputs (data/x/train.json changed)" in warned
    assert "epoch_002.pth was trained on other inputs (the checkpoint records no inputs" in warned
