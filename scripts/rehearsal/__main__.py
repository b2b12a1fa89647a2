"""Rehearse the paper run on this machine: the ``rehearsal`` profile through a real front-end.

The rehearsal profile (params.yaml) is the paper profile at toy sizes on CPU. Its inputs are made here,
in the real files' names, layouts and formats, and nothing else about the run changes:

1. the dataset downloads (:mod:`.archives`) under ``<inputs>/server/``, served over HTTP on
   127.0.0.1:8641 (:mod:`.serve`) while the command runs: the data stage downloads, verifies and
   installs them as it would COCO's and MPII's;
2. the timm ImageNet weights in a Hugging Face hub cache (:mod:`.weights`), ``<inputs>/hf_home``, used
   offline (``HF_HOME``, ``HF_HUB_OFFLINE=1``): ``pretrained: true`` runs timm's own hub path;
3. HRFormer-B's ImageNet checkpoint in the official layout at the profile's ``model.weights``.

Then the command runs (default: Snakemake, all cores) with that environment, and its exit status is
this program's. The inputs are built once (a stamp records the seed) and reused.

    python -m scripts.rehearsal                                   # snakemake --cores all --config profile=rehearsal
    python -m scripts.rehearsal -- dvc exp run -S profile=rehearsal
    python -m scripts.rehearsal --build-only
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.config import load_params

from .archives import build_archives
from .serve import HOST, PORT, serve
from .weights import build_hrformer_checkpoint, build_hub_cache

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "rehearsal"
DEFAULT_INPUTS = Path("data") / PROFILE / "_inputs"




def build_inputs(inputs: Path, params_file: Path, seed: int = 0) -> dict[str, Path]:
    """Write every input of the rehearsal (skipped when a build with this seed is complete)."""
    params = load_params(params_file, PROFILE)
    stamp = inputs / "inputs.json"
    hrformer = Path(params["profiles"][PROFILE]["archs"]["hrformer_base"]["model"]["weights"])
    paths = {"server": inputs / "server", "hf_home": inputs / "hf_home", "hrformer": hrformer}
    if stamp.is_file() and json.loads(stamp.read_text()).get("seed") == seed and hrformer.is_file():
        return paths
    for sub in ("server", "hf_home"):
        shutil.rmtree(inputs / sub, ignore_errors=True)
    build_archives(paths["server"], seed=seed, params=params)
    build_hub_cache(paths["hf_home"], seed=seed)
    build_hrformer_checkpoint(hrformer, seed=seed)
    stamp.write_text(json.dumps({"seed": seed}) + "\n")
    return paths


def rehearsal_env(hf_home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The command's environment: the offline hub cache, and the local server reached directly."""
    env = dict(os.environ if base is None else base)
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), HOST, "localhost"]))
    env.update({"HF_HOME": str(hf_home.resolve()), "HF_HUB_OFFLINE": "1", "NO_PROXY": no_proxy,
                "no_proxy": no_proxy})
    return env


def run_command(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd``; SIGTERM / SIGINT to this process reach it (a cluster's time limit, Ctrl-C)."""
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):  # noqa: ANN001 - a signal handler's signature
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.rehearsal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=Path, default=DEFAULT_INPUTS, help="where the inputs are built")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated data and weights")
    ap.add_argument("--port", type=int, default=PORT, help="the server's port (params.yaml's URLs name 8641)")
    ap.add_argument("--build-only", action="store_true", help="build the inputs and stop")
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="after --: the command to run (default: snakemake --cores all --config profile=rehearsal)")
    args = ap.parse_args(argv)
    paths = build_inputs(args.inputs, args.params, args.seed)
    if args.build_only:
        print(f"rehearsal inputs in {args.inputs} (HF_HOME={paths['hf_home']}, HRFormer: {paths['hrformer']})")
        return 0
    cmd = [c for c in args.command if c != "--"] or [
        str(Path(sys.executable).parent / "snakemake"), "--cores", "all", "--config", f"profile={PROFILE}"]
    with serve(paths["server"], HOST, args.port):
        return run_command(cmd, rehearsal_env(paths["hf_home"]))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # one line, no traceback (a port in use, an unwritable folder, ...)
        sys.exit(f"error: rehearsal: {exc}")
