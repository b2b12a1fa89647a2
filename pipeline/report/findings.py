"""``findings.md``: the benchmark's measured answer to the paper's question, generated from the run records.

Per architecture and dataset it states Δ(HDM − MSE) with its 95 % interval and whether the interval
excludes 0 ("resolved"), the seed noise floor, the diagnostics that explain the numbers (median joint
error, collapsed left/right pairs, dead heatmaps, whether the validation curves plateaued) and the
Sec. 4 measurement (does a lower training loss come with a better metric, per loss?). Every number
names the MLflow runs it comes from. Nothing here is written by hand.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..metrics.diagnostics import COLLAPSE_RATIO, loss_metric_consistency
from ..metrics.uncertainty import Interval, t_interval
from .aggregate import BootFn, RowIntervals, RunRecord, contrast_interval, mean_metrics, pair_interval, seed_noise
from .beyond import DARK, UDP_RUNS, variant_run
from .beyond import w32_run as _w32
from .paper_numbers import TABLES, PaperTable

Curves = Mapping[str, Mapping[int, pd.DataFrame]]


def _f(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if x is None or x != x else f"{x * scale:.{digits}f}"


def _iv(iv: Interval | None, scale: float) -> str:
    """"↑1.2 [0.4, 2.0] (t, n=3)": a Δ or value with its interval, in the table's units."""
    if iv is None:
        return "n/a"
    lo, hi = iv.low * scale, iv.high * scale
    core = f"{iv.mean * scale:+.1f}"
    if iv.method == "none" or lo != lo:
        return f"{core} (n={iv.n}, no interval)"
    kind = f"t over {iv.n} seeds" if iv.method == "t" else "image bootstrap, one seed: evaluation noise only"
    return f"{core} [{lo:+.1f}, {hi:+.1f}] ({kind})"


def plateaued(values: list[float], noise: float) -> bool | None:
    """True when the last two validation points differ by less than ``noise`` (None: undecidable).

    ``noise``: the seed noise of the final point, :func:`dataset_noise` (the issue's criterion: a run has
    plateaued when its last two validation points differ by less than the seed noise)."""
    vals = [v for v in values if v is not None and v == v]
    if len(vals) < 2 or noise != noise:
        return None
    return abs(vals[-1] - vals[-2]) < noise


def curve_noise(curves: Curves, runs: list[str]) -> float:
    """The seed noise of the final validation point: pooled SD over seeds across ``runs`` (NaN without
    repeated seeds)."""
    ss, dof = 0.0, 0
    for run in runs:
        finals = [df["val_metric"].dropna().iloc[-1] for df in curves.get(run, {}).values()
                  if df["val_metric"].notna().any()]
        if len(finals) >= 2:
            ss += float(np.sum((np.asarray(finals) - np.mean(finals)) ** 2))
            dof += len(finals) - 1
    return math.sqrt(ss / dof) if dof else math.nan


def dataset_noise(curves: Curves) -> dict[str, float]:
    """The seed noise of the final validation point per dataset ("coco", "mpii": the run name's prefix),
    pooled over every run of that dataset: one yardstick for every plateau mark of a dataset."""
    datasets = {run.split("_")[0] for run in curves}
    return {ds: curve_noise(curves, [r for r in curves if r.split("_")[0] == ds]) for ds in datasets}


def _plateau_text(curves: Curves, run: str, noise: Mapping[str, float]) -> str:
    yardstick = noise.get(run.split("_")[0], math.nan)
    marks = [plateaued(list(df["val_metric"]), yardstick) for _, df in sorted(curves.get(run, {}).items())]
    if not marks or all(m is None for m in marks):
        return "plateau undecidable (one seed: no seed noise)"
    return f"plateaued in {sum(bool(m) for m in marks)}/{len(marks)} seeds"


def _diag_text(rec: RunRecord) -> str:
    m = mean_metrics(rec)
    seps = {k[len("diag.sep."):]: v for k, v in m.items() if k.startswith("diag.sep.")}
    collapsed = sorted(name for name, r in seps.items() if r < COLLAPSE_RATIO)
    parts = [f"median joint error {_f(m.get('diag.median_err'), digits=2)} heatmap px",
             "collapsed pairs: " + (", ".join(f"{n} ({seps[n]:.2f})" for n in collapsed) if collapsed else "none"),
             f"dead heatmaps {_f(m.get('diag.dead_fraction'), 100)} %"]
    return "; ".join(parts)


def _pair_section(table: PaperTable, records: Mapping[str, RunRecord], intervals: Mapping[str, RowIntervals],
                  curves: Curves, noise: Mapping[str, float]) -> list[str]:
    scale = table.measured_scale
    lines = []
    key = f"{table.split}.{table.main_metric}"
    for row in table.rows:
        if not (row.is_benchmark and row.baseline_run):
            continue
        name = f"{row.backbone or ''} {row.method}".strip()
        if row.run not in records or row.baseline_run not in records:
            lines.append(f"- **{row.run}** vs {row.baseline_run}: not run.")
            continue
        iv = intervals.get(row.run)
        base_iv = intervals.get(row.baseline_run)
        delta = iv.delta if iv else None
        verdict = ("resolved: the interval excludes 0" if delta is not None and delta.excludes_zero
                   else "not resolved: the interval includes 0" if delta is not None and delta.method != "none"
                   else "no interval")
        paper = f"; the paper: ↑{row.paper_delta}" if row.paper_delta is not None else ""
        lines.append(f"- **{row.run}** − {row.baseline_run} ({name}): Δ{table.main_metric} "
                     f"{_iv(delta, scale)}, {verdict}{paper}.")
        for run, ri in ((row.baseline_run, base_iv), (row.run, iv)):
            rec = records[run]
            lines.append(f"  - {run}: {table.main_metric} {_f(ri.value.mean if ri else None, scale)} "
                         f"(seeds {rec.seeds}); {_diag_text(rec)}; {_plateau_text(curves, run, noise)}; "
                         f"MLflow {', '.join(rec.run_ids[s] for s in rec.seeds)}.")
    return lines or ["- no compared rows."]


def _noise_line(records: Mapping[str, RunRecord], key: str, scale: float) -> str:
    sd, dof = seed_noise(records, key)
    if dof == 0:
        return (f"- Seed noise of {key}: not measured (one seed per run); intervals below are image-bootstrap "
                "intervals, which leave training noise out. Run `snakemake --cores all study` for seeds.")
    return f"- Seed noise of {key}: pooled SD over seeds {sd * scale:.2f} ({dof} degrees of freedom)."


def _sec4_section(records: Mapping[str, RunRecord], curves: Curves) -> list[str]:
    """Spearman ρ between epoch-to-epoch loss decrease and metric increase, per loss over all runs."""
    out = ["## Sec. 4: is a lower training loss a better metric?", "",
           "Spearman ρ between the decrease of the training loss and the increase of the validation metric "
           "from one epoch to the next, per run and seed; the mean over runs with its 95 % t-interval. The "
           "paper argues that MSE's loss and AP are inconsistent (ρ low for MSE), HDM's consistent.", ""]
    for loss in ("mse", "hdm"):
        rhos = []
        for run, per_seed in sorted(curves.items()):
            if not _is_loss(run, loss):
                continue
            for seed, df in sorted(per_seed.items()):
                rho, n = loss_metric_consistency(list(df["train_loss"]), list(df["val_metric"]))
                if rho == rho:
                    rhos.append(rho)
        if len(rhos) >= 2:
            iv = t_interval(rhos)
            out.append(f"- {loss.upper()}: ρ = {iv.mean:.2f} [{iv.low:.2f}, {iv.high:.2f}] over {iv.n} runs×seeds.")
        else:
            out.append(f"- {loss.upper()}: not enough runs with ≥ 4 epochs ({len(rhos)}).")
    return out


def _is_loss(run: str, loss: str) -> bool:
    if loss == "mse":
        return run.endswith("_mse")
    return "_hdm" in run and "_mse_hdm" not in run  # MSE + alpha × HDM is neither loss


def table5_note(records: Mapping[str, RunRecord], intervals: Mapping[str, RowIntervals]) -> str:
    """Table 5's rows differ only in the Sinkhorn iteration count, far past convergence: their spread set
    against the seed noise of the same runs."""
    table = next(t for t in TABLES if t.number == 5)
    runs = [r.run for r in table.rows if r.run and "hdm" in r.run]
    means = {r: intervals[r].value.mean for r in runs if r in intervals}
    if len(means) < 2:
        return "Table 5 (Sinkhorn iterations): not run."
    spread = (max(means.values()) - min(means.values())) * table.measured_scale
    sd, dof = seed_noise({r: records[r] for r in runs if r in records}, f"{table.split}.AP")
    noise = (f"the pooled seed SD of these runs is {sd * table.measured_scale:.2f} AP ({dof} dof)" if dof
             else "no seed noise measured (one seed per run; `snakemake --cores all study` measures it)")
    return ("Table 5 (500/1000/1500 Sinkhorn iterations): in heatmap units the loss has converged after about "
            "20 iterations, so these rows differ only within float rounding of the loss (the last bits of the "
            f"potentials); their measured AP spread is {spread:.2f} AP, and {noise}.")


def _verdict(delta: Interval | None) -> str:
    if delta is None or delta.method == "none" or not delta.defined:
        return "no interval"
    return "resolved" if delta.excludes_zero else "not resolved (includes 0)"


def _delta_line(label: str, split: str, metric: str, scale: float, run: str, baseline: str,
                records: Mapping[str, RunRecord], bootstrap: BootFn | None) -> str:
    """"- label: ΔAP +1.2 [+0.4, +2.0] (t over 3 seeds), resolved." or "... not run"."""
    if run not in records or baseline not in records:
        missing = ", ".join(r for r in (run, baseline) if r not in records)
        return f"- {label}: not run ({missing})."
    iv = pair_interval(split, f"{split}.{metric}", run, baseline, records, bootstrap)
    delta = iv.delta if iv else None
    return f"- {label}: Δ{metric} {_iv(delta, scale)}, {_verdict(delta)}."


def _coco_line(label: str, run: str, baseline: str, records: Mapping[str, RunRecord],
               bootstrap: BootFn | None) -> str:
    """:func:`_delta_line` of COCO val AP (Table 1's split and units)."""
    return _delta_line(label, "coco_val", "AP", 100.0, run, baseline, records, bootstrap)


_PAIRS = (("coco_val", "AP", 100.0, "coco", ("simplebaseline", "hrnet_w32", "hrnet_w48", "hrformer_base")),
          ("mpii_val", "Mean", 1.0, "mpii", ("simplebaseline", "hrnet_w32", "hrnet_w48")))


def _decoder_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None) -> list[str]:
    """Does HDM beat a better decoder on the same model? DARK's gain on the MSE heatmaps, then HDM
    against MSE + DARK, per architecture and dataset."""
    out = ["### Does HDM beat a better decoder on the same model? (Tables 1 and 3, \"+ DARK\" lines)", ""]
    for split, metric, scale, ds, archs in _PAIRS:
        for arch in archs:
            mse, hdm = f"{ds}_{arch}_mse", f"{ds}_{arch}_hdm"
            dark = variant_run(mse, DARK)
            out.append(_delta_line(f"{dark} − {mse} (DARK's gain)", split, metric, scale, dark, mse, records,
                                   bootstrap))
            out.append(_delta_line(f"{hdm} − {dark} (HDM against the better decoder)", split, metric, scale, hdm,
                                   dark, records, bootstrap))
    return out + [""]


def _udp_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None) -> list[str]:
    out = ["### UDP's coordinate convention (Table 1, UDP lines)", "",
           "UDP maps box edges onto the first and last pixel centres, this project onto pixel edges "
           "(docs/conventions.md, \"UDP\"); both are unbiased when used consistently. The UDP runs decode "
           "with DARK, so against MSE + DARK of the same architecture only UDP's data processing differs: "
           "the convention and the Gaussian centre (exact sub-pixel; the MSE runs round it to the nearest "
           "heatmap pixel, as HRNet does).", ""]
    for backbone, run in UDP_RUNS.items():
        mse = run.replace("_udp", "_mse")
        dark = variant_run(mse, DARK)
        out.append(_coco_line(f"{run} − {dark} ({backbone}: UDP's data processing)", run, dark, records, bootstrap))
        out.append(_coco_line(f"{run} − {mse} ({backbone}: data processing and decoder)", run, mse, records,
                              bootstrap))
    return out + [""]


def _epsilon_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None) -> list[str]:
    out = ["### HDM's ε units (Table 6)", "",
           "ε = 1 heatmap px (the paper's λ = 1 on heatmap-pixel costs) sharpens the loss's optimum towards the "
           "nearest pixel centre; ε = 1 input px (ε / stride heatmap px) leaves the sub-pixel demanders as the "
           "optimum (`python -m pipeline --profile paper bench hdm-optimum`, reports/benchmarks/hdm_optimum.json). "
           "Trained:", ""]
    for stride in (4, 8):
        run, base = _w32(stride, "hdm_epsin"), _w32(stride, "hdm")
        out.append(_coco_line(f"stride {stride}: {run} − {base}", run, base, records, bootstrap))
    return out + [""]


def _stride_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None) -> list[str]:
    out = ["### Heatmap resolution: does HDM's advantage grow at stride 8? (Table 6)", "",
           "The paper's argument (quantisation error of low-resolution heatmaps) predicts that HDM − MSE grows "
           "when the heatmap is coarser.", ""]
    for stride in (4, 8):
        for base, label in ((_w32(stride, "mse"), "MSE"), (variant_run(_w32(stride, "mse"), DARK), "MSE + DARK")):
            out.append(_coco_line(f"stride {stride}: HDM − {label}", _w32(stride, "hdm"), base, records, bootstrap))
    inter = contrast_interval("coco_val.AP", (_w32(8, "hdm"), _w32(8, "mse")), (_w32(4, "hdm"), _w32(4, "mse")),
                              records)
    if inter is None:
        out.append("- Interaction (HDM − MSE at stride 8) − (HDM − MSE at stride 4): not run.")
    elif inter.method == "none":
        out.append(f"- Interaction (HDM − MSE at stride 8) − (HDM − MSE at stride 4): {inter.mean * 100:+.1f} "
                   "(one seed: no interval; the study target's seeds give one).")
    else:
        out.append(f"- Interaction (HDM − MSE at stride 8) − (HDM − MSE at stride 4): {_iv(inter, 100.0)}, "
                   f"{_verdict(inter)}.")
    return out + [""]


def _beyond_sections(records: Mapping[str, RunRecord], bootstrap: BootFn | None) -> list[str]:
    return (["## Beyond the paper", ""] + _decoder_section(records, bootstrap)
            + _udp_section(records, bootstrap) + _epsilon_section(records, bootstrap)
            + _stride_section(records, bootstrap))


def build_findings(*, profile: str, records: Mapping[str, RunRecord],
                   intervals: Mapping[str, Mapping[str, RowIntervals]], curves: Curves,
                   seeds: list[int], bootstrap: BootFn | None = None) -> str:
    """The text of ``findings.md``."""
    lines = [f"# Findings — profile {profile}", "",
             f"Generated by `python -m pipeline report` from the MLflow records of seeds {seeds}; "
             "Δ = HDM − baseline, in the tables' units (AP ×100, PCKh %), 95 % intervals.", ""]
    noise = dataset_noise(curves)
    for number in (1, 3, 2):
        table = next(t for t in TABLES if t.number == number)
        key = f"{table.split}.{table.main_metric}"
        runs = {r: records[r] for r in table.runs() if r in records}
        lines += [f"## Table {number}: {table.short_title}", "", _noise_line(runs, key, table.measured_scale)]
        lines += _pair_section(table, records, intervals.get(table.key, {}), curves, noise) + [""]
    lines += ["## Ablations (Tables 4 and 5)", ""]
    lines += _pair_section(next(t for t in TABLES if t.number == 4), records, intervals.get("table4", {}),
                           curves, noise)
    lines += ["- " + table5_note(records, intervals.get("table5", {})), ""]
    lines += _sec4_section(records, curves) + [""]
    lines += _beyond_sections(records, bootstrap)
    return "\n".join(lines) + "\n"
