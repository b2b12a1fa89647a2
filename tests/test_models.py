"""Pose models: output stride 4, one heatmap per joint, demo widths, the HDM centring wrapper."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import CenteredHeatmaps, build_model


@pytest.mark.parametrize("cfg", [
    {"family": "simplebaseline", "backbone": "resnet18", "width": 0.25, "deconv_channels": 32},
    {"family": "hrnet", "backbone": "hrnet_w18_small", "width": 0.25},
])
def test_output_is_stride_4_one_map_per_joint(cfg):
    torch.manual_seed(0)
    net = build_model(cfg, 17).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 96, 64))
    assert out.shape == (2, 17, 24, 16)


def test_width_scales_the_hrnet_branches():
    narrow = build_model({"family": "hrnet", "backbone": "hrnet_w18_small", "width": 0.5}, 16)
    full = build_model({"family": "hrnet", "backbone": "hrnet_w18_small"}, 16)
    assert narrow.head.in_channels == 8 and full.head.in_channels == 16  # stride-4 branch: 16 ch in W18-small
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in full.parameters()) / 3


def test_paper_hrnet_w32_head_sits_on_the_32_channel_branch():
    net = build_model({"family": "hrnet", "backbone": "hrnet_w32"}, 17)
    assert net.head.in_channels == 32 and net.head.kernel_size == (1, 1)


def test_simplebaseline_head_is_three_deconvolutions():
    net = build_model({"family": "simplebaseline", "backbone": "resnet18", "width": 0.25}, 17)
    deconvs = [m for m in net.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconvs) == 3 and all(d.kernel_size == (4, 4) and d.out_channels == 256 for d in deconvs)


def test_unknown_family_is_a_one_line_error():
    with pytest.raises(PipelineError, match="model.family"):
        build_model({"family": "vit", "backbone": "x"}, 17)


def test_centered_heatmaps_have_zero_mean_and_a_positive_pixel():
    class Const(torch.nn.Module):
        def forward(self, x):
            return -5.0 + x[:, :1].repeat(1, 3, 1, 1) * 0.01  # an all-negative map: dead for relu

    net = CenteredHeatmaps(Const())
    out = net(torch.randn(2, 3, 6, 4))
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.zeros(2, 3), atol=1e-6)
    assert bool((out.flatten(2).amax(-1) > 0).all())
