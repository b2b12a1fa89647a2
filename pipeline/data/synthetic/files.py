"""Writing the generated files: JPEG images and compact JSON with rounded coordinates.

Why a module of its own: ``write_jpeg`` is the seam the tests patch (through this module) to
simulate a crash midway, and every writer rounds numbers the same way."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ...errors import PipelineError

_JPEG_QUALITY = 90


def write_jpeg(path: Path, image: np.ndarray, quality: int = _JPEG_QUALITY) -> None:
    """Encode and write one JPEG (a seam the tests use to simulate a crash)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 failure
        raise PipelineError(str(path), "JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def dump_json(path: Path, obj: object) -> None:
    """Write ``obj`` as compact JSON (annotation files are large; the writers share one format)."""
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def round2(v: float) -> float:
    """``v`` to two decimals: the precision of every coordinate the datasets write."""
    return round(float(v), 2)
