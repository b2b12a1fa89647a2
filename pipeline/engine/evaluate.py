"""The paper's test protocol for one trained run, logged to the run's MLflow record.

COCO: val2017 with the person detections (flip test, rescoring, OKS-NMS at 0.9) → Table 1;
val2017 with ground-truth boxes (a detector-free reference); test-dev with its detections → the
submission file in the COCO results format, zipped for the evaluation server
(``submission/person_keypoints_test-dev2017_<run>_results.zip``, see :mod:`pipeline.metrics.coco_server`),
scored when ground truth is present (synthetic data) → Table 2; real test-dev's scores come back from
the server and are loaded by ``python -m pipeline testdev-scores``. MPII: val with the flip test → PCKh@0.5 (Table 3).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..config import Paths, run_label
from ..errors import PipelineError
import numpy as np

from ..data.transforms import image_to_heatmap
from ..metrics import coco as coco_metrics
from ..metrics import coco_bootstrap, coco_server, diagnostics, mpii_bootstrap
from ..metrics.bootstrap_files import bootstrap_file
from ..metrics import mpii as mpii_metrics
from ..tracking import open_run, table_tags
from . import builders
from .inference import coco_predictions, predict

log = logging.getLogger(__name__)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PipelineError(str(path), "checkpoint not found: run the train stage first")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise PipelineError(str(path), f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def run_diagnostics(cfg: dict[str, Any], pred: dict[str, np.ndarray], recs: list[dict]) -> dict[str, float]:
    """Per-joint median error, left/right separation ratios and dead heatmaps of predictions on
    ground-truth boxes, as flat MLflow metrics ``diag.*`` (errors in heatmap pixels)."""
    js = builders.joint_set(cfg)
    size = cfg["data"]["heatmap_size"]
    if not recs:
        return {}
    gt = np.stack([r["joints"] for r in recs]).astype(np.float64)
    vis = np.stack([r["vis"] for r in recs]) > 0
    pred_hm = image_to_heatmap(pred["coords"], pred["center"], pred["scale"], size)
    gt_hm = image_to_heatmap(gt, pred["center"], pred["scale"], size)
    errors = diagnostics.joint_errors(pred_hm, gt_hm, vis)
    ratios = diagnostics.separation_ratios(pred_hm, gt_hm, vis, js.flip_pairs)
    dead = diagnostics.dead_fractions(pred["peak"])
    out = {f"diag.err.{js.joints[k]}": float(e) for k, e in enumerate(errors)}
    out.update({f"diag.sep.{diagnostics.pair_name(js.joints[a], js.joints[b])}": r for (a, b), r in ratios.items()})
    out.update({f"diag.dead.{js.joints[k]}": float(d) for k, d in enumerate(dead)})
    out["diag.median_err"] = float(np.nanmedian(errors)) if np.isfinite(errors).any() else float("nan")
    out["diag.collapsed_pairs"] = float(len(diagnostics.collapsed_pairs(ratios)))
    out["diag.dead_fraction"] = float(np.mean(pred["peak"] <= 0)) if len(pred["peak"]) else float("nan")
    return out


def _coco_split(net, cfg, dev, split: str, boxes: str, out_dir: Path, results_name: str,
                progress: bool) -> tuple[dict[str, float] | None, dict[str, np.ndarray], list[dict]]:
    """Predict one split, write its results file; (COCO stats or None without ground truth, the
    predictions, the records)."""
    recs = builders.records(cfg, split, boxes=boxes)
    t = cfg["test"]
    pred = predict(net, cfg, recs, flip_test=t["flip_test"], dev=dev, batch_size=t["batch_size"],
                   progress=progress, desc=f"{cfg['name']} {split} ({boxes} boxes)")
    kept = coco_metrics.rescore_and_nms(coco_predictions(pred), in_vis_thre=t["in_vis_thre"],
                                        oks_thre=t["oks_thre"])
    results = out_dir / results_name
    coco_metrics.write_results(kept, results)
    gt = Path(cfg["data"]["root"]) / builders.COCO_SPLITS[split][3]
    if not gt.is_file():
        log.info("%s: no ground truth at %s; wrote %s for the evaluation server", split, gt, results)
        return None, pred, recs
    return coco_metrics.evaluate_keypoints(gt, results), pred, recs


def evaluate_run(cfg: dict[str, Any], *, tracking_uri: str, experiment: str, progress: bool = True) -> dict:
    """Evaluate the run's final checkpoint; writes metrics.json and prediction files."""
    paths = Paths(cfg["profile"])
    seed = cfg["seed"]
    ckpt = load_checkpoint(paths.checkpoint(cfg["name"], seed))
    dev = builders.device(cfg)
    if dev.type == "cpu":
        torch.set_num_threads(cfg["train"]["threads"])
    net = builders.model(cfg)
    net.load_state_dict(ckpt["model"])
    net.to(dev)
    out_dir = paths.eval_dir(cfg["name"], seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    submission: Path | None = None
    if cfg["dataset"] == "coco":
        for key, split, boxes, fname in (
            ("coco_val", "val", "det", f"person_keypoints_val2017_{cfg['name']}_results.json"),
            ("coco_val_gtbox", "val", "gt", f"person_keypoints_val2017_gtbox_{cfg['name']}_results.json"),
            ("coco_testdev", "test-dev", "det", coco_server.results_name(cfg["name"])),
        ):
            stats, pred, recs = _coco_split(net, cfg, dev, split, boxes, out_dir, fname, progress)
            if stats is not None:
                metrics.update({f"{key}.{k}": v for k, v in stats.items()})
                if key in ("coco_val", "coco_testdev"):  # per-image matches for the report's bootstrap
                    gt = Path(cfg["data"]["root"]) / builders.COCO_SPLITS[split][3]
                    coco_bootstrap.save_matches(coco_bootstrap.coco_image_matches(gt, out_dir / fname),
                                                bootstrap_file(out_dir, key))
            if key == "coco_val_gtbox":
                metrics.update(run_diagnostics(cfg, pred, recs))
            if key == "coco_testdev":
                submission, sub_tags = coco_server.package_testdev(out_dir, cfg["name"], scored=stats is not None)
                tags.update(sub_tags)
                if stats is None:
                    log.info("test-dev submission for the COCO server: %s (then: python -m pipeline "
                             "testdev-scores --run %s --scores FILE)", submission, cfg["name"])
    else:
        recs = builders.records(cfg, "val")
        t = cfg["test"]
        pred = predict(net, cfg, recs, flip_test=t["flip_test"], dev=dev, batch_size=t["batch_size"],
                       progress=progress, desc=f"{cfg['name']} val")
        mpii_metrics.write_predictions(pred["coords"], out_dir / "pred.mat")
        gt_valid = Path(cfg["data"]["root"]) / builders.MPII_GT_VALID
        stats = mpii_metrics.pckh(pred["coords"], gt_valid)
        mpii_bootstrap.save_correct(mpii_bootstrap.mpii_person_correct(pred["coords"], gt_valid),
                                    bootstrap_file(out_dir, "mpii_val"))
        # MLflow metric names allow no "@": "Mean@0.1" is logged as "Mean_at_0.1".
        metrics.update({f"mpii_val.{k.replace('@', '_at_')}": v for k, v in stats.items()})
        metrics.update(run_diagnostics(cfg, pred, recs))

    tags.update({**table_tags(cfg["name"]), "seed": str(seed), "profile": cfg["profile"], "evaluated": "true"})
    with open_run(tracking_uri, experiment, run_name=run_label(cfg["name"], seed),
                  run_id=ckpt.get("mlflow_run_id")) as mlflow:
        finite = {k: float(v) for k, v in metrics.items() if v == v}  # MLflow rejects NaN
        mlflow.log_metrics(finite)
        mlflow.set_tags(tags)
        for f in sorted(out_dir.iterdir()):
            if f.suffix in (".json", ".mat", ".npz") and f.name not in ("metrics.json", "testdev_server_scores.json"):
                mlflow.log_artifact(str(f), artifact_path="predictions")
        if submission is not None:
            mlflow.log_artifact(str(submission), artifact_path=coco_server.SUBMISSION_DIR)
        run_id = mlflow.active_run().info.run_id
    # Strict JSON (DVC reads it): undefined metrics (no person of that size) become null.
    result = {"run": cfg["name"], "seed": seed, "profile": cfg["profile"], "mlflow_run_id": run_id,
              "metrics": {k: (v if v == v else None) for k, v in metrics.items()}}
    io.write_json(paths.eval_metrics(cfg["name"], seed), result)
    return result
