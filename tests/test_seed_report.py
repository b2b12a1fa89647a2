"""Seeds in the report: per-seed records → means, t-intervals paired by seed, bootstrap fallback with one
seed, the printed cells, findings.md; and the diagnostics that explain a run (a collapsed pair is flagged)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.metrics import diagnostics
from pipeline.metrics.uncertainty import Interval
from pipeline.report.aggregate import RunRecord, mean_metrics, seed_noise, table_intervals
from pipeline.report.findings import build_findings
from pipeline.report.paper_numbers import get_table
from pipeline.report.tables import build_tables, format_delta

MSE, HDM = "coco_hrnet_w32_mse", "coco_hrnet_w32_hdm"


def _rec(run: str, ap_by_seed: dict[int, float], **extra: float) -> RunRecord:
    return RunRecord(run, {s: {"coco_val/AP": v, **extra} for s, v in ap_by_seed.items()},
                     {s: f"{run}-id{s}" for s in ap_by_seed})


# ----------------------------------------------------------------------------- intervals
def test_value_interval_is_student_t_over_seeds():
    vals = {0: 0.50, 1: 0.56, 2: 0.53}
    iv = table_intervals(get_table(1), {MSE: _rec(MSE, vals)})[MSE].value
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(list(vals.values())), scale=stats.sem(list(vals.values())))
    assert iv.method == "t" and iv.n == 3
    assert iv.low == pytest.approx(lo) and iv.high == pytest.approx(hi)


def test_delta_is_paired_by_seed():
    # HDM is exactly 0.02 above MSE seed by seed, while the seeds themselves vary a lot: paired, the
    # interval is tight and excludes 0; unpaired it would not.
    mse = {0: 0.40, 1: 0.60, 2: 0.50}
    hdm = {s: v + 0.02 for s, v in mse.items()}
    hdm[7] = 0.99  # a seed the baseline lacks is not paired
    iv = table_intervals(get_table(1), {MSE: _rec(MSE, mse), HDM: _rec(HDM, hdm)})[HDM].delta
    assert iv.method == "t" and iv.n == 3
    assert iv.mean == pytest.approx(0.02) and iv.low == pytest.approx(0.02) and iv.high == pytest.approx(0.02)
    assert iv.excludes_zero
    unpaired = stats.ttest_ind([v + 0.02 for v in mse.values()], list(mse.values()))
    assert unpaired.pvalue > 0.5  # the same numbers unpaired resolve nothing


def test_one_seed_falls_back_to_the_image_bootstrap():
    calls = []

    def boot(split, run, baseline, seed):
        calls.append((split, run, baseline, seed))
        return {"value": Interval(0.5, 0.45, 0.55, 1000, "bootstrap"),
                "delta": Interval(0.1, 0.02, 0.2, 1000, "bootstrap")}

    ivs = table_intervals(get_table(1), {MSE: _rec(MSE, {3: 0.4}), HDM: _rec(HDM, {3: 0.5})}, boot)
    assert ("coco_val", HDM, MSE, 3) in calls and ("coco_val", MSE, None, 3) in calls
    assert ivs[HDM].value.method == "bootstrap" and ivs[HDM].delta.low == 0.02
    # without bootstrap data the line has no interval, and says so
    ivs = table_intervals(get_table(1), {MSE: _rec(MSE, {3: 0.4}), HDM: _rec(HDM, {3: 0.5})}, lambda *a: None)
    assert ivs[HDM].value.method == "none" and math.isnan(ivs[HDM].value.low)


def test_means_and_seed_noise():
    recs = {MSE: _rec(MSE, {0: 0.4, 1: 0.6}), HDM: _rec(HDM, {0: 0.5, 1: 0.5, 2: 0.8})}
    assert mean_metrics(recs[MSE])["coco_val/AP"] == pytest.approx(0.5)
    sd, dof = seed_noise(recs, "coco_val/AP")
    pooled = (0.02 + (0.01 + 0.01 + 0.04)) / 3  # sums of squares over dof 1 + 2
    assert dof == 3 and sd == pytest.approx(math.sqrt(pooled))
    sd1, dof1 = seed_noise({MSE: _rec(MSE, {0: 0.4})}, "coco_val/AP")
    assert dof1 == 0 and math.isnan(sd1)


# ----------------------------------------------------------------------------- printed cells
def test_table_cells_show_interval_n_and_resolved_delta():
    recs = {MSE: _rec(MSE, {0: 0.40, 1: 0.42, 2: 0.41}), HDM: _rec(HDM, {0: 0.45, 1: 0.48, 2: 0.46})}
    measured = {r: mean_metrics(rec) for r, rec in recs.items()}
    ivs = {"table1": table_intervals(get_table(1), recs)}
    df = build_tables(measured, profile="demo", intervals=ivs)["table1"]
    line = df[(df["run"] == HDM) & (df["source"] == "measured")].iloc[0]
    assert line["n"] == 3 and line["interval"] == "t" and bool(line["delta_resolved"])
    d = ivs["table1"][HDM].delta
    assert line["delta_ci_low"] == pytest.approx(100 * d.low) and line["ci_low"] < line["AP"] < line["ci_high"]
    assert format_delta(5.3, "t", 4.1, 6.5, True) == "(↑5.3 ±1.2)*"
    assert format_delta(-0.3, "bootstrap", -0.9, 0.2, False) == "(↓0.3 [-0.9, 0.2])"
    assert format_delta(-0.5, "bootstrap", -0.9, -0.2, True) == "(↓0.5 [-0.9, -0.2])"  # one seed: never a star


def test_one_seed_delta_is_never_resolved_in_tables_or_findings():
    def boot(split, run, baseline, seed):
        return {"value": Interval(0.5, 0.45, 0.55, 1000, "bootstrap"),
                "delta": Interval(-0.1, -0.15, -0.05, 1000, "bootstrap")}

    recs = {MSE: _rec(MSE, {0: 0.4}), HDM: _rec(HDM, {0: 0.3})}
    ivs = {"table1": table_intervals(get_table(1), recs, boot)}
    df = build_tables({r: mean_metrics(rec) for r, rec in recs.items()}, profile="demo", intervals=ivs)["table1"]
    line = df[(df["run"] == HDM) & (df["source"] == "measured")].iloc[0]
    assert line["delta_resolved"] is None and line["delta_ci_high"] == pytest.approx(-5.0)
    text = build_findings(profile="demo", records=recs, intervals=ivs, curves={}, seeds=[0], bootstrap=boot)
    hdm = next(l for l in text.splitlines() if l.startswith(f"- **{HDM}**"))
    assert "(image bootstrap, one training seed), evaluation noise only: the interval excludes 0, no verdict" in hdm
    assert "resolved" not in hdm
    assert "Comparisons in this file: 0 with ≥ 2 training seeds" in text


# ----------------------------------------------------------------------------- diagnostics
def test_a_collapsed_pair_is_flagged():
    rng = np.random.default_rng(0)
    gt = rng.uniform(5, 40, size=(50, 17, 2))
    vis = np.ones((50, 17))
    pred = gt + rng.normal(0, 0.3, size=gt.shape)
    # the eyes (1, 2) collapse onto their midpoint: both predicted at the same spot
    mid = 0.5 * (gt[:, 1] + gt[:, 2])
    pred[:, 1] = mid
    pred[:, 2] = mid + 0.05
    ratios = diagnostics.separation_ratios(pred, gt, vis, [(1, 2), (5, 6)])
    assert ratios[(1, 2)] < 0.05 and ratios[(5, 6)] == pytest.approx(1.0, abs=0.1)
    assert diagnostics.collapsed_pairs(ratios) == [(1, 2)]
    err = diagnostics.joint_errors(pred, gt, vis)
    assert err[1] > 3 and err[5] < 1
    vis[:, 0] = 0
    assert math.isnan(diagnostics.joint_errors(pred, gt, vis)[0])
    assert diagnostics.pair_name("left_eye", "right_eye") == "eye" and diagnostics.pair_name("r_ankle", "l_ankle") == "ankle"


def test_dead_heatmaps_and_loss_metric_consistency():
    peaks = np.array([[0.5, -0.1], [0.0, 0.2], [0.3, 0.4], [0.1, -1.0]])
    assert diagnostics.dead_fractions(peaks).tolist() == [0.25, 0.5]
    loss = [5.0, 4.0, 3.5, 3.4, 3.0]
    metric = [0.1, 0.3, 0.35, 0.36, 0.5]  # larger drops come with larger gains
    rho, n = diagnostics.loss_metric_consistency(loss, metric)
    assert n == 4 and rho == pytest.approx(stats.spearmanr([1.0, 0.5, 0.1, 0.4], [0.2, 0.05, 0.01, 0.14]).statistic)
    assert rho == pytest.approx(1 - 6 * 2 / (4 * 15))  # rank differences 0, 1, 0, -1 by hand: 0.8
    assert math.isnan(diagnostics.loss_metric_consistency([1, 2], [3, 4])[0])


def test_findings_name_the_runs_and_the_collapse():
    recs = {MSE: _rec(MSE, {0: 0.40, 1: 0.42}, **{"diag/sep.eye": 0.9, "diag/median_err": 1.0}),
            HDM: _rec(HDM, {0: 0.30, 1: 0.31}, **{"diag/sep.eye": 0.1, "diag/median_err": 2.0})}
    curve = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "train_loss": [5, 4, 3, 2.5, 2.4],
                          "val_metric": [0.1, 0.2, 0.3, 0.35, 0.351]})
    text = build_findings(profile="demo", records=recs,
                          intervals={"table1": table_intervals(get_table(1), recs)},
                          curves={MSE: {0: curve, 1: curve}, HDM: {0: curve, 1: curve}}, seeds=[0, 1])
    line = next(l for l in text.splitlines() if l.startswith(f"- **{HDM}**"))
    assert "resolved: the interval excludes 0" in line and "ΔAP -10.5" in line and "the paper: ↑1.5" in line
    hdm_line = next(l for l in text.splitlines() if l.strip().startswith(f"- {HDM}:"))
    assert "collapsed pairs: eye (0.10)" in hdm_line and f"{HDM}-id0" in hdm_line
    assert "collapsed pairs: none" in next(l for l in text.splitlines() if l.strip().startswith(f"- {MSE}:"))
    assert f"- {MSE} vs {HDM}: not run (no consistency_val.npz for {MSE}, {HDM}; rerun the evaluation)." in text
    # the last 3 points 30, 35, 35.1 AP: slope 2.55 AP/epoch; the two seeds agree, so the interval is a point
    assert "slope +2.55 [+2.55, +2.55] AP/epoch over the last 3 validation points (t over 2 seeds): still rising" \
        in hdm_line


def test_diagnostic_figures(tmp_path):
    from pipeline.report.figures import write_diagnostic_figures

    errs = {f"diag/err.{n}": 0.5 + i / 10 for i, n in enumerate(("nose", "left_eye", "right_eye"))}
    recs = {MSE: _rec(MSE, {0: 0.4}, **errs), HDM: _rec(HDM, {0: 0.3}, **errs)}
    curve = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5], "val_metric": [0.1, 0.2, 0.25]})
    paths = write_diagnostic_figures(recs, {MSE: {0: curve}, HDM: {0: curve}}, tmp_path)
    assert sorted(p.name for p in paths) == ["joint_error_coco.png", "loss_vs_metric.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
