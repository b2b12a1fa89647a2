"""Heatmap codecs: Gaussian/MSE targets (``gaussian``) and HDM dots (``hdm``), each registered by the
module that implements it (:mod:`.registry`).

``get_codec(name)`` returns a :class:`Codec` with a uniform interface::

    target, weights = codec.encode(keypoints_hm (K,2), weights (K,), heatmap_size (w,h), sigma)
    coords, scores = codec.decode(heatmaps (B,K,h,w))   # coords in heatmap pixels

For ``gaussian`` the target is the (K,h,w) heatmap; for ``hdm`` it is the (K,2) dots
(the loss builds the demanders itself).

``hdm_softmax`` (HDM with ``suppliers: softmax``) and ``integral`` (integral regression, :mod:`.integral`)
encode the dots like ``hdm`` and decode the per-map ``softmax(h)`` the loss trained on: the 2x2-window
decoding of ``hdm`` on it, or its expected coordinate; both score with the window's probability mass.
:attr:`Codec.dot_targets` marks the codecs whose targets are the dots (no Gaussian target).

``gaussian_dark`` encodes like ``gaussian`` and decodes with DARK (:mod:`.dark`); its decoding
needs the training sigma, so it is built with it bound in, as MMPose binds a codec's
configuration: ``get_codec("gaussian_dark", sigma=2.0)``. A decoding variant is thus a name
(and a sigma), not a branch in the engine.

``udp`` (Huang et al., CVPR 2020) encodes Gaussians at the exact sub-pixel position
(``gaussian.encode(..., subpixel=True)``) and decodes with DARK at the training sigma (MMPose's UDP
codec decodes with its DARK refinement too); its heatmaps live in UDP's coordinate convention
(:attr:`Codec.convention`), which the dataset and inference take from the codec.
"""
from __future__ import annotations

from . import dark, flip, gaussian, hdm, integral
from .flip import flip_back, flip_image_batch
from .hdm import render_demanders, subpixel_demanders
from .registry import Codec, codec_names, convention, get_codec, register_codec, registered_codec

#: The built-in codecs whose training targets are the dots themselves (the dataset builds no Gaussian
#: target); a codec says so itself with :attr:`Codec.dot_targets`.
DOT_CODECS: tuple[str, ...] = tuple(name for name in codec_names() if registered_codec(name).dot_targets)

__all__ = [
    "Codec", "DOT_CODECS", "codec_names", "convention", "get_codec", "register_codec", "registered_codec",
    "gaussian", "hdm", "integral", "dark", "flip", "flip_back", "flip_image_batch", "render_demanders",
    "subpixel_demanders",
]
