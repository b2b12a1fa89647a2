"""docs/paper-config.md: every paper run's resolved configuration beside the official config it follows.

The paper cannot be rerun on this project's machines, so what the ``paper`` profile can guarantee is
that each run is the reference setting the paper says it follows ("we follow their original learning
and optimization configurations"). This module holds that reference, transcribed setting by setting
from the official files (:data:`SOURCES`), and compares it with each run's resolved configuration
(``resolve_run`` plus the code defaults a run actually uses, :func:`builders.with_defaults`):

- :func:`differences` lists every compared setting whose value differs from its reference and is
  not a documented choice in :data:`DEVIATIONS` (the tests require none);
- :func:`render` writes the table a reviewer compares with the official files line by line,
  ``python -m pipeline paper-config`` (``--check``: fail if the committed file is stale).

Differences that live in code rather than in params.yaml (coordinate convention, loss factor, ...)
are listed in :data:`CODE_NOTES`, with their reasons.
"""
from __future__ import annotations

import math
from typing import Any

from ..config import resolve_run
from ..data.transforms import HALF_BODY_UPPER_PROB
from ..engine.builders import with_defaults

PROFILE = "paper"
HRNET_REPO = "https://github.com/leoxiaobin/deep-high-resolution-net.pytorch"
HRFORMER_REPO = "https://github.com/HRNet/HRFormer"

# Reference id -> (repository, file, what it is). Every paper run follows exactly one of them.
SOURCES: dict[str, tuple[str, str]] = {
    "R152-COCO": (HRNET_REPO, "experiments/coco/resnet/res152_384x288_d256x3_adam_lr1e-3.yaml"),
    "W32-COCO": (HRNET_REPO, "experiments/coco/hrnet/w32_384x288_adam_lr1e-3.yaml"),
    "W48-COCO": (HRNET_REPO, "experiments/coco/hrnet/w48_384x288_adam_lr1e-3.yaml"),
    "HRT-B-COCO": (HRFORMER_REPO, "pose/configs/top_down/hrt/coco/hrt_base_coco_384x288.py "
                   "(+ pose/run_dist.sh: 8 GPUs; its MMPose 0.x TopDownCocoDataset and pipelines)"),
    "R152-MPII": (HRNET_REPO, "experiments/mpii/resnet/res152_256x256_d256x3_adam_lr1e-3.yaml"),
    "W32-MPII": (HRNET_REPO, "experiments/mpii/hrnet/w32_256x256_adam_lr1e-3.yaml"),
    "W48-MPII": (HRNET_REPO, "experiments/mpii/hrnet/w48_256x256_adam_lr1e-3.yaml"),
}
_ARCH_REF = {"simplebaseline_res152": "R152", "hrnet_w32": "W32", "hrnet_w48": "W48", "hrformer_base": "HRT-B"}

# ---------------------------------------------------------------------------------------------- reference
# Flat ``section.key`` -> the reference's effective value. A setting absent from a reference is not
# compared (shown with † in the table). Comments give the reference's own spelling where it differs.
_HRNET_RECIPE: dict[str, Any] = {
    "model.pretrained": True,            # MODEL.PRETRAINED: an ImageNet checkpoint
    "train.optimizer": "adam",           # TRAIN.OPTIMIZER
    "train.lr": 0.001,
    "train.betas": [0.9, 0.999],         # optim.Adam(lr=...) leaves torch's default betas
    "train.weight_decay": 0.0,           # TRAIN.WD 0.0001 is in the file but never passed to optim.Adam
    "train.lr_factor": 0.1,
    "train.warmup_iters": 0,             # no warm-up; MultiStepLR stepped once per epoch
    "train.amp": False,                  # float32
    "train.gpus": 4,                     # GPUS: (0,1,2,3)
    "train.sync_bn": False,              # DataParallel: each GPU's replica normalises its own share
    "data.flip": True,
    "data.rot_prob": 0.6,                # JointsDataset: rotation with probability 0.6
    "data.half_body_upper_prob": HALF_BODY_UPPER_PROB,  # np.random.randn() < 0.5
    "data.num_joints_half_body": 8,
    "data.shift_prob": 0.0,              # no box shift in HRNet
    "data.load_shift_prob": 0.0,
}
_COCO_TEST = {"test.flip_test": True, "test.image_thre": 0.0, "test.in_vis_thre": 0.2, "test.oks_thre": 0.9}
_COCO_384 = {"data.input_size": [288, 384], "data.heatmap_size": [72, 96], "data.sigma": 3.0, **_COCO_TEST}
_MPII_256 = {"data.input_size": [256, 256], "data.heatmap_size": [64, 64], "data.sigma": 2.0,
             "data.scale_factor": 0.25, "data.rot_factor": 30, "data.half_body_prob": 0.0,  # PROB_HALF_BODY -1.0: never
             "test.flip_test": True}
_RESNET152 = {"model.family": "simplebaseline", "model.backbone": "resnet152.tv_in1k",  # resnet152-b121ed2d.pth
              "model.deconv_channels": 256, "train.epochs": 140, "train.lr_steps": [90, 120], "train.batch_size": 32,
              "data.color_rgb": False}
_HRNET_210 = {"model.family": "hrnet", "train.epochs": 210, "train.lr_steps": [170, 200], "data.color_rgb": True}

REFERENCE: dict[str, dict[str, Any]] = {
    "R152-COCO": {**_HRNET_RECIPE, **_COCO_384, **_RESNET152, "data.scale_factor": 0.3, "data.rot_factor": 40,
                  "data.half_body_prob": 0.0},          # no PROB_HALF_BODY: the default 0.0
    "W32-COCO": {**_HRNET_RECIPE, **_COCO_384, **_HRNET_210,
                 "model.backbone": "hrnet_w32.ms_in1k",  # hrnet_w32-36af842e.pth
                 "train.batch_size": 32, "data.scale_factor": 0.35, "data.rot_factor": 45, "data.half_body_prob": 0.3},
    "W48-COCO": {**_HRNET_RECIPE, **_COCO_384, **_HRNET_210,
                 "model.backbone": "hrnet_w48.ms_in1k",  # hrnet_w48-8ef0771d.pth
                 "train.batch_size": 24, "data.scale_factor": 0.35, "data.rot_factor": 45, "data.half_body_prob": 0.3},
    "R152-MPII": {**_HRNET_RECIPE, **_MPII_256, **_RESNET152},
    "W32-MPII": {**_HRNET_RECIPE, **_MPII_256, **_HRNET_210, "model.backbone": "hrnet_w32.ms_in1k",
                 "train.batch_size": 32},
    "W48-MPII": {**_HRNET_RECIPE, **_MPII_256, **_HRNET_210, "model.backbone": "hrnet_w48.ms_in1k",
                 "train.batch_size": 32},
    "HRT-B-COCO": {
        **_COCO_384,                     # data_cfg: image_size, heatmap_size; TopDownGenerateTarget sigma=3;
        # test_cfg flip_test=True; det_bbox_thr=0.0, vis_thr=0.2, oks_thr=0.9
        "model.family": "hrformer", "model.backbone": "hrformer_base", "model.pretrained": True,
        "model.drop_path_rate": 0.3,
        "train.optimizer": "adamw", "train.lr": 0.0005, "train.betas": [0.9, 0.999], "train.weight_decay": 0.01,
        "train.epochs": 210, "train.lr_steps": [170, 200], "train.lr_factor": 0.1,   # policy 'step', gamma 0.1
        "train.warmup_iters": 500, "train.warmup_ratio": 0.001,
        "train.amp": True, "train.amp_dtype": "float16",                             # fp16, dynamic loss scale
        "train.batch_size": 8, "train.gpus": 8,                                      # samples_per_gpu=8 × 8 GPUs
        "train.sync_bn": True,                                                       # norm_cfg SyncBN
        "data.scale_factor": 0.5, "data.rot_factor": 40, "data.rot_prob": 0.6,       # TopDownGetRandomScaleRotation
        "data.flip": True, "data.half_body_prob": 0.3, "data.num_joints_half_body": 8,
        "data.half_body_upper_prob": HALF_BODY_UPPER_PROB,  # TopDownHalfBodyTransform: randn() < 0.5
        "data.color_rgb": True,                                                      # LoadImageFromFile: rgb
        "data.shift_prob": 0.0,
        "data.load_shift_prob": 0.3, "data.load_shift_factor": 0.2,                  # _xywh2cs, training boxes
    },
}
# The paper's own settings (Sec. 5.1 / 5.2 and the ablations of Sec. 5.3) for the HDM runs.
PAPER_HDM = {"hdm.epsilon": 1.0, "hdm.iterations": 1000, "hdm.demanders": "subpixel"}
PAPER_HDM_RUNS = {"coco_hrnet_w48_hdm_naive": {"hdm.demanders": "naive"},
                  "coco_hrnet_w48_hdm_it500": {"hdm.iterations": 500},
                  "coco_hrnet_w48_hdm_it1500": {"hdm.iterations": 1500}}

# Settings where a paper run deliberately differs from its reference: (run or "*", key) -> reason.
# Empty: every compared setting equals its reference.
DEVIATIONS: dict[tuple[str, str], str] = {}

# Settings neither reference has (the paper is silent) or that cannot change a result.
CHOICES: dict[str, str] = {
    "hdm.dead_joints": "the paper is silent; a heatmap without a positive pixel gets the softmax transport "
                       "cost instead of no gradient (docs/beyond-the-paper.md, 'Choices where the paper is silent')",
    "hdm.epsilon_units": "the paper gives ε = 1 without units; it is read in heatmap pixels, the costs' "
                         "units (docs/beyond-the-paper.md, 'ε units'); ε in input pixels is a study-only run "
                         "beyond the paper (params.yaml study.runs)",
    "hdm.center_heatmaps": "the paper is silent; HDM runs subtract each heatmap's spatial mean "
                           "(pipeline/models/heads.py): without it training from scratch switched heatmaps off",
    "model.weights": "HRFormer-B's ImageNet checkpoint is a local file the user sets (the reference's "
                     "pretrained='/path/to/hrt_base.pth' too); the run's MLflow tag pretrained_weights "
                     "records its sha256",
    "train.workers": "data-loading processes per GPU (HRNet 24, HRFormer 2): speed only",
    "train.threads": "CPU threads of the training process: speed only",
    "test.batch_size": "inference batch: speed only",
    "device": "cuda: the paper profile trains on GPUs",
}

# Differences in code, not in params.yaml: what, reference, ours, why.
CODE_NOTES: list[tuple[str, str, str, str]] = [
    ("flip test", "mirror back, swap pairs, shift the heatmaps 1 px right", "mirror back and swap, no shift",
     "our coordinates put pixel centres at integers in every frame (docs/conventions.md), which makes the "
     "flip exact; the references' shift compensates their convention. Same decoded keypoints up to "
     "sub-pixel interpolation"),
    ("crop geometry", "box centre -> output centre at (W/2, H/2)", "box edges -> output pixel edges",
     "docs/conventions.md: consistent input and heatmap frames by construction (no half-pixel bias)"),
    ("MSE loss factor (HRFormer runs)", "MMPose 0.x JointsMSELoss: mean squared error, no factor",
     "HRNet's 0.5 × MSE for every MSE run",
     "a constant factor on the loss does not change Adam/AdamW steps (up to eps = 1e-8) nor the fp16 dynamic "
     "loss scale's effect; one MSE loss for all baselines"),
    ("HRNet multi-GPU", "DataParallel over 4 GPUs", "DistributedDataParallel, one process per GPU",
     "the same step: BatchNorm per GPU on 32 (W48 COCO: 24) samples, gradient of the mean loss over the total "
     "batch; running statistics from GPU 0's share in both (DDP broadcasts rank 0's buffers)"),
    ("HRNet ImageNet weights", "hrnet_w32-36af842e.pth / hrnet_w48-8ef0771d.pth (HRNet-Image-Classification)",
     "timm hrnet_w32.ms_in1k / hrnet_w48.ms_in1k",
     "timm's copies of the official HRNet-W32-C / W48-C ImageNet weights (ms = the Microsoft release); "
     "byte equality with those files is not checked here (no download on these machines)"),
    ("ResNet-152 ImageNet weights", "resnet152-b121ed2d.pth (torchvision)", "timm resnet152.tv_in1k",
     "timm's tv_in1k downloads torchvision's IMAGENET1K_V1 ResNet-152 (resnet152-394f9c45.pth, the file "
     "torchvision now serves for those weights; b121ed2d is its older name); not byte-checked here"),
    ("HRFormer augmentation order", "flip, then half-body, then scale/rotation", "half-body, scale/rotation, flip",
     "the same distribution: the upper/lower joint sets and the half-body box are mirror-symmetric"),
    ("HRFormer load-time box shift", "drawn by each of the 8 processes when it builds its dataset",
     "drawn once from the run's seed, the same boxes in every process and on resume",
     "one dataset for the DistributedSampler to split; the same distribution of shifted boxes"),
]

_SKIP = {"name", "profile", "seed", "seeds", "data.root"}
# What a run is, not how it is trained: shown plainly (the HDM runs replace the reference's MSE loss,
# the UDP runs its codec).
_IDENTITY = {"dataset", "arch", "loss", "codec"}


def reference_id(cfg: dict[str, Any]) -> str:
    """The :data:`SOURCES` key a resolved paper run follows."""
    return f"{_ARCH_REF[cfg['arch']]}-{cfg['dataset'].upper()}"


def flat_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved run config (with defaults) as ``section.key`` -> value, plus the derived total batch."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif key not in _SKIP:
                out[key] = v
                if key == "train.gpus":
                    out["train.total_batch"] = v * d["batch_size"]

    walk(cfg, "")
    return out


def reference_of(run: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The reference values of one run (its official config, plus the paper's HDM settings)."""
    ref = dict(REFERENCE[reference_id(cfg)])
    if "train.gpus" in ref and "train.batch_size" in ref:
        ref["train.total_batch"] = ref["train.gpus"] * ref["train.batch_size"]
    if cfg["loss"] == "hdm":
        ref.update(PAPER_HDM)
        ref.update(PAPER_HDM_RUNS.get(run, {}))
    return ref


def paper_runs(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """run -> flat resolved paper configuration (what training uses, defaults filled in)."""
    return {run: flat_config(with_defaults(resolve_run(params, run, PROFILE))) for run in params["runs"]}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _deviation(run: str, key: str) -> str | None:
    return DEVIATIONS.get((run, key)) or DEVIATIONS.get(("*", key))


def differences(params: dict[str, Any]) -> list[str]:
    """Every compared setting of a paper run that differs from its reference without a documented
    reason, and every documented deviation that is no longer one: empty when the profile is the reference."""
    problems = []
    for run, flat in paper_runs(params).items():
        cfg = resolve_run(params, run, PROFILE)
        for key, want in reference_of(run, cfg).items():
            have = flat.get(key, "(missing)")
            documented = _deviation(run, key)
            if not _same(have, want) and not documented:
                problems.append(f"{run}: {key} = {_fmt(have)}, reference {reference_id(cfg)} has {_fmt(want)}")
            elif _same(have, want) and documented:
                problems.append(f"{run}: {key} is documented as a deviation but equals the reference")
    return problems


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if v is None:
        return "null"
    return str(v)


def _setting_keys(runs: dict[str, dict[str, Any]], cfgs: dict[str, dict[str, Any]]) -> list[str]:
    """The table's rows: params.yaml's order, then the keys only the code defaults give (so a setting
    no run writes down still shows)."""
    keys: list[str] = []  # params.yaml's order, then the keys only the code defaults give
    for run in runs:
        keys += [k for k in flat_config(cfgs[run]) if k not in keys]
    for flat in runs.values():
        keys += [k for k in flat if k not in keys]
    return keys


def _header_lines(params: dict[str, Any], runs: dict[str, dict[str, Any]], cfgs: dict[str, dict[str, Any]]
                  ) -> list[str]:
    """Title, how to read the table, the count of undocumented differences and the table's head."""
    return [
        "# The paper profile, run by run, against the official configs",
        "",
        "<!-- Generated by `python -m pipeline paper-config` from params.yaml and pipeline/report/paper_config.py;"
        " do not edit (tests/test_paper_config.py fails when it is stale). -->",
        "",
        "Every paper run's resolved configuration (`profiles.paper` of params.yaml with the code defaults a run "
        "uses), one column per run. A plain value equals the run's reference, transcribed setting by setting in "
        "`pipeline/report/paper_config.py` from the official file named in the row *reference* (ids below); "
        "**bold** with [Dn]: a documented deviation; † the reference has no such setting (a choice, or no "
        "effect on the result: see *Not compared*); — not used by this run (e.g. HDM settings of an MSE run, "
        "deconvolutions of an HRNet).",
        "",
        "Runs differing from their reference without a documented reason: "
        f"**{len(differences(params))}**. Documented deviations in params.yaml: **{len(DEVIATIONS)}**.",
        "",
        "| setting | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
        "| reference | " + " | ".join(reference_id(cfgs[r]) for r in runs) + " |",
    ]


def _setting_cell(run: str, key: str, flat: dict[str, Any], cfg: dict[str, Any], ref: dict[str, Any],
                  notes: dict[Any, int]) -> str:
    """One run's cell of a setting's row: its value, marked when unused, without a reference setting,
    or a documented deviation (with the reference's value and the note's number)."""
    if key not in flat or (key.startswith("hdm.") and cfg["loss"] not in ("hdm", "mse_hdm")):
        return "—"
    value = _fmt(flat.get(key))
    dev = _deviation(run, key)
    if key in _IDENTITY:
        return value
    if key not in ref:
        return f"{value} †"
    if dev:
        n = notes.get((run, key)) or notes[("*", key)]
        return f"**{value}** (ref {_fmt(ref[key])}) [D{n}]"
    return value


def _appendix_lines(notes: dict[Any, int]) -> list[str]:
    """The sections under the table: reference configs, deviations, what is not compared, differences
    in code, GPUs and batch."""
    lines: list[str] = []
    lines += ["", "## Reference configs", "", "| id | repository | file |", "|---|---|---|"]
    lines += [f"| {rid} | {repo} | `{path}` |" if " " not in path else f"| {rid} | {repo} | {path} |"
              for rid, (repo, path) in SOURCES.items()]
    lines += ["", "HDM runs also follow the paper: Sinkhorn ε = 1, 1000 iterations, sub-pixel demanders "
              "(Table 4: naive demanders; Table 5: 500 / 1500 iterations).", "",
              "UDP runs (`codec: udp`) are not paper runs (the paper's UDP rows quote other papers): they follow "
              "the HRNet settings of their architecture above, with UDP's coordinate convention, sub-pixel "
              "Gaussian targets and DARK decoding (docs/conventions.md, UDP).", ""]
    lines += ["## Documented deviations", ""]
    if DEVIATIONS:
        for (run, key), n in notes.items():
            lines.append(f"- D{n} `{key}` ({'all runs' if run == '*' else run}): {DEVIATIONS[(run, key)]}")
    else:
        lines.append("None: every compared setting equals its reference.")
    lines += ["", "## Not compared (†)", ""]
    lines += [f"- `{k}`: {why}" for k, why in CHOICES.items()]
    lines += ["- a setting a reference does not use (e.g. `train.warmup_ratio` or `train.amp_dtype` without "
              "warm-up or mixed precision, `data.*shift_factor` without a shift, COCO's `test.*_thre` on MPII)",
              "", "## Differences in code (not settings)", "",
              "| what | reference | ours | why |", "|---|---|---|---|"]
    lines += [f"| {what} | {ref} | {ours} | {why} |" for what, ref, ours, why in CODE_NOTES]
    lines += ["", "## GPUs and batch", "",
              "`train.batch_size` is per GPU (per process); `train.gpus` is the number of GPUs of one run: "
              "torchrun starts that many processes and the SLURM job asks for `--gpus=<gpus>` "
              "(`--gpus=<gpu_model>:<gpus>` with `cluster.gpu_model`; workflow/rules/train.smk), with "
              "`cluster.mem_mb_per_gpu` × gpus memory and `cluster.cpus_per_gpu` CPUs per GPU. The total batch "
              "is gpus × batch_size, as in the references (HRNet: 4 GPUs; HRFormer: 8).",
              "",
              "With fewer GPUs, keep the total batch and the learning rate: set `gpus` lower and `batch_size` "
              "higher in `profiles.paper.archs.<arch>.train` (HRFormer: `gpus: 4, batch_size: 16`). With "
              "SyncBN (HRFormer) that is the same training step; with per-GPU BatchNorm (HRNet, SimpleBaseline) "
              "each GPU then normalises over more samples than the reference's 32 (W48 COCO: 24), a small "
              "difference. The GPU memory per process grows with `batch_size`.", ""]
    return lines


def render(params: dict[str, Any]) -> str:
    """The Markdown of docs/paper-config.md (deterministic: a function of params.yaml and this module)."""
    runs = paper_runs(params)
    cfgs = {run: resolve_run(params, run, PROFILE) for run in runs}
    refs = {run: reference_of(run, cfgs[run]) for run in runs}
    keys = _setting_keys(runs, cfgs)
    notes = {k: i + 1 for i, k in enumerate(sorted({d for d in DEVIATIONS}, key=str))}
    lines = _header_lines(params, runs, cfgs)
    for key in keys:
        cells = [_setting_cell(run, key, flat, cfgs[run], refs[run], notes) for run, flat in runs.items()]
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += _appendix_lines(notes)
    return "\n".join(lines)
