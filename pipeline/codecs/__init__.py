"""Heatmap codecs: Gaussian/MSE targets (``gaussian``) and HDM dots (``hdm``).

``get_codec(name)`` returns a :class:`Codec` with a uniform interface::

    target, weights = codec.encode(keypoints_hm (K,2), weights (K,), heatmap_size (w,h), sigma)
    coords, scores = codec.decode(heatmaps (B,K,h,w))   # coords in heatmap pixels

For ``gaussian`` the target is the (K,h,w) heatmap; for ``hdm`` it is the (K,2) dots
(the loss builds the demanders itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import PipelineError
from . import flip, gaussian, hdm
from .flip import flip_back, flip_image_batch
from .hdm import render_demanders, subpixel_demanders


@dataclass(frozen=True)
class Codec:
    name: str
    _encode: Callable[..., tuple[np.ndarray, np.ndarray]]
    decode: Callable[[Any], tuple[Any, Any]]

    def encode(
        self, keypoints_hm: np.ndarray, weights: np.ndarray,
        heatmap_size: Sequence[int], sigma: float = 2.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._encode(keypoints_hm, weights, heatmap_size, sigma)


CODECS: dict[str, Codec] = {
    "gaussian": Codec("gaussian", gaussian.encode, gaussian.decode),
    "hdm": Codec("hdm", lambda kp, w, size, sigma=None: hdm.encode_dots(kp, w, size), hdm.decode),
}


def get_codec(name: str) -> Codec:
    """The codec called ``name`` ("gaussian" or "hdm")."""
    try:
        return CODECS[name]
    except KeyError:
        raise PipelineError("codec", f"unknown codec {name!r}; choose one of {sorted(CODECS)}") from None


__all__ = [
    "Codec", "CODECS", "get_codec", "gaussian", "hdm", "flip",
    "flip_back", "flip_image_batch", "render_demanders", "subpixel_demanders",
]
