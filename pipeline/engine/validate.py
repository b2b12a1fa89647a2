"""Cheap per-epoch validation: ground-truth boxes, no flip test, no detector.

It gives the learning curves in MLflow (val AP or PCKh per epoch); the paper's protocol with
detection boxes and the flip test runs once, in the evaluation stage.

Beside the accuracy, the same pass measures the mechanism behind a run's failure or success on the
network's own heatmaps, for every loss alike so that losses can be compared epoch by epoch (see
:class:`pipeline.metrics.diagnostics.MechanismTally`): ``pos_share``, ``gt_nonpos_share``,
``sep_ratio`` (and ``sep_ratio.<pair>``), ``collapsed_pairs``, ``joint_err`` (and
``joint_err.<joint>``), in heatmap pixels of the validation crops. They read each batch's heatmaps
as it passes (no second forward pass, no heatmap kept); undefined values (e.g. no person with both
sides of a pair visible) are left out, as MLflow takes no NaN.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..metrics import coco as coco_metrics
from ..metrics import diagnostics
from ..metrics import mpii as mpii_metrics
from . import builders
from .inference import coco_predictions, predict


def validate(net: nn.Module, cfg: dict[str, Any], val_recs: list[dict], dev: torch.device) -> dict[str, float]:
    """``{"AP": …}`` for COCO (fractions) or ``{"PCKh": …}`` for MPII (percent), scored against the run's
    held-out split (:func:`builders.holdout_split`: val, or tune for a ``split: tune`` run), then the
    mechanism measurements (names without the ``val_`` / ``tune_`` prefix the training log adds)."""
    tally = diagnostics.MechanismTally()

    def observe(batch: dict[str, Any], heat: torch.Tensor) -> None:
        tally.add(heat.cpu().numpy(), batch["keypoints"].numpy(), batch["weight"].numpy())

    pred = predict(net, cfg, val_recs, flip_test=False, dev=dev, batch_size=cfg["test"]["batch_size"],
                   on_batch=observe)
    out = {**_accuracy(cfg, pred), **mechanism(cfg, tally, pred["heatmap_coords"])}
    return {k: v for k, v in out.items() if not math.isnan(v)}


def mechanism(cfg: dict[str, Any], tally: diagnostics.MechanismTally, pred_hm: np.ndarray) -> dict[str, float]:
    """The tally's numbers with the run's joint and pair names."""
    js = builders.joint_set(cfg)
    return tally.summary(pred_hm, js.joints, js.flip_pairs)


def _accuracy(cfg: dict[str, Any], pred: dict[str, Any]) -> dict[str, float]:
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
