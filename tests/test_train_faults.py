"""Training faults that end in one line (smoke profile): a checkpoint that cannot be written (a full disk)
leaves the previous checkpoint and no temporary file, and the rerun resumes; a learning rate that makes
training diverge stops it naming the epoch, step and lr, before any checkpoint of the diverged weights;
under DDP every process stops at the same step."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.engine import train as train_mod
from pipeline.errors import PipelineError
from run_project import (RUN, RUN_DIR, build_base, cli, edit_params, leftovers, metric_steps, one_error, runs,
                         smoke_train, use_copy)

CKPTS = RUN_DIR / "checkpoints"
TORCH_WRITE_FAILED = ("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                      "data/0: file write failed")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("train_faults"))


@pytest.fixture
def proj(base, tmp_path, monkeypatch):
    return use_copy(base, tmp_path / "p", monkeypatch)


def _failing_save(exc: BaseException):
    """A ``torch.save`` that writes part of the file, then fails as a disk filling up would."""
    def save(obj, f, *args, **kwargs):
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 part of a checkpoint")
        else:
            Path(f).write_bytes(b"PK\x03\x04 part of a checkpoint")
        raise exc
    return save


def _full_disk(path) -> SimpleNamespace:
    """``shutil.disk_usage`` of a full file system."""
    return SimpleNamespace(total=10 * 2**30, used=10 * 2**30, free=0)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((d / CKPTS).glob("*.pth"))}


def _run_id(d: Path) -> str:
    ids = [r for n, _, r in runs(d) if n == f"{RUN}-seed0"]
    assert len(ids) == 1, runs(d)
    return ids[0]


WRITE_FAILURES = {
    "os-enospc": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), False,
                  "(No space left on device: free space on that file system and run the stage again)"),
    "torch-on-a-full-disk": (RuntimeError(TORCH_WRITE_FAILED), True, "(No space left on device: 0.0 MiB free, about "),
    "torch-other": (RuntimeError(TORCH_WRITE_FAILED), False, f"(torch: {TORCH_WRITE_FAILED})"),
}


@pytest.mark.parametrize("case", list(WRITE_FAILURES))
def test_a_failed_epoch_checkpoint_write_stops_with_one_line_and_the_rerun_resumes(proj, capsys, case):
    exc, full, reason = WRITE_FAILURES[case]
    edit_params(proj, lambda p: smoke_train(p, epochs=3))  # resumes from epoch 2, then writes epoch 3
    before, run_id = _files(proj), _run_id(proj)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", _failing_save(exc))
        if full:
            mp.setattr(shutil, "disk_usage", _full_disk)
        line = one_error(*cli(capsys, "train", "--run", RUN), f"error: {CKPTS / 'epoch_003.pth'}: "
                                                              "cannot write this checkpoint ", reason)
    assert len(line) < 400
    assert _files(proj) == before  # epoch 2's checkpoint as it was; no epoch 3
    assert not leftovers(proj)
    assert not (proj / RUN_DIR / "final.pth").exists() and not (proj / RUN_DIR / "train_summary.json").exists()
    assert [s for n, s, r in runs(proj) if r == run_id] == ["FAILED"]
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    assert f"{CKPTS / 'epoch_002.pth'}: epoch 3 of 3" in (proj / RUN_DIR / "train.log").read_text()
    assert _run_id(proj) == run_id and metric_steps(proj, run_id) == [1, 2, 3]


def test_a_failed_final_checkpoint_write_leaves_no_final_outputs(proj, capsys):
    before = _files(proj)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", _failing_save(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        one_error(*cli(capsys, "train", "--run", RUN),
                  f"error: {RUN_DIR / 'final.pth'}: cannot write this final checkpoint (No space left on device")
    assert not (proj / RUN_DIR / "final.pth").exists()
    assert not (proj / RUN_DIR / "train_summary.json").exists()  # never one without the other
    assert _files(proj) == before and not leftovers(proj)
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    assert (proj / RUN_DIR / "final.pth").is_file() and (proj / RUN_DIR / "train_summary.json").is_file()


def test_a_diverging_learning_rate_stops_naming_epoch_step_and_lr(proj, capsys):
    """Epoch 1 trains at lr 0.001, then the schedule multiplies it by 1e40: epoch 2's first step moves the
    weights by about 1e37, the second step's loss overflows (lr 1000 still gives a finite loss here)."""
    edit_params(proj, lambda p: smoke_train(p, epochs=3, batch_size=4, lr_steps=[1], lr_factor=1e40))
    one_error(*cli(capsys, "train", "--run", RUN),
              f"error: run {RUN} seed 0: loss is nan at epoch 2, step 2 (lr 1e+37): training diverged; "
              "lower train.lr in params.yaml (profiles.smoke.train.lr, or the run's own train.lr) and train again")
    # epoch 1 of the new config is kept; nothing of epoch 2's weights was written
    epoch1 = torch.load(proj / CKPTS / "epoch_001.pth", map_location="cpu", weights_only=True)
    assert epoch1["config"]["train"]["lr_factor"] == 1e40
    assert all(torch.isfinite(v).all() for v in epoch1["model"].values() if v.is_floating_point())
    old = torch.load(proj / CKPTS / "epoch_002.pth", map_location="cpu", weights_only=True)
    assert old["config"]["train"]["lr_factor"] != 1e40  # the earlier configuration's, left alone
    assert not (proj / RUN_DIR / "final.pth").exists() and not leftovers(proj)


def test_weights_diverged_by_an_epochs_last_step_stop_before_validation(proj, capsys):
    """One step per epoch (38 people, batch 32): the step that diverges is an epoch's last, its loss
    (computed before the update) still finite; validation would run the diverged model."""
    edit_params(proj, lambda p: smoke_train(p, epochs=3, batch_size=32, lr_steps=[1], lr_factor=1e40))
    one_error(*cli(capsys, "train", "--run", RUN), f"error: run {RUN} seed 0: ",
              "not finite at epoch 2, step 1 (lr 1e+37): training diverged")
    assert not (proj / RUN_DIR / "final.pth").exists()
    old = torch.load(proj / CKPTS / "epoch_002.pth", map_location="cpu", weights_only=True)
    assert old["config"]["train"]["lr_factor"] != 1e40


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of two Gloo processes: only rank 1's loss is nan; both must stop, at the same step."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    run = SimpleNamespace(cfg={"name": RUN, "profile": "smoke"}, seed=0, env=train_mod.DistEnv(rank=rank, world_size=2),
                          dev=torch.device("cpu"))
    fault = train_mod.LOSS_NAN if rank == 1 else train_mod.FINITE
    try:
        train_mod._stop_if_requested(run, fault, 2, 17, 1000.0)
        outcome = "went on"
    except PipelineError as exc:
        outcome = str(exc)
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.txt").write_text(outcome)


def test_a_loss_gone_non_finite_in_one_ddp_process_stops_both(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = (f"run {RUN} seed 0: loss is nan at epoch 2, step 17 (lr 1000): training diverged; lower train.lr "
                "in params.yaml")
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text().startswith(expected)
