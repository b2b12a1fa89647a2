"""Epoch checkpoints kept per run: the two newest (a paper run's 210 epochs of ResNet-152 with its
optimizer state would otherwise take 170 GB)."""
from __future__ import annotations

from pipeline.engine.train import KEEP_CHECKPOINTS, list_checkpoints, prune_checkpoints


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for epoch in range(1, 6):
        (tmp_path / f"epoch_{epoch:03d}.pth").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    removed = prune_checkpoints(tmp_path, newest=4)
    assert sorted(p.name for p in removed) == ["epoch_001.pth", "epoch_002.pth"]
    # the two newest up to epoch 4, and epoch 5 of an earlier, longer attempt, stay
    assert [e for e, _ in list_checkpoints(tmp_path)] == [5, 4, 3]
    assert (tmp_path / "notes.txt").is_file() and KEEP_CHECKPOINTS == 2
    assert prune_checkpoints(tmp_path / "missing", newest=3) == []
