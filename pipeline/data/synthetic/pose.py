"""Random poses, body proportions and viewpoints of the synthetic figures.

Why: the figures must be a real (if small) pose problem, so joint angles cover standing,
walking, sitting, crouching and free activity within plausible limits, and the view mixes
front, back and profile, each share tied to the difficulty."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .draws import gauss, uniform


@dataclass
class Pose:
    """Joint angles in degrees; limbs are (left, right) tuples of (abduction, flexion, twist, bend)."""

    lean: float
    bend: float
    twist: float
    head: tuple[float, float, float]            # yaw, nod, tilt relative to the torso
    arms: tuple[tuple[float, ...], tuple[float, ...]]
    legs: tuple[tuple[float, ...], tuple[float, ...]]


@dataclass
class Build:
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
    return (float(np.clip(rng.normal(0, 25), -75, 75)), gauss(rng, 0, 12), gauss(rng, 0, 10))


def pose_standing(rng: np.random.Generator) -> Pose:
    """A standing pose: arms and legs near rest, small lean, bend and twist."""
    arms = tuple((uniform(rng, -5, 45), uniform(rng, -35, 50), uniform(rng, -30, 40), uniform(rng, 0, 75))
                 for _ in range(2))
    legs = tuple((uniform(rng, -6, 14), uniform(rng, -15, 25), uniform(rng, -10, 30), uniform(rng, -3, 25))
                 for _ in range(2))
    return Pose(gauss(rng, 0, 5), gauss(rng, 0, 4), gauss(rng, 0, 8), _head_pose(rng), arms, legs)


def _pose_walking(rng: np.random.Generator) -> Pose:
    """Legs swing in opposite directions, arms counter-swing: gait and running."""
    swing = uniform(rng, 15, 50)
    lead = 0 if rng.random() < 0.5 else 1
    leg_flex = [0.0, 0.0]
    leg_flex[lead] = swing * uniform(rng, 0.6, 1.2)
    leg_flex[1 - lead] = -swing * uniform(rng, 0.4, 1.0)
    knees = [0.0, 0.0]
    knees[lead] = uniform(rng, 0, 45)
    knees[1 - lead] = uniform(rng, 10, 100)
    legs = tuple((uniform(rng, -4, 12), leg_flex[i], uniform(rng, -10, 25), knees[i]) for i in range(2))
    arms = tuple((uniform(rng, 0, 25), -leg_flex[i] * uniform(rng, 0.5, 1.3), uniform(rng, -20, 40),
                  uniform(rng, 15, 110)) for i in range(2))
    return Pose(gauss(rng, 6, 6), gauss(rng, 0, 4), gauss(rng, 0, 10), _head_pose(rng), arms, legs)


def _pose_active(rng: np.random.Generator) -> Pose:
    """Anything goes within joint limits: sports, dancing, reaching."""
    def arm() -> tuple[float, ...]:
        elbow = uniform(rng, 0, 20) if rng.random() < 0.3 else uniform(rng, 0, 150)
        return (uniform(rng, -20, 175), uniform(rng, -60, 170), uniform(rng, -60, 90), elbow)

    def leg() -> tuple[float, ...]:
        return (uniform(rng, -10, 65), uniform(rng, -35, 110), uniform(rng, -20, 45), uniform(rng, -3, 130))

    return Pose(gauss(rng, 0, 15), gauss(rng, 0, 12), gauss(rng, 0, 15), _head_pose(rng),
                 (arm(), arm()), (leg(), leg()))


def _pose_sitting(rng: np.random.Generator) -> Pose:
    arms = tuple((uniform(rng, -5, 40), uniform(rng, -10, 80), uniform(rng, -20, 60), uniform(rng, 20, 120))
                 for _ in range(2))
    legs = tuple((uniform(rng, 0, 30), uniform(rng, 65, 100), uniform(rng, -10, 30), uniform(rng, 55, 110))
                 for _ in range(2))
    return Pose(gauss(rng, 0, 10), gauss(rng, 0, 5), gauss(rng, 0, 10), _head_pose(rng), arms, legs)


def _pose_crouching(rng: np.random.Generator) -> Pose:
    arms = tuple((uniform(rng, -5, 40), uniform(rng, 10, 100), uniform(rng, -20, 60), uniform(rng, 10, 120))
                 for _ in range(2))
    legs = tuple((uniform(rng, 5, 40), uniform(rng, 90, 135), uniform(rng, -10, 35), uniform(rng, 100, 150))
                 for _ in range(2))
    return Pose(uniform(rng, 15, 50), gauss(rng, 0, 6), gauss(rng, 0, 10), _head_pose(rng), arms, legs)


_POSE_KINDS = (pose_standing, _pose_walking, _pose_active, _pose_sitting, _pose_crouching)
_POSE_PROBS = (0.38, 0.17, 0.21, 0.13, 0.11)
_EASY_POSE_PROBS = (0.55, 0.3, 0.15, 0.0, 0.0)


def sample_pose(rng: np.random.Generator, difficulty: float = 1.0) -> Pose:
    """A pose of a random kind; low ``difficulty`` favours standing and walking over sitting and crouching."""
    probs = [(1 - difficulty) * e + difficulty * p for e, p in zip(_EASY_POSE_PROBS, _POSE_PROBS)]
    return _POSE_KINDS[int(rng.choice(len(_POSE_KINDS), p=probs))](rng)


def sample_build(rng: np.random.Generator) -> Build:
    """A figure's random body proportions (head, neck, limbs), so people differ in shape."""
    head_scale = uniform(rng, 0.92, 1.12)
    return Build(
        head=(0.052 * head_scale, 0.066 * head_scale, 0.058 * head_scale),
        neck=0.045 * uniform(rng, 0.8, 1.2),
        torso=0.30 * gauss(rng, 1, 0.04),
        shoulder_half=0.115 * uniform(rng, 0.85, 1.2),
        hip_half=0.08 * uniform(rng, 0.85, 1.15),
        upper_arm=0.17 * gauss(rng, 1, 0.05),
        forearm=0.15 * gauss(rng, 1, 0.05),
        thigh=0.245 * gauss(rng, 1, 0.04),
        shin=0.245 * gauss(rng, 1, 0.04),
        thick=uniform(rng, 0.75, 1.35),
    )


def sample_view(rng: np.random.Generator, difficulty: float = 1.0) -> tuple[float, float]:
    """Body yaw (0 = facing the camera) and in-plane roll, both in degrees.

    A figure's left and right are hardest to tell apart in side views (any direction) and next
    hardest from behind (no face, no badge), so their shares (35 % and 20 % at difficulty 1) shrink
    with ``difficulty``, the back views to a quarter at 0; the rest face the camera."""
    r = rng.random()
    any_direction = 0.35 * difficulty
    back = 0.20 * (0.25 + 0.75 * difficulty)
    if r < 1.0 - any_direction - back:
        yaw = gauss(rng, 0, 25)
    elif r < 1.0 - any_direction:
        yaw = gauss(rng, 180, 25)
    else:
        yaw = uniform(rng, 0, 360)
    r = rng.random()
    if r < 1 - 0.25 * difficulty:
        roll = gauss(rng, 0, 6)
    elif r < 1 - 0.04 * difficulty:
        roll = uniform(rng, -45, 45)
    else:
        roll = uniform(rng, -180, 180)
    return yaw, roll
