"""Evaluation-stage measurements of why a run scores what it scores, on its own val heatmaps (ground-
truth boxes, the raw unflipped network output, i.e. what the loss saw in training). They ride along
the evaluation's val prediction pass (:func:`pipeline.engine.inference.predict`'s ``on_batch``): no
second forward pass.

- :data:`pipeline.metrics.consistency.CONSISTENCY_FILE`: per person, the run's own training loss,
  its OKS (COCO) or PCKh (MPII) and its mean joint error (Sec. 4's loss–metric consistency);
- :data:`CONVERGENCE_FILE` (HDM runs with sub-pixel demanders): Sinkhorn iterations needed per
  tolerance on the first :data:`CONVERGENCE_PEOPLE` people's weighted heatmaps (Table 5's claim):
  ``{"tolerances", "iterations_median", "iterations_p95", "iterations_max", "cap", "heatmaps",
  "epsilon_effective", "suppliers", "dead_heatmaps_skipped"}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..data.skeleton import COCO_SIGMAS
from ..data.transforms import heatmap_to_image
from ..losses.sinkhorn import iterations_to_tolerance, subpixel_demanders
from ..metrics import consistency, diagnostics
from ..tracking.metric_names import metric_key
from . import builders
from .train import compute_loss

CONVERGENCE_FILE = "sinkhorn_convergence.json"
CONVERGENCE_PEOPLE = 200  # bounds the cost: ~3,400 COCO heatmaps
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-6)


def wants_convergence(cfg: dict[str, Any]) -> bool:
    """Only HDM's sub-pixel demanders iterate (the naive single demander has a closed form)."""
    return cfg["loss"] == "hdm" and builders.with_hdm_defaults(cfg["hdm"]).get("demanders") == "subpixel"


class ValCollector:
    """``on_batch`` hook: per person the loss on its own, the decoded raw heatmaps, the crop's ground
    truth; the first ``keep_people`` people's heatmaps when the convergence is to be measured."""

    def __init__(self, cfg: dict[str, Any], dev: torch.device, keep_people: int = 0) -> None:
        self.cfg, self.dev = cfg, dev
        self.crit = builders.loss(cfg).to(dev)
        self.codec = builders.codec(cfg)
        self.keep_people = keep_people
        self.loss: list[float] = []
        self.coords: list[np.ndarray] = []
        self.keypoints: list[np.ndarray] = []
        self.weight: list[np.ndarray] = []
        self.center: list[np.ndarray] = []
        self.scale: list[np.ndarray] = []
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._kept_n = 0

    def __call__(self, batch: dict[str, Any], heat: torch.Tensor) -> None:
        weight = batch["weight"]
        with torch.no_grad():
            per_person = compute_loss(self.crit, heat, batch, self.cfg, self.dev, per_sample=True)
        per_person = per_person.double().cpu().numpy()
        self.loss.extend(np.where(weight.reshape(len(heat), -1).sum(1).numpy() > 0, per_person, np.nan).tolist())
        heat_cpu = heat.cpu()
        xy, _ = self.codec.decode(heat_cpu)
        self.coords.append(np.asarray(xy, dtype=np.float64))
        self.keypoints.append(batch["keypoints"].numpy().astype(np.float64))
        self.weight.append(weight.numpy().astype(np.float64))
        self.center.append(batch["center"].numpy())
        self.scale.append(batch["scale"].numpy())
        take = min(self.keep_people - self._kept_n, len(heat))
        if take > 0:
            self.kept.append((heat_cpu[:take].clone(), batch["keypoints"][:take], weight[:take]))
            self._kept_n += take


def consistency_arrays(cfg: dict[str, Any], col: ValCollector, recs: list[dict],
                       gt_valid: Path | None) -> dict[str, np.ndarray]:
    """The arrays of :data:`~pipeline.metrics.consistency.CONSISTENCY_FILE` (people with at least one
    weighted joint, in record order)."""
    k = builders.joint_set(cfg).num_joints
    if not recs:
        return {f: np.zeros(0) for f in consistency.FIELDS}
    xy_hm, kp, w = np.concatenate(col.coords), np.concatenate(col.keypoints), np.concatenate(col.weight)
    xy_img = heatmap_to_image(xy_hm, np.concatenate(col.center), np.concatenate(col.scale),
                              cfg["data"]["heatmap_size"], convention=builders.convention(cfg))
    n = len(recs)
    if cfg["dataset"] == "coco":
        gt = np.stack([r["joints"] for r in recs]).astype(np.float64).reshape(n, k, 2)
        vis = np.stack([r["vis"] for r in recs])
        oks = consistency.object_keypoint_similarity(xy_img, gt, vis, np.array([r["area"] for r in recs]),
                                                     COCO_SIGMAS)
        pckh = np.full(n, np.nan)
    else:
        oks = np.full(n, np.nan)
        pckh = consistency.person_pckh(xy_img, gt_valid)
    keep = (w > 0).any(1)
    return {"image_id": np.array([int(r["image_id"]) for r in recs], dtype=np.int64)[keep],
            "loss": np.asarray(col.loss, dtype=np.float64)[keep], "oks": oks[keep], "pckh": pckh[keep],
            "joint_err": consistency.mean_joint_error(xy_hm, kp, w)[keep]}


def _suppliers(h: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, dead)`` of flattened heatmaps ``(J, N)``: relu(h)/sum (Eq. 3) or a softmax over pixels."""
    if kind == "softmax":
        return torch.softmax(h, dim=-1), torch.zeros(len(h), dtype=torch.bool)
    r = torch.relu(h)
    total = r.sum(-1, keepdim=True)
    dead = total[:, 0] <= 0
    return r / torch.where(total > 0, total, torch.ones_like(total)), dead


def convergence(cfg: dict[str, Any], col: ValCollector) -> dict[str, Any]:
    """Sinkhorn iterations per tolerance on the kept heatmaps' weighted joints, run as the loss runs
    them (the run's effective epsilon, its iteration cap, float32 like training)."""
    hdm = builders.with_hdm_defaults(cfg["hdm"])
    kind = hdm.get("suppliers", "relu")
    crit = col.crit
    cap, eps = int(crit.iterations), float(crit.epsilon_effective)
    h_all = [(h.reshape(h.shape[0] * h.shape[1], -1), kp.reshape(-1, 2), w.reshape(-1)) for h, kp, w in col.kept]
    height, width = col.kept[0][0].shape[-2:] if col.kept else (1, 1)
    h = torch.cat([x[0] for x in h_all]) if h_all else torch.zeros(0, 1)
    kp = torch.cat([x[1] for x in h_all]) if h_all else torch.zeros(0, 2)
    w = torch.cat([x[2] for x in h_all]) if h_all else torch.zeros(0)
    used = w > 0
    a, dead = _suppliers(h[used].float(), kind)
    live = ~dead
    counts = np.zeros((0, len(TOLERANCES)))
    if bool(live.any()):
        pos, mass = subpixel_demanders(kp[used][live].float())
        counts = iterations_to_tolerance(a[live].to(col.dev), pos.to(col.dev), mass.to(col.dev), int(height),
                                         int(width), eps, cap, list(TOLERANCES)).cpu().numpy()
    out = diagnostics.convergence_summary(counts, TOLERANCES, cap, eps)
    out.update(suppliers=kind, dead_heatmaps_skipped=int(dead.sum()))
    return out


def write_outputs(cfg: dict[str, Any], col: ValCollector, recs: list[dict], gt_valid: Path | None,
                  stage: Path) -> dict[str, float]:
    """Write the files into the evaluation's staging folder; the MLflow metrics they give."""
    arrays = consistency_arrays(cfg, col, recs, gt_valid)
    consistency.save_consistency(stage / consistency.CONSISTENCY_FILE, arrays)
    if wants_convergence(cfg):
        io.write_json(stage / CONVERGENCE_FILE, convergence(cfg, col))
    return {metric_key("val_consistency", "n_people"): float(len(arrays["image_id"]))}


def collector(cfg: dict[str, Any], dev: torch.device) -> ValCollector:
    """The hook for the val pass of a run's evaluation."""
    return ValCollector(cfg, dev, keep_people=CONVERGENCE_PEOPLE if wants_convergence(cfg) else 0)
