"""Pretrained backbone files: writing them reproducibly, verifying them, loading them into a pose model.

A weights file is the state dict of the pose model's ``backbone`` submodule (the part the paper's
ImageNet weights cover; the heatmap head, and SimpleBaseline's deconvolutions, stay fresh), saved
with :func:`torch.save` into memory first, so the bytes depend on the tensors only (not on the file
name), and read back with ``torch.load(..., weights_only=True)``: a plain dict of tensors, no code.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import io
from ..checkpoint import load_weights
from ..config import Paths
from ..errors import PipelineError
from ..io import sha256_file
from . import spec


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serialise(state: dict[str, torch.Tensor]) -> bytes:
    """The file contents of a backbone state dict: contiguous CPU tensors, in key order."""
    buf = _io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, buf)
    return buf.getvalue()


def write_outputs(out_dir: Path, weights: bytes | None, meta: dict[str, Any]) -> None:
    """Write the stage's folder (weights + sidecar) atomically: all of it or nothing."""
    with io.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if weights is not None:
            (tmp / "backbone.pth").write_bytes(weights)
        (tmp / "backbone.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def check_file(path: Path, sha256: str | None, profile: str, arch: str) -> None:
    """Stop with one line naming ``path`` if it is missing or its sha256 is not the pinned one."""
    key = spec.pin_key(profile, arch)
    regen = f"python -m pipeline --profile {profile} pretrain --arch {arch}"
    if not path.is_file():
        raise PipelineError(str(path), f"pretrained backbone weights not found (make them: {regen})")
    if sha256 is None:
        raise PipelineError(str(path), f"not pinned: set {key}.sha256 to {sha256_file(path)}")
    got = sha256_file(path)
    if got != sha256.lower():
        raise PipelineError(str(path), f"sha256 {got} differs from the pinned {sha256} ({key}.sha256): "
                                       f"regenerate it ({regen}) or pin the new weights")


def check_meta(params: dict[str, Any], profile: str, arch: str) -> None:
    """Stop with one line naming the sidecar if the weights were made under another pretrain config."""
    meta_path = Paths(profile).pretrained_meta(arch)
    meta = io.read_json(meta_path)
    want = spec.pretrain_config(params, profile, arch)
    got = meta.get("config") if isinstance(meta, dict) else None
    if got != want:
        diff = sorted(k for k in set(want) | set(got or {}) if (got or {}).get(k) != want.get(k))
        raise PipelineError(str(meta_path), f"the weights were pretrained under another config (differs in: "
                                            f"{', '.join(diff)}); rerun python -m pipeline --profile {profile} "
                                            f"pretrain --arch {arch} --force and pin the new sha256")


def verify_profile(params: dict[str, Any], profile: str) -> dict[str, str]:
    """Check every pinned backbone of the profile (file, sha256, pretrain config); returns path -> sha256.

    The data stage calls it first, so a missing, changed or stale weights file stops the pipeline
    before anything is generated or trained.
    """
    verified = {}
    for arch in spec.pinned_archs(params, profile):
        p = spec.pin(params, profile, arch)
        check_file(Path(p["path"]), p["sha256"], profile, arch)
        check_meta(params, profile, arch)
        verified[p["path"]] = p["sha256"]
    return verified


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, via ``torch.load(..., weights_only=True)`` (pipeline.checkpoint.load_weights:
    a pickle asking for anything but tensors and plain data is refused, nothing from it runs)."""
    state = load_weights(path, "pretrained backbone")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(str(path), "not a backbone state dict (a mapping of names to tensors)")
    return state


def load_backbone(net: nn.Module, pin: dict[str, Any], profile: str, arch: str) -> None:
    """Load pinned weights into ``net.backbone`` (strict: same keys and shapes); the head stays as built,
    i.e. initialised as the reference code does (the model constructors: normal std 0.001, bias 0)."""
    path = Path(pin["path"])
    check_file(path, pin["sha256"], profile, arch)
    state = read_state(path)
    own = net.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise PipelineError(str(path), f"does not fit this model's backbone ({len(missing)} missing, "
                                       f"{len(unexpected)} unexpected, {len(shapes)} mis-shaped keys, e.g. "
                                       f"{first}); regenerate it for the current model config")
    net.backbone.load_state_dict(state, strict=True)
