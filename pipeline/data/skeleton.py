"""Joint sets of COCO (17 joints) and MPII (16 joints): names, flip pairs, OKS sigmas.

Every module that needs to know what a joint is imports it from here, so the synthetic
renderer, the flip test and the metrics can never disagree about joint order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JointSet:
    """Names and left/right structure of a dataset's keypoints (0-based indices)."""

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    # bones used to draw skeletons and the synthetic figures: (parent, child)
    bones: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def flip_index(self) -> np.ndarray:
        """Permutation that swaps left and right joints (apply after mirroring)."""
        idx = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            idx[a], idx[b] = b, a
        return idx


COCO = JointSet(
    name="coco",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    bones=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
    ),
)

# The 17 per-keypoint OKS sigmas used by pycocotools (COCOeval.Params.kpt_oks_sigmas).
COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
     1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0

MPII = JointSet(
    name="mpii",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    bones=(
        (0, 1), (1, 2), (2, 6), (5, 4), (4, 3), (3, 6), (6, 7), (7, 8), (8, 9),
        (10, 11), (11, 12), (12, 7), (15, 14), (14, 13), (13, 7),
    ),
)

JOINT_SETS: dict[str, JointSet] = {"coco": COCO, "mpii": MPII}
