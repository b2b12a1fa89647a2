"""Scene styles: what differs between COCO-like and MPII-like images, and the difficulty knob."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    """What differs between the COCO-like and the MPII-like scenes."""

    height_range: tuple[float, float]   # standing height / image height
    truncate_prob: float                # chance a person is placed partly out of frame
    occluder_prob: float                # chance of an occluder aimed at one person
    difficulty: float = 1.0             # 0..1: scales clutter, pose range, roll, truncation, occlusion


def with_difficulty(style: Style, d: float) -> Style:
    """The style at difficulty ``d`` (1 = the full variety above; 0 = big, upright, unoccluded people,
    mostly facing the camera, on sparse clutter; ``pose.sample_view`` and ``pose.sample_pose`` read
    ``d``). Every aspect keeps some variety at any ``d``; the demo uses an intermediate value so a
    demo-size model learns something measurable in a few CPU minutes."""
    lo, hi = style.height_range
    return Style(height_range=(hi - (hi - lo) * (0.4 + 0.6 * d), hi),
                  truncate_prob=style.truncate_prob * d, occluder_prob=style.occluder_prob * d,
                  difficulty=d)


COCO_STYLE = Style(height_range=(0.25, 0.9), truncate_prob=0.3, occluder_prob=0.45)
MPII_STYLE = Style(height_range=(0.4, 0.95), truncate_prob=0.12, occluder_prob=0.35)
