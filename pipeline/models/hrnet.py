"""HRNet for pose (Sun et al., CVPR 2019): the stride-4 branch of stage 4 and a 1×1 head.

timm's HRNet with ``feature_location=''`` exposes the raw multi-resolution branches; index 1
is the highest-resolution (stride 4) branch, which equals pose-HRNet's final output
(see shared/notes/reference-facts.md). The head is a single 1×1 convolution, as the paper's.

``output_stride=8`` (a run's ``heatmap_stride: 8``, beyond the paper) averages each 2×2 block of that
branch before the head: no parameter is added or changed, so a stride-8 model has the stride-4 model's
parameter names, shapes and (for one seed) initial values, and loads the same pretrained backbone. With
pixel edges on pixel edges (docs/conventions.md) a stride-8 heatmap pixel covers exactly the 2×2
stride-4 pixels it averages, so the two heatmap grids stay aligned with the input.

``output_stride`` 2 or 1 (beyond the paper) upsample that branch bilinearly by 2× or 4× before the same
head (``align_corners=False``, no parameter): an output pixel centre ``x`` reads the stride-4 features
at ``(x + 0.5) / f − 0.5``, the pixel-edge mapping of docs/conventions.md, so these grids are aligned
too and the model again has the stride-4 model's parameters.
"""
from __future__ import annotations

import copy
from typing import Any

import timm
import torch
from timm.models.hrnet import HighResolutionNetFeatures, cfg_cls
from torch import nn
from torch.nn import functional as F

from ..errors import PipelineError
from .registry import Architecture, register_architecture

# The strides of the stride-4 branch as it is (4), pooled (8) or upsampled (2, 1): see above.
OUTPUT_STRIDES = (1, 2, 4, 8)


def _narrow_hrnet(backbone: str, width: float) -> nn.Module:
    """The same HRNet topology with every branch's channel count scaled (demo sizes); ``backbone`` may
    carry a weights tag (``hrnet_w32.ms_in1k``), which names no topology."""
    cfg = copy.deepcopy(cfg_cls[backbone.split(".")[0]])
    cfg["stem_width"] = max(8, int(cfg["stem_width"] * width))
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        cfg[stage]["num_channels"] = tuple(max(4, int(c * width)) for c in cfg[stage]["num_channels"])
    return HighResolutionNetFeatures(cfg, feature_location="", out_indices=(1,))


class PoseHRNet(nn.Module):
    """timm HRNet backbone (stride-4 branch) + 1×1 convolution to ``num_joints`` heatmaps."""

    def __init__(self, backbone: str, num_joints: int, *, pretrained: bool = False,
                 width: float = 1.0, output_stride: int = 4) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise PipelineError("model.output_stride", f"{output_stride}: HRNet outputs stride "
                                                       f"{', '.join(map(str, OUTPUT_STRIDES))} only")
        if backbone.split(".")[0] not in cfg_cls:  # timm's own error (KeyError, "Unknown model") lists nothing
            raise PipelineError("model.backbone", f"unknown HRNet backbone {backbone!r} "
                                                  f"(choose from {', '.join(sorted(cfg_cls))})")
        if width != 1.0:
            if pretrained:
                raise PipelineError("model.width", "pretrained HRNet weights exist only for width 1.0")
            self.backbone = _narrow_hrnet(backbone, width)
        else:
            self.backbone = timm.create_model(backbone, pretrained=pretrained, features_only=True,
                                              feature_location="", out_indices=(1,))
        in_ch = self.backbone.feature_info.channels()[0]
        # a functional pool / upsampling in forward(), no module: every stride has the same state dict
        self.output_stride = output_stride
        self.head = nn.Conv2d(in_ch, num_joints, kernel_size=1)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)[0]
        if self.output_stride == 8:
            feats = F.avg_pool2d(feats, 2)
        elif self.output_stride < 4:
            feats = F.interpolate(feats, scale_factor=4 // self.output_stride, mode="bilinear",
                                  align_corners=False)
        return self.head(feats)


def build(model_cfg: dict[str, Any], num_joints: int) -> PoseHRNet:
    """The family's builder from a resolved ``model`` config."""
    return PoseHRNet(model_cfg["backbone"], num_joints, pretrained=model_cfg.get("pretrained", False),
                     width=model_cfg.get("width", 1.0), output_stride=model_cfg.get("output_stride", 4))


# The head reads the stride-4 branch, the only map of the backbone's features (index 0).
ARCHITECTURE = register_architecture(Architecture("hrnet", build, output_strides=OUTPUT_STRIDES, feature_index=0))
