"""The paper's Tables 1–5, rebuilt with this benchmark's measured numbers beside the paper's (and the
lines beyond the paper, Table 6 included: :mod:`pipeline.report.beyond`).

:func:`build_tables` turns the final metrics of each run into one :class:`pandas.DataFrame` per
table (one row per printed line, numbers in the paper's units, Δ in separate columns); the
frames are exactly what the CSV files hold. :func:`write_tables` renders each frame as
Markdown, LaTeX and CSV, and :func:`write_figures` plots validation curves of MSE/HDM pairs.

Layout: every row of the paper's table, in the paper's order. A reference row (another
method) is one line whose source is ``reference``. A benchmark row is two lines: ``paper``
(the paper's numbers) and ``measured`` (this project's numbers, or "not run"). Rows compared
with a baseline (the "+ Ours" rows, the ablation variants of Tables 4 and 5) show
Δ = this − baseline after the main metric, on both lines: the paper line shows the paper's
Δ, the measured line the measured one (when both runs exist).

Numbers are printed with one decimal, rounded half-up; a Δ is the difference of the two
printed numbers (the paper's convention: 76.7 − 75.0 → ↑1.7), so every table is
self-consistent. The CSV holds the same one-decimal numbers.
"""
from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from numbers import Real
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..errors import PipelineError
from ..io import atomic_path, write_text
from ..tracking.metric_names import metric_key
from .beyond import REPORT_TABLES, split_variant
from .paper_numbers import PaperRow, PaperTable

__all__ = ["build_tables", "write_tables", "table_title", "format_delta"]

NOT_RUN = "not run"
_BOOT_TEXT = ("1,000 resamples of the images with replacement (on MPII every person of a drawn image comes "
              "along), the same resamples for both runs of a pair, the metric recomputed per resample; 2.5 and "
              "97.5 percentiles")
NOT_EVALUATED = "not evaluated"
SUBMITTED = "submitted, no scores yet"  # test-dev zip written, the server's scores not loaded yet
NA = "n/a"  # a run exists but this metric is missing / undefined

# Source / status values (CSV columns "source" and "status").
SRC_REFERENCE, SRC_PAPER, SRC_MEASURED = "reference", "paper", "measured"
ST_REFERENCE, ST_PAPER, ST_OK, ST_PARTIAL = "reference", "paper", "ok", "partial"

_INFO_COLUMNS = ["table", "paper_row", "method", "citation", "venue", "backbone", "input_size",
                 "source", "run", "status"]
_TRAILING_COLUMNS = ["n", "interval", "ci_low", "ci_high", "delta_ci_low", "delta_ci_high", "delta_resolved",
                     "delta_vs", "mlflow_run_id", "profile"]
_NO_INTERVAL = {"n": None, "interval": "", "ci_low": None, "ci_high": None, "delta_ci_low": None,
                "delta_ci_high": None, "delta_resolved": None}

_MD_HEADERS = {"AP50": "AP50", "AP75": "AP75", "APM": "APM", "APL": "APL"}
_TEX_HEADERS = {"AP50": r"AP$^{50}$", "AP75": r"AP$^{75}$", "APM": r"AP$^{M}$", "APL": r"AP$^{L}$"}

_PROFILE_NOTES = {
    "demo": "measured numbers come from demo-size models on synthetic data and are not comparable to the paper's",
}


# ----------------------------------------------------------------------------- helpers
def _round1(x: float) -> float:
    """Round half-up to one decimal on the number's shortest decimal representation."""
    return float(Decimal(repr(float(x))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _scaled(x: float, scale: float) -> float:
    """``x * scale`` rounded to one decimal, without binary noise (0.7125 × 100 → 71.3)."""
    return float((Decimal(repr(float(x))) * Decimal(repr(float(scale))))
                 .quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def format_delta(delta: float, method: str | None = None, low: float | None = None, high: float | None = None,
                 resolved: bool | None = None) -> str:
    """"(↑1.4)", "(↓0.3)" or "(±0.0)" — the paper's notation for a gain over the baseline; with an
    interval, "(↑1.4 ±0.6)*" (t over seeds) or "(↓0.3 [−0.9, 0.2])" (bootstrap). "*" marks a resolved Δ,
    which needs ≥ 2 training seeds: a bootstrap interval (one seed) holds evaluation noise only and never
    carries it, whatever ``resolved`` says."""
    d = _round1(delta)
    text = f"↑{_fmt(d)}" if d > 0 else f"↓{_fmt(-d)}" if d < 0 else "±0.0"
    if low is not None and high is not None and low == low and high == high:
        text += f" ±{_fmt(_round1((high - low) / 2))}" if method == "t" else \
            f" [{_fmt(_round1(low))}, {_fmt(_round1(high))}]"
    return f"({text})" + ("*" if resolved and method == "t" else "")


def _check_profile(profile: Any) -> str:
    if not isinstance(profile, str) or not profile.strip():
        raise PipelineError("profile", f"must be a non-empty string, got {profile!r}")
    return profile.strip()


def table_title(table: PaperTable, profile: str) -> str:
    """"Table 1 — COCO val2017 (profile: demo; measured numbers ... not comparable ...)"."""
    profile = _check_profile(profile)
    if profile == "paper":
        note = ""
    else:
        note = "; " + _PROFILE_NOTES.get(
            profile,
            f"measured numbers come from the reduced '{profile}' profile and are not comparable to the paper's",
        )
    return f"Table {table.number} — {table.short_title} (profile: {profile}{note})"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or value is None:
        raise PipelineError(where, f"not a number: {value!r}")
    if isinstance(value, Real):
        return float(value)
    try:
        return float(value)  # numpy scalars, numeric strings
    except (TypeError, ValueError):
        raise PipelineError(where, f"not a number: {value!r}") from None


def _measured_value(table: PaperTable, run: str, metrics: Mapping[str, Any], metric: str) -> float | None:
    """The measured value in the paper's units (one decimal), or None when missing/undefined."""
    key = metric_key(table.split, metric)
    if key not in metrics:
        return None
    where = f"measured[{run!r}][{key!r}]"
    x = _number(metrics[key], where)
    if math.isnan(x):
        return None
    if math.isinf(x):
        raise PipelineError(where, f"not finite: {x!r}")
    if table.measured_scale != 1.0:
        # COCO AP/AR: fractions in [0, 1]; pycocotools reports -1 for "no ground truth here".
        if x < 0:
            return None
        if x > 1.0 + 1e-9:
            raise PipelineError(where, f"expected a fraction in [0, 1] (it is printed ×100 here), got {x!r}")
    else:
        if x < -1e-9 or x > 100.0 + 1e-9:
            raise PipelineError(where, f"expected a percentage in [0, 100], got {x!r}")
    return _scaled(x, table.measured_scale)


def _delta(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return _round1(_round1(a) - _round1(b))


def _norm_input_size(value: Any, where: str) -> str:
    """"64×48" / "64x48" → "64×48"; a [width, height] pair (HRNet's order) → "height×width"."""
    if value is None:
        return ""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", value)
        return f"{m.group(1)}×{m.group(2)}" if m else value.strip()
    if isinstance(value, (list, tuple)) and len(value) == 2:
        w, h = (int(_number(v, where)) for v in value)
        return f"{h}×{w}"
    raise PipelineError(where, f"expected a string like '64×48' or a [width, height] pair, got {value!r}")


def _check_inputs(measured: Any, run_info: Any) -> tuple[dict, dict]:
    if measured is None:
        measured = {}
    if not isinstance(measured, Mapping):
        raise PipelineError("measured", f"expected a mapping run name → metrics, got {type(measured).__name__}")
    for run, metrics in measured.items():
        if not isinstance(metrics, Mapping):
            raise PipelineError(f"measured[{run!r}]", f"expected a mapping metric → value, got {type(metrics).__name__}")
    if run_info is None:
        run_info = {}
    if not isinstance(run_info, Mapping):
        raise PipelineError("run_info", f"expected a mapping run name → info, got {type(run_info).__name__}")
    for run, info in run_info.items():
        if not isinstance(info, Mapping):
            raise PipelineError(f"run_info[{run!r}]", f"expected a mapping, got {type(info).__name__}")
    return dict(measured), dict(run_info)


# ------------------------------------------------------------------------------ build
def _gtbox_note(table: PaperTable, measured: dict) -> list[str]:
    """The detector-free reference of the COCO val rows: AP with ground-truth boxes (flip test).
    Not a column of the paper's tables, but it separates the pose model from the detector."""
    cells = []
    for run in table.runs():
        value = measured.get(run, {}).get("coco_val_gtbox/AP")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            ap = _scaled(_number(value, f"measured[{run!r}]['coco_val_gtbox/AP']"), table.measured_scale)
            cells.append(f"{run} {_fmt(ap)}")
    if not cells:
        return []
    return ["Measured AP ×100 with ground-truth person boxes instead of detections (same flip test; not "
            "in the paper's table): " + "; ".join(cells) + "."]


def _interval_cells(table: PaperTable, iv: Any) -> dict[str, Any]:
    """The interval columns of a measured line in the paper's units: n, method ("t" over seeds,
    "bootstrap" over evaluation images, "none"), the main metric's 95 % interval and Δ's."""
    if iv is None:
        return dict(_NO_INTERVAL)
    scale = table.measured_scale
    value, delta = iv.value, iv.delta

    def sc(x: float) -> float | None:
        return None if x is None or x != x else float(x) * scale

    out = {"n": value.n if value.method == "t" or value.method == "none" else 1, "interval": value.method,
           "ci_low": sc(value.low), "ci_high": sc(value.high), "delta_ci_low": None, "delta_ci_high": None,
           "delta_resolved": None}
    if delta is not None:
        # resolved needs training noise in the interval (≥ 2 seeds); a one-seed bootstrap cannot say
        out.update({"delta_ci_low": sc(delta.low), "delta_ci_high": sc(delta.high),
                    "delta_resolved": bool(delta.excludes_zero) if delta.method == "t" else None})
    return out


def _paper_line(table: PaperTable, row: PaperRow, rec: dict[str, Any], paper_by_run: Mapping[str, PaperRow],
                profile: str) -> dict[str, Any]:
    """The paper's numbers of a benchmark row, with the paper's Δ against its baseline's paper row."""
    metrics = table.metrics
    rec.update({m: table.value(row, m) for m in metrics})
    baseline = paper_by_run.get(row.baseline_run) if row.baseline_run else None
    for m in metrics:
        rec[f"delta_{m}"] = _delta(table.value(row, m), table.value(baseline, m)) if baseline else None
    if baseline is not None and row.paper_delta is not None:
        rec[f"delta_{table.main_metric}"] = row.paper_delta  # as printed
    rec.update({**_NO_INTERVAL, "delta_vs": row.baseline_run or "", "mlflow_run_id": "", "profile": profile})
    return rec


def _base_record(table: PaperTable, row: PaperRow, i: int, source: str, status: str) -> dict[str, Any]:
    """The columns every line of a table fills alike (the paper row's identity, its source and status)."""
    return {"table": table.number, "paper_row": i, "method": row.method, "citation": row.citation,
            "venue": row.venue, "backbone": row.backbone if row.backbone is not None else "-",
            "input_size": row.input_size if row.input_size is not None else "-",
            "source": source, "run": row.run or "", "status": status}


def _reference_record(table: PaperTable, row: PaperRow, i: int, metrics: list[str], profile: str) -> dict[str, Any]:
    """The line of a row the benchmark does not run: the paper's values, no deltas, no interval."""
    rec = _base_record(table, row, i, SRC_REFERENCE, ST_REFERENCE)
    rec.update({m: table.value(row, m) for m in metrics})
    rec.update({f"delta_{m}": None for m in metrics})
    rec.update({**_NO_INTERVAL, "delta_vs": "", "mlflow_run_id": "", "profile": profile})
    return rec


def _measured_status(table: PaperTable, values: dict[str, float | None] | None, info: dict) -> str:
    """Whether a run's measured line is missing, awaiting the test-dev server, partial or complete."""
    if values is None:
        return NOT_RUN
    if all(v is None for v in values.values()):
        return SUBMITTED if table.split == "coco_testdev" and info.get("testdev_submitted") else NOT_EVALUATED
    if any(v is None for v in values.values()):
        return ST_PARTIAL
    return ST_OK


def _measured_record(table: PaperTable, row: PaperRow, i: int, meas: dict[str, dict[str, float | None]],
                     run_info: dict, profile: str, intervals: Mapping[str, Any]) -> dict[str, Any]:
    """The measured line of a benchmark row: the run's values, their deltas to its baseline run and the
    bootstrap interval, with what the run itself reports (backbone, input size, MLflow id)."""
    metrics = list(table.metrics)
    info = run_info.get(row.run, {})
    values = meas.get(row.run)
    rec = _base_record(table, row, i, SRC_MEASURED, _measured_status(table, values, info))
    rec["backbone"] = str(info.get("backbone") or "")
    rec["input_size"] = _norm_input_size(info.get("input_size"), f"run_info[{row.run!r}]['input_size']")
    rec.update({m: (values or {}).get(m) for m in metrics})
    base_vals = meas.get(row.baseline_run) if row.baseline_run else None
    for m in metrics:
        rec[f"delta_{m}"] = _delta(values.get(m), base_vals.get(m)) if (values and base_vals) else None
    rec.update(_interval_cells(table, intervals.get(row.run) if values else None))
    rec.update({"delta_vs": row.baseline_run or "", "mlflow_run_id": str(info.get("mlflow_run_id") or ""),
                "profile": profile})
    return rec


def _as_frame(table: PaperTable, records: list[dict[str, Any]], notes: list[str], profile: str) -> pd.DataFrame:
    """The table's lines as a frame with numeric metric columns and the attributes the writers read."""
    metrics = list(table.metrics)
    columns = _INFO_COLUMNS + metrics + [f"delta_{m}" for m in metrics] + _TRAILING_COLUMNS
    df = pd.DataFrame.from_records(records, columns=columns)
    for c in metrics + [f"delta_{m}" for m in metrics] + ["ci_low", "ci_high", "delta_ci_low", "delta_ci_high"]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["n"] = pd.array(df["n"], dtype="Int64")
    df.attrs.update({
        "table": table.number,
        "key": table.key,
        "profile": profile,
        "title": table_title(table, profile),
        "caption": table.caption,
        "metrics": metrics,
        "main_metric": table.main_metric,
        "notes": notes,
        "unit": "AP/AR ×100" if table.measured_scale != 1.0 else "PCKh@0.5 (%)",
    })
    return df


def _build_one(table: PaperTable, measured: dict, run_info: dict, profile: str,
               intervals: Mapping[str, Any]) -> pd.DataFrame:
    metrics = list(table.metrics)
    # measured values per run (only the runs of this table that have at least the run entry)
    meas: dict[str, dict[str, float | None]] = {}
    for run in table.runs():
        if run in measured:
            meas[run] = {m: _measured_value(table, run, measured[run], m) for m in metrics}
    paper_by_run = {r.run: r for r in table.rows if r.run and r.in_paper}

    records: list[dict[str, Any]] = []
    for i, row in enumerate(table.rows, start=1):
        if not row.is_benchmark:
            records.append(_reference_record(table, row, i, metrics, profile))
            continue
        if row.in_paper:  # paper line (rows this benchmark adds have none)
            records.append(_paper_line(table, row, _base_record(table, row, i, SRC_PAPER, ST_PAPER), paper_by_run,
                                       profile))
        records.append(_measured_record(table, row, i, meas, run_info, profile, intervals))

    notes = list(table.notes)
    if table.split == "coco_val":
        notes.extend(_gtbox_note(table, measured))
    return _as_frame(table, records, notes, profile)


def build_tables(measured: dict[str, dict[str, float]], *, profile: str,
                 run_info: dict[str, dict] | None = None,
                 intervals: Mapping[str, Mapping[str, Any]] | None = None,
                 notes: Mapping[str, list[str]] | None = None) -> dict[str, pd.DataFrame]:
    """One DataFrame per report table, keyed "table1" … "table6" (:data:`pipeline.report.beyond.REPORT_TABLES`:
    the paper's Tables 1–5 with the lines beyond the paper, and Table 6).

    ``measured`` maps run name → final metrics ("coco_val/AP" … as fractions in [0, 1];
    "mpii_val/Mean" … in percent). Runs missing from it appear as "not run"; a run present
    without any metric of a table's split appears as "not evaluated" (in Table 2 "submitted, no
    scores yet" when ``run_info[run]["testdev_submitted"]``: the test-dev zip awaits the server's
    scores); a single missing or
    undefined metric (NaN, pycocotools' -1) is "n/a". ``run_info`` (optional) maps run name →
    {"backbone", "input_size", "mlflow_run_id"}: the backbone and input size actually used.

    ``measured`` holds the mean over seeds; ``intervals`` (optional, from
    :func:`pipeline.report.aggregate.all_intervals`) maps table key → run → the intervals of its main
    metric and of its Δ (objects with ``value`` and ``delta`` :class:`~pipeline.metrics.uncertainty.Interval`).

    Each frame has one row per printed line (reference / paper / measured) with columns
    ``table, paper_row, method, citation, venue, backbone, input_size, source, run, status``,
    the metrics in the paper's units (one decimal; NaN = "-" or missing), ``delta_<metric>``
    (Δ against ``delta_vs``), then ``n`` (seeds), ``interval`` (t / bootstrap / none), the 95 %
    interval of the main metric ``ci_low, ci_high`` and of its Δ ``delta_ci_low, delta_ci_high``,
    ``delta_resolved`` (the Δ interval excludes 0), ``delta_vs, mlflow_run_id, profile``. Title,
    caption and notes are in ``df.attrs``.
    """
    profile = _check_profile(profile)
    measured, run_info = _check_inputs(measured, run_info)
    intervals, notes = intervals or {}, notes or {}
    tables = {t.key: _build_one(t, measured, run_info, profile, intervals.get(t.key, {})) for t in REPORT_TABLES}
    for key, extra in notes.items():  # measured facts the report adds below a table (e.g. Table 5's spread)
        tables[key].attrs["notes"] = list(tables[key].attrs["notes"]) + list(extra)
    return tables


# ----------------------------------------------------------------------------- render
def _cell_values(df: pd.DataFrame, rec: Mapping[str, Any]) -> list[str]:
    """Metric cells of one line as display strings (unicode arrows; renderers escape them)."""
    metrics = df.attrs["metrics"]
    main = df.attrs["main_metric"]
    status = rec["status"]
    if rec["source"] == SRC_MEASURED and status in (NOT_RUN, NOT_EVALUATED, SUBMITTED):
        return [status] * len(metrics)
    missing = "-" if rec["source"] in (SRC_PAPER, SRC_REFERENCE) else NA
    out = []
    for m in metrics:
        v = rec[m]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(missing)
            continue
        s = _fmt(v)
        if m == main:
            s += _interval_text(rec.get("interval"), v, rec.get("ci_low"), rec.get("ci_high"))
            d = rec[f"delta_{m}"]
            if d is not None and not (isinstance(d, float) and math.isnan(d)):
                s += " " + format_delta(d, rec.get("interval"), rec.get("delta_ci_low"), rec.get("delta_ci_high"),
                                        rec.get("delta_resolved"))
        out.append(s)
    return out


def _defined(*xs: Any) -> bool:
    return all(x is not None and not (isinstance(x, float) and math.isnan(x)) for x in xs)


def _interval_text(method: Any, value: float, low: Any, high: Any) -> str:
    """" ±0.9" for a t-interval over seeds (symmetric), " [45.9, 47.6]" for a bootstrap interval."""
    if not _defined(low, high):
        return ""
    if method == "t":
        return f" ±{_fmt(_round1((high - low) / 2))}"
    return f" [{_fmt(_round1(low))}, {_fmt(_round1(high))}]"


def _n_cell(rec: Mapping[str, Any]) -> str:
    n = rec.get("n")
    if rec["source"] != SRC_MEASURED or n is None or (isinstance(n, float) and math.isnan(n)) or n is pd.NA:
        return ""
    return f"{int(n)} (boot)" if rec.get("interval") == "bootstrap" else str(int(n))


def _info_cells(rec: Mapping[str, Any]) -> list[str]:
    method = f"{rec['method']} {rec['citation']}" if rec["citation"] else rec["method"]
    return [method, rec["venue"], rec["backbone"], rec["input_size"], rec["source"], rec["run"]]


def _footnotes(df: pd.DataFrame) -> list[str]:
    num = df.attrs["table"]
    main = df.attrs["main_metric"]
    in_paper = (df["source"] == SRC_PAPER).any() or (df["source"] == SRC_REFERENCE).any()
    notes = [
        f"Paper's caption (Table {num}): {df.attrs['caption']}" if in_paper else f"Caption: {df.attrs['caption']}",
        "Source \"paper\": the paper's numbers as printed; \"measured\": this benchmark's run of that row "
        "(backbone and input size actually used; blank when not recorded); \"reference\": another method, "
        "paper numbers only, not part of this benchmark. \"-\": not reported by the paper; "
        f"\"{NOT_RUN}\": the run has no results; \"{NA}\": metric missing or undefined.",
        f"\"(↑x)\" / \"(↓x)\" after {main}: Δ = this row − its baseline (difference of the printed numbers); "
        "on paper lines the paper's Δ, on measured lines the measured Δ when both runs exist.",
    ]
    if (df["source"] == SRC_MEASURED).any() and df["interval"].isin(["t", "bootstrap"]).any():
        notes.append(
            f"Measured lines: the mean over n training seeds. After {main}, \"±h\" is the half-width of the 95 % "
            "Student-t interval over seeds; after Δ, of the 95 % t-interval of the per-seed differences (the "
            "two runs paired by seed: same initial weights, data order and augmentation). \"[a, b]\" with "
            "\"n = 1 (boot)\": one seed only, so the interval is a paired bootstrap over the evaluation images "
            f"({_BOOT_TEXT}): evaluation noise only, not training noise, so such a Δ is never marked resolved. "
            "\"*\": resolved, the Δ's t-interval over ≥ 2 seeds excludes 0 (findings.md adds Holm's correction "
            "for the number of comparisons).")
    if num == 2 and (df["status"] == SUBMITTED).any():
        notes.append(f"\"{SUBMITTED}\": test-dev has no public ground truth; the run's submission zip "
                     "(results/PROFILE/eval/RUN/submission/) awaits the COCO server's scores, loaded with "
                     "\"python -m pipeline testdev-scores\" (docs/paper-profile.md, 'COCO test-dev').")
    if num in (4, 5):
        notes.append("The paper prints no Δ in this table; the Δ on paper lines is computed from its numbers.")
    if df.attrs["unit"].startswith("AP"):
        notes.append("Measured COCO numbers: OKS AP/AR ×100"
                     + (" on val2017 with detected person boxes (the paper's protocol)." if num != 2 else " on test-dev2017."))
    else:
        notes.append("Measured MPII numbers: PCKh@0.5 in percent on the validation split.")
    notes.extend(df.attrs.get("notes", []))
    ids = [(r, i) for r, i in zip(df["run"], df["mlflow_run_id"])
           if isinstance(i, str) and i and split_variant(r)[1] is None]  # a "+ DARK" line: its run's ids
    ids = list(dict.fromkeys(ids))
    if ids:
        notes.append("MLflow run ids: " + "; ".join(f"{r} = {i}" for r, i in ids) + ".")
    return notes


def _md_escape(s: Any) -> str:
    return str(s).replace("|", "\\|")


def render_markdown(df: pd.DataFrame) -> str:
    metrics = df.attrs["metrics"]
    headers = ["Method", "Venue", "Backbone", "Input size", "Source", "Run", "n"] + \
        [_MD_HEADERS.get(m, m) for m in metrics]
    lines = [f"## {df.attrs['title']}", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(["---"] * 6 + ["---:"] * (1 + len(metrics))) + "|")
    for rec in df.to_dict("records"):
        info = _info_cells(rec)
        if info[5]:
            info[5] = f"`{info[5]}`"
        cells = [_md_escape(c) for c in info + [_n_cell(rec)] + _cell_values(df, rec)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- {_md_escape(n)}" for n in _footnotes(df))
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"×": r"$\times$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "Δ": r"$\Delta$", "±": r"$\pm$",
                "−": r"$-$", "—": "---", "–": "--", "→": r"$\rightarrow$", "…": r"\ldots{}",
                "“": "``", "”": "''", "’": "'", "‘": "`", "≥": r"$\geq$", "≤": r"$\leq$", "·": r"$\cdot$"}


def latex_escape(s: Any) -> str:
    """Escape LaTeX specials and turn the unicode symbols used here into LaTeX macros."""
    out = []
    for ch in re.sub(r'"([^"]*)"', "\u201c\\1\u201d", str(s)):  # straight quotes → curly pairs
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in _TEX_UNICODE:
            out.append(_TEX_UNICODE[ch])
        else:
            out.append(ch)
    return "".join(out)


def render_latex(df: pd.DataFrame) -> str:
    metrics = df.attrs["metrics"]
    headers = ["Method", "Venue", "Backbone", "Input size", "Source", "Run", "n"]
    tex_headers = [latex_escape(h) for h in headers] + [_TEX_HEADERS.get(m, latex_escape(m)) for m in metrics]
    lines = [
        r"% Generated by pipeline.report.tables; needs \usepackage{booktabs}.",
        r"\begin{table}[htbp]",
        r"\centering",
        r"\scriptsize",
        r"\caption{" + latex_escape(df.attrs["title"]) + "}",
        r"\label{tab:hdm-" + df.attrs["key"] + "}",
        r"\begin{tabular}{" + "l" * 6 + "r" * (1 + len(metrics)) + "}",
        r"\toprule",
        " & ".join(tex_headers) + r" \\",
        r"\midrule",
    ]
    prev_source = None
    for rec in df.to_dict("records"):
        if prev_source == SRC_REFERENCE and rec["source"] != SRC_REFERENCE:
            lines.append(r"\midrule")
        prev_source = rec["source"]
        info = [latex_escape(c) for c in _info_cells(rec)]
        if info[5]:
            info[5] = r"\texttt{" + info[5] + "}"
        info.append(latex_escape(_n_cell(rec)))
        vals = []
        for v in _cell_values(df, rec):
            t = latex_escape(v)
            vals.append(r"\textit{" + t + "}" if v in (NOT_RUN, NOT_EVALUATED, SUBMITTED, NA) else t)
        lines.append(" & ".join(info + vals) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"\begin{minipage}{\linewidth}\scriptsize"]
    lines += [latex_escape(n) + r"\par" for n in _footnotes(df)]
    lines += [r"\end{minipage}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", float_format="%.1f")


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path, *, profile: str) -> list[Path]:
    """Write ``table{N}.md``, ``.tex``, ``.csv`` for each frame and an index ``README.md``.

    Every file is written atomically. Returns the paths written (README.md last).
    """
    profile = _check_profile(profile)
    if not isinstance(tables, Mapping):
        raise PipelineError("tables", f"expected the mapping returned by build_tables, got {type(tables).__name__}")
    out_dir = Path(out_dir)
    written: list[Path] = []
    index: list[tuple[str, str]] = []
    order = {t.key: t.number for t in REPORT_TABLES}
    for key in sorted(tables, key=lambda k: (order.get(k, 99), str(k))):
        df = tables[key]
        if not isinstance(df, pd.DataFrame) or "title" not in df.attrs or "metrics" not in df.attrs:
            raise PipelineError(f"tables[{key!r}]", "not a table built by build_tables (missing attrs)")
        if df.attrs.get("profile") != profile:
            raise PipelineError(f"tables[{key!r}]",
                                f"built for profile {df.attrs.get('profile')!r}, written for profile {profile!r}")
        stem = df.attrs["key"]
        md, tex, csv = out_dir / f"{stem}.md", out_dir / f"{stem}.tex", out_dir / f"{stem}.csv"
        write_text(md, render_markdown(df))
        write_text(tex, render_latex(df))
        _write_csv(df, csv)
        written += [md, tex, csv]
        index.append((stem, df.attrs["title"]))

    readme = [f"# HDM benchmark — paper tables (profile: {profile})", ""]
    if profile != "paper":
        readme += [f"Measured numbers come from the '{profile}' profile and are not comparable to the paper's.", ""]
    for stem, title in index:
        readme.append(f"- [{title}]({stem}.md) — also [{stem}.tex]({stem}.tex), [{stem}.csv]({stem}.csv)")
    readme += ["", "Each paper row reproduced by this benchmark has a \"paper\" line and a \"measured\" line; "
               "other methods are \"reference\" lines with the paper's numbers only."]
    readme_path = out_dir / "README.md"
    write_text(readme_path, "\n".join(readme) + "\n")
    written.append(readme_path)
    return written
