"""The data a run read, as MLflow dataset inputs: the runs table's "Dataset" column.

Each input names the dataset and split (``coco/train``, ``coco/val``, ``mpii/tune``, ``coco/test-dev``),
carries the data stage's manifest (``data/<profile>/<dataset>.manifest.json``: every file's size and the
annotations' sha256) as its digest and source, and the context of its use (``training`` by the train
stage, ``evaluation`` by the evaluation). Two runs with the same digest read the same data.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..io import sha256_file
from ..paths import Paths
from ..termination import deferred_termination

log = logging.getLogger(__name__)

CONTEXT_TAG = "mlflow.data.context"  # the input tag the MLflow UI shows as the dataset's context
TRAINING, EVALUATION = "training", "evaluation"
# MLflow stores at most 36 characters of a dataset digest; the full sha256 is in the source
DIGEST_CHARS = 36
# Runs logging the same dataset at the same moment race on the tracking server's one row for it: the
# later insert fails on its key (PostgreSQL, MySQL, SQLite wording); the row exists then, and logging
# again links it to the run.
DUPLICATE_ROW = ("UniqueViolation", "duplicate key value", "Duplicate entry", "UNIQUE constraint failed")
RACE_TRIES = 4


@dataclass(frozen=True)
class DatasetUse:
    """One split of a dataset as a run used it."""

    dataset: str  # "coco", "mpii"
    split: str  # "train", "val", "tune", "test-dev"
    manifest: Path  # the data stage's manifest of the dataset
    context: str  # TRAINING or EVALUATION

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}"


def dataset_uses(profile: str, dataset: str, splits: Iterable[str], context: str) -> list[DatasetUse]:
    """The uses of ``splits`` of ``dataset`` under ``profile``, all with the dataset's one manifest."""
    manifest = Paths(profile).manifest(dataset)
    return [DatasetUse(dataset, split, manifest, context) for split in splits]


def _entity(use: DatasetUse, sha256: str) -> Any:
    """The MLflow input of ``use``: name, digest (the manifest's sha256, cut to MLflow's length),
    source (where the manifest is and its full sha256) and context."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = json.dumps({"uri": str(use.manifest), "dataset": use.dataset, "split": use.split,
                         "manifest_sha256": sha256})
    entity = Dataset(name=use.name, digest=sha256[:DIGEST_CHARS], source_type="local", source=source)
    return DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, use.context)])


def _logged(run: Any) -> set[tuple[str, str, str]]:
    """(name, digest, context) of each dataset input the run already has."""
    out = set()
    for given in run.inputs.dataset_inputs if run.inputs is not None else []:
        context = next((t.value for t in given.tags if t.key == CONTEXT_TAG), "")
        out.add((given.dataset.name, given.dataset.digest, context))
    return out


def log_datasets(mlflow: Any, uses: Iterable[DatasetUse]) -> list[str]:
    """Log each of ``uses`` as a dataset input of the active MLflow run unless the run has it already
    (a resumed training or an evaluation run again); returns the names logged.

    A dataset without a manifest (its files put in place by hand, not by the data stage) has no digest
    to show: it is left out with a warning; training and evaluation do not need the manifest.
    """
    client = mlflow.tracking.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    have = _logged(client.get_run(run_id))
    new = []
    for use in uses:
        if not use.manifest.is_file():
            log.warning("%s: no data manifest, so the run's %s input is not logged to MLflow (the data stage "
                        "writes it: python -m pipeline data --dataset %s)", use.manifest, use.name, use.dataset)
            continue
        sha = sha256_file(use.manifest)
        if (use.name, sha[:DIGEST_CHARS], use.context) not in have:
            new.append(_entity(use, sha))
    if new:
        _log_inputs(client, run_id, new)
    return [n.dataset.name for n in new]


def _log_inputs(client: Any, run_id: str, inputs: list[Any]) -> None:
    """``client.log_inputs``, tried again (a few times, briefly) when another run inserted the same
    dataset row at the same moment; any other failure is raised at once."""
    for attempt in range(1, RACE_TRIES + 1):
        try:
            with deferred_termination():
                client.log_inputs(run_id, datasets=inputs)
            return
        except Exception as exc:  # MLflow's REST or store exception, whatever the backend
            if attempt == RACE_TRIES or not any(marker in str(exc) for marker in DUPLICATE_ROW):
                raise
            log.info("dataset inputs of run %s: another run logged the same dataset at once; again (%d)",
                     run_id, attempt)
            time.sleep(0.2 * attempt)
