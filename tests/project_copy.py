"""Test helper: a copy of the workflow (Snakefile, params, rules, package) to run Snakemake in."""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_project(dst: Path) -> None:
    """Copy what a Snakemake run needs into ``dst`` (tests then edit params.yaml there freely)."""
    for name in ("Snakefile", "params.yaml", "workflow", "pipeline", "pretrained"):  # pretrained: committed weights
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / name)
    (dst / "profiles").symlink_to("workflow/profiles")
