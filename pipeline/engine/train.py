"""Training of one benchmark run: the reference recipe (Adam, step schedule stepped per epoch) by default,
one checkpoint per epoch, per-epoch validation, everything logged to MLflow and to a log file.

Per-epoch validation uses ground-truth boxes without the flip test (cheap and detector-free); the
full test protocol (detection boxes, flip test, rescoring, OKS-NMS) is the evaluation stage's job.

At scale (all from the run's ``train`` section, see :data:`builders.TRAIN_DEFAULTS`):

- optimiser ``adam`` or ``adamw`` (betas, weight decay; AdamW spares only a model's
  ``no_weight_decay_keys()``), a linear warm-up per step before the step schedule per epoch;
- ``amp``: mixed precision on CUDA, bfloat16 by default (no loss scaling needed), or float16 with a
  GradScaler (``amp_dtype: float16``, also the fallback on GPUs without bfloat16). The model runs under
  autocast; its output is cast to float32 and the loss (HDM's Sinkhorn) runs outside autocast. On CPU
  ``amp`` is ignored (logged);
- automatic resume: ``checkpoints/epoch_NNN.pth`` carry a hash of the run configuration
  (:func:`config_hash`); a new start continues from the newest readable checkpoint with the same hash
  (model, optimiser, schedule, loss scaler, RNG states, history, MLflow run), so a pre-empted job goes
  on where it stopped. A corrupt checkpoint is skipped for the one before it; a checkpoint of another
  configuration, or written by other training code (:func:`code_hash`: a rerun after a fix retrains),
  is never resumed (warning naming it; the run starts over). To retrain an unchanged run from
  scratch, delete its ``checkpoints/`` folder;
- ``gpus > 1``: DistributedDataParallel, one process per GPU (``python -m pipeline train`` relaunches
  itself under torchrun, see :func:`torchrun_command`), ``batch_size`` per process, a DistributedSampler;
  rank 0 alone validates, logs to MLflow and writes checkpoints. Backend NCCL on CUDA, Gloo on CPU.
  ``sync_bn``: BatchNorm statistics over all processes (HRFormer's SyncBN, :func:`distributed_model`).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .. import io
from ..checkpoint import UnsafeCheckpointError, load_weights
from ..config import Paths, run_label
from ..errors import PipelineError
from ..models import pretrained_weights
from ..tracking import flatten, logged_steps, open_run
from . import builders, sync_bn
from .validate import validate

log = logging.getLogger(__name__)

# Keys of a run config that do not change the training trajectory: checkpoints written under other
# values of them are still resumed (raising ``epochs`` extends a finished run).
RESUME_INVARIANT = (("train", "epochs"), ("train", "workers"), ("train", "threads"))
CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.pth$")
# The code a training trajectory depends on (the train stage's code dependencies in dvc.yaml, less the
# evaluation-only modules): checkpoints written by other code are not resumed.
TRAINING_CODE = ("data", "codecs", "models", "losses", "engine/train.py", "engine/builders.py",
                 "engine/sync_bn.py")
_STATE_KEYS = ("epoch", "model", "optimizer", "scheduler")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def dist_env() -> DistEnv:
    if not under_torchrun():
        return DistEnv()
    local = int(os.environ["LOCAL_RANK"])
    return DistEnv(rank=int(os.environ.get("RANK", local)), world_size=int(os.environ["WORLD_SIZE"]),
                   local_rank=local)


def torchrun_command(nproc: int, pipeline_args: list[str]) -> list[str]:
    """The command that runs ``python -m pipeline <pipeline_args>`` as ``nproc`` processes on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "pipeline", *pipeline_args]


def _init_distributed(cfg: dict[str, Any], env: DistEnv) -> torch.device:
    dev = builders.device(cfg)
    if dev.type == "cuda":
        if torch.cuda.device_count() <= env.local_rank:
            raise PipelineError(f"profiles.{cfg['profile']}.train.gpus",
                                f"process {env.local_rank} needs a GPU but only {torch.cuda.device_count()} "
                                "are visible")
        dev = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", timeout=timedelta(minutes=60), device_id=dev)
    else:
        dist.init_process_group("gloo", timeout=timedelta(minutes=60))
    return dev


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def distributed_model(net: torch.nn.Module, t: dict[str, Any], env: DistEnv, dev: torch.device
                      ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(net, model)``: the network (its BatchNorms synchronised under DDP when ``train.sync_bn``) and
    the module the training loop calls (``net`` itself in one process, else ``net`` in DDP).

    Without ``sync_bn`` each process normalises its own share of the batch, as the HRNet reference's
    DataParallel replicas do; HRFormer's reference uses SyncBN (see :mod:`.sync_bn`).
    """
    if not env.distributed:
        if t.get("sync_bn"):
            log.info("train.sync_bn: a single process, so BatchNorm already sees the whole batch")
        return net, net
    if t.get("sync_bn"):
        net, n_bn = sync_bn.convert_sync_batchnorm(net, dev)
        if env.is_main:
            log.info("train.sync_bn: %d BatchNorm layers normalise over all %d processes' samples",
                     n_bn, env.world_size)
    # static_graph: HRNet's last module computes fuse outputs the pose head never uses; a static graph
    # lets DDP handle those unused parameters without searching the graph every step
    model = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                    static_graph=True)
    return net, model


# --------------------------------------------------------------------------- checkpoints
def config_hash(cfg: dict[str, Any]) -> str:
    """SHA-256 of the resolved run config, without the :data:`RESUME_INVARIANT` keys."""
    c = copy.deepcopy(cfg)
    for section, key in RESUME_INVARIANT:
        c.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def code_hash() -> str:
    """SHA-256 over the source files of :data:`TRAINING_CODE` (names and contents)."""
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for entry in TRAINING_CODE:
        p = pkg / entry
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every ``epoch_NNN.pth``, newest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found, reverse=True)


def find_resume_checkpoint(ckpt_dir: Path, cfg_hash: str, max_epoch: int, code: str | None = None
                           ) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest readable checkpoint of this configuration and training code (at most ``max_epoch``),
    loaded on the CPU."""
    other_config = []
    for epoch, path in list_checkpoints(ckpt_dir):
        if epoch > max_epoch:
            log.info("not resuming from %s: the run now has %d epochs", path, max_epoch)
            continue
        try:
            state = load_weights(path)
            if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
                raise ValueError("not a training checkpoint of this pipeline")
            if int(state["epoch"]) != epoch:
                raise ValueError(f"holds epoch {state['epoch']}")
        except UnsafeCheckpointError as exc:  # never loaded: skipped like a corrupt file, said so
            log.warning("%s; falling back to the checkpoint before it", exc)
            continue
        except Exception as exc:  # truncated file, disk error, foreign file
            log.warning("checkpoint %s is unreadable (%s: %s); falling back to the one before it",
                        path, type(exc).__name__, str(exc).splitlines()[0][:120] if str(exc) else "")
            continue
        if state.get("config_hash") != cfg_hash:
            log.warning("checkpoint %s was written under a different run configuration (config hash %s, "
                        "now %s); not resuming from it", path, str(state.get("config_hash"))[:12], cfg_hash[:12])
            other_config.append(path)
            continue
        if code is not None and state.get("code_hash") != code:
            log.warning("checkpoint %s was written by different training code (pipeline/%s changed since); "
                        "not resuming from it", path, ", pipeline/".join(TRAINING_CODE))
            other_config.append(path)
            continue
        return state, path
    if other_config:
        log.warning("starting over from epoch 1: no checkpoint matches the run configuration and code "
                    "(%s will be overwritten as the run proceeds)", ", ".join(p.name for p in other_config))
    return None, None


def _rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
    """Every RNG's state in types a weights-only load accepts (numpy's key array as a list of ints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state(), "loader": loader_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader_gen: torch.Generator) -> None:
    random.setstate(tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- mixed precision
def amp_settings(t: dict[str, Any], dev: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """(autocast dtype or None for float32, loss scaler: enabled for float16 only)."""
    dtype = None
    if t["amp"] and dev.type != "cuda":
        log.info("train.amp is set but the device is %s: training in float32 (mixed precision is CUDA-only)", dev)
    elif t["amp"]:
        dtype = torch.bfloat16 if t["amp_dtype"] == "bfloat16" else torch.float16
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            log.info("this GPU has no bfloat16: mixed precision in float16 with loss scaling")
            dtype = torch.float16
        log.info("mixed precision: autocast %s%s", dtype, " with a GradScaler" if dtype is torch.float16 else "")
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)
    return dtype, scaler


def _step(net, crit, batch, cfg, dev, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    images = batch["image"].to(dev, non_blocking=True, memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = net(images)
    out = out.float()  # the loss (HDM's Sinkhorn iterations above all) runs in float32, outside autocast
    weight = batch["weight"].to(dev)
    if cfg["loss"] == "mse":
        return crit(out, batch["target"].to(dev), weight)
    return crit(out, batch["keypoints"].to(dev), weight)


# --------------------------------------------------------------------------- MLflow
def _log_params(mlflow, params: dict[str, Any], resumed: bool) -> None:
    """Log params; on a resumed run only the new ones (MLflow params are immutable: changed values,
    e.g. a raised ``train.epochs``, become tags ``resume.<param>``)."""
    params = {k: str(v) for k, v in params.items()}
    if resumed:
        run = mlflow.tracking.MlflowClient().get_run(mlflow.active_run().info.run_id)
        old = run.data.params
        changed = {f"resume.{k}": v for k, v in params.items() if k in old and old[k] != v}
        params = {k: v for k, v in params.items() if k not in old}
        if changed:
            mlflow.set_tags(changed)
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow's batch limit
        mlflow.log_params(dict(items[i:i + 100]))


def _remove_stale_outputs(*paths: Path) -> None:
    """Delete outputs of an earlier training attempt before this one writes anything."""
    for p in paths:
        if p.exists():
            log.info("removing %s of an earlier attempt", p)
            p.unlink()


# --------------------------------------------------------------------------- training
def train_run(cfg: dict[str, Any], *, tracking_uri: str, experiment: str, progress: bool = True,
              extra_tags: dict[str, str] | None = None) -> Path:
    """Train one run end to end (resuming from its checkpoints); returns the path of its final checkpoint.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; rank 0 writes the outputs.
    ``extra_tags`` go onto the MLflow run (the CLI adds the paper tables the run fills).
    """
    cfg = builders.with_defaults(cfg)
    env = dist_env()
    dev = _init_distributed(cfg, env) if env.distributed else builders.device(cfg)
    try:
        return _train(cfg, env, dev, tracking_uri=tracking_uri, experiment=experiment, progress=progress,
                      extra_tags=extra_tags)
    finally:
        if env.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: dict[str, Any], env: DistEnv, dev: torch.device, *, tracking_uri: str, experiment: str,
           progress: bool, extra_tags: dict[str, str] | None) -> Path:
    paths = Paths(cfg["profile"])
    run_dir = paths.run_dir(cfg["name"], cfg["seed"])
    ckpt_dir = run_dir / "checkpoints"
    io.make_dirs(ckpt_dir)
    t = cfg["train"]
    if env.distributed and env.world_size != t["gpus"]:
        log.warning("running as %d processes but train.gpus is %d: the global batch is %d × %d",
                    env.world_size, t["gpus"], env.world_size, t["batch_size"])
    seed = cfg["seed"]
    seed_everything(seed)
    if dev.type == "cpu":
        torch.set_num_threads(t["threads"])

    train_recs = builders.records(cfg, "train")
    val_recs = builders.records(cfg, "val") if env.is_main else []
    train_ds = builders.dataset(cfg, train_recs, train=True)
    loader_gen = torch.Generator().manual_seed(seed)
    sampler = None
    if env.distributed:
        sampler = DistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
    per_process = len(sampler) if sampler is not None else len(train_ds)
    loader = DataLoader(train_ds, batch_size=t["batch_size"], shuffle=sampler is None, sampler=sampler,
                        drop_last=per_process > t["batch_size"], num_workers=t["workers"],
                        pin_memory=dev.type == "cuda", generator=loader_gen)
    # channels_last: about 1.3x faster convolutions on CPU for these models (and fine on GPU)
    net = builders.model(cfg)
    builders.check_output_size(cfg, net)  # before the MLflow run opens: a wrong heatmap_size stops here
    net = net.to(dev, memory_format=torch.channels_last)
    seeds = {"seeds.python_numpy_torch": seed, "seeds.loader_generator": seed,
             "seeds.augmentation": f"numpy default_rng([{seed}, epoch, index])"}
    if env.distributed:
        # same initial weights everywhere (DDP also broadcasts rank 0's); then one dropout/drop-path
        # stream per process
        seed_everything(seed + env.rank)
        seeds.update({"seeds.sampler": seed, "seeds.per_process_after_init": f"{seed} + rank"})
    crit = builders.loss(cfg).to(dev)
    opt = builders.optimizer(cfg, net)
    sched = builders.scheduler(cfg, opt)
    amp_dtype, scaler = amp_settings(t, dev)
    n_params = sum(p.numel() for p in net.parameters())
    cfg_hash = config_hash(cfg)
    code = code_hash()

    # ---- resume: rank 0 picks the checkpoint, every process loads it
    state, resumed_from = find_resume_checkpoint(ckpt_dir, cfg_hash, t["epochs"], code) if env.is_main else (None, None)
    if env.distributed:
        box = [str(resumed_from) if resumed_from is not None else None]
        dist.broadcast_object_list(box, src=0)
        if not env.is_main and box[0] is not None:
            resumed_from = Path(box[0])
            state = load_weights(resumed_from)
    start_epoch, history, run_id = 1, [], None
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state.get("rng") or []
        if rng:
            _set_rng_state(rng[env.rank] if env.rank < len(rng) else rng[0], loader_gen)
        start_epoch = int(state["epoch"]) + 1
        history = list(state.get("history", []))
        run_id = state.get("mlflow_run_id")
        if env.is_main and start_epoch > t["epochs"]:
            log.info("%s: %s already holds all %d epochs; writing the final checkpoint", cfg["name"],
                     resumed_from, t["epochs"])
        elif env.is_main:
            log.info("resuming %s from %s: epoch %d of %d", cfg["name"], resumed_from, start_epoch, t["epochs"])
        del state
    net, model = distributed_model(net, t, env, dev)
    if env.is_main:
        log.info("run %s: %d train / %d val people, %.2fM parameters, device %s%s, optimizer %s", cfg["name"],
                 len(train_ds), len(val_recs), n_params / 1e6, dev,
                 f" × {env.world_size} processes" if env.distributed else "", t["optimizer"])

    if env.is_main:  # outputs of an earlier attempt must not outlive an interrupted retrain
        _remove_stale_outputs(run_dir / "train_summary.json", paths.checkpoint(cfg["name"], seed))
    identity = {"config_hash": cfg_hash, "code_hash": code}
    tags = {**(extra_tags or {}), "row": cfg["name"], "seed": str(seed), "profile": cfg["profile"],
            "dataset": cfg["dataset"],
            "arch": cfg["arch"], "loss": cfg["loss"], "evaluated": "false",
            "pretrained_weights": pretrained_weights(cfg["model"]), **identity}
    tracking = (open_run(tracking_uri, experiment, run_name=run_label(cfg["name"], seed), run_id=run_id, tags=tags,
                         reuse_tags=identity) if env.is_main else contextlib.nullcontext(None))
    with tracking as mlflow:
        logged: set[int] = set()
        if mlflow is not None:
            run_id = mlflow.active_run().info.run_id
            # only the params the run lacks: it may be a resumed run or one continued after a kill
            _log_params(mlflow, {**flatten(cfg), "num_parameters": n_params, "device_used": str(dev),
                                 "world_size": env.world_size, "config_hash": cfg_hash, "code_hash": code, **seeds},
                        resumed=True)
            logged = logged_steps(mlflow, run_id, "train_loss")
            if resumed_from is not None:
                mlflow.set_tag("resumed_from", str(resumed_from))
            else:
                mlflow.log_dict(cfg, "config.json")
            # epochs the checkpoint holds but the run lacks (a new run after the store lost the old one,
            # or a stop between a checkpoint and its metrics): replay them
            for row in history:
                if row["epoch"] not in logged:
                    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
                    logged.add(row["epoch"])
        for epoch in range(start_epoch, t["epochs"] + 1):
            train_ds.set_epoch(epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
            model.train()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.time()
            total, count, dead = 0.0, 0, 0
            bar = tqdm(loader, desc=f"{cfg['name']} epoch {epoch}/{t['epochs']}",
                       disable=not (progress and env.is_main), mininterval=5.0, leave=False)
            for batch in bar:
                loss = _step(model, crit, batch, cfg, dev, amp_dtype)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step_iter()
                total += loss.item() * len(batch["image"])
                count += len(batch["image"])
                dead += int(getattr(crit, "last_dead_joints", 0))
                bar.set_postfix(loss=f"{total / count:.4g}")
            lr = opt.param_groups[0]["lr"]
            sched.step_epoch()
            train_time = time.time() - t0
            peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
            if env.distributed:  # totals over all processes; peak memory of the fullest GPU
                sums = torch.tensor([total, count, dead], dtype=torch.float64, device=dev)
                dist.all_reduce(sums)
                total, count, dead = sums[0].item(), int(sums[1].item()), int(sums[2].item())
                if peak_mb is not None:
                    peak = torch.tensor([peak_mb], dtype=torch.float64, device=dev)
                    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
                    peak_mb = peak.item()
            val = validate(net, cfg, val_recs, dev) if env.is_main else {}
            # RNG states after validation (its DataLoader draws from torch's RNG), one per process
            rng = [_rng_state(loader_gen)]
            if env.distributed:
                rng = [None] * env.world_size
                dist.all_gather_object(rng, _rng_state(loader_gen))
            if env.is_main:
                row = {"train_loss": total / max(count, 1), "lr": lr, "epoch_time_s": train_time,
                       "images_per_s": count / max(train_time, 1e-9), **{f"val_{k}": v for k, v in val.items()}}
                if peak_mb is not None:
                    row["gpu_mem_peak_mb"] = peak_mb
                if cfg["loss"] == "hdm":
                    row["dead_heatmaps"] = dead
                history.append({"epoch": epoch, **row})
                log.info("epoch %d/%d  %s", epoch, t["epochs"],
                         "  ".join(f"{k}={v:.4g}" for k, v in row.items()))
                ckpt = {"epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rng,
                        "history": history, "mlflow_run_id": run_id, "config_hash": cfg_hash,
                        "code_hash": code, "config": cfg, "world_size": env.world_size}
                with io.atomic_path(ckpt_dir / f"epoch_{epoch:03d}.pth") as tmp:
                    torch.save(ckpt, tmp)
                # after the checkpoint: a stop in between leaves an epoch the resume replays, never
                # one the run logs twice (an epoch trained again reproduces the logged values)
                if epoch not in logged:
                    mlflow.log_metrics(row, step=epoch)
                    logged.add(epoch)
            _barrier(env)
        if env.is_main:
            summary = {"run": cfg["name"], "seed": seed, "mlflow_run_id": run_id, "epochs": t["epochs"], "history": history,
                       "num_parameters": n_params, "device": str(dev), "world_size": env.world_size,
                       "resumed_from": str(resumed_from) if resumed_from is not None else None}
            io.write_json(run_dir / "train_summary.json", summary)
            with io.atomic_path(paths.checkpoint(cfg["name"], seed)) as tmp:
                torch.save({"model": net.state_dict(), "config": cfg, "mlflow_run_id": run_id,
                            "history": history, "config_hash": cfg_hash}, tmp)
    _barrier(env)
    return paths.checkpoint(cfg["name"], seed)
