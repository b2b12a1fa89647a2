"""Synthetic human-pose datasets written in the real COCO and MPII formats.

Why: the benchmark must run end to end (train top-down pose models, score them with
pycocotools and MPII PCKh) on a CPU in minutes, through exactly the readers, file layouts and
metrics that the real data uses. So this package draws articulated people and writes them as
COCO ``person_keypoints_*.json`` + JPEGs + person detections, and as HRNet's converted MPII
``annot/*.json`` + ``gt_valid.mat``.

The figures are a real (if small) pose problem: a 3D stick body with plausible proportions and
joint ranges is posed, turned (front, back, profile), rolled in the image plane, scaled and
projected; its parts are drawn as outlined capsules and polygons in depth order, with left and
right limbs in different colour families (left always the lighter one), a face only on the
front of the head and a badge on the left chest. Backgrounds are cluttered (including
limb-like distractors), other people and occluders hide joints (COCO v=1), people leave the
frame (v=0), and blur + noise + JPEG finish the image.

Everything is deterministic by seed: each image has its own random stream derived from
``(seed, dataset, split, index)``, so a split does not change when another split's size does.

Modules, lower layers first (each imports only the ones above it):

- ``draws``: scalar random draws; ``anatomy``: named points and part ids; ``style``: COCO-like
  and MPII-like scenes and the difficulty knob;
- ``pose``: random poses, proportions and views; ``body``: the posed 3D figure;
- ``primitives``: drawing primitives and colours; ``appearance``: palettes and drawable parts;
- ``person``: a figure placed in the frame; ``clutter``: background, clutter, camera finish;
  ``visibility``: joint labels from the label map; ``scene``: one whole image;
- ``files``, ``seeding``, ``arguments``: JPEG/JSON writing, random streams, argument checks;
  ``detections``: the simulated person detector;
- ``coco_writer`` (``generate_coco``) and ``mpii_writer`` (``generate_mpii``): the datasets.
"""
from __future__ import annotations

from . import files
from .body import build_body, rotation_y
from .coco_writer import generate_coco
from .files import write_jpeg
from .mpii_writer import generate_mpii
from .person import Person
from .pose import pose_standing, sample_build, sample_view
from .scene import max_overlap, overlap_fraction, render_scene
from .seeding import image_rng
from .style import COCO_STYLE, MPII_STYLE, with_difficulty

# Besides the two generators, the helpers the tests probe the generator with (tests/test_synthetic.py);
# ``files`` is the module holding the JPEG seam they patch.
__all__ = ["generate_coco", "generate_mpii",
           "files", "build_body", "rotation_y", "write_jpeg", "Person", "pose_standing", "sample_build",
           "sample_view", "max_overlap", "overlap_fraction", "render_scene", "image_rng", "COCO_STYLE", "MPII_STYLE",
           "with_difficulty"]
