"""Evaluation builds the architecture without its pretrained weights: the checkpoint replaces every
tensor, so an evaluation job on a node needs neither timm's hub nor HRFormer's ImageNet file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import load_params, resolve_run
from pipeline.engine import builders
from pipeline.engine.evaluate import load_model
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent


def _cfg(run: str) -> dict:
    return resolve_run(load_params(ROOT / "params.yaml", "paper"), run, "paper")


def test_hrformer_evaluation_needs_no_imagenet_file(tmp_path):
    cfg = _cfg("coco_hrformer_base_mse")
    cfg["model"]["weights"] = str(tmp_path / "absent.pth")  # the ImageNet file is not on this node
    with pytest.raises(PipelineError, match="absent.pth"):
        builders.model(cfg)  # training needs it
    src = builders.model(cfg, initial_weights=False)
    ckpt = {"model": {k: v + 1 for k, v in src.state_dict().items()}}
    net = load_model(cfg, ckpt, tmp_path / "final.pth")
    first = next(iter(ckpt["model"]))
    assert torch.equal(net.state_dict()[first], ckpt["model"][first])


def test_timm_evaluation_fetches_nothing(tmp_path, monkeypatch):
    import timm.models._builder as timm_builder

    def no_hub(*args, **kwargs):
        raise AssertionError("pretrained weights fetched at evaluation")

    monkeypatch.setattr(timm_builder, "load_pretrained", no_hub)
    cfg = _cfg("mpii_hrnet_w32_mse")
    with pytest.raises(AssertionError, match="fetched"):
        builders.model(cfg)
    net = builders.model(cfg, initial_weights=False)
    load_model(cfg, {"model": net.state_dict()}, tmp_path / "final.pth")
