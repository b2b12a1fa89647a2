"""The generated verdict: paired Δs per objection, their wording, the headline range and the mechanism."""
from __future__ import annotations

import pytest

from pipeline.report.aggregate import RunRecord
from pipeline.report.verdict import describe, objections, verdict_section
from pipeline.metrics.uncertainty import t_interval


def _rec(name: str, aps: dict[int, float], **extra: dict[int, float]) -> RunRecord:
    rec = RunRecord(name)
    for seed, ap in aps.items():
        rec.metrics[seed] = {"coco_val/AP": ap, **{k: v[seed] for k, v in extra.items()}}
        rec.run_ids[seed] = f"{name}-{seed}"
    return rec


def test_pair_delta_is_paired_by_seed_and_worded_by_its_interval():
    mse = _rec("coco_hrnet_w32_mse", {0: 0.30, 1: 0.32, 2: 0.31})
    hdm = _rec("coco_hrnet_w32_hdm", {0: 0.10, 1: 0.13, 2: 0.11})
    text = "\n".join(verdict_section({r.run: r for r in (mse, hdm)}))
    # paired differences -0.20, -0.19, -0.20: mean -19.7 AP, t over 3 seeds, resolved below 0
    diffs = [-0.20, -0.19, -0.20]
    iv = t_interval(diffs)
    want = f"{iv.mean * 100:+.1f} [{iv.low * 100:+.1f}, {iv.high * 100:+.1f}] (t over 3 seeds; lower)"
    assert f"coco hrnet_w32 (`coco_hrnet_w32_hdm` − `coco_hrnet_w32_mse`): {want}" in text
    assert "of the 1 with ≥ 2 seeds, 0 resolved above 0 and 1 below 0 at 95 % (before Holm" in text
    assert "(`coco_hrnet_w32_hdmsoft` − `coco_hrnet_w32_hdm`): not run" in text


def test_one_seed_without_bootstrap_has_no_interval_and_no_verdict_word():
    mse = _rec("coco_hrnet_w32_mse", {0: 0.30})
    hdm = _rec("coco_hrnet_w32_hdm", {0: 0.10})
    text = "\n".join(verdict_section({r.run: r for r in (mse, hdm)}))
    assert "-20.0 (n=1, no interval)" in text
    assert "resolved above 0" in text and "of the 0 with ≥ 2 seeds" in text


def test_bootstrap_interval_is_labelled_evaluation_noise():
    from pipeline.metrics.uncertainty import Interval

    iv = Interval(mean=-0.05, low=-0.08, high=-0.02, n=1000, method="bootstrap")
    assert describe(iv, 100.0) == "-5.0 [-8.0, -2.0] (one seed, image bootstrap: evaluation noise only)"


def test_unresolved_interval_says_so():
    iv = t_interval([0.01, -0.02, 0.015])
    assert describe(iv, 100.0).endswith("not resolved)")


def test_mechanism_correlates_the_diagnostics_with_ap():
    recs = {}
    for i, v in enumerate(("mse", "hdm", "hdmexact", "hdmsoft", "integral")):
        share = {s: 0.1 * i + 0.01 * s for s in range(2)}
        recs[f"coco_hrnet_w32_{v}"] = _rec(f"coco_hrnet_w32_{v}", {s: 0.5 - 0.1 * i - 0.01 * s for s in range(2)},
                                           **{"val/gt_nonpos_share": share})
    text = "\n".join(verdict_section(recs))
    # AP falls exactly as the share rises: ρ = -1 over the 10 run-seeds
    assert "(`val_gt_nonpos_share`): Spearman ρ with val AP over 10 COCO run-seeds = -1.00" in text
    assert "(`val_pos_share`): not measured on enough runs (0)" in text


def test_every_pair_is_one_factor_apart_by_name():
    seen = set()
    for _, _, pairs in objections():
        for p in pairs:
            assert p.run != p.baseline
            assert p.run.startswith(p.dataset + "_") and p.baseline.startswith(p.dataset + "_")
            seen.add((p.run, p.baseline))
    assert len(seen) >= 60


def test_tuning_table_picks_the_best_setting_on_tune_and_says_what_is_missing():
    recs = {}
    for tag, ap in (("1e_3", 0.20), ("3e_3", 0.25), ("1e_2", 0.10)):
        name = f"tune_coco_hrnet_w32_hdm_lr_{tag}"
        rec = RunRecord(name)
        rec.metrics[0] = {"coco_tune/AP": ap}
        recs[name] = rec
    text = "\n".join(verdict_section(recs))
    assert "- lr, hdm: 0.001: 20.0, 0.003: 25.0, 0.01: 10.0 → 0.003 wins on tune." in text
    assert "- lr, mse: not run." in text
    assert "- batch size, hdm: 8: 25.0 → 8 wins on tune (1 setting(s) not run)." in text


def test_tuning_table_says_where_the_profile_does_not_use_the_winner():
    recs = {}
    for name, ap in (("tune_coco_hrnet_w32_mse_lr_3e_3", 0.286), ("tune_coco_hrnet_w32_mse_bs16", 0.295),
                     ("tune_coco_hrnet_w32_mse_lr_1e_2", 0.206)):
        recs[name] = RunRecord(name)
        recs[name].metrics[0] = {"coco_tune/AP": ap}
    text = "\n".join(verdict_section(recs))
    assert ("- batch size, mse: 8: 28.6, 16: 29.5 → 16 wins on tune; the profile's runs use 8, "
            "0.9 AP behind on tune.") in text
    assert "- lr, mse: 0.003: 28.6, 0.01: 20.6 → 0.003 wins on tune (1 setting(s) not run)." in text


def test_tuned_pairs_follow_the_tune_winners():
    from pipeline.report.verdict import tuned_pairs

    def tune(name, ap):
        rec = RunRecord(name)
        rec.metrics[0] = {"coco_tune/AP": ap}
        return name, rec

    base = "tune_coco_hrnet_w32"
    recs = dict([tune(f"{base}_mse_lr_3e_3", 0.24), tune(f"{base}_mse_lr_1e_2", 0.19),
                 tune(f"{base}_mse_sigma_1p0", 0.29), tune(f"{base}_hdm_lr_3e_3", 0.02),
                 tune(f"{base}_hdm_lr_1e_3", 0.01), tune(f"{base}_integral_lr_1e_2", 0.34),
                 tune(f"{base}_integral_lr_3e_3", 0.29)])
    pairs = {p.label: (p.run, p.baseline) for p in tuned_pairs(recs)}
    # MSE: lr 0.003 (default) and σ 1.0 (not the profile's 1.5) won -> the σ run; HDM: the default lr ->
    # the plain run
    assert pairs["tuned: hdm − MSE"] == ("coco_hrnet_w32_hdm", "coco_hrnet_w32_mse_sigma_1p0")
    assert pairs["tuned: integral − MSE"] == ("coco_hrnet_w32_integral_lr_1e_2", "coco_hrnet_w32_mse_sigma_1p0")
    assert any("tuning not run" in label for label in pairs)  # hdmsoft has no tune runs here


def test_three_way_names_the_winner_and_the_collapse_per_normalisation():
    from pipeline.report.verdict import three_way

    recs = {}
    for name, ap, collapsed in (("coco_hrnet_w32_mse+dark", 0.30, None), ("coco_hrnet_w32_hdmsoft", 0.35, 0.0),
                                ("coco_hrnet_w32_integral", 0.32, None), ("coco_hrnet_w32_hdm", 0.05, 6.0)):
        extra = {} if collapsed is None else {"val/collapsed_pairs": {0: collapsed}}
        recs[name] = _rec(name, {0: ap}, **extra)
    lines = three_way(recs)
    assert ("- coco hrnet_w32: softmax-HDM 35.0 AP, then integral 32.0, MSE + DARK 30.0; collapsed left/right "
            "pairs at the last epoch: relu-HDM 6.0, softmax-HDM 0.0.") in lines
    assert any(line.startswith("- coco hrnet_w48: not run (") for line in lines)


def test_mechanism_names_the_strongest_diagnostic():
    recs = {}
    for i, v in enumerate(("mse", "hdm", "hdmexact", "hdmsoft", "integral")):
        recs[f"coco_hrnet_w32_{v}"] = _rec(f"coco_hrnet_w32_{v}", {0: 0.5 - 0.1 * i},
                                           **{"val/gt_nonpos_share": {0: 0.1 * i}, "val/pos_share": {0: (i * 7) % 5 / 10}})
    text = "\n".join(verdict_section(recs))
    assert "ranks the runs most like their AP: `val_gt_nonpos_share` (|ρ| = 1.00 over 5 run-seeds" in text


def test_refinement_lines_carry_ap75_and_joint_error_and_exact_lines_the_dead_rate():
    ft = {"mse": (0.30, 0.20, 1.2), "hdm": (0.31, 0.24, 1.0)}
    recs = {}
    for v, (ap, ap75, err) in ft.items():
        name = f"coco_hrnet_w32_ft_{v}"
        rec = RunRecord(name)
        for seed, d in enumerate((0.0, 0.01, -0.01)):
            rec.metrics[seed] = {"coco_val/AP": ap + d, "coco_val/AP75": ap75 + d, "diag/median_err": err + d}
        recs[name] = rec
    text = "\n".join(verdict_section(recs))
    line = next(x for x in text.splitlines() if x.startswith("- coco hrnet_w32: fine-tune hdm − MSE"))
    assert "; AP75 24.0 vs 20.0, Δ +4.0 [+4.0, +4.0] (t over 3 seeds; higher)" in line
    assert "; median joint error px 1.0 vs 1.2, Δ -0.2 [-0.2, -0.2] (t over 3 seeds; lower)" in line
    exact = next(x for x in text.splitlines() if x.startswith("- coco hrnet_w32: exact − project"))
    assert exact.endswith(": not run")


def test_mechanism_figure_draws_what_was_logged_and_nothing_otherwise(tmp_path):
    import pandas as pd

    from pipeline.report.figures import write_mechanism_figure

    assert write_mechanism_figure({}, tmp_path) == []
    rows = pd.DataFrame({"epoch": [1, 2, 1, 2], "value": [0.5, 0.4, 0.6, 0.3], "seed": [0, 0, 1, 1]})
    paths = write_mechanism_figure({"coco_hrnet_w32_hdm": {"val/gt_nonpos_share": rows}}, tmp_path)
    assert paths == [tmp_path / "figures" / "mechanism.png"] and paths[0].stat().st_size > 0
