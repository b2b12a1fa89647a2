"""The paper's test protocol for one trained run, logged to the run's MLflow record.

COCO: val2017 with the person detections (flip test, rescoring, OKS-NMS at 0.9) → Table 1;
val2017 with ground-truth boxes (a detector-free reference); test-dev with its detections → the
submission file in the COCO results format, zipped for the evaluation server
(``submission/person_keypoints_test-dev2017_<run>_results.zip``, see :mod:`pipeline.metrics.coco_server`),
scored when ground truth is present (synthetic data) → Table 2; real test-dev's scores come back from
the server and are loaded by ``python -m pipeline testdev-scores``. MPII: val with the flip test → PCKh@0.5 (Table 3).

MSE runs (and MSE + alpha × HDM runs, whose heatmaps the MSE term keeps Gaussian) are also scored with DARK decoding (:mod:`pipeline.codecs.dark`, the paper's "+ DARK"
rows): the same flip-averaged heatmaps of val2017 with the person detections and of MPII val,
decoded a second way, give ``coco_val_dark/*`` (results file ``..._<run>_dark_results.json``) and
``mpii_val_dark/*``, with no second pass of the network and no extra training.

A run with ``split: tune`` (hyperparameter search) is evaluated on the tune split of the training
images instead, and on nothing else: ``coco_tune/*`` with ground-truth boxes (there are no person
detections for training images) or ``mpii_tune/*`` (head size from the neck → head-top segment, see
:mod:`pipeline.data.tune`), with the same flip test and decoding variants; no val, no test-dev, no
submission, so val never takes part in choosing a setting.

The val pass with ground-truth boxes (COCO's ``coco_val_gtbox``, MPII's val) also measures the run's
raw, unflipped heatmaps (:mod:`pipeline.engine.mechanism`), beside the other outputs in
``results/<profile>/eval/<run>/seed<k>/``:

- ``consistency_val.npz``: per val person with a weighted joint, ``image_id`` (int64), ``loss`` (the
  run's training criterion on that person alone), ``oks`` (COCO; NaN for MPII), ``pckh`` (MPII; NaN
  for COCO), ``joint_err`` (mean over weighted joints, heatmap px), all float64 but ``image_id``
  (format: :mod:`pipeline.metrics.consistency`); MLflow metric ``val_consistency/n_people``;
- ``sinkhorn_convergence.json`` (HDM runs, sub-pixel demanders): Sinkhorn iterations needed per
  tolerance on the first 200 people's weighted heatmaps, ``{"tolerances", "iterations_median",
  "iterations_p95", "iterations_max", "cap", "heatmaps", "epsilon_effective", ...}``.

Beside ``metrics.json`` (every metric: ground-truth boxes, decoding variants, per-joint diagnostics),
``headline.json`` holds each evaluated split's headline numbers only (:func:`headline_metrics`): it is
the file DVC lists as the stage's metric, so ``dvc metrics show`` and ``dvc exp show`` stay readable.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

import numpy as np

from .. import io
from ..checkpoint import load_weights
from ..config import Paths, run_label
from ..data.transforms import image_to_heatmap
from ..errors import PipelineError
from ..metrics import coco as coco_metrics
from ..metrics import coco_bootstrap, coco_server, diagnostics, mpii_bootstrap
from ..metrics.bootstrap_files import bootstrap_file
from ..metrics import mpii as mpii_metrics
from ..tracking import log_new_metrics, open_run, require_run
from ..tracking.datasets import EVALUATION, dataset_uses, log_datasets
from ..tracking.metric_names import metric_key
from . import builders, mechanism
from .inference import coco_predictions, predict, variant_prediction
from .run_lock import run_lock

log = logging.getLogger(__name__)

DIAG = "diag"  # the metric group of the diagnostics on ground-truth boxes


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The run's final checkpoint, loaded weights-only (a pickle payload is refused, never run)."""
    if not path.is_file():
        raise PipelineError(str(path), "checkpoint not found: run the train stage first")
    state = load_weights(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise PipelineError(str(path), "not a final checkpoint of this pipeline (no 'model' state dict)")
    return state


def check_checkpoint(ckpt: dict[str, Any], cfg: dict[str, Any], path: Path) -> None:
    """The checkpoint must be this run's: another run's ``final.pth`` (say a 16-joint MPII model for a
    COCO run) is named with both runs instead of failing deep in ``load_state_dict``."""
    other = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    theirs = {k: other.get(k) for k in ("name", "seed", "dataset", "arch", "loss")}
    ours = {k: cfg[k] for k in theirs}
    if other and theirs != ours:
        def describe(c: dict) -> str:
            joints = "16 joints" if c["dataset"] == "mpii" else "17 joints"
            return f"{c['name']!r} (seed {c['seed']}, {c['dataset']}, {joints}, {c['arch']}, {c['loss']})"
        raise PipelineError(str(path), f"checkpoint of run {describe(theirs)}, not of run {describe(ours)}: "
                                       "train this run (or put its own final.pth back)")


def load_model(cfg: dict[str, Any], ckpt: dict[str, Any], path: Path) -> torch.nn.Module:
    """The run's model with the checkpoint's weights; a mismatch names the file and the first keys."""
    net = builders.model(cfg, initial_weights=False)  # the checkpoint holds every tensor
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = "; ".join(lines[:2])[:300]
        raise PipelineError(str(path), f"weights do not fit the model of run {cfg['name']!r} "
                                       f"({cfg['arch']}): {detail}") from None
    return net


def run_diagnostics(cfg: dict[str, Any], pred: dict[str, np.ndarray], recs: list[dict]) -> dict[str, float]:
    """Per-joint median error, left/right separation ratios and dead heatmaps of predictions on
    ground-truth boxes, as MLflow metrics ``diag/*`` (errors in heatmap pixels)."""
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
    peak = pred["peak"]
    if builders.codec(cfg).softmax_decoding:  # it decodes softmax(h): never without positive mass
        peak = np.ones_like(peak)
    dead = diagnostics.dead_fractions(peak)
    out = {f"err.{js.joints[k]}": float(e) for k, e in enumerate(errors)}
    out.update({f"sep.{diagnostics.pair_name(js.joints[a], js.joints[b])}": r for (a, b), r in ratios.items()})
    out.update({f"dead.{js.joints[k]}": float(d) for k, d in enumerate(dead)})
    out["median_err"] = float(np.nanmedian(errors)) if np.isfinite(errors).any() else float("nan")
    out["collapsed_pairs"] = float(len(diagnostics.collapsed_pairs(ratios)))
    out["dead_fraction"] = float(np.mean(peak <= 0)) if len(peak) else float("nan")
    return {metric_key(DIAG, name): value for name, value in out.items()}


def _tune_inputs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The inputs of a ``split: tune`` run: the tune people (ground-truth boxes) and their ground
    truth, in the shapes of the val inputs (COCO key ``coco_tune``; MPII key ``mpii``)."""
    recs, gt = builders.records(cfg, builders.TUNE), builders.ground_truth(cfg, builders.TUNE)
    if cfg["dataset"] == "mpii":
        return {"mpii": (recs, gt)}
    return {"coco_tune": (recs, gt, f"person_keypoints_tune_{cfg['name']}_results.json")}


def _mpii_prefix(cfg: dict[str, Any]) -> str:
    """``mpii_val``, or ``mpii_tune`` for a ``split: tune`` run."""
    return f"mpii_{builders.holdout_split(cfg)}"


def _inputs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Read and check every input of the evaluation before any prediction or output is made."""
    if builders.holdout_split(cfg) == builders.TUNE:
        return _tune_inputs(cfg)
    root = Path(cfg["data"]["root"])
    if cfg["dataset"] == "mpii":
        gt_path = root / builders.MPII_GT_VALID
        gt = mpii_metrics.load_gt_valid(gt_path)
        recs = builders.records(cfg, "val")
        n_gt = gt["pos_gt_src"].shape[2]
        if n_gt != len(recs):
            raise PipelineError(str(gt_path), f"holds {n_gt} people but {root / builders.MPII_SPLITS['val']} "
                                              f"has {len(recs)}: the two files do not belong together")
        return {"mpii": (recs, gt_path)}
    splits = {}
    for key, split, boxes, fname in _coco_outputs(cfg["name"]):
        gt = root / builders.COCO_SPLITS[split][3]
        splits[key] = (builders.records(cfg, split, boxes=boxes), gt if gt.is_file() else None, fname)
    return splits


# COCO splits decoded with every variant (DARK) and scored per image for the bootstrap; splits
# predicted on ground-truth boxes, whose predictions the diagnostics compare with the ground truth.
_VARIANT_KEYS = ("coco_val", "coco_testdev", "coco_tune")
_GT_BOX_KEYS = ("coco_val_gtbox", "coco_tune")


def _split_tags(cfg: dict[str, Any]) -> dict[str, str]:
    """``split: tune`` on a tuning run's MLflow record (the UI can filter them out); none otherwise,
    so the tags of other runs stay as they were."""
    return {"split": builders.TUNE} if builders.holdout_split(cfg) == builders.TUNE else {}


def _coco_outputs(run: str) -> list[tuple[str, str, str, str]]:
    """(metric prefix, split, boxes, results file name) of the COCO protocol."""
    return [("coco_val", "val", "det", f"person_keypoints_val2017_{run}_results.json"),
            ("coco_val_gtbox", "val", "gt", f"person_keypoints_val2017_gtbox_{run}_results.json"),
            ("coco_testdev", "test-dev", "det", coco_server.results_name(run))]


def _coco_split(net, cfg, dev, recs: list[dict], gt: Path | None, results: Path, desc: str,
                progress: bool, variants: dict | None = None, on_batch: Any = None
                ) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """Predict one split, write its results file; (COCO stats or None without ground truth, the
    predictions, with the decoding ``variants``' coordinates under ``"variants"``). ``on_batch``:
    :func:`predict`'s hook on the raw heatmaps."""
    t = cfg["test"]
    pred = predict(net, cfg, recs, flip_test=t["flip_test"], dev=dev, batch_size=t["batch_size"],
                   progress=progress, desc=desc, variants=variants, on_batch=on_batch)
    return _coco_score(cfg, pred, gt, results, desc), pred


def _coco_score(cfg, pred: dict[str, Any], gt: Path | None, results: Path, desc: str) -> dict[str, float] | None:
    """Rescore, OKS-NMS and write one prediction's results file; its COCO stats (None without
    ground truth)."""
    t = cfg["test"]
    kept = coco_metrics.rescore_and_nms(coco_predictions(pred), in_vis_thre=t["in_vis_thre"],
                                        oks_thre=t["oks_thre"])
    coco_metrics.write_results(kept, results)
    if gt is None:
        log.info("%s: no ground truth; wrote %s for the evaluation server", desc, results.name)
        return None
    return coco_metrics.evaluate_keypoints(gt, results)


def _variant_results_name(fname: str, variant: str) -> str:
    """``person_keypoints_val2017_<run>_results.json`` → ``..._<run>_<variant>_results.json``."""
    return fname.replace("_results.json", f"_{variant}_results.json")


def _coco_variant_metrics(cfg, pred: dict[str, Any], key: str, gt: Path | None, stage: Path,
                          fname: str) -> dict[str, float]:
    """``<key>_<variant>/*`` COCO stats of every decoding variant of one split's prediction (the
    same heatmaps decoded otherwise, e.g. ``coco_val_dark/AP``); each writes its own results file
    and per-image matches (``coco_val_dark.boot.npz``) for the report's paired bootstrap."""
    out: dict[str, float] = {}
    for variant in pred.get("variants", {}):
        results = stage / _variant_results_name(fname, variant)
        stats = _coco_score(cfg, variant_prediction(pred, variant), gt, results, f"{cfg['name']} {key} {variant}")
        if stats is not None:
            out.update({metric_key(f"{key}_{variant}", k): v for k, v in stats.items()})
            coco_bootstrap.save_matches(coco_bootstrap.coco_image_matches(gt, results),
                                        bootstrap_file(stage, f"{key}_{variant}"))
    return out


def _package_testdev(stage: Path, out_dir: Path, run: str, variants: list[str | None], scored: bool
                     ) -> dict[str, str]:
    """Zip the test-dev results of the run and of each decoding variant (a submission each, as the
    server scores one file per upload); the MLflow tags name the zips at their final place."""
    tags: dict[str, str] = {}
    for variant in variants:
        _, sub_tags = coco_server.package_testdev(stage, run, scored=scored, variant=variant)
        final = coco_server.submission_path(out_dir, coco_server.variant_name(run, variant))
        sub_tags[coco_server.variant_tag(coco_server.TAG_SUBMISSION, variant)] = str(final)
        tags.update(sub_tags)
    return tags


def _mpii_metrics(prefix: str, coords: np.ndarray, gt_valid: Path) -> dict[str, float]:
    """PCKh of MPII val predictions as ``<prefix>/*`` (MLflow metric names allow no "@": "Mean@0.1"
    is logged as "Mean_at_0.1")."""
    stats = mpii_metrics.pckh(coords, gt_valid)
    return {metric_key(prefix, k.replace("@", "_at_")): v for k, v in stats.items()}


# headline.json: the numbers a reader compares runs by, per evaluated split (the run's own decoding;
# a split without ground truth, such as real test-dev, has none). COCO's AP..AR as
# pipeline.metrics.coco names them, MPII's PCKh total and PCKh@0.1 as _mpii_metrics names them.
HEADLINE_FILE = "headline.json"
_HEADLINE_SPLITS = ("coco_val", "coco_testdev", "coco_tune", "mpii_val", "mpii_tune")
_HEADLINE_STATS = {"coco": ("AP", "AP50", "AP75", "APM", "APL", "AR"), "mpii": ("Mean", "Mean_at_0.1")}


def headline_metrics(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """The headline subset of a run's metrics, in the same names (``coco_val/AP``): the one file
    DVC shows as a metric, since metrics.json's per-joint diagnostics make tables hundreds of columns wide."""
    names = [metric_key(split, stat) for split in _HEADLINE_SPLITS for stat in _HEADLINE_STATS[split.split("_")[0]]]
    return {name: metrics[name] for name in names if name in metrics}


def _strict_json(metrics: dict[str, float]) -> dict[str, float | None]:
    """Strict JSON (DVC reads it): an undefined metric (no person of that size) becomes null."""
    return {k: (v if v == v else None) for k, v in metrics.items()}


def evaluate_run(cfg: dict[str, Any], *, tracking_uri: str, experiment: str, progress: bool = True,
                 extra_tags: dict[str, str] | None = None) -> dict:
    """:func:`_evaluate_run` under the run's lock (:mod:`.run_lock`): never while the run trains (which
    replaces ``final.pth`` and its MLflow run's records) or while another process evaluates it."""
    run_dir = Paths(cfg["profile"]).run_dir(cfg["name"], cfg["seed"])
    with run_lock(run_dir, "evaluated", required=False):
        return _evaluate_run(cfg, tracking_uri=tracking_uri, experiment=experiment, progress=progress,
                             extra_tags=extra_tags)


def _checked_inputs(cfg: dict[str, Any], paths: Paths, tracking_uri: str
                    ) -> tuple[dict[str, Any], dict[str, Any], str | None, str]:
    """``(checkpoint, inputs, MLflow run id, run label)``, every one checked before the first
    prediction, so a missing or mismatched input stops the evaluation before any work."""
    ckpt_path = paths.checkpoint(cfg["name"], cfg["seed"])
    ckpt = load_checkpoint(ckpt_path)
    check_checkpoint(ckpt, cfg, ckpt_path)
    inputs = _inputs(cfg)
    run_id = ckpt.get("mlflow_run_id")
    label = run_label(cfg["name"], cfg["seed"])
    require_run(tracking_uri, run_id, label)
    return ckpt, inputs, run_id, label


def _model_on_device(cfg: dict[str, Any], ckpt: dict[str, Any], ckpt_path: Path
                     ) -> tuple[torch.nn.Module, torch.device]:
    """The checkpoint's network, checked against the config's output size, on the run's device (CPU
    runs use the configured thread count, as training did)."""
    dev = builders.device(cfg)
    if dev.type == "cpu":
        torch.set_num_threads(cfg["train"]["threads"])
    net = load_model(cfg, ckpt, ckpt_path)
    builders.check_output_size(cfg, net)
    net.to(dev)
    return net, dev


def _coco_split_metrics(stats: dict[str, float] | None, key: str, gt: Path | None, stage: Path,
                        fname: str) -> dict[str, float]:
    """``<key>/*`` COCO stats of one split (none for an unscored split); the splits the report compares
    also keep their per-image matches for its bootstrap."""
    if stats is None:
        return {}
    if key in _VARIANT_KEYS:  # per-image matches for the report's bootstrap
        coco_bootstrap.save_matches(coco_bootstrap.coco_image_matches(gt, stage / fname),
                                    bootstrap_file(stage, key))
    return {metric_key(key, k): v for k, v in stats.items()}


def _mpii_scores(cfg: dict[str, Any], pred: dict[str, Any], recs: list[dict], gt_valid: Path,
                 stage: Path) -> dict[str, float]:
    """PCKh of the prediction and of each decoding variant, each with its per-person correctness file
    for the report's bootstrap."""
    metrics: dict[str, float] = {}
    prefix = _mpii_prefix(cfg)
    images = [r["image_id"] for r in recs]  # the bootstrap resamples images, all their people together
    mpii_bootstrap.save_correct(mpii_bootstrap.mpii_person_correct(pred["coords"], gt_valid, image_ids=images),
                                bootstrap_file(stage, prefix))
    metrics.update(_mpii_metrics(prefix, pred["coords"], gt_valid))
    for variant, vp in pred["variants"].items():
        metrics.update(_mpii_metrics(f"{prefix}_{variant}", vp["coords"], gt_valid))
        mpii_bootstrap.save_correct(mpii_bootstrap.mpii_person_correct(vp["coords"], gt_valid, image_ids=images),
                                    bootstrap_file(stage, f"{prefix}_{variant}"))
    return metrics


def evaluated_splits(cfg: dict[str, Any]) -> list[str]:
    """The splits the evaluation scores (the MLflow run's evaluation datasets): the tune split of a
    ``split: tune`` run, else val (and COCO's test-dev)."""
    if builders.holdout_split(cfg) == builders.TUNE:
        return [builders.TUNE]
    return ["val", "test-dev"] if cfg["dataset"] == "coco" else ["val"]


def _log_to_run(cfg: dict[str, Any], tracking_uri: str, experiment: str, label: str, run_id: str | None,
                metrics: dict[str, float], tags: dict[str, str], stage: Path) -> str:
    """Log metrics, tags and the staged prediction files to the run's MLflow record (which must exist);
    returns its id. Runs before the files are published, so a logging failure leaves no new file."""
    with open_run(tracking_uri, experiment, run_name=label, run_id=run_id, missing="error") as mlflow:
        log_new_metrics(mlflow, {k: float(v) for k, v in metrics.items() if v == v})  # MLflow rejects NaN
        log_datasets(mlflow, dataset_uses(cfg["profile"], cfg["dataset"], evaluated_splits(cfg), EVALUATION))
        mlflow.set_tags(tags)
        for f in sorted(stage.iterdir()):
            if f.is_file() and f.suffix in (".json", ".mat", ".npz"):
                mlflow.log_artifact(str(f), artifact_path="predictions")
        submission = stage / coco_server.SUBMISSION_DIR
        for f in sorted(submission.glob("*.zip")) if submission.is_dir() else []:
            mlflow.log_artifact(str(f), artifact_path=coco_server.SUBMISSION_DIR)
        return mlflow.active_run().info.run_id


def _evaluate_run(cfg: dict[str, Any], *, tracking_uri: str, experiment: str, progress: bool,
                  extra_tags: dict[str, str] | None) -> dict:
    """Evaluate the run's final checkpoint; writes metrics.json, headline.json and prediction files.

    Every input (checkpoint, annotations, detections, ``gt_valid.mat``, the MLflow run) is checked
    before the first prediction; outputs are made in a temporary folder and moved into the
    evaluation folder only once the metrics are logged, ``metrics.json`` last, so a failure at any
    point leaves no new file behind.
    """
    paths = Paths(cfg["profile"])
    seed = cfg["seed"]
    ckpt, inputs, run_id, label = _checked_inputs(cfg, paths, tracking_uri)
    net, dev = _model_on_device(cfg, ckpt, paths.checkpoint(cfg["name"], seed))
    out_dir = paths.eval_dir(cfg["name"], seed)
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    variants = builders.eval_variants(cfg)  # decoded from the same heatmaps: no second network pass
    with io.temporary_dir(out_dir / "outputs") as stage:
        if cfg["dataset"] == "coco":
            for key, (recs, gt, fname) in inputs.items():
                val_hook = mechanism.collector(cfg, dev) if key == "coco_val_gtbox" else None
                stats, pred = _coco_split(net, cfg, dev, recs, gt, stage / fname, f"{cfg['name']} {key}", progress,
                                          variants=variants if key in _VARIANT_KEYS else None,
                                          on_batch=val_hook)
                if val_hook is not None:
                    metrics.update(mechanism.write_outputs(cfg, val_hook, recs, None, stage))
                metrics.update(_coco_split_metrics(stats, key, gt, stage, fname))
                metrics.update(_coco_variant_metrics(cfg, pred, key, gt, stage, fname))
                if key in _GT_BOX_KEYS:
                    metrics.update(run_diagnostics(cfg, pred, recs))
                if key == "coco_testdev":
                    tags.update(_package_testdev(stage, out_dir, cfg["name"], [None, *variants], stats is not None))
                    if stats is None:
                        log.info("test-dev submission for the COCO server: %s (then: python -m pipeline "
                                 "testdev-scores --run %s --scores FILE)", tags[coco_server.TAG_SUBMISSION],
                                 cfg["name"])
        else:
            recs, gt_valid = inputs["mpii"]
            t = cfg["test"]
            val_hook = mechanism.collector(cfg, dev) if builders.holdout_split(cfg) == "val" else None
            pred = predict(net, cfg, recs, flip_test=t["flip_test"], dev=dev, batch_size=t["batch_size"],
                           progress=progress, desc=f"{cfg['name']} {builders.holdout_split(cfg)}", variants=variants,
                           on_batch=val_hook)
            if val_hook is not None:
                metrics.update(mechanism.write_outputs(cfg, val_hook, recs, gt_valid, stage))
            mpii_metrics.write_predictions(pred["coords"], stage / "pred.mat")
            metrics.update(_mpii_scores(cfg, pred, recs, gt_valid, stage))
            metrics.update(run_diagnostics(cfg, pred, recs))

        tags.update({**(extra_tags or {}), "row": cfg["name"], "seed": str(seed), "profile": cfg["profile"],
                     "evaluated": "true", **_split_tags(cfg)})
        run_id = _log_to_run(cfg, tracking_uri, experiment, label, run_id, metrics, tags, stage)
        strict = _strict_json(metrics)
        io.write_json(stage / HEADLINE_FILE, headline_metrics(strict))  # published with the others
        io.publish(stage, out_dir)
    result = {"run": cfg["name"], "seed": seed, "profile": cfg["profile"], "mlflow_run_id": run_id,
              "metrics": strict}
    io.write_json(paths.eval_metrics(cfg["name"], seed), result)
    return result
