"""The rehearsal's stand-in ImageNet weights (scripts/rehearsal/weights.py) load through the pipeline's
own paths: timm's hub download-and-load for the paper's three timm backbones, and our official-checkpoint
loader for HRFormer-B, with every tensor landing and nothing in the files unaccounted for."""
from __future__ import annotations

import hashlib
import os
import re

import pytest
import torch

from pipeline.models import build_model
from scripts.rehearsal.hrt_official import (HEAD_PREFIXES, OFFICIAL_CONFIGS, PUBLISHED_PARAMS, official_keys,
                                            parameter_count)
from scripts.rehearsal.weights import (PAPER_TIMM_TAGS, build_hrformer_checkpoint, build_hub_cache,
                                       check_hrformer_checkpoint, check_hub_cache,
                                       expected_backbone_tensors)

TIMM_HEADS = {"resnet152.tv_in1k": ("fc.",), "hrnet_w32.ms_in1k": HEAD_PREFIXES,
              "hrnet_w48.ms_in1k": HEAD_PREFIXES}


def test_hub_cache_loads_through_timms_hub_path(tmp_path):
    hf_home = tmp_path / "hf"
    snapshots = build_hub_cache(hf_home)
    assert set(snapshots) == set(PAPER_TIMM_TAGS)
    for tag, snap in snapshots.items():
        # the hub's own layout: models--timm--<tag>/{blobs/<sha256>, refs/main, snapshots/<commit>/<file>}
        repo = hf_home / "hub" / f"models--timm--{tag}"
        commit = (repo / "refs" / "main").read_text()
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        assert snap == repo / "snapshots" / commit / "model.safetensors" and snap.is_symlink()
        assert not os.path.isabs(os.readlink(snap))
        blob = snap.resolve()
        assert blob.parent == (repo / "blobs").resolve()
        assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()

    # HF_HOME=hf_home, HF_HUB_OFFLINE=1, a fresh process: build_model(pretrained: true) → timm → hub
    report = check_hub_cache(hf_home)
    for tag, r in report.items():
        assert r["backbone_tensors"] > 900 and not r["missing"] and not r["differ"], (tag, r)
        assert r["unused"] and all(k.startswith(TIMM_HEADS[tag]) for k in r["unused"]), (tag, r["unused"])
        assert r["eval_output_finite"], tag

    # nothing else supplies the weights: without the cached file the offline load fails
    snapshots["hrnet_w32.ms_in1k"].unlink()
    with pytest.raises(RuntimeError, match="hub path failed"):
        check_hub_cache(hf_home, ["hrnet_w32.ms_in1k"])


def test_official_hrformer_keys_match_the_published_models():
    for name in OFFICIAL_CONFIGS:   # the official cls/README.md's #params: 8.0M, 13.5M, 50.3M
        assert round(parameter_count(official_keys(name)) / 1e5) == round(PUBLISHED_PARAMS[name] / 1e5), name
    keys = official_keys("hrt_base")
    shapes = {k: e.shape for k, e in keys.items()}
    assert shapes["stage2.0.branches.1.1.attn.attn.relative_position_bias_table"] == (169, 4)
    assert shapes["stage3.3.branches.2.0.attn.attn.q_proj.weight"] == (312, 312)
    assert shapes["stage4.1.branches.3.1.mlp.dw3x3.weight"] == (2496, 1, 3, 3)
    assert shapes["stage4.1.fuse_layers.3.0.2.2.weight"] == (624, 78, 1, 1)   # 3 steps 78 → 624
    assert shapes["stage4.1.fuse_layers.0.3.0.weight"] == (78, 624, 1, 1)
    assert shapes["transition3.3.0.0.weight"] == (624, 312, 3, 3)
    assert shapes["incre_modules.3.0.conv2.weight"] == (256, 1, 3, 3)           # BottleneckDWP
    assert shapes["downsamp_modules.2.2.bias"] == (1024,)
    assert shapes["final_layer.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["classifier.weight"] == (1000, 2048)
    assert "transition2.0.0.weight" not in shapes   # unchanged branches have no transition
    assert sum(k.startswith("stage4.1.fuse_layers.") for k in keys) > 0


def test_hrformer_official_checkpoint_loads_every_tensor(tmp_path):
    path = build_hrformer_checkpoint(tmp_path / "hrformer_base-32815020_20220226.pth")
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["model"] and list(saved["model"]) == list(official_keys("hrt_base"))

    r = check_hrformer_checkpoint(path)   # through build_model(pretrained: true, weights: path)
    assert r["backbone_tensors"] > 1800 and r["used"] > 1800
    for problem in ("missing", "differ", "unaccounted", "ignored_mismatch", "index_differs"):
        assert not r[problem], (problem, r[problem][:5])
    assert r["eval_output_finite"]

    # MMPose's layout of the same tensors (same seed) loads the same values
    mm = build_hrformer_checkpoint(tmp_path / "mmpose.pth", layout="mmpose")
    assert list(torch.load(mm, weights_only=True)) == ["state_dict"]
    own = build_model({"family": "hrformer", "backbone": "hrformer_base", "pretrained": True,
                       "weights": str(mm)}, 17).backbone.state_dict()
    expected, _ = expected_backbone_tensors(saved["model"], own)
    assert set(expected) == set(own)
    for key, value in expected.items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key
