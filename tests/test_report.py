"""Fast tests of the paper tables: transcription, layout, Δ formatting and the written files."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.report.paper_numbers import BENCHMARK_RUNS, TABLES, get_table
from pipeline.report.figures import write_figures
from pipeline.report.tables import build_tables, format_delta, write_tables

PAPER_MD = Path("/work/shared/paper/heatmap-distribution-matching.md")

# reference rows + 2 × benchmark rows (+ the report's lines beyond the paper: the UDP reference rows
# measured, one "+ DARK" line per MSE row, Table 6's measured lines)
EXPECTED_LINES = {"table1": 7 + 2 * 10 + 4, "table2": 11 + 2 * 9 + 4, "table3": 8 + 2 * 6 + 3, "table4": 2 * 3,
                  "table5": 2 * 4, "table6": 4 * 5}  # Table 6: strides 8, 4, 2, 1

COCO_KEYS = ("AP", "AP50", "AP75", "APM", "APL", "AR")


def _coco(split: str, ap: float, rest: float = 0.5) -> dict[str, float]:
    return {f"{split}/{k}": (ap if k == "AP" else rest) for k in COCO_KEYS}


def _line(df: pd.DataFrame, run: str, source: str) -> pd.Series:
    sel = df[(df["run"] == run) & (df["source"] == source)]
    assert len(sel) == 1, (run, source, len(sel))
    return sel.iloc[0]


def _md_rows(text: str, run: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and f"`{run}`" in line:
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


# ----------------------------------------------------------------------- paper numbers
def test_paper_numbers_structure():
    assert [t.number for t in TABLES] == [1, 2, 3, 4, 5]
    assert [len(t.rows) for t in TABLES] == [17, 20, 14, 3, 4]
    t1, t3, t5 = get_table(1), get_table(3), get_table(5)
    assert t1.value(t1.row_for_run("coco_hrnet_w48_hdm"), "AP") == 78.8
    assert t3.value(t3.row_for_run("mpii_hrnet_w32_mse"), "Mean") == 90.4
    assert t5.value(t5.row_for_run("coco_hrnet_w48_hdm_it500"), "AP") == 78.3
    assert t3.metrics == ("Mean", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
    assert "coco_hrformer_base_hdm" in BENCHMARK_RUNS and "mpii_simplebaseline_mse" in BENCHMARK_RUNS
    # reference rows are not benchmark rows
    assert not t1.rows[0].is_benchmark and t1.rows[0].method == "Hourglass"


def test_printed_deltas_equal_difference_of_printed_numbers():
    n = 0
    for t in TABLES:
        for row in t.rows:
            if row.paper_delta is None:
                continue
            base = t.row_for_run(row.baseline_run)
            diff = round(t.value(row, t.main_metric) - t.value(base, t.main_metric), 1)
            assert diff == row.paper_delta, (t.number, row.run)
            n += 1
    assert n == 11  # 4 + 4 + 3 "+ Ours" rows


@pytest.mark.skipif(not PAPER_MD.is_file(), reason="paper text not available")
def test_transcription_matches_paper_text():
    """Every cell of Tables 1–5 equals the paper's text (tab-separated rows after each caption)."""
    lines = PAPER_MD.read_text().splitlines()
    for t in TABLES:
        i = next(k for k, l in enumerate(lines) if l.startswith(f"Table {t.number}:"))
        k = i + 1
        while not lines[k].strip():
            k += 1
        k += 1  # header row
        rows = []
        while k < len(lines) and "\t" in lines[k]:
            rows.append([re.sub(r"</?b>", "", c).strip() for c in lines[k].split("\t")])
            k += 1
        assert len(rows) == len(t.rows), t.number
        nm = len(t.metrics)
        for cells, row in zip(rows, t.rows):
            values = []
            for c in cells[-nm:]:
                if c == "-":
                    values.append(None)
                    continue
                m = re.fullmatch(r"([\d.]+)\s*(?:\((?:↑|†)([\d.]+)\))?", c)
                values.append(float(m.group(1)))
                if m.group(2):
                    assert row.paper_delta == float(m.group(2))
            assert tuple(values) == row.values, (t.number, row.method)
            if len(cells) > nm + 1:
                method, venue, backbone, size = cells[:4]
                assert method == row.method + row.citation
                assert venue == row.venue
                assert backbone == (row.backbone or "-")
                assert size.replace(" ", "") == (row.input_size or "-")
            else:
                assert cells[0] == row.method


# ----------------------------------------------------------------------- build_tables
def test_empty_measured_all_not_run_and_paper_numbers_verbatim():
    tables = build_tables({}, profile="demo")
    assert list(tables) == ["table1", "table2", "table3", "table4", "table5", "table6"]
    for key, df in tables.items():
        assert len(df) == EXPECTED_LINES[key]
        meas = df[df["source"] == "measured"]
        assert (meas["status"] == "not run").all()
        metrics = df.attrs["metrics"]
        assert meas[metrics].isna().all().all()
    t1, t2, t3, t4, t5 = (tables[f"table{i}"] for i in range(1, 6))
    assert _line(t1, "coco_hrnet_w48_hdm", "paper")["AP"] == 78.8
    assert _line(t1, "coco_simplebaseline_mse", "paper")["APM"] == 67.8
    assert _line(t2, "coco_hrnet_w32_hdm", "paper")["AP"] == 76.7
    assert _line(t2, "coco_hrformer_base_mse", "paper")["AR"] == 81.2
    assert _line(t3, "mpii_hrnet_w32_mse", "paper")["Mean"] == 90.4
    assert _line(t3, "mpii_simplebaseline_hdm", "paper")["Ankle"] == 83.1
    assert _line(t4, "coco_hrnet_w48_hdm_naive", "paper")["AP"] == 77.9
    assert _line(t5, "coco_hrnet_w48_hdm_it500", "paper")["AP"] == 78.3
    assert _line(t5, "coco_hrnet_w48_hdm_it1500", "paper")["APL"] == 85.4
    # reference rows: one line each, with the paper's numbers and "-" as NaN
    ref = t1[t1["source"] == "reference"]
    assert list(ref["method"])[:3] == ["Hourglass", "CPN", "CPN"]
    assert ref.iloc[0]["AP"] == 66.9 and math.isnan(ref.iloc[0]["AP50"])
    # paper Δ on paper lines
    assert _line(t1, "coco_hrnet_w48_hdm", "paper")["delta_AP"] == 1.7
    assert _line(t5, "coco_hrnet_w48_hdm_it500", "paper")["delta_AP"] == 1.2


def test_markdown_not_run_and_paper_cells(tmp_path):
    tables = build_tables({}, profile="demo")
    write_tables(tables, tmp_path, profile="demo")
    t1 = (tmp_path / "table1.md").read_text()
    paper, measured = _md_rows(t1, "coco_hrnet_w48_hdm")
    assert paper[4] == "paper" and paper[7] == "78.8 (↑1.7)"
    assert measured[4] == "measured" and measured[7:] == ["not run"] * 6
    assert "| Hourglass [20] | ECCV 2016 | 8-Stage Hourglass | 256×192 | reference |  |  | 66.9 | - |" in t1
    t3 = (tmp_path / "table3.md").read_text()
    paper, measured = _md_rows(t3, "mpii_hrnet_w32_mse")
    assert paper[7] == "90.4" and measured[7:] == ["not run"] * 8
    paper, _ = _md_rows(t3, "mpii_hrnet_w32_hdm")
    assert paper[7] == "90.9 (↑0.5)"
    t5 = (tmp_path / "table5.md").read_text()
    paper, _ = _md_rows(t5, "coco_hrnet_w48_hdm_it500")
    assert paper[0] == "500 Sinkhorn iterations" and paper[7] == "78.3 (↑1.2)"


def test_measured_delta_formatted(tmp_path):
    measured = {
        "coco_hrnet_w48_mse": _coco("coco_val", 0.698),
        "coco_hrnet_w48_hdm": _coco("coco_val", 0.712),
        "coco_hrnet_w32_mse": _coco("coco_val", 0.700),
        "coco_hrnet_w32_hdm": _coco("coco_val", 0.695),
    }
    info = {"coco_hrnet_w48_hdm": {"backbone": "resnet18", "input_size": "64x48", "mlflow_run_id": "abc123"}}
    tables = build_tables(measured, profile="demo", run_info=info)
    t1 = tables["table1"]
    hdm = _line(t1, "coco_hrnet_w48_hdm", "measured")
    assert hdm["AP"] == 71.2 and hdm["delta_AP"] == 1.4 and hdm["status"] == "ok"
    assert hdm["backbone"] == "resnet18" and hdm["input_size"] == "64×48"
    assert _line(t1, "coco_hrnet_w32_hdm", "measured")["delta_AP"] == -0.5
    write_tables(tables, tmp_path, profile="demo")
    md = (tmp_path / "table1.md").read_text()
    _, measured_line = _md_rows(md, "coco_hrnet_w48_hdm")
    assert measured_line[7] == "71.2 (↑1.4)"
    assert measured_line[2:4] == ["resnet18", "64×48"]
    _, measured_line = _md_rows(md, "coco_hrnet_w32_hdm")
    assert measured_line[7] == "69.5 (↓0.5)"
    _, base_line = _md_rows(md, "coco_hrnet_w48_mse")
    assert base_line[7] == "69.8"  # baselines carry no Δ
    assert "abc123" in md
    # Tables 4 and 5 compare against the same baseline run
    md4 = (tmp_path / "table4.md").read_text()
    _, sub = _md_rows(md4, "coco_hrnet_w48_hdm")
    assert sub[7] == "71.2 (↑1.4)"
    _, naive = _md_rows(md4, "coco_hrnet_w48_hdm_naive")
    assert naive[7:] == ["not run"] * 6
    # Table 2: these runs have no test-dev metrics
    assert _line(tables["table2"], "coco_hrnet_w48_hdm", "measured")["status"] == "not evaluated"


def test_gtbox_reference_note_on_coco_val_tables(tmp_path):
    measured = {
        "coco_hrnet_w48_mse": {**_coco("coco_val", 0.40), "coco_val_gtbox/AP": 0.4465},
        "coco_hrnet_w48_hdm": {**_coco("coco_val", 0.10), "coco_val_gtbox/AP": float("nan")},
        "coco_hrformer_base_mse": _coco("coco_val", 0.47),
    }
    tables = build_tables(measured, profile="demo")
    expected = ("Measured AP ×100 with ground-truth person boxes instead of detections (same flip test; "
                "not in the paper's table): coco_hrnet_w48_mse 44.7.")
    assert expected in tables["table1"].attrs["notes"]
    assert expected in tables["table4"].attrs["notes"]   # the ablation tables are on COCO val too
    assert not any("ground-truth person boxes" in n for n in tables["table2"].attrs["notes"])
    write_tables(tables, tmp_path, profile="demo")
    assert expected in (tmp_path / "table1.md").read_text()
    assert "ground-truth" not in (tmp_path / "table3.md").read_text()
    assert not any("ground-truth person boxes" in n for n in build_tables({}, profile="demo")["table1"].attrs["notes"])


def test_hdm_without_baseline_has_no_delta_and_missing_metric_is_na(tmp_path):
    m = _coco("coco_val", 0.5)
    m["coco_val/APM"] = -1.0  # pycocotools' "no ground truth in this range"
    m["mpii_val/Mean"] = 80.04
    tables = build_tables({"coco_simplebaseline_hdm": m, "mpii_hrnet_w48_hdm": {"mpii_val/Mean": 80.05}},
                          profile="demo")
    line = _line(tables["table1"], "coco_simplebaseline_hdm", "measured")
    assert line["AP"] == 50.0 and math.isnan(line["delta_AP"]) and line["status"] == "partial"
    mp = _line(tables["table3"], "mpii_hrnet_w48_hdm", "measured")
    assert mp["Mean"] == 80.1 and mp["status"] == "partial"  # half-up rounding, percent as given
    write_tables(tables, tmp_path, profile="demo")
    _, meas = _md_rows((tmp_path / "table1.md").read_text(), "coco_simplebaseline_hdm")
    assert meas[7] == "50.0" and meas[10] == "n/a"


def test_bad_measured_values_raise_pipeline_error():
    with pytest.raises(PipelineError, match="fraction"):
        build_tables({"coco_hrnet_w48_mse": {"coco_val/AP": 71.2}}, profile="demo")
    with pytest.raises(PipelineError, match="not a number"):
        build_tables({"coco_hrnet_w48_mse": {"coco_val/AP": "high"}}, profile="demo")
    with pytest.raises(PipelineError, match="percentage"):
        build_tables({"mpii_hrnet_w48_mse": {"mpii_val/Mean": 190.0}}, profile="demo")
    with pytest.raises(PipelineError):
        build_tables({"coco_hrnet_w48_mse": [0.7]}, profile="demo")
    with pytest.raises(PipelineError, match="profile"):
        build_tables({}, profile="")


def test_format_delta():
    assert format_delta(1.4000000000000057) == "(↑1.4)"
    assert format_delta(-0.25) == "(↓0.3)"
    assert format_delta(0.0) == "(±0.0)"


# ----------------------------------------------------------------------- files
def test_files_written_csv_latex_markdown(tmp_path):
    measured = {"coco_hrnet_w48_mse": _coco("coco_val", 0.698), "coco_hrnet_w48_hdm": _coco("coco_val", 0.712)}
    tables = build_tables(measured, profile="demo")
    paths = write_tables(tables, tmp_path, profile="demo")
    names = sorted(p.name for p in paths)
    expected = sorted([f"table{i}.{ext}" for i in range(1, 7) for ext in ("md", "tex", "csv")] + ["README.md"])
    assert names == expected
    assert all(p.is_file() for p in paths)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    for i in range(1, 7):
        key = f"table{i}"
        csv = pd.read_csv(tmp_path / f"{key}.csv")
        assert len(csv) == EXPECTED_LINES[key]
        assert set(csv["source"]) <= {"reference", "paper", "measured"}
        metrics = tables[key].attrs["metrics"]
        assert all(pd.api.types.is_float_dtype(csv[m]) for m in metrics)
        assert f"delta_{metrics[0]}" in csv.columns and "status" in csv.columns
        raw = (tmp_path / f"{key}.csv").read_text()
        assert "↑" not in raw and "↓" not in raw  # "not run" only in the status column
        tex = (tmp_path / f"{key}.tex").read_text()
        assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
        assert "↑" not in tex and "×" not in tex and "Δ" not in tex and "—" not in tex
        assert "profile: demo" in tex
        md = (tmp_path / f"{key}.md").read_text()
        assert md.splitlines()[0].startswith(f"## Table {i} — ") and "profile: demo" in md.splitlines()[0]
        assert "not comparable to the paper's" in md
    t1 = pd.read_csv(tmp_path / "table1.csv")
    row = t1[(t1["run"] == "coco_hrnet_w48_hdm") & (t1["source"] == "measured")].iloc[0]
    assert row["AP"] == 71.2 and row["delta_AP"] == 1.4 and row["status"] == "ok"
    nr = t1[(t1["run"] == "coco_hrformer_base_hdm") & (t1["source"] == "measured")].iloc[0]
    assert nr["status"] == "not run" and math.isnan(nr["AP"])
    tex1 = (tmp_path / "table1.tex").read_text()
    assert r"71.2 ($\uparrow$1.4)" in tex1 and r"384$\times$288" in tex1 and r"coco\_hrnet\_w48\_hdm" in tex1
    readme = (tmp_path / "README.md").read_text()
    for i in range(1, 7):
        assert f"(table{i}.md)" in readme and f"Table {i} — " in readme


def test_paper_profile_title_and_profile_mismatch(tmp_path):
    tables = build_tables({}, profile="paper")
    assert tables["table1"].attrs["title"] == "Table 1 — COCO val2017 (profile: paper)"
    write_tables(tables, tmp_path, profile="paper")
    assert "not comparable" not in (tmp_path / "table3.md").read_text().splitlines()[0]
    with pytest.raises(PipelineError, match="profile"):
        write_tables(tables, tmp_path / "x", profile="demo")


def test_write_figures(tmp_path):
    def curve(offset):
        return pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.6],
                             "val_metric": [0.1 + offset, 0.2 + offset, 0.3 + offset]})

    paths = write_figures({"coco_hrnet_w48_mse": {0: curve(0.0), 1: curve(0.01)}, "coco_hrnet_w48_hdm": {0: curve(0.05)},
                           "mpii_hrnet_w32_mse": {0: curve(0.0)}}, tmp_path)
    assert sorted(p.name for p in paths) == ["curves_coco.png", "curves_mpii.png"]
    assert all(p.stat().st_size > 0 and p.parent == tmp_path / "figures" for p in paths)
    with pytest.raises(PipelineError, match="val_metric"):
        write_figures({"coco_x_mse": {0: pd.DataFrame({"epoch": [1]})}}, tmp_path)
