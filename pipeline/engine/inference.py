"""Top-down inference: crop each person box, run the model (optionally with the flip test),
decode the heatmaps with the run's codec and map the joints back to image coordinates."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..codecs import flip as flip_codec
from ..codecs import get_codec
from ..data.transforms import heatmap_to_image
from . import builders


@torch.no_grad()
def predict(net: nn.Module, cfg: dict[str, Any], recs: list[dict], *, flip_test: bool,
            dev: torch.device, batch_size: int, progress: bool = False, desc: str = "predict"
            ) -> dict[str, np.ndarray]:
    """Predict every record; returns image-space ``coords`` (N,K,2), ``scores`` (N,K) and the
    records' ``box_score``, ``area``, ``image_id`` arrays, in record order, and ``peak`` (N,K): each
    heatmap's largest value (≤ 0: a dead heatmap, see :mod:`pipeline.metrics.diagnostics`)."""
    ds = builders.dataset(cfg, recs, train=False)
    codec = get_codec(builders.codec_name(cfg))
    flip_index = builders.joint_set(cfg).flip_index()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=cfg["train"]["workers"])
    net.eval().to(memory_format=torch.channels_last)
    coords, scores, centers, scales, peaks = [], [], [], [], []
    box_scores, areas, image_ids = [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=2.0):
        images = batch["image"].to(dev, non_blocking=True, memory_format=torch.channels_last)
        heat = net(images).float()
        if flip_test:
            heat_f = net(flip_codec.flip_image_batch(images)).float()
            heat = 0.5 * (heat + flip_codec.flip_back(heat_f, flip_index))
        peaks.append(heat.amax(dim=(-2, -1)).cpu().numpy().astype(np.float64))
        xy, sc = codec.decode(heat.cpu())
        coords.append(np.asarray(xy, dtype=np.float64))
        scores.append(np.asarray(sc, dtype=np.float64))
        centers.append(batch["center"].numpy())
        scales.append(batch["scale"].numpy())
        box_scores.append(batch["box_score"].numpy())
        areas.append(batch["area"].numpy())
        image_ids.append(batch["image_id"].numpy())
    if not coords:
        k = builders.joint_set(cfg).num_joints
        return {"coords": np.zeros((0, k, 2)), "scores": np.zeros((0, k)), "box_score": np.zeros(0),
                "area": np.zeros(0), "image_id": np.zeros(0, dtype=np.int64), "center": np.zeros((0, 2)),
                "scale": np.zeros((0, 2)), "peak": np.zeros((0, k))}
    c = np.concatenate(centers)
    s = np.concatenate(scales)
    xy_img = heatmap_to_image(np.concatenate(coords), c, s, cfg["data"]["heatmap_size"])
    return {"coords": xy_img, "scores": np.concatenate(scores), "box_score": np.concatenate(box_scores),
            "area": np.concatenate(areas), "image_id": np.concatenate(image_ids), "center": c, "scale": s,
            "peak": np.concatenate(peaks)}


def coco_predictions(pred: dict[str, np.ndarray]) -> list[dict]:
    """Per-person dicts in the shape :func:`pipeline.metrics.coco.rescore_and_nms` expects.

    ``area`` is the crop box area (scale·200 squared product), as HRNet uses for OKS-NMS.
    """
    out = []
    for i in range(len(pred["image_id"])):
        kp = np.concatenate([pred["coords"][i], pred["scores"][i][:, None]], axis=1)
        sw, sh = pred["scale"][i]
        out.append({"image_id": int(pred["image_id"][i]), "keypoints": kp,
                    "box_score": float(pred["box_score"][i]), "area": float(sw * 200.0 * sh * 200.0),
                    "center": pred["center"][i], "scale": pred["scale"][i]})
    return out
