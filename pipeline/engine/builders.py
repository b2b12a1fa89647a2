"""From a resolved run config to the objects training and evaluation need.

Keeps file names of the real dataset layouts (HRNet's) in one place: which annotation,
image folder and detection file each split uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import load_coco_people
from ..data.dataset import TopDownDataset
from ..data.mpii import load_mpii_people
from ..data.skeleton import COCO, MPII, JointSet
from ..losses import HDMLoss, JointsMSELoss
from ..models import CenteredHeatmaps, build_model

COCO_SPLITS = {
    # split: (annotation or image-info file, image folder, detection file, ground truth for scoring)
    "train": ("annotations/person_keypoints_train2017.json", "images/train2017", None,
              None),
    "val": ("annotations/person_keypoints_val2017.json", "images/val2017",
            "person_detection_results/COCO_val2017_detections_AP_H_56_person.json",
            "annotations/person_keypoints_val2017.json"),
    "test-dev": ("annotations/image_info_test-dev2017.json", "images/test2017",
                 "person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json",
                 # Real test-dev has no public ground truth (scored by the server); the synthetic
                 # test-dev ships one so the demo can fill Table 2.
                 "annotations/person_keypoints_test-dev2017.json"),
}
MPII_SPLITS = {"train": "annot/train.json", "val": "annot/valid.json"}
MPII_GT_VALID = "annot/gt_valid.mat"


def joint_set(cfg: dict[str, Any]) -> JointSet:
    return COCO if cfg["dataset"] == "coco" else MPII


def aspect_ratio(cfg: dict[str, Any]) -> float:
    w, h = cfg["data"]["input_size"]
    return w / h


def codec_name(cfg: dict[str, Any]) -> str:
    """MSE runs learn Gaussian targets; HDM runs learn from the dots directly."""
    return "gaussian" if cfg["loss"] == "mse" else "hdm"


def records(cfg: dict[str, Any], split: str, *, boxes: str = "gt") -> list[dict]:
    """Person records of one split; ``boxes`` is "gt" or "det" (COCO's person detections)."""
    root = Path(cfg["data"]["root"])
    if cfg["dataset"] == "mpii":
        return load_mpii_people(root / MPII_SPLITS[split], root / "images", aspect_ratio=aspect_ratio(cfg))
    ann, images, det, _ = COCO_SPLITS[split]
    if boxes == "gt":
        return load_coco_people(root / ann, root / images, aspect_ratio=aspect_ratio(cfg), use_gt_boxes=True)
    return load_coco_people(root / ann, root / images, aspect_ratio=aspect_ratio(cfg), use_gt_boxes=False,
                            det_file=root / det, image_thre=cfg["test"]["image_thre"])


def dataset(cfg: dict[str, Any], recs: list[dict], *, train: bool) -> TopDownDataset:
    d = cfg["data"]
    js = joint_set(cfg)
    aug = {
        "scale_factor": d["scale_factor"], "rot_factor": d["rot_factor"], "rot_prob": d["rot_prob"],
        "flip": d["flip"], "half_body_prob": d["half_body_prob"],
        "num_joints_half_body": d["num_joints_half_body"],
    }
    return TopDownDataset(recs, joint_set=js, input_size=d["input_size"], heatmap_size=d["heatmap_size"],
                          codec=codec_name(cfg), sigma=d["sigma"], train=train, aug_cfg=aug,
                          color_rgb=d["color_rgb"], seed=cfg["seed"])


def model(cfg: dict[str, Any]) -> nn.Module:
    net = build_model(cfg["model"], joint_set(cfg).num_joints)
    if cfg["loss"] == "hdm" and cfg["hdm"]["center_heatmaps"]:
        net = CenteredHeatmaps(net)
    return net


def loss(cfg: dict[str, Any]) -> nn.Module:
    if cfg["loss"] == "mse":
        return JointsMSELoss(use_target_weight=True)
    h = cfg["hdm"]
    return HDMLoss(epsilon=h["epsilon"], iterations=h["iterations"], demanders=h["demanders"],
                   dead_joints=h["dead_joints"])


def device(cfg: dict[str, Any]) -> torch.device:
    """``auto`` picks CUDA when present, so the same config runs on a laptop and a GPU node."""
    want = cfg["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        from ..errors import PipelineError

        raise PipelineError(f"profiles.{cfg['profile']}.device", "cuda requested but no CUDA device is visible")
    return torch.device(want)
