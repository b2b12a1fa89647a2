"""Heatmap codecs: Gaussian/MSE targets (``gaussian``) and HDM dots (``hdm``).

``get_codec(name)`` returns a :class:`Codec` with a uniform interface::

    target, weights = codec.encode(keypoints_hm (K,2), weights (K,), heatmap_size (w,h), sigma)
    coords, scores = codec.decode(heatmaps (B,K,h,w))   # coords in heatmap pixels

For ``gaussian`` the target is the (K,h,w) heatmap; for ``hdm`` it is the (K,2) dots
(the loss builds the demanders itself).

``hdm_softmax`` (HDM with ``suppliers: softmax``) and ``integral`` (integral regression, :mod:`.integral`)
encode the dots like ``hdm`` and decode the per-map ``softmax(h)`` the loss trained on: the 2x2-window
decoding of ``hdm`` on it, or its expected coordinate; both score with the window's probability mass.
:data:`DOT_CODECS` names the codecs whose targets are the dots (no Gaussian target).

``gaussian_dark`` encodes like ``gaussian`` and decodes with DARK (:mod:`.dark`); its decoding
needs the training sigma, so it is built with it bound in, as MMPose binds a codec's
configuration: ``get_codec("gaussian_dark", sigma=2.0)``. A decoding variant is thus a name
(and a sigma), not a branch in the engine.

``udp`` (Huang et al., CVPR 2020) encodes Gaussians at the exact sub-pixel position
(``gaussian.encode(..., subpixel=True)``) and decodes with DARK at the training sigma (MMPose's UDP
codec decodes with its DARK refinement too); its heatmaps live in UDP's coordinate convention
(:func:`convention`), which the dataset and inference take from the codec's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import PipelineError
from . import dark, flip, gaussian, hdm, integral
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
    "hdm_softmax": Codec("hdm_softmax", lambda kp, w, size, sigma=None: hdm.encode_dots(kp, w, size),
                         hdm.decode_softmax),
    "integral": Codec("integral", lambda kp, w, size, sigma=None: hdm.encode_dots(kp, w, size), integral.decode),
}

#: Codecs whose training targets are the dots themselves (the dataset builds no Gaussian target).
DOT_CODECS: tuple[str, ...] = ("hdm", "hdm_softmax", "integral")
#: Codecs that decode ``softmax(h)``: a heatmap always has positive mass for them (never "dead").
SOFTMAX_CODECS: tuple[str, ...] = ("hdm_softmax", "integral")


#: Codecs whose decoding needs the training sigma: name -> builder taking it.
SIGMA_CODECS: dict[str, Callable[[float], Codec]] = {
    "gaussian_dark": lambda sigma: Codec("gaussian_dark", gaussian.encode, partial(dark.decode, sigma=sigma)),
    "udp": lambda sigma: Codec("udp", partial(gaussian.encode, subpixel=True), partial(dark.decode, sigma=sigma)),
}

#: Codecs whose heatmaps use another coordinate convention than "edges" (pipeline/data/transforms.py).
CONVENTION_OF: dict[str, str] = {"udp": "udp"}


def convention(codec_name: str) -> str:
    """The coordinate convention of a codec's heatmaps: crops, targets and the mapping back to the
    image must all use it, or every point moves by up to half a heatmap pixel."""
    return CONVENTION_OF.get(codec_name, "edges")


def get_codec(name: str, sigma: float | None = None) -> Codec:
    """The codec called ``name`` ("gaussian", "hdm", "hdm_softmax", "integral", or "gaussian_dark" / "udp", which need ``sigma``;
    the others ignore it)."""
    if name in SIGMA_CODECS:
        if sigma is None:
            raise PipelineError("codec", f"codec {name!r} decodes with the training sigma: pass sigma=")
        return SIGMA_CODECS[name](float(sigma))
    try:
        return CODECS[name]
    except KeyError:
        names = sorted([*CODECS, *SIGMA_CODECS])
        raise PipelineError("codec", f"unknown codec {name!r}; choose one of {names}") from None


__all__ = [
    "Codec", "CODECS", "DOT_CODECS", "SOFTMAX_CODECS", "SIGMA_CODECS", "CONVENTION_OF", "convention", "get_codec", "gaussian", "hdm", "integral", "dark",
    "flip", "flip_back", "flip_image_batch", "render_demanders", "subpixel_demanders",
]
