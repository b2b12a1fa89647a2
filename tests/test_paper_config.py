"""The paper profile against the official configs: every run's resolved setting equals its transcribed
reference (or is a documented deviation), and docs/paper-config.md is what the command generates."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import load_params
from pipeline.report import paper_config as pc

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "paper-config.md"


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def test_docs_paper_config_is_current(params):
    """Regenerate with `python -m pipeline paper-config` after changing params.yaml or the reference."""
    assert DOC.read_text() == pc.render(params), "docs/paper-config.md is stale: run python -m pipeline paper-config"


def test_every_paper_run_equals_its_reference(params):
    assert pc.differences(params) == []
    runs = pc.paper_runs(params)
    assert len(runs) == len(params["runs"]) == 19  # 17 paper runs and the two UDP runs
    assert {pc.reference_id(pc.resolve_run(params, r, "paper")) for r in runs} == set(pc.SOURCES) == set(pc.REFERENCE)
    # settings each paper run takes from its official config (batch size, SyncBN, load shift, backbone, half body)
    assert runs["mpii_hrnet_w48_hdm"]["train.batch_size"] == 32 and runs["coco_hrnet_w48_hdm"]["train.batch_size"] == 24
    hrt = runs["coco_hrformer_base_mse"]
    assert (hrt["train.batch_size"], hrt["train.gpus"], hrt["train.total_batch"], hrt["train.lr"]) == (8, 8, 64, 0.0005)
    assert hrt["train.sync_bn"] is True and runs["coco_hrnet_w32_mse"]["train.sync_bn"] is False
    assert (hrt["data.load_shift_prob"], hrt["data.load_shift_factor"]) == (0.3, 0.2)
    assert runs["coco_hrnet_w48_mse"]["data.load_shift_prob"] == 0.0
    assert runs["coco_simplebaseline_mse"]["model.backbone"] == "resnet152.tv_in1k"
    assert all(abs(f["data.half_body_upper_prob"] - 0.6915) < 1e-4 for f in runs.values())


@pytest.mark.parametrize("mutate, expect", [
    (lambda p: p["profiles"]["paper"]["archs"]["hrnet_w48"].pop("train_by_dataset"),
     "mpii_hrnet_w48_hdm: train.batch_size = 24, reference W48-MPII has 32"),
    (lambda p: p["profiles"]["paper"]["archs"]["simplebaseline_res152"]["model"].__setitem__(
        "backbone", "resnet152.a1h_in1k"), "coco_simplebaseline_mse: model.backbone = resnet152.a1h_in1k, reference R152-COCO has resnet152.tv_in1k"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrformer_base"]["train"].__setitem__("sync_bn", False),
     "coco_hrformer_base_hdm: train.sync_bn = false, reference HRT-B-COCO has true"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrformer_base"]["train"].__setitem__("gpus", 4),
     "coco_hrformer_base_mse: train.total_batch = 32, reference HRT-B-COCO has 64"),
    (lambda p: p["profiles"]["paper"]["datasets"]["coco"].__setitem__("half_body_upper_prob", 0.5),
     "coco_hrnet_w32_mse: data.half_body_upper_prob = 0.5, reference W32-COCO has 0.691462"),
    (lambda p: p["profiles"]["paper"]["archs"]["hrformer_base"]["datasets"]["coco"].pop("load_shift_prob"),
     "coco_hrformer_base_mse: data.load_shift_prob = 0, reference HRT-B-COCO has 0.3"),
    (lambda p: p["runs"]["coco_hrnet_w48_hdm_it500"]["hdm"].__setitem__("iterations", 600),
     "coco_hrnet_w48_hdm_it500: hdm.iterations = 600, reference W48-COCO has 500"),
])
def test_a_setting_that_leaves_the_reference_is_reported(params, mutate, expect):
    bad = copy.deepcopy(params)
    mutate(bad)
    found = pc.differences(bad)
    assert expect in found, found
    assert "differing from their reference without a documented reason: **0**" not in pc.render(bad)


def test_documented_deviations_are_marked_and_must_be_real(params, monkeypatch):
    bad = copy.deepcopy(params)
    bad["profiles"]["paper"]["train"]["gpus"] = 2
    monkeypatch.setattr(pc, "DEVIATIONS", {("*", "train.gpus"): "two GPUs on this cluster",
                                           ("*", "train.lr_factor"): "stale"})
    found = pc.differences(bad)
    assert not any("train.gpus =" in line for line in found)  # documented: accepted
    assert any("train.lr_factor is documented as a deviation but equals the reference" in line for line in found)
    text = pc.render(bad)
    assert "**2** (ref 4) [D1]" in text and "- D1 `train.gpus` (all runs): two GPUs on this cluster" in text


def test_cli_writes_and_checks_the_table(params, tmp_path, capsys):
    out = tmp_path / "paper-config.md"
    assert cli.main(["--params", str(ROOT / "params.yaml"), "paper-config", "--output", str(out)]) == 0
    assert out.read_text() == DOC.read_text()
    assert cli.main(["--params", str(ROOT / "params.yaml"), "paper-config", "--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("| 0.0005 |", "| 0.001 |"))
    capsys.readouterr()
    assert cli.main(["--params", str(ROOT / "params.yaml"), "paper-config", "--check", "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stale" in err[0] and str(out) in err[0]
