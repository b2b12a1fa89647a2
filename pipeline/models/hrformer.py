"""HRFormer (Yuan et al., NeurIPS 2021) for top-down pose: our own implementation.

Topology (the official ``hrt_base`` config of github.com/HRNet/HRFormer, cls/configs/hrt and
pose/configs/top_down/hrt): an HRNet stem (two 3×3 stride-2 convolutions, 64 channels) and stage 1
(one module of 2 Bottlenecks, 64 planes → 256 channels), then stages 2–4 of parallel branches at
strides 4/8/16/32 whose blocks are transformer blocks:

* local-window multi-head self-attention (window 7; the map is centre-padded with zeros to a
  multiple of 7 and cropped back, padded tokens are not masked, as the official code) with a
  learned relative-position bias table per head, pre-LayerNorm (eps 1e-6);
* the HRFormer FFN: 1×1 conv → BN → GELU → depth-wise 3×3 → BN → GELU → 1×1 conv → BN →
  GELU, hidden ratio 4 (the official ``MlpDWBN`` ends with a GELU after the last BN; we keep it);
* stochastic depth rising linearly from 0 to ``drop_path_rate`` over the transformer depth, where,
  as in the official code, the k-th block of every branch of a module shares one rate.

Each module ends with HRNet's exchange between branches, in HRFormer's form: up-sampling paths are
1×1 conv + BN + bilinear resize (``align_corners=False``, straight to the target size; the
official ``Upsample(2**k)`` followed by a resize is the same map whenever sizes divide, which they
do for inputs that are multiples of 32), down-sampling paths are (depth-wise 3×3 stride 2 + BN +
1×1 + BN [+ ReLU between steps]). As the official pose backbone (``multiscale_output`` False for
stage 4), the last module fuses only into the stride-4 branch; its other fuse layers exist only
in the ImageNet checkpoint (they feed the classification head) and are skipped on loading. The
pose head is one 1×1 conv on the stride-4 branch (``TopDownSimpleHead`` with no deconvolution).

Parameter count (17 joints, sum of ``numel`` over the pose model): 43.2M for ``hrformer_base``,
the paper's figure — and only without the three unused stage-4 fuse rows (with them: +0.8M).

Official checkpoint keys → ours (:func:`load_official_checkpoint`; inverse in
:func:`to_official_state_dict`). Our backbone keeps the official module names, so the rules are:

1. unwrap ``state_dict``/``model``; strip a leading ``module.`` or ``backbone.``; prefix ours
   with ``backbone.`` (the pose model holds the backbone as ``.backbone``);
2. ``incre_modules.*``, ``downsamp_modules.*``, ``final_layer.*``, ``classifier.*`` (ImageNet
   head) and ``stage4.<last>.fuse_layers.{1,2,3}.*`` (see above) are ignored;
3. ``….attn.attn.{q,k,v}_proj.{weight,bias}`` are concatenated (q, k, v order) into
   ``….attn.qkv.{weight,bias}``; ``….attn.attn.out_proj.*`` → ``….attn.proj.*``;
   ``….attn.attn.relative_position_bias_table`` → ``….attn.relative_position_bias_table``;
   ``….attn.attn.relative_position_index`` (a constant buffer) is dropped;
4. everything else is the same name: ``conv1/bn1/conv2/bn2``, ``layer1.<i>.{conv,bn}{1,2,3}``,
   ``layer1.0.downsample.{0,1}``, ``transition<s>.<b>.{0,1}`` (conv/BN on an existing branch) and
   ``transition<s>.<b>.0.{0,1}`` (a new stride-2 branch), ``stage<s>.<m>.branches.<b>.<k>.`` +
   ``norm1``/``norm2`` (LayerNorms) and ``mlp.{fc1,norm1,dw3x3,norm2,fc2,norm3}``,
   ``stage<s>.<m>.fuse_layers.<i>.<j>.<…>``. BN ``num_batches_tracked`` may be absent.

MMPose's copy (``hrformer_base-32815020_20220226.pth``) is also accepted under MMPose's module
names as read from its ``backbones/hrformer.py`` (the file itself was not inspected here): its
``WindowMSA``'s ``….attn.attn.qkv``/``….attn.attn.proj`` map to ``….attn.qkv``/``….attn.proj`` and its
FFN ``….ffn.{fc1,norm1,dw3x3,norm2,fc2,norm3}`` to ``….mlp.<same>`` (MMPose's ``CrossFFN`` keeps those
layers as attributes; its ``layers`` is a plain list, so a state dict never has ``ffn.layers.<i>``).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ..checkpoint import load_weights
from ..errors import PipelineError
from .registry import Architecture, register_architecture

BN_MOMENTUM = 0.1


# --------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class StageConfig:
    """One of stages 2–4: ``num_modules`` HRFormer modules, per-branch blocks/channels/heads."""
    num_modules: int
    num_blocks: tuple[int, ...]
    channels: tuple[int, ...]
    heads: tuple[int, ...]


@dataclass(frozen=True)
class HRFormerConfig:
    """A whole network: HRNet stem and stage 1, then the transformer stages 2–4."""
    stem_width: int = 64
    stage1_blocks: int = 2
    stage1_planes: int = 64          # Bottleneck planes; the stage outputs 4× this
    stages: tuple[StageConfig, ...] = ()
    window: int = 7
    mlp_ratio: int = 4


def _stages(modules: Sequence[int], blocks: int, channels: Sequence[int],
            heads: Sequence[int]) -> tuple[StageConfig, ...]:
    """Stages 2–4 with 2, 3, 4 branches: the first n channels/heads of the full lists."""
    return tuple(StageConfig(m, (blocks,) * n, tuple(channels[:n]), tuple(heads[:n]))
                 for m, n in zip(modules, (2, 3, 4)))


CONFIGS: dict[str, HRFormerConfig] = {
    # Official hrt_base / MMPose HRFormer-B: 4 modules in stage 3, 2 in stage 4, head dim 39.
    "hrformer_base": HRFormerConfig(stages=_stages((1, 4, 2), 2, (78, 156, 312, 624), (2, 4, 8, 16))),
    # Official hrt_small / MMPose HRFormer-S: same depth, head dim 32.
    "hrformer_small": HRFormerConfig(stages=_stages((1, 4, 2), 2, (32, 64, 128, 256), (1, 2, 4, 8))),
    # Demo size (CPU minutes): one module per stage, one block per branch, one Bottleneck, narrow.
    "hrformer_demo": HRFormerConfig(stem_width=32, stage1_blocks=1, stage1_planes=16,
                                    stages=_stages((1, 1, 1), 1, (16, 32, 64, 128), (1, 2, 4, 8))),
}


def _scaled_heads(channels: int, heads: int, width: float) -> int:
    """About ``heads × width`` heads (at least 1), lowered until it divides ``channels``."""
    h = max(1, round(heads * width))
    while channels % h:
        h -= 1
    return h


def resolve_config(variant: str, *, width: float = 1.0, num_modules: Sequence[int] | None = None,
                   num_blocks: int | None = None) -> HRFormerConfig:
    """A named config, narrowed by ``width`` (as ``_narrow_hrnet``) and with optional depth overrides.

    ``width`` scales the stem, stage 1 and every branch (at least 8 / 4 channels, like the HRNet
    demo sizes); head counts scale too and are lowered until they divide the channels, so every
    head keeps an integral dimension. ``num_modules`` (3 numbers, stages 2–4) and ``num_blocks``
    (per branch, all stages) replace the named depth.
    """
    name = variant if variant.startswith("hrformer_") else f"hrformer_{variant}"
    if name not in CONFIGS:
        raise PipelineError("model.backbone",
                            f"unknown HRFormer config {variant!r} (choose from {sorted(CONFIGS)})")
    cfg = CONFIGS[name]
    if num_modules is not None and len(num_modules) != 3:
        raise ValueError("num_modules gives the module count of stages 2, 3 and 4")
    stages = []
    for s, st in enumerate(cfg.stages):
        channels = tuple(max(4, int(c * width)) for c in st.channels) if width != 1.0 else st.channels
        heads = tuple(_scaled_heads(c, h, width) for c, h in zip(channels, st.heads))
        stages.append(StageConfig(st.num_modules if num_modules is None else int(num_modules[s]),
                                  st.num_blocks if num_blocks is None else (int(num_blocks),) * len(channels),
                                  channels, heads))
    if width == 1.0:
        return replace(cfg, stages=tuple(stages))
    return replace(cfg, stem_width=max(8, int(cfg.stem_width * width)),
                   stage1_planes=max(4, int(cfg.stage1_planes * width)), stages=tuple(stages))


# --------------------------------------------------------------------------- building blocks
def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


class Bottleneck(nn.Module):
    """ResNet Bottleneck (expansion 4), HRNet's stage-1 block; names match the official ``layer1``."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = _bn(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), _bn(out))
                           if inplanes != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def relative_position_index(window: int) -> torch.Tensor:
    """``[w², w²]`` index into the ``(2w-1)²`` bias table: (Δrow + w-1)·(2w-1) + (Δcol + w-1)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``window``×``window`` windows.

    Input and output are channels-last ``[B, H, W, C]``. The map is centre-padded with zeros to a
    multiple of the window (the official ``PadBlock``), attended per window with a learned
    relative-position bias per head, and cropped back. q/k/v are one fused linear (``qkv``) for
    speed; the official separate ``q_proj``/``k_proj``/``v_proj`` load by concatenation.
    """

    def __init__(self, dim: int, num_heads: int, window: int = 7) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{dim} channels do not split into {num_heads} heads")
        self.num_heads, self.window = num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # A constant; not saved, so checkpoints hold only learned tensors.
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def position_bias(self) -> torch.Tensor:
        """The ``[heads, w², w²]`` additive attention bias."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w = self.window
        pad_h, pad_w = -H % w, -W % w
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        Hp, Wp = H + pad_h, W + pad_w
        # [B, Hp, Wp, C] → [B·nWin, w², C]
        win = x.view(B, Hp // w, w, Wp // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        qkv = self.qkv(win).view(win.shape[0], w * w, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)               # each [B·nWin, heads, w², d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias().to(q.dtype))
        out = out.transpose(1, 2).reshape(B, Hp // w, Wp // w, w, w, C)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        out = out[:, pad_h // 2:pad_h // 2 + H, pad_w // 2:pad_w // 2 + W]
        return self.proj(out)  # per-token, so applying it after the crop skips the padding


class ConvFFN(nn.Module):
    """HRFormer's FFN (NCHW): 1×1 → BN → GELU → dw 3×3 → BN → GELU → 1×1 → BN → GELU.

    The depth-wise 3×3 lets information cross window borders; names match the official MlpDWBN.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = _bn(hidden)
        self.dw3x3 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm2 = _bn(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm3 = _bn(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.norm2(self.dw3x3(x)))
        return self.act(self.norm3(self.fc2(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(attn(LN(x))), then x + DropPath(FFN(LN(x))); NCHW in and out."""

    def __init__(self, dim: int, num_heads: int, window: int = 7, mlp_ratio: int = 4,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(0, 2, 3, 1)                                      # [B, H, W, C]
        t = t + self.drop_path(self.attn(self.norm1(t)))
        f = self.mlp(self.norm2(t).permute(0, 3, 1, 2))
        return t.permute(0, 3, 1, 2) + self.drop_path(f)


def _fuse_path(channels: Sequence[int], j: int, i: int) -> nn.Module:
    """The path from branch ``j`` into branch ``i`` at the end of a module (official HRFormer form)."""
    if j == i:
        return nn.Identity()
    if j > i:  # coarser → finer: 1×1 + BN here, bilinear resize in the forward
        return nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False), _bn(channels[i]))
    steps = []
    for k in range(i - j):  # finer → coarser: (i-j) separable stride-2 steps
        last = k == i - j - 1
        out = channels[i] if last else channels[j]
        layers = [nn.Conv2d(channels[j], channels[j], 3, stride=2, padding=1, groups=channels[j], bias=False),
                  _bn(channels[j]), nn.Conv2d(channels[j], out, 1, bias=False), _bn(out)]
        steps.append(nn.Sequential(*layers) if last else nn.Sequential(*layers, nn.ReLU(inplace=True)))
    return nn.Sequential(*steps)


class HRFormerModule(nn.Module):
    """Parallel branches of transformer blocks, then the multi-resolution fusion.

    With ``multi_scale_output`` False only the stride-4 output is fused and returned (the last
    module of the pose backbone), which also saves the unused fuse layers' parameters.
    """

    def __init__(self, channels: Sequence[int], heads: Sequence[int], num_blocks: Sequence[int],
                 drop_paths: Sequence[float], *, window: int, mlp_ratio: int,
                 multi_scale_output: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(TransformerBlock(c, h, window, mlp_ratio, drop_paths[k]) for k in range(n)))
            for c, h, n in zip(channels, heads, num_blocks))
        n_out = len(channels) if multi_scale_output else 1
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(channels, j, i) for j in range(len(channels))) for i in range(n_out))
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, paths in enumerate(self.fuse_layers):
            y = xs[i]
            for j, path in enumerate(paths):
                if j == i:
                    continue
                z = path(xs[j])
                if j > i:
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                y = y + z
            out.append(self.relu(y))
        return out


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """HRNet's transition: a 3×3 conv where a branch changes width, a stride-2 3×3 for a new branch."""
    layers: list[nn.Module] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(nn.Identity() if c == pre[i] else nn.Sequential(
                nn.Conv2d(pre[i], c, 3, padding=1, bias=False), _bn(c), nn.ReLU(inplace=True)))
        else:
            steps = []
            for k in range(i + 1 - len(pre)):
                out = c if k == i - len(pre) else pre[-1]
                steps.append(nn.Sequential(nn.Conv2d(pre[-1], out, 3, stride=2, padding=1, bias=False),
                                           _bn(out), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRFormerBackbone(nn.Module):
    """Stem, stage 1 (Bottlenecks), stages 2–4 (HRFormer modules); returns the branch outputs."""

    def __init__(self, cfg: HRFormerConfig, *, drop_path_rate: float = 0.0,
                 multi_scale_output: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        stem = cfg.stem_width
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(stem)
        self.relu = nn.ReLU(inplace=True)
        blocks, inplanes = [], stem
        for _ in range(cfg.stage1_blocks):
            blocks.append(Bottleneck(inplanes, cfg.stage1_planes))
            inplanes = cfg.stage1_planes * Bottleneck.expansion
        self.layer1 = nn.Sequential(*blocks)

        # Official rule: stage depth = blocks of branch 0 × modules; the rate rises linearly over it.
        depths = [st.num_blocks[0] * st.num_modules for st in cfg.stages]
        total = sum(depths)
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]  # torch.linspace(0, r, total)
        pre: Sequence[int] = [inplanes]
        start = 0
        for s, st in enumerate(cfg.stages, start=2):
            setattr(self, f"transition{s - 1}", _transition(pre, st.channels))
            modules = []
            for m in range(st.num_modules):
                last = s == len(cfg.stages) + 1 and m == st.num_modules - 1
                nb = st.num_blocks[0]
                modules.append(HRFormerModule(
                    st.channels, st.heads, st.num_blocks, rates[start + nb * m:start + nb * (m + 1)],
                    window=cfg.window, mlp_ratio=cfg.mlp_ratio,
                    multi_scale_output=multi_scale_output or not last))
            setattr(self, f"stage{s}", nn.Sequential(*modules))
            start += depths[s - 2]
            pre = st.channels
        self.out_channels = tuple(pre)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in range(2, len(self.cfg.stages) + 2):
            transition = getattr(self, f"transition{s - 1}")
            # Existing branches pass through (or change width); new ones come from the coarsest.
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{s}")(xs)
        return xs


class HRFormer(nn.Module):
    """HRFormer backbone + 1×1 convolution on the stride-4 branch → ``num_joints`` heatmaps."""

    def __init__(self, num_joints: int, variant: str = "base", *, width: float = 1.0,
                 drop_path_rate: float = 0.0, num_modules: Sequence[int] | None = None,
                 num_blocks: int | None = None) -> None:
        super().__init__()
        cfg = resolve_config(variant, width=width, num_modules=num_modules, num_blocks=num_blocks)
        self.backbone = HRFormerBackbone(cfg, drop_path_rate=drop_path_rate)
        self.head = nn.Conv2d(self.backbone.out_channels[0], num_joints, kernel_size=1)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)

    def no_weight_decay_keys(self) -> set[str]:
        """Names AdamW must not decay: the relative-position bias tables (the pose recipe's only
        exemption; the training builder finds this method on any submodule)."""
        return no_weight_decay_keys(self, norms_and_biases=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[0])


# --------------------------------------------------------------------------- optimiser helper
def no_weight_decay_keys(model: nn.Module, *, norms_and_biases: bool = True) -> set[str]:
    """Parameter names to keep out of AdamW weight decay.

    Always the relative-position bias tables (the official pose config's only exemption,
    ``custom_keys={'relative_position_bias_table': decay_mult 0}``). With ``norms_and_biases``
    also every 1-D parameter — norm weights/biases and layer biases — as the official ImageNet
    (Swin-style) AdamW setup does; pass False to match the pose config exactly.
    """
    return {name for name, p in model.named_parameters()
            if name.endswith("relative_position_bias_table") or (norms_and_biases and p.ndim <= 1)}


# --------------------------------------------------------------------------- official checkpoints
_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def _backbone_of(model: nn.Module) -> HRFormerBackbone:
    if isinstance(model, HRFormerBackbone):
        return model
    if isinstance(getattr(model, "backbone", None), HRFormerBackbone):
        return model.backbone
    raise TypeError(f"not an HRFormer model: {type(model).__name__}")


def _unwrap(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _read_checkpoint(path_or_state: str | Path | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_state, Mapping):
        return _unwrap(path_or_state), "checkpoint"
    path = Path(path_or_state)
    if not path.is_file():
        raise PipelineError("model.weights", f"HRFormer checkpoint {str(path)!r} does not exist")
    # weights-only, never a fallback: these weights come from the internet, and a pickle can run code
    state = load_weights(path, "HRFormer checkpoint")
    if not isinstance(state, Mapping):
        raise PipelineError(str(path), f"not an HRFormer checkpoint (holds a {type(state).__name__}, not a state dict)")
    return _unwrap(state), str(path)


def from_official_state_dict(
        official: Mapping[str, torch.Tensor], backbone: HRFormerBackbone,
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, list[str]]]:
    """Rename an official (or MMPose) HRFormer state dict to our backbone's keys (rules in the docstring).

    Returns the renamed dict, the ignored keys (classification head, unused stage-4 fuse rows) and,
    for each ``qkv`` whose official q/k/v triple is incomplete, the official names that are absent.
    """
    last_stage = len(backbone.cfg.stages) + 1
    last_fuse = f"stage{last_stage}.{backbone.cfg.stages[-1].num_modules - 1}.fuse_layers."
    kept_fuse_rows = len(getattr(backbone, f"stage{last_stage}")[-1].fuse_layers)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    ignored = []
    for key, value in official.items():
        if key.startswith(_HEAD_PREFIXES) or key.endswith("relative_position_index"):
            ignored.append(key)
            continue
        if key.startswith(last_fuse) and int(key[len(last_fuse):].split(".")[0]) >= kept_fuse_rows:
            ignored.append(key)
            continue
        m = re.match(r"(.*\.attn)\.attn\.([qkv])_proj\.(weight|bias)$", key)
        if m:
            qkv.setdefault(f"{m[1]}.qkv.{m[3]}", {})[m[2]] = value
            continue
        key = re.sub(r"\.attn\.attn\.out_proj\.", ".attn.proj.", key)
        key = re.sub(r"\.attn\.attn\.(qkv\.|proj\.|relative_position_bias_table$)", r".attn.\1", key)
        key = re.sub(r"\.ffn\.(fc1|norm1|dw3x3|norm2|fc2|norm3)\.", r".mlp.\1.", key)
        out[key] = value
    incomplete: dict[str, list[str]] = {}
    for key, parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        else:
            stem, kind = key.rsplit(".qkv.", 1)
            incomplete[key] = [f"{stem}.attn.{p}_proj.{kind}" for p in "qkv" if p not in parts]
    return out, ignored, incomplete


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our backbone's weights under the official HRT key names (the inverse of rules 1–4)."""
    backbone = _backbone_of(model)
    out = {}
    for key, value in backbone.state_dict().items():
        m = re.match(r"(.*\.attn)\.qkv\.(weight|bias)$", key)
        if m:
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{m[1]}.attn.{name}_proj.{m[2]}"] = part.clone()
            continue
        key = re.sub(r"\.attn\.proj\.", ".attn.attn.out_proj.", key)
        key = re.sub(r"\.attn\.relative_position_bias_table$", ".attn.attn.relative_position_bias_table", key)
        out[key] = value.clone()
    return out


def load_official_checkpoint(model: nn.Module,
                             path_or_state_dict: str | Path | Mapping[str, Any]) -> list[str]:
    """Load the official HRFormer ImageNet weights into ``model``'s backbone (the head stays as is).

    Raises a one-line :class:`PipelineError` listing missing, unexpected or mis-shaped keys (in
    official names where they come from the file). Returns the ignored (classification) keys.
    """
    backbone = _backbone_of(model)
    state, where = _read_checkpoint(path_or_state_dict)
    renamed, ignored, incomplete = from_official_state_dict(state, backbone)
    own = backbone.state_dict()
    missing = sorted(name for names in incomplete.values() for name in names) + sorted(
        k for k in own if k not in renamed and k not in incomplete and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in renamed if k not in own)
    mis_shaped = sorted(f"{k} {tuple(renamed[k].shape)} vs {tuple(own[k].shape)}"
                        for k in renamed if k in own and renamed[k].shape != own[k].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise PipelineError(where, "not an HRFormer checkpoint for this config (" + "; ".join(problems) + ")")
    backbone.load_state_dict({k: v for k, v in renamed.items() if k in own}, strict=False)
    return ignored


def build_hrformer(backbone: str, num_joints: int, *, width: float = 1.0, drop_path_rate: float = 0.0,
                   pretrained: bool = False, weights: str | Path | None = None) -> HRFormer:
    """The ``hrformer`` model family of :func:`pipeline.models.build_model`."""
    if pretrained and not weights:
        raise PipelineError("model.weights", "the HRFormer ImageNet checkpoint cannot be downloaded "
                            "automatically; set model.weights to a local copy (hrformer_base, e.g. "
                            "MMPose's hrformer_base-32815020_20220226.pth)")
    if pretrained and width != 1.0:
        raise PipelineError("model.width", "pretrained HRFormer weights exist only for width 1.0")
    model = HRFormer(num_joints, backbone, width=width, drop_path_rate=drop_path_rate)
    if pretrained:
        load_official_checkpoint(model, weights)
    return model


def local_weights(model_cfg: dict[str, Any]) -> str:
    """HRFormer's ImageNet weights come from a local file (``model.weights``): its name and the first 16
    hex digits of its sha256, so a run says which checkpoint it started from."""
    path = Path(model_cfg.get("weights") or "")
    if not path.is_file():
        return f"file:{path.name or '?'} (missing)"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"file:{path.name} sha256:{digest.hexdigest()[:16]}"


def build(model_cfg: dict[str, Any], num_joints: int) -> HRFormer:
    """The family's builder from a resolved ``model`` config (our own implementation, not timm's)."""
    return build_hrformer(model_cfg["backbone"], num_joints, width=model_cfg.get("width", 1.0),
                          drop_path_rate=model_cfg.get("drop_path_rate", 0.0),
                          pretrained=model_cfg.get("pretrained", False), weights=model_cfg.get("weights"))


ARCHITECTURE = register_architecture(Architecture("hrformer", build, output_strides=(4,), feature_index=0,
                                                  weights_source=local_weights))
