"""Small paths the paper profile can take that the larger tests do not reach: images OpenCV cannot decode
or read in BGR order, a prediction over no records, heatmaps of the wrong rank handed to a decoder or a
loss (an internal contract: one clear ValueError), and an error message re-raised from a worker."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.codecs import dark, flip, gaussian, hdm
from pipeline.config import load_params, resolve_run
from pipeline.data.dataset import read_image, truncation
from pipeline.data.transforms import heatmap_to_image
from pipeline.engine import builders
from pipeline.engine.inference import predict
from pipeline.engine.sync_bn import GlooSyncBatchNorm
from pipeline.errors import PipelineError
from pipeline.losses.mse import JointsMSELoss
from pipeline.metrics.diagnostics import dead_fractions

ROOT = Path(__file__).resolve().parents[1]


def test_images_in_rgb_or_bgr_order_and_files_that_are_no_image(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[1, 2] = (255, 0, 10)  # blue in OpenCV's order
    png = tmp_path / "a.png"
    assert cv2.imwrite(str(png), bgr)
    np.testing.assert_array_equal(read_image(str(png), color_rgb=False), bgr)
    np.testing.assert_array_equal(read_image(str(png)), bgr[:, :, ::-1])
    text = tmp_path / "b.jpg"
    text.write_text("not an image")
    assert truncation(np.fromfile(str(text), np.uint8)) is None  # neither JPEG nor PNG: nothing to say
    with pytest.raises(PipelineError) as exc:
        read_image(str(text))
    assert str(exc.value) == f"{text}: cannot read image (missing file or not an image)"


def test_prediction_over_no_records_is_empty_with_the_right_shapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")
    cfg = resolve_run(load_params(ROOT / "params.yaml", "smoke"), "mpii_hrnet_w32_mse")
    out = predict(builders.model(cfg), cfg, [], flip_test=True, dev=torch.device("cpu"), batch_size=4)
    assert out["coords"].shape == (0, 16, 2) and out["scores"].shape == (0, 16) and out["peak"].shape == (0, 16)
    assert out["image_id"].dtype == np.int64 and out["box_score"].shape == (0,)
    assert dead_fractions(out["peak"]).shape == (16,) and np.isnan(dead_fractions(out["peak"])).all()


@pytest.mark.parametrize("call", [
    lambda x: flip.flip_back(x, list(range(3))),
    gaussian.decode,
    hdm.decode,
    lambda x: dark.decode(x, sigma=2.0),
])
@pytest.mark.parametrize("as_tensor", [True, False])
def test_decoders_refuse_heatmaps_of_another_rank(call, as_tensor):
    hm = torch.rand(3, 4, 5) if as_tensor else np.random.default_rng(0).random((3, 4, 5))
    with pytest.raises(ValueError, match=r"heatmaps must be \(B,K,h,w\), got"):
        call(hm)


def test_losses_and_layers_refuse_inputs_of_another_shape():
    with pytest.raises(ValueError, match=r"must both be \[B, K, H, W\], got \(1, 2, 3, 4\) and \(1, 2, 4, 4\)"):
        JointsMSELoss()(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4, 4), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"expected at least 2-D input \(got 1-D\)"):
        GlooSyncBatchNorm(3)(torch.zeros(3))
    with pytest.raises(ValueError, match="2 sets of coordinates but 1 centres/scales"):
        heatmap_to_image(np.zeros((2, 17, 2)), np.zeros((1, 2)), np.ones((1, 2)), [48, 64])


def test_a_worker_s_traceback_without_an_error_line_keeps_its_first_line():
    exc = PipelineError("Caught OSError in DataLoader worker process 0.\nTraceback (most recent call last):\n  ...")
    assert exc.where == "Caught OSError in DataLoader worker process 0."
    assert exc.what == "(details in the log above)"
