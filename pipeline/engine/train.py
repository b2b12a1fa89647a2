"""Training of one benchmark run: the reference recipe (Adam, step schedule stepped per epoch) by default,
one checkpoint per epoch, per-epoch validation, everything logged to MLflow and to a log file.

Per-epoch validation uses ground-truth boxes without the flip test (cheap and detector-free); the
full test protocol (detection boxes, flip test, rescoring, OKS-NMS) is the evaluation stage's job.

At scale (all from the run's ``train`` section, see :data:`builders.TRAIN_DEFAULTS`):

- optimiser ``adam`` or ``adamw`` (betas, weight decay; AdamW spares only a model's
  ``no_weight_decay_keys()``), a linear warm-up per step before the step schedule per epoch;
- ``amp``: mixed precision, bfloat16 by default (no loss scaling needed), or float16 with a
  GradScaler (``amp_dtype: float16``, also the fallback on GPUs without bfloat16). The model runs under
  autocast; its output is cast to float32 and the loss (HDM's Sinkhorn) runs outside autocast. On CPU
  the same code runs (CPU autocast and a CPU GradScaler; the rehearsal's HRFormer runs) where torch
  supports the dtype there, else float32 (logged);
- automatic resume: ``checkpoints/epoch_NNN.pth`` carry a hash of the run configuration
  (:func:`config_hash`) and the sha256 of the data files and initial weights the run read
  (:mod:`.identity`); a new start continues from the newest readable checkpoint with the same ones
  (model, optimiser, schedule, loss scaler, RNG states, history, MLflow run), so a pre-empted job goes
  on where it stopped. A corrupt checkpoint is skipped for the one before it; a checkpoint of another
  configuration, trained on other data or weights (regenerated data, a retrained ``init_from`` run), or
  written by other training code (:func:`code_hash`: a rerun after a fix retrains), is never resumed
  (warning naming it and why; the run starts over). To retrain an unchanged run from scratch, delete
  its ``checkpoints/`` folder. SIGTERM (a time limit, a pre-emption) stops a run at the next step
  boundary, every process at the same one (:func:`_stop_requested`);
- one process per run: training holds the run folder's lock (:mod:`.run_lock`; rank 0 for the whole
  torchrun job), so a second start of the same run and seed stops with one line naming the first;
- a non-finite loss stops the run with one line naming the epoch, step and learning rate (every process
  of a torchrun job at the same step), before any checkpoint of the diverged weights is written;
- ``gpus > 1``: DistributedDataParallel, one process per GPU (``python -m pipeline train`` relaunches
  itself under torchrun, see :func:`torchrun_command`), ``batch_size`` per process, a DistributedSampler;
  rank 0 alone validates, logs to MLflow and writes checkpoints. Backend NCCL on CUDA, Gloo on CPU.
  A SIGTERM or Ctrl-C of the launching process is passed on through torchrun to every process
  (:func:`pipeline.termination.run_child`), which stop cleanly before it ends.
  ``sync_bn``: BatchNorm statistics over all processes (HRFormer's SyncBN, :func:`distributed_model`).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .. import io
from ..checkpoint import UnsafeCheckpointError, load_weights, save_checkpoint
from ..config import Paths, run_label
from ..errors import PipelineError
from ..models import pretrained_weights
from ..progress import EpochClock, Progress
from ..termination import deferred_termination, loader_worker_init, sigterm_pending, stop_now
from ..tracking import flatten, logged_steps, open_run
from ..tracking.datasets import TRAINING, dataset_uses, log_datasets
from ..tracking.metric_names import canonical_key
from . import builders, identity, sync_bn
from .run_lock import run_lock
from .validate import validate

log = logging.getLogger(__name__)

# Keys of a run config that do not change the training trajectory: checkpoints written under other
# values of them are still resumed (raising ``epochs`` extends a finished run).
RESUME_INVARIANT = (("train", "epochs"), ("train", "workers"), ("train", "threads"))
CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.pth$")
# The mean training loss of an epoch, as the log line and the history name it (MLflow: train/loss)
LOSS = "train_loss"
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
    """The command that runs ``python -m pipeline <pipeline_args>`` as ``nproc`` processes on this node:
    torchrun (:mod:`pipeline.torchrun`, which ends a stop by a signal with one line, not a traceback)."""
    return [sys.executable, "-m", "pipeline.torchrun", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "pipeline", *pipeline_args]


def _init_distributed(cfg: dict[str, Any], env: DistEnv) -> torch.device:
    dev = builders.device(cfg)
    if dev.type == "cuda":  # pragma: no cover - CUDA only: NCCL process group on this process's GPU
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


# Epoch checkpoints kept per run: the newest, and the one before it in case the newest is unreadable
# (a disk error; writes themselves are atomic). Each holds the optimizer state too, so keeping every
# epoch would take 210 × 0.8 GB for one ResNet-152 run of the paper.
KEEP_CHECKPOINTS = 2


def prune_checkpoints(ckpt_dir: Path, newest: int, keep: int = KEEP_CHECKPOINTS) -> list[Path]:
    """Delete the epoch checkpoints older than the ``keep`` newest up to epoch ``newest``; returns them.
    Checkpoints of later epochs (an earlier attempt with a longer schedule) are left alone."""
    older = [p for epoch, p in list_checkpoints(ckpt_dir) if epoch <= newest][keep:]
    for path in older:
        path.unlink(missing_ok=True)
    return older


def find_resume_checkpoint(ckpt_dir: Path, cfg_hash: str, max_epoch: int, code: str | None = None,
                           inputs: identity.Inputs | None = None) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest readable checkpoint of this configuration, training code and (when given) inputs
    (:func:`identity.run_inputs`: data files and initial weights), at most ``max_epoch``, loaded on the
    CPU. Epochs trained on other data or from other weights are not this run's, however complete."""
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
        changed = identity.changed_inputs(state.get("inputs"), inputs) if inputs is not None else ""
        if changed:
            log.warning("checkpoint %s was trained on other inputs (%s); not resuming from it", path, changed)
            other_config.append(path)
            continue
        return state, path
    if other_config:
        log.warning("starting over from epoch 1: no checkpoint matches the run configuration, inputs and code "
                    "(%s will be overwritten as the run proceeds)", ", ".join(p.name for p in other_config))
    return None, None


def _rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
    """Every RNG's state in types a weights-only load accepts (numpy's key array as a list of ints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state(), "loader": loader_gen.get_state()}
    if torch.cuda.is_available():  # pragma: no cover - CUDA only: the GPUs' RNG states
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader_gen: torch.Generator) -> None:
    random.setstate(tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])  # pragma: no cover - CUDA only: the GPUs' RNG states


# --------------------------------------------------------------------------- mixed precision
@functools.lru_cache(maxsize=None)
def autocast_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether this torch runs a convolution under ``torch.autocast(device_type, dtype)`` in ``dtype``
    (forward and backward) and, for float16, has a GradScaler for the device: probed once with a tiny
    convolution, so an unsupported combination falls back to float32 instead of failing mid-run."""
    try:
        if not torch.amp.is_autocast_available(device_type):
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unsupported dtype only warns and disables autocast
            # constant tensors, no module: the probe draws nothing from the RNGs a run is seeded with
            weight = torch.full((2, 2, 3, 3), 0.1, device=device_type, requires_grad=True)
            x = torch.ones(1, 2, 4, 4, device=device_type)
            with torch.autocast(device_type, dtype=dtype):
                y = torch.nn.functional.conv2d(x, weight, padding=1)
            if y.dtype != dtype:
                return False
            y.float().sum().backward()
            if dtype is torch.float16:
                torch.amp.GradScaler(device_type)
        return weight.grad is not None and bool(torch.isfinite(weight.grad).all())
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return False


def amp_settings(t: dict[str, Any], dev: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """(autocast dtype or None for float32, loss scaler: enabled for float16 only).

    The same on every device: on CPU ``train.amp`` runs the GPU's code path (autocast in the dtype,
    a GradScaler for float16) wherever torch's CPU autocast supports the dtype
    (:func:`autocast_supported`), else float32 with one log line."""
    dtype = None
    if t["amp"]:
        dtype = torch.bfloat16 if t["amp_dtype"] == "bfloat16" else torch.float16
        if dev.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            log.info("this GPU has no bfloat16: mixed precision in float16 with loss scaling")
            dtype = torch.float16
        if not autocast_supported(dev.type, dtype):
            log.info("train.amp is set but this torch has no %s autocast on %s: training in float32",
                     str(dtype).replace("torch.", ""), dev.type)
            dtype = None
        else:
            log.info("mixed precision on %s: autocast %s%s", dev.type, str(dtype).replace("torch.", ""),
                     " with a GradScaler" if dtype is torch.float16 else "")
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)
    return dtype, scaler


def forward_loss(net, crit, batch, cfg, dev, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The loss of one batch, the forward pass under autocast and the loss in float32: the training step
    and the benchmarks time the same computation."""
    images = batch["image"].to(dev, non_blocking=True, memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = net(images)
    out = out.float()  # the loss (HDM's Sinkhorn iterations above all) runs in float32, outside autocast
    return compute_loss(crit, out, batch, cfg, dev)


def compute_loss(crit, out: torch.Tensor, batch: dict[str, Any], cfg: dict[str, Any], dev: torch.device,
                 per_sample: bool = False) -> torch.Tensor:
    """The criterion on a batch's network output: the one place that says which part of the batch each
    loss reads (MSE: the Gaussian target heatmaps; MSE + alpha × HDM: the targets and the dots; HDM and
    integral regression: the dots), for training and evaluation. ``per_sample``: ``[B]``, each sample's
    loss as a batch of that sample alone would give it (the criterion's ``per_sample``)."""
    weight = batch["weight"].to(dev)
    if cfg["loss"] == "mse":
        args = (out, batch["target"].to(dev), weight)
    elif cfg["loss"] == "mse_hdm":
        args = (out, batch["target"].to(dev), batch["keypoints"].to(dev), weight)
    else:
        args = (out, batch["keypoints"].to(dev), weight)
    return crit.per_sample(*args) if per_sample else crit(*args)


def train_step(net, crit, opt, scaler: torch.amp.GradScaler, batch, cfg, dev,
               amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimiser step on one batch (the forward under autocast, the float32 loss scaled by the
    GradScaler when it is enabled, unscaled again before the step); returns the loss."""
    loss = forward_loss(net, crit, batch, cfg, dev, amp_dtype)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss


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
        with _run_locked(cfg, env):
            return _train(cfg, env, dev, tracking_uri=tracking_uri, experiment=experiment, progress=progress,
                          extra_tags=extra_tags)
    finally:
        if env.distributed and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _run_locked(cfg: dict[str, Any], env: DistEnv) -> Iterator[None]:
    """Hold the run's lock (:mod:`.run_lock`) for the whole training, before anything is read or
    removed: a second process of the same run and seed stops here, naming the first. Under torchrun
    rank 0 takes it for the job, and tells every process whether it got it (a collective), so all stop
    together rather than the others waiting for rank 0 in the next collective."""
    run_dir = Paths(cfg["profile"]).run_dir(cfg["name"], cfg["seed"])
    with contextlib.ExitStack() as held:
        refused: PipelineError | None = None
        if env.is_main:
            try:
                held.enter_context(run_lock(run_dir, "trained"))
            except PipelineError as exc:
                refused = exc
        if env.distributed:
            box = [refused is not None]
            dist.broadcast_object_list(box, src=0)
            if refused is None and box[0]:
                refused = PipelineError(str(run_dir), "rank 0 could not take the run's lock (its line says why): "
                                                      "this process stops with it")
        if refused is not None:
            raise refused
        yield


@dataclass
class _Data:
    """The training data of one process and the RNG its shuffling draws from (saved in checkpoints)."""

    train_ds: Any
    val_recs: list[Any]
    loader: DataLoader
    sampler: DistributedSampler | None
    loader_gen: torch.Generator


@dataclass
class _Run:
    """What the stages of one training run share: built once by :func:`_setup`, then read (and, for the
    resume fields and ``history``, updated) by the resume, the epochs and the final outputs."""

    cfg: dict[str, Any]
    env: DistEnv
    dev: torch.device
    paths: Paths
    run_dir: Path
    ckpt_dir: Path
    data: _Data
    net: torch.nn.Module
    model: torch.nn.Module  # what the loop calls: ``net``, or ``net`` in DDP (set after the resume)
    crit: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    n_params: int
    cfg_hash: str
    code: str
    seeds: dict[str, Any]
    inputs: identity.Inputs | None  # rank 0's (it alone picks the checkpoint to resume and writes them)
    start_epoch: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    resumed_from: Path | None = None
    clock: EpochClock | None = None  # started with the first epoch this process trains

    @property
    def t(self) -> dict[str, Any]:
        return self.cfg["train"]

    @property
    def seed(self) -> int:
        return self.cfg["seed"]


@dataclass
class _EpochStats:
    """One epoch's training totals in this process (summed over all processes by :func:`_reduce_stats`)."""

    total: float
    count: int
    dead: int
    lr: float
    train_time: float
    peak_mb: float | None


def _train(cfg: dict[str, Any], env: DistEnv, dev: torch.device, *, tracking_uri: str, experiment: str,
           progress: bool, extra_tags: dict[str, str] | None) -> Path:
    """The training run in stages, each its own function so that the order they run in (which fixes
    every RNG draw, hence the weights) reads at a glance here. A SIGTERM is held back for the whole run
    and stops it at the next step boundary (:func:`_stop_requested`), or at the end."""
    with deferred_termination():
        return _train_stages(cfg, env, dev, tracking_uri=tracking_uri, experiment=experiment, progress=progress,
                             extra_tags=extra_tags)


def _train_stages(cfg: dict[str, Any], env: DistEnv, dev: torch.device, *, tracking_uri: str, experiment: str,
                  progress: bool, extra_tags: dict[str, str] | None) -> Path:
    run = _setup(cfg, env, dev)
    _resume(run)
    run.net, run.model = distributed_model(run.net, run.t, env, dev)
    if env.is_main:
        log.info("run %s: %d train / %d %s people, %.2fM parameters, device %s%s, optimizer %s", cfg["name"],
                 len(run.data.train_ds), len(run.data.val_recs), builders.holdout_split(cfg), run.n_params / 1e6, dev,
                 f" × {env.world_size} processes" if env.distributed else "", run.t["optimizer"])
        # outputs of an earlier attempt must not outlive an interrupted retrain
        _remove_stale_outputs(run.run_dir / "train_summary.json", run.paths.checkpoint(cfg["name"], run.seed))
    with _open_tracking(run, tracking_uri, experiment, extra_tags) as mlflow:
        logged = _start_tracking(run, mlflow) if mlflow is not None else set()
        run.clock = EpochClock(run.start_epoch, run.t["epochs"])
        for epoch in range(run.start_epoch, run.t["epochs"] + 1):
            stats = _reduce_stats(run, _train_epoch(run, epoch, progress))
            _end_epoch(run, mlflow, epoch, stats, logged)
        if env.is_main:
            _write_final_outputs(run)
    _barrier(env)
    return run.paths.checkpoint(cfg["name"], run.seed)


def _setup(cfg: dict[str, Any], env: DistEnv, dev: torch.device) -> _Run:
    """Seed, build the data, model, loss, optimiser and schedule, in the one order that reproduces a
    run's weights bit for bit (the model's initialisation draws from the RNGs seeded first)."""
    paths = Paths(cfg["profile"])
    run_dir = paths.run_dir(cfg["name"], cfg["seed"])
    ckpt_dir = run_dir / "checkpoints"
    io.make_dirs(ckpt_dir)
    t = cfg["train"]
    if env.distributed and env.world_size != t["gpus"]:
        log.warning("running as %d processes but train.gpus is %d: the global batch is %d × %d",
                    env.world_size, t["gpus"], env.world_size, t["batch_size"])
    seed_everything(cfg["seed"])
    if dev.type == "cpu":
        torch.set_num_threads(t["threads"])
    data = _build_data(cfg, env, dev)
    net, seeds = _build_net(cfg, env, dev)
    crit = builders.loss(cfg).to(dev)
    opt = builders.optimizer(cfg, net)
    sched = builders.scheduler(cfg, opt)
    amp_dtype, scaler = amp_settings(t, dev)
    return _Run(cfg=cfg, env=env, dev=dev, paths=paths, run_dir=run_dir, ckpt_dir=ckpt_dir, data=data,
                net=net, model=net, crit=crit, opt=opt, sched=sched, amp_dtype=amp_dtype, scaler=scaler,
                n_params=sum(p.numel() for p in net.parameters()), cfg_hash=config_hash(cfg),
                code=code_hash(), seeds=seeds, inputs=identity.run_inputs(cfg) if env.is_main else None)


def _build_data(cfg: dict[str, Any], env: DistEnv, dev: torch.device) -> _Data:
    """The training loader (shuffled by its own seeded generator, or a DistributedSampler under DDP) and
    the validation records: only rank 0 validates, so the others load none."""
    t, seed = cfg["train"], cfg["seed"]
    train_recs = builders.records(cfg, "train")
    val_recs = builders.records(cfg, builders.holdout_split(cfg)) if env.is_main else []
    train_ds = builders.dataset(cfg, train_recs, train=True)
    loader_gen = torch.Generator().manual_seed(seed)
    sampler = None
    if env.distributed:
        sampler = DistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
    per_process = len(sampler) if sampler is not None else len(train_ds)
    loader = DataLoader(train_ds, batch_size=t["batch_size"], shuffle=sampler is None, sampler=sampler,
                        drop_last=per_process > t["batch_size"], num_workers=t["workers"],
                        pin_memory=dev.type == "cuda", generator=loader_gen, worker_init_fn=loader_worker_init)
    return _Data(train_ds=train_ds, val_recs=val_recs, loader=loader, sampler=sampler, loader_gen=loader_gen)


def _build_net(cfg: dict[str, Any], env: DistEnv, dev: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(net, seeds)``: the network on ``dev``, checked before the MLflow run opens (a wrong
    ``heatmap_size`` stops here), and the seeds the run logs. Under DDP every process reseeds after the
    initialisation: same initial weights everywhere (DDP also broadcasts rank 0's), then one
    dropout/drop-path stream per process."""
    seed = cfg["seed"]
    net = builders.model(cfg)
    builders.check_output_size(cfg, net)
    # channels_last: about 1.3x faster convolutions on CPU for these models (and fine on GPU)
    net = net.to(dev, memory_format=torch.channels_last)
    seeds: dict[str, Any] = {"seeds.python_numpy_torch": seed, "seeds.loader_generator": seed,
                             "seeds.augmentation": f"numpy default_rng([{seed}, epoch, index])"}
    if env.distributed:
        seed_everything(seed + env.rank)
        seeds.update({"seeds.sampler": seed, "seeds.per_process_after_init": f"{seed} + rank"})
    return net, seeds


def _resume(run: _Run) -> None:
    """Continue from the newest matching checkpoint, if any: rank 0 picks it (one choice for the whole
    job), every process loads it and restores its own RNG states, so a pre-empted run goes on exactly."""
    env, t = run.env, run.t
    state, resumed_from = (find_resume_checkpoint(run.ckpt_dir, run.cfg_hash, t["epochs"], run.code, run.inputs)
                           if env.is_main else (None, None))
    if env.distributed:
        box = [str(resumed_from) if resumed_from is not None else None]
        dist.broadcast_object_list(box, src=0)
        if not env.is_main and box[0] is not None:
            resumed_from = Path(box[0])
            state = load_weights(resumed_from)
    if state is None:
        return
    run.net.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    if run.scaler.is_enabled() and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    rng = state.get("rng") or []
    if rng:
        _set_rng_state(rng[env.rank] if env.rank < len(rng) else rng[0], run.data.loader_gen)
    run.start_epoch = int(state["epoch"]) + 1
    run.history = list(state.get("history", []))
    run.run_id = state.get("mlflow_run_id")
    run.resumed_from = resumed_from
    if env.is_main and run.start_epoch > t["epochs"]:
        log.info("%s: %s already holds all %d epochs; writing the final checkpoint", run.cfg["name"],
                 resumed_from, t["epochs"])
    elif env.is_main:
        log.info("resuming %s from %s: epoch %d of %d", run.cfg["name"], resumed_from, run.start_epoch,
                 t["epochs"])


def _initial_weights(cfg: dict[str, Any]) -> str:
    """What the run's weights start from (MLflow tag ``pretrained_weights``): the pretrained backbone
    (:func:`pretrained_weights`), or ``run:<name> <final.pth>`` for a run with ``init_from``."""
    if cfg.get("init_from") is not None:
        return f"run:{cfg['init_from']} {builders.init_checkpoint(cfg)}"
    return pretrained_weights(cfg["model"])


def _open_tracking(run: _Run, tracking_uri: str, experiment: str, extra_tags: dict[str, str] | None
                   ) -> contextlib.AbstractContextManager[Any]:
    """The MLflow run on rank 0 (the checkpoint's run when resuming, else one found by the config and
    code hashes, else a new one); a context yielding None on the other ranks, which log nothing."""
    cfg = run.cfg
    if not run.env.is_main:
        return contextlib.nullcontext(None)
    same_run = _identity_tags(run)
    tags = {**(extra_tags or {}), "row": cfg["name"], "seed": str(run.seed), "profile": cfg["profile"],
            "dataset": cfg["dataset"],
            "arch": cfg["arch"], "loss": cfg["loss"], "evaluated": "false",
            "pretrained_weights": _initial_weights(cfg), **same_run}
    return open_run(tracking_uri, experiment, run_name=run_label(cfg["name"], run.seed), run_id=run.run_id,
                    tags=tags, reuse_tags=same_run)


def _identity_tags(run: _Run) -> dict[str, str]:
    """What makes two attempts the same training (MLflow tags and params): an unfinished MLflow run is
    continued only by an attempt with the same config, code and inputs (rank 0 only)."""
    return {"config_hash": run.cfg_hash, "code_hash": run.code,
            "inputs_hash": identity.inputs_hash(run.inputs or {})}


def _start_tracking(run: _Run, mlflow: Any) -> set[int]:
    """Log the params the MLflow run lacks (it may be a resumed run or one continued after a kill) and
    replay the epochs the checkpoint holds but the run lacks; returns the epochs the run has metrics for,
    so none is ever logged twice."""
    run.run_id = mlflow.active_run().info.run_id
    amp_used = str(run.amp_dtype).replace("torch.", "") if run.amp_dtype is not None else "float32"
    _log_params(mlflow, {**flatten(run.cfg), "num_parameters": run.n_params, "device_used": str(run.dev),
                         "amp_used": amp_used, "world_size": run.env.world_size, **_identity_tags(run),
                         **run.seeds},
                resumed=True)
    log_datasets(mlflow, dataset_uses(run.cfg["profile"], run.cfg["dataset"], ["train"], TRAINING))
    logged = logged_steps(mlflow, run.run_id, canonical_key(LOSS))
    if run.resumed_from is not None:
        mlflow.set_tag("resumed_from", str(run.resumed_from))
    else:
        mlflow.log_dict(run.cfg, "config.json")
    # a new run after the store lost the old one, or a stop between a checkpoint and its metrics
    for row in run.history:
        if row["epoch"] not in logged:
            mlflow.log_metrics(tracked_metrics(row), step=row["epoch"])
            logged.add(row["epoch"])
    return logged


def _train_epoch(run: _Run, epoch: int, progress: bool) -> _EpochStats:
    """One pass over this process's share of the data: a step of the optimiser (and of the warm-up)
    per batch, then one of the per-epoch schedule; the lr logged is the one the epoch trained at."""
    t, dev, data = run.t, run.dev, run.data
    data.train_ds.set_epoch(epoch)
    if data.sampler is not None:
        data.sampler.set_epoch(epoch)
    run.model.train()
    if dev.type == "cuda":  # pragma: no cover - CUDA only: GPU memory statistics
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.time()
    total, count, dead = 0.0, 0, 0
    step, step_lr, fault = 0, run.opt.param_groups[0]["lr"], FINITE
    # a bar on a terminal only; a log file gets the epoch's one line (_end_epoch)
    bar = Progress(f"{run.cfg['name']} epoch {epoch}/{t['epochs']}", total=len(data.loader), unit="batch",
                   enabled=progress and run.env.is_main, lines=False, mininterval=5.0)
    for batch in bar.over(_batches(data.loader)):
        _stop_if_requested(run, fault, epoch, step, step_lr)
        step, step_lr = step + 1, run.opt.param_groups[0]["lr"]
        loss = train_step(run.model, run.crit, run.opt, run.scaler, batch, run.cfg, dev, run.amp_dtype)
        run.sched.step_iter()
        value = loss.item()
        fault = _loss_fault(value)
        total += value * len(batch["image"])
        count += len(batch["image"])
        dead += int(getattr(run.crit, "last_dead_joints", 0))
        bar.postfix(loss=f"{total / count:.4g}")
    # before the epoch's end: a stop takes at most one step (then validation and the checkpoint go on, a
    # SIGTERM during them stops at the next step); so does a last step that left the model diverged
    if fault == FINITE and step:
        fault = _epoch_end_fault(run, batch)
    _stop_if_requested(run, fault, epoch, step, step_lr)
    lr = run.opt.param_groups[0]["lr"]
    run.sched.step_epoch()
    train_time = time.time() - t0
    peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return _EpochStats(total=total, count=count, dead=dead, lr=lr, train_time=train_time, peak_mb=peak_mb)


def _batches(loader: DataLoader):
    """The loader's batches; when its worker process is gone while a SIGTERM is pending (a scheduler
    signalled every process of the job, the worker among them: it exits at once, see
    :func:`pipeline.termination.loader_worker_init`), the epoch's batches end there and the stop check
    after the loop stops the run, in every process at the same boundary."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError:
            if sigterm_pending():
                log.info("a data-loading process has stopped after SIGTERM: stopping")
                return
            raise
        yield batch


# What the last training step left (worst last: under DDP the processes agree on the maximum)
FINITE, LOSS_INF, LOSS_NAN, OUTPUT_NONFINITE, WEIGHTS_NONFINITE = 0, 1, 2, 3, 4
_FAULT_WORDS = {LOSS_INF: "loss is inf", LOSS_NAN: "loss is nan",
                OUTPUT_NONFINITE: "the model's output (eval mode, as validation runs it) is not finite",
                WEIGHTS_NONFINITE: "the weights are not finite"}


def _loss_fault(value: float) -> int:
    """The step's fault code from its (unscaled, float32) loss. Under a float16 GradScaler only the
    scaled gradients may overflow, which the scaler handles by skipping the step; a non-finite loss
    itself is the model's output gone non-finite: divergence, whatever the precision."""
    if math.isfinite(value):
        return FINITE
    return LOSS_NAN if math.isnan(value) else LOSS_INF


def _epoch_end_fault(run: _Run, batch: dict[str, Any]) -> int:
    """Whether the epoch's last step left the model diverged although its loss (computed before the
    step) was finite: a parameter or floating buffer that is inf or nan, or an output that is, in eval
    mode as validation runs it (finite weights can still overflow there: BatchNorm then normalises with
    its running statistics). Checked once per epoch, before validation and the checkpoint: one pass over
    the weights and one forward pass of the last batch, which changes no state and draws no random number."""
    net = run.net
    tensors = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all().item()):
        return WEIGHTS_NONFINITE
    images = batch["image"].to(run.dev, non_blocking=True, memory_format=torch.channels_last)
    net.eval()
    try:
        with torch.no_grad(), torch.autocast(run.dev.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            finite = bool(torch.isfinite(net(images).float()).all().item())
    finally:
        net.train()
    return FINITE if finite else OUTPUT_NONFINITE


def _stop_if_requested(run: _Run, fault: int, epoch: int, step: int, lr: float) -> None:
    """Stop before the next step when the last one diverged (``fault``) or SIGTERM came, in this or,
    under DDP, any process (:func:`_stop_requested`). Divergence stops with one line naming the run,
    epoch, step and learning rate; nothing of the diverged weights is saved, the last epoch's checkpoint
    stays where it is."""
    stop, fault = _stop_requested(run, fault)
    if fault != FINITE:
        raise PipelineError(
            f"run {run.cfg['name']} seed {run.seed}",
            f"{_FAULT_WORDS.get(fault, 'loss is not finite')} at epoch {epoch}, step {step} (lr {lr:g}): "
            f"training diverged; lower train.lr in params.yaml (profiles.{run.cfg['profile']}.train.lr, or "
            "the run's own train.lr) and train again; no checkpoint of the diverged weights was written")
    if stop:
        stop_now()


def _stop_requested(run: _Run, fault: int = FINITE) -> tuple[bool, int]:
    """(whether SIGTERM has reached this process, the last step's fault code) or, under DDP, any
    process's (a collective: every process calls it before each step and after an epoch's last one, so
    all stop at the same step boundary, none is left waiting in a collective for one that has gone, and
    a loss gone non-finite in one process stops them all). The checkpoint of the last finished epoch is
    where a rerun resumes."""
    stop = sigterm_pending()
    if run.env.distributed:
        flags = torch.tensor([int(stop), fault], dtype=torch.int32, device=run.dev)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop_flag, fault = flags.tolist()
        stop = bool(stop_flag)
    return stop, fault


def _reduce_stats(run: _Run, stats: _EpochStats) -> _EpochStats:
    """Under DDP: the totals over all processes and the peak memory of the fullest GPU, so rank 0 logs
    the whole job's epoch (every process must call this: it is a collective)."""
    if not run.env.distributed:
        return stats
    sums = torch.tensor([stats.total, stats.count, stats.dead], dtype=torch.float64, device=run.dev)
    dist.all_reduce(sums)
    stats.total, stats.count, stats.dead = sums[0].item(), int(sums[1].item()), int(sums[2].item())
    if stats.peak_mb is not None:  # pragma: no cover - CUDA only: peak_mb is measured on CUDA only
        peak = torch.tensor([stats.peak_mb], dtype=torch.float64, device=run.dev)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        stats.peak_mb = peak.item()
    return stats


def _end_epoch(run: _Run, mlflow: Any, epoch: int, stats: _EpochStats, logged: set[int]) -> None:
    """Validate (rank 0), gather every process's RNG states, and on rank 0 log the epoch's metrics row,
    write its checkpoint and then its MLflow metrics; all processes meet at a barrier afterwards."""
    env = run.env
    val = validate(run.net, run.cfg, run.data.val_recs, run.dev) if env.is_main else {}
    # RNG states after validation (its DataLoader draws from torch's RNG), one per process
    rng = [_rng_state(run.data.loader_gen)]
    if env.distributed:
        rng = [None] * env.world_size
        dist.all_gather_object(rng, _rng_state(run.data.loader_gen))
    if env.is_main:
        row = _metrics_row(run, stats, val)
        run.history.append({"epoch": epoch, **row})
        log.info("%s %s  %s", run_label(run.cfg["name"], run.seed), run.clock.status(epoch), _log_line(row))
        _save_checkpoint(run, epoch, rng)
        # after the checkpoint: a stop in between leaves an epoch the resume replays, never
        # one the run logs twice (an epoch trained again reproduces the logged values)
        if epoch not in logged:
            mlflow.log_metrics(tracked_metrics(row), step=epoch)
            logged.add(epoch)
    _barrier(env)


def _metrics_row(run: _Run, stats: _EpochStats, val: dict[str, float]) -> dict[str, float]:
    """The epoch's metrics, in the order the log line and MLflow show them; GPU memory only on CUDA and
    the dead-heatmap count only for HDM (the losses that have neither would log a meaningless 0)."""
    held_out = builders.holdout_split(run.cfg)  # val_AP, or tune_AP for a split: tune run
    row = {LOSS: stats.total / max(stats.count, 1), "lr": stats.lr, "epoch_time_s": stats.train_time,
           "images_per_s": stats.count / max(stats.train_time, 1e-9), **{f"{held_out}_{k}": v for k, v in val.items()}}
    if stats.peak_mb is not None:  # pragma: no cover - CUDA only: peak_mb is measured on CUDA only
        row["gpu_mem_peak_mb"] = stats.peak_mb
    if run.cfg["loss"] in ("hdm", "mse_hdm"):
        row["dead_heatmaps"] = stats.dead
    return row


def tracked_metrics(row: dict[str, Any]) -> dict[str, float]:
    """An epoch's row as MLflow metrics: the flat names of the log line and ``train_summary.json``
    (``train_loss``, ``val_AP``) under their grouped MLflow names (``train/loss``, ``val/AP``), so the
    UI draws the training curves and the validation curves as sections of their own."""
    return {canonical_key(k): v for k, v in row.items() if k != "epoch"}


def _log_line(row: dict[str, float]) -> str:
    """The epoch's row for the log file, aggregates only: the per-joint and per-pair values (names
    with a dot, e.g. ``val_joint_err.nose``) would make a line of dozens of numbers; MLflow has them."""
    return "  ".join(f"{k}={v:.4g}" for k, v in row.items() if "." not in k)


def _save_checkpoint(run: _Run, epoch: int, rng: list[Any]) -> None:
    """``checkpoints/epoch_NNN.pth``, written atomically: everything :func:`_resume` needs to continue
    exactly (states, RNGs, history, MLflow run) and the hashes :func:`find_resume_checkpoint` checks."""
    ckpt = {"epoch": epoch, "model": run.net.state_dict(), "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None, "rng": rng,
            "history": run.history, "mlflow_run_id": run.run_id, "config_hash": run.cfg_hash,
            "code_hash": run.code, "inputs": run.inputs, "config": run.cfg, "world_size": run.env.world_size}
    save_checkpoint(ckpt, run.ckpt_dir / f"epoch_{epoch:03d}.pth")  # a full disk: one line, the older ones kept
    prune_checkpoints(run.ckpt_dir, epoch)


def _write_final_outputs(run: _Run) -> None:
    """``train_summary.json`` and the final checkpoint (weights, config, history: what evaluation reads),
    written last so that their presence means the run finished: when the checkpoint cannot be written
    (a full disk) the summary is removed again, so neither is left without the other."""
    cfg, seed = run.cfg, run.seed
    summary = {"run": cfg["name"], "seed": seed, "mlflow_run_id": run.run_id, "epochs": run.t["epochs"],
               "history": run.history, "num_parameters": run.n_params, "device": str(run.dev),
               "world_size": run.env.world_size,
               "resumed_from": str(run.resumed_from) if run.resumed_from is not None else None}
    summary_path = run.run_dir / "train_summary.json"
    io.write_json(summary_path, summary)
    try:
        save_checkpoint({"model": run.net.state_dict(), "config": cfg, "mlflow_run_id": run.run_id,
                         "history": run.history, "config_hash": run.cfg_hash, "inputs": run.inputs},
                        run.paths.checkpoint(cfg["name"], seed), "final checkpoint")
    except BaseException:
        summary_path.unlink(missing_ok=True)
        raise
