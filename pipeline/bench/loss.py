"""Benchmark of the HDM loss engine: time, memory and accuracy, against a naive reference.

``python -m pipeline bench loss [--threads N] [--sizes 24x16 64x48 96x72]`` writes
``reports/benchmarks/loss_cpu.json`` (and ``loss_cuda.json`` when a CUDA device is visible).

What is measured, per heatmap size ``H x W`` at ``B = 32, K = 17`` (float32, all weights 1):

* ``ours``: forward+backward wall time of ``HDMLoss(iterations=1000)`` (median of ``repeats`` after
  one warm-up), the Sinkhorn updates it actually computed (``last_iterations_run``: the rest are
  provably idle and skipped bit-exactly) and the peak extra memory of the step.
* ``naive``: a batched log-domain Sinkhorn in plain torch (POT's ``sinkhorn_log`` written for a batch
  of joints, same costs and demanders) differentiated by autograd through every iteration. It
  cannot run 1000 iterations at these sizes (it stores every iterate: see its measured memory per
  iteration), so it is timed at ``naive_iterations = (n1, n2)`` (default 10 and 20) and
  extrapolated linearly: ``t(1000) = t(n2) + (1000 - n2) * (t(n2) - t(n1)) / (n2 - n1)``, which
  counts its one-off work once (the lower, conservative estimate; ``t(n2) * 1000 / n2`` is
  reported too). Where its memory at ``n2`` iterations would exceed ``naive_memory_budget``, it
  runs on a smaller batch ``b`` and the time is scaled by ``B / b`` (batched, memory-bound work is
  linear in the batch). Both scalings are written in the JSON. Its loss is compared with ours on
  the same joints (a correctness cross-check: the loss has converged after 20 iterations).
* ``ratio_naive_over_ours``: the naive extrapolated time over ours.
* ``memory``: peak extra bytes of one forward+backward over what was allocated before it
  (inputs excluded, the gradient it produces included), as a multiple of the heatmap tensor's
  bytes (``B*K*H*W*4``). On CPU, torch's allocator reports every allocation and free to the
  profiler (``torch.autograd.profiler.profile(profile_memory=True)``); the peak is the maximum of
  the running sum of those events in time order. On CUDA: ``torch.cuda.max_memory_allocated``
  minus the memory allocated before the step. Measured at ``iterations`` 500 / 1000 / 1500 with
  the early stop (the default) and, where ``full_loop_memory=True``, with every update computed
  (``_early_stop = False``, so the three counts really run 500 / 1000 / 1500 updates);
  ``independent_of_iterations`` says whether, in each mode, every count gives the same peak
  (the early stop's ring of past states, ``65 x J x 4`` numbers, is its only extra).
* ``marginal_error``: ``max |s_m - b_m|`` over joints and active demanders of the potentials our
  solver returns after 500 / 1000 / 1500 iterations, ``s`` recomputed in float64 from those
  potentials (``error_float64_eval``); also what the solver reports (``solver_reported``: its
  own dtype, at the last update computed). Solved in float32 and in float64.

``demo_training_step``: one training step (forward, backward, Adam) of the demo profile's
HRNet-W48 model with HDM (``coco_hrnet_w48_hdm``) and with MSE (``coco_hrnet_w48_mse``) on the
same demo batch, and their ratio; plus, when the demo runs have been trained, their recorded
epoch times (``results/<profile>/runs/<run>/seed<k>/train_summary.json``, the first training seed).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import default_collate

from .. import io
from ..config import Paths, load_params, resolve_run
from ..engine import builders
from ..engine.train import forward_loss
from ..errors import PipelineError
from ..losses import HDMLoss
from ..losses.sinkhorn import sinkhorn_potentials, subpixel_demanders, transport_cost, transport_plan

try:  # where the profiler's device types live depends on the torch version
    from torch.autograd import DeviceType
except ImportError:  # pragma: no cover - older/newer profiler APIs
    DeviceType = None

SIZES: dict[str, tuple[int, int]] = {"demo": (24, 16), "64x48": (64, 48), "96x72": (96, 72)}  # (H, W)
DEFAULT_SIZES = ("demo", "64x48", "96x72")
# randn + 0.2533 is <= 0 with probability 0.40: about 40 % relu zeros, like a trained network's heatmaps.
_ZERO_SHIFT = 0.2533
# Targets of the loss engine (CPU, 2 cores, 96x72, B = 32, 1000 iterations).
TARGETS = {"size": "96x72", "cpu_fwd_bwd_s": 0.5, "speedup_vs_naive": 400.0, "peak_extra_memory_ratio": 8.0,
           "cuda_fwd_bwd_s": 1e-3, "hdm_over_mse_training_step": 1.2}


# ----------------------------------------------------------------------------------------------
# inputs and measurement helpers


def parse_size(spec: str) -> tuple[str, tuple[int, int]]:
    """``"demo"``/``"64x48"``/... (named) or any ``"HxW"`` -> ``(label, (H, W))``."""
    if spec in SIZES:
        return spec, SIZES[spec]
    try:
        h, w = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"heatmap size must be 'HxW' (e.g. 96x72) or one of {list(SIZES)}, got {spec!r}") from None
    if h < 2 or w < 2:
        raise ValueError(f"heatmap size must be at least 2x2, got {spec!r}")
    return f"{h}x{w}", (h, w)


def make_inputs(batch: int, joints: int, height: int, width: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random heatmaps ``[B, K, H, W]`` (~40 % relu zeros), dots ``[B, K, 2]`` inside the grid, weights 1."""
    gen = torch.Generator().manual_seed(seed)
    hm = torch.randn(batch, joints, height, width, generator=gen, dtype=torch.float64) + _ZERO_SHIFT
    kp = torch.rand(batch, joints, 2, generator=gen, dtype=torch.float64) \
        * torch.tensor([width - 1, height - 1], dtype=torch.float64)
    w = torch.ones(batch, joints, dtype=torch.float64)
    return hm.to(device, dtype), kp.to(device, dtype), w.to(device, dtype)


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work before reading the clock, so a timing covers the work itself."""
    if device.type == "cuda":  # pragma: no cover - CUDA only: synchronise the GPU before reading the clock
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Wall times (s) of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
        sync_device(device)
    times = []
    for _ in range(repeats):
        sync_device(device)
        t0 = time.perf_counter()
        fn()
        sync_device(device)
        times.append(time.perf_counter() - t0)
    return times


def _is_cpu_event(evt: Any) -> bool:
    try:
        return evt.device_type() in (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)
    except AttributeError:  # pragma: no cover - older/newer profiler APIs (no DeviceType, or other members)
        return "CPU" in str(evt.device_type())


def peak_extra_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated before it (its result kept).

    CPU: running sum of the allocator's alloc/free events recorded by the profiler. CUDA:
    ``max_memory_allocated`` minus the memory allocated before the call.
    """
    if device.type == "cuda":  # pragma: no cover - CUDA only: the CUDA allocator's peak
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start/stop chatter on stderr
    with torch.autograd.profiler.profile(profile_memory=True) as prof:
        out = fn()
    del out
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]" and _is_cpu_event(e)]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += int(e.nbytes())
        peak = max(peak, cur)
    return peak


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# ----------------------------------------------------------------------------------------------
# the two solvers


def _hdm_step(loss_fn: HDMLoss, hm: Tensor, kp: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """One forward+backward of our loss; returns ``(loss, d loss / d heatmaps)``."""
    x = hm.detach().requires_grad_(True)
    loss = loss_fn(x, kp, w)
    loss.backward()
    return loss.detach(), x.grad


def naive_sinkhorn_loss(hm: Tensor, kp: Tensor, w: Tensor, iterations: int, epsilon: float = 1.0) -> Tensor:
    """The naive reference: batched log-domain Sinkhorn, autograd through every iteration.

    POT's ``sinkhorn_log`` (``v = log b - LSE(-C/eps + u)``, ``u = log a - LSE(-C/eps + v)``,
    ``iterations`` times each, from ``u = 0``; loss ``<C, exp(-C/eps + u + v)>``) on all ``B*K``
    joints at once, with the same suppliers, sub-pixel demanders and Euclidean costs as
    :class:`HDMLoss`, weighted and reduced the same way (``mean`` over the batch of per-sample
    sums). Autograd keeps two ``J x 4 x N`` tensors per iteration; relu zeros give ``log 0 = -inf``
    and hence NaN gradients there (the reason the real loss differentiates implicitly).
    """
    bsz, k, height, width = hm.shape
    h = hm.reshape(bsz * k, height * width)
    r = torch.relu(h)
    a = r / r.sum(-1, keepdim=True)
    pos, mass = subpixel_demanders(kp.reshape(-1, 2).to(h.dtype))
    cost = transport_cost(pos, height, width)  # (J, 4, N)
    mr = -cost / epsilon
    loga, logb = torch.log(a), torch.log(mass)
    u = torch.zeros_like(a)
    v = torch.zeros_like(mass)
    for _ in range(iterations):
        v = logb - torch.logsumexp(mr + u[:, None, :], dim=2)
        u = loga - torch.logsumexp(mr + v[:, :, None], dim=1)
    plan = torch.exp(mr + u[:, None, :] + v[:, :, None])
    per_joint = (plan * cost).sum((1, 2)) * w.reshape(-1).to(h.dtype)
    return per_joint.reshape(bsz, k).sum(1).mean()


def _naive_step(hm: Tensor, kp: Tensor, w: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    x = hm.detach().requires_grad_(True)
    loss = naive_sinkhorn_loss(x, kp, w, iterations)
    loss.backward()
    return loss.detach(), x.grad


def marginal_errors(hm: Tensor, kp: Tensor, iterations: Sequence[int], dtype: torch.dtype,
                    epsilon: float = 1.0) -> dict[str, Any]:
    """``max |s_m - b_m|`` of the potentials our solver returns, solved in ``dtype``, evaluated in float64."""
    bsz, k, height, width = hm.shape
    h = hm.reshape(bsz * k, height * width).to(dtype)
    r = torch.relu(h)
    total = r.sum(-1, keepdim=True)
    live = (total > 0).reshape(-1)
    a = torch.where(total > 0, r / total.clamp_min(torch.finfo(dtype).tiny), 1.0 / r.shape[-1])
    pos, mass = subpixel_demanders(kp.reshape(-1, 2).to(dtype))
    a64, pos64 = a.double(), pos.double()
    out: dict[str, Any] = {}
    for n in iterations:
        res = sinkhorn_potentials(a, pos, mass, height, width, epsilon, int(n))
        q, _ = transport_plan(pos64, res.active, res.g.double(), height, width, epsilon, res.factor_path)
        s = torch.bmm(q, a64[..., None])[..., 0]
        del q
        b = torch.where(res.active, mass.double(), torch.zeros((), dtype=torch.float64, device=mass.device))
        b = b / b.sum(-1, keepdim=True)
        err = torch.where(res.active & live[:, None], (s - b).abs(), torch.zeros_like(s)).amax()
        out[str(n)] = {"error_float64_eval": float(err), "solver_reported": float(res.marginal_error),
                       "iterations_run": int(res.iterations_run)}
    return out


# ----------------------------------------------------------------------------------------------
# one size on one device


def _naive_batch(batch: int, joints: int, pixels: int, itemsize: int, n2: int, budget: int) -> int:
    """Largest ``batch / 2^k`` whose autograd record (~2 ``J x 4 x N`` tensors per iteration) fits ``budget``."""
    b = batch
    while b > 1 and 2 * b * joints * 4 * pixels * itemsize * (n2 + 2) > budget:
        b = max(1, b // 2)
    return b


def _ours_memory(hm: torch.Tensor, kp: torch.Tensor, w: torch.Tensor, device: torch.device,
                 memory_iterations: Sequence[int], full_loop_memory: bool) -> dict[str, Any]:
    """Peak extra memory of our loss at several iteration counts, with the early stop and (optionally)
    the full loop: the claim checked is that it does not grow with the iteration count."""
    hm_bytes = hm.numel() * hm.element_size()
    mem: dict[str, Any] = {"method": ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                                      "torch profiler allocator events (profile_memory=True), running-sum peak")}
    peaks, flat = [], True
    for mode in (("early_stop", "full_loop") if full_loop_memory else ("early_stop",)):
        per_n, mode_peaks = {}, set()
        for n in memory_iterations:
            fn = HDMLoss(iterations=int(n))
            fn._early_stop = mode == "early_stop"
            peak = peak_extra_bytes(lambda: _hdm_step(fn, hm, kp, w)[1], device)
            per_n[str(n)] = {"peak_extra_bytes": peak, "ratio_to_heatmap": peak / hm_bytes,
                             "iterations_run": int(fn.last_iterations_run)}
            peaks.append(peak)
            mode_peaks.add(peak)
        mem[mode] = per_n
        flat = flat and len(mode_peaks) == 1
    mem["peak_extra_bytes"] = max(peaks)
    mem["ratio_to_heatmap"] = max(peaks) / hm_bytes
    # Within each mode the same peak for every iteration count (the early stop adds a small ring
    # of past states, 65 x J x M, that the full loop does not keep).
    mem["independent_of_iterations"] = flat
    return mem


def _naive_extrapolation(t_n: dict[int, float], iterations: int, n1: int, n2: int) -> tuple[float, str]:
    """The naive solver's time at ``iterations``, extrapolated from two measured counts, and how: the
    two-point line, or proportional scaling when timing noise makes its slope not positive."""
    slope = (t_n[n2] - t_n[n1]) / (n2 - n1)
    if slope > 0:
        t_extrap = t_n[n2] + (iterations - n2) * slope
        method = f"t({iterations}) = t({n2}) + ({iterations} - {n2}) * (t({n2}) - t({n1})) / ({n2} - {n1})"
    else:  # timing noise: fall back to proportional scaling
        t_extrap = t_n[n2] * iterations / n2
        method = f"t({iterations}) = t({n2}) * {iterations} / {n2} (the two-point slope was not positive)"
    return t_extrap, method


def _naive_reference(hm: torch.Tensor, kp: torch.Tensor, w: torch.Tensor, *, batch: int, joints: int,
                     height: int, width: int, iterations: int, repeats: int, device: torch.device,
                     naive_iterations: tuple[int, int], naive_memory_budget: int) -> dict[str, Any]:
    """The naive (autograd through every iteration) solver, measured where it fits (fewer people, two
    iteration counts) and extrapolated to the full batch and count, with its loss next to ours."""
    n1, n2 = naive_iterations
    nb = _naive_batch(batch, joints, height * width, hm.element_size(), n2, naive_memory_budget)
    sub = (hm[:nb], kp[:nb], w[:nb])
    t_n = {}
    for n in (n1, n2):
        t_n[n] = _median(time_call(lambda: _naive_step(*sub, n), repeats, device))
    batch_scale = batch / nb
    t_extrap, method = _naive_extrapolation(t_n, iterations, n1, n2)
    mem_n = {n: peak_extra_bytes(lambda: _naive_step(*sub, n)[1], device) for n in (n1, n2)}
    per_iter = (mem_n[n2] - mem_n[n1]) / (n2 - n1)
    naive_loss, naive_grad = _naive_step(*sub, n2)
    ours_sub, _ = _hdm_step(HDMLoss(iterations=iterations), *sub)
    return {
        "measured_batch": nb,
        "measured_iterations": [n1, n2],
        "measured_fwd_bwd_s": {str(n1): t_n[n1], str(n2): t_n[n2]},
        "iteration_scaling": method,
        "batch_scaling": (f"x {batch_scale:g} (measured at batch {nb}, scaled linearly to {batch})"
                          if nb != batch else "none (measured at the full batch)"),
        "fwd_bwd_s_extrapolated": t_extrap * batch_scale,
        "fwd_bwd_s_proportional": t_n[n2] * iterations / n2 * batch_scale,
        "peak_extra_bytes_measured": {str(n1): mem_n[n1], str(n2): mem_n[n2]},
        "bytes_per_iteration": per_iter,
        "peak_extra_bytes_extrapolated_full_batch": (mem_n[n2] + (iterations - n2) * per_iter) * batch_scale,
        "loss_at_measured_iterations": float(naive_loss),
        "ours_loss_same_joints": float(ours_sub),
        "loss_relative_difference": abs(float(naive_loss) - float(ours_sub)) / max(abs(float(ours_sub)), 1e-30),
        "gradient_finite": bool(torch.isfinite(naive_grad).all()),
    }


def bench_size(label: str, height: int, width: int, *, batch: int, joints: int, iterations: int,
               repeats: int, device: torch.device, naive_iterations: tuple[int, int],
               naive_memory_budget: int, memory_iterations: Sequence[int], full_loop_memory: bool,
               marginal_iterations: Sequence[int], seed: int = 0) -> dict[str, Any]:
    dtype = torch.float32
    hm, kp, w = make_inputs(batch, joints, height, width, dtype=dtype, device=device, seed=seed)
    hm_bytes = hm.numel() * hm.element_size()
    row: dict[str, Any] = {"label": label, "height": height, "width": width, "batch": batch, "joints": joints,
                           "heatmap_bytes": hm_bytes, "relu_zero_fraction": float((hm <= 0).double().mean())}

    # ours: time
    loss_fn = HDMLoss(iterations=iterations)
    times = time_call(lambda: _hdm_step(loss_fn, hm, kp, w), repeats, device)
    loss_ours, _ = _hdm_step(loss_fn, hm, kp, w)
    ours = {"fwd_bwd_s": _median(times), "times_s": times, "iterations": iterations,
            "iterations_run": int(loss_fn.last_iterations_run), "loss": float(loss_ours),
            "dead_joints": int(loss_fn.last_dead_joints)}

    # ours: memory at several iteration counts
    mem = _ours_memory(hm, kp, w, device, memory_iterations, full_loop_memory)
    ours["memory"] = mem
    row["ours"] = ours

    # naive reference
    naive = _naive_reference(hm, kp, w, batch=batch, joints=joints, height=height, width=width,
                             iterations=iterations, repeats=repeats, device=device,
                             naive_iterations=naive_iterations, naive_memory_budget=naive_memory_budget)
    row["naive"] = naive
    row["ratio_naive_over_ours"] = naive["fwd_bwd_s_extrapolated"] / ours["fwd_bwd_s"]

    # accuracy of the potentials
    row["marginal_error"] = {str(dt).replace("torch.", ""): marginal_errors(hm, kp, marginal_iterations, dt)
                             for dt in (torch.float32, torch.float64)}
    return row


# ----------------------------------------------------------------------------------------------
# demo training step: HDM vs MSE


def _demo_batch(cfg: dict[str, Any], size: int) -> tuple[dict[str, Tensor], str]:
    """The first ``size`` training samples of the demo dataset (synthetic tensors if it is absent)."""

    try:
        recs = builders.records(cfg, "train")[:size]
        ds = builders.dataset(cfg, recs, train=True)
        ds.set_epoch(1)
        return default_collate([ds[i] for i in range(len(ds))]), f"demo dataset ({len(ds)} training samples)"
    except (PipelineError, OSError, ValueError, KeyError):
        pass
    gen = torch.Generator().manual_seed(cfg["seed"])
    w_in, h_in = cfg["data"]["input_size"]
    w_hm, h_hm = cfg["data"]["heatmap_size"]
    k = builders.joint_set(cfg).num_joints
    batch = {"image": torch.randn(size, 3, h_in, w_in, generator=gen),
             "keypoints": torch.rand(size, k, 2, generator=gen) * torch.tensor([w_hm - 1.0, h_hm - 1.0]),
             "weight": torch.ones(size, k, 1),
             "target": torch.rand(size, k, h_hm, w_hm, generator=gen)}
    return batch, "synthetic tensors (demo dataset not found)"


def demo_training_step(params: Mapping[str, Any], *, profile: str = "demo", repeats: int = 5,
                       runs: tuple[str, str] = ("coco_hrnet_w48_hdm", "coco_hrnet_w48_mse")) -> dict[str, Any]:
    """Median time of one training step (forward, backward, Adam) of each run's model on one demo batch."""
    dev = torch.device("cpu")
    out: dict[str, Any] = {"profile": profile, "runs": {}}
    for run in runs:
        cfg = resolve_run(dict(params), run, profile)
        torch.manual_seed(cfg["seed"])
        net = builders.model(cfg).to(dev, memory_format=torch.channels_last)
        net.train()
        crit = builders.loss(cfg).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=cfg["train"]["lr"], weight_decay=cfg["train"]["weight_decay"])
        batch, source = _demo_batch(cfg, cfg["train"]["batch_size"])

        def step() -> None:
            loss = forward_loss(net, crit, batch, cfg, dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        times = time_call(step, repeats, dev, warmup=2)
        entry = {"loss": cfg["loss"], "arch": cfg["arch"], "batch_size": int(batch["image"].shape[0]),
                 "input_size": cfg["data"]["input_size"], "heatmap_size": cfg["data"]["heatmap_size"],
                 "step_s": _median(times), "times_s": times, "batch_source": source}
        if cfg["loss"] == "hdm":
            entry["hdm_iterations"] = cfg["hdm"]["iterations"]
            entry["iterations_run"] = int(getattr(crit, "last_iterations_run", 0))
        out["runs"][run] = entry
        summary = Paths(profile).run_dir(run, cfg["seed"]) / "train_summary.json"
        if summary.is_file():
            try:
                hist = json.loads(summary.read_text())["history"]
                entry["recorded_epoch_time_s"] = _median([float(h["epoch_time_s"]) for h in hist])
                entry["recorded_epochs"] = len(hist)
            except (ValueError, KeyError, TypeError):
                pass
    hdm, mse = (out["runs"][r] for r in runs)
    out["hdm_over_mse_step"] = hdm["step_s"] / mse["step_s"]
    if "recorded_epoch_time_s" in hdm and "recorded_epoch_time_s" in mse:
        out["hdm_over_mse_recorded_epoch"] = hdm["recorded_epoch_time_s"] / mse["recorded_epoch_time_s"]
        out["recorded_note"] = ("median epoch time of the trained demo runs (train_summary.json), measured when "
                                "they were trained, with the profile's thread count; validation excluded")
    return out


# ----------------------------------------------------------------------------------------------
# environment, report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    env = {"device": device.type, "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
           "python": sys.version.split()[0], "platform": platform.platform(),
           "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":  # pragma: no cover - CUDA only: the GPU's name and CUDA version
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda_version"] = torch.version.cuda
    else:
        env["device_name"] = env["cpu_model"]
    return env


def _targets(rows: Mapping[str, Any], device: torch.device, demo: Mapping[str, Any] | None) -> dict[str, Any]:
    t: dict[str, Any] = {"size": TARGETS["size"]}
    row = rows.get(TARGETS["size"])
    if row is not None:
        key = "cuda_fwd_bwd_s" if device.type == "cuda" else "cpu_fwd_bwd_s"
        t["fwd_bwd_s"] = {"target": TARGETS[key], "measured": row["ours"]["fwd_bwd_s"],
                          "met": row["ours"]["fwd_bwd_s"] <= TARGETS[key]}
        if device.type == "cpu":
            t["speedup_vs_naive"] = {"target": TARGETS["speedup_vs_naive"], "measured": row["ratio_naive_over_ours"],
                                     "met": row["ratio_naive_over_ours"] >= TARGETS["speedup_vs_naive"]}
        ratio = row["ours"]["memory"]["ratio_to_heatmap"]
        t["peak_extra_memory_ratio"] = {"target": TARGETS["peak_extra_memory_ratio"], "measured": ratio,
                                        "met": ratio <= TARGETS["peak_extra_memory_ratio"]}
    t["memory_independent_of_iterations"] = all(r["ours"]["memory"]["independent_of_iterations"] for r in rows.values())
    if demo is not None:
        t["hdm_over_mse_training_step"] = {"target": TARGETS["hdm_over_mse_training_step"],
                                           "measured": demo["hdm_over_mse_step"],
                                           "met": demo["hdm_over_mse_step"] <= TARGETS["hdm_over_mse_training_step"]}
    return t


def _table(report: Mapping[str, Any]) -> str:
    lines = [f"HDM loss benchmark on {report['environment']['device_name']} "
             f"({report['environment']['torch_threads']} threads, torch {report['environment']['torch_version']}), "
             f"B={report['settings']['batch']} K={report['settings']['joints']} "
             f"iterations={report['settings']['iterations']} float32",
             f"{'size':>8} {'ours s':>9} {'run':>5} {'mem x':>6} {'naive s*':>10} {'ratio':>8} "
             f"{'err f32':>9} {'err f64':>9}"]
    it = str(report["settings"]["iterations"])
    for label, r in report["sizes"].items():
        me = r["marginal_error"]
        e32 = me["float32"].get(it, next(iter(me["float32"].values())))["error_float64_eval"]
        e64 = me["float64"].get(it, next(iter(me["float64"].values())))["error_float64_eval"]
        lines.append(f"{label:>8} {r['ours']['fwd_bwd_s']:9.4f} {r['ours']['iterations_run']:5d} "
                     f"{r['ours']['memory']['ratio_to_heatmap']:6.2f} {r['naive']['fwd_bwd_s_extrapolated']:10.2f} "
                     f"{r['ratio_naive_over_ours']:8.0f} {e32:9.2e} {e64:9.2e}")
    lines.append("  * naive: extrapolated from "
                 f"{report['settings']['naive_iterations']} iterations (see naive.iteration_scaling/batch_scaling)")
    demo = report.get("demo_training_step")
    if demo:
        r = demo["runs"]
        parts = ", ".join(f"{k}: {v['step_s']:.3f} s" for k, v in r.items())
        lines.append(f"demo training step ({parts}): HDM/MSE = {demo['hdm_over_mse_step']:.2f}")
        if "hdm_over_mse_recorded_epoch" in demo:
            lines.append(f"recorded demo epochs: HDM/MSE = {demo['hdm_over_mse_recorded_epoch']:.2f}")
    for k, v in report["targets"].items():
        if isinstance(v, dict):
            lines.append(f"target {k}: {v['measured']:.4g} vs {v['target']:g} -> {'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)


def _size_items(sizes: Sequence[str] | Mapping[str, tuple[int, int]] | None) -> list[tuple[str, tuple[int, int]]]:
    if sizes is None:
        sizes = DEFAULT_SIZES
    if isinstance(sizes, Mapping):
        return [(str(k), (int(v[0]), int(v[1]))) for k, v in sizes.items()]
    return [parse_size(s) for s in sizes]


def _loss_settings(batch: int, joints: int, iterations: int, repeats: int, naive_iterations: tuple[int, int],
                   naive_memory_budget: int, memory_iterations: Sequence[int],
                   marginal_iterations: Sequence[int]) -> dict[str, Any]:
    """The report's ``settings``: what was measured and how, so a reader can rerun it."""
    n1, n2 = naive_iterations
    return {"batch": batch, "joints": joints, "iterations": iterations, "repeats": repeats,
            "epsilon": 1.0, "dtype": "float32", "demanders": "subpixel",
            "heatmaps": f"randn + {_ZERO_SHIFT} (about 40 % relu zeros), dots uniform in the grid, weights 1",
            "timing": "median wall time of `repeats` forward+backward calls after one warm-up",
            "naive_iterations": [n1, n2], "naive_memory_budget_bytes": naive_memory_budget,
            "memory_iterations": list(memory_iterations), "marginal_iterations": list(marginal_iterations)}


def _bench_devices(cuda: bool | None) -> list[torch.device]:
    """The CPU, and CUDA when asked for (``None``: whenever a device is visible)."""
    devices = [torch.device("cpu")]
    want_cuda = torch.cuda.is_available() if cuda is None else cuda
    if want_cuda and torch.cuda.is_available():  # pragma: no cover - CUDA only: a CUDA device is visible
        devices.append(torch.device("cuda"))
    return devices


def _demo_report(params: Mapping[str, Any] | None, profile: str, repeats: int) -> dict[str, Any]:
    """The demo training step's timing, with ``params.yaml`` read only when the caller gave none."""
    if params is None:
        params = load_params()
    return demo_training_step(params, profile=profile, repeats=max(10, 3 * repeats))


def _print_summary(report: dict[str, Any], reports: dict[str, dict[str, Any]], out_dir: Path) -> None:
    """The tables of each measured device on stdout, and where the report went."""
    print(_table(report))
    if "cuda" in reports:  # pragma: no cover - CUDA only: measured on a CUDA device
        print(_table(reports["cuda"]))
    else:
        print(f"CUDA: skipped ({report['cuda']['skipped']})")
    print(f"wrote {out_dir / 'loss_cpu.json'}")


def run_loss_benchmark(sizes: Sequence[str] | Mapping[str, tuple[int, int]] | None = None, batch: int = 32,
                       joints: int = 17, iterations: int = 1000, threads: int | None = None, repeats: int = 3,
                       out_dir: str | os.PathLike = Path("reports/benchmarks"), *,
                       naive_iterations: tuple[int, int] = (10, 20), naive_memory_budget: int = 1 << 30,
                       memory_iterations: Sequence[int] = (500, 1000, 1500), full_loop_memory: bool = True,
                       marginal_iterations: Sequence[int] = (500, 1000, 1500),
                       demo_step: bool = True, params: Mapping[str, Any] | None = None, profile: str = "demo",
                       cuda: bool | None = None, verbose: bool = True) -> dict[str, Any]:
    """Run the loss benchmark (see the module docstring); write ``loss_cpu.json`` (+ ``loss_cuda.json``).

    ``sizes``: names (``demo``, ``64x48``, ``96x72``) or ``"HxW"`` strings, or ``{label: (H, W)}``.
    ``threads``: ``torch.set_num_threads`` for the run (restored afterwards); ``None`` keeps the
    current setting. ``demo_step``: also time the demo HRNet-W48 training step (needs ``params``,
    default ``params.yaml``). ``cuda``: ``None`` measures CUDA when a device is visible. Returns the
    CPU report (its ``cuda`` entry holds the CUDA report or why it was skipped).
    """
    n1, n2 = (int(v) for v in naive_iterations)
    if not 1 <= n1 < n2:
        raise ValueError(f"naive_iterations must be two increasing counts >= 1, got {naive_iterations!r}")
    items = _size_items(sizes)
    out_dir = Path(out_dir)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        settings = _loss_settings(batch, joints, iterations, repeats, (n1, n2), naive_memory_budget,
                                  memory_iterations, marginal_iterations)
        devices = _bench_devices(cuda)
        reports: dict[str, dict[str, Any]] = {}
        for dev in devices:
            rows = {}
            for label, (h, w) in items:
                rows[label] = bench_size(label, h, w, batch=batch, joints=joints, iterations=iterations,
                                         repeats=repeats, device=dev, naive_iterations=(n1, n2),
                                         naive_memory_budget=naive_memory_budget,
                                         memory_iterations=memory_iterations, full_loop_memory=full_loop_memory,
                                         marginal_iterations=marginal_iterations)
            reports[dev.type] = {"benchmark": "hdm_loss", "created_unix": time.time(),
                                 "environment": environment(dev), "settings": settings, "sizes": rows}
        demo = _demo_report(params, profile, repeats) if demo_step else None
        report = reports["cpu"]
        if demo is not None:
            report["demo_training_step"] = demo
        report["targets"] = _targets(report["sizes"], torch.device("cpu"), demo)
        if "cuda" in reports:  # pragma: no cover - CUDA only: measured on a CUDA device
            rc = reports["cuda"]
            rc["targets"] = _targets(rc["sizes"], torch.device("cuda"), None)
            report["cuda"] = rc
            io.write_json(out_dir / "loss_cuda.json", rc)
        else:
            report["cuda"] = {"skipped": ("disabled (cuda=False)" if cuda is False else "no CUDA device visible")}
        io.write_json(out_dir / "loss_cpu.json", report)
        if verbose:
            _print_summary(report, reports, out_dir)
        return report
    finally:
        torch.set_num_threads(old_threads)
