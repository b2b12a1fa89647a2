"""Sec. 4 per image (consistency_val.npz) and Table 5's Sinkhorn convergence sentence, from hand-made files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pipeline.metrics.uncertainty import Interval
from pipeline.report import consistency as cons
from pipeline.report.aggregate import RunRecord
from pipeline.report.findings import _sec4_section, sinkhorn_text

MSE, HDM = "coco_hrnet_w32_mse", "coco_hrnet_w32_hdm"


def _write(root: Path, run: str, seed: int, image_id, loss, oks) -> None:
    d = root / run / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    n = len(image_id)
    np.savez(d / cons.CONSISTENCY_FILE, image_id=np.asarray(image_id, np.int64), loss=np.asarray(loss, float),
             oks=np.asarray(oks, float), pckh=np.full(n, np.nan), joint_err=np.zeros(n))


def _rec(run: str, seeds: list[int]) -> RunRecord:
    return RunRecord(run, {s: {"coco_val/AP": 0.5} for s in seeds}, {s: f"{run}-{s}" for s in seeds})


def test_per_image_means_and_a_perfectly_consistent_loss(tmp_path):
    oks = np.linspace(0.1, 0.9, 20)
    ids = np.repeat(np.arange(10), 2)  # two people per image
    a = cons.per_image(ids, -oks, oks)
    assert a.image_ids.tolist() == list(range(10)) and a.metric[0] == pytest.approx((oks[0] + oks[1]) / 2)
    rc = cons.run_consistency(MSE, {0: a}, resamples=200)
    assert rc.rho.mean == -1.0 and rc.rho.low == -1.0 and rc.rho.high == -1.0  # loss = −OKS: ρ = −1 exactly
    # NaN people are left out, not averaged in
    b = cons.per_image(np.array([1, 1, 2]), np.array([1.0, np.nan, 3.0]), np.array([0.5, 0.9, 0.2]))
    assert b.loss.tolist() == [1.0, 3.0] and b.metric.tolist() == [0.5, 0.2]


def test_spearman_rows_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 30)), rng.random((4, 30))
    y[1] = np.round(y[1], 1)  # ties
    got = cons.spearman_rows(x, y)
    assert got == pytest.approx([stats.spearmanr(a, b).statistic for a, b in zip(x, y)])


def test_identical_seeds_count_once_and_the_interval_stays_inside_minus_one_one(tmp_path):
    rng = np.random.default_rng(1)
    oks = rng.random(300)
    loss = -oks + rng.normal(0, 0.2, 300)
    ids = np.arange(300)
    seeds = {0: cons.per_image(ids, loss, oks), 1: cons.per_image(ids, loss * (1 + 1e-9), oks),
             2: cons.per_image(ids, loss + rng.normal(0, 0.3, 300), oks)}
    assert cons.distinct(seeds) == [0, 2]
    rc = cons.run_consistency(MSE, seeds)
    expected = np.mean([stats.spearmanr(seeds[s].loss, oks).statistic for s in (0, 2)])
    assert rc.distinct == [0, 2] and rc.rho.mean == pytest.approx(expected)
    assert -1.0 <= rc.rho.low < rc.rho.mean < rc.rho.high <= 1.0
    # printing rounds outwards and never past ±1
    assert cons.format_bounds(Interval(0.999, 0.99, 1.0, 1000, "bootstrap")) == "+1.00 [+0.99, +1.00]"
    assert cons.format_bounds(Interval(-0.5, -0.5051, -0.4949, 1000, "bootstrap")) == "-0.50 [-0.51, -0.49]"


def test_sec4_section_from_files_and_not_run_without_them(tmp_path):
    oks = np.linspace(0.05, 0.95, 40)
    ids = np.arange(40)
    _write(tmp_path, MSE, 0, ids, oks, oks)  # loss rises with OKS: ρ = +1, inconsistent
    _write(tmp_path, HDM, 0, ids, -oks, oks)  # ρ = −1
    records = {MSE: _rec(MSE, [0]), HDM: _rec(HDM, [0])}
    run_dir = lambda run, seed: tmp_path / run / f"seed{seed}"  # noqa: E731
    text = "\n".join(_sec4_section(records, run_dir))
    line = next(l for l in text.splitlines() if l.startswith(f"- {MSE} vs {HDM}:"))
    assert "MSE ρ = +1.00 [+1.00, +1.00] (1 seeds with data, 1 distinct; 40 images)" in line
    assert "HDM ρ = -1.00 [-1.00, -1.00]" in line
    assert "ρ_MSE − ρ_HDM = +2.00 [+2.00, +2.00]: HDM's loss ranks the images more consistently" in line
    assert "not run (no consistency_val.npz" in "\n".join(_sec4_section(records, lambda r, s: tmp_path / "none"))
    assert "not run (coco_hrnet_w48_mse, coco_hrnet_w48_hdm)" in text


def test_pair_difference_uses_the_same_image_resamples():
    rng = np.random.default_rng(2)
    oks = rng.random(200)
    loss = -oks + rng.normal(0, 0.3, 200)
    a = cons.run_consistency(MSE, {0: cons.per_image(np.arange(200), loss, oks)})
    same = cons.pair_difference(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: identical runs differ by exactly 0


def _convergence(root: Path, run: str, cap: int, maxima: list[float]) -> None:
    d = root / run / "seed0"
    d.mkdir(parents=True)
    (d / "sinkhorn_convergence.json").write_text(json.dumps({
        "tolerances": [1e-2, 1e-3, 1e-4, 1e-6], "iterations_median": [3, 8, 20, 60],
        "iterations_p95": [5, 12, 30, 200], "iterations_max": maxima, "cap": cap, "heatmaps": 170,
        "epsilon_effective": 0.25}))


def test_table5_convergence_sentence_from_the_json(tmp_path):
    runs = ["coco_hrnet_w48_hdm_it500", "coco_hrnet_w48_hdm", "coco_hrnet_w48_hdm_it1500"]
    records = {r: _rec(r, [0]) for r in runs}
    run_dir = lambda run, seed: tmp_path / run / f"seed{seed}"  # noqa: E731
    assert sinkhorn_text(runs, records, run_dir).count("not measured") == 3
    _convergence(tmp_path, runs[0], 500, [7, 15, 40, None])  # 1e-6 not reached within 500
    _convergence(tmp_path, runs[1], 1000, [6, 14, 45, 700])
    _convergence(tmp_path, runs[2], 1500, [6, 14, 41, 900])
    text = sinkhorn_text(runs, records, run_dir)
    assert ("coco_hrnet_w48_hdm_it500 (cap 500, seeds [0], 170 heatmaps, effective ε 0.25): tolerance 0.01 → "
            "median 3, p95 5, max 7") in text
    assert "1e-06 → median 60, p95 200, max not reached" in text
    assert ("Every heatmap of these runs reached tolerance 0.01, 0.001, 0.0001 before the smallest cap "
            "(500 iterations); tolerance 1e-06 not.") in text


def test_epsilon_text_from_the_benchmark_record(tmp_path):
    from pipeline.report.findings import optimum_text

    assert "not measured" in optimum_text(tmp_path / "absent.json")
    f = tmp_path / "opt.json"
    f.write_text(json.dumps({"units": {
        "heatmap": {"epsilon_effective_heatmap_px": 1.0, "mean_abs_bias_heatmap_px": 0.113, "max_abs_bias_heatmap_px": 0.176},
        "input": {"epsilon_effective_heatmap_px": 0.25, "mean_abs_bias_heatmap_px": 0.004, "max_abs_bias_heatmap_px": 0.01}}}))
    text = optimum_text(f)
    assert "ε = 1 heatmap px (effective 1 heatmap px): mean |bias| 0.113, max 0.176 heatmap px" in text
    assert "ε = 1 input px (effective 0.25 heatmap px): mean |bias| 0.004, max 0.010 heatmap px" in text


def test_summary_keeps_the_findings_words_only():
    from pipeline.report.summary import build_summary

    findings = "\n".join(["# Findings", "", "Comparisons in this file: 2 with ≥ 2 training seeds.", "",
                          "## Table 1: COCO", "", "- Seed noise: x", "- **a** − b: ΔAP +1.0", "  - a: detail", "",
                          "## Ablations (Tables 4 and 5)", "", "- **n** − m: ΔAP -1.0", "- Table 5 (x): spread",
                          "", "## Beyond the paper", "", "- not kept"])
    out = build_summary("demo", findings)
    assert "- **a** − b: ΔAP +1.0" in out and "Comparisons in this file: 2" in out and "- Table 5 (x): spread" in out
    assert "detail" not in out and "not kept" not in out and "- **n** − m" not in out
