"""Where the HDM loss puts a free heatmap's mass: ``python -m pipeline bench hdm-optimum``.

HDM's epsilon units: with eps = 1 heatmap pixel the minimiser of the loss over a free
heatmap is not the dot's four demanders but a distribution sharpened towards the nearest pixel
centre, so the paper's 2x2 decoder is biased even for a perfect network; with eps = 1/stride (eps = 1
input pixel) it should be the demanders, which decode to the dot exactly. This benchmark measures
that optimum directly, for dots at sub-pixel offsets in [0, 1)^2 and both ``epsilon_units``:

* the heatmap is ``softmax(theta)`` over the pixels (a free point of the simplex, every pixel > 0
  so relu is the identity), ``theta`` minimised with Adam on the project's :class:`HDMLoss`;
* it is decoded with the project's decoder (:func:`pipeline.codecs.hdm.decode`);
* reported per offset: decoded bias (heatmap px), the 2x2 masses at the demander pixels against
  the demanders' bilinear masses, and the mass outside them.

Writes ``hdm_optimum.json`` and ``hdm_optimum.png`` under ``reports/benchmarks/``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .. import io
from ..codecs.hdm import decode
from ..config import load_params, resolve_run
from ..engine.builders import heatmap_stride
from ..losses.hdm import HDMLoss, effective_epsilon
from ..losses.sinkhorn import subpixel_demanders
from ..report.figures import save_figure

# Grid large enough that no mass wants to reach the border; the dot sits near its centre.
GRID = 9
ORIGIN = 4.0


def offsets_grid(step: float) -> Tensor:
    """Sub-pixel offsets ``(dx, dy)`` in ``[0, 1)^2`` on a regular lattice of spacing ``step`` ``(P, 2)``."""
    n = max(1, round(1.0 / step))
    v = torch.arange(n, dtype=torch.float64) / n
    dy, dx = torch.meshgrid(v, v, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], 1)


def optimise_free_heatmaps(dots: Tensor, loss_fn: HDMLoss, steps: int, lr: float) -> tuple[Tensor, list[float]]:
    """Minimise ``loss_fn`` over ``softmax(theta)`` heatmaps, one per dot; returns ``(P, GRID, GRID)``.

    Adam on logits rather than projected steps on the simplex: it reaches the boundary of the
    simplex (pixels the optimum leaves empty) only asymptotically, but it needs no projection and
    every pixel stays > 0, so the loss's relu never hides a gradient.
    """
    p = dots.shape[0]
    theta = torch.zeros(p, 1, GRID * GRID, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    kp = dots.reshape(p, 1, 2)
    w = torch.ones(p, 1, dtype=torch.float64)
    history = []
    for _ in range(steps):
        hm = torch.softmax(theta, -1).reshape(p, 1, GRID, GRID)
        loss = loss_fn(hm, kp, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return torch.softmax(theta.detach(), -1).reshape(p, GRID, GRID), history


def demander_masses(hm: Tensor, dots: Tensor) -> tuple[Tensor, Tensor]:
    """The optimum's masses at the 4 demander pixels ``(P, 4)`` and the demanders' own masses ``(P, 4)``."""
    pos, want = subpixel_demanders(dots)
    ix, iy = pos[..., 0].long(), pos[..., 1].long()
    got = hm[torch.arange(hm.shape[0])[:, None], iy, ix]
    return got, want


def measure_units(dots: Tensor, epsilon: float, units: str, stride: float, steps: int, lr: float,
                  iterations: int) -> dict[str, Any]:
    """Optimum, decoded bias and masses for one unit choice (float64)."""
    loss_fn = HDMLoss(epsilon=epsilon, epsilon_units=units, stride=stride, iterations=iterations, reduction="sum")
    hm, history = optimise_free_heatmaps(dots, loss_fn, steps, lr)
    coords, _ = decode(hm[:, None])
    bias = coords[:, 0].double() - dots
    got, want = demander_masses(hm, dots)
    norm = bias.norm(dim=1)
    return {
        "epsilon": epsilon, "epsilon_units": units, "epsilon_effective_heatmap_px": loss_fn.epsilon_effective,
        "final_loss_sum": history[-1], "loss_change_last_10_steps": history[-11] - history[-1] if steps > 10 else None,
        "max_abs_bias_heatmap_px": float(norm.max()),
        "mean_abs_bias_heatmap_px": float(norm.mean()),
        "max_abs_mass_error_vs_demanders": float((got - want).abs().max()),
        "max_mass_outside_demanders": float((1 - got.sum(1)).max()),
        "bias_heatmap_px": bias.tolist(),
        "demander_pixel_masses": got.tolist(),
    }


def _plot(report: Mapping[str, Any], path: Path) -> Path:
    """Bias along x against dx, for a few rows dy, at both unit choices; and the bias field's norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    offs = torch.tensor(report["offsets"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = sorted({round(float(v), 6) for v in offs[:, 1]})
    picks = [rows[0], rows[len(rows) // 4], rows[len(rows) // 2]]
    for units, style in (("heatmap", "-"), ("input", "--")):
        r = report["units"][units]
        bias = torch.tensor(r["bias_heatmap_px"])
        for dy in picks:
            sel = (offs[:, 1] - dy).abs() < 1e-9
            axes[0].plot(offs[sel, 0], bias[sel, 0], style, marker=".",
                         label=f"eps={r['epsilon_effective_heatmap_px']:g} hm px, dy={dy:g}")
        axes[1].plot(range(len(offs)), bias.norm(dim=1), style,
                     label=f"{units}: eps={r['epsilon_effective_heatmap_px']:g} hm px")
    axes[0].set(xlabel="dot offset dx (heatmap px)", ylabel="decoded bias x (heatmap px)",
                title="optimum of the HDM loss, decoded")
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="offset index (row-major over dy, dx)", ylabel="|bias| (heatmap px)", title="all offsets")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def run_hdm_optimum_benchmark(params: Mapping[str, Any] | None = None, *, profile: str = "paper",
                              run: str = "coco_hrnet_w48_hdm", step: float = 0.125, steps: int = 1000,
                              lr: float = 0.1, iterations: int = 1000,
                              out_dir: str | os.PathLike = Path("reports/benchmarks"),
                              verbose: bool = True) -> dict[str, Any]:
    """Measure the optimum for both ``epsilon_units``; eps and stride come from ``run`` in ``profile``."""
    if params is None:
        params = load_params()
    cfg = resolve_run(dict(params), run, profile)
    epsilon, stride = float(cfg["hdm"]["epsilon"]), heatmap_stride(cfg)
    offs = offsets_grid(step)
    dots = offs + ORIGIN
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "hdm_optimum", "created_unix": time.time(),
        "settings": {"profile": profile, "run": run, "epsilon": epsilon, "stride": stride, "grid": [GRID, GRID],
                     "dot_origin": ORIGIN, "offset_step": step, "adam_steps": steps, "adam_lr": lr,
                     "sinkhorn_iterations": iterations, "dtype": "float64",
                     "heatmap": "softmax(theta) over the pixels, theta = 0 at the start",
                     "decoder": "pipeline.codecs.hdm.decode (2x2 window of largest sum)"},
        "offsets": offs.tolist(),
        "units": {u: measure_units(dots, epsilon, u, stride, steps, lr, iterations) for u in ("heatmap", "input")},
    }
    report["seconds"] = time.perf_counter() - t0
    report["check_dot_0.25_0.25"] = _check_quarter(report, offs)
    out_dir = Path(out_dir)
    io.write_json(out_dir / "hdm_optimum.json", report)
    _plot(report, out_dir / "hdm_optimum.png")
    if verbose:
        print(summary(report))
        print(f"wrote {out_dir / 'hdm_optimum.json'} and {out_dir / 'hdm_optimum.png'}")
    return report


def _check_quarter(report: Mapping[str, Any], offs: Tensor) -> dict[str, Any] | None:
    """The worked example the JSON keeps (check_dot_0.25_0.25): masses at the 4 demander pixels for the dot
    offset by (0.25, 0.25)."""
    hit = ((offs - torch.tensor([0.25, 0.25], dtype=offs.dtype)).abs().sum(1) < 1e-9).nonzero().reshape(-1)
    if hit.numel() == 0:
        return None
    i = int(hit[0])
    out: dict[str, Any] = {"demanders": subpixel_demanders(offs[i:i + 1] + ORIGIN)[1][0].tolist()}
    for u, r in report["units"].items():
        out[u] = {"masses": r["demander_pixel_masses"][i], "bias_heatmap_px": r["bias_heatmap_px"][i]}
    return out


def summary(report: Mapping[str, Any]) -> str:
    lines = [f"HDM loss optimum over a free {GRID}x{GRID} heatmap, eps={report['settings']['epsilon']:g}, "
             f"stride={report['settings']['stride']:g}, {len(report['offsets'])} offsets, "
             f"{report['settings']['adam_steps']} Adam steps ({report['seconds']:.1f} s)"]
    for u, r in report["units"].items():
        lines.append(f"  {u:>7}: eps_eff={r['epsilon_effective_heatmap_px']:g} hm px  max|bias|="
                     f"{r['max_abs_bias_heatmap_px']:.4f}  mean|bias|={r['mean_abs_bias_heatmap_px']:.4f}  "
                     f"max|mass-demander|={r['max_abs_mass_error_vs_demanders']:.4f}")
    q = report.get("check_dot_0.25_0.25")
    if q:
        fmt = lambda v: "/".join(f"{x:.4f}" for x in v)  # noqa: E731
        lines.append(f"  dot (0.25, 0.25): demanders {fmt(q['demanders'])}; heatmap {fmt(q['heatmap']['masses'])}; "
                     f"input {fmt(q['input']['masses'])}")
    return "\n".join(lines)


__all__: Sequence[str] = ["run_hdm_optimum_benchmark", "offsets_grid", "optimise_free_heatmaps", "summary"]
