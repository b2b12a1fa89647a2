"""Study-only runs (params.yaml ``study.runs``) and the run-level ``heatmap_stride``: the runs of the
beyond-the-paper Table 6 (HRNet-W32 COCO at heatmap stride 4 vs 8, HDM's ε in heatmap vs input pixels).

They are trained by the study target only, so the main target (and DVC) must not list them, while a
stride-8 HRNet must keep the stride-4 model's parameters exactly (same pretrained start)."""
from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import cli
from pipeline.config import load_params, resolve_run, run_key, run_names, validate_params
from pipeline.engine import builders
from pipeline.errors import PipelineError
from pipeline.models import build_model

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TABLE6 = ["coco_hrnet_w32_hdm_epsin", "coco_hrnet_w32_s8_mse", "coco_hrnet_w32_s8_hdm"]


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def _invalid(params, mutate) -> str:
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(PipelineError) as exc:
        validate_params(bad, "params.yaml")
    assert "\n" not in str(exc.value)
    return str(exc.value)


# ------------------------------------------------------------------------------------------ config
def test_run_names_main_then_study(params):
    main, study = run_names(params), run_names(params, study=True)
    assert main == list(params["runs"]) and not set(TABLE6) & set(main)
    assert study[:len(main) + len(TABLE6)] == main + TABLE6
    assert study == main + list(params["study"]["runs"])
    assert run_key(params, "coco_hrnet_w32_hdm") == "runs.coco_hrnet_w32_hdm"
    assert run_key(params, TABLE6[0]) == f"study.runs.{TABLE6[0]}"


def test_a_study_run_named_like_a_main_run_is_refused(params):
    def clash(p):
        p["study"]["runs"]["coco_hrnet_w32_mse"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm"}
    msg = _invalid(params, clash)
    assert msg.startswith("params.yaml: study.runs.coco_hrnet_w32_mse: also a key of runs"), msg


def test_a_verdict_run_named_like_a_study_run_is_refused(params):
    def clash(p):
        p["verdict"] = {"runs": {TABLE6[0]: {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse"}}}
    msg = _invalid(params, clash)
    assert msg.startswith(f"params.yaml: verdict.runs.{TABLE6[0]}: also a key of runs or study.runs"), msg


def test_verdict_runs_follow_the_study_runs_and_resolve(params):
    params = copy.deepcopy(params)  # the fixture is shared by the module
    params["verdict"] = {"runs": {"coco_hrnet_w32_ft_mse": {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse"}}}
    validate_params(params, "params.yaml")
    assert run_names(params, verdict=True) == run_names(params, study=True) + ["coco_hrnet_w32_ft_mse"]
    assert "coco_hrnet_w32_ft_mse" not in run_names(params, study=True)
    assert run_key(params, "coco_hrnet_w32_ft_mse") == "verdict.runs.coco_hrnet_w32_ft_mse"
    assert resolve_run(params, "coco_hrnet_w32_ft_mse", "demo", 1)["seed"] == 1


@pytest.mark.parametrize("mutate, where", [
    (lambda p: p["study"]["runs"]["coco_hrnet_w32_s8_mse"].__setitem__("heatmap_stride", 6),
     "study.runs.coco_hrnet_w32_s8_mse.heatmap_stride"),
    (lambda p: p["study"]["runs"]["coco_hrnet_w32_s8_mse"].__setitem__("arch", "nope"),
     "study.runs.coco_hrnet_w32_s8_mse.arch"),
    (lambda p: p["study"]["runs"]["coco_hrnet_w32_s8_mse"].__setitem__("typo", 1),
     "study.runs.coco_hrnet_w32_s8_mse.typo"),
    (lambda p: p["study"].__setitem__("runs", {"Bad-Name": {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse"}}),
     "study.runs"),
])
def test_a_bad_study_run_names_its_key(params, mutate, where):
    assert _invalid(params, mutate).startswith(f"params.yaml: {where}")


def test_heatmap_stride_must_divide_the_input_size(params):
    def odd(p):
        p["profiles"]["demo"]["datasets"]["coco"]["input_size"] = [60, 96]  # 60 / 8 is not whole
    msg = _invalid(params, odd)
    assert msg.startswith("params.yaml: study.runs.coco_hrnet_w32_s8_mse.heatmap_stride (profile demo): "
                          "8 does not divide input_size [60, 96]"), msg


def test_output_stride_8_on_another_family_is_refused(params):
    def sb(p):
        p["study"]["runs"]["coco_hrnet_w32_s8_mse"]["arch"] = "simplebaseline_res152"
    msg = _invalid(params, sb)
    assert msg.startswith("params.yaml: study.runs.coco_hrnet_w32_s8_mse.heatmap_stride: 8: simplebaseline "
                          "models"), msg
    # the model builders refuse it too (a config made by hand), naming the key
    for cfg in ({"family": "simplebaseline", "backbone": "resnet18", "width": 0.25, "output_stride": 8},
                {"family": "hrformer", "backbone": "hrformer_demo", "width": 0.5, "output_stride": 8}):
        with pytest.raises(PipelineError, match=r"^model\.output_stride: 8: the \w+ family outputs stride 4 only$"):
            build_model(cfg, 17)
    with pytest.raises(PipelineError, match="model.output_stride"):
        build_model({"family": "hrnet", "backbone": "hrnet_w18_small", "width": 0.25, "output_stride": 16}, 17)


def test_the_table6_runs_resolve(params):
    want = {"demo": ([64, 96], [8, 12]), "smoke": ([64, 96], [8, 12]), "paper": ([288, 384], [36, 48])}
    for profile, (inp, s8) in want.items():
        base = resolve_run(params, "coco_hrnet_w32_hdm", profile)
        for run in TABLE6:
            cfg = resolve_run(params, run, profile)
            assert (cfg["name"], cfg["arch"], cfg["dataset"]) == (run, "hrnet_w32", "coco")
            assert cfg["data"]["input_size"] == inp
            stride8 = "_s8_" in run
            assert cfg["data"]["heatmap_size"] == (s8 if stride8 else base["data"]["heatmap_size"])
            assert cfg["model"] == ({**base["model"], "output_stride": 8} if stride8 else base["model"])
            assert cfg["data"]["sigma"] == base["data"]["sigma"]  # heatmap pixels, as HRNet's configs
            assert builders.heatmap_stride(cfg) == (8.0 if stride8 else 4.0)
            units = builders.with_defaults(cfg)["hdm"]["epsilon_units"]
            assert units == ("input" if run.endswith("_epsin") else "heatmap")
            # everything else is the stride-4 run's configuration
            rest = {k: v for k, v in cfg.items() if k not in ("name", "loss", "model", "data", "hdm")}
            assert rest == {k: v for k, v in base.items() if k not in ("name", "loss", "model", "data", "hdm")}


def test_runs_without_the_new_keys_resolve_as_before(params):
    """No ``output_stride`` and the profile's heatmap size for every main run; an explicit stride 4 is
    the profile's size."""
    for run in run_names(params):
        for profile in params["profiles"]:
            cfg = resolve_run(params, run, profile)
            assert "output_stride" not in cfg["model"]
            prof = params["profiles"][profile]
            arch_data = prof["archs"][cfg["arch"]].get("datasets", {}).get(cfg["dataset"], {})
            assert cfg["data"]["heatmap_size"] == arch_data.get("heatmap_size",
                                                                prof["datasets"][cfg["dataset"]]["heatmap_size"])
    p = copy.deepcopy(params)
    p["runs"]["coco_hrnet_w32_mse"]["heatmap_stride"] = 4
    assert resolve_run(p, "coco_hrnet_w32_mse", "paper")["data"]["heatmap_size"] == [72, 96]


def test_with_defaults_fills_epsilon_units(params):
    cfg = resolve_run(params, "coco_hrnet_w32_hdm", "smoke")
    assert "epsilon_units" not in cfg["hdm"]
    assert builders.with_defaults(cfg)["hdm"]["epsilon_units"] == "heatmap"
    assert "epsilon_units" not in cfg["hdm"]  # a copy: the resolved config is left alone
    cfg = resolve_run(params, "coco_hrnet_w32_s8_hdm_epsin", "smoke")
    assert builders.with_defaults(cfg)["hdm"]["epsilon_units"] == "input"


def test_cli_finds_study_runs(params, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["runs"]) == 0
    assert capsys.readouterr().out.split() == run_names(params)
    assert cli.main(["runs", "--study"]) == 0
    assert capsys.readouterr().out.split() == run_names(params, study=True)
    # a run name no mapping has: the one-line error lists the study runs as known
    assert cli.main(["--profile", "smoke", "evaluate", "--run", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: params.yaml: runs: no run named 'nope'") and TABLE6[-1] in err
    # report --study asks for main + study runs
    seen = {}
    monkeypatch.setattr("pipeline.report.build.build_report", lambda **kw: seen.update(kw) or [])
    for flag, want in (([], run_names(params)), (["--study"], run_names(params, study=True))):
        monkeypatch.setattr(cli, "_setup_logging", lambda *a, **k: None)
        assert cli.main(["--profile", "smoke", "report", *flag]) == 0
        assert seen["run_names"] == want


# ------------------------------------------------------------------------------------------ models
def _smoke_cfg(params, run: str) -> dict:
    return resolve_run(params, run, "smoke")


def test_stride8_hrnet_outputs_stride8_heatmaps(params):
    cfg = _smoke_cfg(params, "coco_hrnet_w32_s8_hdm_epsin")
    torch.manual_seed(0)
    net = builders.model(cfg)  # with the smoke profile's pinned pretrained backbone, and centring (HDM)
    builders.check_output_size(cfg, net)  # [8, 12] for input [64, 96]
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, 96, 64))
    assert out.shape == (2, 17, 12, 8)
    # the stride-4 run's heatmap size is refused for this model, naming the key
    wrong = copy.deepcopy(cfg)
    wrong["data"]["heatmap_size"] = [16, 24]
    with pytest.raises(PipelineError, match=r"heatmap_size: \[16, 24\] does not match the model's output \[8, 12\]"):
        builders.check_output_size(wrong, net)


def test_stride8_and_stride4_models_start_from_identical_parameters(params):
    """Same names, shapes and initial values (seeded head, pinned backbone): the stride is the only change."""
    states = {}
    for run in ("coco_hrnet_w32_mse", "coco_hrnet_w32_s8_mse"):
        torch.manual_seed(3)
        states[run] = builders.model(_smoke_cfg(params, run)).state_dict()
    s4, s8 = states["coco_hrnet_w32_mse"], states["coco_hrnet_w32_s8_mse"]
    assert list(s4) == list(s8)
    assert [n for n, _ in builders.model(_smoke_cfg(params, "coco_hrnet_w32_s8_mse")).named_children()] == \
        ["backbone", "head"]  # the pool is no module: nothing else sits outside the backbone
    for k in s4:
        assert s4[k].shape == s8[k].shape and torch.equal(s4[k], s8[k]), k
    # and the pooled model is the stride-4 model's output features, 2×2-averaged, through the same head
    torch.manual_seed(0)
    n4 = build_model({"family": "hrnet", "backbone": "hrnet_w18_small", "width": 0.25}, 17).eval()
    n8 = build_model({"family": "hrnet", "backbone": "hrnet_w18_small", "width": 0.25, "output_stride": 8}, 17).eval()
    n8.load_state_dict(n4.state_dict())
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        feats = n4.backbone(x)[0]
        want = n4.head(torch.nn.functional.avg_pool2d(feats, 2))
        assert torch.allclose(n8(x), want, atol=1e-6)


def test_hdm_at_stride8_with_epsilon_in_input_pixels_is_finite_with_gradient(params):
    from pipeline.bench.train import _batch  # a smoke training batch: images, keypoints in heatmap px

    cfg = _smoke_cfg(params, "coco_hrnet_w32_s8_hdm_epsin")
    torch.manual_seed(0)
    net = builders.model(cfg).train()
    crit = builders.loss(cfg)
    assert crit.epsilon_units == "input" and crit.stride == 8.0
    assert math.isclose(crit.epsilon_effective, 1.0 / 8)  # ε = 1 input px = 1/8 heatmap px
    batch = _batch(cfg, torch.device("cpu"))
    assert float(batch["keypoints"][..., 0].max()) < 8 and float(batch["keypoints"][..., 1].max()) < 12
    out = net(batch["image"])
    loss = crit(out, batch["keypoints"], batch["weight"])
    assert torch.isfinite(loss) and float(loss) > 0
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    head = net.net.head.weight.grad
    assert float(head.abs().sum()) > 0


def test_bench_pairs_each_hdm_run_with_the_mse_run_of_its_heatmap_size():
    from pipeline.bench.train import _compare_to_mse

    def entry(loss, hm, speed):
        return {"dataset": "coco", "arch": "hrnet_w32", "loss": loss, "heatmap_size": hm, "images_per_s": speed}
    runs = {"s4_mse": entry("mse", [16, 24], 100.0), "s8_mse": entry("mse", [8, 12], 200.0),
            "s4_hdm": entry("hdm", [16, 24], 50.0), "s8_hdm": entry("hdm", [8, 12], 50.0)}
    _compare_to_mse(runs)
    assert runs["s4_hdm"]["vs_mse"] == {"run": "s4_mse", "images_per_s_ratio": 0.5}
    assert runs["s8_hdm"]["vs_mse"] == {"run": "s8_mse", "images_per_s_ratio": 0.25}


# ------------------------------------------------------------------------------------------ workflow
def _train_runs(*args: str) -> set[str]:
    """Run names of the train jobs of a forced Snakemake dry run."""
    out = subprocess.run([str(BIN / "snakemake"), "-n", "--forceall", *args], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=300).stdout
    return set(re.findall(r"^rule train:\n(?:    .*\n)*?    wildcards: .*run=(\w+)", out, re.M))


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_main_target_trains_main_runs_and_study_target_also_study_runs(params, profile):
    main = _train_runs("--config", f"profile={profile}")
    study = _train_runs("study", "--config", f"profile={profile}")  # the target before --config (nargs)
    assert main == set(run_names(params))
    assert study == set(run_names(params, study=True)) and set(TABLE6) <= study


def test_a_study_run_may_not_start_from_a_verdict_only_run(params):
    def later(p):
        p["verdict"] = {"runs": {"coco_hrnet_w32_later": {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse"}}}
        p["study"]["runs"]["coco_hrnet_w32_earlier"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm",
                                                        "init_from": "coco_hrnet_w32_later"}
    msg = _invalid(params, later)
    assert msg.startswith("params.yaml: study.runs.coco_hrnet_w32_earlier.init_from: 'coco_hrnet_w32_later' is a "
                          "verdict-only run"), msg
