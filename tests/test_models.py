"""Pose models: output stride 4, one heatmap per joint, demo widths, the HDM centring wrapper."""
from __future__ import annotations

from pathlib import Path

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


# --------------------------------------------------------------------------------------------------
# The paper-size models against the reference architectures (pose-HRNet, pose-ResNet-152)

# Parameter counts of the reference pose networks for 17 COCO joints: the #Params column of the
# COCO val table in leoxiaobin/deep-high-resolution-net.pytorch's README (the HRNet paper's Table 1).
POSE_HRNET = {  # backbone: (branch channels of stage 4, reported parameters)
    "hrnet_w32": ((32, 64, 128, 256), 28.5e6),
    "hrnet_w48": ((48, 96, 192, 384), 63.6e6),
}
POSE_RESNET_152_PARAMS = 68.6e6
# pose-HRNet's experiments/coco/hrnet/w{32,48}_*.yaml: (modules, branches) per stage, 4 blocks per branch
HRNET_STAGES = {"stage2": (1, 2), "stage3": (4, 3), "stage4": (3, 4)}


@pytest.fixture(scope="module", params=sorted(POSE_HRNET))
def paper_hrnet(request):
    torch.manual_seed(0)
    return request.param, build_model({"family": "hrnet", "backbone": request.param, "pretrained": False}, 17)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _fuse_params_to(i: int, channels: tuple[int, ...]) -> int:
    """Parameters of the fuse layers that produce output branch ``i`` of an HRNet module.

    From branch ``j > i``: 1×1 conv ``c_j -> c_i`` (no bias) + BN (then nearest upsampling).
    From ``j < i``: ``i - j`` stride-2 3×3 convs (no bias), each with BN: ``c_j -> c_j`` for all
    but the last, which maps ``c_j -> c_i``. ``j == i``: identity.
    """
    ci, total = channels[i], 0
    for j, cj in enumerate(channels):
        if j > i:
            total += cj * ci + 2 * ci
        elif j < i:
            total += (i - j - 1) * (9 * cj * cj + 2 * cj) + 9 * cj * ci + 2 * ci
    return total


def test_paper_hrnet_is_the_pose_hrnet_structure(paper_hrnet):
    """hrnet_w32 / hrnet_w48 at width 1.0 have pose-HRNet's topology (Sun et al., CVPR 2019).

    Stem: two stride-2 3×3 convs (64 ch), stage 1: 4 Bottlenecks (256 ch out). Stages 2/3/4:
    1/4/3 modules of 2/3/4 branches with W·(1, 2, 4, 8) channels, 4 BasicBlocks per branch. The
    head is one 1×1 conv from the W-channel stride-4 branch to 17 heatmaps; nothing else sits
    outside the backbone.
    """
    name, net = paper_hrnet
    channels, _ = POSE_HRNET[name]
    b = net.backbone
    assert [n for n, _ in net.named_children()] == ["backbone", "head"]
    assert isinstance(net.head, torch.nn.Conv2d) and net.head.kernel_size == (1, 1)
    assert (net.head.in_channels, net.head.out_channels) == (channels[0], 17)
    assert b.feature_info.reduction() == [4] and b.feature_info.channels() == [channels[0]]

    assert (b.conv1.stride, b.conv2.stride, b.conv2.out_channels) == ((2, 2), (2, 2), 64)
    assert len(b.layer1) == 4 and all(type(m).__name__ == "Bottleneck" for m in b.layer1)
    assert b.layer1[-1].conv3.out_channels == 256
    for stage, (modules, branches) in HRNET_STAGES.items():
        mods = getattr(b, stage)
        assert len(mods) == modules, stage
        for mod in mods:
            assert len(mod.branches) == branches, stage
            for branch, ch in zip(mod.branches, channels):
                assert len(branch) == 4 and all(type(blk).__name__ == "BasicBlock" for blk in branch), stage
                assert all(blk.conv1.out_channels == blk.conv2.out_channels == ch for blk in branch), stage

    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 96, 64))  # sides divisible by 32 (the stride-32 branch)
    assert out.shape == (1, 17, 24, 16)  # output stride 4


def test_paper_hrnet_parameters_match_pose_hrnet(paper_hrnet):
    """Our parameter count minus timm's extra modules is pose-HRNet's 28.5M (W32) / 63.6M (W48) ±1 %.

    timm always builds the last module of stage 4 with multi-scale output: its ``fuse_layers[1:]``
    produce the stride-8/16/32 outputs, which the pose network never uses (pose-HRNet builds that
    module with ``multi_scale_output=False``: only ``fuse_layers[0]``). Those are the only extra
    parameters: W32 770 k, W48 1.73 M, equal to the count :func:`_fuse_params_to` derives from the
    channel widths. The classification-only parts of timm's HRNet (``incre_modules``,
    ``downsamp_modules``, ``final_layer``, the classifier) are not built with ``features_only``
    and ``feature_location=''``: the first is None, the next two absent, and ``global_pool``,
    ``head_drop`` and ``classifier`` remain as parameter-free Identity modules.
    Measured (timm 1.x, 17 joints): W32 29,306,097 - 769,984 = 28,536,113 (28.5M);
    W48 65,325,953 - 1,730,208 = 63,595,745 (63.6M).
    """
    name, net = paper_hrnet
    channels, reported = POSE_HRNET[name]
    b = net.backbone
    for part in ("incre_modules", "downsamp_modules", "final_layer"):  # None or absent
        assert getattr(b, part, None) is None, part
    for part in ("global_pool", "head_drop", "classifier"):
        assert isinstance(getattr(b, part, torch.nn.Identity()), torch.nn.Identity), part
    last = b.stage4[-1]
    assert len(last.fuse_layers) == 4
    extra = sum(_numel(last.fuse_layers[i]) for i in range(1, 4))
    assert extra == sum(_fuse_params_to(i, channels) for i in range(1, 4))
    ours = _numel(net)
    assert abs(ours - extra - reported) <= 0.01 * reported, (name, ours, extra, ours - extra)
    assert abs(ours - reported) > abs(ours - extra - reported)  # the extras are what separates the two


def test_paper_simplebaseline_is_pose_resnet_152():
    """SimpleBaseline ResNet-152 (Xiao et al., ECCV 2018): ResNet-152 without its classifier
    (Bottlenecks 3/8/36/3, 2048 ch at stride 32), three 4×4 stride-2 deconvolutions with 256
    channels (BN + ReLU each), a 1×1 conv to 17 heatmaps; output stride 4. Parameters: 68,635,473,
    the 68.6M of pose_resnet_152 in the HRNet README (timm's ``features_only`` drops ``fc``)."""
    torch.manual_seed(0)
    net = build_model({"family": "simplebaseline", "backbone": "resnet152", "pretrained": False}, 17)
    b = net.backbone
    assert [len(getattr(b, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert all(type(m).__name__ == "Bottleneck" for i in range(1, 5) for m in getattr(b, f"layer{i}"))
    assert b.feature_info.channels() == [2048] and b.feature_info.reduction() == [32]
    assert not any(n.startswith("fc.") for n, _ in b.named_parameters())
    kinds = [type(m) for m in net.deconv]
    assert kinds == [torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d, torch.nn.ReLU] * 3
    for d in net.deconv[::3]:
        assert (d.kernel_size, d.stride, d.padding, d.out_channels) == ((4, 4), (2, 2), (1, 1), 256)
    assert isinstance(net.head, torch.nn.Conv2d) and net.head.kernel_size == (1, 1)
    assert (net.head.in_channels, net.head.out_channels) == (256, 17)
    assert abs(_numel(net) - POSE_RESNET_152_PARAMS) <= 0.01 * POSE_RESNET_152_PARAMS
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 96, 64))
    assert out.shape == (1, 17, 24, 16)


def test_imagenet_weights_are_pinned_by_tag():
    """The paper profile names timm's ImageNet checkpoints by tag, so a timm upgrade cannot swap them:
    resnet152.tv_in1k is torchvision's ResNet-152 (SimpleBaseline's resnet152-b121ed2d.pth, re-saved by
    torchvision as resnet152-394f9c45.pth), not timm's default for the bare name (a1h_in1k). The tag
    reaches the built backbone (what ``pretrained: true`` would download) and the MLflow tag."""
    from timm.models import get_pretrained_cfg

    from pipeline.config import load_params, resolve_run
    from pipeline.models import pretrained_weights

    params = load_params(Path(__file__).resolve().parent.parent / "params.yaml")
    expect = {"coco_simplebaseline_mse": "resnet152.tv_in1k", "mpii_simplebaseline_hdm": "resnet152.tv_in1k",
              "coco_hrnet_w32_mse": "hrnet_w32.ms_in1k", "mpii_hrnet_w48_mse": "hrnet_w48.ms_in1k"}
    for run, name in expect.items():
        model = resolve_run(params, run, "paper")["model"]
        assert model["backbone"] == name and model["pretrained"] is True
        assert pretrained_weights(model) == f"timm:{name}"
    assert get_pretrained_cfg("resnet152.tv_in1k").url.endswith("/resnet152-394f9c45.pth")
    assert get_pretrained_cfg("resnet152").tag != "tv_in1k"  # why the bare name is refused
    # the tag is what timm builds (a small model of the same families, random weights)
    tagged = build_model({"family": "simplebaseline", "backbone": "resnet18.tv_in1k", "width": 1.0,
                          "deconv_channels": 16, "num_deconv": 1}, 17)
    assert tagged.backbone.pretrained_cfg["tag"] == "tv_in1k"
    bare = build_model({"family": "simplebaseline", "backbone": "resnet18", "deconv_channels": 16,
                        "num_deconv": 1}, 17)
    assert bare.backbone.pretrained_cfg["tag"] != "tv_in1k"
    narrow = build_model({"family": "hrnet", "backbone": "hrnet_w18_small.ms_in1k", "width": 0.25}, 17)
    assert narrow.head.in_channels == 4  # a tag names weights, not a topology
    assert pretrained_weights({"family": "hrnet", "backbone": "hrnet_w18_small", "pretrained": False}) == "none"


def test_hrformer_weights_are_identified_by_file_hash(tmp_path):
    """HRFormer's checkpoint is a local file (not in timm): the run is tagged with its content hash."""
    from pipeline.models import pretrained_weights

    a, b = tmp_path / "hrformer_base.pth", tmp_path / "other.pth"
    a.write_bytes(b"weights")
    b.write_bytes(b"weight5")
    cfg = {"family": "hrformer", "backbone": "hrformer_base", "pretrained": True, "weights": str(a)}
    tag_a, tag_b = pretrained_weights(cfg), pretrained_weights({**cfg, "weights": str(b)})
    assert tag_a.startswith("file:hrformer_base.pth sha256:") and len(tag_a.split("sha256:")[1]) == 16
    assert tag_a.split("sha256:")[1] != tag_b.split("sha256:")[1]
    assert pretrained_weights({**cfg, "weights": str(tmp_path / "nope.pth")}) == "file:nope.pth (missing)"
    assert pretrained_weights({**cfg, "pretrained": False}) == "none"
