"""Where a run's evaluation keeps the per-image (COCO) or per-person (MPII) data that the report's
paired bootstrap resamples: ``<eval_dir>/<split>.boot.npz`` (split: coco_val, coco_testdev, mpii_val)."""
from __future__ import annotations

from pathlib import Path


def bootstrap_file(eval_dir: str | Path, split: str) -> Path:
    return Path(eval_dir) / f"{split}.boot.npz"
