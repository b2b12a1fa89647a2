"""The pretrain stage (pipeline/pretrain) on the smoke profile: end to end (weights, sidecar, MLflow run),
bit-identical reruns, the data stage's checksum check, and the pose model's pretrained start (backbone
loaded, fresh head as the reference initialises it, identical initial weights for MSE and HDM)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from pipeline import cli
from pipeline.config import Paths, load_params, resolve_run
from pipeline.pretrain import shapes, spec, weights
from pipeline.pretrain.train import fit

ROOT = Path(__file__).resolve().parent.parent
ARCH = "hrnet_w32"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch working directory with its own MLflow store and the committed smoke weights."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copytree(ROOT / "pretrained" / "smoke", tmp_path / "pretrained" / "smoke")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert cli.main(["--profile", "smoke", "--quiet", "mlflow-init"]) == 0
    return tmp_path


def _edit_params(path: Path, edit) -> None:
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def test_generator_is_deterministic_and_labels_cover_every_class():
    a = shapes.make_split(3, "train", 1, 64, (32, 24))
    b = shapes.make_split(3, "train", 1, 64, (32, 24))
    other = shapes.make_split(3, "val", 0, 64, (32, 24))
    assert a[0].shape == (64, 24, 32, 3) and a[0].dtype == np.uint8 and a[1].shape == (64, 24, 32)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], other[0])  # the held-out split is another stream
    _, masks, labels = shapes.make_split(0, "train", 1, 300, (48, 48))
    assert set(np.unique(masks).tolist()) == set(range(shapes.SEG_CLASSES))
    assert all(len(set(np.unique(m).tolist()) & set(range(1, len(shapes.SHAPES) + 1))) == 1 for m in masks)
    for t, n in enumerate(shapes.TASKS.values()):
        assert set(labels[:, t].tolist()) == set(range(n))
    count = list(shapes.TASKS).index("count")
    blobs = [int(cv2.connectedComponents((m == shapes.BLOB).astype(np.uint8))[0]) - 1 for m in masks[:50]]
    assert np.mean(np.array(blobs) == labels[:50, count]) > 0.9  # blobs may touch the big shape's edge


def test_pretrain_stage_end_to_end(workdir, capsys):
    """Weights + sidecar + a finished MLflow run with its curve; a rerun is a no-op."""
    out = workdir / Paths("smoke").pretrained_dir(ARCH)
    shutil.rmtree(out)
    assert cli.main(["--profile", "smoke", "--quiet", "pretrain", "--arch", ARCH]) == 0
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["sha256"] == weights.sha256_file(out / "backbone.pth")
    params = load_params("params.yaml", "smoke")
    assert meta["config"] == spec.pretrain_config(params, "smoke", ARCH)
    assert meta["versions"]["torch"] == torch.__version__ and meta["threads"] == 1
    assert len(meta["history"]) == params["profiles"]["smoke"]["pretrain"]["epochs"]
    assert set(meta["final"]) >= {"val_miou", "val_acc_shape_pixels", "val_acc_orientation", "val_acc_count"}
    state = torch.load(out / "backbone.pth", map_location="cpu", weights_only=True)
    assert not any(k.startswith("head") for k in state) and len(state) > 10

    from pipeline.tracking import connect

    mlflow = connect(os.environ["MLFLOW_TRACKING_URI"])
    run = mlflow.get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == f"pretrain_{ARCH}"
    assert run.data.tags["stage"] == "pretrain" and run.data.tags["weights_sha256"] == meta["sha256"]
    curve = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_miou")
    assert [m.step for m in curve] == [h["epoch"] for h in meta["history"]]

    before = (out / "backbone.json").read_text()
    assert cli.main(["--profile", "smoke", "--quiet", "pretrain", "--arch", ARCH]) == 0
    assert (out / "backbone.json").read_text() == before  # up to date: not retrained


def test_pretraining_is_bit_identical_across_runs():
    params = load_params(ROOT / "params.yaml", "smoke")
    cfg = spec.pretrain_config(params, "smoke", ARCH)
    torch.set_num_threads(cfg["pretrain"]["threads"])
    first, hist1 = fit(cfg)
    second, hist2 = fit(cfg)
    a = weights.serialise(first.backbone.state_dict())
    b = weights.serialise(second.backbone.state_dict())
    assert weights.sha256_bytes(a) == weights.sha256_bytes(b)
    assert [h["train_loss"] for h in hist1] == [h["train_loss"] for h in hist2]


def test_data_stage_stops_on_changed_weights(workdir, capsys):
    path = Paths("smoke").pretrained_weights(ARCH)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cli.main(["--profile", "smoke", "--quiet", "data", "--dataset", "coco"]) == 1
    line = _one_line_error(capsys)
    assert str(path) in line and "sha256" in line
    assert not Paths("smoke").dataset("coco").exists() and not Paths("smoke").manifest("coco").exists()


def test_data_stage_stops_on_missing_weights(workdir, capsys):
    path = Paths("smoke").pretrained_weights(ARCH)
    path.unlink()
    assert cli.main(["--profile", "smoke", "--quiet", "data", "--dataset", "coco"]) == 1
    line = _one_line_error(capsys)
    assert str(path) in line and "not found" in line and f"pretrain --arch {ARCH}" in line
    assert not Paths("smoke").manifest("coco").exists()


def test_data_stage_stops_on_a_changed_pretrain_config(workdir, capsys):
    """Same file, same pin, but params.yaml now asks for another pretraining: the weights are stale."""
    _edit_params(workdir / "params.yaml", lambda p: p["profiles"]["smoke"]["pretrain"].update(epochs=2))
    assert cli.main(["--profile", "smoke", "--quiet", "data", "--dataset", "mpii"]) == 1
    line = _one_line_error(capsys)
    first = spec.pinned_archs(load_params(ROOT / "params.yaml", "smoke"), "smoke")[0]  # checked in order
    assert str(Paths("smoke").pretrained_meta(first)) in line and "another config (differs in: pretrain)" in line


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(pretrained=True, backbone=m["backbone"] + ".ms_in1k"), "pretrained: true"),
    (lambda m: m["backbone_weights"].update(path="elsewhere/w.pth"), "the pretrain stage writes"),
    (lambda m: m["backbone_weights"].update(sha256="xyz"), "sha256"),
])
def test_pins_are_validated(tmp_path, change, message):
    from pipeline.errors import PipelineError

    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    _edit_params(p, lambda params: change(params["profiles"]["smoke"]["archs"][ARCH]["model"]))
    with pytest.raises(PipelineError, match=message) as exc:
        load_params(p)
    assert "\n" not in str(exc.value) and "backbone_weights" in str(exc.value)


@pytest.mark.parametrize("arch", ["hrnet_w32", "simplebaseline_res152", "hrformer_base"])
def test_pose_model_loads_the_backbone_and_keeps_a_fresh_head(arch, monkeypatch):
    from pipeline.engine import builders

    monkeypatch.chdir(ROOT)
    params = load_params(ROOT / "params.yaml", "smoke")
    run = next(r for r, s in params["runs"].items() if s["arch"] == arch and s["dataset"] == "coco")
    cfg = resolve_run(params, run, "smoke")
    torch.manual_seed(0)
    net = builders.model(cfg)
    net = getattr(net, "net", net)  # HDM runs wrap the model (CenteredHeatmaps)
    saved = torch.load(Paths("smoke").pretrained_weights(arch), map_location="cpu", weights_only=True)
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # the reference's head initialisation: normal(0, 0.001), zero bias
    assert net.head.weight.std().item() == pytest.approx(0.001, rel=0.3)
    assert torch.count_nonzero(net.head.bias) == 0
    if arch == "simplebaseline_res152":  # fresh deconvolutions: normal(0, 0.001), BN (1, 0)
        for m in net.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                assert m.weight.std().item() == pytest.approx(0.001, rel=0.3)
            if isinstance(m, torch.nn.BatchNorm2d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # and the backbone is not what a random initialisation gives
    torch.manual_seed(0)
    from pipeline.models import build_model

    scratch = build_model(cfg["model"], 17)
    assert any(not torch.equal(v, scratch.backbone.state_dict()[k]) for k, v in saved.items()
               if v.is_floating_point())


def test_pose_model_rejects_changed_weights(tmp_path, monkeypatch):
    from pipeline.engine import builders
    from pipeline.errors import PipelineError

    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "pretrained" / "smoke", tmp_path / "pretrained" / "smoke")
    cfg = resolve_run(load_params(ROOT / "params.yaml", "smoke"), "coco_hrnet_w32_mse", "smoke")
    path = Paths("smoke").pretrained_weights(ARCH)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(PipelineError, match="sha256") as exc:
        builders.model(cfg)
    assert str(exc.value).startswith(str(path))


class _Stop(Exception):
    pass


def test_mse_and_hdm_runs_start_from_identical_weights(workdir, monkeypatch):
    """Through the training code itself: the model as it is when the optimiser is built."""
    from pipeline.config import experiment_name, tracking_uri
    from pipeline.engine import builders, train

    assert cli.main(["--profile", "smoke", "--quiet", "data", "--dataset", "coco"]) == 0
    params = load_params("params.yaml", "smoke")
    initial = {}

    def capture(cfg, net):
        inner = getattr(net, "net", net)
        initial[cfg["loss"]] = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        raise _Stop

    monkeypatch.setattr(builders, "optimizer", capture)
    for run in ("coco_hrnet_w32_mse", "coco_hrnet_w32_hdm"):
        cfg = resolve_run(params, run, "smoke")
        with pytest.raises(_Stop):
            train.train_run(cfg, tracking_uri=tracking_uri(params), experiment=experiment_name(params),
                            progress=False)
    mse, hdm = initial["mse"], initial["hdm"]
    assert mse.keys() == hdm.keys()
    assert all(torch.equal(mse[k], hdm[k]) for k in mse)
    saved = torch.load(Paths("smoke").pretrained_weights(ARCH), map_location="cpu", weights_only=True)
    assert all(torch.equal(mse[f"backbone.{k}"], v) for k, v in saved.items())


def test_paper_profile_records_imagenet_instead_of_pretraining(tmp_path, monkeypatch):
    """The paper profile has no pretrain section: the stage (run by DVC) records the backbone's source."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--params", str(ROOT / "params.yaml"), "--profile", "paper", "pretrain", "--arch", ARCH]) == 0
    out = Paths("paper").pretrained_dir(ARCH)
    assert sorted(p.name for p in out.iterdir()) == ["backbone.json"]
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["pretrained"] is False and meta["backbone_source"].startswith("imagenet")
