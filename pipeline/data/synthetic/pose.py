"""Random poses, body proportions and viewpoints of the synthetic figures.

Why: the figures must be a real (if small) pose problem, so joint angles cover standing,
walking, sitting, crouching and free activity within plausible limits, and the view mixes
front, back and profile, each share tied to the difficulty."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .draws import _n, _u


@dataclass
class _Pose:
    """Joint angles in degrees; limbs are (left, right) tuples of (abduction, flexion, twist, bend)."""

    lean: float
    bend: float
    twist: float
    head: tuple[float, float, float]            # yaw, nod, tilt relative to the torso
    arms: tuple[tuple[float, ...], tuple[float, ...]]
    legs: tuple[tuple[float, ...], tuple[float, ...]]


@dataclass
class _Build:
    """Body proportions (units of the standing height) and limb thickness of one figure."""

    head: tuple[float, float, float]
    neck: float
    torso: float
    shoulder_half: float
    hip_half: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    thick: float


def _head_pose(rng: np.random.Generator) -> tuple[float, float, float]:
    return (float(np.clip(rng.normal(0, 25), -75, 75)), _n(rng, 0, 12), _n(rng, 0, 10))


def _pose_standing(rng: np.random.Generator) -> _Pose:
    arms = tuple((_u(rng, -5, 45), _u(rng, -35, 50), _u(rng, -30, 40), _u(rng, 0, 75)) for _ in range(2))
    legs = tuple((_u(rng, -6, 14), _u(rng, -15, 25), _u(rng, -10, 30), _u(rng, -3, 25)) for _ in range(2))
    return _Pose(_n(rng, 0, 5), _n(rng, 0, 4), _n(rng, 0, 8), _head_pose(rng), arms, legs)


def _pose_walking(rng: np.random.Generator) -> _Pose:
    """Legs swing in opposite directions, arms counter-swing: gait and running."""
    swing = _u(rng, 15, 50)
    lead = 0 if rng.random() < 0.5 else 1
    leg_flex = [0.0, 0.0]
    leg_flex[lead] = swing * _u(rng, 0.6, 1.2)
    leg_flex[1 - lead] = -swing * _u(rng, 0.4, 1.0)
    knees = [0.0, 0.0]
    knees[lead] = _u(rng, 0, 45)
    knees[1 - lead] = _u(rng, 10, 100)
    legs = tuple((_u(rng, -4, 12), leg_flex[i], _u(rng, -10, 25), knees[i]) for i in range(2))
    arms = tuple((_u(rng, 0, 25), -leg_flex[i] * _u(rng, 0.5, 1.3), _u(rng, -20, 40), _u(rng, 15, 110))
                 for i in range(2))
    return _Pose(_n(rng, 6, 6), _n(rng, 0, 4), _n(rng, 0, 10), _head_pose(rng), arms, legs)


def _pose_active(rng: np.random.Generator) -> _Pose:
    """Anything goes within joint limits: sports, dancing, reaching."""
    def arm() -> tuple[float, ...]:
        elbow = _u(rng, 0, 20) if rng.random() < 0.3 else _u(rng, 0, 150)
        return (_u(rng, -20, 175), _u(rng, -60, 170), _u(rng, -60, 90), elbow)

    def leg() -> tuple[float, ...]:
        return (_u(rng, -10, 65), _u(rng, -35, 110), _u(rng, -20, 45), _u(rng, -3, 130))

    return _Pose(_n(rng, 0, 15), _n(rng, 0, 12), _n(rng, 0, 15), _head_pose(rng),
                 (arm(), arm()), (leg(), leg()))


def _pose_sitting(rng: np.random.Generator) -> _Pose:
    arms = tuple((_u(rng, -5, 40), _u(rng, -10, 80), _u(rng, -20, 60), _u(rng, 20, 120)) for _ in range(2))
    legs = tuple((_u(rng, 0, 30), _u(rng, 65, 100), _u(rng, -10, 30), _u(rng, 55, 110)) for _ in range(2))
    return _Pose(_n(rng, 0, 10), _n(rng, 0, 5), _n(rng, 0, 10), _head_pose(rng), arms, legs)


def _pose_crouching(rng: np.random.Generator) -> _Pose:
    arms = tuple((_u(rng, -5, 40), _u(rng, 10, 100), _u(rng, -20, 60), _u(rng, 10, 120)) for _ in range(2))
    legs = tuple((_u(rng, 5, 40), _u(rng, 90, 135), _u(rng, -10, 35), _u(rng, 100, 150)) for _ in range(2))
    return _Pose(_u(rng, 15, 50), _n(rng, 0, 6), _n(rng, 0, 10), _head_pose(rng), arms, legs)


_POSE_KINDS = (_pose_standing, _pose_walking, _pose_active, _pose_sitting, _pose_crouching)
_POSE_PROBS = (0.38, 0.17, 0.21, 0.13, 0.11)
_EASY_POSE_PROBS = (0.55, 0.3, 0.15, 0.0, 0.0)


def _sample_pose(rng: np.random.Generator, difficulty: float = 1.0) -> _Pose:
    probs = [(1 - difficulty) * e + difficulty * p for e, p in zip(_EASY_POSE_PROBS, _POSE_PROBS)]
    return _POSE_KINDS[int(rng.choice(len(_POSE_KINDS), p=probs))](rng)


def _sample_build(rng: np.random.Generator) -> _Build:
    head_scale = _u(rng, 0.92, 1.12)
    return _Build(
        head=(0.052 * head_scale, 0.066 * head_scale, 0.058 * head_scale),
        neck=0.045 * _u(rng, 0.8, 1.2),
        torso=0.30 * _n(rng, 1, 0.04),
        shoulder_half=0.115 * _u(rng, 0.85, 1.2),
        hip_half=0.08 * _u(rng, 0.85, 1.15),
        upper_arm=0.17 * _n(rng, 1, 0.05),
        forearm=0.15 * _n(rng, 1, 0.05),
        thigh=0.245 * _n(rng, 1, 0.04),
        shin=0.245 * _n(rng, 1, 0.04),
        thick=_u(rng, 0.75, 1.35),
    )


def _sample_view(rng: np.random.Generator, difficulty: float = 1.0) -> tuple[float, float]:
    """Body yaw (0 = facing the camera) and in-plane roll, both in degrees.

    A figure's left and right are hardest to tell apart in side views (any direction) and next
    hardest from behind (no face, no badge), so their shares (35 % and 20 % at difficulty 1) shrink
    with ``difficulty``, the back views to a quarter at 0; the rest face the camera."""
    r = rng.random()
    any_direction = 0.35 * difficulty
    back = 0.20 * (0.25 + 0.75 * difficulty)
    if r < 1.0 - any_direction - back:
        yaw = _n(rng, 0, 25)
    elif r < 1.0 - any_direction:
        yaw = _n(rng, 180, 25)
    else:
        yaw = _u(rng, 0, 360)
    r = rng.random()
    if r < 1 - 0.25 * difficulty:
        roll = _n(rng, 0, 6)
    elif r < 1 - 0.04 * difficulty:
        roll = _u(rng, -45, 45)
    else:
        roll = _u(rng, -180, 180)
    return yaw, roll
