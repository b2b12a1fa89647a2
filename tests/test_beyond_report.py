"""The report's lines beyond the paper: "+ DARK" lines, measured UDP rows, Table 6 and their findings."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.metrics.bootstrap_files import bootstrap_file
from pipeline.metrics.mpii_bootstrap import MpiiCorrect, save_correct
from pipeline.report.aggregate import RunRecord, all_intervals, contrast_interval, image_bootstrap, pair_interval
from pipeline.report.beyond import (REPORT_TABLES, TABLE6, report_table, split_variant, table_numbers,
                                    variant_records, variant_run)
from pipeline.report.findings import build_findings
from pipeline.report.paper_numbers import TABLES
from pipeline.report.tables import build_tables, write_tables

COCO = ("AP", "AP50", "AP75", "APM", "APL", "AR")


def _coco(prefix: str, ap: float) -> dict[str, float]:
    return {f"{prefix}/{k}": (ap if k == "AP" else 0.5) for k in COCO}


def _line(df, run, source):
    sel = df[(df["run"] == run) & (df["source"] == source)]
    assert len(sel) == 1, (run, source, len(sel))
    return sel.iloc[0]


def test_variant_names_round_trip():
    assert variant_run("coco_hrnet_w32_mse", "dark") == "coco_hrnet_w32_mse+dark"
    assert split_variant("coco_hrnet_w32_mse+dark") == ("coco_hrnet_w32_mse", "dark")
    assert split_variant("coco_hrnet_w32_mse") == ("coco_hrnet_w32_mse", None)


def test_variant_records_move_the_variant_metrics_to_plain_names():
    rec = RunRecord("coco_hrnet_w32_mse", metrics={0: {**_coco("coco_val", 0.40), **_coco("coco_val_dark", 0.43),
                                                       "coco_testdev_dark/AP": 0.41, "diag/median_err": 1.0},
                                                   1: _coco("coco_val", 0.39)},
                    run_ids={0: "a", 1: "b"})
    hdm = RunRecord("coco_hrnet_w32_hdm", metrics={0: _coco("coco_val", 0.2)}, run_ids={0: "c"})
    out = variant_records({rec.run: rec, hdm.run: hdm})
    assert list(out) == ["coco_hrnet_w32_mse+dark"]  # HDM logged no DARK variant
    dark = out["coco_hrnet_w32_mse+dark"]
    assert dark.seeds == [0] and dark.run_ids == {0: "a"}  # seed 1 has no DARK metrics
    assert dark.metrics[0]["coco_val/AP"] == 0.43 and dark.metrics[0]["coco_testdev/AP"] == 0.41
    assert not any(k.startswith(("diag.", "coco_val_dark")) for k in dark.metrics[0])


def test_report_tables_keep_the_paper_and_add_lines():
    t1 = report_table(1)
    paper_t1 = TABLES[0]
    # every paper row is still there, in order, with the paper's values
    assert [r.values for r in t1.rows if r.in_paper] == [r.values for r in paper_t1.rows]
    dark_rows = [r for r in t1.rows if not r.in_paper]
    assert [r.run for r in dark_rows] == [f"coco_{a}_mse+dark" for a in
                                          ("simplebaseline", "hrnet_w32", "hrnet_w48", "hrformer_base")]
    assert all(r.baseline_run == split_variant(r.run)[0] for r in dark_rows)
    udp = [r for r in t1.rows if r.method == "UDP"]
    assert [(r.run, r.baseline_run) for r in udp] == [("coco_hrnet_w32_udp", "coco_hrnet_w32_mse+dark"),
                                                      ("coco_hrnet_w48_udp", "coco_hrnet_w48_mse+dark")]
    assert [r.run for r in report_table(2).rows if r.method == "UDP"] == ["coco_hrnet_w48_udp"]
    assert not [r for r in report_table(3).rows if r.method == "UDP" and r.run]  # MPII: no UDP run
    assert [t.number for t in REPORT_TABLES] == [1, 2, 3, 4, 5, 6]
    assert all(not r.in_paper for r in TABLE6.rows) and len(TABLE6.rows) == 4 * 5  # strides 8, 4, 2, 1
    assert table_numbers("coco_hrnet_w32_mse") == "1,2,6"
    assert table_numbers("coco_hrnet_w48_udp") == "1,2"
    assert table_numbers("coco_hrnet_w32_s8_hdm_epsin") == "6"


def test_dark_and_udp_lines_in_the_built_tables(tmp_path):
    measured = {"coco_hrnet_w32_mse": {**_coco("coco_val", 0.400)},
                "coco_hrnet_w32_mse+dark": _coco("coco_val", 0.431),
                "coco_hrnet_w32_udp": _coco("coco_val", 0.425)}
    tables = build_tables(measured, profile="demo")
    t1 = tables["table1"]
    dark = _line(t1, "coco_hrnet_w32_mse+dark", "measured")
    assert dark["AP"] == 43.1 and dark["delta_AP"] == 3.1 and dark["delta_vs"] == "coco_hrnet_w32_mse"
    assert t1[(t1["run"] == "coco_hrnet_w32_mse+dark") & (t1["source"] == "paper")].empty  # no paper line
    udp_paper = _line(t1, "coco_hrnet_w32_udp", "paper")
    assert udp_paper["AP"] == 77.8 and math.isnan(udp_paper["delta_AP"])  # the paper has no MSE + DARK row
    udp = _line(t1, "coco_hrnet_w32_udp", "measured")
    assert udp["AP"] == 42.5 and udp["delta_AP"] == -0.6
    assert _line(t1, "coco_hrnet_w48_udp", "measured")["status"] == "not run"
    t6 = tables["table6"]
    assert _line(t6, "coco_hrnet_w32_s8_hdm", "measured")["status"] == "not run"
    assert _line(t6, "coco_hrnet_w32_mse+dark", "measured")["delta_AP"] == 3.1
    write_tables(tables, tmp_path, profile="demo")
    md6 = (tmp_path / "table6.md").read_text()
    assert md6.startswith("## Table 6 — beyond the paper") and "Paper's caption" not in md6
    assert "| stride 8: HDM, ε = 1 input px |" in md6
    md1 = (tmp_path / "table1.md").read_text()
    assert "| + DARK decoding [39] |" in md1 and "43.1 (↑3.1)" in md1


def _mpii_file(path: Path, correct: np.ndarray) -> None:
    save_correct(MpiiCorrect(correct=correct, visible=np.ones_like(correct), in_mean=np.ones(correct.shape[1], bool),
                             image_ids=np.arange(correct.shape[0]) // 2), path)


class _Paths:
    def __init__(self, root: Path):
        self.root = root

    def eval_dir(self, run: str, seed: int) -> Path:
        return self.root / run / f"seed{seed}"


def test_bootstrap_of_a_variant_reads_the_variant_file_of_its_run(tmp_path):
    rng = np.random.default_rng(0)
    plain = rng.random((60, 16)) < 0.5
    better = plain.copy()
    better[:30, :4] = True  # DARK fixes some joints
    d = tmp_path / "mpii_hrnet_w32_mse" / "seed0"
    d.mkdir(parents=True)
    _mpii_file(bootstrap_file(d, "mpii_val"), plain)
    _mpii_file(bootstrap_file(d, "mpii_val_dark"), better)
    boot = image_bootstrap(_Paths(tmp_path), resamples=200)
    res = boot("mpii_val", "mpii_hrnet_w32_mse+dark", "mpii_hrnet_w32_mse", 0)
    gain = (better.sum() - plain.sum()) / plain.size * 100
    assert res["delta"].mean == pytest.approx(gain)
    assert res["delta"].low > 0  # every resample keeps the gain positive (DARK only adds correct joints)
    assert res["value"].mean == pytest.approx(better.mean() * 100)
    # intervals of the Table 3 "+ DARK" line come from it when there is one seed
    recs = {"mpii_hrnet_w32_mse": RunRecord("mpii_hrnet_w32_mse", {0: {"mpii_val/Mean": plain.mean() * 100}}, {0: "a"}),
            "mpii_hrnet_w32_mse+dark": RunRecord("mpii_hrnet_w32_mse+dark", {0: {"mpii_val/Mean": better.mean() * 100}},
                                                 {0: "a"})}
    iv = all_intervals(recs, bootstrap=boot)["table3"]["mpii_hrnet_w32_mse+dark"]
    assert iv.delta.method == "bootstrap" and iv.delta.low == res["delta"].low


def _rec(run: str, values: dict[int, float]) -> RunRecord:
    return RunRecord(run, {s: {"coco_val/AP": v} for s, v in values.items()}, {s: f"{run}-{s}" for s in values})


def test_contrast_interval_is_the_t_interval_of_the_per_seed_interaction():
    recs = {r: _rec(r, v) for r, v in {
        "a8": {0: 0.30, 1: 0.32, 2: 0.31}, "b8": {0: 0.20, 1: 0.21, 2: 0.23},
        "a4": {0: 0.40, 1: 0.41, 2: 0.45}, "b4": {0: 0.35, 1: 0.37, 2: 0.38}}.items()}
    iv = contrast_interval("coco_val/AP", ("a8", "b8"), ("a4", "b4"), recs)
    per_seed = [(0.30 - 0.20) - (0.40 - 0.35), (0.32 - 0.21) - (0.41 - 0.37), (0.31 - 0.23) - (0.45 - 0.38)]
    m = sum(per_seed) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in per_seed) / 2)
    assert iv.n == 3 and iv.mean == pytest.approx(m)
    assert iv.high - m == pytest.approx(4.302652729749464 * sd / math.sqrt(3))  # t(0.975, 2)
    assert contrast_interval("coco_val/AP", ("a8", "missing"), ("a4", "b4"), recs) is None
    one = {k: _rec(k, {0: r.metrics[0]["coco_val/AP"]}) for k, r in recs.items()}
    assert contrast_interval("coco_val/AP", ("a8", "b8"), ("a4", "b4"), one).method == "none"


def test_pair_interval_pairs_by_seed_and_needs_a_value():
    recs = {"x": _rec("x", {0: 0.5, 1: 0.6, 2: 0.55}), "y": _rec("y", {0: 0.4, 1: 0.45, 2: 0.5})}
    iv = pair_interval("coco_val", "coco_val/AP", "x", "y", recs)
    assert iv.delta.mean == pytest.approx((0.1 + 0.15 + 0.05) / 3) and iv.delta.n == 3
    assert pair_interval("coco_val", "coco_val/AP", "z", "y", recs) is None


def test_findings_answer_the_beyond_questions():
    seeds = {0: 0.0, 1: 0.01, 2: -0.01}
    base = {"coco_hrnet_w32_mse": 0.40, "coco_hrnet_w32_mse+dark": 0.42, "coco_hrnet_w32_hdm": 0.30,
            "coco_hrnet_w32_hdm_epsin": 0.33, "coco_hrnet_w32_s8_mse": 0.30, "coco_hrnet_w32_s8_mse+dark": 0.36,
            "coco_hrnet_w32_s8_hdm": 0.25, "coco_hrnet_w32_s8_hdm_epsin": 0.26, "coco_hrnet_w32_udp": 0.425}
    recs = {r: _rec(r, {s: v + d + 0.003 * s * (i % 3) for s, d in seeds.items()})
            for i, (r, v) in enumerate(base.items())}
    text = build_findings(profile="demo", records=recs, intervals=all_intervals(recs), curves={}, seeds=[0, 1, 2])
    assert "## Beyond the paper" in text
    assert "- coco_hrnet_w32_hdm − coco_hrnet_w32_mse+dark (HDM against the better decoder): ΔAP -11.7 [-12.4, -11.0]" in text
    assert "- stride 4: coco_hrnet_w32_hdm_epsin − coco_hrnet_w32_hdm: ΔAP +2.4 [+0.9, +3.9]" in text
    assert "(t over 3 seeds)" in text
    assert "- Interaction (HDM − MSE at stride 8) − (HDM − MSE at stride 4): +4.1 [+1.9, +6.3] (t over 3 seeds), resolved: the interval excludes 0; " \
        "not resolved after Holm over 10 comparisons." in text
    assert "Comparisons in this file: 10 with ≥ 2 training seeds (t over seeds)" in text
    assert "coco_hrnet_w48_udp − coco_hrnet_w48_mse+dark (HRNet-W48: UDP's data processing): not run" in text
    assert "- coco_hrnet_w32_udp − coco_hrnet_w32_mse+dark (HRNet-W32: UDP's data processing): ΔAP +0." in text


def test_table6_figure_is_drawn_from_its_intervals(tmp_path):
    from pipeline.report.figures import write_table6_figure

    assert write_table6_figure({}, tmp_path) == []  # nothing measured: no figure
    recs = {r: _rec(r, {0: 0.4, 1: 0.42, 2: 0.41}) for r in ("coco_hrnet_w32_mse", "coco_hrnet_w32_s8_mse")}
    paths = write_table6_figure(all_intervals(recs)["table6"], tmp_path)
    assert [p.name for p in paths] == ["table6.png"] and paths[0].stat().st_size > 1000


def test_mpii_files_without_image_ids_take_them_from_the_annotation(tmp_path):
    correct = np.repeat(np.repeat(np.random.default_rng(3).random(30) < 0.5, 2)[:, None], 16, axis=1)
    d = tmp_path / "mpii_hrnet_w32_mse" / "seed0"
    d.mkdir(parents=True)
    save_correct(MpiiCorrect(correct=correct, visible=np.ones_like(correct), in_mean=np.ones(16, bool)),
                 bootstrap_file(d, "mpii_val"))

    class WithData(_Paths):
        def dataset(self, name: str) -> Path:
            return self.root / "data" / name

    boot = image_bootstrap(WithData(tmp_path), resamples=50)
    assert boot("mpii_val", "mpii_hrnet_w32_mse", None, 0) is None  # no annotation: no interval, no people-resampling
    annot = tmp_path / "data" / "mpii" / "annot"
    annot.mkdir(parents=True)
    import json
    (annot / "valid.json").write_text(json.dumps([{"image": f"{100 + i // 2:09d}.jpg"} for i in range(60)]))
    res = boot("mpii_val", "mpii_hrnet_w32_mse", None, 0)
    assert res["value"].mean == pytest.approx(correct.mean() * 100) and res["value"].method == "bootstrap"
