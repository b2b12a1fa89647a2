"""Metric names: ``<group>/<name>``, one group per evaluated split or family of measurements.

MLflow's UI draws one chart section per prefix before a ``/``, so a run's ~150 metrics fall into
sections such as ``coco_val`` (``coco_val/AP``), ``mpii_val`` (``mpii_val/Mean``), ``diag``
(``diag/err.nose``), ``train`` (``train/loss``, ``train/lr``) and ``val`` (the per-epoch validation
curves, ``val/AP``). The same names are logged to MLflow, written to ``metrics.json`` and
``headline.json`` (what ``dvc metrics show`` lists) and read by the report.

Stores and files written before used other names: dotted (``coco_val.AP``, ``diag.err.nose``) for
the final metrics and flat ones (``train_loss``, ``val_AP``) for the per-epoch curves.
:func:`canonical_key` turns either into today's name, so readers accept old records; the training
log line and ``train_summary.json`` still use the flat per-epoch names, and :func:`canonical_key`
is also what turns them into MLflow keys.
"""
from __future__ import annotations

from typing import Mapping, TypeVar

SEP = "/"
TRAIN = "train"
HELD_OUT = ("val", "tune")  # the per-epoch validation groups: the held-out split a run validates on
# Per-epoch values of the training loop itself, as the log line names them, and their name in group "train"
TRAIN_CURVES = {"train_loss": "loss", "lr": "lr", "epoch_time_s": "epoch_time_s", "images_per_s": "images_per_s",
                "gpu_mem_peak_mb": "gpu_mem_peak_mb", "dead_heatmaps": "dead_heatmaps"}
# Groups of final metrics whose name starts like a per-epoch validation value (``val_``)
FINAL_GROUPS_LIKE_CURVES = ("val_consistency",)

Value = TypeVar("Value")


def metric_key(group: str, name: str) -> str:
    """The name of metric ``name`` of ``group`` (a split such as ``coco_val``, or ``diag``, ``train``)."""
    return f"{group}{SEP}{name}"


def split_key(key: str) -> tuple[str, str]:
    """``(group, name)`` of a metric key (group ``""`` for a name without one)."""
    group, sep, name = key.partition(SEP)
    return (group, name) if sep else ("", key)


def canonical_key(key: str) -> str:
    """Today's name of a metric named ``key`` by any version: a name with a group is kept; an older
    dotted name (``coco_val.AP``) or per-epoch name (``train_loss``, ``val_AP``, ``val_joint_err.nose``)
    gets its group."""
    if SEP in key:
        return key
    if key in TRAIN_CURVES:
        return metric_key(TRAIN, TRAIN_CURVES[key])
    head, dot, rest = key.partition(".")
    for split in HELD_OUT:
        if head.startswith(split + "_") and head not in FINAL_GROUPS_LIKE_CURVES:
            return metric_key(split, key[len(split) + 1:])
    return metric_key(head, rest) if dot else key


def legacy_key(key: str) -> str:
    """The name an older version gave the metric ``key`` (for stores written before): the inverse of
    :func:`canonical_key`."""
    group, name = split_key(key)
    if not group:
        return key
    if group == TRAIN:
        flat = {short: long for long, short in TRAIN_CURVES.items()}
        return flat.get(name, f"{TRAIN}_{name}")
    if group in HELD_OUT:
        return f"{group}_{name}"
    return f"{group}.{name}"


def canonical_metrics(metrics: Mapping[str, Value]) -> dict[str, Value]:
    """``metrics`` under today's names (:func:`canonical_key`); a record holding a metric under both
    names keeps today's."""
    out = {canonical_key(k): v for k, v in metrics.items() if SEP not in k}
    out.update({k: v for k, v in metrics.items() if SEP in k})
    return out
