"""SimpleBaseline (Xiao et al., ECCV 2018): a ResNet backbone, three deconvolutions, a 1×1 head.

The backbone comes from timm (any ResNet: ``resnet152`` for the paper, ``resnet18`` for the
demo); the head is the paper's: ``num_deconv`` × (ConvTranspose2d 4×4 stride 2, BN, ReLU) with
256 channels, then a 1×1 convolution to one heatmap per joint. Output stride 4.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from ..errors import PipelineError
from .registry import Architecture, register_architecture


class SimpleBaseline(nn.Module):
    """ResNet + deconvolution head producing ``num_joints`` heatmaps at 1/4 input resolution."""

    def __init__(self, backbone: str, num_joints: int, *, pretrained: bool = False, width: float = 1.0,
                 deconv_channels: int = 256, num_deconv: int = 3, deconv_kernel: int = 4) -> None:
        super().__init__()
        if not (backbone.startswith("resnet") and timm.is_model(backbone)):
            known = ", ".join(m for m in timm.list_models("resnet*") if m.replace("resnet", "").isdigit())
            raise PipelineError("model.backbone", f"unknown SimpleBaseline backbone {backbone!r} "
                                                  f"(a timm ResNet: {known})")
        if pretrained and width != 1.0:
            raise PipelineError("model.width", "pretrained ResNet weights exist only for width 1.0")
        kwargs = {}
        if width != 1.0:
            # A narrower ResNet of the same depth (demo sizes): every stage's width scaled.
            kwargs = dict(channels=tuple(max(8, int(c * width)) for c in (64, 128, 256, 512)),
                          stem_width=max(8, int(64 * width)))
        # The last stage (stride 32) feeds the deconvolutions, as in the paper.
        self.backbone = timm.create_model(backbone, pretrained=pretrained, features_only=True,
                                          out_indices=(-1,), **kwargs)
        in_ch = self.backbone.feature_info.channels()[-1]
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[deconv_kernel]
        layers: list[nn.Module] = []
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(in_ch, deconv_channels, deconv_kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            in_ch = deconv_channels
        self.deconv = nn.Sequential(*layers)
        self.head = nn.Conv2d(in_ch, num_joints, kernel_size=1)
        self._init_head()

    def _init_head(self) -> None:
        # As the reference: deconvolutions N(0, 0.001), BN (1, 0), head N(0, 0.001) with zero bias.
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.deconv(self.backbone(x)[-1]))


def build(model_cfg: dict[str, Any], num_joints: int) -> SimpleBaseline:
    """The family's builder from a resolved ``model`` config (the head's defaults are the paper's)."""
    return SimpleBaseline(model_cfg["backbone"], num_joints, pretrained=model_cfg.get("pretrained", False),
                          width=model_cfg.get("width", 1.0), deconv_channels=model_cfg.get("deconv_channels", 256),
                          num_deconv=model_cfg.get("num_deconv", 3), deconv_kernel=model_cfg.get("deconv_kernel", 4))


# The deconvolutions read the backbone's last map (stride 32); stride 4 is the only output.
ARCHITECTURE = register_architecture(Architecture("simplebaseline", build, output_strides=(4,), feature_index=-1))
