"""Checkpoint files a run finds on disk (pipeline.checkpoint, the resume of pipeline.engine.train): a missing
or garbage file is one named error; a foreign or mislabelled epoch checkpoint is skipped for the one before."""
from __future__ import annotations

import logging

import pytest
import torch

from pipeline.checkpoint import load_weights
from pipeline.engine.train import find_resume_checkpoint, list_checkpoints
from pipeline.errors import PipelineError


def test_missing_and_garbage_files_are_named(tmp_path):
    with pytest.raises(PipelineError) as exc:
        load_weights(tmp_path / "final.pth", "final checkpoint")
    assert str(exc.value) == f"{tmp_path / 'final.pth'}: final checkpoint not found"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage, not a torch file")
    with pytest.raises(PipelineError) as exc:
        load_weights(junk)
    assert str(exc.value) == f"{junk}: not a readable checkpoint (corrupt or not a torch file: Unsupported operand 103)"


def _state(epoch: int, **extra) -> dict:
    return {"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}, "optimizer": {}, "scheduler": {},
            "config_hash": "cfg", "code_hash": "code", **extra}


def test_resume_skips_foreign_and_mislabelled_checkpoints(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    assert list_checkpoints(ckpt) == [] and find_resume_checkpoint(ckpt, "cfg", 5, "code") == (None, None)
    ckpt.mkdir()
    torch.save(_state(1), ckpt / "epoch_001.pth")
    torch.save(_state(3), ckpt / "epoch_002.pth")                 # says epoch 3: renamed or copied
    torch.save({"model": {"w": torch.zeros(2)}}, ckpt / "epoch_003.pth")  # a bare state dict, not ours
    (ckpt / "notes.txt").write_text("not a checkpoint name")
    assert [e for e, _ in list_checkpoints(ckpt)] == [3, 2, 1]
    with caplog.at_level(logging.WARNING):
        state, path = find_resume_checkpoint(ckpt, "cfg", 5, "code")
    assert path == ckpt / "epoch_001.pth" and state["epoch"] == 1
    assert torch.equal(state["model"]["w"], torch.ones(2))
    warned = "\n".join(caplog.messages)
    assert "epoch_003.pth is unreadable (ValueError: not a training checkpoint of this pipeline)" in warned
    assert "epoch_002.pth is unreadable (ValueError: holds epoch 3)" in warned
