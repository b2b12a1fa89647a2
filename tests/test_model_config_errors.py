"""Configuration and weight files a user can get wrong, each one line naming the key or file: params.yaml
itself, model settings (backbone names, pretrained narrow models), a device without CUDA, HRFormer
checkpoints, and a final checkpoint that does not fit its run's model."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import Paths, load_params, resolve_run
from pipeline.engine import builders
from pipeline.engine.evaluate import load_checkpoint, load_model
from pipeline.errors import PipelineError
from pipeline.models.hrformer import HRFormer, load_official_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml", "smoke")


def _cfg(params, run: str, **model) -> dict:
    cfg = copy.deepcopy(resolve_run(params, run))
    cfg["model"].update(model)
    cfg["model"].pop("backbone_weights", None)
    return cfg


@pytest.mark.parametrize("run, model, where, what", [
    ("coco_hrnet_w32_mse", {"pretrained": True}, "hrnet_w32.model.width",
     "pretrained HRNet weights exist only for width 1.0"),
    ("coco_simplebaseline_mse", {"pretrained": True}, "simplebaseline_res152.model.width",
     "pretrained ResNet weights exist only for width 1.0"),
    ("coco_simplebaseline_mse", {"backbone": "resnet7"}, "simplebaseline_res152.model.backbone",
     "unknown SimpleBaseline backbone 'resnet7' (a timm ResNet: "),
    ("coco_hrformer_base_mse", {"backbone": "hrformer_huge"}, "hrformer_base.model.backbone",
     "unknown HRFormer config 'hrformer_huge' (choose from ['hrformer_base', 'hrformer_demo', 'hrformer_small'])"),
    ("coco_hrformer_base_mse", {"pretrained": True, "weights": "w.pth"}, "hrformer_base.model.width",
     "pretrained HRFormer weights exist only for width 1.0"),
])
def test_bad_model_settings_name_their_key(params, run, model, where, what):
    cfg = _cfg(params, run, **model)
    assert cfg["model"].get("width", 1.0) != 1.0 or "backbone" in model  # the smoke models are narrow
    with pytest.raises(PipelineError) as exc:
        builders.model(cfg)
    assert exc.value.where == f"params.yaml: profiles.smoke.archs.{where}"
    assert exc.value.what.startswith(what)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_device_without_cuda(params):
    cfg = _cfg(params, "coco_hrnet_w32_mse")
    cfg["device"] = "auto"
    assert builders.device(cfg) == torch.device("cpu")
    cfg["device"] = "cuda"
    with pytest.raises(PipelineError) as exc:
        builders.device(cfg)
    assert str(exc.value) == "profiles.smoke.device: cuda requested but no CUDA device is visible"


def test_an_hrformer_checkpoint_must_be_a_state_dict(tmp_path):
    model = HRFormer(17, "hrformer_small", width=0.125)
    path = tmp_path / "hrformer.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(PipelineError) as exc:
        load_official_checkpoint(model, path)
    assert str(exc.value) == f"{path}: not an HRFormer checkpoint (holds a list, not a state dict)"
    # AdamW spares exactly the relative-position bias tables (the pose config's custom_keys)
    tables = {n for n, _ in model.named_parameters() if n.endswith("relative_position_bias_table")}
    assert tables and model.no_weight_decay_keys() == tables


def test_a_final_checkpoint_that_does_not_fit_the_run(params, tmp_path):
    path = tmp_path / "final.pth"
    torch.save({"weights": {}}, path)
    with pytest.raises(PipelineError) as exc:
        load_checkpoint(path)
    assert str(exc.value) == f"{path}: not a final checkpoint of this pipeline (no 'model' state dict)"
    cfg = _cfg(params, "coco_hrnet_w32_mse")
    other = builders.model(_cfg(params, "coco_simplebaseline_mse")).state_dict()
    with pytest.raises(PipelineError) as exc:
        load_model(cfg, {"model": other}, path)
    assert exc.value.where == str(path)
    assert exc.value.what.startswith("weights do not fit the model of run 'coco_hrnet_w32_mse' (hrnet_w32): ")
    assert "Missing key(s)" in exc.value.what or "Unexpected key(s)" in exc.value.what


def test_params_files_that_are_not_params(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(PipelineError) as exc:
        load_params(bad)
    assert exc.value.where == str(bad) and exc.value.what.startswith("not valid YAML (")
    bad.write_text("- profile\n- smoke\n")
    with pytest.raises(PipelineError) as exc:
        load_params(bad)
    assert str(exc.value) == f"{bad}: must be a mapping of keys to values"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["profiles"]["smoke"]["data"]["synthetic"]
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(PipelineError) as exc:
        load_params(bad)
    assert str(exc.value) == f"{bad}: profiles.smoke.data.synthetic: required when data.source is 'synthetic'"
    with pytest.raises(PipelineError, match="'../x' is not a valid profile name"):
        Paths("../x")


def test_profiles_that_are_not_a_mapping_are_named_by_the_schema(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profiles"] = ["smoke"]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(PipelineError) as exc:
        load_params(bad)
    assert "profiles" in exc.value.where and "Traceback" not in str(exc.value)


def test_an_existing_copy_without_its_image_folder(tmp_path):
    """``data.source: files`` verifies a copy in place: a missing image folder is named."""
    from pipeline.data.prepare import REQUIRED, verify

    for rel in REQUIRED["coco"]:
        if rel != "images/val2017/":
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).mkdir() if rel.endswith("/") else (tmp_path / rel).write_text("{}")
    with pytest.raises(PipelineError) as exc:
        verify(tmp_path, "coco")
    assert str(exc.value) == f"{tmp_path / 'images/val2017'}: image folder not found"
