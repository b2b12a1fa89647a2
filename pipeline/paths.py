"""Where every output of a profile lives: data, runs, evaluations, reports, pretrained weights, logs.

Its own module, below :mod:`pipeline.config` (which re-exports :class:`Paths`), so that the modules the
config validator itself uses (the pretraining pins, :mod:`pipeline.pretrain.spec`) can name a path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import PipelineError

PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # as the schema's pattern


@dataclass(frozen=True)
class Paths:
    """Every file location of one profile; Snakefile, dvc.yaml and the CLI use the same ones."""

    profile: str

    def __post_init__(self) -> None:
        # the name becomes a folder under data/, results/, reports/ and logs/: never a path
        if not PROFILE_NAME.fullmatch(self.profile):
            raise PipelineError("profile", f"{self.profile!r} is not a valid profile name (letters, digits, _ and - only)")

    @property
    def data(self) -> Path:
        return Path("data") / self.profile

    def dataset(self, name: str) -> Path:
        return self.data / name

    @property
    def archives(self) -> Path:
        """Default download cache of the ``download`` data source (``data.cache`` overrides it)."""
        return self.data / "_archives"

    def manifest(self, name: str) -> Path:
        """Written by the data stage once ``dataset(name)`` is complete and verified."""
        return self.data / f"{name}.manifest.json"

    @property
    def results(self) -> Path:
        return Path("results") / self.profile

    @property
    def mlflow_marker(self) -> Path:
        return self.results / "mlflow_store.json"

    def run_dir(self, run: str, seed: int) -> Path:
        """One training run of one seed: ``results/<profile>/runs/<run>/seed<k>/``."""
        return self.results / "runs" / run / f"seed{int(seed)}"

    def checkpoint(self, run: str, seed: int) -> Path:
        return self.run_dir(run, seed) / "final.pth"

    def eval_dir(self, run: str, seed: int) -> Path:
        return self.results / "eval" / run / f"seed{int(seed)}"

    def eval_metrics(self, run: str, seed: int) -> Path:
        return self.eval_dir(run, seed) / "metrics.json"

    @property
    def reports(self) -> Path:
        return Path("reports") / self.profile

    @property
    def study_reports(self) -> Path:
        """The study target's tables (every run with ``study.seeds``)."""
        return self.reports / "study"

    @property
    def verdict_reports(self) -> Path:
        """The verdict target's tables (every run, study.runs and verdict.runs with ``study.seeds``)."""
        return self.reports / "verdict"

    def pretrained_dir(self, arch: str) -> Path:
        """Output of the ``pretrain`` stage of one architecture (committed for demo and smoke)."""
        return Path("pretrained") / self.profile / arch

    def pretrained_weights(self, arch: str) -> Path:
        """The pretrained backbone: the state dict of the pose model's ``backbone`` submodule."""
        return self.pretrained_dir(arch) / "backbone.pth"

    def pretrained_meta(self, arch: str) -> Path:
        """The weights' JSON sidecar: sha256, pretraining config, curve, accuracy, versions, MLflow run."""
        return self.pretrained_dir(arch) / "backbone.json"

    def logs(self, name: str) -> Path:
        return Path("logs") / self.profile / f"{name}.log"
