"""params.yaml: schema validation with one-line errors, profile resolution, the CLI's error path."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import Paths, load_params, resolve_run, validate_params
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def test_every_run_resolves_in_every_profile(params):
    for profile in params["profiles"]:
        for run in params["runs"]:
            cfg = resolve_run(params, run, profile)
            assert cfg["profile"] == profile and cfg["name"] == run
            assert cfg["data"]["root"] == f"data/{profile}/{cfg['dataset']}"
            w, h = cfg["data"]["input_size"]
            hw, hh = cfg["data"]["heatmap_size"]
            assert w / hw == h / hh == 4, (profile, run)  # every model has output stride 4
            assert w % 32 == 0 and h % 32 == 0


def test_overrides_merge_in_order(params):
    # arch override (paper ResNet-152: 140 epochs, BGR) and run override (Table 5 iterations)
    cfg = resolve_run(params, "coco_simplebaseline_mse", "paper")
    assert cfg["train"]["epochs"] == 140 and cfg["train"]["lr_steps"] == [90, 120]
    assert cfg["data"]["color_rgb"] is False and cfg["data"]["rot_factor"] == 40
    assert cfg["train"]["lr"] == 0.001  # inherited from the profile
    assert resolve_run(params, "coco_hrnet_w48_hdm_it500", "paper")["hdm"] == \
        {"epsilon": 1.0, "iterations": 500, "demanders": "subpixel", "dead_joints": "softmax",
         "center_heatmaps": True}
    assert resolve_run(params, "coco_hrnet_w48_hdm_naive", "demo")["hdm"]["demanders"] == "naive"
    assert resolve_run(params, "coco_hrnet_w48_mse", "paper")["train"]["batch_size"] == 24
    # an architecture's override on one dataset (w48_256x256_adam_lr1e-3.yaml: 32 per GPU on MPII)
    assert resolve_run(params, "mpii_hrnet_w48_hdm", "paper")["train"]["batch_size"] == 32
    assert resolve_run(params, "mpii_hrnet_w48_hdm", "demo")["train"] == resolve_run(params, "coco_hrnet_w48_hdm",
                                                                                      "demo")["train"]


def test_paper_profile_holds_the_paper_settings(params):
    cfg = resolve_run(params, "coco_hrnet_w32_hdm", "paper")
    assert cfg["data"]["input_size"] == [288, 384] and cfg["data"]["heatmap_size"] == [72, 96]
    assert cfg["hdm"] == {"epsilon": 1.0, "iterations": 1000, "demanders": "subpixel", "dead_joints": "softmax",
         "center_heatmaps": True}
    assert cfg["train"]["epochs"] == 210 and cfg["train"]["lr_steps"] == [170, 200]
    mp = resolve_run(params, "mpii_hrnet_w32_mse", "paper")
    assert mp["data"]["input_size"] == [256, 256] and mp["data"]["sigma"] == 2.0


@pytest.mark.parametrize("mutate, key", [
    (lambda p: p["profiles"]["demo"]["train"].__setitem__("epochs", "three"), "profiles.demo.train.epochs"),
    (lambda p: p["profiles"]["demo"]["train"].__setitem__("epoks", 3), "profiles.demo.train.epoks"),
    (lambda p: p["profiles"]["demo"]["hdm"].__setitem__("demanders", "fancy"), "profiles.demo.hdm.demanders"),
    (lambda p: p["profiles"]["paper"]["hdm"].__setitem__("epsilon_units", "image"),
     "profiles.paper.hdm.epsilon_units"),
    (lambda p: p["runs"]["coco_hrnet_w48_hdm"].__setitem__("hdm", {"epsilon_units": "px"}),
     "runs.coco_hrnet_w48_hdm.hdm.epsilon_units"),
    (lambda p: p.__setitem__("profile", "nope"), "profile"),
    (lambda p: p["runs"]["coco_hrnet_w32_mse"].__setitem__("loss", "l1"), "runs.coco_hrnet_w32_mse.loss"),
    (lambda p: p["runs"]["coco_hrnet_w32_mse"].__setitem__("arch", "vit"), "runs.coco_hrnet_w32_mse.arch"),
    (lambda p: p["profiles"]["demo"]["datasets"]["coco"].pop("sigma"), "profiles.demo.datasets.coco.sigma"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrnet_w48"]["train"].__setitem__("batch_size", 0),
     "profiles.paper.archs.hrnet_w48.train.batch_size"),
    (lambda p: p.__setitem__("foo", 1), "foo"),
    # ImageNet weights pinned by tag; no load-time box shift on MPII; the per-dataset train overrides
    (lambda p: p["profiles"]["paper"]["archs"]["simplebaseline_res152"]["model"].__setitem__("backbone", "resnet152"),
     "profiles.paper.archs.simplebaseline_res152.model.backbone"),
    (lambda p: p["profiles"]["paper"]["datasets"]["mpii"].__setitem__("load_shift_prob", 0.3),
     "profiles.paper.datasets.mpii.load_shift_prob"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrformer_base"].setdefault("datasets", {}).__setitem__(
        "mpii", {"load_shift_prob": 0.3}), "profiles.paper.archs.hrformer_base.datasets.mpii.load_shift_prob"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrnet_w48"]["train_by_dataset"].__setitem__("lsp", {}),
     "profiles.paper.archs.hrnet_w48.train_by_dataset.lsp"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrnet_w48"]["train_by_dataset"]["mpii"].__setitem__("batch", 1),
     "profiles.paper.archs.hrnet_w48.train_by_dataset.mpii.batch"),
    (lambda p: p["profiles"]["paper"]["train"].__setitem__("sync_bn", "yes"), "profiles.paper.train.sync_bn"),
    (lambda p: p["profiles"]["paper"]["datasets"]["coco"].__setitem__("half_body_upper_prob", 1.5),
     "profiles.paper.datasets.coco.half_body_upper_prob"),
    # the paper profile's download section
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["coco"][0].__setitem__("md5", "x"),
     "profiles.paper.data.archives.coco.0.md5"),
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["coco"][1].__setitem__("sha256", "abc"),
     "profiles.paper.data.archives.coco.1.sha256"),
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["mpii"][0].pop("size"),
     "profiles.paper.data.archives.mpii.0.size"),
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["mpii"][1].__setitem__("place", "../train.json"),
     "profiles.paper.data.archives.mpii.1.place"),
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["mpii"][1].__setitem__("extract", {"a": "b"}),
     "profiles.paper.data.archives.mpii.1"),
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["mpii"][2].__setitem__("name", "train.json"),
     "profiles.paper.data.archives.mpii.2.name"),
    (lambda p: p["profiles"]["paper"]["data"]["archives"]["mpii"][2].__setitem__("place", "images/x.json"),
     "profiles.paper.data.archives.mpii.2"),
    (lambda p: p["profiles"]["paper"]["data"].pop("archives"), "profiles.paper.data.archives"),
    (lambda p: p["profiles"]["paper"]["data"].__setitem__("source", "web"), "profiles.paper.data.source"),
])
def test_invalid_params_name_the_key(params, mutate, key):
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(PipelineError) as err:
        validate_params(bad)
    msg = str(err.value)
    assert f": {key}:" in msg and "\n" not in msg


@pytest.mark.parametrize("where", ["profile", "run"])
def test_epsilon_units_is_optional_and_accepts_both_units(params, where):
    """Every profile's hdm section may leave it out (default heatmap) or set heatmap | input."""
    for units in ("heatmap", "input"):
        good = copy.deepcopy(params)
        if where == "profile":
            for prof in good["profiles"].values():
                prof["hdm"]["epsilon_units"] = units
        else:
            good["runs"]["coco_hrnet_w48_hdm"]["hdm"] = {"epsilon_units": units}
        validate_params(good)
        for profile in good["profiles"]:
            assert resolve_run(good, "coco_hrnet_w48_hdm", profile)["hdm"]["epsilon_units"] == units
    assert all("epsilon_units" not in prof["hdm"] for prof in params["profiles"].values())


def test_loss_builder_divides_epsilon_by_the_data_stride(params):
    from pipeline.engine import builders

    cfg = resolve_run(params, "coco_hrnet_w48_hdm", "paper")  # 288x384 -> 72x96: stride 4
    assert builders.loss(cfg).epsilon_effective == 1.0  # key absent: heatmap pixels, as before
    cfg["hdm"] = {**cfg["hdm"], "epsilon_units": "input"}
    crit = builders.loss(cfg)
    assert crit.epsilon_effective == 0.25 and crit.stride == 4.0
    demo = resolve_run(params, "mpii_hrnet_w32_hdm", "demo")  # 64x64 -> 16x16
    demo["hdm"] = {**demo["hdm"], "epsilon_units": "input", "epsilon": 2.0}
    assert builders.loss(demo).epsilon_effective == 0.5


def test_loss_builder_rejects_unequal_strides_in_one_line(params):
    from pipeline.engine import builders

    cfg = resolve_run(params, "coco_hrnet_w48_hdm", "paper")
    cfg["hdm"] = {**cfg["hdm"], "epsilon_units": "input"}
    cfg["data"] = {**cfg["data"], "heatmap_size": [72, 48]}
    with pytest.raises(PipelineError) as err:
        builders.loss(cfg)
    msg = str(err.value)
    assert "profiles.paper.datasets.coco.heatmap_size" in msg and "\n" not in msg
    cfg["hdm"]["epsilon_units"] = "heatmap"  # the stride is not needed then
    assert builders.loss(cfg).epsilon_effective == 1.0


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_reports_an_invalid_value_in_one_line(tmp_path, params):
    bad = copy.deepcopy(params)
    bad["profiles"]["demo"]["train"]["lr"] = -1
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(bad))
    res = run_cli("--params", str(f), "validate")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "profiles.demo.train.lr" in lines[0] and lines[0].startswith("error: ")


def test_cli_missing_params_file(tmp_path):
    res = run_cli("--params", str(tmp_path / "nope.yaml"), "validate")
    assert res.returncode == 1 and "nope.yaml: file not found" in res.stderr


def test_snakemake_stops_on_invalid_params_before_any_job(tmp_path, params):
    import shutil

    for name in ("Snakefile", "workflow", "pipeline"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    bad = copy.deepcopy(params)
    bad["profiles"]["demo"]["hdm"]["iterations"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "profiles.demo.hdm.iterations" in res.stderr + res.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_paper_profile_downloads_the_real_files(params):
    data = params["profiles"]["paper"]["data"]
    assert data["source"] == "download"
    coco = {e["name"]: e for e in data["archives"]["coco"]}
    assert coco["train2017.zip"]["url"] == "http://images.cocodataset.org/zips/train2017.zip"
    assert coco["train2017.zip"]["size"] == 19_336_861_798 and coco["val2017.zip"]["size"] == 815_585_330
    assert coco["test2017.zip"]["size"] == 6_646_970_404
    assert coco["annotations_trainval2017.zip"]["size"] == 252_907_541
    mpii = {e["name"]: e for e in data["archives"]["mpii"]}
    assert mpii["mpii_human_pose_v1.tar.gz"]["url"].startswith("https://datasets.d2.mpi-inf.mpg.de/")
    for entry in [*coco.values(), *mpii.values()]:
        assert entry["sha256"] is None  # nobody publishes them: pinned by the user after a first download
        assert (entry["url"] is None) == ("manual" in entry), entry["name"]
    placed = {e.get("place") for e in [*coco.values(), *mpii.values()]} | {
        d for e in [*coco.values(), *mpii.values()] for d in e.get("extract", {}).values()}
    from pipeline.data.prepare import REQUIRED

    assert {r.rstrip("/") for r in REQUIRED["coco"] + REQUIRED["mpii"]} <= placed


def test_paths_are_per_profile():
    p = Paths("demo")
    assert str(p.checkpoint("x", 0)) == "results/demo/runs/x/seed0/final.pth"
    assert str(p.eval_metrics("x", 2)) == "results/demo/eval/x/seed2/metrics.json"
    assert str(p.manifest("coco")) == "data/demo/coco.manifest.json"
