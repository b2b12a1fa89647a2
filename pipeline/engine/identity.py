"""What a training checkpoint was made from besides its config and code: the data files the run reads and
the weights it starts from, each by the sha256 of its bytes.

A resume continues a run's epochs only when they were trained on the same inputs: checkpoints written
before the data were regenerated (another synthetic ``difficulty``, a new annotation release), before a
pretrained backbone was replaced, or before an ``init_from`` run was retrained, are not part of this run
and are never resumed (:func:`pipeline.engine.train.find_resume_checkpoint`).

The data are identified by the annotation and ground-truth files the run reads (training split, and
the validation split it scores each epoch). Synthetic data are a function of the training code (the
``data`` package is in the code hash) and of the generator settings in params.yaml; every setting
(seed, image size, counts, difficulty) changes the people drawn, hence these files, so their bytes
identify the generated set too. Images are not hashed (COCO's are 19 GB; the annotations change with
every generated set and a real release's images never change), and the derived tune split is a
function of the train file and the run's ``tune`` config.

Everything is hashed once per training start (COCO's train annotations, ~450 MB, take about a second),
never per epoch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io import sha256_file
from . import builders

Inputs = dict[str, dict[str, str]]
MISSING = "missing"


def data_files(cfg: dict[str, Any]) -> list[Path]:
    """The annotation and ground-truth files a training run reads: its training split and, unless it
    validates on the tune split (drawn from the training file), the validation split and its ground truth."""
    root = Path(cfg["data"]["root"])
    validates_on_val = builders.holdout_split(cfg) == "val"
    if cfg["dataset"] == "mpii":
        names = [builders.MPII_SPLITS["train"]]
        if validates_on_val:
            names += [builders.MPII_SPLITS["val"], builders.MPII_GT_VALID]
    else:
        names = [builders.COCO_SPLITS["train"][0]]
        if validates_on_val:
            names += [builders.COCO_SPLITS["val"][0], builders.COCO_SPLITS["val"][3]]
    return [root / name for name in dict.fromkeys(names)]


def weight_files(cfg: dict[str, Any]) -> list[Path]:
    """The files a run's initial weights come from: the ``init_from`` run's ``final.pth``, else the
    pinned pretrained backbone (demo/smoke) or HRFormer's ImageNet checkpoint. timm's hub weights have
    none here: params.yaml pins their tag, which the config hash covers."""
    if cfg.get("init_from") is not None:
        return [builders.init_checkpoint(cfg)]
    model = cfg["model"]
    if model.get("backbone_weights") is not None:
        return [Path(model["backbone_weights"]["path"])]
    if model.get("pretrained") and model.get("weights"):
        return [Path(model["weights"])]
    return []


def _digests(paths: list[Path]) -> dict[str, str]:
    return {p.as_posix(): sha256_file(p) if p.is_file() else MISSING for p in paths}


def run_inputs(cfg: dict[str, Any]) -> Inputs:
    """``{"data": {file: sha256}, "weights": {file: sha256}}``: stored in every epoch checkpoint and
    compared on resume (paths as the config gives them, relative to the project, so a moved project
    still resumes)."""
    return {"data": _digests(data_files(cfg)), "weights": _digests(weight_files(cfg))}


def inputs_hash(inputs: Inputs) -> str:
    """One SHA-256 over :func:`run_inputs`, for the MLflow run's identity tags."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def changed_inputs(recorded: Any, current: Inputs) -> str:
    """What differs between a checkpoint's recorded inputs and the current ones, for the log line
    saying why it is not resumed ("" when nothing does)."""
    if not isinstance(recorded, dict):
        return "the checkpoint records no inputs (written by an earlier version)"
    changes = []
    for part in ("data", "weights"):
        old, new = recorded.get(part) or {}, current[part]
        for name in sorted(set(old) | set(new)):
            if name not in new:
                changes.append(f"{name} no longer read")
            elif name not in old:
                changes.append(f"{name} newly read")
            elif old[name] != new[name]:
                changes.append(f"{name} changed")
    return ", ".join(changes)
