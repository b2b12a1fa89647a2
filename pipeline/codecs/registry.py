"""The codecs a run can name, each registered by the module that implements it.

A codec turns a person's heatmap-frame joints into the training target the dataset stores and turns
the network's heatmaps back into joints. Everything the dataset, the loss pairing and the evaluation
need to know about one is a field of its :class:`Codec`, so none of them branches on a codec's name
and a new codec is one module that calls :func:`register_codec`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import PipelineError
from .flip import flip_back

Encoder = Callable[[np.ndarray, np.ndarray, Sequence[int], float], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Codec:
    """One codec: ``encode(keypoints_hm (K,2), weights (K,), heatmap_size (w,h), sigma)`` gives the
    target and the joints' weights, ``decode(heatmaps (B,K,h,w))`` the joints in heatmap pixels and
    their scores.

    ``decoder`` is called with ``sigma=`` when ``decodes_with_sigma`` (DARK's modulation needs the
    training sigma; :func:`get_codec` binds it, as MMPose binds a codec's configuration).
    ``dot_targets``: the loss reads the joints themselves, the dataset stores an empty placeholder.
    ``softmax_decoding``: it decodes ``softmax(h)``, so a heatmap always has positive mass.
    ``convention``: the coordinate convention of its heatmaps (pipeline/data/transforms.py); crops,
    targets and the mapping back to the image must all use it. ``flip_back``: how the flip test maps
    the flipped image's heatmaps back (mirror and swap the left/right joints).
    ``variants``: further decodings of the same heatmaps evaluated beside it, (label, codec name)."""
    name: str
    encoder: Encoder
    decoder: Callable[..., tuple[Any, Any]]
    decodes_with_sigma: bool = False
    sigma: float | None = None
    dot_targets: bool = False
    softmax_decoding: bool = False
    convention: str = "edges"
    flip_back: Callable[[Any, Sequence[int]], Any] = flip_back
    variants: tuple[tuple[str, str], ...] = ()

    def encode(self, keypoints_hm: np.ndarray, weights: np.ndarray, heatmap_size: Sequence[int],
               sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder(keypoints_hm, weights, heatmap_size, sigma)

    def decode(self, heatmaps: Any) -> tuple[Any, Any]:
        if self.decodes_with_sigma:
            return self.decoder(heatmaps, sigma=self.sigma)
        return self.decoder(heatmaps)

    def training_target(self, keypoints_hm: np.ndarray, weights: np.ndarray, heatmap_size: Sequence[int],
                        sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """What the dataset stores for one person: the encoded target, or for dot codecs (whose loss
        builds its demanders from the joints) a (K,1,1) placeholder that collates cheaply."""
        target, weights = self.encode(keypoints_hm, weights, heatmap_size, sigma)
        if self.dot_targets:
            target = np.zeros((len(keypoints_hm), 1, 1), dtype=np.float32)
        return target, weights


_CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> Codec:
    """Make ``codec`` available by name; registering a name again replaces its entry."""
    _CODECS[codec.name] = codec
    return codec


def codec_names() -> tuple[str, ...]:
    """The registered codec names, sorted."""
    return tuple(sorted(_CODECS))


def registered_codec(name: str) -> Codec:
    """The codec registered as ``name`` (unbound: a sigma-decoding one still needs :func:`get_codec`)."""
    try:
        return _CODECS[name]
    except KeyError:
        raise PipelineError("codec", f"unknown codec {name!r}; choose one of {list(codec_names())}") from None


def get_codec(name: str, sigma: float | None = None) -> Codec:
    """The codec called ``name``, with the training ``sigma`` bound in for those that decode with it
    (the others ignore it)."""
    codec = registered_codec(name)
    if not codec.decodes_with_sigma:
        return codec
    if sigma is None:
        raise PipelineError("codec", f"codec {name!r} decodes with the training sigma: pass sigma=")
    return replace(codec, sigma=float(sigma))


def convention(codec_name: str) -> str:
    """The coordinate convention of a codec's heatmaps: crops, targets and the mapping back to the
    image must all use it, or every point moves by up to half a heatmap pixel."""
    return registered_codec(codec_name).convention
