"""The training variants' run keys: schema and config checks (one line naming the key), resolution
(runs without the keys resolve as before), the builders' codec / loss / model choices, HRNet at heatmap
strides 2 and 1, and ``init_from`` (weights across the CenteredHeatmaps wrapper, Snakemake's order)."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import OUTPUT_STRIDES, load_params, resolve_run, run_names, validate_params
from pipeline.engine import builders
from pipeline.errors import PipelineError
from pipeline.losses import HDMLoss, IntegralL1Loss, MSEHDMLoss
from pipeline.models import CenteredHeatmaps, build_model

from project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NEW_KEYS = ("alpha", "init_from")


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def _with_run(params, name: str, spec: dict, where: str = "study") -> dict:
    p = copy.deepcopy(params)
    (p["study"]["runs"] if where == "study" else p["runs"])[name] = spec
    return validate_params(p, "params.yaml")


def _refused(params, name: str, spec: dict, where: str = "study") -> str:
    with pytest.raises(PipelineError) as exc:
        _with_run(params, name, spec, where)
    assert "\n" not in str(exc.value)
    return str(exc.value)


# ------------------------------------------------------------------------------ config
def test_runs_without_the_new_keys_resolve_as_before(params):
    specs = params["runs"] | params["study"]["runs"]
    plain = [r for r in run_names(params, study=True)
             if not {"sigma", "alpha", "init_from", "split", "augment"} & set(specs[r])
             and "suppliers" not in (specs[r].get("hdm") or {}) and specs[r].get("heatmap_stride", 4) in (4, 8)]
    assert "coco_hrnet_w32_hdm" in plain and "coco_hrnet_w32_hdmsoft" not in plain
    for run in plain:
        for profile in params["profiles"]:
            cfg = resolve_run(params, run, profile)
            assert not set(NEW_KEYS) & set(cfg)
            assert "suppliers" not in cfg["hdm"]
            prof = params["profiles"][profile]
            arch = prof["archs"][cfg["arch"]].get("datasets", {}).get(cfg["dataset"], {})
            assert cfg["data"]["sigma"] == arch.get("sigma", prof["datasets"][cfg["dataset"]]["sigma"])
            assert cfg["model"].get("output_stride", 4) in (4, 8)
    # the optional hdm key is filled in by the builders, as epsilon_units
    cfg = resolve_run(params, "coco_hrnet_w32_hdm", "smoke")
    assert builders.with_defaults(cfg)["hdm"]["suppliers"] == "relu"
    assert builders.codec_name(cfg) == "hdm" and isinstance(builders.loss(cfg), HDMLoss)
    assert builders.loss(cfg).suppliers == "relu"


def test_new_losses_and_keys_resolve_only_where_set(params):
    p = _with_run(params, "coco_hrnet_w32_mse_hdm", {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse_hdm",
                                                     "alpha": 0.5, "hdm": {"dead_joints": "zero"}})
    p = _with_run(p, "coco_hrnet_w32_t2_mse", {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse",
                                               "heatmap_stride": 2, "sigma": 2.0})
    p = _with_run(p, "coco_hrnet_w32_s1_integral", {"dataset": "coco", "arch": "hrnet_w32", "loss": "integral",
                                                    "heatmap_stride": 1, "init_from": "coco_hrnet_w32_t2_mse"})
    cfg = resolve_run(p, "coco_hrnet_w32_mse_hdm", "smoke")
    assert cfg["alpha"] == 0.5 and "init_from" not in cfg and cfg["hdm"]["dead_joints"] == "zero"
    s2 = resolve_run(p, "coco_hrnet_w32_t2_mse", "smoke")
    assert s2["data"]["heatmap_size"] == [32, 48] and s2["data"]["input_size"] == [64, 96]
    assert s2["model"]["output_stride"] == 2 and s2["data"]["sigma"] == 2.0
    s1 = resolve_run(p, "coco_hrnet_w32_s1_integral", "paper")
    assert s1["data"]["heatmap_size"] == [288, 384] and s1["model"]["output_stride"] == 1
    assert s1["init_from"] == "coco_hrnet_w32_t2_mse"
    base = resolve_run(params, "coco_hrnet_w32_mse", "paper")
    assert s1["data"]["sigma"] == base["data"]["sigma"]  # no run sigma: the profile's
    assert {k: v for k, v in s2.items() if k not in ("name", "model", "data")} == \
        {k: v for k, v in resolve_run(params, "coco_hrnet_w32_mse", "smoke").items()
         if k not in ("name", "model", "data")}


@pytest.mark.parametrize("spec, where, what", [
    ({"loss": "mse_hdm"}, "alpha", "required for loss mse_hdm"),
    ({"loss": "hdm", "alpha": 1.0}, "alpha", "only for loss mse_hdm"),
    ({"loss": "mse_hdm", "alpha": 0}, "alpha", "0 is less than or equal to the minimum"),
    ({"loss": "integral", "sigma": -1.0}, "sigma", "less than or equal to the minimum"),
    ({"loss": "mse", "augment": {"rot_prob": 2}}, "augment.rot_prob", "greater than the maximum"),
    ({"loss": "mse", "augment": {"sigma": 2.0}}, "augment.sigma", "unknown key (allowed: flip, half_body_prob"),
    ({"loss": "mse", "heatmap_stride": 3}, "heatmap_stride", "is not one of [1, 2, 4, 8]"),
    ({"loss": "hdm", "hdm": {"suppliers": "sigmoid"}}, "hdm.suppliers", "is not one of ['relu', 'softmax']"),
    ({"loss": "mse", "init_from": "nope"}, "init_from", "'nope' is not a run of params.yaml"),
    ({"loss": "mse", "init_from": "coco_hrnet_w48_mse"}, "init_from", "'coco_hrnet_w48_mse' has arch hrnet_w48"),
    ({"loss": "mse", "init_from": "mpii_hrnet_w32_mse"}, "init_from", "'mpii_hrnet_w32_mse' has dataset mpii"),
    ({"loss": "mse", "init_from": "coco_hrnet_w32_new"}, "init_from", "in a cycle"),
    ({"loss": "mse_hdm", "alpha": 1.0, "codec": "udp"}, "codec", "needs loss: mse"),
])
def test_a_bad_variant_key_is_one_line_naming_it(params, spec, where, what):
    msg = _refused(params, "coco_hrnet_w32_new", {"dataset": "coco", "arch": "hrnet_w32", **spec})
    assert msg.startswith(f"params.yaml: study.runs.coco_hrnet_w32_new.{where}: ") and what in msg, msg


def test_augment_replaces_only_the_named_augmentation_keys(params):
    p = _with_run(params, "tune_coco_hrnet_w32_mse_aug", {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse",
                                                          "split": "tune", "augment": {"rot_prob": 0.6,
                                                                                       "scale_factor": 0.35}})
    cfg, base = resolve_run(p, "tune_coco_hrnet_w32_mse_aug", "demo"), resolve_run(p, "coco_hrnet_w32_mse", "demo")
    assert cfg["data"]["rot_prob"] == 0.6 and cfg["data"]["scale_factor"] == 0.35
    assert {k: v for k, v in cfg["data"].items() if k not in ("rot_prob", "scale_factor")} == \
        {k: v for k, v in base["data"].items() if k not in ("rot_prob", "scale_factor")}
    assert "augment" not in cfg


def test_init_from_checks_cycles_and_main_runs(params):
    p = copy.deepcopy(params)
    p["study"]["runs"]["coco_a"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse", "init_from": "coco_b"}
    p["study"]["runs"]["coco_b"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm", "init_from": "coco_a"}
    with pytest.raises(PipelineError, match=r"^params.yaml: study.runs.coco_a.init_from: .*coco_a -> coco_b -> coco_a"):
        validate_params(p, "params.yaml")
    msg = _refused(params, "coco_hrnet_w32_ft", {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm",
                                                 "init_from": "coco_hrnet_w32_s8_mse"}, where="main")
    assert msg.startswith("params.yaml: runs.coco_hrnet_w32_ft.init_from: 'coco_hrnet_w32_s8_mse' is a study-only")


def test_strides_1_and_2_are_hrnet_only(params):
    assert OUTPUT_STRIDES["hrnet"] == (1, 2, 4, 8)
    msg = _refused(params, "coco_sb_s2", {"dataset": "coco", "arch": "simplebaseline_res152", "loss": "mse",
                                          "heatmap_stride": 2})
    assert msg.startswith("params.yaml: study.runs.coco_sb_s2.heatmap_stride: 2: simplebaseline models"), msg


# ------------------------------------------------------------------------------ builders
def _cfg(params, spec: dict, name: str = "coco_hrnet_w32_variant") -> dict:
    return resolve_run(_with_run(params, name, {"dataset": "coco", "arch": "hrnet_w32", **spec}), name, "smoke")


def test_builders_pick_codec_loss_and_wrapper(params):
    cases = [({"loss": "integral"}, "integral", IntegralL1Loss, False, set()),
             ({"loss": "hdm", "hdm": {"suppliers": "softmax"}}, "hdm_softmax", HDMLoss, True, set()),
             ({"loss": "mse_hdm", "alpha": 2.0}, "gaussian", MSEHDMLoss, False, {"dark"})]
    for spec, codec, crit_type, wrapped, variants in cases:
        cfg = _cfg(params, spec)
        assert builders.codec_name(cfg) == codec and builders.codec(cfg).name == codec
        assert set(builders.eval_variants(cfg)) == variants
        crit = builders.loss(cfg)
        assert type(crit) is crit_type
        torch.manual_seed(0)
        assert isinstance(builders.model(cfg), CenteredHeatmaps) == wrapped  # centring for loss hdm only
    crit = builders.loss(_cfg(params, {"loss": "mse_hdm", "alpha": 2.0, "hdm": {"dead_joints": "zero"}}))
    assert crit.alpha == 2.0 and crit.hdm.dead_joints == "zero" and crit.hdm.suppliers == "relu"
    assert builders.loss(_cfg(params, {"loss": "hdm", "hdm": {"suppliers": "softmax"}})).suppliers == "softmax"


def test_hrnet_strides_2_and_1_upsample_the_stride4_features_before_the_head(params):
    torch.manual_seed(0)
    base = {"family": "hrnet", "backbone": "hrnet_w18_small", "width": 0.25}
    n4 = build_model(base, 17).eval()
    x = torch.randn(2, 3, 96, 64)
    for stride, size in ((2, (48, 32)), (1, (96, 64))):
        net = build_model({**base, "output_stride": stride}, 17).eval()
        assert list(net.state_dict()) == list(n4.state_dict())  # no parameter added
        net.load_state_dict(n4.state_dict())
        with torch.no_grad():
            out = net(x)
            feats = n4.backbone(x)[0]
            want = n4.head(torch.nn.functional.interpolate(feats, size=size, mode="bilinear", align_corners=False))
        assert out.shape == (2, 17, *size) and torch.allclose(out, want, atol=1e-6)
    # a constant-per-channel feature map stays constant: the upsampling adds no border artefact
    feats = torch.ones(1, 4, 3, 2)
    up = torch.nn.functional.interpolate(feats, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(up, torch.ones(1, 4, 6, 4))
    # the smoke hrnet_w32 run at stride 2: its model and the resolved heatmap size agree
    cfg = _cfg(params, {"loss": "mse", "heatmap_stride": 2, "sigma": 2.0})
    torch.manual_seed(0)
    builders.check_output_size(cfg, builders.model(cfg))


# ------------------------------------------------------------------------------ init_from
def _save_final(cfg: dict, net: torch.nn.Module) -> Path:
    path = builders.init_checkpoint(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "config": {"name": cfg["init_from"]}}, path)
    return path


@pytest.mark.parametrize("src, dst", [("mse", "hdm"), ("hdm", "mse")])
def test_init_from_loads_weights_across_the_centring_wrapper(params, tmp_path, monkeypatch, src, dst):
    monkeypatch.chdir(tmp_path)
    p = _with_run(params, f"test_hrnet_w32_ft_{dst}", {"dataset": "coco", "arch": "hrnet_w32", "loss": dst,
                                                       "init_from": f"coco_hrnet_w32_{src}"}, where="main")
    cfg = resolve_run(p, f"test_hrnet_w32_ft_{dst}", "smoke", seed=3)
    torch.manual_seed(1)
    src_net = builders.model(resolve_run(params, f"coco_hrnet_w32_{src}", "smoke"), initial_weights=False)
    assert isinstance(src_net, CenteredHeatmaps) == (src == "hdm")
    with torch.no_grad():
        for t in src_net.parameters():
            t.add_(0.01)  # "trained": differs from any fresh initialisation
    path = _save_final(cfg, src_net)
    assert path == Path("results/smoke/runs") / f"coco_hrnet_w32_{src}" / "seed3" / "final.pth"

    def no_backbone(*a, **k):
        raise AssertionError("a run with init_from must not load the pretrained backbone")
    monkeypatch.setattr("pipeline.pretrain.weights.load_backbone", no_backbone)
    net = builders.model(cfg)
    assert isinstance(net, CenteredHeatmaps) == (dst == "hdm")
    bare = lambda n: n.net if isinstance(n, CenteredHeatmaps) else n  # noqa: E731
    a, b = bare(src_net).state_dict(), bare(net).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_missing_or_unfitting_checkpoint_is_one_line(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = _with_run(params, "coco_hrnet_w32_ft", {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm",
                                                "init_from": "coco_hrnet_w32_mse"}, where="main")
    cfg = resolve_run(p, "coco_hrnet_w32_ft", "smoke")
    with pytest.raises(PipelineError) as exc:
        builders.model(cfg)
    assert str(exc.value) == ("results/smoke/runs/coco_hrnet_w32_mse/seed0/final.pth: not found: run "
                              "coco_hrnet_w32_ft starts from it (init_from); train run coco_hrnet_w32_mse "
                              "(seed 0) first")
    other = builders.model(resolve_run(params, "mpii_hrnet_w32_mse", "smoke"), initial_weights=False)  # 16 joints
    _save_final(cfg, other)
    with pytest.raises(PipelineError, match=r"final.pth: does not fit run coco_hrnet_w32_ft's model") as exc:
        builders.model(cfg)
    assert "\n" not in str(exc.value)
    # evaluation builds the bare architecture and loads the run's own checkpoint: init_from is not read
    builders.model(cfg, initial_weights=False)


def test_snakemake_trains_the_init_run_first(tmp_path):
    copy_project(tmp_path)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["study"]["runs"]["coco_hrnet_w32_ft"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm",
                                               "init_from": "coco_hrnet_w32_s8_mse", "train": {"epochs": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall",  # the target before --config (nargs)
                          "results/smoke/runs/coco_hrnet_w32_ft/seed1/final.pth", "--config", "profile=smoke"],
                         cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    blocks = re.split(r"\n(?=\[[^\]]+\]\nrule )|\n(?=rule )", out)
    ft = next(b for b in blocks if re.search(r"^rule train:", b, re.M) and "run=coco_hrnet_w32_ft" in b)
    assert "results/smoke/runs/coco_hrnet_w32_s8_mse/seed1/final.pth" in ft
    assert any("run=coco_hrnet_w32_s8_mse" in b and "seed=1" in b for b in blocks)
