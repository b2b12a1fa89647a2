"""Checks of the generators' arguments, raised as PipelineErrors naming the generator."""
from __future__ import annotations

from typing import Sequence

from ...errors import PipelineError


def check_args(where: str, image_size: Sequence[int], counts: dict[str, int], max_people: int,
                difficulty: float) -> tuple[int, int]:
    """The image (width, height) once every argument is in range; the first one out of range raises."""
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise PipelineError(where, f"image_size must be (width, height), got {image_size!r}") from None
    if width < 32 or height < 32:
        raise PipelineError(where, f"image_size must be at least 32x32, got {width}x{height}")
    for name, n in counts.items():
        if not 0 <= int(n) < 100_000:
            raise PipelineError(where, f"{name} must be in [0, 99999], got {n}")
    if not 1 <= int(max_people) <= 99:
        raise PipelineError(where, f"max_people must be in [1, 99], got {max_people}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise PipelineError(where, f"difficulty must be in [0, 1], got {difficulty}")
    return width, height
