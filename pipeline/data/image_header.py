"""An image's size from its header, checked before the image is decoded.

Why: a JPEG of under a megabyte may declare 30000 × 30000 pixels; decoding it takes gigabytes (a
DataLoader worker holding several of them is killed for memory) and a picture that is not the one
the annotation describes is trained or scored on without a word. The header states the size in its
first bytes, so it is compared, before decoding, with the size the annotation gives (COCO's
``images[].width/height``) and with :data:`MAX_IMAGE_PIXELS`. JPEG and PNG headers are read here
(every image of COCO and MPII is a JPEG; the synthetic data are JPEG or PNG); for any other format
the decoded image is checked instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import PipelineError

#: Largest image (width × height) a dataset may hold: 50 megapixels. COCO's images are at most
#: 640 × 640 (0.4 MP) and MPII's 1920 × 1080 (2.1 MP), so real data stay 25 times below it, while one
#: decoded 50-MP image (150 MB as 8-bit BGR) still fits any data-loading worker.
MAX_IMAGE_PIXELS = 50_000_000

# JPEG markers that start a frame and carry its size (SOF0-SOF15 except DHT, JPG and DAC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field (TEM, RST0-RST7); SOI and EOI end the search below
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _be16(buf: memoryview, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def _jpeg_size(buf: memoryview) -> tuple[int, int] | None:
    """(width, height) of a JPEG's first frame header, walking the segments from SOI (none: no frame
    header before the image data, or a height left to a DNL marker)."""
    pos, end = 2, len(buf)
    while pos + 4 <= end:
        if buf[pos] != 0xFF:
            return None  # not at a marker: a damaged header, left to the decoder
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or the image data: no frame header first
            return None
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height, width = _be16(buf, pos + 5), _be16(buf, pos + 7)
            return (width, height) if width and height else None
        pos += 2 + _be16(buf, pos + 2)
    return None


def _png_size(buf: memoryview) -> tuple[int, int] | None:
    """(width, height) of a PNG's IHDR chunk, the first chunk of every PNG."""
    if len(buf) < 24 or bytes(buf[12:16]) != b"IHDR":
        return None
    width = int.from_bytes(bytes(buf[16:20]), "big")
    height = int.from_bytes(bytes(buf[20:24]), "big")
    return width, height


def header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) an encoded JPEG or PNG declares in its header, without decoding it; ``None``
    for other formats or a header that cannot be read (the decoder then has its say)."""
    buf = memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B")
    if bytes(buf[:3]) == b"\xff\xd8\xff":
        return _jpeg_size(buf)
    if bytes(buf[:8]) == _PNG_SIGNATURE:
        return _png_size(buf)
    return None


def _wxh(size: Sequence[float]) -> str:
    return "×".join(str(int(v)) if float(v).is_integer() else f"{float(v):g}" for v in size[:2])


def check_image_size(path: str, size: tuple[int, int], expected: Sequence[float] | None, *,
                     from_header: bool = True) -> None:
    """Refuse an image whose ``size`` (width, height) differs from the annotation's ``expected`` one
    (when the annotation gives one) or exceeds :data:`MAX_IMAGE_PIXELS`: one line naming the file.
    ``from_header``: the size was read from the header (so nothing was decoded), not from the pixels."""
    width, height = size
    source = "per its header" if from_header else "decoded"
    if expected is not None and (float(width), float(height)) != (float(expected[0]), float(expected[1])):
        raise PipelineError(str(path), f"the image is {_wxh(size)} pixels ({source}) but its annotation says "
                                       f"{_wxh(expected)}: not the annotated picture; replace the file "
                                       "(e.g. download it again) or fix the annotation's width and height")
    if width * height > MAX_IMAGE_PIXELS:
        raise PipelineError(str(path), f"the image is {_wxh(size)} pixels ({source}), more than the "
                                       f"{MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit for a dataset image "
                                       f"(MAX_IMAGE_PIXELS); {'not decoded: ' if from_header else ''}"
                                       "replace the file")
