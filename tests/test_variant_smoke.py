"""Each training variant trains for the smoke profile's epochs on the smoke COCO data and evaluates end to
end: integral regression, HDM with softmax suppliers, MSE + alpha × HDM (with DARK), and a fine-tune
run (init_from, at heatmap stride 2 with its own sigma) that starts from the MSE + HDM run's weights."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from pipeline.config import load_params, resolve_run, validate_params

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "hdm-benchmark-smoke"
RUNS = {
    "coco_hrnet_w32_integral_smoke": {"dataset": "coco", "arch": "hrnet_w32", "loss": "integral"},
    "coco_hrnet_w32_hdm_softmax": {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm",
                                   "hdm": {"suppliers": "softmax", "iterations": 50}},
    "coco_hrnet_w32_mse_hdm": {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse_hdm", "alpha": 0.1,
                               "hdm": {"iterations": 50}},
    "coco_hrnet_w32_s2_ft": {"dataset": "coco", "arch": "hrnet_w32", "loss": "hdm", "heatmap_stride": 2,
                             "sigma": 2.0, "init_from": "coco_hrnet_w32_mse_hdm",
                             "hdm": {"iterations": 50}, "train": {"epochs": 1, "lr": 0.0001}},
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke COCO data, an MLflow store and params with the variant runs, in a scratch folder."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.tracking import init_store

    d = tmp_path_factory.mktemp("variants_smoke")
    p = copy.deepcopy(load_params(ROOT / "params.yaml", "smoke"))
    p["study"]["runs"].update(copy.deepcopy(RUNS))
    p = validate_params(p, "params.yaml")
    uri = f"sqlite:///{d / 'store' / 'mlflow.db'}"
    (d / "pretrained").symlink_to(ROOT / "pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        prepare_dataset(p, "smoke", "coco", progress=False)
        init_store(uri, EXPERIMENT)
        yield d, p, uri


def _train_and_evaluate(p, uri, run: str) -> tuple[dict, dict, object]:
    import mlflow

    from pipeline.engine.evaluate import evaluate_run
    from pipeline.engine.train import train_run

    cfg = resolve_run(p, run, "smoke")
    ckpt = torch.load(train_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False),
                      map_location="cpu", weights_only=True)
    metrics = evaluate_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)["metrics"]
    mlflow.set_tracking_uri(uri)
    return ckpt, metrics, mlflow.tracking.MlflowClient().get_run(ckpt["mlflow_run_id"])


def test_variants_train_and_evaluate(smoke):
    d, p, uri = smoke
    for run in RUNS:  # in order: the fine-tune run starts from the MSE + HDM run's final.pth
        ckpt, metrics, logged = _train_and_evaluate(p, uri, run)
        spec = RUNS[run]
        assert len(ckpt["history"]) == spec.get("train", {}).get("epochs", 2), run
        assert all(math.isfinite(h["train_loss"]) for h in ckpt["history"]), run
        assert 0.0 <= metrics["coco_val/AP"] <= 1.0, run
        assert ("coco_val_dark/AP" in metrics) == (spec["loss"] == "mse_hdm"), run  # DARK: Gaussian heatmaps
        params, tags = logged.data.params, logged.data.tags
        assert params["loss"] == spec["loss"] and tags["evaluated"] == "true", run
        if spec["loss"] in ("hdm", "mse_hdm"):
            assert "train/dead_heatmaps" in logged.data.metrics, run
        if run == "coco_hrnet_w32_hdm_softmax":
            assert params["hdm.suppliers"] == "softmax" and metrics["diag/dead_fraction"] == 0.0
        if run == "coco_hrnet_w32_mse_hdm":
            assert params["alpha"] == "0.1" and not any(k.startswith("net.") for k in ckpt["model"])
        if run == "coco_hrnet_w32_s2_ft":
            assert params["init_from"] == "coco_hrnet_w32_mse_hdm" and params["data.sigma"] == "2.0"
            assert params["data.heatmap_size"] == "[32, 48]"
            assert tags["pretrained_weights"] == \
                "run:coco_hrnet_w32_mse_hdm results/smoke/runs/coco_hrnet_w32_mse_hdm/seed0/final.pth"
            assert all(k.startswith("net.") for k in ckpt["model"])  # HDM: centred, the weights loaded inside
