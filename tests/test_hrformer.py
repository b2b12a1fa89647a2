"""HRFormer: shapes, padding, the paper's parameter count, official checkpoint keys, attention maths."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.hrformer import (HRFormer, WindowAttention, load_official_checkpoint,
                                      no_weight_decay_keys, to_official_state_dict)


def _tiny(seed: int = 0, **kw) -> HRFormer:
    torch.manual_seed(seed)
    return HRFormer(17, "demo", width=0.5, **kw)


def _randomise_bn(model: nn.Module) -> None:
    """Give BN running statistics non-default values so a round trip that drops them would show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("hw,out", [((96, 64), (24, 16)),     # stride-4 map 24×16: not a multiple of 7
                                    ((100, 72), (25, 18))])   # odd sizes down the branches too
def test_output_is_stride_4_one_map_per_joint(hw, out):
    net = _tiny().eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, *hw))
    assert y.shape == (2, 17, *out) and torch.isfinite(y).all()


def test_backward_reaches_every_parameter():
    net = _tiny(drop_path_rate=0.2).train()
    net(torch.randn(2, 3, 64, 48)).square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not no_grad


def test_base_pose_model_has_the_papers_43_2m_parameters():
    with torch.device("meta"):
        net = HRFormer(17, "base")
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 43.2e6) / 43.2e6 < 0.01, n
    assert net.head.in_channels == 78 and net.head.kernel_size == (1, 1)
    heads = [m.num_heads for m in net.backbone.stage4[0].branches.modules() if isinstance(m, WindowAttention)]
    assert sorted(set(heads)) == [2, 4, 8, 16]


def test_width_keeps_head_dims_integral():
    with torch.device("meta"):
        net = HRFormer(17, "base", width=0.3)
    for m in net.modules():
        if isinstance(m, WindowAttention):
            assert m.qkv.in_features % m.num_heads == 0 and m.num_heads >= 1


def test_official_checkpoint_round_trip(tmp_path):
    src = _tiny(seed=1)
    _randomise_bn(src)
    official = to_official_state_dict(src)
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                "transition1.0.0.weight", "transition1.1.0.0.weight", "transition2.2.0.0.weight",
                "stage2.0.branches.0.0.attn.attn.relative_position_bias_table",
                "stage2.0.branches.0.0.attn.attn.q_proj.weight",
                "stage2.0.branches.0.0.attn.attn.out_proj.bias",
                "stage2.0.branches.1.0.mlp.fc1.weight", "stage2.0.branches.1.0.mlp.dw3x3.weight",
                "stage3.0.fuse_layers.2.0.1.0.weight", "stage4.0.fuse_layers.0.3.0.weight"):
        assert key in official, key
    # What the ImageNet checkpoint has beyond the pose backbone: classification head, stage-4 fuse rows.
    official["classifier.weight"] = torch.zeros(1000, 2048)
    official["incre_modules.0.0.conv1.weight"] = torch.zeros(1)
    official["stage4.0.fuse_layers.1.0.0.0.weight"] = torch.zeros(1)
    official["stage2.0.branches.0.0.attn.attn.relative_position_index"] = torch.zeros(49, 49).long()
    path = tmp_path / "hrt_demo.pth"
    torch.save({"model": official}, path)

    dst = _tiny(seed=2)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert not torch.allclose(src.backbone.eval()(x)[0], dst.backbone.eval()(x)[0])
        ignored = load_official_checkpoint(dst, path)
        assert "classifier.weight" in ignored and "stage4.0.fuse_layers.1.0.0.0.weight" in ignored
        assert torch.equal(src.backbone(x)[0], dst.backbone(x)[0])


def test_mmpose_named_checkpoint_loads():
    # MMPose's names (its backbones/hrformer.py): WindowMSA ``attn.attn.{qkv,proj}``; the FFN is ``ffn``,
    # a CrossFFN whose fc1/norm1/dw3x3/norm2/fc2/norm3 are attributes (its ``layers`` is a plain list,
    # so no ``ffn.layers.<i>`` key exists)
    src = _tiny(seed=1)
    _randomise_bn(src)
    mm = {}
    for key, value in to_official_state_dict(src).items():
        key = key.replace(".mlp.", ".ffn.").replace(".attn.attn.out_proj.", ".attn.attn.proj.")
        mm["backbone." + key] = value
    for stem in {k.rsplit(".q_proj.", 1)[0] for k in mm if ".q_proj." in k}:
        for kind in ("weight", "bias"):
            mm[f"{stem}.qkv.{kind}"] = torch.cat([mm.pop(f"{stem}.{p}_proj.{kind}") for p in "qkv"])
    dst = _tiny(seed=2)
    load_official_checkpoint(dst, {"state_dict": mm})
    for (name, a), b in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values()):
        assert torch.equal(a, b), name


def test_missing_or_mis_shaped_keys_are_one_clear_error():
    official = to_official_state_dict(_tiny())
    del official["stage3.0.branches.2.0.mlp.fc2.weight"]
    del official["stage2.0.branches.0.0.attn.attn.k_proj.bias"]
    with pytest.raises(PipelineError, match=r"missing: .*k_proj\.bias.*mlp\.fc2\.weight") as err:
        load_official_checkpoint(_tiny(), official)
    assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="shape mismatch"):
        load_official_checkpoint(HRFormer(17, "demo", width=0.25), to_official_state_dict(_tiny()))


def _naive_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Loop over windows and token pairs; the bias is looked up from (Δrow, Δcol) by hand."""
    B, H, W, C = x.shape
    w, nh = attn.window, attn.num_heads
    d = C // nh
    ph, pw = (-H) % w, (-W) % w
    xp = torch.zeros(B, H + ph, W + pw, C)
    xp[:, ph // 2:ph // 2 + H, pw // 2:pw // 2 + W] = x
    q, k, v = attn.qkv(xp).split(C, dim=-1)
    out = torch.zeros_like(xp)
    for b in range(B):
        for r0 in range(0, H + ph, w):
            for c0 in range(0, W + pw, w):
                cells = [(r0 + i, c0 + j) for i in range(w) for j in range(w)]
                for h in range(nh):
                    sl = slice(h * d, (h + 1) * d)
                    for (ra, ca) in cells:
                        logits = torch.stack([
                            (q[b, ra, ca, sl] @ k[b, rb, cb, sl]) / d ** 0.5
                            + attn.relative_position_bias_table[
                                (ra - rb + w - 1) * (2 * w - 1) + (ca - cb + w - 1), h]
                            for (rb, cb) in cells])
                        p = logits.softmax(0)
                        out[b, ra, ca, sl] = sum(p[n] * v[b, rb, cb, sl] for n, (rb, cb) in enumerate(cells))
    return attn.proj(out[:, ph // 2:ph // 2 + H, pw // 2:pw // 2 + W])


def test_window_attention_matches_naive_attention_with_relative_bias():
    torch.manual_seed(0)
    attn = WindowAttention(dim=4, num_heads=2, window=3)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()  # large enough to matter
        x = torch.randn(1, 4, 5, 4)                  # 4×5: padded to 6×6
        assert torch.allclose(attn(x), _naive_window_attention(attn, x), atol=1e-5)


def test_drop_path_rises_linearly_and_is_identity_in_eval():
    net = HRFormer(17, "demo", width=0.5, drop_path_rate=0.3)
    rates = [m.drop_prob for m in net.modules() if type(m).__name__ == "DropPath"]
    assert max(rates) == pytest.approx(0.3) and min(rates) > 0   # the very first block gets rate 0
    plain = HRFormer(17, "demo", width=0.5)
    plain.load_state_dict(net.state_dict())
    net.eval(), plain.eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))


def test_no_weight_decay_keys():
    net = _tiny()
    keys = no_weight_decay_keys(net)
    assert "backbone.stage2.0.branches.0.0.attn.relative_position_bias_table" in keys
    assert "backbone.stage2.0.branches.0.0.norm1.weight" in keys and "head.bias" in keys
    assert "head.weight" not in keys and "backbone.conv1.weight" not in keys
    tables_only = no_weight_decay_keys(net, norms_and_biases=False)
    assert tables_only and all(k.endswith("relative_position_bias_table") for k in tables_only)


def test_build_model_family_and_pretrained_needs_local_weights(tmp_path):
    net = build_model({"family": "hrformer", "backbone": "hrformer_demo", "width": 0.5,
                       "drop_path_rate": 0.1, "pretrained": False}, 17)
    assert isinstance(net, HRFormer)
    with pytest.raises(PipelineError, match="model.weights.*cannot be downloaded"):
        build_model({"family": "hrformer", "backbone": "hrformer_base", "pretrained": True}, 17)
    with pytest.raises(PipelineError, match="does not exist"):
        build_model({"family": "hrformer", "backbone": "hrformer_demo", "pretrained": True,
                     "weights": str(tmp_path / "none.pth")}, 17)
