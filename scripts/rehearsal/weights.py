"""Stand-in pretrained weights for the rehearsal: the paper's ImageNet checkpoints, random values.

The rehearsal profile (params.yaml) runs the paper's full-size architectures, which start from ImageNet
weights that cannot be downloaded here. This module writes files with the real checkpoints' key names,
shapes and on-disk form, filled with seeded random values of plausible scale, so that the pipeline's own
loading paths run unchanged:

* :func:`build_hub_cache`: a Hugging Face hub cache in the hub's on-disk layout holding the timm weights
  (``resnet152.tv_in1k``, ``hrnet_w32.ms_in1k``, ``hrnet_w48.ms_in1k``). With ``HF_HOME=<hf_home>`` and
  ``HF_HUB_OFFLINE=1``, ``timm.create_model(tag, pretrained=True, ...)`` goes through timm's own hub path
  (``load_pretrained`` → ``load_state_dict_from_hf`` → ``hf_hub_download``) and loads these tensors.
  timm asks for ``pytorch_model.bin`` (no ``hf_hub_filename`` in these tags' pretrained configs) and first
  for its safetensors alternative ``model.safetensors``, which is found, so that is the only file stored.
  Keys and shapes are those of timm's classification model of the tag (classifier included, as in the hub
  files), read from the model built on the meta device.
* :func:`build_hrformer_checkpoint`: HRFormer-B's ImageNet checkpoint in the official layout
  (scripts/rehearsal/hrt_official.py: keys derived from github.com/HRNet/HRFormer's cls/ model code, not
  from our own mapping), saved as ``{"model": state_dict}`` as the official files are; or in MMPose's
  layout (``layout="mmpose"``, ``{"state_dict": ...}``).

Both are checked by :func:`check_hub_cache` / :func:`check_hrformer_checkpoint` (every backbone tensor of
the built model equals the file's; nothing in the file unaccounted for) and by
tests/test_rehearsal_weights.py.

Command line (from the repository root)::

    python -m scripts.rehearsal.weights --hf-home data/rehearsal/_hf \\
        --hrformer data/rehearsal/_weights/hrformer_base-32815020_20220226.pth [--check]

then run the rehearsal with ``HF_HOME=data/rehearsal/_hf HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

import torch

from pipeline.data.download import sha256_file

from .hrt_official import HEAD_PREFIXES, mmpose_name, official_keys, official_relative_position_index

PAPER_TIMM_TAGS = ("resnet152.tv_in1k", "hrnet_w32.ms_in1k", "hrnet_w48.ms_in1k")
REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- random values
def plausible_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Seeded random values of a trained network's scale for the entry ``name``: BN running variances in
    (0.5, 1.5) and means near 0, norm weights near 1, small biases, weights ~ N(0, 1/fan_in) (activations
    neither vanish nor explode through 152 layers), relative-position tables ~ N(0, 0.02²). Every value
    differs from timm's and our own initialisation, so a tensor that did not load shows."""
    if name.endswith("num_batches_tracked"):
        return torch.randint(1_000, 1_000_000, shape, generator=gen, dtype=torch.int64)
    x = torch.randn(shape, generator=gen)
    if name.endswith("running_var"):
        x = 1.0 + 0.5 * (torch.rand(shape, generator=gen) * 2 - 1)
    elif name.endswith("running_mean"):
        x = 0.1 * x
    elif name.endswith("relative_position_bias_table"):
        x = 0.02 * x
    elif name.endswith(".bias"):
        x = 0.05 * x
    elif name.endswith(".weight") and len(shape) == 1:        # BatchNorm / LayerNorm scale
        x = 1.0 + 0.1 * x
    elif len(shape) >= 2:
        x = x / math.sqrt(math.prod(shape[1:]))
    else:
        x = 0.02 * x
    return x.to(dtype)


# --------------------------------------------------------------------------- timm: hub cache
def _hub_source(tag: str) -> tuple[str, str]:
    """The hub repo and the file timm will load for ``tag``, from timm's pretrained config."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(tag)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"{tag}: timm has no Hugging Face hub source for it")
    if cfg.file or cfg.state_dict or "@" in cfg.hf_hub_id:
        raise ValueError(f"{tag}: a local file, state dict or pinned revision overrides the hub; not handled")
    requested = cfg.hf_hub_filename or "pytorch_model.bin"   # timm.models._hub.HF_WEIGHTS_NAME
    if requested.endswith(".safetensors"):
        return cfg.hf_hub_id, requested
    if requested == "pytorch_model.bin":
        return cfg.hf_hub_id, "model.safetensors"             # the safetensors alternative timm tries first
    raise ValueError(f"{tag}: timm asks the hub for {requested!r}; not handled")


def timm_state_shapes(tag: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key → (shape, dtype) of timm's classification model ``tag`` (what its hub file holds), read from
    the model built on the meta device (no memory, no initialisation)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(tag, pretrained=False)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def build_hub_cache(hf_home: Path, tags: Iterable[str] = PAPER_TIMM_TAGS, seed: int = 0,
                    dtype: torch.dtype = torch.float16) -> dict[str, Path]:
    """Write a Hugging Face hub cache under ``hf_home`` with random weights for each timm ``tag``.

    Layout (the hub's own): ``<hf_home>/hub/models--<org>--<name>/blobs/<sha256 of the file>``,
    ``refs/main`` holding a 40-hex commit id (no newline) and ``snapshots/<commit>/<file>``, a relative
    symlink to the blob. Floating tensors are stored as ``dtype`` (float16 by default: half the size; timm's
    ``load_state_dict`` copies them into the float32 parameters), integers as int64. Deterministic for a
    seed. Returns tag → snapshot file.
    """
    from safetensors.torch import save_file

    hub = Path(hf_home) / "hub"
    out = {}
    for n, tag in enumerate(tags):
        repo_id, filename = _hub_source(tag)
        gen = torch.Generator().manual_seed(seed * 1000 + n)
        tensors = {}
        for key, (shape, dt) in timm_state_shapes(tag).items():
            tensors[key] = plausible_tensor(key, shape, gen, dtype if dt.is_floating_point else torch.int64)
        repo = hub / ("models--" + repo_id.replace("/", "--"))
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        tmp = repo / "blobs" / f".{filename}.incomplete"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        del tensors
        blob_id = sha256_file(tmp)
        blob = repo / "blobs" / blob_id
        os.replace(tmp, blob)
        commit = hashlib.sha1(f"{repo_id}\n{filename}\n{blob_id}".encode()).hexdigest()
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        snap = repo / "snapshots" / commit / filename
        snap.parent.mkdir(parents=True, exist_ok=True)
        if snap.is_symlink() or snap.exists():
            snap.unlink()
        snap.symlink_to(os.path.relpath(blob, snap.parent))
        out[tag] = snap
    return out


def _pose_model_cfg(tag: str) -> dict:
    family = "simplebaseline" if tag.startswith("resnet") else "hrnet"
    return {"family": family, "backbone": tag, "pretrained": True}


_CHECK_TIMM = r"""
import json, sys
import torch
from safetensors.torch import load_file
from pipeline.models import build_model

report = {}
for tag, cfg, path in json.loads(sys.argv[1]):
    torch.manual_seed(12345)
    model = build_model(cfg, 17)
    own = model.backbone.state_dict()
    ref = load_file(path)
    missing = [k for k in own if k not in ref]
    differ = [k for k in own if k in ref and not torch.equal(own[k], ref[k].to(own[k].dtype))]
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(0)))
    report[tag] = {"backbone_tensors": len(own), "file_tensors": len(ref), "missing": missing,
                   "differ": differ, "unused": sorted(k for k in ref if k not in own),
                   "eval_output_finite": bool(torch.isfinite(out).all())}
print("REPORT " + json.dumps(report))
"""


def check_hub_cache(hf_home: Path, tags: Iterable[str] = PAPER_TIMM_TAGS, *, timeout: float = 600) -> dict:
    """Build each tag's pose model through :func:`pipeline.models.build_model` (``pretrained: true``) in a
    fresh process with ``HF_HOME=hf_home`` and ``HF_HUB_OFFLINE=1`` (huggingface_hub reads both at import)
    and compare every backbone tensor with the cached file's. Returns, per tag, the counts and the
    backbone keys ``missing`` from the file or whose values ``differ``, the file's ``unused`` keys
    (the classifier / classification head, which a features-only backbone does not have) and whether an
    eval-mode forward pass gives finite heatmaps (``eval_output_finite``)."""
    tags = list(tags)
    paths = {}
    for tag in tags:
        repo_id, filename = _hub_source(tag)
        repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
        commit = (repo / "refs" / "main").read_text()
        paths[tag] = str((repo / "snapshots" / commit / filename).resolve())
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ENABLE_HF_TRANSFER")}
    env.update(HF_HOME=str(Path(hf_home).resolve()), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    arg = json.dumps([[t, _pose_model_cfg(t), paths[t]] for t in tags])
    proc = subprocess.run([sys.executable, "-c", _CHECK_TIMM, arg], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"loading through timm's hub path failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(line[len("REPORT "):])


# --------------------------------------------------------------------------- HRFormer-B checkpoint
def hrformer_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16, *, layout: str = "official",
                        variant: str = "hrt_base") -> dict[str, torch.Tensor]:
    """The official ``variant`` ImageNet state dict (:func:`official_keys`) with plausible random values;
    ``relative_position_index`` holds the official constant. ``layout="mmpose"`` renames to MMPose's keys
    (:func:`mmpose_name`), q/k/v concatenated into ``qkv`` as MMPose's ``WindowMSA`` holds them."""
    if layout not in ("official", "mmpose"):
        raise ValueError(f"layout {layout!r}: official or mmpose")
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, entry in official_keys(variant).items():
        if entry.kind == "index":
            state[key] = official_relative_position_index(math.isqrt(entry.shape[0]))
        else:
            state[key] = plausible_tensor(key, entry.shape, gen, torch.int64 if entry.kind == "count" else dtype)
    if layout == "official":
        return state
    mm: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"(.*\.attn\.attn)\.([qkv])_proj\.(weight|bias)$", key)
        if m is None:
            mm[mmpose_name(key)] = value
        elif m[2] == "q":                                      # MMPose's qkv: rows q, then k, then v
            mm[f"{m[1]}.qkv.{m[3]}"] = torch.cat([state[f"{m[1]}.{p}_proj.{m[3]}"] for p in "qkv"])
    return mm


def build_hrformer_checkpoint(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16, *,
                              layout: str = "official") -> Path:
    """Write HRFormer-B's ImageNet checkpoint with random values to ``path``: the official key names and
    shapes (classification head included), saved as ``{"model": state_dict}`` like the official release;
    ``layout="mmpose"`` writes MMPose's names as ``{"state_dict": ...}``. float16 by default (about
    100 MB instead of 200; our loader copies into float32 parameters)."""
    state = hrformer_state_dict(seed, dtype, layout=layout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".incomplete")
    torch.save({"model" if layout == "official" else "state_dict": state}, tmp)
    os.replace(tmp, path)
    return path


def expected_backbone_tensors(file_state: Mapping[str, torch.Tensor], own_keys: Iterable[str],
                              ) -> tuple[dict[str, torch.Tensor], set[str]]:
    """What each of our backbone keys must hold after loading an official-layout ``file_state``, worked
    out from the official names directly (not through pipeline/models/hrformer.py's mapping): our fused
    ``attn.qkv`` = official q, k, v rows stacked; ``attn.proj`` = ``attn.attn.out_proj``;
    ``attn.relative_position_bias_table`` = ``attn.attn.relative_position_bias_table``; every other key
    the same name. Returns those tensors and the file keys they used."""
    expected, used = {}, set()
    for key in own_keys:
        m = re.match(r"(.*)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            names = [f"{m[1]}.attn.attn.{p}_proj.{m[2]}" for p in "qkv"]
            if all(n in file_state for n in names):
                expected[key] = torch.cat([file_state[n] for n in names])
                used.update(names)
            continue
        name = re.sub(r"\.attn\.proj\.", ".attn.attn.out_proj.", key)
        name = re.sub(r"\.attn\.relative_position_bias_table$", ".attn.attn.relative_position_bias_table", name)
        if name in file_state:
            expected[key] = file_state[name]
            used.add(name)
    return expected, used


def check_hrformer_checkpoint(path: Path, *, variant: str = "hrformer_base") -> dict:
    """Load ``path`` (official layout) through :func:`pipeline.models.build_model` and account for every
    tensor: each backbone tensor of ours must equal what :func:`expected_backbone_tensors` derives from
    the file, and each file key must be used or be one the pose backbone does not have (classification
    head, the stage-4 fuse rows into the coarser branches, the constant ``relative_position_index``,
    which must equal ours) and which the loader reports as ignored (``ignored_mismatch`` lists any
    difference). Also reports whether an eval-mode forward pass gives finite heatmaps."""
    from pipeline.checkpoint import load_weights
    from pipeline.models import build_model
    from pipeline.models.hrformer import load_official_checkpoint, relative_position_index

    model = build_model({"family": "hrformer", "backbone": variant, "pretrained": True,
                         "weights": str(path)}, 17)
    own = model.backbone.state_dict()
    raw = load_weights(path, "HRFormer checkpoint")
    file_state = raw.get("model", raw)
    expected, used = expected_backbone_tensors(file_state, own)
    missing = sorted(k for k in own if k not in expected)
    differ = sorted(k for k in expected if not torch.equal(own[k], expected[k].to(own[k].dtype)))
    last_stage = max(int(k.split(".")[0][5:]) for k in file_state if re.match(r"stage\d+\.", k))
    last_module = max(int(k.split(".")[1]) for k in file_state if k.startswith(f"stage{last_stage}."))
    unused_fuse = re.compile(rf"stage{last_stage}\.{last_module}\.fuse_layers\.[1-9]\d*\.")
    unaccounted = sorted(k for k in file_state if k not in used and not k.startswith(HEAD_PREFIXES)
                         and not k.endswith(".relative_position_index") and not unused_fuse.match(k))
    # what the loader reports as ignored must be exactly what no backbone tensor took
    ignored = set(load_official_checkpoint(model, raw))   # the same tensors again
    index = {k: v for k, v in file_state.items() if k.endswith(".relative_position_index")}
    ours = relative_position_index(model.backbone.cfg.window)
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(0)))
    return {"backbone_tensors": len(own), "file_tensors": len(file_state), "used": len(used),
            "missing": missing, "differ": differ, "unaccounted": unaccounted,
            "ignored_mismatch": sorted((set(file_state) - used) ^ ignored),
            "index_differs": sorted(k for k, v in index.items() if not torch.equal(v, ours)),
            "eval_output_finite": bool(torch.isfinite(out).all())}


# --------------------------------------------------------------------------- command line
def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-home", type=Path, help="write the timm weights' hub cache here (use as HF_HOME)")
    p.add_argument("--tags", nargs="+", default=list(PAPER_TIMM_TAGS))
    p.add_argument("--hrformer", type=Path, help="write the HRFormer-B ImageNet checkpoint to this file")
    p.add_argument("--layout", choices=("official", "mmpose"), default="official")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float32", action="store_true", help="store float32 (default float16: half the size)")
    p.add_argument("--check", action="store_true", help="load what was written and compare every tensor")
    args = p.parse_args(argv)
    dtype = torch.float32 if args.float32 else torch.float16
    ok = True
    if args.hf_home:
        build_hub_cache(args.hf_home, args.tags, args.seed, dtype)
        print(f"hub cache: {args.hf_home} ({_size(args.hf_home) / 1e6:.0f} MB)")
        if args.check:
            for tag, r in check_hub_cache(args.hf_home, args.tags).items():
                good = not (r["missing"] or r["differ"]) and r["eval_output_finite"]
                ok &= good
                print(f"  {tag}: {r['backbone_tensors']} backbone tensors, missing {len(r['missing'])}, "
                      f"differ {len(r['differ'])}, finite output {r['eval_output_finite']}: "
                      f"{'ok' if good else 'FAILED'}")
    if args.hrformer:
        build_hrformer_checkpoint(args.hrformer, args.seed, dtype, layout=args.layout)
        size = args.hrformer.stat().st_size / 1e6
        print(f"HRFormer-B checkpoint ({args.layout} layout): {args.hrformer} ({size:.0f} MB)")
        if args.check and args.layout == "official":
            r = check_hrformer_checkpoint(args.hrformer)
            good = not (r["missing"] or r["differ"] or r["unaccounted"] or r["index_differs"]
                        or r["ignored_mismatch"])
            good &= r["eval_output_finite"]
            ok &= good
            print(f"  {r['backbone_tensors']} backbone tensors, missing {len(r['missing'])}, differ "
                  f"{len(r['differ'])}, unaccounted file keys {len(r['unaccounted'])}, finite output "
                  f"{r['eval_output_finite']}: {'ok' if good else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
