"""The ``pretrain`` stage: train one architecture's backbone on the shape-scene task, write the weights.

The network is the pose model's own backbone (built by :func:`pipeline.models.build_model` from the
architecture's ``model`` section, so the keys and shapes are exactly those the pose model loads),
followed by a small neck on the feature map the pose head reads (HRNet/HRFormer: the
stride-4 branch; SimpleBaseline: the last ResNet stage), :class:`PretrainNeck`, predicting the
segmentation map and the image-level labels of :mod:`.shapes`. The loss is the
pixel-mean segmentation cross-entropy plus the two image-level cross-entropies. The neck is thrown
away, like an ImageNet classifier.

Reproducible: one CPU thread (``pretrain.threads``), every random stream seeded from
``pretrain.seed`` (the model's initialisation, the images, the batch order), fresh images every epoch
(image streams keyed by epoch and index, :func:`.shapes.make_split`). With the same torch version and
thread count the weights are bit-identical (tests/test_pretrain.py checks it on the smoke profile).
"""
from __future__ import annotations

import json
import logging
import platform
import random
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import timm
import torch
from torch import nn

from ..config import Paths
from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD
from ..models import architecture, build_model
from ..progress import EpochClock
from ..tracking import flatten, open_run
from . import shapes, spec, weights

log = logging.getLogger(__name__)

class PretrainNeck(nn.Module):
    """Pose-feature map → (segmentation logits at the input resolution, image-level logits).

    A 3×3 convolution (BN, ReLU) shared by a 1×1 segmentation classifier, upsampled bilinearly to the
    input size (FCN-style: SimpleBaseline's stride-32 map segments coarsely, as FCN-32s does), and by
    the image-level classifier on average- and max-pooled features. The neck is small on purpose: the
    backbone must provide the features (edges, corners, oriented texture, blobs, regions) on the very
    map the pose head reads.
    """

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.seg = nn.Conv2d(hidden, shapes.SEG_CLASSES, 1)
        self.fc = nn.Linear(2 * hidden, sum(shapes.TASKS.values()))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.proj(x)
        seg = nn.functional.interpolate(self.seg(y), size=size, mode="bilinear", align_corners=False)
        return seg, self.fc(torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1))


class Pretrainer(nn.Module):
    """Backbone + neck; ``backbone`` is the pose model's submodule of the same name."""

    def __init__(self, backbone: nn.Module, family: str, hidden: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.index = architecture(family).feature_index  # the map the pose head reads; the neck reads it too
        width, height = input_size
        backbone.eval()  # a probe of the feature width: eval mode leaves the BN statistics untouched
        with torch.no_grad():
            channels = self.features(torch.zeros(1, 3, height, width)).shape[1]
        backbone.train()
        self.neck = PretrainNeck(channels, hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[self.index]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.neck(self.features(x), (x.shape[2], x.shape[3]))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W, normalised as the pose datasets normalise their crops."""
    x = (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# Weight of each image-level cross-entropy against the segmentation's: at 1 the two image-level tasks
# (their losses start near ln 6 and ln 5, the segmentation's near 0.5) took over the first epochs and the
# segmentation stayed all background (measured, HRNet-W32-demo, 3 epochs).
IMAGE_TASK_WEIGHT = 0.25


def losses(out: tuple[torch.Tensor, torch.Tensor], masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-mean segmentation cross-entropy plus the weighted image-level cross-entropies."""
    seg, logits = out
    total = nn.functional.cross_entropy(seg, masks)
    start = 0
    for t, n in enumerate(shapes.TASKS.values()):
        total = total + IMAGE_TASK_WEIGHT * nn.functional.cross_entropy(logits[:, start:start + n], labels[:, t])
        start += n
    return total


def batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled full batches (the remainder is dropped: BN statistics stay stable)."""
    order = torch.randperm(n, generator=gen)
    for i in range(0, n - batch_size + 1, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def evaluate(model: Pretrainer, x: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 256) -> dict[str, float]:
    """Held-out loss; mean IoU and pixel accuracy of the segmentation; the accuracy of the shape kind on
    the shape's pixels (chance 1/8 for a model that knows the pixel is on the shape); the accuracy of
    each image-level task."""
    model.eval()
    k = shapes.SEG_CLASSES
    confusion = torch.zeros(k, k, dtype=torch.int64)
    correct = torch.zeros(len(shapes.TASKS))
    loss_sum = 0.0
    for i in range(0, len(x), batch_size):
        m, y = masks[i:i + batch_size], labels[i:i + batch_size]
        out = model(x[i:i + batch_size])
        loss_sum += losses(out, m, y).item() * len(y)
        pred = out[0].argmax(dim=1)
        confusion += torch.bincount(m.reshape(-1) * k + pred.reshape(-1), minlength=k * k).reshape(k, k)
        start = 0
        for t, n in enumerate(shapes.TASKS.values()):
            correct[t] += (out[1][:, start:start + n].argmax(dim=1) == y[:, t]).sum()
            start += n
    conf = confusion.double()
    tp = conf.diag()
    present = conf.sum(dim=1) > 0
    iou = tp / (conf.sum(dim=0) + conf.sum(dim=1) - tp).clamp(min=1)
    kinds = slice(1, len(shapes.SHAPES) + 1)
    out = {"val_loss": loss_sum / len(x), "val_miou": iou[present].mean().item(),
           "val_pixel_acc": (tp.sum() / conf.sum()).item(),
           "val_acc_shape_pixels": (tp[kinds].sum() / conf[kinds].sum().clamp(min=1)).item()}
    out.update({f"val_acc_{t}": (c / len(x)).item() for t, c in zip(shapes.TASKS, correct)})
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(cfg: dict[str, Any]) -> Pretrainer:
    """The pose model's backbone (initialised exactly as a pose run initialises it) plus the neck."""
    p = cfg["pretrain"]
    pose = build_model(cfg["model"], num_joints=17)  # the head is discarded; its size does not matter
    return Pretrainer(pose.backbone, cfg["model"]["family"], p["neck_channels"], tuple(p["image_size"]))


def fit(cfg: dict[str, Any], *, on_epoch=None) -> tuple[Pretrainer, list[dict[str, float]]]:
    """Train on fresh images every epoch; returns the model and the per-epoch history."""
    p = cfg["pretrain"]
    seed, size = p["seed"], tuple(p["image_size"])
    seed_everything(seed)
    model = build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, p["lr_steps"], p["lr_factor"])
    val_images, val_masks, val_labels = shapes.make_split(seed, "val", 0, p["val_images"], size)
    val = (to_tensor(val_images), torch.from_numpy(val_masks).long(), torch.from_numpy(val_labels))
    gen = torch.Generator().manual_seed(seed)
    history = []
    clock = EpochClock(1, p["epochs"])
    for epoch in range(1, p["epochs"] + 1):
        t0 = time.time()
        images, masks, labels = shapes.make_split(seed, "train", epoch, p["train_images"], size)
        x, m, y = to_tensor(images), torch.from_numpy(masks).long(), torch.from_numpy(labels)
        model.train()
        total, count = 0.0, 0
        lr = opt.param_groups[0]["lr"]
        for idx in batches(len(x), p["batch_size"], gen):
            loss = losses(model(x[idx]), m[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        sched.step()
        row = {"train_loss": total / max(count, 1), "lr": lr, "epoch_time_s": time.time() - t0,
               **evaluate(model, *val)}
        history.append({"epoch": epoch, **row})
        speed = {"images_per_s": count / max(row["epoch_time_s"], 1e-9)}  # the log line's, not the history's
        log.info("pretrain %s %s  %s", cfg["arch"], clock.status(epoch),
                 "  ".join(f"{k}={v:.4g}" for k, v in {**row, **speed}.items()))
        if on_epoch is not None:
            on_epoch(epoch, row)
    return model, history


def chance_levels(cfg: dict[str, Any]) -> dict[str, float]:
    """What guessing scores on the held-out metrics: the image-level tasks and the shape kind on its
    pixels uniformly at random, the segmentation as all background (its mIoU and pixel accuracy)."""
    p = cfg["pretrain"]
    masks = shapes.make_split(p["seed"], "val", 0, p["val_images"], tuple(p["image_size"]))[1]
    background = float(np.mean(masks == 0))
    out = {f"val_acc_{t}": 1.0 / n for t, n in shapes.TASKS.items()}
    out.update({"val_acc_shape_pixels": 1.0 / len(shapes.SHAPES), "val_pixel_acc": background,
                "val_miou": background / len(np.unique(masks))})
    return out


def up_to_date(out_dir: Path, cfg: dict[str, Any]) -> bool:
    """True when ``out_dir`` holds weights of this exact pretrain config, intact (sha256 as recorded)."""
    meta_path, weights_path = out_dir / "backbone.json", out_dir / "backbone.pth"
    if not (meta_path.is_file() and weights_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return meta.get("config") == cfg and meta.get("sha256") == weights.sha256_file(weights_path)


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__, "python": platform.python_version(), "machine": platform.machine()}


def _no_pretraining(profile: str, arch: str, out_dir: Path, params: dict[str, Any]) -> Path:
    """Profiles without a ``pretrain`` section (paper): record where the backbone comes from instead."""
    model = spec.model_section(params, profile, arch)
    source = "imagenet (model.pretrained: true)" if model.get("pretrained") else "random initialisation"
    weights.write_outputs(out_dir, None, {"profile": profile, "arch": arch, "pretrained": False,
                                          "backbone_source": source,
                                          "note": f"profiles.{profile} has no pretrain section"})
    log.info("%s/%s: no pretraining in this profile (backbone: %s)", profile, arch, source)
    return out_dir


def pretrain_arch(params: dict[str, Any], profile: str, arch: str, *, tracking_uri: str, experiment: str,
                  force: bool = False) -> Path:
    """The stage: (re)make ``pretrained/<profile>/<arch>/`` unless it is up to date; returns the folder."""
    out_dir = Paths(profile).pretrained_dir(arch)
    if spec.section(params, profile) is None:
        return _no_pretraining(profile, arch, out_dir, params)
    cfg = spec.pretrain_config(params, profile, arch)
    if not force and up_to_date(out_dir, cfg):
        log.info("%s is up to date (same pretrain config, sha256 as recorded): nothing to do "
                 "(--force retrains)", out_dir)
        return out_dir
    p = cfg["pretrain"]
    torch.set_num_threads(p["threads"])
    t0 = time.time()
    tags = {"stage": "pretrain", "profile": profile, "arch": arch, "evaluated": "false"}
    with open_run(tracking_uri, experiment, run_name=f"pretrain_{arch}", tags=tags) as mlflow:
        run_id = mlflow.active_run().info.run_id
        mlflow.log_params({**flatten(cfg), "threads_used": torch.get_num_threads(), **_versions()})
        model, history = fit(cfg, on_epoch=lambda e, row: mlflow.log_metrics(row, step=e))
        data = weights.serialise(model.backbone.state_dict())
        final = {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "epoch_time_s")}
        meta = {
            "profile": profile, "arch": arch, "pretrained": True, "weights": "backbone.pth",
            "sha256": weights.sha256_bytes(data), "bytes": len(data),
            "num_parameters": sum(v.numel() for v in model.backbone.state_dict().values()
                                  if v.is_floating_point()),
            "config": cfg, "seed": p["seed"], "epochs": p["epochs"], "threads": p["threads"],
            "final": final, "chance": chance_levels(cfg),
            "history": history, "train_time_s": round(time.time() - t0, 1), "versions": _versions(),
            "mlflow_run_id": run_id, "mlflow_experiment": experiment,
            "command": f"python -m pipeline --profile {profile} pretrain --arch {arch} --force",
        }
        mlflow.log_metrics({"final_" + k: v for k, v in final.items()})
        mlflow.log_dict(meta, "backbone.json")
        mlflow.set_tag("weights_sha256", meta["sha256"])
        weights.write_outputs(out_dir, data, meta)
    pin = spec.pin(params, profile, arch)
    if pin is not None and pin["sha256"] != meta["sha256"]:
        log.warning("%s: sha256 %s is not the pinned %s: set %s.sha256 to it", out_dir / "backbone.pth",
                    meta["sha256"], pin["sha256"], spec.pin_key(profile, arch))
    log.info("pretrained %s in %.0f s: held-out %s (chance %s) -> %s", arch, meta["train_time_s"],
             {k: round(v, 3) for k, v in final.items()}, meta["chance"], out_dir)
    return out_dir
