"""Smoke tests of the benchmarks (pipeline.bench): they run and write valid JSON; the loss's memory is flat.

Tiny sizes only; no assertion on any timing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.bench.loss import (
    make_inputs,
    naive_sinkhorn_loss,
    parse_size,
    peak_extra_bytes,
    run_loss_benchmark,
)
from pipeline.bench.data import STEPS, run_data_benchmark
from pipeline.cli import build_parser
from pipeline.config import load_params
from pipeline.data import synthetic
from pipeline.errors import PipelineError
from pipeline.losses import HDMLoss

ROOT = Path(__file__).resolve().parents[1]


def test_loss_benchmark_writes_the_documented_json(tmp_path, capsys):
    report = run_loss_benchmark(sizes={"tiny": (8, 6)}, batch=2, joints=3, iterations=1000, threads=1,
                                repeats=1, out_dir=tmp_path, naive_iterations=(2, 4),
                                marginal_iterations=(500, 1000, 1500), demo_step=False, cuda=False)
    path = tmp_path / "loss_cpu.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["sizes"].keys() == report["sizes"].keys() == {"tiny"}
    assert {"benchmark", "environment", "settings", "sizes", "targets", "cuda"} <= on_disk.keys()
    env = on_disk["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] == 1 and env["device_name"] and env["torch_version"]
    assert on_disk["cuda"] == {"skipped": "disabled (cuda=False)"}

    row = on_disk["sizes"]["tiny"]
    assert (row["height"], row["width"], row["batch"], row["joints"]) == (8, 6, 2, 3)
    assert row["heatmap_bytes"] == 2 * 3 * 8 * 6 * 4
    ours = row["ours"]
    assert ours["fwd_bwd_s"] > 0 and len(ours["times_s"]) == 1
    assert 1 <= ours["iterations_run"] < 1000  # the early stop found the float fixed points
    mem = ours["memory"]
    assert set(mem["early_stop"]) == set(mem["full_loop"]) == {"500", "1000", "1500"}
    assert mem["full_loop"]["1500"]["iterations_run"] == 1500
    assert mem["peak_extra_bytes"] > 0 and mem["ratio_to_heatmap"] == mem["peak_extra_bytes"] / row["heatmap_bytes"]
    assert mem["independent_of_iterations"] is True
    naive = row["naive"]
    assert naive["measured_iterations"] == [2, 4] and naive["measured_batch"] == 2
    assert naive["fwd_bwd_s_extrapolated"] > 0 and "t(1000)" in naive["iteration_scaling"]
    assert naive["bytes_per_iteration"] > 0  # the naive reference stores every iterate
    assert row["ratio_naive_over_ours"] == naive["fwd_bwd_s_extrapolated"] / ours["fwd_bwd_s"]
    assert naive["loss_relative_difference"] < 1e-2  # same loss (4 iterations are close to converged)
    for dt in ("float32", "float64"):
        errs = row["marginal_error"][dt]
        assert set(errs) == {"500", "1000", "1500"}
        assert all(e["error_float64_eval"] < (1e-5 if dt == "float32" else 1e-12) for e in errs.values())
    assert on_disk["targets"]["memory_independent_of_iterations"] is True
    assert "tiny" in capsys.readouterr().out
    assert torch.get_num_threads() >= 1


def test_memory_probe_is_flat_in_the_iteration_count():
    torch.set_num_threads(1)
    hm, kp, w = make_inputs(2, 3, 8, 6, seed=1)

    def step(n: int, early: bool):
        fn = HDMLoss(iterations=n)
        fn._early_stop = early
        x = hm.clone().requires_grad_(True)
        fn(x, kp, w).backward()
        return x.grad

    for early in (True, False):
        peaks = {n: peak_extra_bytes(lambda: step(n, early), torch.device("cpu")) for n in (500, 1500)}
        assert peaks[500] == peaks[1500] > 0
    # the naive reference, by contrast, grows with the iterations it records
    grow = [peak_extra_bytes(lambda: naive_sinkhorn_loss(hm.clone().requires_grad_(True), kp, w, n),
                             torch.device("cpu")) for n in (2, 8)]
    assert grow[1] > grow[0]


def test_naive_reference_matches_the_loss():
    torch.set_num_threads(1)
    hm, kp, w = make_inputs(2, 3, 10, 8, dtype=torch.float64, seed=2)
    ours = HDMLoss(iterations=50)(hm, kp, w)
    assert float(naive_sinkhorn_loss(hm, kp, w, 50)) == pytest.approx(float(ours), rel=1e-9)


def test_sizes_and_cli():
    assert parse_size("96x72") == ("96x72", (96, 72))
    assert parse_size("demo") == ("demo", (24, 16))
    with pytest.raises(ValueError):
        parse_size("96by72")
    args = build_parser().parse_args(["bench", "loss", "--threads", "2", "--sizes", "demo", "8x6"])
    assert (args.what, args.threads, args.sizes) == ("loss", 2, ["demo", "8x6"])


# ------------------------------------------------------------------------------------------------
# data loading benchmark


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "coco"
    synthetic.generate_coco(root, seed=1, image_size=(96, 72), train_images=3, val_images=1, test_images=0,
                            max_people=2, progress=False)
    return root


def test_data_benchmark_writes_the_documented_json(tiny_coco, tmp_path):
    params = load_params(ROOT / "params.yaml", "smoke")
    report = run_data_benchmark(params, dataset="coco", workers=[1], batches=2, batch_size=2, split_samples=3,
                                cv2_threads=["default", 0], root=tiny_coco, out_dir=tmp_path, verbose=False)
    on_disk = json.loads((tmp_path / "data_smoke_coco.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert {"benchmark", "environment", "settings", "opencv_threads", "sample_time_split", "loader"} <= on_disk.keys()
    env = on_disk["environment"]
    assert env["device"] == "cpu" and env["device_name"] and env["cpu_count"] >= 1 and env["usable_cpus"] >= 1
    assert env["torch_version"] and env["opencv_version"] and env["opencv_threads"] >= 1
    s = on_disk["settings"]
    assert (s["profile"], s["dataset"], s["codec"], s["batch_size"]) == ("smoke", "coco", "gaussian", 2)
    assert s["input_size"] == params["profiles"]["smoke"]["datasets"]["coco"]["input_size"]
    assert s["worker_counts"] == [0, 1] and s["cv2_threads"] == ["default", 0] and s["samples"] >= 2
    assert on_disk["opencv_threads"]["dataset_sets_threads"] is False
    assert set(on_disk["opencv_threads"]["in_worker"]) == {"default", "0"}

    split = on_disk["sample_time_split"]
    assert split["samples"] == 3 and split["matches_dataset"] is True
    assert tuple(split["mean_ms"]) == STEPS and all(v >= 0 for v in split["mean_ms"].values())
    assert sum(split["share"].values()) == pytest.approx(1.0)
    assert split["getitem_ms"] > 0 and split["source_image_sizes_hw"] == [[72, 96]]

    rows = on_disk["loader"]
    assert [(r["cv2_threads"], r["workers"]) for r in rows] == [("default", 0), ("default", 1), (0, 0), (0, 1)]
    for r in rows:
        assert r["batches"] == 2 and r["images"] == 4 and r["image_shape"] == [3, 96, 64]
        assert r["images_per_s"] > 0 and r["ratio_vs_workers0"] > 0 and r["startup_s"] > 0
        assert r["images_per_s_per_worker"] == pytest.approx(r["images_per_s"] / max(1, r["workers"]))
        assert r["ratio_per_worker"] == pytest.approx(r["ratio_vs_workers0"] / max(1, r["workers"]))
        if r["workers"] == 0:
            assert r["ratio_vs_workers0"] == 1.0


def test_data_benchmark_errors_and_cli(tmp_path):
    params = load_params(ROOT / "params.yaml", "smoke")
    with pytest.raises(PipelineError, match="run the data stage first"):
        run_data_benchmark(params, root=tmp_path / "missing", out_dir=tmp_path, verbose=False)
    with pytest.raises(PipelineError, match="--workers"):
        run_data_benchmark(params, workers=[-1], root=tmp_path, out_dir=tmp_path, verbose=False)
    assert not list(tmp_path.glob("*.json"))
    args = build_parser().parse_args(["bench", "data", "--workers", "0", "2", "--dataset", "mpii", "--seconds", "1"])
    assert (args.what, args.workers, args.dataset, args.seconds, args.batches) == ("data", [0, 2], "mpii", 1.0, None)
    assert args.cv2_threads == ["default", "0"]


def test_train_benchmark_writes_the_documented_json(tmp_path):
    """Smoke profile on the CPU: every field, the HDM/MSE ratio of the same call, the GPU-hour formula."""
    from pipeline.bench.train import TRAIN_SAMPLES, default_runs, run_train_benchmark

    params = load_params(ROOT / "params.yaml", "smoke")
    runs = ["coco_hrnet_w32_mse", "coco_hrnet_w32_udp", "coco_hrnet_w32_hdm"]  # UDP: an MSE run, not the baseline
    rep = run_train_benchmark(params, profile="smoke", runs=runs, iters=2, warmup=1, device="cpu",
                              out_dir=tmp_path, progress=False)
    out = tmp_path / "train_smoke_cpu.json"
    assert rep["path"] == str(out) and json.loads(out.read_text())["runs"].keys() == set(runs)
    mse, hdm = rep["runs"]["coco_hrnet_w32_mse"], rep["runs"]["coco_hrnet_w32_hdm"]
    batch = params["profiles"]["smoke"]["train"]["batch_size"]
    for r, loss in ((mse, "mse"), (hdm, "hdm")):
        assert r["loss"] == loss and r["batch_size"] == batch and r["iters"] == 2 and r["warmup"] == 1
        assert r["input_size"] == [64, 96] and r["heatmap_size"] == [16, 24] and r["amp"] is None
        assert r["images_per_s"] == pytest.approx(2 * batch / r["elapsed_s"])
        assert r["est_gpu_hours"] == pytest.approx(r["epochs"] * TRAIN_SAMPLES["coco"] / r["images_per_s"] / 3600)
        assert r["process_peak_rss_mb"] > 0 and "peak_memory_mb" not in r
        assert torch.isfinite(torch.tensor(r["final_loss"]))
    assert "vs_mse" not in mse and hdm["hdm_iterations"] == 1000
    assert rep["runs"]["coco_hrnet_w32_udp"]["codec"] == "udp" and "codec" not in mse
    assert hdm["vs_mse"] == {"run": "coco_hrnet_w32_mse",
                             "images_per_s_ratio": pytest.approx(hdm["images_per_s"] / mse["images_per_s"])}
    t1 = rep["per_table"]["table1"]
    assert t1 == {"runs": 8, "measured_runs": 2, "complete": False,
                  "est_gpu_hours": pytest.approx(mse["est_gpu_hours"] + hdm["est_gpu_hours"])}
    assert "table3" not in rep["per_table"]   # no MPII run measured
    assert default_runs(params) == [f"coco_{a}_{l}" for a in ("simplebaseline", "hrnet_w32", "hrnet_w48",
                                                               "hrformer_base") for l in ("mse", "hdm")]


def test_train_benchmark_errors_and_cli(tmp_path):
    from pipeline.bench.train import run_train_benchmark

    params = load_params(ROOT / "params.yaml", "smoke")
    with pytest.raises(PipelineError, match="--runs.*nope"):
        run_train_benchmark(params, profile="smoke", runs=["nope"], out_dir=tmp_path, progress=False)
    with pytest.raises(PipelineError, match="--iters"):
        run_train_benchmark(params, profile="smoke", iters=0, out_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())
    args = build_parser().parse_args(["bench", "train", "--runs", "a", "b", "--iters", "5", "--device", "cpu"])
    assert (args.what, args.runs, args.iters, args.warmup, args.device) == ("train", ["a", "b"], 5, 20, "cpu")


# ------------------------------------------------------------------------------------------------
# optimum of the HDM loss over a free heatmap (epsilon units)


def test_hdm_optimum_sharpens_at_one_heatmap_pixel_and_matches_demanders_at_a_quarter():
    """The worked example's numbers for a dot offset by (0.25, 0.25): 0.714/0.143/0.143/0 at eps = 1 heatmap px,
    the demanders 0.5625/0.1875/0.1875/0.0625 at eps = 1 input px = 0.25 heatmap px (stride 4)."""
    from pipeline.bench.hdm_optimum import ORIGIN, demander_masses, optimise_free_heatmaps

    dots = torch.tensor([[ORIGIN + 0.25, ORIGIN + 0.25]], dtype=torch.float64)
    got = {}
    for units in ("heatmap", "input"):
        loss_fn = HDMLoss(epsilon=1.0, epsilon_units=units, stride=4, iterations=200, reduction="sum")
        hm, history = optimise_free_heatmaps(dots, loss_fn, steps=300, lr=0.1)
        assert history[-1] < history[0]
        got[units], want = demander_masses(hm, dots)
    torch.testing.assert_close(got["input"][0], want[0], rtol=0, atol=0.01)
    torch.testing.assert_close(got["heatmap"][0], torch.tensor([0.714, 0.143, 0.143, 0.0], dtype=torch.float64),
                               rtol=0, atol=0.01)


def test_hdm_optimum_benchmark_writes_json_and_figure(tmp_path, capsys):
    from pipeline.bench.hdm_optimum import run_hdm_optimum_benchmark

    rep = run_hdm_optimum_benchmark(load_params(ROOT / "params.yaml"), profile="paper", step=0.5, steps=12,
                                    iterations=50, out_dir=tmp_path)
    data = json.loads((tmp_path / "hdm_optimum.json").read_text())
    assert (tmp_path / "hdm_optimum.png").stat().st_size > 1000
    assert data["settings"]["stride"] == 4.0 and len(data["offsets"]) == 4
    assert data["units"]["heatmap"]["epsilon_effective_heatmap_px"] == 1.0
    assert data["units"]["input"]["epsilon_effective_heatmap_px"] == 0.25
    assert len(data["units"]["input"]["bias_heatmap_px"]) == 4 and rep["check_dot_0.25_0.25"] is None
    assert "hdm_optimum.json" in capsys.readouterr().out
    args = build_parser().parse_args(["bench", "hdm-optimum", "--offset-step", "0.25", "--steps", "50"])
    assert (args.what, args.offset_step, args.steps) == ("hdm-optimum", 0.25, 50)
