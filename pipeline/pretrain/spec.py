"""What a pretraining is made of, without importing torch (the Snakefile and the config validator use it).

The *pretrain config* of an architecture is everything its weights depend on: the profile's
``pretrain`` section, the architecture's ``model`` section without the ``backbone_weights`` pin
(the pin is the result, not an input: leaving it out lets a new sha256 be pinned without making the
weights look stale), and :data:`TASK`, the version of the image generator and labels. The sidecar
records it, the Snakemake rule uses it as its ``params`` (a change reruns the rule), and the data
stage compares it with params.yaml to find weights made under another config.
"""
from __future__ import annotations

import copy
from typing import Any

from ..errors import PipelineError
from ..paths import Paths

# Bump when pipeline/pretrain/shapes.py or the classification neck changes what is learnt: the pretrain
# config changes with it, so the committed weights show up as stale (data stage) and get regenerated.
TASK = "shapes-seg-v1"
PIN_KEY = "backbone_weights"


def section(params: dict[str, Any], profile: str) -> dict[str, Any] | None:
    """The profile's ``pretrain`` section, or None (the paper profile: ImageNet weights instead)."""
    return params["profiles"][profile].get("pretrain")


def model_section(params: dict[str, Any], profile: str, arch: str) -> dict[str, Any]:
    archs = params["profiles"][profile]["archs"]
    if arch not in archs:
        raise PipelineError("--arch", f"{arch!r} is not an architecture of profiles.{profile}.archs "
                                      f"({', '.join(archs)})")
    return archs[arch]["model"]


def pin(params: dict[str, Any], profile: str, arch: str) -> dict[str, Any] | None:
    """The architecture's ``model.backbone_weights`` ({path, sha256}) or None (no pretrained start)."""
    return model_section(params, profile, arch).get(PIN_KEY)


def pin_key(profile: str, arch: str) -> str:
    return f"profiles.{profile}.archs.{arch}.model.{PIN_KEY}"


def pretrain_config(params: dict[str, Any], profile: str, arch: str) -> dict[str, Any]:
    """The config the weights of ``arch`` depend on (see the module docstring); JSON-serialisable."""
    sec = section(params, profile)
    if sec is None:
        raise PipelineError(f"profiles.{profile}.pretrain", "not set: this profile has no pretraining")
    model = {k: copy.deepcopy(v) for k, v in model_section(params, profile, arch).items() if k != PIN_KEY}
    return {"task": TASK, "arch": arch, "model": model, "pretrain": copy.deepcopy(sec)}


def pinned_archs(params: dict[str, Any], profile: str) -> list[str]:
    """Architectures of the profile that start from pretrained backbone weights."""
    return [a for a in params["profiles"][profile]["archs"] if pin(params, profile, a) is not None]


def check_pins(params: dict[str, Any], source: str) -> None:
    """What the schema cannot say: a pin needs the profile's ``pretrain`` section, excludes
    ``pretrained: true`` (ImageNet) and names the path where the ``pretrain`` stage writes."""
    for pname, prof in params["profiles"].items():
        sec = prof.get("pretrain")
        if sec is not None and sec["batch_size"] > sec["train_images"]:
            raise PipelineError(f"{source}: profiles.{pname}.pretrain.batch_size",
                                f"{sec['batch_size']} is more than train_images ({sec['train_images']})")
        for arch, spec in prof["archs"].items():
            p = spec["model"].get(PIN_KEY)
            if p is None:
                continue
            key = f"{source}: {pin_key(pname, arch)}"
            if prof.get("pretrain") is None:
                raise PipelineError(key, f"needs a profiles.{pname}.pretrain section (the pretrain stage's config)")
            if spec["model"].get("pretrained"):
                raise PipelineError(key, "cannot be combined with pretrained: true (ImageNet weights)")
            want = Paths(pname).pretrained_weights(arch).as_posix()
            if p["path"] != want:
                raise PipelineError(f"{key}.path", f"{p['path']!r}: the pretrain stage writes {want!r}")
