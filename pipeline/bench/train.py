"""Benchmark of training steps at each run's own configuration: images/s, peak memory, GPU-hours.

``python -m pipeline --profile paper bench train [--runs RUN ...] [--iters 200] [--warmup 20]``
writes ``reports/benchmarks/train_<profile>_<device>.json`` (atomically).

Why: the paper profile's cost (GPU-hours per table) and memory per GPU cannot be read from the paper;
they come from a short run of each architecture at its paper input size and per-GPU batch. Per run
(default: the COCO runs of Table 1, one MSE and one HDM run per architecture):

* the run's model (randomly initialised: ImageNet weights change no step's cost), loss, optimizer
  and mixed-precision setting, built by the training code itself (``engine.builders``,
  ``engine.train.train_step``, ``amp_settings``), on the profile's device (or ``--device``);
* one fixed batch of ``train.batch_size`` (per GPU) random images at the input size, with random
  keypoints inside the heatmap and their Gaussian targets (the codec of the MSE runs), so the step
  costs what a real step costs without reading data (the data path has its own benchmark,
  ``bench data``);
* ``warmup`` untimed steps (cuDNN autotuning, allocator growth), then ``iters`` timed steps, the
  device synchronised before and after: ``images_per_s = iters * batch / elapsed``;
* CUDA: ``peak_memory_mb`` = ``torch.cuda.max_memory_allocated`` over the timed steps (the memory a
  GPU needs for this batch) and ``peak_reserved_mb``; CPU: the process's peak RSS so far
  (``ru_maxrss``, cumulative over the runs of one call, so only the first run's is its own);
* the reference in the same call: each HDM run is divided by the MSE run of the same dataset and
  architecture (``vs_mse``: images/s ratio, and on CUDA the peak-memory ratio);
* ``est_gpu_hours = train.epochs * train_samples / images_per_s / 3600`` per run, one GPU's
  throughput, which assumes DDP scales linearly (the GPU-hours stay the same on N GPUs, the wall
  time divides by N); ``train_samples`` are the reference loaders' training sets (HRNet's COCO
  train2017 person instances and MPII train samples). Per table, the sum over its measured runs.

One process, one GPU: DDP's gradient all-reduce is not included. No test asserts on timings;
``tests/test_bench.py`` checks the JSON on the smoke profile on the CPU.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import io
from ..codecs import gaussian
from ..config import resolve_run, run_names
from ..engine import builders
from ..engine.train import amp_settings, train_step
from ..errors import PipelineError
from ..report.paper_numbers import TABLES, get_table
from .loss import environment, sync_device

# Training-set sizes of the reference data loaders (HRNet's logs: "=> load 149813 samples" for COCO
# train2017 person instances with keypoints, 22246 for MPII train).
TRAIN_SAMPLES = {"coco": 149_813, "mpii": 22_246}


def default_runs(params: Mapping[str, Any]) -> list[str]:
    """The COCO runs of Table 1: every architecture with MSE and with HDM."""
    return [r for r in get_table(1).runs() if r in params["runs"]]


def _batch(cfg: dict[str, Any], dev: torch.device) -> dict[str, torch.Tensor]:
    gen = np.random.default_rng(cfg["seed"])
    b = int(cfg["train"]["batch_size"])
    w_in, h_in = cfg["data"]["input_size"]
    w_hm, h_hm = cfg["data"]["heatmap_size"]
    k = builders.joint_set(cfg).num_joints
    kp = gen.uniform(0, 1, (b, k, 2)) * np.array([w_hm - 1.0, h_hm - 1.0])
    targets, weights = zip(*(gaussian.encode(kp[i], np.ones(k, np.float32), (w_hm, h_hm), cfg["data"]["sigma"])
                             for i in range(b)))
    image = torch.from_numpy(gen.standard_normal((b, 3, h_in, w_in), dtype=np.float32))
    return {"image": image.to(dev),
            "keypoints": torch.from_numpy(kp.astype(np.float32)).to(dev),
            "target": torch.from_numpy(np.stack(targets).astype(np.float32)).to(dev),
            "weight": torch.from_numpy(np.stack(weights).astype(np.float32)).to(dev)}


def bench_run(cfg: dict[str, Any], dev: torch.device, *, iters: int, warmup: int) -> dict[str, Any]:
    """Time ``iters`` training steps of one run after ``warmup`` untimed ones."""
    torch.manual_seed(cfg["seed"])
    # ImageNet weights change no step's cost, and a GPU node may have no internet: random init
    cfg = {**cfg, "model": {**cfg["model"], "pretrained": False, "weights": None}}
    t = builders.with_train_defaults(cfg)["train"]
    net = builders.model(cfg).to(dev, memory_format=torch.channels_last).train()
    crit = builders.loss(cfg).to(dev)
    opt = builders.optimizer(cfg, net)
    amp_dtype, scaler = amp_settings(t, dev)
    batch = _batch(cfg, dev)

    def step() -> torch.Tensor:
        return train_step(net, crit, opt, scaler, batch, cfg, dev, amp_dtype)

    for _ in range(warmup):
        step()
    sync_device(dev)
    if dev.type == "cuda":  # pragma: no cover - CUDA only: GPU memory statistics
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(iters):
        loss = step()
    sync_device(dev)
    elapsed = time.perf_counter() - start
    b = int(batch["image"].shape[0])
    entry: dict[str, Any] = {
        "dataset": cfg["dataset"], "arch": cfg["arch"], "loss": cfg["loss"], "model": cfg["model"],
        "input_size": list(cfg["data"]["input_size"]), "heatmap_size": list(cfg["data"]["heatmap_size"]),
        "batch_size": b, "optimizer": t["optimizer"], "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "warmup": warmup, "iters": iters, "elapsed_s": elapsed, "step_ms": 1000 * elapsed / iters,
        "images_per_s": iters * b / elapsed, "final_loss": float(loss.detach()), "epochs": int(t["epochs"]),
    }
    if cfg["loss"] == "hdm":
        entry["hdm_iterations"] = int(cfg["hdm"]["iterations"])
    if cfg.get("codec") is not None:  # a UDP run: an MSE run, but not the baseline HDM runs compare with
        entry["codec"] = cfg["codec"]
    if dev.type == "cuda":  # pragma: no cover - CUDA only: GPU memory statistics
        entry["peak_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        entry["peak_reserved_mb"] = torch.cuda.max_memory_reserved(dev) / 2**20
    else:
        entry["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    samples = TRAIN_SAMPLES[cfg["dataset"]]
    entry["train_samples"] = samples
    entry["est_gpu_hours"] = entry["epochs"] * samples / entry["images_per_s"] / 3600
    return entry


def _compare_to_mse(runs: dict[str, dict[str, Any]]) -> None:
    """Each HDM run against the MSE run of the same dataset, architecture and heatmap size (a stride-8
    study run against its stride-8 baseline), measured in the same call; runs with a codec of their own
    (UDP) are not baselines."""
    def key(r: dict[str, Any]) -> tuple[str, str, tuple[int, ...]]:
        return r["dataset"], r["arch"], tuple(r["heatmap_size"])

    mse = {key(r): name for name, r in runs.items() if r["loss"] == "mse" and "codec" not in r}
    for r in runs.values():
        ref = mse.get(key(r))
        if r["loss"] != "hdm" or ref is None:
            continue
        m = runs[ref]
        r["vs_mse"] = {"run": ref, "images_per_s_ratio": r["images_per_s"] / m["images_per_s"]}
        if "peak_memory_mb" in r:  # pragma: no cover - CUDA only: peak_memory_mb is measured on CUDA only
            r["vs_mse"]["peak_memory_ratio"] = r["peak_memory_mb"] / m["peak_memory_mb"]


def _per_table(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for table in TABLES:
        names = table.runs()
        have = [n for n in names if n in runs]
        if have:
            out[table.key] = {"runs": len(names), "measured_runs": len(have), "complete": len(have) == len(names),
                              "est_gpu_hours": sum(runs[n]["est_gpu_hours"] for n in have)}
    return out


def _table(report: Mapping[str, Any]) -> str:
    env = report["environment"]
    lines = [f"training-step benchmark: profile {report['profile']}, {env.get('device_name', env['device'])}",
             f"{'run':30} {'batch':>5} {'input':>9} {'step ms':>8} {'images/s':>9} {'peak MB':>8} "
             f"{'vs MSE':>7} {'GPU-h':>8}"]
    for name, r in report["runs"].items():
        peak = r.get("peak_memory_mb", r.get("process_peak_rss_mb", float("nan")))
        ratio = r.get("vs_mse", {}).get("images_per_s_ratio")
        lines.append(f"{name:30} {r['batch_size']:5d} {r['input_size'][0]:>4}x{r['input_size'][1]:<4} "
                     f"{r['step_ms']:8.1f} {r['images_per_s']:9.1f} {peak:8.0f} "
                     f"{'' if ratio is None else f'{ratio:.2f}':>7} {r['est_gpu_hours']:8.1f}")
    return "\n".join(lines)


def run_train_benchmark(params: Mapping[str, Any], *, profile: str, runs: Sequence[str] | None = None,
                        iters: int = 200, warmup: int = 20, device: str | None = None,
                        out_dir: Path = Path("reports/benchmarks"), progress: bool = True) -> dict[str, Any]:
    """Measure each run's training step; write and return the report (see the module docstring)."""
    if iters < 1:
        raise PipelineError("--iters", f"must be >= 1, got {iters}")
    if warmup < 0:
        raise PipelineError("--warmup", f"must be >= 0, got {warmup}")
    names = list(runs) if runs else default_runs(params)
    known = run_names(params, study=True)
    for name in names:
        if name not in known:
            raise PipelineError("--runs", f"unknown run {name!r}; see `python -m pipeline runs`")
    results: dict[str, dict[str, Any]] = {}
    dev = None
    for name in names:
        cfg = resolve_run(dict(params), name, profile)
        if device is not None:
            cfg["device"] = device
        dev = builders.device(cfg)
        if dev.type == "cpu":
            torch.set_num_threads(int(cfg["train"]["threads"]))
        results[name] = bench_run(cfg, dev, iters=iters, warmup=warmup)
        if progress:
            r = results[name]
            print(f"{name}: {r['images_per_s']:.1f} images/s ({r['step_ms']:.1f} ms/step)", flush=True)
        if dev.type == "cuda":  # pragma: no cover - CUDA only: release the GPU's cached memory
            torch.cuda.empty_cache()
    _compare_to_mse(results)
    report = {"benchmark": "train_step", "created_unix": time.time(), "profile": profile,
              "environment": environment(dev), "runs": results, "per_table": _per_table(results),
              "method": __doc__.split("\n\n", 2)[2].strip()}
    out = Path(out_dir) / f"train_{profile}_{dev.type}.json"
    io.write_json(out, report)
    if progress:
        print(_table(report))
        print(f"wrote {out}")
    report["path"] = str(out)
    return report
