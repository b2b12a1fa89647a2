"""Figures of the report: validation curves per MSE/HDM pair (each run annotated with the trend of its
last validation points), the per-joint error of MSE vs HDM per architecture, training loss vs validation
metric per epoch (the per-epoch view of Sec. 4, a picture without a claim), and Table 6's AP against the
heatmap stride per method."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..data.skeleton import JOINT_SETS
from ..errors import PipelineError
from ..io import atomic_path
from ..tracking.metric_names import metric_key
from .aggregate import RowIntervals, RunRecord, mean_metrics
from .beyond import T6_STRIDES, TABLE6
from .trend import TREND_POINTS, curve_trend
from .verdict import MECHANISM

# mse_hdm before mse and hdm: MSE + alpha × HDM is neither, and is in neither loss panel (as UDP)
_RUN_RE = re.compile(r"^(?P<ds>[A-Za-z0-9]+)_(?P<stem>.+?)_(?P<var>mse_hdm(?:_.+)?|mse|udp|integral(?:_.+)?|hdm(?:_.+)?)$")
Curves = Mapping[str, Mapping[int, pd.DataFrame]]


def _split_run(run: str) -> tuple[str, str, str]:
    """"coco_hrnet_w48_hdm_it500" → ("coco", "hrnet_w48", "hdm_it500")."""
    m = _RUN_RE.match(run)
    return (m["ds"], m["stem"], m["var"]) if m else (run.split("_")[0], run, run)


def _check_curves(curves: Curves) -> None:
    for run, per_seed in curves.items():
        for seed, df in per_seed.items():
            if not isinstance(df, pd.DataFrame):
                raise PipelineError(f"curves[{run!r}][{seed}]", f"expected a DataFrame, got {type(df).__name__}")
            missing = [c for c in ("epoch", "val_metric") if c not in df.columns]
            if missing:
                raise PipelineError(f"curves[{run!r}][{seed}]", f"missing column(s) {', '.join(missing)}")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically and close it: every figure of the report and of the
    benchmarks is written the same way, so a stopped run never leaves half a picture."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _grid(n: int, w: float = 4.5, h: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(max(n, 1), 3)
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def write_figures(curves: Curves, out_dir: Path) -> list[Path]:
    """Validation metric per epoch, one panel per system, one colour per variant, one line per seed, to
    ``out_dir/figures/curves_<dataset>.png``. Each panel lists, per run, the slope of its last validation
    points with the 95 % interval and the verdict (:mod:`pipeline.report.trend`); the points the slope is
    fitted to are marked."""
    _check_curves(curves)
    groups: dict[str, dict[str, list[str]]] = {}
    for run in curves:
        ds, stem, _ = _split_run(run)
        groups.setdefault(ds, {}).setdefault(stem, []).append(run)
    paths = []
    for ds, systems in sorted(groups.items()):
        fig, axes = _grid(len(systems))
        for ax, (stem, runs) in zip(axes.flat, sorted(systems.items())):
            notes = []
            for i, run in enumerate(sorted(runs, key=lambda r: (_split_run(r)[2] != "mse", r))):
                _plot_run(ax, curves[run], _split_run(run)[2], f"C{i}")
                notes.append(_trend_note(ds, _split_run(run)[2], curves[run]))
            ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=6, va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0})
            ax.set_title(stem)
            ax.set_xlabel("epoch")
            ax.set_ylabel("val metric")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{ds}: validation metric, MSE vs HDM (● the last {TREND_POINTS} points: slope per epoch, "
                     "95 % interval)")
        fig.tight_layout()
        paths.append(save_figure(fig, Path(out_dir) / "figures" / f"curves_{ds}.png"))
    return paths


def _trend_note(ds: str, label: str, per_seed: Mapping[int, pd.DataFrame]) -> str:
    """"hdm: slope +0.12 [-0.05, +0.30]/ep, flat within ±0.30" in the tables' units (AP ×100, PCKh)."""
    tr = curve_trend(per_seed, TREND_POINTS, 100.0 if ds == "coco" else 1.0)
    if tr is None:
        return f"{label}: trend undecidable (< {TREND_POINTS} points)"
    return f"{label}: slope {tr.slope:+.2f} {tr.bounds}/ep, {tr.verdict}"


def _plot_run(ax, per_seed: Mapping[int, pd.DataFrame], label: str, colour: str) -> None:
    for j, (seed, df) in enumerate(sorted(per_seed.items())):
        d = df.sort_values("epoch")
        ax.plot(d["epoch"], d["val_metric"], color=colour, alpha=0.8, linewidth=1,
                linestyle="--" if label == "mse" else "-", label=label if j == 0 else None)
        tail = d[["epoch", "val_metric"]].dropna().tail(TREND_POINTS)
        ax.plot(tail["epoch"], tail["val_metric"], "o", color=colour, markersize=3)


def write_diagnostic_figures(records: Mapping[str, RunRecord], curves: Curves, out_dir: Path) -> list[Path]:
    """``joint_error_<dataset>.png`` (median error per joint, MSE vs HDM, per architecture) and
    ``loss_vs_metric.png`` (per-epoch training loss against validation metric, per loss)."""
    paths = []
    pairs: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for run in records:
        ds, stem, var = _split_run(run)
        if var in ("mse", "hdm"):
            pairs.setdefault(ds, {}).setdefault(stem, []).append((var, run))
    for ds, systems in sorted(pairs.items()):
        fig, axes = _grid(len(systems), w=5.5)
        for ax, (stem, runs) in zip(axes.flat, sorted(systems.items())):
            names = list(JOINT_SETS[ds].joints) if ds in JOINT_SETS else []
            for k, (var, run) in enumerate(sorted(runs, key=lambda t: t[0] != "mse")):
                m = mean_metrics(records[run])
                errs = [m.get(metric_key("diag", f"err.{n}"), np.nan) for n in names]
                x = np.arange(len(names))
                ax.bar(x + (k - 0.5) * 0.4, errs, width=0.4, label=var, color=f"C{k}")
                ax.set_xticks(x, names, rotation=90, fontsize=6)
            ax.set_title(stem)
            ax.set_ylabel("median error (heatmap px)")
            ax.legend(fontsize=8)
        fig.suptitle(f"{ds}: per-joint localisation error, MSE vs HDM (ground-truth boxes)")
        fig.tight_layout()
        paths.append(save_figure(fig, Path(out_dir) / "figures" / f"joint_error_{ds}.png"))
    if curves:
        paths.append(_loss_vs_metric(curves, out_dir))
    return paths


def _loss_vs_metric(curves: Curves, out_dir: Path) -> Path:
    fig, axes = _grid(2)
    for ax, loss in zip(axes.flat, ("mse", "hdm")):
        for run, per_seed in sorted(curves.items()):
            var = _split_run(run)[2]
            if not (var == "mse" if loss == "mse" else var.startswith("hdm")):  # UDP runs: in neither panel
                continue
            for df in per_seed.values():
                ax.plot(df["train_loss"], df["val_metric"], marker=".", linewidth=0.6, alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel(f"training loss ({loss.upper()})")
        ax.set_ylabel("val metric")
        ax.set_title(f"{loss.upper()} runs: one line per run and seed, one point per epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "figures" / "loss_vs_metric.png")


def write_table6_figure(intervals: Mapping[str, RowIntervals], out_dir: Path) -> list[Path]:
    """``figures/table6.png``: COCO val AP against the heatmap stride (8 to 1) per method of Table 6, with
    the 95 % interval of each mean as an error bar; nothing when no line of Table 6 was measured."""
    methods: dict[str, list[tuple[int, RowIntervals]]] = {}
    for row in TABLE6.rows:
        stride_text, method = row.method.split(": ", 1)
        if row.run in intervals:
            methods.setdefault(method, []).append((int(stride_text.split()[1]), intervals[row.run]))
    if not methods:
        return []
    fig, axes = _grid(1, w=5.5, h=3.8)
    ax = axes.flat[0]
    for i, (method, points) in enumerate(methods.items()):
        xs = np.log2([x for x, _ in points]) + (i - 2) * 0.05  # side by side, not on top of each other
        ivs = [iv.value for _, iv in points]
        scale = TABLE6.measured_scale
        means = np.array([v.mean for v in ivs]) * scale
        lows = np.array([v.low if v.defined else v.mean for v in ivs]) * scale
        highs = np.array([v.high if v.defined else v.mean for v in ivs]) * scale
        ax.errorbar(xs, means, yerr=[means - lows, highs - means], marker="o", capsize=3, label=method,
                    color=f"C{i}")
    ax.set_xticks(np.log2(T6_STRIDES), [f"stride {s}" for s in T6_STRIDES])
    ax.set_ylabel("COCO val AP ×100")
    ax.set_title("Table 6: HRNet-W32 (95 % intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, Path(out_dir) / "figures" / "table6.png")]


def write_mechanism_figure(curves: Mapping[str, Mapping[str, pd.DataFrame]], out_dir: Path) -> list[Path]:
    """``figures/mechanism.png``: per epoch, each mechanism diagnostic (one panel each: positive pixels,
    non-positive ground-truth locations, left/right separation, joint error) of the HRNet-W32 COCO runs,
    one line per loss (mean over seeds); nothing when no run logged them."""
    keys = [(k, what) for k, what in MECHANISM if any(k in per for per in curves.values())]
    if not keys:
        return []
    fig, axes = _grid(len(keys), w=4.8, h=3.4)
    for ax, (key, what) in zip(axes.flat, keys):
        for i, (run, per) in enumerate(sorted(curves.items())):
            if key in per:
                mean = per[key].groupby("epoch")["value"].mean()
                ax.plot(mean.index, mean.values, marker="o", markersize=3, color=f"C{i}",
                        label=run.removeprefix("coco_hrnet_w32_"))
        ax.set_title(what, fontsize=8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return [save_figure(fig, Path(out_dir) / "figures" / "mechanism.png")]
