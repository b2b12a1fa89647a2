"""Flip test helpers (docs/conventions.md: a mirror maps x -> W - 1 - x in every frame).

Because input and heatmap pixel edges are aligned, the heatmaps predicted for a mirrored
input crop only need to be mirrored back and have their left/right channels swapped; no
1-pixel shift (HRNet's) is needed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def flip_back(heatmaps, flip_index: Sequence[int] | np.ndarray):
    """Mirror ``(B,K,h,w)`` heatmaps along the width and permute channels by ``flip_index``.

    ``flip_index`` is :meth:`pipeline.data.skeleton.JointSet.flip_index` (an involution).
    Works on torch tensors (returned as torch) and numpy arrays.
    """
    perm = np.asarray(flip_index, dtype=np.int64)
    if isinstance(heatmaps, torch.Tensor):
        if heatmaps.dim() != 4:
            raise ValueError(f"heatmaps must be (B,K,h,w), got {tuple(heatmaps.shape)}")
        idx = torch.as_tensor(perm, device=heatmaps.device)
        return heatmaps.flip(-1).index_select(1, idx)
    hm = np.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (B,K,h,w), got {hm.shape}")
    return np.ascontiguousarray(hm[:, perm, :, ::-1])


def flip_image_batch(images):
    """Mirror a ``(B,C,H,W)`` image batch along the width (torch or numpy)."""
    if isinstance(images, torch.Tensor):
        return images.flip(-1)
    return np.ascontiguousarray(np.asarray(images)[..., ::-1])
