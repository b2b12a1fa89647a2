"""``python -m pipeline bench <what>`` through the CLI (:func:`pipeline.cli.main`) on the smoke profile, in a
scratch project with the committed pretrained weights and the smoke data; each bad argument stops with one
line; and the benchmarks' report arithmetic (extrapolation, targets, recorded epochs) against values
computed by hand. Tiny sizes only; no assertion on any timing."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.bench import data as bench_data
from pipeline.bench import loss as bench_loss
from pipeline.cli import main
from pipeline.config import load_params, resolve_run
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
CLI = ["--params", str(ROOT / "params.yaml"), "--profile", "smoke"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (the machine is shared; timings are not asserted)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder with pretrained/ (the committed weights) and data/smoke/{coco,mpii} from the data stage."""
    d = tmp_path_factory.mktemp("bench_cli")
    (d / "pretrained").symlink_to(ROOT / "pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        for dataset in ("coco", "mpii"):
            assert main([*CLI, "--quiet", "data", "--dataset", dataset]) == 0
    return d


@pytest.fixture
def in_project(project, monkeypatch) -> Path:
    monkeypatch.chdir(project)
    return project


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([*CLI, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("args, line", [
    (["loss", "--sizes", "1x5"], "--sizes: heatmap size must be at least 2x2, got '1x5'"),
    (["loss", "--sizes", "8by6"], "--sizes: heatmap size must be 'HxW'"),
    (["loss", "--threads", "0"], "--threads: must be >= 1, got 0"),
    (["hdm-optimum", "--offset-step", "0"], "--offset-step: must be in (0, 1], got 0.0"),
    (["hdm-optimum", "--offset-step", "1.5"], "--offset-step: must be in (0, 1], got 1.5"),
    (["hdm-optimum", "--steps", "10"], "--steps: must be >= 11, got 10"),
    (["data", "--seconds", "0"], "--seconds: must be > 0, got 0.0"),
    (["data", "--batches", "0"], "--batches: must be >= 1, got 0"),
    (["data", "--cv2-threads", "many"], "--cv2-threads: 'default' or an integer >= 0, got 'many'"),
    (["data", "--cv2-threads", "-1"], "--cv2-threads: 'default' or an integer >= 0, got -1"),
    (["train", "--warmup", "-1"], "--warmup: must be >= 0, got -1"),
])
def test_bad_bench_arguments_stop_with_one_line_and_write_nothing(in_project, capsys, args, line):
    out_dir = in_project / "bad_args"
    rc, _, err = _cli(capsys, "bench", *args, "--out-dir", str(out_dir))
    assert rc == 1
    assert err.startswith(f"error: {line}") and err.count("\n") == 1
    assert not out_dir.exists()


# ------------------------------------------------------------------------------------------------ loss
def test_bench_loss_cli_times_the_demo_step_on_the_profile_data(in_project, capsys):
    rc, out, _ = _cli(capsys, "bench", "loss", "--sizes", "6x5", "--repeats", "1", "--threads", "1",
                      "--out-dir", "out")
    assert rc == 0
    report = json.loads((in_project / "out" / "loss_cpu.json").read_text())
    assert list(report["sizes"]) == ["6x5"] and report["environment"]["torch_threads"] == 1
    demo = report["demo_training_step"]
    assert demo["profile"] == "smoke" and list(demo["runs"]) == ["coco_hrnet_w48_hdm", "coco_hrnet_w48_mse"]
    for name, entry in demo["runs"].items():
        # the first samples of the profile's training set (the data stage ran), not stand-in tensors
        assert entry["batch_source"] == f"demo dataset ({entry['batch_size']} training samples)"
        t = sorted(entry["times_s"])
        assert len(t) == 10 and entry["step_s"] == pytest.approx((t[4] + t[5]) / 2)  # the median
        assert "recorded_epoch_time_s" not in entry  # no trained run in this folder
    hdm, mse = demo["runs"]["coco_hrnet_w48_hdm"], demo["runs"]["coco_hrnet_w48_mse"]
    assert hdm["hdm_iterations"] == resolve_run(load_params(ROOT / "params.yaml", "smoke"),
                                                "coco_hrnet_w48_hdm")["hdm"]["iterations"]
    assert demo["hdm_over_mse_step"] == pytest.approx(hdm["step_s"] / mse["step_s"])
    target = report["targets"]["hdm_over_mse_training_step"]
    assert target["measured"] == demo["hdm_over_mse_step"] and target["met"] == (target["measured"] <= 1.2)
    assert "fwd_bwd_s" not in report["targets"]  # the target size (96x72) was not measured
    assert "demo training step (coco_hrnet_w48_hdm:" in out and "target hdm_over_mse_training_step" in out
    assert (in_project / "out" / "loss_cuda.json").is_file() == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert report["cuda"] == {"skipped": "no CUDA device visible"} and "CUDA: skipped" in out


def _summary(path: Path, epoch_times: list[float] | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    text = "{not json" if epoch_times is None else json.dumps(
        {"history": [{"epoch": i + 1, "epoch_time_s": t} for i, t in enumerate(epoch_times)]})
    (path / "train_summary.json").write_text(text)


def test_demo_step_reads_the_recorded_epoch_times_of_the_first_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data here: the step runs on stand-in tensors of the right shapes
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")
    params = load_params(ROOT / "params.yaml", "smoke")
    runs = tmp_path / "results" / "smoke" / "runs"
    _summary(runs / "coco_hrnet_w48_hdm" / "seed0", [3.0, 1.0, 2.0])   # median 2
    _summary(runs / "coco_hrnet_w48_mse" / "seed0", [1.0, 1.5])        # median 1.25
    _summary(runs / "coco_hrnet_w48_mse" / "seed1", [100.0])           # another seed: not read

    demo = bench_loss.demo_training_step(params, profile="smoke", repeats=1)
    hdm, mse = demo["runs"]["coco_hrnet_w48_hdm"], demo["runs"]["coco_hrnet_w48_mse"]
    cfg = params["profiles"]["smoke"]
    w_in, h_in = cfg["datasets"]["coco"]["input_size"]
    assert hdm["batch_source"] == "synthetic tensors (demo dataset not found)"
    assert hdm["batch_size"] == cfg["train"]["batch_size"] and hdm["input_size"] == [w_in, h_in]
    assert (hdm["recorded_epoch_time_s"], hdm["recorded_epochs"]) == (2.0, 3)
    assert (mse["recorded_epoch_time_s"], mse["recorded_epochs"]) == (1.25, 2)
    assert demo["hdm_over_mse_recorded_epoch"] == pytest.approx(2.0 / 1.25) and "recorded_note" in demo

    report = {"environment": {"device_name": "cpu", "torch_threads": 1, "torch_version": torch.__version__},
              "settings": {"batch": 1, "joints": 1, "iterations": 1, "naive_iterations": [1, 2]}, "sizes": {},
              "demo_training_step": demo, "targets": bench_loss._targets({}, torch.device("cpu"), demo)}
    assert "recorded demo epochs: HDM/MSE = 1.60" in bench_loss._table(report)

    _summary(runs / "coco_hrnet_w48_mse" / "seed0", None)  # unreadable: that run has no recorded time
    demo = bench_loss.demo_training_step(params, profile="smoke", repeats=1)
    assert "recorded_epoch_time_s" in demo["runs"]["coco_hrnet_w48_hdm"]
    assert "recorded_epoch_time_s" not in demo["runs"]["coco_hrnet_w48_mse"]
    assert "hdm_over_mse_recorded_epoch" not in demo


def test_targets_at_the_target_size_on_cpu_and_cuda():
    row = {"ours": {"fwd_bwd_s": 0.4, "memory": {"ratio_to_heatmap": 9.0, "independent_of_iterations": True}},
           "ratio_naive_over_ours": 500.0}
    rows = {"96x72": row, "8x6": {"ours": {"memory": {"independent_of_iterations": False}}}}
    cpu = bench_loss._targets(rows, torch.device("cpu"), {"hdm_over_mse_step": 1.3})
    assert cpu["fwd_bwd_s"] == {"target": 0.5, "measured": 0.4, "met": True}
    assert cpu["speedup_vs_naive"] == {"target": 400.0, "measured": 500.0, "met": True}
    assert cpu["peak_extra_memory_ratio"] == {"target": 8.0, "measured": 9.0, "met": False}
    assert cpu["memory_independent_of_iterations"] is False
    assert cpu["hdm_over_mse_training_step"] == {"target": 1.2, "measured": 1.3, "met": False}
    cuda = bench_loss._targets({"96x72": row}, torch.device("cuda"), None)
    assert cuda["fwd_bwd_s"] == {"target": 1e-3, "measured": 0.4, "met": False}
    assert "speedup_vs_naive" not in cuda and "hdm_over_mse_training_step" not in cuda
    assert cuda["memory_independent_of_iterations"] is True


def test_naive_reference_falls_back_to_proportional_scaling_without_a_positive_slope(monkeypatch):
    """Timing noise can make t(n2) <= t(n1): the extrapolation is then t(n2) * iterations / n2."""
    monkeypatch.setattr(bench_loss, "time_call", lambda fn, repeats, device, warmup=1: [0.5])
    row = bench_loss.bench_size("t", 6, 5, batch=2, joints=2, iterations=100, repeats=1, device=torch.device("cpu"),
                                naive_iterations=(2, 4), naive_memory_budget=1 << 30, memory_iterations=(50,),
                                full_loop_memory=False, marginal_iterations=(50,))
    naive = row["naive"]
    assert naive["fwd_bwd_s_extrapolated"] == pytest.approx(0.5 * 100 / 4)
    assert naive["fwd_bwd_s_proportional"] == pytest.approx(0.5 * 100 / 4)
    assert "not positive" in naive["iteration_scaling"]
    assert row["ratio_naive_over_ours"] == pytest.approx(25.0)
    assert set(row["ours"]["memory"]) == {"method", "early_stop", "peak_extra_bytes", "ratio_to_heatmap",
                                          "independent_of_iterations"}  # full_loop_memory=False


def test_naive_batch_halves_until_the_record_fits_the_budget():
    per_sample = 2 * 17 * 4 * 100 * 4 * (20 + 2)  # bytes of the naive record per batch element
    assert bench_loss._naive_batch(32, 17, 100, 4, 20, 32 * per_sample) == 32
    assert bench_loss._naive_batch(32, 17, 100, 4, 20, 5 * per_sample) == 4
    assert bench_loss._naive_batch(32, 17, 100, 4, 20, 1) == 1


def test_loss_benchmark_sizes_and_arguments():
    assert bench_loss._size_items(None) == [("demo", (24, 16)), ("64x48", (64, 48)), ("96x72", (96, 72))]
    with pytest.raises(ValueError, match="two increasing counts"):
        bench_loss.run_loss_benchmark(sizes=["demo"], naive_iterations=(4, 4), demo_step=False, cuda=False)


# ------------------------------------------------------------------------------------------------ hdm-optimum
def test_bench_hdm_optimum_cli_reports_the_quarter_pixel_dot(in_project, capsys):
    rc, out, _ = _cli(capsys, "bench", "hdm-optimum", "--offset-step", "0.25", "--steps", "11", "--out-dir", "opt")
    assert rc == 0
    report = json.loads((in_project / "opt" / "hdm_optimum.json").read_text())
    assert len(report["offsets"]) == 16 and report["settings"]["profile"] == "smoke"
    q = report["check_dot_0.25_0.25"]
    # bilinear weights of a dot at (0.25, 0.25) on its 4 pixels: (3/4)^2, 3/4 * 1/4 (twice), (1/4)^2
    assert q["demanders"] == pytest.approx([0.5625, 0.1875, 0.1875, 0.0625])
    i = report["offsets"].index([0.25, 0.25])
    for units in ("heatmap", "input"):
        assert q[units]["masses"] == report["units"][units]["demander_pixel_masses"][i]
        assert sum(q[units]["masses"]) <= 1 + 1e-9
    assert "dot (0.25, 0.25): demanders 0.5625/0.1875/0.1875/0.0625" in out


# ------------------------------------------------------------------------------------------------ data
def test_bench_data_cli_sizes_the_loops_from_the_seconds(in_project, capsys):
    rc, out, _ = _cli(capsys, "bench", "data", "--dataset", "mpii", "--workers", "2", "--seconds", "0.05",
                      "--cv2-threads", "default", "0", "0", "--out-dir", "dl")
    assert rc == 0
    report = json.loads((in_project / "dl" / "data_smoke_mpii.json").read_text())
    s = report["settings"]
    params = load_params(ROOT / "params.yaml", "smoke")
    first_mse = next(n for n, r in params["runs"].items() if r["dataset"] == "mpii" and r["loss"] == "mse")
    assert (s["run"], s["dataset"], s["cv2_threads"], s["worker_counts"]) == (first_mse, "mpii", ["default", 0], [0, 2])
    per_batch_s = report["sample_time_split"]["getitem_ms"] * 1e-3 * s["batch_size"]
    batches = max(2, math.ceil(0.05 / per_batch_s))
    rows = {(r["cv2_threads"], r["workers"]): r for r in report["loader"]}
    assert set(rows) == {("default", 0), ("default", 2), (0, 0), (0, 2)}
    for (_, workers), r in rows.items():
        # whole rounds of the workers, after one warm-up batch per worker
        assert r["batches"] == (batches if workers == 0 else math.ceil(batches / 2) * 2)
        assert r["warmup_batches"] == max(1, workers)
    assert "cv2 threads default, workers 2:" in out and "data loading benchmark: smoke mpii" in out


def test_data_benchmark_refuses_what_it_cannot_measure(in_project, tmp_path):
    params = load_params(ROOT / "params.yaml", "smoke")
    only_coco = {**params, "runs": {k: v for k, v in params["runs"].items() if v["dataset"] == "coco"}}
    with pytest.raises(PipelineError, match="no run uses dataset 'mpii'"):
        bench_data.run_data_benchmark(only_coco, dataset="mpii", out_dir=tmp_path, verbose=False)
    with pytest.raises(PipelineError, match="--batch-size: must be >= 1, got -1"):
        bench_data.run_data_benchmark(params, dataset="coco", batch_size=-1, batches=1, out_dir=tmp_path,
                                      verbose=False)
    empty = tmp_path / "coco"
    (empty / "annotations").mkdir(parents=True)
    ann = json.loads((in_project / "data/smoke/coco/annotations/person_keypoints_train2017.json").read_text())
    ann["annotations"] = []
    (empty / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(ann))
    with pytest.raises(PipelineError, match="no training samples"):
        bench_data.run_data_benchmark(params, dataset="coco", root=empty, batches=1, out_dir=tmp_path, verbose=False)
    assert not list(tmp_path.glob("*.json"))


# ------------------------------------------------------------------------------------------------ train
def test_bench_train_cli_prints_each_run_and_the_table(in_project, capsys):
    runs = ["coco_hrnet_w32_mse", "coco_hrnet_w32_hdm"]
    rc, out, _ = _cli(capsys, "bench", "train", "--runs", *runs, "--iters", "1", "--warmup", "0", "--out-dir", "tr")
    assert rc == 0
    report = json.loads((in_project / "tr" / "train_smoke_cpu.json").read_text())  # the profile's device: cpu
    hdm = report["runs"]["coco_hrnet_w32_hdm"]
    assert hdm["vs_mse"]["images_per_s_ratio"] == pytest.approx(
        hdm["images_per_s"] / report["runs"]["coco_hrnet_w32_mse"]["images_per_s"])
    lines = out.splitlines()
    assert any(ln.startswith("coco_hrnet_w32_hdm: ") and ln.endswith(" ms/step)") for ln in lines)
    assert "training-step benchmark: profile smoke" in out
    row = next(ln for ln in lines if ln.startswith("coco_hrnet_w32_hdm ") and "x" in ln)
    assert f"{hdm['vs_mse']['images_per_s_ratio']:.2f}" in row.split()
