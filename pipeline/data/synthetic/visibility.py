"""Joint labels from the final label map: COCO visibility (v=2 seen, v=1 hidden) and MPII labels.

Why: other people and occluders hide joints (COCO v=1) and people leave the frame (v=0); the
label map records which part is top-most at every pixel, so visibility is read, not guessed."""
from __future__ import annotations

import numpy as np

from ..skeleton import COCO
from .anatomy import (HEAD, L_FARM, L_FOOT, L_HAND, L_SHIN, L_THIGH, L_UARM, R_FARM, R_FOOT, R_HAND, R_SHIN,
                      R_THIGH, R_UARM, TORSO, COCO_IDX, MPII_IDX, POINT_INDEX, PART_SLOTS)
from .person import Person

# Which parts must be the top-most pixel at a joint for it to count as visible (v=2).
_JOINT_PARTS: dict[str, frozenset[int]] = {
    "nose": frozenset({HEAD}), "left_eye": frozenset({HEAD}), "right_eye": frozenset({HEAD}),
    "left_ear": frozenset({HEAD}), "right_ear": frozenset({HEAD}),
    "left_shoulder": frozenset({L_UARM}), "right_shoulder": frozenset({R_UARM}),
    "left_elbow": frozenset({L_UARM, L_FARM}), "right_elbow": frozenset({R_UARM, R_FARM}),
    "left_wrist": frozenset({L_FARM, L_HAND}), "right_wrist": frozenset({R_FARM, R_HAND}),
    "left_hip": frozenset({L_THIGH}), "right_hip": frozenset({R_THIGH}),
    "left_knee": frozenset({L_THIGH, L_SHIN}), "right_knee": frozenset({R_THIGH, R_SHIN}),
    "left_ankle": frozenset({L_SHIN, L_FOOT}), "right_ankle": frozenset({R_SHIN, R_FOOT}),
}


def _inside(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    return (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)


def annotate(person: Person, label: int, owner: np.ndarray) -> None:
    """COCO visibility from the final label map; MPII labels from the frame only."""
    height, width = owner.shape
    xy = person.px[COCO_IDX]
    inside = _inside(xy, width, height)
    coco = np.zeros((len(COCO.joints), 3))
    for j, name in enumerate(COCO.joints):
        if not inside[j]:
            continue
        face = person.facing.get(name)
        if face is not None and name in ("nose", "left_eye", "right_eye") and face < -0.6:
            continue  # the back of the head: annotators leave eyes and nose out
        allowed = set(_JOINT_PARTS[name])
        if name.endswith(("shoulder", "hip")):
            # The joint sits on the torso's edge: the torso hides it only when the body is
            # turned far enough (beyond ~50 degrees) for the joint to be on the far side.
            ref = "thorax" if name.endswith("shoulder") else "pelvis"
            behind = person.depth[POINT_INDEX[ref]] - person.depth[POINT_INDEX[name]]
            if behind < 0.8 * person.half_width[ref]:
                allowed.add(TORSO)
        lab = int(owner[int(round(xy[j, 1])), int(round(xy[j, 0]))])
        own = lab // PART_SLOTS * PART_SLOTS == label and lab % PART_SLOTS in allowed
        if face is not None:
            own = own and face > (0.1 if name in ("nose", "left_eye", "right_eye") else -0.35)
        coco[j] = (xy[j, 0], xy[j, 1], 2.0 if own else 1.0)
    person.coco = coco
    mxy = person.px[MPII_IDX]
    m_in = _inside(mxy, width, height)
    person.mpii = np.concatenate([mxy, m_in[:, None].astype(float)], axis=1)
