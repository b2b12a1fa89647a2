"""The data stage: make one dataset ready under ``data/<profile>/<dataset>`` and write its manifest.

``synthetic`` profiles generate the dataset (deterministic by seed, real file formats);
``files`` profiles check that an existing copy has every file the pipeline reads, naming the
first one missing; ``download`` profiles first fetch, verify and extract the archives listed in
``data.archives`` into that layout (see :mod:`.acquire`), then check it the same way. Either way
the stage ends by writing ``data/<profile>/<dataset>.manifest.json`` (file sizes and annotation
checksums): downstream stages depend on the manifest, so Snakemake and DVC rerun them exactly
when the data changed, and the user's own dataset folder is never declared as an output that a
workflow engine might delete.

Before anything else the stage checks the profile's pinned pretrained backbones
(:func:`pipeline.pretrain.weights.verify_profile`: file, sha256, pretrain config) and records them in
the manifest, so a missing or changed weights file stops the pipeline with one line naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import io
from ..config import Paths
from ..errors import PipelineError
from ..pretrain.weights import verify_profile
from . import synthetic
from .acquire import install

# What the pipeline reads, relative to the dataset root (HRNet's layout).
REQUIRED = {
    "coco": [
        "annotations/person_keypoints_train2017.json",
        "annotations/person_keypoints_val2017.json",
        "annotations/image_info_test-dev2017.json",
        "person_detection_results/COCO_val2017_detections_AP_H_56_person.json",
        "person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json",
        "images/train2017/",
        "images/val2017/",
        "images/test2017/",
    ],
    "mpii": ["annot/train.json", "annot/valid.json", "annot/gt_valid.mat", "images/"],
}


def verify(root: Path, dataset: str) -> dict[str, Any]:
    """Check the files the pipeline needs; return the manifest entries."""
    entries: dict[str, Any] = {}
    for rel in REQUIRED[dataset]:
        p = root / rel
        if rel.endswith("/"):
            if not p.is_dir():
                raise PipelineError(str(p), "image folder not found")
            entries[rel] = {"files": sum(1 for _ in p.iterdir())}
        else:
            if not p.is_file():
                raise PipelineError(str(p), "file not found")
            entries[rel] = {"bytes": p.stat().st_size, "sha256": io.sha256_file(p)}
    return entries


def prepare_dataset(params: dict[str, Any], profile: str, dataset: str, *, progress: bool = True) -> Path:
    """Generate or verify ``dataset`` for ``profile``; returns the manifest path."""
    # first: a missing or changed pretrained backbone stops the stage before it writes anything
    pretrained = verify_profile(params, profile)
    prof = params["profiles"][profile]
    paths = Paths(profile)
    root = paths.dataset(dataset)
    source = prof["data"]["source"]
    summary: dict[str, Any] = {}
    if source == "synthetic":
        syn = prof["data"]["synthetic"]
        kwargs = dict(seed=params["seed"], image_size=tuple(syn["image_size"]), progress=progress,
                      difficulty=syn["difficulty"], **syn[dataset])
        gen = synthetic.generate_coco if dataset == "coco" else synthetic.generate_mpii
        if dataset == "mpii":
            kwargs.pop("test_images", None)
        summary = gen(root, **kwargs)
    elif source == "download":
        data = prof["data"]
        cache = Path(data["cache"]) if data.get("cache") else paths.archives
        summary = {"archives": install(data["archives"][dataset], root, cache, progress=progress,
                                       key=f"profiles.{profile}.data.archives.{dataset}")}
    manifest = {"profile": profile, "dataset": dataset, "source": source, "root": str(root),
                "summary": summary, "files": verify(root, dataset), "pretrained": pretrained}
    out = paths.manifest(dataset)
    io.write_json(out, manifest)
    return out
