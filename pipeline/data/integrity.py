"""The ids a reader keys on must be unique: checked on every annotation file before any use.

Why: readers index annotation files by id and a repeated id is not an error to them, it silently
picks one of the entries. pycocotools' ``COCO.createIndex`` keeps the last annotation of an id, and
``COCOeval`` looks each image's people up by id, so a repeated annotation id scores a person on
another image; a repeated image id replaces an image's entry (its size, its file); two image ids
naming one file crop the same picture for both. HRNet's MPII json has no id at all: a person is told
apart by its image, centre and scale, and one listed twice is counted twice.

Each check stops at the first repeated key with one line naming the file, the key and how often it
occurs (and how many keys repeat in all, so one fix is not followed by the next error).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import PipelineError

#: Longest echo of a repeated key in a message (a malformed file may hold anything there).
_ECHO_CHARS = 80


def _hashable(key: Any) -> Hashable:
    """``key`` itself, or its text when it cannot be counted (a list where an id should be)."""
    return key if isinstance(key, Hashable) else repr(key)


def _echo(key: Any) -> str:
    text = repr(key) if isinstance(key, str) else str(key)
    return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS - 1] + "…"


def first_repeat(keys: Iterable[Any]) -> tuple[Any, int, int] | None:
    """``(key, occurrences, keys that repeat in all)`` for the first key (in file order) that occurs
    more than once, or ``None`` when every key is unique."""
    counts = Counter(_hashable(k) for k in keys)  # keeps the order of first appearance
    repeated = [(k, n) for k, n in counts.items() if n > 1]
    if not repeated:
        return None
    key, times = repeated[0]
    return key, times, len(repeated)


def require_unique(where: str, label: str, keys: Iterable[Any], consequence: str) -> None:
    """Raise a one-line :class:`PipelineError` naming ``where`` when a key of ``keys`` repeats.

    ``label`` names a key (``"annotation id"``), ``consequence`` says why a repeat is refused rather
    than read and what to do.
    """
    found = first_repeat(keys)
    if found is None:
        return
    key, times, repeated = found
    more = f" (and {repeated - 1} more repeat)" if repeated > 1 else ""
    raise PipelineError(where, f"{label} {_echo(key)} occurs {times} times{more}: {consequence}")


def _dicts(data: dict, field: str) -> list[dict]:
    """The object entries of ``data[field]`` (structure errors are the readers' to report)."""
    entries = data.get(field)
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


_FIX = "fix the file or download it again"


def check_coco_ids(where: str, data: Any, file_names: bool = True) -> None:
    """Image ids, image file names, annotation ids and category ids of a COCO annotation or
    image-info file are unique (absent lists and fields are left to the readers). ``file_names``:
    False where no image is read (scoring: an image-bootstrap copy of an image keeps its file name)."""
    if not isinstance(data, dict):
        return
    images = _dicts(data, "images")
    require_unique(where, "image id", (img["id"] for img in images if "id" in img),
                   f"each image needs its own id (readers keep one entry per id); {_FIX}")
    if file_names:
        require_unique(where, "image file_name", (img["file_name"] for img in images if "file_name" in img),
                       f"two image ids name one file, so people of one would be cropped from the other; {_FIX}")
    require_unique(where, "annotation id", (a["id"] for a in _dicts(data, "annotations") if "id" in a),
                   "each annotation needs its own id (pycocotools indexes annotations by id and would "
                   f"score people on the wrong images); {_FIX}")
    require_unique(where, "category id", (c["id"] for c in _dicts(data, "categories") if "id" in c),
                   f"each category needs its own id (pycocotools indexes categories by id); {_FIX}")


def mpii_person_key(entry: dict) -> tuple:
    """What tells two people of HRNet's MPII json apart (it has no id): image, centre and scale."""
    image, center, scale = entry.get("image"), entry.get("center"), entry.get("scale")
    try:
        return (str(image), *(float(v) for v in center), float(scale))
    except (TypeError, ValueError):  # malformed entries: the reader names them
        return (str(image), repr(center), repr(scale))


def check_mpii_people(where: str, entries: Any) -> None:
    """No person of an MPII json is listed twice (same image, centre and scale)."""
    if not isinstance(entries, list):
        return
    require_unique(where, "person (image, center x, center y, scale)",
                   (mpii_person_key(e) for e in entries if isinstance(e, dict)),
                   f"one person listed twice is trained on and scored twice; {_FIX}")


def check_mpii_image_ids(where: str, names_and_ids: Iterable[tuple[str, int]]) -> None:
    """Different image names never share an image id (the numeric stem of the name, or the entry's
    index): the bootstrap resamples people by image id, so two pictures sharing one would be drawn as
    one image."""
    owner: dict[int, str] = {}
    for name, image_id in names_and_ids:
        first = owner.setdefault(image_id, name)
        if first != name:
            raise PipelineError(where, f"images {_echo(first)} and {_echo(name)} both get image id {image_id} "
                                       "(the numeric part of the name, or the entry index for other names): "
                                       "rename one of them")
