"""``findings.md``: the benchmark's measured answer to the paper's question, generated from the run records.

Per architecture and dataset it states Δ(HDM − MSE) with its 95 % interval, the seed noise floor, the
diagnostics that explain the numbers (median joint error, collapsed left/right pairs, dead heatmaps, the
trend of the last validation points) and the Sec. 4 measurement (does a run's own loss rank the images
the way the metric does?). Every number names the MLflow runs it comes from. Nothing here is written by
hand: where a sentence draws a conclusion, the sign and the interval choose its words.

"Resolved" needs at least two training seeds: only then does the interval (Student t over the per-seed
paired differences) contain training noise. A one-seed line's interval is an image bootstrap, evaluation
noise only, and says so instead. The comparisons with ≥ 2 seeds of one file form a family: Holm's
step-down at α = 0.05 over their paired-t p-values marks those that stay resolved (†).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from ..io import read_json
from ..metrics.diagnostics import COLLAPSE_RATIO
from ..metrics.uncertainty import Interval, holm, t_interval_pvalue
from ..tracking.metric_names import legacy_key, metric_key
from . import consistency as cons
from .aggregate import BootFn, RowIntervals, RunRecord, contrast_interval, mean_metrics, pair_interval, seed_noise
from .beyond import DARK, T6_STRIDES, UDP_RUNS, variant_run
from .beyond import w32_run as _w32
from .paper_numbers import TABLES, PaperTable
from .verdict import verdict_section
from .trend import TREND_POINTS, curve_trend

Curves = Mapping[str, Mapping[int, pd.DataFrame]]
RunDirFn = Callable[[str, int], Path]

HOLM_ALPHA = 0.05
HOLM_MARK = "†"
SINKHORN_FILE = "sinkhorn_convergence.json"
HDM_OPTIMUM = Path("reports") / "benchmarks" / "hdm_optimum.json"

_SEP_PREFIX = metric_key("diag", "sep.")  # the left/right separation ratio of each joint pair


class Family:
    """The Δ comparisons of one findings file, for Holm's step-down.

    Holm needs every p-value of the family before any line can be marked, while lines are written one
    by one: each line gets a placeholder, :meth:`resolve` replaces them at the end. A comparison made
    twice (the same runs and metric in two sections) is one member of the family.
    """

    def __init__(self) -> None:
        self.deltas: dict[tuple[str, ...], Interval] = {}
        self.one_seed: set[tuple[str, ...]] = set()

    def token(self, key: tuple[str, ...], delta: Interval | None) -> str:
        """The placeholder of comparison ``key`` ("" unless its interval is a t-interval over seeds)."""
        if delta is not None and delta.method == "bootstrap" and delta.defined:
            self.one_seed.add(key)
        if delta is None or delta.method != "t" or not delta.defined:
            return ""
        self.deltas.setdefault(key, delta)
        return f"\x00{'|'.join(key)}\x00"

    def survivors(self) -> dict[tuple[str, ...], bool]:
        keys = list(self.deltas)
        return dict(zip(keys, holm([t_interval_pvalue(self.deltas[k]) for k in keys], HOLM_ALPHA)))

    def summary(self) -> str:
        keys = self.survivors()
        resolved = sum(d.excludes_zero for d in self.deltas.values())
        return (f"Comparisons in this file: {len(keys)} with ≥ 2 training seeds (t over seeds), {resolved} of them "
                f"resolved at 95 %, {sum(keys.values())} after Holm's step-down over these {len(keys)} (α = "
                f"{HOLM_ALPHA}, marked {HOLM_MARK}); {len(self.one_seed)} more rest on one seed (image bootstrap: "
                "evaluation noise only, no verdict).")

    def resolve(self, text: str) -> str:
        n = len(self.deltas)
        for key, ok in self.survivors().items():
            mark = f"; {HOLM_MARK} resolved after Holm over {n} comparisons" if ok else \
                f"; not resolved after Holm over {n} comparisons"
            text = text.replace(f"\x00{'|'.join(key)}\x00", mark)
        return text


def _f(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if x is None or x != x else f"{x * scale:.{digits}f}"


def _iv(iv: Interval | None, scale: float) -> str:
    """"+1.2 [+0.4, +2.0] (t over 3 seeds)": a Δ or value with its interval, in the table's units."""
    if iv is None:
        return "n/a"
    lo, hi = iv.low * scale, iv.high * scale
    core = f"{iv.mean * scale:+.1f}"
    if iv.method == "none" or lo != lo:
        return f"{core} (n={iv.n}, no interval)"
    kind = f"t over {iv.n} seeds" if iv.method == "t" else "image bootstrap, one training seed"
    return f"{core} [{lo:+.1f}, {hi:+.1f}] ({kind})"


#: The logged validation metric in the tables' units: COCO AP is logged as a fraction, MPII PCKh in percent.
_CURVE_UNITS = {"coco": (100.0, "AP"), "mpii": (1.0, "PCKh")}


def _trend_text(curves: Curves, run: str) -> str:
    """The trend of the run's last validation points (:mod:`pipeline.report.trend`)."""
    scale, unit = _CURVE_UNITS.get(run.split("_")[0], (1.0, "metric"))
    tr = curve_trend(curves.get(run, {}), TREND_POINTS, scale)
    if tr is None:
        return f"trend undecidable (fewer than {TREND_POINTS} validation points)"
    return tr.format(unit)


def _diag_text(rec: RunRecord) -> str:
    m = mean_metrics(rec)
    seps = {k[len(_SEP_PREFIX):]: v for k, v in m.items() if k.startswith(_SEP_PREFIX)}
    collapsed = sorted(name for name, r in seps.items() if r < COLLAPSE_RATIO)
    parts = [f"median joint error {_f(m.get(metric_key('diag', 'median_err')), digits=2)} heatmap px",
             "collapsed pairs: " + (", ".join(f"{n} ({seps[n]:.2f})" for n in collapsed) if collapsed else "none"),
             f"dead heatmaps {_f(m.get(metric_key('diag', 'dead_fraction')), 100)} %"]
    return "; ".join(parts)


def _pair_section(table: PaperTable, records: Mapping[str, RunRecord], intervals: Mapping[str, RowIntervals],
                  curves: Curves, family: Family) -> list[str]:
    scale = table.measured_scale
    lines = []
    key = metric_key(table.split, table.main_metric)
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
        verdict = _verdict(delta, family, (key, row.run, row.baseline_run))
        paper = f"; the paper: ↑{row.paper_delta}" if row.paper_delta is not None else ""
        lines.append(f"- **{row.run}** − {row.baseline_run} ({name}): Δ{table.main_metric} "
                     f"{_iv(delta, scale)}, {verdict}{paper}.")
        for run, ri in ((row.baseline_run, base_iv), (row.run, iv)):
            rec = records[run]
            lines.append(f"  - {run}: {table.main_metric} {_f(ri.value.mean if ri else None, scale)} "
                         f"(seeds {rec.seeds}); {_diag_text(rec)}; {_trend_text(curves, run)}; "
                         f"MLflow {', '.join(rec.run_ids[s] for s in rec.seeds)}.")
    return lines or ["- no compared rows."]


def _noise_line(records: Mapping[str, RunRecord], key: str, scale: float) -> str:
    sd, dof = seed_noise(records, key)
    shown = legacy_key(key)  # findings.md keeps the metric names its readers know
    if dof == 0:
        return (f"- Seed noise of {shown}: not measured (one seed per run); intervals below are image-bootstrap "
                "intervals, which leave training noise out. Run `snakemake --cores all study` for seeds.")
    return f"- Seed noise of {shown}: pooled SD over seeds {sd * scale:.2f} ({dof} degrees of freedom)."


def _sec4_section(records: Mapping[str, RunRecord], run_dir: RunDirFn | None) -> list[str]:
    """ρ(per-image loss, per-image metric) per run and ρ_MSE − ρ_HDM per pair (:mod:`.consistency`)."""
    out = ["## Sec. 4: does a lower training loss go with a better metric? (per image)", "",
           "Per validation image, the mean over its people of the run's own training loss and of OKS (COCO) or "
           "the share of joints within 0.5 head size (MPII); Spearman ρ between the two over the images, per "
           "seed, averaged over distinct seeds (seeds whose arrays agree to rtol 1e-6 count once). A loss "
           "consistent with the metric has ρ near −1. 95 % intervals: percentile bootstrap over images "
           f"({cons.RESAMPLES:,} resamples, seed {cons.SEED}; for ρ_MSE − ρ_HDM the same resamples for both "
           "runs): evaluation noise only. The per-epoch view (training loss against validation metric) is "
           "figures/loss_vs_metric.png, shown without a claim.", ""]
    for split, _metric, _scale, ds, archs in _PAIRS:
        for arch in archs:
            out.append(_sec4_pair(f"{ds}_{arch}_mse", f"{ds}_{arch}_hdm", records, run_dir))
    return out


def _sec4_pair(mse: str, hdm: str, records: Mapping[str, RunRecord], run_dir: RunDirFn | None) -> str:
    label = f"- {mse} vs {hdm}"
    if mse not in records or hdm not in records:
        return f"{label}: not run ({', '.join(r for r in (mse, hdm) if r not in records)})."
    found = {r: cons.load_run(r, records[r].seeds, run_dir) if run_dir else {} for r in (mse, hdm)}
    missing = [r for r, a in found.items() if not a]
    if missing:
        return f"{label}: not run (no {cons.CONSISTENCY_FILE} for {', '.join(missing)}; rerun the evaluation)."
    res = {r: cons.run_consistency(r, a) for r, a in found.items()}
    if any(v is None for v in res.values()):
        return f"{label}: fewer than 3 images with a defined loss and metric."
    parts = [f"{r.split('_')[-1].upper()} ρ = {cons.format_bounds(c.rho)} ({len(c.seeds)} seeds with data, "
             f"{len(c.distinct)} distinct; {c.images} images)" for r, c in res.items()]
    diff = cons.pair_difference(res[mse], res[hdm])
    if diff is None:
        return f"{label}: {'; '.join(parts)}; fewer than 3 common images for ρ_MSE − ρ_HDM."
    return f"{label}: {'; '.join(parts)}; ρ_MSE − ρ_HDM = {cons.format_bounds(diff, 2.0)}: {_rho_words(diff)}."


def _rho_words(diff: Interval) -> str:
    """The conclusion the interval of ρ_MSE − ρ_HDM allows (more negative ρ: more consistent)."""
    if diff.defined and diff.low > 0:
        return "HDM's loss ranks the images more consistently with the metric than MSE's"
    if diff.defined and diff.high < 0:
        return "MSE's loss ranks the images more consistently with the metric than HDM's"
    return "no difference resolved over evaluation images" if diff.defined else "no interval"


def table5_note(records: Mapping[str, RunRecord], intervals: Mapping[str, RowIntervals],
                run_dir: RunDirFn | None = None) -> str:
    """Table 5's rows differ only in the Sinkhorn iteration cap: their AP spread beside the seed noise of
    the same runs, and how many iterations the Sinkhorn solver needed (``sinkhorn_convergence.json``)."""
    table = next(t for t in TABLES if t.number == 5)
    runs = [r.run for r in table.rows if r.run and "hdm" in r.run]
    means = {r: intervals[r].value.mean for r in runs if r in intervals}
    if len(means) < 2:
        return "Table 5 (Sinkhorn iterations): not run."
    spread = (max(means.values()) - min(means.values())) * table.measured_scale
    sd, dof = seed_noise({r: records[r] for r in runs if r in records}, metric_key(table.split, "AP"))
    noise = (f"the pooled seed SD of these runs is {sd * table.measured_scale:.2f} AP ({dof} dof)" if dof
             else "no seed noise measured (one seed per run; `snakemake --cores all study` measures it)")
    return (f"Table 5 ({', '.join(means)}): the measured AP spread (largest − smallest mean) is {spread:.2f} AP, "
            f"and {noise}. {sinkhorn_text(runs, records, run_dir)}")


def _load_convergence(run: str, records: Mapping[str, RunRecord], run_dir: RunDirFn | None) -> dict[int, dict]:
    if run_dir is None or run not in records:
        return {}
    files = {s: Path(run_dir(run, s)) / SINKHORN_FILE for s in records[run].seeds}
    return {s: read_json(f) for s, f in files.items() if f.is_file()}


def _iterations(values: list[Any], cap: float) -> list[float]:
    """Iteration counts with "not reached" (null, NaN, at or past the cap) as +inf."""
    return [math.inf if v is None or v != v or v >= cap else float(v) for v in values]


def _its(x: float) -> str:
    return "not reached" if math.isinf(x) else f"{x:g}"


def sinkhorn_text(runs: list[str], records: Mapping[str, RunRecord], run_dir: RunDirFn | None) -> str:
    """The convergence sentence of Table 5, generated from the runs' ``sinkhorn_convergence.json``:
    iterations to each tolerance (median, 95th percentile, maximum over heatmaps; the largest over seeds),
    and, per tolerance, whether every heatmap of every run got there before the smallest cap."""
    parts, worst, caps, tols = [], None, [], None
    for run in runs:
        conv = _load_convergence(run, records, run_dir)
        if not conv:
            parts.append(f"{run}: not measured")
            continue
        first = conv[min(conv)]
        tols = [float(t) for t in first["tolerances"]]
        cap = float(first["cap"])
        caps.append(cap)
        stat = {k: [max(_iterations(c[k], cap)[i] for c in conv.values()) for i in range(len(tols))]
                for k in ("iterations_median", "iterations_p95", "iterations_max")}
        worst = stat["iterations_max"] if worst is None else [max(a, b) for a, b in zip(worst, stat["iterations_max"])]
        parts.append(f"{run} (cap {cap:g}, seeds {sorted(conv)}, {first['heatmaps']} heatmaps, effective ε "
                     f"{float(first['epsilon_effective']):g}): tolerance "
                     + ", ".join(f"{t:g} → median {_its(m)}, p95 {_its(q)}, max {_its(x)}"
                                 for t, m, q, x in zip(tols, stat["iterations_median"], stat["iterations_p95"],
                                                       stat["iterations_max"])))
    text = "Sinkhorn iterations to each tolerance (largest over seeds): " + "; ".join(parts) + "."
    if worst is None or len(caps) < len(runs):
        return text
    below = [t for t, w in zip(tols, worst) if w < min(caps)]
    above = [t for t, w in zip(tols, worst) if w >= min(caps)]
    if below:
        text += (f" Every heatmap of these runs reached tolerance {', '.join(f'{t:g}' for t in below)} before "
                 f"the smallest cap ({min(caps):g} iterations)")
        text += (f"; tolerance {', '.join(f'{t:g}' for t in above)} not." if above else ".")
    else:
        text += f" No tolerance was reached by every heatmap before the smallest cap ({min(caps):g} iterations)."
    return text


def _verdict(delta: Interval | None, family: Family | None = None, key: tuple[str, ...] = ()) -> str:
    """The words an interval allows: "resolved" only from ≥ 2 training seeds (a t-interval), with the
    Holm placeholder of :class:`Family`; a one-seed bootstrap interval is evaluation noise only."""
    if delta is None or delta.method == "none" or not delta.defined:
        return "no interval"
    if delta.method != "t":
        if family is not None:
            family.token(key, delta)
        side = "excludes 0" if delta.excludes_zero else "includes 0"
        return f"evaluation noise only: the interval {side}, no verdict"
    words = ("resolved: the interval excludes 0" if delta.excludes_zero
             else "not resolved: the interval includes 0")
    return words + (family.token(key, delta) if family is not None else "")


def _delta_line(label: str, split: str, metric: str, scale: float, run: str, baseline: str,
                records: Mapping[str, RunRecord], bootstrap: BootFn | None, family: Family | None = None) -> str:
    """"- label: ΔAP +1.2 [+0.4, +2.0] (t over 3 seeds), resolved." or "... not run"."""
    if run not in records or baseline not in records:
        missing = ", ".join(r for r in (run, baseline) if r not in records)
        return f"- {label}: not run ({missing})."
    iv = pair_interval(split, metric_key(split, metric), run, baseline, records, bootstrap)
    delta = iv.delta if iv else None
    return f"- {label}: Δ{metric} {_iv(delta, scale)}, {_verdict(delta, family, (metric_key(split, metric), run, baseline))}."


def _coco_line(label: str, run: str, baseline: str, records: Mapping[str, RunRecord],
               bootstrap: BootFn | None, family: Family | None = None) -> str:
    """:func:`_delta_line` of COCO val AP (Table 1's split and units)."""
    return _delta_line(label, "coco_val", "AP", 100.0, run, baseline, records, bootstrap, family)


_PAIRS = (("coco_val", "AP", 100.0, "coco", ("simplebaseline", "hrnet_w32", "hrnet_w48", "hrformer_base")),
          ("mpii_val", "Mean", 1.0, "mpii", ("simplebaseline", "hrnet_w32", "hrnet_w48")))


def _decoder_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None, family: Family) -> list[str]:
    """Does HDM beat a better decoder on the same model? DARK's gain on the MSE heatmaps, then HDM
    against MSE + DARK, per architecture and dataset."""
    out = ["### Does HDM beat a better decoder on the same model? (Tables 1 and 3, \"+ DARK\" lines)", ""]
    for split, metric, scale, ds, archs in _PAIRS:
        for arch in archs:
            mse, hdm = f"{ds}_{arch}_mse", f"{ds}_{arch}_hdm"
            dark = variant_run(mse, DARK)
            out.append(_delta_line(f"{dark} − {mse} (DARK's gain)", split, metric, scale, dark, mse, records,
                                   bootstrap, family))
            out.append(_delta_line(f"{hdm} − {dark} (HDM against the better decoder)", split, metric, scale, hdm,
                                   dark, records, bootstrap, family))
    return out + [""]


def _udp_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None, family: Family) -> list[str]:
    out = ["### UDP's coordinate convention (Table 1, UDP lines)", "",
           "UDP maps box edges onto the first and last pixel centres, this project onto pixel edges "
           "(docs/conventions.md, \"UDP\"). The UDP runs decode with DARK, so against MSE + DARK of the same "
           "architecture the runs differ in UDP's data processing: the convention and the Gaussian centre "
           "(exact sub-pixel; the MSE runs round it to the nearest heatmap pixel, as HRNet does).", ""]
    for backbone, run in UDP_RUNS.items():
        mse = run.replace("_udp", "_mse")
        dark = variant_run(mse, DARK)
        out.append(_coco_line(f"{run} − {dark} ({backbone}: UDP's data processing)", run, dark, records, bootstrap,
                              family))
        out.append(_coco_line(f"{run} − {mse} ({backbone}: data processing and decoder)", run, mse, records,
                              bootstrap, family))
    return out + [""]


def optimum_text(path: Path = HDM_OPTIMUM) -> str:
    """Where the HDM loss's optimum puts a sub-pixel keypoint under each ε unit, from the benchmark's
    record (``python -m pipeline --profile paper bench hdm-optimum``); "not measured" without it."""
    if not Path(path).is_file():
        return f"The loss's optimum per ε unit: not measured ({path} absent)."
    units = read_json(Path(path)).get("units", {})
    cells = [f"ε = 1 {name} px (effective {float(u['epsilon_effective_heatmap_px']):g} heatmap px): mean |bias| "
             f"{float(u['mean_abs_bias_heatmap_px']):.3f}, max {float(u['max_abs_bias_heatmap_px']):.3f} heatmap px"
             for name, u in units.items() if isinstance(u, dict) and "mean_abs_bias_heatmap_px" in u]
    if not cells:
        return f"The loss's optimum per ε unit: not measured ({path} has no per-unit results)."
    return ("Decoded position of the loss's optimum against the sub-pixel keypoint, over the benchmark's "
            f"offsets ({path}): " + "; ".join(cells) + ".")


def _epsilon_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None, family: Family,
                     optimum: Path = HDM_OPTIMUM) -> list[str]:
    out = ["### HDM's ε units (Table 6)", "", optimum_text(optimum), "", "Trained:", ""]
    for stride in T6_STRIDES:
        run, base = _w32(stride, "hdm_epsin"), _w32(stride, "hdm")
        out.append(_coco_line(f"stride {stride}: {run} − {base}", run, base, records, bootstrap, family))
    return out + [""]


def _stride_section(records: Mapping[str, RunRecord], bootstrap: BootFn | None, family: Family) -> list[str]:
    out = ["### Heatmap resolution: does HDM's advantage grow at stride 8? (Table 6)", "",
           "The paper's argument (quantisation error of low-resolution heatmaps) predicts that HDM − MSE grows "
           "when the heatmap is coarser.", ""]
    for stride in (4, 8):
        for base, label in ((_w32(stride, "mse"), "MSE"), (variant_run(_w32(stride, "mse"), DARK), "MSE + DARK")):
            out.append(_coco_line(f"stride {stride}: HDM − {label}", _w32(stride, "hdm"), base, records, bootstrap,
                                  family))
    plus, minus = (_w32(8, "hdm"), _w32(8, "mse")), (_w32(4, "hdm"), _w32(4, "mse"))
    inter = contrast_interval(metric_key("coco_val", "AP"), plus, minus, records)
    head = "- Interaction (HDM − MSE at stride 8) − (HDM − MSE at stride 4)"
    if inter is None:
        out.append(f"{head}: not run.")
    elif inter.method == "none":
        out.append(f"{head}: {inter.mean * 100:+.1f} (one seed: no interval; the study target's seeds give one).")
    else:
        out.append(f"{head}: {_iv(inter, 100.0)}, {_verdict(inter, family, ('interaction', *plus, *minus))}.")
    return out + [""]


def _beyond_sections(records: Mapping[str, RunRecord], bootstrap: BootFn | None, family: Family) -> list[str]:
    return (["## Beyond the paper", ""] + _decoder_section(records, bootstrap, family)
            + _udp_section(records, bootstrap, family) + _epsilon_section(records, bootstrap, family)
            + _stride_section(records, bootstrap, family))


_SUMMARY = "\x00summary\x00"


def build_findings(*, profile: str, records: Mapping[str, RunRecord],
                   intervals: Mapping[str, Mapping[str, RowIntervals]], curves: Curves,
                   seeds: list[int], bootstrap: BootFn | None = None, run_dir: RunDirFn | None = None) -> str:
    """The text of ``findings.md``. ``run_dir(run, seed)``: the run's training folder, where the
    evaluation leaves ``consistency_val.npz`` and ``sinkhorn_convergence.json`` (None: "not run")."""
    family = Family()
    lines = [f"# Findings — profile {profile}", "",
             f"Generated by `python -m pipeline report` from the MLflow records of seeds {seeds}; "
             "Δ = HDM − baseline, in the tables' units (AP ×100, PCKh %), 95 % intervals. \"Resolved\" needs "
             "≥ 2 training seeds (t over the per-seed paired differences); a one-seed interval is an image "
             "bootstrap: evaluation noise only.", "", _SUMMARY, ""]
    lines += verdict_section(records, bootstrap, family)
    for number in (1, 3, 2):
        table = next(t for t in TABLES if t.number == number)
        key = metric_key(table.split, table.main_metric)
        runs = {r: records[r] for r in table.runs() if r in records}
        lines += [f"## Table {number}: {table.short_title}", "", _noise_line(runs, key, table.measured_scale)]
        lines += _pair_section(table, records, intervals.get(table.key, {}), curves, family) + [""]
    lines += ["## Ablations (Tables 4 and 5)", ""]
    lines += _pair_section(next(t for t in TABLES if t.number == 4), records, intervals.get("table4", {}),
                           curves, family)
    lines += ["- " + table5_note(records, intervals.get("table5", {}), run_dir), ""]
    lines += _sec4_section(records, run_dir) + [""]
    lines += _beyond_sections(records, bootstrap, family)
    text = "\n".join(lines) + "\n"
    return family.resolve(text.replace(_SUMMARY, family.summary()))
