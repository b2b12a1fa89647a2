"""Benchmark of training-data loading: images/s per DataLoader worker count, OpenCV threads noted.

``python -m pipeline bench data [--dataset coco|mpii] [--workers 0 1 2] [--seconds 5]`` writes
``reports/benchmarks/data_<profile>_<dataset>.json`` (atomically).

What is measured, on the training dataset of the current profile (``data/<profile>/<dataset>``,
made by the data stage; the first MSE run of that dataset in ``params.yaml`` gives the config:
Gaussian targets, the heavier of the two codecs, and the profile's augmentation):

* ``sample_time_split``: one in-process pass over ``split_samples`` training samples, timed by
  :meth:`TopDownDataset.sample` itself at each of its steps, in order: ``imread_decode`` (``cv2.imread``
  of the file, JPEG decode included), ``augment_params`` (drawing the augmentation, affine
  matrices), ``affine_warp`` (``cv2.warpAffine`` to the input size), ``colour_normalise`` (BGR->RGB,
  ImageNet normalisation, CHW), ``target_encoding`` (keypoints to the heatmap frame, visibility
  weights, Gaussian heatmaps) and ``to_tensors``. Means per sample in ms and shares of their sum;
  ``getitem_ms`` is the mean of the dataset's own ``ds[i]`` on the same samples, and
  ``matches_dataset`` checks that the timed pass gives the same image and target as ``ds[i]``.
* ``loader``: a ``torch.utils.data.DataLoader`` as training builds it (``default_collate``, batch
  size of the profile, ``pin_memory`` off, workers started per iterator, the platform's start
  method), for each worker count in ``workers``. Per count: ``warmup_batches = max(1, workers)``
  untimed batches (worker start-up, and the first burst of batches that all workers finish at the
  same moment), then ``batches`` timed ones: ``images_per_s = batches * batch_size / elapsed``.
  ``batches`` is chosen so that the in-process reference takes about ``seconds`` (from the
  per-sample time of the split pass), rounded up to a multiple of the worker count (whole rounds of
  the workers' round-robin). ``images_per_s_per_worker`` divides by the worker count (by 1 for
  ``workers = 0``: the main process is the one loader); ``ratio_vs_workers0`` divides by the
  ``workers = 0`` rate of the same run (always measured: it is the in-process reference), and
  ``ratio_per_worker`` is that ratio over the worker count (1.0 = perfect scaling).
  ``startup_s``: from creating the iterator to the first batch.

OpenCV threads. Our dataset does not call ``cv2.setNumThreads``: every process keeps OpenCV's
default pool (one thread per core) and forked workers inherit the setting (``opencv_threads``
records the value in the main process and inside a worker). PyTorch sets each worker's *torch*
threads to 1, not OpenCV's. Many code bases (MMCV/MMPose) call ``cv2.setNumThreads(0)`` to avoid
``workers x cores`` threads. ``cv2_threads`` selects what the loading processes use: ``"default"``
(the dataset as training runs it) and/or a number given to ``cv2.setNumThreads`` at the start of
every worker (``workers = 0``: in the main process, restored afterwards); each setting gets its
own ``workers = 0`` reference. The default measures both ``"default"`` and ``0``. With this
dataset's sizes (small crops, one decode per sample) OpenCV's pool rarely engages (``warpAffine``
and ``cvtColor`` split work across threads only for larger images) and JPEG decoding is
single-threaded, so the two settings measure alike within noise here; the choice is left as is.

No test asserts on timings; ``tests/test_bench.py`` checks the JSON on a tiny synthetic dataset.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .. import io
from ..config import resolve_run
from ..engine import builders
from ..errors import PipelineError
from .loss import environment as base_environment

STEPS = ("imread_decode", "augment_params", "affine_warp", "colour_normalise", "target_encoding", "to_tensors")
DEFAULT_WORKERS = (0, 1, 2)
DEFAULT_CV2_THREADS: tuple[str | int, ...] = ("default", 0)


# ----------------------------------------------------------------------------------------------
# configuration and dataset


def pick_run(params: Mapping[str, Any], dataset: str) -> str:
    """The first MSE run of ``dataset`` (Gaussian targets), else its first run."""
    runs = [(name, spec) for name, spec in params["runs"].items() if spec["dataset"] == dataset]
    if not runs:
        raise PipelineError("params.yaml: runs", f"no run uses dataset {dataset!r}")
    return next((name for name, spec in runs if spec["loss"] == "mse"), runs[0][0])


def _train_annotation(cfg: Mapping[str, Any]) -> Path:
    root = Path(cfg["data"]["root"])
    if cfg["dataset"] == "mpii":
        return root / builders.MPII_SPLITS["train"]
    return root / builders.COCO_SPLITS["train"][0]


def build_train_dataset(cfg: dict[str, Any]):
    """The training dataset of a resolved run (augmentation on, epoch 1); a one-line error if absent."""
    ann = _train_annotation(cfg)
    if not ann.is_file():
        raise PipelineError(str(cfg["data"]["root"]),
                            f"no {cfg['dataset']} training data ({ann} not found): run the data stage first, "
                            f"`python -m pipeline --profile {cfg['profile']} data --dataset {cfg['dataset']}`")
    ds = builders.dataset(cfg, builders.records(cfg, "train"), train=True)
    if len(ds) == 0:
        raise PipelineError(str(ann), "no training samples")
    ds.set_epoch(1)
    return ds


# ----------------------------------------------------------------------------------------------
# one sample, step by step


def timed_sample(ds, index: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """``ds[index]`` with the seconds each of its steps took (``TopDownDataset.sample``).

    Returns ``(seconds per step, the item)``; the item equals ``ds[index]`` (checked by the benchmark).
    """
    t: dict[str, float] = {}
    item = ds.sample(index, timings=t)
    return t, item


def sample_time_split(ds, samples: int) -> dict[str, Any]:
    """Mean time of each step of one sample over the first ``samples`` items (in-process)."""
    n = max(1, min(int(samples), len(ds)))
    per_step: dict[str, list[float]] = {k: [] for k in STEPS}
    getitem: list[float] = []
    matches = True
    shapes = set()
    for i in range(n):
        t, item = timed_sample(ds, i)
        for k in STEPS:
            per_step[k].append(t[k])
        t0 = time.perf_counter()
        ref = ds[i]
        getitem.append(time.perf_counter() - t0)
        matches = matches and all(torch.equal(item[k], ref[k]) for k in item)
        shapes.add(tuple(int(v) for v in cv2.imread(ds.records[i]["image_path"], cv2.IMREAD_UNCHANGED).shape[:2]))
    mean_ms = {k: 1e3 * statistics.fmean(v) for k, v in per_step.items()}
    total = sum(mean_ms.values())
    return {"samples": n, "mean_ms": mean_ms, "share": {k: v / total for k, v in mean_ms.items()},
            "sum_of_steps_ms": total, "getitem_ms": 1e3 * statistics.fmean(getitem),
            "matches_dataset": bool(matches),
            "source_image_sizes_hw": sorted([list(s) for s in shapes])[:8]}


# ----------------------------------------------------------------------------------------------
# DataLoader throughput


class _SetCV2Threads:
    """``worker_init_fn`` calling ``cv2.setNumThreads(n)`` in each worker (picklable for spawn)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __call__(self, worker_id: int) -> None:
        cv2.setNumThreads(self.n)


class _CV2ThreadsProbe(Dataset):
    """One item: ``cv2.getNumThreads()`` in the process that loads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return cv2.getNumThreads()


def opencv_threads_in_worker(cv2_threads: str | int = "default") -> int:
    init = None if cv2_threads == "default" else _SetCV2Threads(int(cv2_threads))
    loader = DataLoader(_CV2ThreadsProbe(), batch_size=None, num_workers=1, worker_init_fn=init)
    return int(next(iter(loader)))


def measure_loader(ds, workers: int, *, batch_size: int, batches: int, cv2_threads: str | int = "default",
                   seed: int = 0) -> dict[str, Any]:
    """Images/s of a DataLoader with ``workers`` workers over ``batches`` timed batches (after a warm-up)."""
    warmup = max(1, workers)
    if workers > 0:
        batches = int(math.ceil(batches / workers) * workers)
    sampler = RandomSampler(ds, replacement=False, num_samples=(warmup + batches) * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    init = None if cv2_threads == "default" or workers == 0 else _SetCV2Threads(int(cv2_threads))
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=False, worker_init_fn=init)
    old = cv2.getNumThreads()
    if workers == 0 and cv2_threads != "default":
        cv2.setNumThreads(int(cv2_threads))
    try:
        t_start = time.perf_counter()
        it = iter(loader)
        first = next(it)
        startup = time.perf_counter() - t_start
        for _ in range(warmup - 1):
            next(it)
        t0 = time.perf_counter()
        images = 0
        for _ in range(batches):
            images += int(next(it)["image"].shape[0])
        elapsed = time.perf_counter() - t0
        del it
    finally:
        cv2.setNumThreads(old)
    rate = images / elapsed
    return {"workers": workers, "cv2_threads": cv2_threads, "warmup_batches": warmup, "batches": batches,
            "batch_size": batch_size, "images": images, "image_shape": list(first["image"].shape[1:]),
            "startup_s": startup, "elapsed_s": elapsed, "images_per_s": rate, "batches_per_s": batches / elapsed,
            "images_per_s_per_worker": rate / max(1, workers)}


# ----------------------------------------------------------------------------------------------
# environment, report


def environment() -> dict[str, Any]:
    env = base_environment(torch.device("cpu"))
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    env.update({"usable_cpus": usable, "opencv_version": cv2.__version__, "opencv_threads": cv2.getNumThreads(),
                "opencv_optimized": bool(cv2.useOptimized()), "numpy_version": np.__version__,
                "multiprocessing_start_method": torch.multiprocessing.get_start_method()})
    return env


def _table(report: Mapping[str, Any]) -> str:
    s, env, split = report["settings"], report["environment"], report["sample_time_split"]
    lines = [f"data loading benchmark: {s['profile']} {s['dataset']} (run {s['run']}, {s['codec']} targets), "
             f"{s['samples']} samples, batch {s['batch_size']}, input {s['input_size'][0]}x{s['input_size'][1]} (WxH), "
             f"{env['device_name']} ({env['usable_cpus']} usable CPUs), OpenCV {env['opencv_version']}",
             f"one sample in-process (mean of {split['samples']}): getitem {split['getitem_ms']:.3f} ms = "
             + ", ".join(f"{k} {v:.3f} ms ({100 * split['share'][k]:.0f}%)" for k, v in split["mean_ms"].items()),
             f"{'cv2 threads':>11} {'workers':>7} {'batches':>7} {'images/s':>9} {'per worker':>10} "
             f"{'vs 0':>6} {'startup s':>9}"]
    for r in report["loader"]:
        lines.append(f"{str(r['cv2_threads']):>11} {r['workers']:7d} {r['batches']:7d} {r['images_per_s']:9.1f} "
                     f"{r['images_per_s_per_worker']:10.1f} {r['ratio_vs_workers0']:6.2f} {r['startup_s']:9.3f}")
    return "\n".join(lines)


def _check_workers(workers: Sequence[int]) -> list[int]:
    counts = sorted({int(w) for w in workers} | {0})
    if counts[0] < 0:
        raise PipelineError("--workers", f"worker counts must be >= 0, got {list(workers)}")
    return counts


def _check_cv2_threads(values: Sequence[str | int]) -> list[str | int]:
    out: list[str | int] = []
    for v in values:
        if str(v) == "default":
            v = "default"
        else:
            try:
                v = int(v)
            except ValueError:
                raise PipelineError("--cv2-threads", f"'default' or an integer >= 0, got {v!r}") from None
            if v < 0:
                raise PipelineError("--cv2-threads", f"'default' or an integer >= 0, got {v}")
        if v not in out:
            out.append(v)
    return out or ["default"]


def _opencv_threads(modes: list) -> dict[str, Any]:
    """OpenCV's thread count in the main process and in a worker under each setting: the report says
    what the measured loaders actually ran with."""
    return {"main_process": cv2.getNumThreads(),
            "in_worker": {str(m): opencv_threads_in_worker(m) for m in modes},
            "dataset_sets_threads": False,
            "note": "the dataset leaves OpenCV's thread pool alone; forked workers inherit the main process's "
                    "setting; torch sets only its own threads to 1 in workers"}


def _loader_rows(ds: Any, counts: list[int], modes: list, *, batch_size: int, batches: int, seed: int,
                 verbose: bool) -> list[dict[str, Any]]:
    """One measured row per OpenCV setting and worker count, each with its speed relative to the
    in-process loader (worker count 0, measured first) of the same setting."""
    rows: list[dict[str, Any]] = []
    for mode in modes:
        ref = None
        for w in counts:
            row = measure_loader(ds, w, batch_size=batch_size, batches=batches, cv2_threads=mode, seed=seed)
            if w == 0:
                ref = row["images_per_s"]
            row["ratio_vs_workers0"] = row["images_per_s"] / ref
            row["ratio_per_worker"] = row["ratio_vs_workers0"] / max(1, w)
            rows.append(row)
            if verbose:
                print(f"  cv2 threads {mode}, workers {w}: {row['images_per_s']:.1f} images/s", flush=True)
    return rows


def run_data_benchmark(params: Mapping[str, Any], *, dataset: str = "coco", profile: str | None = None,
                       workers: Sequence[int] = DEFAULT_WORKERS, seconds: float = 5.0, batches: int | None = None,
                       batch_size: int | None = None, split_samples: int = 64,
                       cv2_threads: Sequence[str | int] = DEFAULT_CV2_THREADS, root: str | os.PathLike | None = None,
                       out_dir: str | os.PathLike = Path("reports/benchmarks"), verbose: bool = True) -> dict[str, Any]:
    """Run the data-loading benchmark (see the module docstring); write ``data_<profile>_<dataset>.json``.

    ``workers``: DataLoader worker counts (0, the in-process reference, is always added).
    ``seconds``: about how long each timed loop takes in-process (sets ``batches``, the same for every
    count up to rounding to whole rounds of the workers); ``batches`` fixes it instead.
    ``batch_size``: default the profile's training batch. ``root``: the dataset folder (default
    ``data/<profile>/<dataset>``). ``cv2_threads``: ``"default"`` and/or integers (see the docstring).
    """
    profile = profile or params["profile"]
    counts = _check_workers(workers)
    modes = _check_cv2_threads(cv2_threads)
    if batches is None and not seconds > 0:
        raise PipelineError("--seconds", f"must be > 0, got {seconds}")
    if batches is not None and batches < 1:
        raise PipelineError("--batches", f"must be >= 1, got {batches}")
    run = pick_run(params, dataset)
    cfg = resolve_run(dict(params), run, profile)
    if root is not None:
        cfg["data"]["root"] = str(root)
    ds = build_train_dataset(cfg)
    bs = int(batch_size or cfg["train"]["batch_size"])
    if bs < 1:
        raise PipelineError("--batch-size", f"must be >= 1, got {bs}")

    split = sample_time_split(ds, split_samples)
    if batches is None:
        per_batch_s = split["getitem_ms"] * 1e-3 * bs
        batches = max(2, int(math.ceil(seconds / per_batch_s)))
    settings = {"profile": profile, "dataset": dataset, "run": run, "codec": ds.codec, "root": str(cfg["data"]["root"]),
                "samples": len(ds), "batch_size": bs, "input_size": list(ds.input_size),
                "heatmap_size": list(ds.heatmap_size), "augmentation": {k: v for k, v in ds.aug_cfg.items()
                                                                        if k not in ("flip_pairs", "upper_body_ids")},
                "seconds": seconds, "batches": int(batches), "worker_counts": counts, "cv2_threads": modes,
                "pin_memory": False, "persistent_workers": False,
                "timing": "after max(1, workers) warm-up batches, wall time of `batches` batches "
                          "(rounded up to a multiple of the worker count)",
                "sampler": f"RandomSampler without replacement, generator seed {cfg['seed']}, drop_last"}
    opencv = _opencv_threads(modes)
    rows = _loader_rows(ds, counts, modes, batch_size=bs, batches=int(batches), seed=cfg["seed"], verbose=verbose)

    report = {"benchmark": "data_loading", "created_unix": time.time(), "environment": environment(),
              "settings": settings, "opencv_threads": opencv, "sample_time_split": split, "loader": rows}
    path = Path(out_dir) / f"data_{profile}_{dataset}.json"
    io.write_json(path, report)
    if verbose:
        print(_table(report))
        print(f"wrote {path}")
    return report
