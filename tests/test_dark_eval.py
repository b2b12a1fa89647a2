"""DARK as an evaluation variant: decoded from the same heatmaps as the run's codec, MSE runs only."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.data.transforms import heatmap_to_image
from pipeline.engine import builders, inference

W, H, K = 48, 64, 17
SIGMA = 2.0


def _gaussians(points: np.ndarray) -> np.ndarray:
    """(K,2) sub-pixel points -> (K,H,W) Gaussians of the training sigma."""
    x, y = np.arange(W)[None, None, :], np.arange(H)[None, :, None]
    d2 = (x - points[:, 0, None, None]) ** 2 + (y - points[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * SIGMA ** 2))


class FixedHeatmaps(nn.Module):
    """A stand-in network: the same known heatmaps for every image, counting its calls."""

    def __init__(self, heat: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("heat", torch.from_numpy(heat).float())
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.heat[None].expand(images.shape[0], -1, -1, -1).clone()


def _items(n: int) -> list[dict]:
    return [{"image": torch.zeros(3, 8, 8), "center": np.array([100.0 + i, 80.0]), "scale": np.array([1.2, 1.6]),
             "box_score": np.float64(1.0), "area": np.float64(1.0), "image_id": np.int64(i)} for i in range(n)]


def _cfg(loss: str) -> dict:
    return {"dataset": "coco", "loss": "mse" if loss == "mse" else "hdm", "train": {"workers": 0},
            "data": {"heatmap_size": [W, H], "sigma": SIGMA, "input_size": [192, 256]}}


def test_eval_variants_are_dark_for_mse_runs_only():
    assert list(builders.eval_variants(_cfg("mse"))) == ["dark"]
    assert builders.eval_variants(_cfg("hdm")) == {}


def test_predict_decodes_variants_from_the_same_heatmaps(monkeypatch):
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(8, W - 9, K), rng.uniform(8, H - 9, K)], -1)
    net = FixedHeatmaps(_gaussians(points))
    monkeypatch.setattr(builders, "dataset", lambda cfg, recs, train: _items(5))
    cfg = _cfg("mse")
    pred = inference.predict(net, cfg, [], flip_test=False, dev=torch.device("cpu"), batch_size=2,
                             variants=builders.eval_variants(cfg))
    assert net.calls == 3  # one pass per batch: the variant costs no network call
    truth = heatmap_to_image(np.broadcast_to(points, (5, K, 2)), pred["center"], pred["scale"], [W, H])
    scale = 1.6 * 200 / H  # image px per heatmap px
    dark_pred = inference.variant_prediction(pred, "dark")
    assert set(dark_pred) == set(pred) - {"variants"}
    assert np.abs(dark_pred["coords"] - truth).max() < 0.05 * scale
    assert np.abs(pred["coords"] - truth).max() > 0.2 * scale  # the quarter offset's quantisation
    np.testing.assert_array_equal(dark_pred["scores"], pred["scores"])
    np.testing.assert_array_equal(dark_pred["image_id"], pred["image_id"])
