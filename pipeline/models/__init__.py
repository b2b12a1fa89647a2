"""Pose models, one small module per family (timm style), each registered by name
(:mod:`.registry`); :func:`build_model` looks the run's family up."""
from __future__ import annotations

from typing import Any

from torch import nn

from .heads import CenteredHeatmaps
from .hrformer import HRFormer
from .hrnet import PoseHRNet
from .registry import (Architecture, architecture, architecture_names, check_output_stride, register_architecture,
                       timm_weights)
from .simple_baseline import SimpleBaseline


def build_model(model_cfg: dict[str, Any], num_joints: int) -> nn.Module:
    """Build the model described by a resolved ``model`` config section, by its registered family.

    ``output_stride`` (optional, default 4; set by a run's ``heatmap_stride``) is refused with a
    one-line error by the families that cannot output it (:func:`check_output_stride`)."""
    arch = architecture(model_cfg["family"])
    check_output_stride(arch, model_cfg.get("output_stride", 4))
    return arch.build(model_cfg, num_joints)


def pretrained_weights(model_cfg: dict[str, Any]) -> str:
    """Where a run's backbone weights come from, logged to MLflow (tag ``pretrained_weights``) so a run
    says which checkpoint it started from: the family's ``weights_source`` (``timm:<model>.<tag>``,
    timm's hub, params.yaml pins the tag; ``file:<name> sha256:<first 16 hex>`` for a local checkpoint,
    HRFormer) or ``none`` (random initialisation); ``pretrain:<path> sha256:<first 16 hex>`` for the
    demo's pretrained backbones (``model.backbone_weights``, pipeline/pretrain)."""
    pin = model_cfg.get("backbone_weights")
    if pin is not None:
        return f"pretrain:{pin['path']} sha256:{str(pin['sha256'])[:16]}"
    if not model_cfg.get("pretrained", False):
        return "none"
    return architecture(model_cfg["family"]).weights_source(model_cfg)


__all__ = ["build_model", "pretrained_weights", "CenteredHeatmaps", "SimpleBaseline", "PoseHRNet", "HRFormer",
           "Architecture", "architecture", "architecture_names", "check_output_stride", "register_architecture",
           "timm_weights"]
