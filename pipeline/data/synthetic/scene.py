"""One synthetic image: background, clutter, people, occluders, annotations, camera finish."""
from __future__ import annotations

import numpy as np

from .anatomy import OCCLUDER_LABEL, PART_SLOTS
from .clutter import camera_finish, draw_background, draw_clutter, random_shape
from .draws import uniform
from .person import Person, place_person
from .primitives import draw_prim, random_color, shade
from .style import COCO_STYLE, Style
from .visibility import annotate


def _draw_person(img: np.ndarray, person: Person, label: int, owner: np.ndarray) -> None:
    """Paint a figure (outline, fill, details) and record its amodal part map."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    outline = max(0.6, person.height / 180)
    for part in person.parts:
        dark = shade(part.color, 0.45)
        for prim in part.prims:
            draw_prim(img, prim, dark, aa=True, grow=outline)
        for prim in part.prims:
            draw_prim(img, prim, part.color, aa=True)
            draw_prim(mask, prim, part.part_id, aa=False, grow=outline)
        for prim, color in part.details:
            draw_prim(img, prim, color, aa=True)
    person.mask = mask
    sel = mask > 0
    owner[sel] = label + mask[sel]


def _draw_occluders(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, people: list[Person],
                    style: Style) -> None:
    """Objects in front of people: one aimed at a person (often), plus some random ones."""
    h, w = img.shape[:2]
    shapes = []
    if people and rng.random() < style.occluder_prob:
        target = people[int(rng.integers(len(people)))]
        lo, hi = target.px.min(axis=0), target.px.max(axis=0)
        shapes.append(random_shape(rng, w, h, (lo[0], lo[1], hi[0], hi[1])))
    for _ in range(int(rng.poisson(0.35))):
        shapes.append(random_shape(rng, w, h))
    for prims in shapes:
        color = random_color(rng)
        for prim in prims:
            draw_prim(img, prim, color, aa=True)
            draw_prim(owner, prim, OCCLUDER_LABEL, aa=False)


#: Placement attempts per person before it is left out of a crowded image.
_PLACEMENT_TRIES = 6


def max_overlap(d: float) -> float:
    """How much of the smaller of two people's boxes another may cover: photos of groups show
    some overlap, and the hardest setting allows heavy overlap (crops then hold two people)."""
    return 0.15 + 0.6 * d


def overlap_fraction(a: Person, b: Person) -> float:
    """Intersection of two people's joint boxes over the smaller box's area."""
    (ax0, ay0), (ax1, ay1) = a.px.min(axis=0), a.px.max(axis=0)
    (bx0, by0), (bx1, by1) = b.px.min(axis=0), b.px.max(axis=0)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    small = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return iw * ih / max(small, 1e-9)


def render_scene(rng: np.random.Generator, width: int, height: int, max_people: int,
                 style: Style = COCO_STYLE) -> tuple[np.ndarray, list[Person]]:
    """Draw one image; return it (BGR uint8) with its annotated people in draw order."""
    img = draw_background(rng, width, height)
    d = style.difficulty
    draw_clutter(rng, img, int(rng.integers(max(1, round(4 * d)), max(2, round(16 * d)))))
    n_people = int(rng.integers(1, max_people + 1))
    people: list[Person] = []
    for _ in range(n_people):
        person = place_person(rng, width, height, style)
        for _retry in range(_PLACEMENT_TRIES):
            if all(overlap_fraction(person, other) <= max_overlap(d) for other in people):
                people.append(person)
                break
            person = place_person(rng, width, height, style)
    keys = [p.height * uniform(rng, 0.7, 1.3) for p in people]
    people = [people[i] for i in np.argsort(keys, kind="stable")]   # far (small) first
    owner = np.zeros((height, width), np.uint16)
    for k, person in enumerate(people):
        _draw_person(img, person, (k + 1) * PART_SLOTS, owner)
    _draw_occluders(rng, img, owner, people, style)
    for k, person in enumerate(people):
        annotate(person, (k + 1) * PART_SLOTS, owner)
    return camera_finish(rng, img), people
