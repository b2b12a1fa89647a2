"""Registries: a new architecture and a new codec are each one module that registers itself, here
defined in the test alone, and run through the smoke project's train and evaluate stages without a
change to pipeline/; an unknown family, loss or loss-codec pairing stops with one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.codecs import Codec, gaussian, get_codec, register_codec
from pipeline.config import OUTPUT_STRIDES
from pipeline.engine import builders
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.losses import LossCodecs, loss_codecs, register_loss_codecs
from pipeline.models import Architecture, architecture, build_model, register_architecture
from project_copy import copy_project
from run_project import RUN, cli, edit_params, one_error, smoke_train, use_copy

CALLS = {"build": 0, "decode": 0}


class ToyNet(nn.Module):
    """Two stride-2 convolutions and a 1×1 head: stride-4 heatmaps, nothing from timm."""

    def __init__(self, num_joints: int, channels: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(channels, num_joints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_toy(model_cfg: dict, num_joints: int) -> ToyNet:
    CALLS["build"] += 1
    return ToyNet(num_joints, int(model_cfg.get("width", 1.0) * 8))


TOY = register_architecture(Architecture("toy_conv", build_toy, output_strides=(4,), feature_index=0,
                                         weights_source=lambda cfg: "toy:none"))


def argmax_decode(heatmaps) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map's highest pixel centre and value, without the Gaussian codec's quarter-pixel shift."""
    CALLS["decode"] += 1
    hm = torch.as_tensor(heatmaps).float()
    b, k, h, w = hm.shape
    score, index = hm.reshape(b, k, h * w).max(dim=-1)
    return torch.stack([index % w, index // w], dim=-1).double(), score


TOY_CODEC = register_codec(Codec("toy_argmax", gaussian.encode, argmax_decode))


@pytest.fixture
def mse_takes_toy_codec():
    """MSE runs decode with the toy codec while the test runs (their declared pairing, restored after)."""
    declared = loss_codecs("mse")
    register_loss_codecs(LossCodecs("mse", ("toy_argmax", *declared.accepts)))
    yield
    register_loss_codecs(declared)


def test_a_registered_family_builds_by_name():
    net = build_model({"family": "toy_conv", "backbone": "none"}, 17)
    assert isinstance(net, ToyNet) and net(torch.zeros(1, 3, 32, 16)).shape == (1, 17, 8, 4)


def test_unknown_family_names_the_key_and_the_known_names():
    with pytest.raises(PipelineError) as exc:
        build_model({"family": "vit", "backbone": "x"}, 17)
    assert str(exc.value).startswith("model.family: unknown model family 'vit' (known: ")
    assert all(name in exc.value.what for name in ("hrformer", "hrnet", "simplebaseline", "toy_conv"))


def test_a_stride_the_family_cannot_output_is_refused():
    with pytest.raises(PipelineError, match=r"^model\.output_stride: 8: the toy_conv family outputs stride 4 only$"):
        build_model({"family": "toy_conv", "backbone": "none", "output_stride": 8}, 17)


def test_the_torch_free_strides_are_the_registered_ones():
    assert {name: architecture(name).output_strides for name in OUTPUT_STRIDES} == OUTPUT_STRIDES


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory) -> Path:
    """The smoke project with the trained architecture of :data:`RUN` replaced by the toy family."""
    d = tmp_path_factory.mktemp("toy")
    copy_project(d)

    def toy_arch(params: dict) -> None:
        smoke_train(params, epochs=1)
        params["profiles"]["smoke"]["archs"]["hrnet_w32"] = {"model": {"family": "toy_conv", "backbone": "none"}}
    edit_params(d, toy_arch)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        for args in (["data", "--dataset", "coco"], ["mlflow-init"]):
            assert main(["--quiet", *args]) == 0, args
    return d


def test_toy_architecture_and_codec_train_and_evaluate(toy_project, tmp_path, monkeypatch, capsys,
                                                       mse_takes_toy_codec):
    d = use_copy(toy_project, tmp_path / "p", monkeypatch)
    for args in (["train", "--run", RUN], ["evaluate", "--run", RUN]):
        rc, err = cli(capsys, *args)
        assert rc == 0, (args, err)
    assert (d / f"results/smoke/runs/{RUN}/seed0/final.pth").is_file()
    assert any((d / f"results/smoke/eval/{RUN}/seed0").iterdir())
    assert CALLS["build"] >= 2 and CALLS["decode"] >= 1  # trained and evaluated with both toys


def test_an_unknown_family_in_params_stops_training_with_one_line(toy_project, tmp_path, monkeypatch, capsys):
    d = use_copy(toy_project, tmp_path / "p", monkeypatch)
    edit_params(d, lambda p: p["profiles"]["smoke"]["archs"]["hrnet_w32"]["model"].update(family="vit"))
    rc, err = cli(capsys, "train", "--run", RUN)
    one_error(rc, err, "params.yaml: profiles.smoke.archs.hrnet_w32.model.family: unknown model family 'vit'",
              "toy_conv")


def _run_cfg(loss: str, codec: str | None = None) -> dict:
    return {"name": "coco_x", "loss": loss, "data": {"sigma": 2.0}, **({"codec": codec} if codec else {})}


def test_each_loss_picks_its_declared_codec():
    assert [builders.codec_name(_run_cfg(loss)) for loss in ("mse", "mse_hdm", "hdm", "integral")] == [
        "gaussian", "gaussian", "hdm", "integral"]
    assert builders.codec(_run_cfg("mse", "udp")).convention == "udp"


def test_a_codec_the_loss_does_not_accept_stops_with_one_line():
    with pytest.raises(PipelineError) as exc:
        builders.codec_name(_run_cfg("integral", "gaussian"))
    assert str(exc.value) == ("params.yaml: run coco_x: codec: codec 'gaussian' does not go with loss integral "
                              "(it accepts integral)")


def test_a_loss_without_a_pairing_stops_with_one_line():
    with pytest.raises(PipelineError) as exc:
        builders.codec_name(_run_cfg("focal"))
    assert str(exc.value).startswith("params.yaml: run coco_x: codec: unknown loss 'focal': no codec pairing "
                                     "declared (known: hdm, integral, mse, mse_hdm")


def test_an_unknown_codec_names_the_known_ones():
    with pytest.raises(PipelineError, match=r"^codec: unknown codec 'focal'; choose one of \[.*'toy_argmax'"):
        get_codec("focal")
