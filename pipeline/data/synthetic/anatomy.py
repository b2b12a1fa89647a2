"""Named points and part ids of the synthetic figure.

Body model: named 3D points (units of the standing height; x = person's left, y = down,
z = forward out of the chest). COCO's joints come first, in skeleton.COCO order, and the MPII
joints are read off the same figure, so both datasets share one body."""
from __future__ import annotations

import numpy as np

from ..skeleton import COCO, MPII

_EXTRA_POINTS = ("pelvis", "thorax", "upper_neck", "head_top", "head_c",
                 "left_hand", "right_hand", "left_toe", "right_toe", "badge")
POINTS: tuple[str, ...] = COCO.joints + _EXTRA_POINTS
POINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(POINTS)}

# MPII joint name -> body-model point: the MPII joints are read off the same figure.
_MPII_FROM_BODY = {
    "r_ankle": "right_ankle", "r_knee": "right_knee", "r_hip": "right_hip",
    "l_hip": "left_hip", "l_knee": "left_knee", "l_ankle": "left_ankle",
    "pelvis": "pelvis", "thorax": "thorax", "upper_neck": "upper_neck", "head_top": "head_top",
    "r_wrist": "right_wrist", "r_elbow": "right_elbow", "r_shoulder": "right_shoulder",
    "l_shoulder": "left_shoulder", "l_elbow": "left_elbow", "l_wrist": "left_wrist",
}
COCO_IDX = np.array([POINT_INDEX[n] for n in COCO.joints])
MPII_IDX = np.array([POINT_INDEX[_MPII_FROM_BODY[n]] for n in MPII.joints])

# Face features on the head ellipsoid (head frame, units of the standing height).
FACE_LOCAL = {
    "nose": (0.0, 0.012, 0.060),
    "left_eye": (0.022, -0.008, 0.050), "right_eye": (-0.022, -0.008, 0.050),
    "left_ear": (0.052, 0.004, -0.004), "right_ear": (-0.052, 0.004, -0.004),
}

# Part ids (1..31) used in the label maps that decide occlusion.
TORSO, NECK, HEAD = 1, 2, 3
L_UARM, R_UARM, L_FARM, R_FARM, L_HAND, R_HAND = 4, 5, 6, 7, 8, 9
L_THIGH, R_THIGH, L_SHIN, R_SHIN, L_FOOT, R_FOOT = 10, 11, 12, 13, 14, 15
PART_SLOTS = 32  # label = (person + 1) * 32 + part
OCCLUDER_LABEL = 1
