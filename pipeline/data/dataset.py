"""Top-down pose dataset: person records -> normalised crops, targets and metadata.

Each item is a dict of tensors (so ``torch.utils.data.default_collate`` batches it):

============  ===================  =====================================================
key           shape / dtype        meaning
============  ===================  =====================================================
image         (3,H,W) float32      crop, RGB (or BGR), ImageNet mean/std normalised
target        (K,hh,hw) float32    the codec's encoded target (Gaussian heatmaps: "gaussian", "udp");
              (K,1,1) float32      zeros for the dot codecs ("hdm", "hdm_softmax", "integral")
                                   (their losses use ``keypoints``)
keypoints     (K,2) float32        joints in HEATMAP pixel coordinates (both codecs)
weight        (K,) float32         1 if labelled and inside the input crop (below)
center        (2,) float64         crop centre in the original image (after augmentation)
scale         (2,) float64         crop scale in units of 200 px (after augmentation)
rotation      () float64           degrees, positive = person appears counter-clockwise
flipped       () bool              whether the crop was mirrored
box_score     () float64           detection score (1 for ground-truth boxes)
image_id      () int64
area          () float64
index         () int64             position in ``records``
============  ===================  =====================================================

Codec "udp" crops and places the keypoints in UDP's coordinate convention (box edges onto the outer
pixel centres, ``transforms.CONVENTIONS``) and renders Gaussians at the exact sub-pixel positions;
the others use this project's ("edges"). A joint's weight is 1 when it is labelled and lies inside
the input crop: ``[-0.5, W-0.5]`` heatmap px in "edges" (the heatmap's own pixel area), half an
INPUT pixel past the outer heatmap pixel centres in "udp".

Mapping ``keypoints`` back to the image: apply
``transforms.heatmap_to_image(kp, center, scale, heatmap_size, rotation, convention=...)``; if
``flipped`` the result is in the mirrored image (``x -> img_w - 1 - x`` and left/right
swapped), as the augmentation defines.

Augmentation (``train=True``) is drawn from ``np.random.default_rng([seed, epoch, index])``,
so it is deterministic per (seed, epoch, index) and independent of worker scheduling. Call
:meth:`TopDownDataset.set_epoch` before each epoch (with non-persistent DataLoader workers,
or the workers keep the epoch they were started with).
"""
from __future__ import annotations

import time
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..codecs import get_codec, hdm
from ..errors import PipelineError
from .image_header import check_image_size, header_size
from .skeleton import JointSet
from .transforms import (
    affine_points, compose, default_aug_cfg, get_affine_matrix, hflip_matrix,
    random_augment, warp,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

collate = default_collate


def truncation(data: np.ndarray) -> str | None:
    """Why an encoded JPEG or PNG is cut short, or None when it is complete (other formats: None).

    OpenCV decodes a truncated JPEG into a partly grey image and only warns on stderr, without the
    file's name; a complete JPEG ends with the EOI marker (FF D9; trailing zero padding allowed), a
    complete PNG with its IEND chunk.
    """
    head = data[:8].tobytes()
    if head[:3] == b"\xff\xd8\xff":
        tail = data[-4096:].tobytes().rstrip(b"\x00")
        return None if tail.endswith(b"\xff\xd9") else "truncated JPEG (no end-of-image marker)"
    if head == b"\x89PNG\r\n\x1a\n":
        return None if b"IEND" in data[-32:].tobytes() else "truncated PNG (no IEND chunk)"
    return None


def read_image(path: str, color_rgb: bool = True, expected_size: Sequence[float] | None = None) -> np.ndarray:
    """Read an image with OpenCV as HWC uint8 (RGB if ``color_rgb``, else BGR); a missing, truncated or
    undecodable file is a one-line :class:`PipelineError` naming it.

    Before decoding, the size the header declares is compared with ``expected_size`` (width, height:
    the annotation's, where it gives one) and with the pixel limit
    (:func:`pipeline.data.image_header.check_image_size`), so an image that is not the annotated
    picture, or one that would take gigabytes to decode, is refused without decoding it.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise PipelineError(str(path), f"cannot read image ({exc.strerror or exc})") from None
    problem = truncation(data)
    if problem is not None:
        raise PipelineError(str(path), f"{problem}: replace the file (e.g. download it again)")
    declared = header_size(data) if data.size else None
    if declared is not None:
        check_image_size(str(path), declared, expected_size)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if img is None:
        raise PipelineError(str(path), "cannot read image (missing file or not an image)")
    if declared is None:  # a format whose header is not read here: check what was decoded
        check_image_size(str(path), (img.shape[1], img.shape[0]), expected_size, from_header=False)
    if color_rgb:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def _sample_tensors(rec: dict, index: int, image: np.ndarray, target: np.ndarray, kp: np.ndarray,
                    weight: np.ndarray, center: np.ndarray, scale: np.ndarray, rotation: float,
                    flipped: bool) -> dict[str, torch.Tensor]:
    """One sample as the tensors the collate function stacks, with what inference needs to map the
    prediction back to the image (centre, scale, rotation, flip) and to score it (ids, area)."""
    return {
        "image": torch.from_numpy(image),
        "target": torch.from_numpy(target),
        "keypoints": torch.from_numpy(kp.astype(np.float32)),
        "weight": torch.from_numpy(np.asarray(weight, dtype=np.float32)),
        "center": torch.from_numpy(center.copy()),
        "scale": torch.from_numpy(scale.copy()),
        "rotation": torch.tensor(float(rotation), dtype=torch.float64),
        "flipped": torch.tensor(bool(flipped)),
        "box_score": torch.tensor(float(rec.get("box_score", 1.0)), dtype=torch.float64),
        "image_id": torch.tensor(int(rec["image_id"]), dtype=torch.int64),
        "area": torch.tensor(float(rec.get("area", 0.0)), dtype=torch.float64),
        "index": torch.tensor(int(index), dtype=torch.int64),
    }


class TopDownDataset(Dataset):
    """Crops person boxes for a top-down pose network (see the module docstring)."""

    def __init__(
        self,
        records: Sequence[dict],
        *,
        joint_set: JointSet,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        codec: str,
        sigma: float = 2.0,
        train: bool = False,
        aug_cfg: dict | None = None,
        color_rgb: bool = True,
        seed: int = 0,
    ) -> None:
        self.target_codec = get_codec(codec, sigma=sigma)  # an unknown name stops with the known ones
        self.records = list(records)
        self.joint_set = joint_set
        self.num_joints = joint_set.num_joints
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.codec = codec
        self.convention = self.target_codec.convention
        self.sigma = float(sigma)
        self.train = bool(train)
        cfg = default_aug_cfg(joint_set)
        cfg.update(aug_cfg or {})
        cfg.setdefault("aspect_ratio", self.input_size[0] / self.input_size[1])
        self.aug_cfg = cfg
        self.color_rgb = bool(color_rgb)
        self.seed = int(seed)
        self.epoch = 0

    def crop_margin(self) -> tuple[float, float]:
        """How far (heatmap px) the input crop reaches past the outer heatmap pixel centres, per axis:
        half an input pixel, i.e. 0.5 heatmap px in "edges" and ``0.5 (W_hm - 1) / (W_in - 1)`` in
        "udp". A joint outside it is not in the image the network sees, so its weight is 0."""
        if self.convention == "edges":
            return 0.5, 0.5
        return tuple(0.5 * (hm - 1.0) / (inp - 1.0) for hm, inp in zip(self.heatmap_size, self.input_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(index)

    def sample(self, index: int, timings: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """``self[index]``; with ``timings``, also the seconds each step took (``bench data``
        times the real code path rather than a copy of it)."""
        clock = time.perf_counter
        last = [clock()]

        def lap(step: str) -> None:
            if timings is not None:
                now = clock()
                timings[step] = now - last[0]
                last[0] = now

        rec = self.records[index]
        # read as BGR; colour conversion is done on the (smaller) crop
        img = read_image(rec["image_path"], color_rgb=False, expected_size=rec.get("image_size"))
        lap("imread_decode")
        center = np.asarray(rec["center"], dtype=np.float64)
        scale = np.asarray(rec["scale"], dtype=np.float64)
        joints = np.asarray(rec["joints"], dtype=np.float64).reshape(self.num_joints, 2)
        vis = np.asarray(rec["vis"], dtype=np.float64).reshape(self.num_joints)
        rotation, flipped = 0.0, False
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            center, scale, rotation, flipped, joints, vis = random_augment(
                rng, center, scale, joints, vis, self.aug_cfg, image_width=img.shape[1])

        m_in = get_affine_matrix(center, scale, rotation, self.input_size, convention=self.convention)
        m_img = compose(m_in, hflip_matrix(img.shape[1])) if flipped else m_in
        lap("augment_params")
        patch = warp(img, m_img, self.input_size)
        lap("affine_warp")
        if self.color_rgb:
            patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
        image = (patch.astype(np.float32) * (1.0 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
        image = np.ascontiguousarray(image.transpose(2, 0, 1))
        lap("colour_normalise")

        kp = affine_points(joints, get_affine_matrix(center, scale, rotation, self.heatmap_size,
                                                     convention=self.convention))
        target, weight = self._encode_target(kp, vis)
        lap("target_encoding")

        item = _sample_tensors(rec, index, image, target, kp, weight, center, scale, rotation, flipped)
        lap("to_tensors")
        return item

    def _encode_target(self, kp: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(target, weight)`` of one person's heatmap-frame joints: visible joints inside the crop
        count; Gaussian codecs get their heatmaps, the dot codecs an empty placeholder (their loss
        builds the demanders from the keypoints)."""
        weight = ((vis > 0) & hdm.inside_heatmap(kp, self.heatmap_size, self.crop_margin())).astype(np.float32)
        return self.target_codec.training_target(kp, weight, self.heatmap_size, self.sigma)
