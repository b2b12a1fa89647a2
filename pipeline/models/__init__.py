"""Pose models, one small module per family (timm style); :func:`build_model` picks one."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from ..config import OUTPUT_STRIDES
from ..errors import PipelineError
from .heads import CenteredHeatmaps
from .hrformer import HRFormer, build_hrformer
from .hrnet import PoseHRNet
from .simple_baseline import SimpleBaseline

FAMILIES = ("simplebaseline", "hrnet", "hrformer")


def build_model(model_cfg: dict[str, Any], num_joints: int) -> nn.Module:
    """Build the model described by a resolved ``model`` config section.

    ``output_stride`` (optional, default 4; set by a run's ``heatmap_stride``) is refused with a
    one-line error by the families that cannot output it, rather than ignored: a model whose heatmaps
    silently stay at stride 4 would train against stride-8 targets of another size."""
    family = model_cfg["family"]
    stride = model_cfg.get("output_stride", 4)
    if family in OUTPUT_STRIDES and stride not in OUTPUT_STRIDES[family]:
        raise PipelineError("model.output_stride", f"{stride}: the {family} family outputs stride "
                                                   f"{' or '.join(map(str, OUTPUT_STRIDES[family]))} only")
    if family == "simplebaseline":
        return SimpleBaseline(model_cfg["backbone"], num_joints,
                              pretrained=model_cfg.get("pretrained", False),
                              width=model_cfg.get("width", 1.0),
                              deconv_channels=model_cfg.get("deconv_channels", 256),
                              num_deconv=model_cfg.get("num_deconv", 3),
                              deconv_kernel=model_cfg.get("deconv_kernel", 4))
    if family == "hrnet":
        return PoseHRNet(model_cfg["backbone"], num_joints, pretrained=model_cfg.get("pretrained", False),
                         width=model_cfg.get("width", 1.0), output_stride=stride)
    if family == "hrformer":
        # Our own implementation (not in timm); ImageNet weights only from a local ``weights`` file.
        return build_hrformer(model_cfg["backbone"], num_joints, width=model_cfg.get("width", 1.0),
                              drop_path_rate=model_cfg.get("drop_path_rate", 0.0),
                              pretrained=model_cfg.get("pretrained", False), weights=model_cfg.get("weights"))
    raise PipelineError("model.family", f"unknown model family {family!r} (choose from {FAMILIES})")


def pretrained_weights(model_cfg: dict[str, Any]) -> str:
    """Where a run's backbone weights come from, logged to MLflow (tag ``pretrained_weights``) so a run
    says which checkpoint it started from: ``timm:<model>.<tag>`` (timm's hub; params.yaml pins the
    tag, see pipeline/config.py), ``file:<name> sha256:<first 16 hex>`` (a local checkpoint, HRFormer)
    or ``none`` (random initialisation); ``pretrain:<path> sha256:<first 16 hex>`` for the demo's
    pretrained backbones (``model.backbone_weights``, pipeline/pretrain)."""
    pin = model_cfg.get("backbone_weights")
    if pin is not None:
        return f"pretrain:{pin['path']} sha256:{str(pin['sha256'])[:16]}"
    if not model_cfg.get("pretrained", False):
        return "none"
    if model_cfg["family"] == "hrformer":
        path = Path(model_cfg.get("weights") or "")
        if not path.is_file():
            return f"file:{path.name or '?'} (missing)"
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return f"file:{path.name} sha256:{h.hexdigest()[:16]}"
    return f"timm:{model_cfg['backbone']}"


__all__ = ["build_model", "pretrained_weights", "CenteredHeatmaps", "SimpleBaseline", "PoseHRNet", "HRFormer",
           "FAMILIES"]
