"""Top-down inference: crop each person box, run the model (optionally with the flip test),
decode the heatmaps with the run's codec and map the joints back to image coordinates.

Decoding variants (DARK for MSE runs) decode the SAME flip-averaged heatmaps, so an evaluation
variant costs one decoding, not a second pass of the network.

The flip test averages the raw network outputs. For the codecs that decode ``softmax(h)``
(``hdm_softmax``, ``integral``) these are logits: their average is the normalised geometric mean of
the two predicted distributions (softmax of the mean logit), which stays a distribution and is what
both decoders then read; averaging logits is also what a softmax head's ensemble usually does."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..codecs import flip as flip_codec
from ..codecs import Codec
from ..data.transforms import heatmap_to_image
from ..progress import Progress
from ..termination import loader_worker_init
from . import builders


def _decode_into(codec: Codec, heat: torch.Tensor, coords: list, scores: list) -> None:
    """Decode one batch of heatmaps and append its heatmap-pixel coordinates and scores (float64)."""
    xy, sc = codec.decode(heat)
    coords.append(np.asarray(xy, dtype=np.float64))
    scores.append(np.asarray(sc, dtype=np.float64))


#: The batch fields a prediction keeps per person: the crop (to map back to the image) and the
#: record's identity and size (to score it).
_RECORD_FIELDS = ("center", "scale", "box_score", "area", "image_id")


def _flip_averaged(net: nn.Module, images: torch.Tensor, heat: torch.Tensor, flip_index: list[int],
                   codec: Codec) -> torch.Tensor:
    """The flip test: the mean of the heatmaps and those of the mirrored images, mapped back by the
    codec's flip convention (mirrored, left and right swapped)."""
    heat_f = net(flip_codec.flip_image_batch(images)).float()
    return 0.5 * (heat + codec.flip_back(heat_f, flip_index))


def _empty_prediction(k: int, variants: Mapping[str, Codec]) -> dict[str, Any]:
    """The prediction over no records: every array with zero rows and the shapes of a real one, so
    that callers need no special case."""
    return {"coords": np.zeros((0, k, 2)), "scores": np.zeros((0, k)), "box_score": np.zeros(0),
            "area": np.zeros(0), "image_id": np.zeros(0, dtype=np.int64), "center": np.zeros((0, 2)),
            "scale": np.zeros((0, 2)), "peak": np.zeros((0, k)), "heatmap_coords": np.zeros((0, k, 2)),
            "variants": {n: {"coords": np.zeros((0, k, 2)), "scores": np.zeros((0, k)),
                             "heatmap_coords": np.zeros((0, k, 2))} for n in variants}}


def _joined_prediction(coords: list, scores: list, peaks: list, meta: dict[str, list[np.ndarray]],
                       extra: dict[str, tuple[list, list]], size: list[int], convention: str) -> dict[str, Any]:
    """The batches joined, with the main and every variant decoding mapped from heatmap pixels back
    to the image."""
    c = np.concatenate(meta["center"])
    s = np.concatenate(meta["scale"])
    xy_hm = np.concatenate(coords)
    xy_img = heatmap_to_image(xy_hm, c, s, size, convention=convention)
    return {"coords": xy_img, "scores": np.concatenate(scores), "box_score": np.concatenate(meta["box_score"]),
            "area": np.concatenate(meta["area"]), "image_id": np.concatenate(meta["image_id"]), "center": c,
            "scale": s, "peak": np.concatenate(peaks), "heatmap_coords": xy_hm,
            "variants": {n: {"coords": heatmap_to_image(np.concatenate(xy), c, s, size, convention=convention),
                             "scores": np.concatenate(sc), "heatmap_coords": np.concatenate(xy)}
                         for n, (xy, sc) in extra.items()}}


@torch.no_grad()
def predict(net: nn.Module, cfg: dict[str, Any], recs: list[dict], *, flip_test: bool,
            dev: torch.device, batch_size: int, progress: bool = False, desc: str = "predict",
            variants: Mapping[str, Codec] | None = None,
            on_batch: Callable[[dict[str, Any], torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Predict every record; returns image-space ``coords`` (N,K,2), ``scores`` (N,K) and the
    records' ``box_score``, ``area``, ``image_id`` arrays, in record order, ``peak`` (N,K): each
    heatmap's largest value (≤ 0: a dead heatmap, see :mod:`pipeline.metrics.diagnostics`), and
    ``heatmap_coords`` (N,K,2): ``coords`` before the mapping to the image (heatmap px).

    ``on_batch(batch, heat)``, when given, sees every batch of the dataset (its ``keypoints`` and
    ``weight`` are the ground truth of the same crops, heatmap px) with the network's own output
    ``heat`` (B,K,H,W), float32 on the device, before any flip averaging: the heatmaps a loss sees.
    Measurements of the raw heatmaps thus cost no second forward pass.

    ``variants`` (name → codec): further decodings of the same heatmaps, returned under
    ``"variants"`` as ``{name: {"coords", "scores", "heatmap_coords"}}``; :func:`variant_prediction`
    turns one into a prediction of the same shape as the main one."""
    ds = builders.dataset(cfg, recs, train=False)
    codec = builders.codec(cfg)
    convention = codec.convention  # the heatmaps' frame: UDP runs map back with UDP's
    flip_index = builders.joint_set(cfg).flip_index()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=cfg["train"]["workers"],
                        worker_init_fn=loader_worker_init)
    net.eval().to(memory_format=torch.channels_last)
    variants = dict(variants or {})
    coords, scores, peaks = [], [], []
    extra: dict[str, tuple[list, list]] = {name: ([], []) for name in variants}
    meta: dict[str, list[np.ndarray]] = {field: [] for field in _RECORD_FIELDS}
    # a bar on a terminal; a log file gets a line at the start and one at the end
    shown = Progress(desc, total=len(ds), unit="person", enabled=progress, mininterval=2.0)
    for batch in shown.over(loader, weigh=lambda batch: len(batch["image"])):
        images = batch["image"].to(dev, non_blocking=True, memory_format=torch.channels_last)
        heat = net(images).float()
        if on_batch is not None:
            on_batch(batch, heat)
        if flip_test:
            heat = _flip_averaged(net, images, heat, flip_index, codec)
        peaks.append(heat.amax(dim=(-2, -1)).cpu().numpy().astype(np.float64))
        heat_cpu = heat.cpu()
        _decode_into(codec, heat_cpu, coords, scores)
        for name, variant in variants.items():
            _decode_into(variant, heat_cpu, *extra[name])
        for field in _RECORD_FIELDS:
            meta[field].append(batch[field].numpy())
    if not coords:
        return _empty_prediction(builders.joint_set(cfg).num_joints, variants)
    return _joined_prediction(coords, scores, peaks, meta, extra, cfg["data"]["heatmap_size"], convention)


def variant_prediction(pred: dict[str, Any], name: str) -> dict[str, Any]:
    """The prediction ``pred`` with the coordinates and scores of decoding variant ``name``: the
    boxes, ids and peaks are shared, so every consumer of a prediction takes it unchanged."""
    return {**{k: v for k, v in pred.items() if k != "variants"}, **pred["variants"][name]}


def coco_predictions(pred: dict[str, np.ndarray]) -> list[dict]:
    """Per-person dicts in the shape :func:`pipeline.metrics.coco.rescore_and_nms` expects.

    ``area`` is the crop box area (scale·200 squared product), as HRNet uses for OKS-NMS.
    """
    out = []
    for i in range(len(pred["image_id"])):
        kp = np.concatenate([pred["coords"][i], pred["scores"][i][:, None]], axis=1)
        sw, sh = pred["scale"][i]
        out.append({"image_id": int(pred["image_id"][i]), "keypoints": kp,
                    "box_score": float(pred["box_score"][i]), "area": float(sw * 200.0 * sh * 200.0),
                    "center": pred["center"][i], "scale": pred["scale"][i]})
    return out
