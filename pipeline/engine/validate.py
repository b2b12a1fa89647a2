"""Cheap per-epoch validation: ground-truth boxes, no flip test, no detector.

It gives the learning curves in MLflow (val AP or PCKh per epoch); the paper's protocol with
detection boxes and the flip test runs once, in the evaluation stage.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..metrics import coco as coco_metrics
from ..metrics import mpii as mpii_metrics
from . import builders
from .inference import coco_predictions, predict


def validate(net: nn.Module, cfg: dict[str, Any], val_recs: list[dict], dev: torch.device) -> dict[str, float]:
    """Returns {"AP": …} for COCO (fractions) or {"PCKh": …} for MPII (percent), scored against the
    run's held-out split (:func:`builders.holdout_split`: val, or tune for a ``split: tune`` run)."""
    pred = predict(net, cfg, val_recs, flip_test=False, dev=dev, batch_size=cfg["test"]["batch_size"])
    gt = builders.ground_truth(cfg, builders.holdout_split(cfg))
    if cfg["dataset"] == "mpii":
        return {"PCKh": mpii_metrics.pckh(pred["coords"], gt)["Mean"]}
    kept = coco_metrics.rescore_and_nms(coco_predictions(pred), in_vis_thre=cfg["test"]["in_vis_thre"],
                                        oks_thre=cfg["test"]["oks_thre"])
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "results.json"
        coco_metrics.write_results(kept, res)
        stats = coco_metrics.evaluate_keypoints(gt, res)
    return {"AP": stats["AP"]}
