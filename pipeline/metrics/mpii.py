"""MPII PCKh as the official HRNet / SimpleBaseline evaluation computes it with ``gt_valid.mat``.

MPII results in the papers are not the MPII server's: they are PCKh@0.5 on the 2,958-person
validation split, computed from ``gt_valid.mat`` with a fixed set of rules. Matching those
rules exactly is what makes our numbers comparable with the published tables:

* ground truth positions (``pos_gt_src``) are 1-based MATLAB pixels; our predictions are
  0-based (see ``docs/conventions.md``), so 1 is added before comparing;
* head size = ``0.6 × ||headbox corner 2 − headbox corner 1||`` (``SC_BIAS``);
* a joint is correct when its error / head size ≤ threshold; joints marked missing
  (``jnt_missing``) are left out;
* columns are percentages: ``Head`` is the head-top joint alone; Shoulder, Elbow, Wrist, Hip,
  Knee, Ankle average the left and right joint's PCKh; ``Mean`` pools all joints except
  pelvis and thorax, each weighted by its number of visible instances;
* ``Mean@0.1`` is the same Mean at threshold 0.1. HRNet's code labels ``Mean@0.1`` the value
  at its ``np.arange(0, 0.51, 0.01)[11]`` = 0.11; that number is returned as ``Mean@0.11``
  for comparison with tables copied from HRNet's logs.

``python -m pipeline.metrics.mpii PREDS GT_VALID`` scores a predictions file (``.mat`` with
``preds`` or JSON) from anywhere.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.skeleton import MPII
from ..errors import PipelineError
from ..io import atomic_path, read_json

SC_BIAS = 0.6
NUM_JOINTS = 16

#: Joint names as stored in ``gt_valid.mat``'s ``dataset_joints`` (same order as skeleton.MPII).
GT_VALID_JOINT_NAMES: tuple[str, ...] = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)
assert len(GT_VALID_JOINT_NAMES) == MPII.num_joints == NUM_JOINTS

#: Reported columns: name -> gt_valid joint names averaged (unweighted, as HRNet does).
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Head", ("head",)),
    ("Shoulder", ("lsho", "rsho")),
    ("Elbow", ("lelb", "relb")),
    ("Wrist", ("lwri", "rwri")),
    ("Hip", ("lhip", "rhip")),
    ("Knee", ("lkne", "rkne")),
    ("Ankle", ("lank", "rank")),
)
#: Joints left out of Mean (pelvis, thorax), by name.
EXCLUDED_FROM_MEAN: tuple[str, ...] = ("pelv", "thor")

_HRNET_LOW_THRESHOLD = float(np.arange(0, 0.5 + 0.01, 0.01)[11])  # what HRNet prints as Mean@0.1

_GT_VARS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")


# ----------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------
def _mat_string(x: Any) -> str:
    """Unwrap the nested object/char arrays scipy makes of a MATLAB cell of strings."""
    while isinstance(x, np.ndarray):
        if x.size == 0:
            return ""
        x = x.ravel()[0]
    return str(x).strip()


def _joint_names(raw: Any, where: str) -> list[str]:
    if raw is None:
        return list(GT_VALID_JOINT_NAMES)
    arr = np.asarray(raw, dtype=object)
    names = [_mat_string(v) for v in arr.ravel()]
    if len(names) != NUM_JOINTS:
        raise PipelineError(where, f"variable 'dataset_joints' has {len(names)} names, expected {NUM_JOINTS}")
    return names


def check_gt(gt: Mapping[str, Any], where: str, require_names: bool) -> dict:
    """Shape-check the gt arrays; return them as float/int numpy arrays."""
    for var in _GT_VARS:
        if var not in gt and (var != "dataset_joints" or require_names):
            raise PipelineError(where, f"variable '{var}' is missing")
    try:
        jnt_missing = np.asarray(gt["jnt_missing"], dtype=np.float64)
        pos = np.asarray(gt["pos_gt_src"], dtype=np.float64)
        heads = np.asarray(gt["headboxes_src"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PipelineError(where, f"ground-truth arrays are not numeric ({exc})") from None
    if jnt_missing.ndim != 2 or jnt_missing.shape[0] != NUM_JOINTS:
        raise PipelineError(where, f"variable 'jnt_missing' has shape {jnt_missing.shape}, expected (16, N)")
    n = jnt_missing.shape[1]
    if pos.shape != (NUM_JOINTS, 2, n):
        raise PipelineError(where, f"variable 'pos_gt_src' has shape {pos.shape}, expected (16, 2, {n})")
    if heads.shape != (2, 2, n):
        raise PipelineError(where, f"variable 'headboxes_src' has shape {heads.shape}, expected (2, 2, {n})")
    return {
        "dataset_joints": _joint_names(gt.get("dataset_joints"), where),
        "jnt_missing": jnt_missing.astype(np.int64),
        "pos_gt_src": pos,
        "headboxes_src": heads,
    }


def load_gt_valid(path: str | Path) -> dict:
    """Read HRNet's ``gt_valid.mat`` (the MPII validation ground truth used for PCKh).

    Returns ``dataset_joints`` (16 names), ``jnt_missing`` (16, N) 0/1, ``pos_gt_src``
    (16, 2, N) 1-based (x, y) and ``headboxes_src`` (2, 2, N) (corner, x/y, person).

    Raises:
        PipelineError: missing or unreadable file, a missing variable or a wrong shape, naming
        the file and the variable.
    """
    from scipy.io import loadmat

    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise PipelineError(where, "file not found")
    try:
        mat = loadmat(str(p))
    except Exception as exc:  # scipy raises several types (MatReadError, ValueError, ...)
        raise PipelineError(where, f"not a readable .mat file ({type(exc).__name__}: {exc})") from None
    return check_gt(mat, where, require_names=True)


# ----------------------------------------------------------------------------------------------
# PCKh
# ----------------------------------------------------------------------------------------------
def _index_of(names: Sequence[str]) -> dict[str, int]:
    """Name -> row; a name not in the file falls back to the standard order."""
    idx = {n: i for i, n in enumerate(GT_VALID_JOINT_NAMES)}
    idx.update({n: i for i, n in enumerate(names) if n})
    return idx


def normalized_errors(preds: np.ndarray, gt: Mapping[str, Any] | str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint error / head size, (16, N), and the visibility mask (16, N) of the gt.

    ``preds`` are 0-based (N, 16, 2) (a third column, e.g. a score, is ignored).
    """
    g = load_gt_valid(gt) if isinstance(gt, (str, Path)) else check_gt(gt, "gt", require_names=False)
    p = np.asarray(preds, dtype=np.float64)
    n = g["pos_gt_src"].shape[2]
    if p.ndim != 3 or p.shape[1] != NUM_JOINTS or p.shape[2] < 2:
        raise PipelineError("predictions", f"shape {p.shape}, expected (N, 16, 2)")
    if p.shape[0] != n:
        # the ground truth is the odd one out as often as the predictions: name the file
        where = str(gt) if isinstance(gt, (str, Path)) else str(gt.get("source", "ground truth"))
        raise PipelineError(where, f"holds {n} people but there are {p.shape[0]} predictions (one per "
                                   "person of the validation annotations): the files do not belong together")
    pred_src = np.transpose(p[:, :, :2] + 1.0, (1, 2, 0))  # (16, 2, N), 1-based like the gt
    err = np.linalg.norm(pred_src - g["pos_gt_src"], axis=1)  # (16, N)
    heads = g["headboxes_src"]
    head_size = np.linalg.norm(heads[1] - heads[0], axis=0) * SC_BIAS  # (N,)
    visible = g["jnt_missing"] == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = err / head_size[None, :]
    return scaled, visible


def joint_correct(scaled: np.ndarray, visible: np.ndarray, threshold: float) -> np.ndarray:
    """(16, N) bool: the joint is visible and its error is at most ``threshold`` head sizes.

    ``scaled``/``visible`` come from :func:`normalized_errors`. NaN (0/0 head size) is wrong.
    """
    return (scaled <= threshold) & visible


def mean_joints(names: Sequence[str]) -> np.ndarray:
    """(16,) bool: the joints pooled into ``Mean`` (all but pelvis and thorax), by file order."""
    idx = _index_of(names)
    used = np.ones(NUM_JOINTS, dtype=bool)
    for name in EXCLUDED_FROM_MEAN:
        used[idx[name]] = False
    return used


def _pck_tables(scaled: np.ndarray, visible: np.ndarray, names: Sequence[str], threshold: float):
    correct = joint_correct(scaled, visible, threshold)
    n_correct = correct.sum(axis=1).astype(np.float64)
    count = visible.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joint = np.where(count > 0, 100.0 * n_correct / np.maximum(count, 1), np.nan)
    idx = _index_of(names)
    used = mean_joints(names)
    total = count[used].sum()
    # weighting each joint's PCKh by its share of visible instances = pooled accuracy
    mean = 100.0 * n_correct[used].sum() / total if total > 0 else float("nan")
    return per_joint, mean, idx


def pckh(
    preds: np.ndarray,
    gt: Mapping[str, Any] | str | Path,
    threshold: float = 0.5,
) -> dict[str, float]:
    """MPII PCKh (percent) of 0-based predictions, in the columns of the papers.

    Args:
        preds: (N, 16, 2) 0-based (x, y) in the original image, MPII joint order
            (``pipeline.data.skeleton.MPII``), one row per ``gt_valid`` person.
        gt: the dict from :func:`load_gt_valid` (or a hand-made one with the same arrays;
            ``dataset_joints`` optional) or the path of ``gt_valid.mat``.
        threshold: normalised-distance threshold of the main columns (0.5 for PCKh@0.5).

    Returns:
        ``Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean`` at ``threshold``, ``Mean@0.1``
        (threshold 0.1) and ``Mean@0.11`` (what HRNet's code prints as Mean@0.1). A column
        with no visible joint is NaN.
    """
    if isinstance(gt, (str, Path)):
        g = {**load_gt_valid(gt), "source": str(gt)}
    else:
        g = check_gt(gt, "gt", require_names=False)
    scaled, visible = normalized_errors(preds, g)
    names = g["dataset_joints"]
    per_joint, mean, idx = _pck_tables(scaled, visible, names, threshold)
    out: dict[str, float] = {}
    for col, joints in COLUMNS:
        out[col] = float(np.mean([per_joint[idx[j]] for j in joints]))
    out["Mean"] = float(mean)
    out["Mean@0.1"] = float(_pck_tables(scaled, visible, names, 0.1)[1])
    out["Mean@0.11"] = float(_pck_tables(scaled, visible, names, _HRNET_LOW_THRESHOLD)[1])
    return out


# ----------------------------------------------------------------------------------------------
# Prediction files
# ----------------------------------------------------------------------------------------------
def load_predictions(path: str | Path) -> np.ndarray:
    """Read MPII predictions: ``.mat`` with ``preds`` (N, 16, 2|3) or a JSON list of N × 16 [x, y].

    Coordinates are returned as stored (this project writes 0-based ones).
    """
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise PipelineError(where, "file not found")
    if p.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            mat = loadmat(str(p))
        except Exception as exc:
            raise PipelineError(where, f"not a readable .mat file ({type(exc).__name__}: {exc})") from None
        if "preds" not in mat:
            raise PipelineError(where, "variable 'preds' is missing")
        raw: Any = mat["preds"]
    elif p.suffix.lower() == ".json":
        raw = read_json(p)
    else:
        raise PipelineError(where, "predictions must be a .mat file (variable 'preds') or a .json file")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise PipelineError(where, "predictions are not an (N, 16, 2) array of numbers") from None
    if arr.ndim != 3 or arr.shape[1] != NUM_JOINTS or arr.shape[2] not in (2, 3):
        raise PipelineError(where, f"predictions have shape {arr.shape}, expected (N, 16, 2)")
    if not np.all(np.isfinite(arr[:, :, :2])):
        raise PipelineError(where, "predictions contain non-finite coordinates")
    return arr[:, :, :2]


def write_predictions(preds: np.ndarray, path: str | Path) -> None:
    """Atomically write 0-based (N, 16, 2) predictions as a ``.mat`` with variable ``preds``.

    Same variable name as HRNet's ``pred.mat`` so MATLAB/HRNet tooling can read it; note
    HRNet's own file is 1-based, ours is 0-based (score ours with ``one_based=False``).
    """
    from scipy.io import savemat

    arr = np.asarray(preds, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != NUM_JOINTS or arr.shape[2] < 2:
        raise PipelineError(str(path), f"predictions have shape {arr.shape}, expected (N, 16, 2)")
    with atomic_path(path) as tmp:
        savemat(str(tmp), {"preds": arr[:, :, :2]}, appendmat=False, do_compression=True)


def evaluate_predictions_file(
    pred_path: str | Path,
    gt_valid_path: str | Path,
    *,
    threshold: float = 0.5,
    one_based: bool = False,
) -> dict[str, float]:
    """PCKh of a predictions file against ``gt_valid.mat``; usable on any MPII predictions.

    ``one_based=True`` scores a file in MATLAB's 1-based pixels, such as HRNet's ``pred.mat``.
    """
    preds = load_predictions(pred_path)
    if one_based:
        preds = preds - 1.0
    gt = load_gt_valid(gt_valid_path)
    n = gt["pos_gt_src"].shape[2]
    if preds.shape[0] != n:
        raise PipelineError(str(pred_path), f"{preds.shape[0]} people but {gt_valid_path} has {n}")
    return pckh(preds, gt, threshold)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.metrics.mpii PREDS GT_VALID``: print PCKh columns as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.metrics.mpii",
        description="MPII PCKh of a predictions file (.mat 'preds' or JSON, 0-based) against gt_valid.mat.",
    )
    parser.add_argument("preds", help="predictions: .mat with 'preds' (N,16,2) or JSON list of N x 16 [x, y]")
    parser.add_argument("gt_valid", help="gt_valid.mat")
    parser.add_argument("--threshold", type=float, default=0.5, help="PCKh threshold (default 0.5)")
    parser.add_argument("--one-based", action="store_true", help="predictions are 1-based (HRNet's pred.mat)")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_predictions_file(args.preds, args.gt_valid, threshold=args.threshold,
                                            one_based=args.one_based)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: (None if math.isnan(v) else v) for k, v in metrics.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
