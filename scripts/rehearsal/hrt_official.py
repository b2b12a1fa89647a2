"""The key names and shapes of the official HRFormer ImageNet checkpoints (``hrt_tiny/small/base.pth``).

Derived by reading the official classification code, github.com/HRNet/HRFormer, ``cls/``:
``models/hrt.py`` (``HighResolutionTransformer``, ``HighResolutionTransformerModule``),
``models/modules/{bottleneck_block,transformer_block,multihead_isa_attention,multihead_attention,
ffn_block}.py`` and the configs ``configs/hrt/hrt_{tiny,small,base}.yaml`` — NOT from this project's
HRFormer (pipeline/models/hrformer.py), so that loading a file built from these keys tests our mapping
against the official layout rather than against its own inverse. What the official modules register, in
``state_dict()`` order (own parameters, own buffers, then children in registration order):

* stem ``conv1``/``bn1``/``conv2``/``bn2`` (3×3 stride 2, 64 channels, no conv bias);
* ``layer1``: 2 ``Bottleneck`` (64 planes, expansion 4; ``conv1/bn1/conv2/bn2/conv3/bn3``, the first
  with ``downsample.{0,1}`` as 64 ≠ 256);
* ``transition{1,2,3}``: per new-stage branch, ``None`` (no keys) when the width is unchanged, a
  ``Sequential(conv3×3, BN, ReLU)`` (``.0``/``.1``) when it changes, and for a new branch a
  ``Sequential`` of ``Sequential(conv3×3 stride 2, BN, ReLU)`` (``.0.0``/``.0.1``);
* ``stage{2,3,4}.<module>``: ``branches.<b>.<k>`` ``GeneralTransformerBlock`` s: ``attn``
  (``MultiheadISAAttention``) holding ``attn`` (``MultiheadAttentionRPE``: own
  ``relative_position_bias_table`` [(2w-1)², heads] and persistent buffer ``relative_position_index``
  [w², w²], then ``k_proj``, ``v_proj``, ``q_proj``, ``out_proj``, all ``Linear(C, C)`` with bias),
  ``norm1``/``norm2`` (LayerNorm), ``mlp`` (``MlpDWBN``: ``fc1`` 1×1 C→4C with bias, ``norm1`` BN,
  ``dw3x3`` depth-wise 3×3 with bias, ``norm2`` BN, ``fc2`` 1×1 4C→C with bias, ``norm3`` BN);
  then ``fuse_layers.<i>.<j>`` for every output branch i (all four in stage 4 too: the classification
  model keeps ``multi_scale_output`` True): j > i ``Sequential(conv1×1, BN, Upsample)`` (``.0``/``.1``),
  j < i (i−j) steps ``Sequential(dw3×3 stride 2, BN, conv1×1, BN[, ReLU])`` (``.<k>.{0,1,2,3}``);
* the classification head (``_make_head``): ``incre_modules.<i>.0`` a ``BottleneckDWP`` (its
  ``conv2`` depth-wise) from each branch to (32, 64, 128, 256) planes ×4, with ``downsample.{0,1}``;
  ``downsamp_modules.<i>`` ``Sequential(dw3×3 stride 2 + bias, BN, conv1×1 + bias, BN, ReLU)``;
  ``final_layer`` ``Sequential(conv1×1 1024→2048 + bias, BN, ReLU)``; ``classifier`` Linear(2048, 1000).

Every BatchNorm has ``weight, bias, running_mean, running_var, num_batches_tracked``; every LayerNorm
``weight, bias``. Cross-check: the parameter counts equal the published ones (cls/README.md: HRT-T 8.0M,
HRT-S 13.5M, HRT-B 50.3M), see :data:`PUBLISHED_PARAMS`.

The released checkpoints are saved as ``{"model": state_dict, ...}`` (cls/utils.py ``save_checkpoint``;
the evaluation and the pose backbone read ``checkpoint["model"]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# cls/configs/hrt/hrt_*.yaml, MODEL.HRT: stages 2-4 (modules, per-branch channels, heads). All three
# have stage 1 = 1 module of 2 BOTTLENECK blocks at 64 planes, 2 blocks per branch, window 7, MLP ratio 4.
@dataclass(frozen=True)
class OfficialHRT:
    stage_modules: tuple[int, int, int]
    channels: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    blocks_per_branch: int = 2
    window: int = 7
    mlp_ratio: int = 4
    stem: int = 64
    stage1_blocks: int = 2
    stage1_planes: int = 64
    head_planes: tuple[int, int, int, int] = (32, 64, 128, 256)   # hrt.py _make_head
    final_channels: int = 2048
    num_classes: int = 1000


OFFICIAL_CONFIGS = {
    "hrt_tiny": OfficialHRT((1, 3, 2), (18, 36, 72, 144), (1, 2, 4, 8)),
    "hrt_small": OfficialHRT((1, 4, 2), (32, 64, 128, 256), (1, 2, 4, 8)),
    "hrt_base": OfficialHRT((1, 4, 2), (78, 156, 312, 624), (2, 4, 8, 16)),
}
# cls/README.md, "#params" column (the classification models, rounded to 0.1M)
PUBLISHED_PARAMS = {"hrt_tiny": 8.0e6, "hrt_small": 13.5e6, "hrt_base": 50.3e6}

# Classification-only parts of the file: not in a pose backbone.
HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


@dataclass(frozen=True)
class Entry:
    """One state-dict entry: its shape and what it is (``param`` / ``buffer`` / ``index`` / ``count``)."""
    shape: tuple[int, ...]
    kind: str = "param"


class _Keys:
    def __init__(self) -> None:
        self.out: dict[str, Entry] = {}

    def add(self, name: str, *shape: int, kind: str = "param") -> None:
        assert name not in self.out, name
        self.out[name] = Entry(tuple(shape), kind)

    def conv(self, name: str, cin: int, cout: int, k: int, *, groups: int = 1, bias: bool = False) -> None:
        self.add(f"{name}.weight", cout, cin // groups, k, k)
        if bias:
            self.add(f"{name}.bias", cout)

    def bn(self, name: str, c: int) -> None:
        self.add(f"{name}.weight", c)
        self.add(f"{name}.bias", c)
        self.add(f"{name}.running_mean", c, kind="buffer")
        self.add(f"{name}.running_var", c, kind="buffer")
        self.add(f"{name}.num_batches_tracked", kind="count")

    def ln(self, name: str, c: int) -> None:
        self.add(f"{name}.weight", c)
        self.add(f"{name}.bias", c)

    def linear(self, name: str, cin: int, cout: int) -> None:
        self.add(f"{name}.weight", cout, cin)
        self.add(f"{name}.bias", cout)

    def bottleneck(self, name: str, cin: int, planes: int, *, depthwise: bool) -> None:
        """``Bottleneck`` / ``BottleneckDWP`` (expansion 4); ``downsample`` when cin ≠ 4·planes."""
        self.conv(f"{name}.conv1", cin, planes, 1)
        self.bn(f"{name}.bn1", planes)
        self.conv(f"{name}.conv2", planes, planes, 3, groups=planes if depthwise else 1)
        self.bn(f"{name}.bn2", planes)
        self.conv(f"{name}.conv3", planes, 4 * planes, 1)
        self.bn(f"{name}.bn3", 4 * planes)
        if cin != 4 * planes:
            self.conv(f"{name}.downsample.0", cin, 4 * planes, 1)
            self.bn(f"{name}.downsample.1", 4 * planes)

    def transformer_block(self, name: str, c: int, heads: int, window: int, mlp_ratio: int) -> None:
        a = f"{name}.attn.attn"
        self.add(f"{a}.relative_position_bias_table", (2 * window - 1) ** 2, heads)
        self.add(f"{a}.relative_position_index", window * window, window * window, kind="index")
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):   # MultiheadAttention.__init__ order
            self.linear(f"{a}.{proj}", c, c)
        self.ln(f"{name}.norm1", c)
        self.ln(f"{name}.norm2", c)
        hidden = int(c * mlp_ratio)
        self.conv(f"{name}.mlp.fc1", c, hidden, 1, bias=True)
        self.bn(f"{name}.mlp.norm1", hidden)
        self.conv(f"{name}.mlp.dw3x3", hidden, hidden, 3, groups=hidden, bias=True)
        self.bn(f"{name}.mlp.norm2", hidden)
        self.conv(f"{name}.mlp.fc2", hidden, c, 1, bias=True)
        self.bn(f"{name}.mlp.norm3", c)

    def transition(self, name: str, pre: tuple[int, ...], cur: tuple[int, ...]) -> None:
        for i, c in enumerate(cur):
            if i < len(pre):
                if c != pre[i]:
                    self.conv(f"{name}.{i}.0", pre[i], c, 3)
                    self.bn(f"{name}.{i}.1", c)
            else:
                for j in range(i + 1 - len(pre)):
                    out = c if j == i - len(pre) else pre[-1]
                    self.conv(f"{name}.{i}.{j}.0", pre[-1], out, 3)
                    self.bn(f"{name}.{i}.{j}.1", out)

    def fuse(self, name: str, chans: tuple[int, ...]) -> None:
        for i in range(len(chans)):
            for j in range(len(chans)):
                if j > i:
                    self.conv(f"{name}.{i}.{j}.0", chans[j], chans[i], 1)
                    self.bn(f"{name}.{i}.{j}.1", chans[i])
                elif j < i:
                    for k in range(i - j):
                        out = chans[i] if k == i - j - 1 else chans[j]
                        p = f"{name}.{i}.{j}.{k}"
                        self.conv(f"{p}.0", chans[j], chans[j], 3, groups=chans[j])
                        self.bn(f"{p}.1", chans[j])
                        self.conv(f"{p}.2", chans[j], out, 1)
                        self.bn(f"{p}.3", out)


def official_keys(name: str = "hrt_base") -> dict[str, Entry]:
    """Every key of the official ``name`` ImageNet model's ``state_dict()``, in its order."""
    cfg = OFFICIAL_CONFIGS[name]
    k = _Keys()
    k.conv("conv1", 3, cfg.stem, 3)
    k.bn("bn1", cfg.stem)
    k.conv("conv2", cfg.stem, cfg.stem, 3)
    k.bn("bn2", cfg.stem)
    cin = cfg.stem
    for b in range(cfg.stage1_blocks):
        k.bottleneck(f"layer1.{b}", cin, cfg.stage1_planes, depthwise=False)
        cin = 4 * cfg.stage1_planes
    pre: tuple[int, ...] = (cin,)
    for s, n_branches in zip((2, 3, 4), (2, 3, 4)):
        chans = cfg.channels[:n_branches]
        k.transition(f"transition{s - 1}", pre, chans)
        for m in range(cfg.stage_modules[s - 2]):
            for b in range(n_branches):
                for blk in range(cfg.blocks_per_branch):
                    k.transformer_block(f"stage{s}.{m}.branches.{b}.{blk}", chans[b], cfg.heads[b],
                                        cfg.window, cfg.mlp_ratio)
            k.fuse(f"stage{s}.{m}.fuse_layers", chans)
        pre = chans
    for i, c in enumerate(pre):
        k.bottleneck(f"incre_modules.{i}.0", c, cfg.head_planes[i], depthwise=True)
    for i in range(len(pre) - 1):
        cin, cout = 4 * cfg.head_planes[i], 4 * cfg.head_planes[i + 1]
        k.conv(f"downsamp_modules.{i}.0", cin, cin, 3, groups=cin, bias=True)
        k.bn(f"downsamp_modules.{i}.1", cin)
        k.conv(f"downsamp_modules.{i}.2", cin, cout, 1, bias=True)
        k.bn(f"downsamp_modules.{i}.3", cout)
    k.conv("final_layer.0", 4 * cfg.head_planes[-1], cfg.final_channels, 1, bias=True)
    k.bn("final_layer.1", cfg.final_channels)
    k.linear("classifier", cfg.final_channels, cfg.num_classes)
    return k.out


def parameter_count(keys: dict[str, Entry]) -> int:
    """Learned parameters (what the official README's #params counts): no BN statistics, no index."""
    total = 0
    for e in keys.values():
        if e.kind == "param":
            n = 1
            for d in e.shape:
                n *= d
            total += n
    return total


def official_relative_position_index(window: int) -> torch.Tensor:
    """The official ``MultiheadAttentionRPE`` buffer, computed as there: stacked (row, col) coordinates,
    pairwise differences shifted by w-1, the row difference scaled by 2w-1, summed."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)                                    # [2, w²]
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def mmpose_name(official: str) -> str:
    """MMPose's name for an official key, as read from MMPose's ``backbones/hrformer.py``: its
    ``LocalWindowSelfAttention.attn`` is a ``WindowMSA`` with one fused ``qkv`` and ``proj``, its
    ``HRFormerBlock`` calls the FFN ``ffn`` (a ``CrossFFN`` whose layers are attributes
    ``fc1/norm1/dw3x3/norm2/fc2/norm3``; its ``layers`` is a plain list, so never in a state dict).
    Stem, stage 1, transitions and fuse layers keep the official names (MMPose's HRNet ``bn1``…)."""
    name = official.replace(".attn.attn.out_proj.", ".attn.attn.proj.")
    return name.replace(".mlp.", ".ffn.")
