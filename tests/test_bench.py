"""Smoke test of the loss benchmark (pipeline.bench): it runs, writes valid JSON, memory is flat.

Tiny sizes only; no assertion on any timing.
"""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.bench.loss import (
    make_inputs,
    naive_sinkhorn_loss,
    parse_size,
    peak_extra_bytes,
    run_loss_benchmark,
)
from pipeline.cli import build_parser
from pipeline.losses import HDMLoss


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
