"""From a resolved run config to the objects training and evaluation need.

Keeps file names of the real dataset layouts (HRNet's) in one place: which annotation,
image folder and detection file each split uses.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..codecs import Codec, get_codec
from ..data import tune as tune_split
from ..data.coco import load_coco_people
from ..data.dataset import TopDownDataset
from ..data.mpii import load_mpii_people
from ..data.skeleton import COCO, MPII, JointSet
from ..data.transforms import HALF_BODY_UPPER_PROB, shift_box_centers
from ..errors import PipelineError
from ..checkpoint import load_weights
from ..config import Paths
from ..io import read_json, sha256_file
from ..losses import HDMLoss, IntegralL1Loss, JointsMSELoss, MSEHDMLoss, paired_codec
from ..models import CenteredHeatmaps, build_model
from ..pretrain.weights import load_backbone

COCO_SPLITS = {
    # split: (annotation or image-info file, image folder, detection file, ground truth for scoring)
    "train": ("annotations/person_keypoints_train2017.json", "images/train2017", None,
              None),
    "val": ("annotations/person_keypoints_val2017.json", "images/val2017",
            "person_detection_results/COCO_val2017_detections_AP_H_56_person.json",
            "annotations/person_keypoints_val2017.json"),
    "test-dev": ("annotations/image_info_test-dev2017.json", "images/test2017",
                 "person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json",
                 # Real test-dev has no public ground truth (scored by the server); the synthetic
                 # test-dev ships one so the demo can fill Table 2.
                 "annotations/person_keypoints_test-dev2017.json"),
}
MPII_SPLITS = {"train": "annot/train.json", "val": "annot/valid.json"}
MPII_GT_VALID = "annot/gt_valid.mat"


def joint_set(cfg: dict[str, Any]) -> JointSet:
    return COCO if cfg["dataset"] == "coco" else MPII


def aspect_ratio(cfg: dict[str, Any]) -> float:
    w, h = cfg["data"]["input_size"]
    return w / h


def codec_name(cfg: dict[str, Any]) -> str:
    """The run's codec: its ``codec`` (params.yaml, MSE runs only: ``udp``) or its loss's default, which
    must be one the loss accepts (:mod:`pipeline.losses.pairing`): MSE (and MSE + alpha × HDM) learn
    Gaussian targets; HDM and integral runs learn from the dots directly, and their decoders read what
    their loss trained (HDM with ``suppliers: softmax`` and integral regression read ``softmax(h)``)."""
    return paired_codec(cfg["loss"], cfg.get("codec"), with_hdm_defaults(cfg.get("hdm") or {}),
                        f"params.yaml: run {cfg.get('name', '?')}: codec")


def codec(cfg: dict[str, Any]) -> Codec:
    """The run's codec, with the training sigma bound in for the codecs that decode with it (udp)."""
    return get_codec(codec_name(cfg), sigma=cfg["data"]["sigma"])


def convention(cfg: dict[str, Any]) -> str:
    """The coordinate convention of the run's crops and heatmaps ("edges", or "udp" for codec udp)."""
    return codec(cfg).convention


def eval_variants(cfg: dict[str, Any]) -> dict[str, Codec]:
    """Decoding variants evaluated beside the run's codec, from the same heatmaps (name → codec): those
    its codec names (:attr:`Codec.variants`).

    MSE runs (and MSE + alpha × HDM, whose MSE term keeps the heatmaps Gaussian) also decode with
    DARK at the training sigma (the paper's "+ DARK" rows); HDM and integral heatmaps are not
    Gaussians, so DARK's assumption does not hold there and they get none.
    UDP runs get none either: their own decoding already is DARK.
    """
    return {label: get_codec(name, sigma=cfg["data"]["sigma"]) for label, name in codec(cfg).variants}


# Optional keys of a run's ``data`` section and their defaults: the HRNet recipe, which the demo and
# smoke profiles follow by leaving them out.
DATA_DEFAULTS: dict[str, Any] = {
    "half_body_upper_prob": HALF_BODY_UPPER_PROB,  # HRNet's and HRFormer's randn() < 0.5 (≈ 0.69)
    "shift_prob": 0.0,         # MMPose 1.x's per-sample box-centre shift: none in HRNet or HRFormer
    "shift_factor": 0.0,
    "load_shift_prob": 0.0,    # HRFormer's training-box centre shift, drawn once at load (0.3) ...
    "load_shift_factor": 0.0,  # ... by up to ± this fraction of the box's width / height (0.2)
}
# A fixed stream for the draws made once when the data loads, apart from the per-sample ones.
LOAD_SHIFT_STREAM = 1


def with_data_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved ``data`` section with every optional key filled in."""
    return {**DATA_DEFAULTS, **data}


# --------------------------------------------------------------------------- the tune split
TUNE = "tune"
COCO_TUNE_ANN = "person_keypoints_tune.json"
MPII_TUNE_ANN, MPII_GT_TUNE = "tune.json", "gt_tune.mat"


def holdout_split(cfg: dict[str, Any]) -> str:
    """The split a run is validated per epoch and evaluated on: ``tune`` for a run with ``split:
    tune`` (hyperparameter search: val must never choose), else ``val``."""
    return TUNE if cfg.get("split") == TUNE else "val"


@functools.lru_cache(maxsize=8)
def _train_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a train annotation file, hashed once per process and file version (validation asks
    every epoch; COCO's train file is ~450 MB)."""
    return sha256_file(Path(path))


def tune_dir(cfg: dict[str, Any]) -> Path:
    """Where the tune split's derived files live: ``data/<profile>/_tune/<dataset>/
    fraction<f>-seed<s>-<sha256[:12] of the train annotations>/``, beside (never inside) the dataset
    folder, which may be the user's own copy. Named by everything its content depends on, so a
    changed fraction, seed or train file gets new files instead of stale ones."""
    root = Path(cfg["data"]["root"])
    train = root / (COCO_SPLITS["train"][0] if cfg["dataset"] == "coco" else MPII_SPLITS["train"])
    if not train.is_file():
        raise PipelineError(str(train), "file not found (the tune split is drawn from the train annotations)")
    t = cfg.get("tune")
    if not t:
        raise PipelineError(f"params.yaml: run {cfg['name']}", "reads the tune split but its config has no "
                                                               "tune section (set split: tune on the run)")
    stat = train.stat()
    digest = _train_digest(str(train.resolve()), stat.st_size, stat.st_mtime_ns)
    name = f"fraction{float(t['fraction']):g}-seed{int(t['seed'])}-{digest[:12]}"
    return root.parent / "_tune" / root.name / name


def tune_files(cfg: dict[str, Any]) -> dict[str, Path]:
    """The tune split's annotation and ground-truth files, written on first use (atomically; the
    content is a pure function of the train annotations, ``tune.fraction`` and ``tune.seed``).
    ``ann``: what :func:`records` reads; ``gt``: what the metric scores against."""
    root, out = Path(cfg["data"]["root"]), tune_dir(cfg)
    frac, seed = float(cfg["tune"]["fraction"]), int(cfg["tune"]["seed"])
    if cfg["dataset"] == "mpii":
        tune_split.write_mpii_tune(root / MPII_SPLITS["train"], out / MPII_TUNE_ANN, out / MPII_GT_TUNE, frac, seed)
        return {"ann": out / MPII_TUNE_ANN, "gt": out / MPII_GT_TUNE}
    ann = tune_split.write_coco_tune(root / COCO_SPLITS["train"][0], out / COCO_TUNE_ANN, frac, seed)
    return {"ann": ann, "gt": ann}


def ground_truth(cfg: dict[str, Any], split: str) -> Path:
    """The file a split is scored against: COCO's keypoint annotations, MPII's ``gt_valid.mat`` form."""
    if split == TUNE:
        return tune_files(cfg)["gt"]
    root = Path(cfg["data"]["root"])
    return root / (MPII_GT_VALID if cfg["dataset"] == "mpii" else COCO_SPLITS[split][3])


def _tune_records(cfg: dict[str, Any]) -> list[dict]:
    """People of the tune images (ground-truth boxes: train images have no person detections)."""
    root, ann = Path(cfg["data"]["root"]), tune_files(cfg)["ann"]
    if cfg["dataset"] == "mpii":
        return load_mpii_people(ann, root / "images", aspect_ratio=aspect_ratio(cfg))
    return load_coco_people(ann, root / COCO_SPLITS["train"][1], aspect_ratio=aspect_ratio(cfg), use_gt_boxes=True)


def _without_tune(cfg: dict[str, Any], recs: list[dict]) -> list[dict]:
    """Training people of a ``split: tune`` run: those whose image is not in the tune split."""
    ann = read_json(tune_files(cfg)["ann"])
    if cfg["dataset"] == "mpii":
        held = {e["image"] for e in ann}
        return [r for r in recs if Path(r["image_path"]).name not in held]
    held_ids = {int(img["id"]) for img in ann["images"]}
    return [r for r in recs if r["image_id"] not in held_ids]


def records(cfg: dict[str, Any], split: str, *, boxes: str = "gt") -> list[dict]:
    """Person records of one split; ``boxes`` is "gt" or "det" (COCO's person detections).

    The training split gets the run's load-time box shift (``data.load_shift_prob``), seeded by the
    run's seed, so every process of a DDP job and every resume sees the same boxes. ``tune`` is the
    people of the tune images (:mod:`pipeline.data.tune`); for a run with ``split: tune`` the training
    split leaves them out. Other runs read the training split as it is.
    """
    if split == TUNE:
        return _tune_records(cfg)
    root = Path(cfg["data"]["root"])
    d = with_data_defaults(cfg["data"])
    held_out = split == "train" and holdout_split(cfg) == TUNE
    if cfg["dataset"] == "mpii":  # no person box to shift (pipeline/config.py refuses load_shift_prob > 0)
        recs = load_mpii_people(root / MPII_SPLITS[split], root / "images", aspect_ratio=aspect_ratio(cfg))
        return _without_tune(cfg, recs) if held_out else recs
    ann, images, det, _ = COCO_SPLITS[split]
    if boxes != "gt":
        return load_coco_people(root / ann, root / images, aspect_ratio=aspect_ratio(cfg), use_gt_boxes=False,
                                det_file=root / det, image_thre=cfg["test"]["image_thre"])
    recs = load_coco_people(root / ann, root / images, aspect_ratio=aspect_ratio(cfg), use_gt_boxes=True)
    if held_out:
        recs = _without_tune(cfg, recs)
    if split == "train" and d["load_shift_prob"] > 0:
        rng = np.random.default_rng([cfg["seed"], LOAD_SHIFT_STREAM])
        recs = shift_box_centers(recs, rng, d["load_shift_prob"], d["load_shift_factor"])
    return recs


def dataset(cfg: dict[str, Any], recs: list[dict], *, train: bool) -> TopDownDataset:
    d = with_data_defaults(cfg["data"])
    js = joint_set(cfg)
    aug = {
        "scale_factor": d["scale_factor"], "rot_factor": d["rot_factor"], "rot_prob": d["rot_prob"],
        "flip": d["flip"], "half_body_prob": d["half_body_prob"],
        "half_body_upper_prob": d["half_body_upper_prob"],
        "num_joints_half_body": d["num_joints_half_body"],
        "shift_factor": d["shift_factor"], "shift_prob": d["shift_prob"],
    }
    return TopDownDataset(recs, joint_set=js, input_size=d["input_size"], heatmap_size=d["heatmap_size"],
                          codec=codec_name(cfg), sigma=d["sigma"], train=train, aug_cfg=aug,
                          color_rgb=d["color_rgb"], seed=cfg["seed"])


def init_checkpoint(cfg: dict[str, Any]) -> Path:
    """The ``final.pth`` a run with ``init_from`` starts from: that run's, of the same training seed."""
    return Paths(cfg["profile"]).checkpoint(cfg["init_from"], cfg["seed"])


def _bare_state(state: dict[str, Any]) -> dict[str, Any]:
    """A model state dict without :class:`CenteredHeatmaps`' ``net.`` prefix (it has no parameters
    of its own), so MSE (bare) and HDM (wrapped) checkpoints load into each other's models."""
    if state and all(k.startswith("net.") for k in state):
        return {k[len("net."):]: v for k, v in state.items()}
    return dict(state)


def load_init_weights(cfg: dict[str, Any], net: nn.Module) -> None:
    """Load the trained weights of the run's ``init_from`` (same seed) into ``net``, wrapped or not.

    A missing file stops with one line naming it and the run that writes it; a checkpoint whose
    tensors do not fit (another architecture or joint set) names the file too.
    """
    path = init_checkpoint(cfg)
    if not path.is_file():
        raise PipelineError(str(path), f"not found: run {cfg['name']} starts from it (init_from); train run "
                                       f"{cfg['init_from']} (seed {cfg['seed']}) first")
    state = load_weights(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise PipelineError(str(path), "holds no 'model' state dict (not a final.pth of this pipeline)")
    inner = net.net if isinstance(net, CenteredHeatmaps) else net
    try:
        inner.load_state_dict(_bare_state(state["model"]))
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise PipelineError(str(path), f"does not fit run {cfg['name']}'s model ({first})") from None


def model(cfg: dict[str, Any], *, initial_weights: bool = True) -> nn.Module:
    """The run's network; a bad ``model`` value is named by its full key in params.yaml.

    With ``model.backbone_weights`` (demo/smoke: the pretrain stage's output) the backbone is loaded from
    the pinned file (sha256 checked, ``weights_only``); the head keeps the initialisation of the model's
    constructor (the reference's), drawn from the same RNG state for MSE and HDM runs of one seed, so
    both start from identical weights. ``initial_weights=False`` builds the architecture alone, without
    fetching or loading any pretrained weights (timm's hub, HRFormer's file, the pretrain stage's): for
    evaluation, whose checkpoint replaces every tensor, so an evaluation job needs neither the hub nor
    the ImageNet files. A run with ``init_from`` starts from that run's trained weights
    (:func:`load_init_weights`) and fetches or loads no pretrained backbone."""
    model_cfg = cfg["model"]
    if not initial_weights or cfg.get("init_from") is not None:
        model_cfg = {**model_cfg, "pretrained": False, "weights": None, "backbone_weights": None}
    try:
        net = build_model(model_cfg, joint_set(cfg).num_joints)
    except PipelineError as exc:
        if not exc.where.startswith("model."):
            raise
        if exc.where == "model.output_stride":  # set by the run's heatmap_stride, not by the architecture
            raise PipelineError(f"params.yaml: run {cfg['name']}: heatmap_stride", exc.what) from None
        raise PipelineError(f"params.yaml: profiles.{cfg['profile']}.archs.{cfg['arch']}.{exc.where}",
                            exc.what) from None
    if model_cfg.get("backbone_weights") is not None:
        load_backbone(net, cfg["model"]["backbone_weights"], cfg["profile"], cfg["arch"])
    if cfg["loss"] == "hdm" and cfg["hdm"]["center_heatmaps"]:  # not mse_hdm: its MSE term fixes the scale
        net = CenteredHeatmaps(net)
    if initial_weights and cfg.get("init_from") is not None:
        load_init_weights(cfg, net)
    return net


def check_output_size(cfg: dict[str, Any], net: nn.Module) -> None:
    """The network's heatmaps must have ``heatmap_size``; checked with one forward pass on zeros before
    training or evaluation starts (else the loss fails mid-run, after the MLflow run was opened)."""
    w, h = cfg["data"]["input_size"]
    was_training = net.training
    net.eval()  # no batch-norm statistics updated, no dropout drawn from the RNG
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, 3, h, w, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
    got = [int(out.shape[-1]), int(out.shape[-2])]
    want = [int(v) for v in cfg["data"]["heatmap_size"]]
    if got != want:
        key = f"params.yaml: profiles.{cfg['profile']}.datasets.{cfg['dataset']}.heatmap_size"
        raise PipelineError(key, f"{want} does not match the model's output {got} for input_size "
                                 f"{[w, h]} ({cfg['arch']}: output stride {w // max(got[0], 1)}); set it to {got}")


def heatmap_stride(cfg: dict[str, Any]) -> float:
    """Input pixels per heatmap pixel, from ``data.input_size / data.heatmap_size``.

    HDM's ``epsilon_units: input`` divides epsilon by it; one number only makes sense if both axes
    agree, so a mismatch is a config error (named by its key) rather than a silent choice of axis.
    """
    (w_in, h_in), (w_hm, h_hm) = cfg["data"]["input_size"], cfg["data"]["heatmap_size"]
    sx, sy = w_in / w_hm, h_in / h_hm
    if sx != sy:
        key = f"params.yaml: profiles.{cfg['profile']}.datasets.{cfg['dataset']}.heatmap_size"
        raise PipelineError(key, f"strides differ: input_size {[w_in, h_in]} / heatmap_size {[w_hm, h_hm]} = "
                                 f"{sx:g} (x) vs {sy:g} (y); hdm.epsilon_units: input needs one stride")
    return float(sx)


# Optional keys of a run's ``hdm`` section and their defaults: ``heatmap`` is the behaviour before the
# key existed (the paper's ε = 1 read on heatmap-pixel costs).
HDM_DEFAULTS: dict[str, Any] = {"epsilon_units": "heatmap", "suppliers": "relu"}  # relu: Eq. 3


def with_hdm_defaults(hdm: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved ``hdm`` section with every optional key filled in."""
    return {**HDM_DEFAULTS, **hdm}


def hdm_loss(cfg: dict[str, Any]) -> HDMLoss:
    """The run's HDM criterion from its ``hdm`` section. ``epsilon_units`` is optional (default
    ``heatmap``, the behaviour before the key existed; ``input`` makes the loss use ``epsilon / stride``,
    see :class:`HDMLoss`), and so is ``suppliers`` (default ``relu``, Eq. 3)."""
    h = with_hdm_defaults(cfg["hdm"])
    units = h["epsilon_units"]
    stride = heatmap_stride(cfg) if units == "input" else None
    return HDMLoss(epsilon=h["epsilon"], iterations=h["iterations"], demanders=h["demanders"],
                   dead_joints=h["dead_joints"], epsilon_units=units, stride=stride, suppliers=h["suppliers"])


def loss(cfg: dict[str, Any]) -> nn.Module:
    """The run's criterion (which batch parts each reads: :func:`pipeline.engine.train.compute_loss`)."""
    if cfg["loss"] == "mse":
        return JointsMSELoss(use_target_weight=True)
    if cfg["loss"] == "integral":
        return IntegralL1Loss()
    if cfg["loss"] == "mse_hdm":
        return MSEHDMLoss(hdm_loss(cfg), alpha=cfg["alpha"])
    return hdm_loss(cfg)


def device(cfg: dict[str, Any]) -> torch.device:
    """``auto`` picks CUDA when present, so the same config runs on a laptop and a GPU node."""
    want = cfg["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"profiles.{cfg['profile']}.device", "cuda requested but no CUDA device is visible")
    return torch.device(want)


# --------------------------------------------------------------------------- optimiser and schedule
# Optional keys of a run's ``train`` section and their defaults (params.yaml may leave them out; the
# demo and smoke profiles do, so their runs stay exactly the reference recipe: Adam, no warm-up, fp32).
TRAIN_DEFAULTS: dict[str, Any] = {
    "betas": [0.9, 0.999],     # Adam/AdamW (torch's defaults)
    "warmup_iters": 0,         # linear warm-up over this many optimiser steps (HRFormer: 500) ...
    "warmup_ratio": 0.001,     # ... starting from warmup_ratio × lr (HRFormer: 0.001)
    "amp": False,              # mixed precision (on CPU too, where torch supports the dtype there)
    "amp_dtype": "bfloat16",   # bfloat16: no loss scaling needed | float16: with a GradScaler
    "sync_bn": False,          # under DDP: BatchNorm over each GPU's share (HRNet) | all processes (HRFormer)
}


def with_train_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved run config with every optional ``train`` key filled in."""
    out = dict(cfg)
    out["train"] = {**TRAIN_DEFAULTS, **cfg["train"]}
    out["train"]["betas"] = list(out["train"]["betas"])
    return out


def with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved run config with every optional ``train``, ``data`` and ``hdm`` key filled
    in: what a run actually uses, as logged to MLflow and rendered in docs/paper-config.md (so an HDM
    run's MLflow params say which ε units it trained with, even when params.yaml leaves them out)."""
    out = with_train_defaults(cfg)
    out["data"] = with_data_defaults(cfg["data"])
    out["hdm"] = with_hdm_defaults(cfg["hdm"])
    return out


def no_weight_decay_names(net: nn.Module) -> set[str]:
    """Parameter names a model asks to keep out of weight decay.

    Any submodule (the model itself, or one inside a wrapper such as :class:`CenteredHeatmaps` or
    DistributedDataParallel) may define a method ``no_weight_decay_keys()`` returning parameter names
    relative to itself (HRFormer: its relative-position bias tables); they are prefixed with the
    submodule's path here. Models without the method exempt nothing.
    """
    names: set[str] = set()
    for prefix, module in net.named_modules():
        fn = getattr(module, "no_weight_decay_keys", None)
        if callable(fn):
            names.update(f"{prefix}.{k}" if prefix else k for k in fn())
    return names


def param_groups(net: nn.Module, t: dict[str, Any]) -> list[dict[str, Any]]:
    """Optimiser parameter groups of a run.

    ``adam`` keeps the reference recipe: one group, its ``weight_decay`` (Adam's L2 term) on every
    parameter. ``adamw`` decays every parameter except the names of :func:`no_weight_decay_names`:
    the HRFormer pose recipe (MMPose/HRFormer configs) exempts only the relative-position bias
    tables, and norms and biases keep their decay there.
    """
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if t["optimizer"] != "adamw" or t["weight_decay"] == 0:
        return [{"params": [p for _, p in params], "weight_decay": t["weight_decay"]}]
    exempt = no_weight_decay_names(net)
    decay = [p for n, p in params if n not in exempt]
    no_decay = [p for n, p in params if n in exempt]
    return [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer(cfg: dict[str, Any], net: nn.Module) -> torch.optim.Optimizer:
    t = with_train_defaults(cfg)["train"]
    groups = param_groups(net, t)
    betas = tuple(t["betas"])
    if t["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=t["lr"], betas=betas, weight_decay=t["weight_decay"])
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=t["lr"], betas=betas, weight_decay=t["weight_decay"])
    raise PipelineError(f"profiles.{cfg['profile']}.train.optimizer", f"unknown optimizer {t['optimizer']!r}")


class WarmupMultiStepLR:
    """The learning-rate schedule: a step schedule per epoch with an optional linear warm-up per step.

    The rate of an optimiser step taken after ``epoch`` completed epochs and ``iteration`` completed
    steps is ``base_lr × gamma^(milestones ≤ epoch) × w(iteration)`` with
    ``w(i) = warmup_ratio + (1 - warmup_ratio) × i / warmup_iters`` for ``i < warmup_iters``, else 1
    (MMCV's linear warm-up, which HRFormer uses: 500 steps from 0.001×). Without warm-up it equals
    torch's MultiStepLR stepped once per epoch, the reference recipe. Call :meth:`step_iter` after every
    optimiser step and :meth:`step_epoch` after every epoch; the state (two counters) is checkpointed.
    """

    def __init__(self, opt: torch.optim.Optimizer, milestones: list[int], gamma: float, *,
                 warmup_iters: int = 0, warmup_ratio: float = 0.001) -> None:
        self.optimizer = opt
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.base_lrs = [g["lr"] for g in opt.param_groups]
        self.epoch = 0
        self.iteration = 0
        self._apply()

    def warmup_factor(self, iteration: int) -> float:
        if iteration >= self.warmup_iters:
            return 1.0
        return self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters

    def lr_at(self, epoch: int, iteration: int) -> list[float]:
        """The rates of every parameter group for a step after ``epoch`` epochs and ``iteration`` steps."""
        out = []
        for lr in self.base_lrs:
            for m in self.milestones:  # multiplied milestone by milestone, as MultiStepLR does
                if m <= epoch:
                    lr *= self.gamma
            w = self.warmup_factor(iteration)
            out.append(lr * w if w != 1.0 else lr)
        return out

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lr_at(self.epoch, self.iteration)):
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step_iter(self) -> None:
        self.iteration += 1
        if self.iteration <= self.warmup_iters:
            self._apply()

    def step_epoch(self) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "iteration": self.iteration, "base_lrs": list(self.base_lrs),
                "milestones": list(self.milestones), "gamma": self.gamma, "warmup_iters": self.warmup_iters,
                "warmup_ratio": self.warmup_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.base_lrs = list(state["base_lrs"])
        self._apply()


def scheduler(cfg: dict[str, Any], opt: torch.optim.Optimizer) -> WarmupMultiStepLR:
    t = with_train_defaults(cfg)["train"]
    return WarmupMultiStepLR(opt, t["lr_steps"], t["lr_factor"], warmup_iters=t["warmup_iters"],
                             warmup_ratio=t["warmup_ratio"])
