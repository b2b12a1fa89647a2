"""COCO test-dev: the file uploaded to the evaluation server and the scores it sends back.

Real test-dev2017 has no public ground truth; COCO scores it on its evaluation server (the COCO
Keypoint Detection challenge on EvalAI, linked from https://cocodataset.org/#keypoints-eval).

* Submission: COCO names a results file ``[type]_[testset]_[alg]_results.json`` and uploads it
  zipped, alone in the zip. :func:`write_submission` zips the evaluation's
  ``person_keypoints_test-dev2017_<run>_results.json`` (byte for byte, the only member, at the
  zip's root) into ``submission/person_keypoints_test-dev2017_<run>_results.zip``.
* Scores: :func:`parse_server_scores` reads what the server returns, in any of three forms:

  (a) a JSON object of named metrics: ``{"AP": 0.76, "AP50": 0.925, "APm": ..., "AR": ...}``.
      Keys are case-insensitive and punctuation-blind (``AP_50``, ``AP@0.5``, ``AP (M)``,
      ``AP_medium`` all work). Wrappers are opened: ``{"result": [{"test-dev": {...}}]}`` as EvalAI
      writes it, ``{"stats": [...]}``, a one-element list.
  (b) COCOeval's ``stats``: a JSON list of 10 numbers in COCOeval's order
      (AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL).
  (c) the text COCOeval's ``summarize()`` prints (``Average Precision (AP) @[ IoU=0.50:0.95 |
      area= all | maxDets= 20 ] = 0.760``), or ``AP: 0.760`` lines; other lines are ignored.

  Scale: a file whose largest value exceeds 1 is read as percent (76.0) and divided by 100;
  otherwise values are fractions (0.760). pycocotools' -1 ("undefined") is skipped. The result
  maps :data:`STAT_NAMES` keys to fractions, the units of the locally scored ``coco_testdev/*``.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from ..io import atomic_path, sha256_file, write_json
from ..tracking import connect, finished_runs
from ..tracking.metric_names import metric_key
from .coco import STAT_NAMES

log = logging.getLogger(__name__)

TESTDEV_PREFIX = "coco_testdev"  # MLflow metric prefix, the split of Table 2
SUBMISSION_DIR = "submission"

# MLflow tags (set by the evaluation and by `testdev-scores`; read by the report)
TAG_SUBMISSION = "testdev_submission"        # path of the zip to upload
TAG_RESULTS_SHA = "testdev_results_sha256"   # sha256 of the results JSON in that zip
TAG_SOURCE = "testdev_source"                # "ground-truth" (scored locally) or "server"
TAG_SCORED_SHA = "testdev_scored_sha256"     # the results sha256 the server scores belong to


def results_name(run: str) -> str:
    """COCO's results file name for a test-dev keypoint submission of algorithm ``run``."""
    return f"person_keypoints_test-dev2017_{run}_results.json"


def submission_path(eval_dir: str | Path, run: str) -> Path:
    """``<eval_dir>/submission/person_keypoints_test-dev2017_<run>_results.zip``."""
    return Path(eval_dir) / SUBMISSION_DIR / (results_name(run)[: -len(".json")] + ".zip")


def write_submission(results_json: str | Path, zip_path: str | Path) -> Path:
    """Zip ``results_json`` alone (as its own name, at the root) into ``zip_path``, atomically.

    The zip is deterministic (fixed timestamp), so the same results give the same bytes.
    """
    src, dst = Path(results_json), Path(zip_path)
    if not src.is_file():
        raise PipelineError(str(src), "test-dev results file not found")
    if src.stem + ".zip" != dst.name:
        raise PipelineError(str(dst), f"the zip must be named after its results file ({src.stem}.zip)")
    info = zipfile.ZipInfo(src.name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with atomic_path(dst) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf, src.open("rb") as fin, zf.open(info, "w", force_zip64=True) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return dst


def variant_name(run: str, variant: str | None) -> str:
    """The algorithm name of a decoding variant's submission (``<run>_dark``), so its results file
    (``person_keypoints_test-dev2017_<run>_dark_results.json``) and zip follow COCO's naming too."""
    return f"{run}_{variant}" if variant else run


def variant_tag(tag: str, variant: str | None) -> str:
    """The MLflow tag of a decoding variant's submission: ``testdev_submission_dark``."""
    return f"{tag}_{variant}" if variant else tag


def variant_prefix(variant: str | None) -> str:
    """The metric prefix of a variant's test-dev scores: ``coco_testdev_dark``."""
    return f"{TESTDEV_PREFIX}_{variant}" if variant else TESTDEV_PREFIX


def package_testdev(eval_dir: str | Path, run: str, *, scored: bool,
                    variant: str | None = None) -> tuple[Path, dict[str, str]]:
    """Zip the run's test-dev results (of decoding ``variant``: a submission of its own) for the server;
    returns the zip and the MLflow tags to set.

    ``scored``: the results were scored locally (synthetic test-dev with ground truth).
    """
    name = variant_name(run, variant)
    results = Path(eval_dir) / results_name(name)
    zip_path = write_submission(results, submission_path(eval_dir, name))
    tags = {variant_tag(TAG_SUBMISSION, variant): str(zip_path),
            variant_tag(TAG_RESULTS_SHA, variant): sha256_file(results)}
    if scored:
        tags[variant_tag(TAG_SOURCE, variant)] = "ground-truth"
    return zip_path, tags


# ------------------------------------------------------------------------------ scores
def _alias(key: str) -> str | None:
    """A metric key as servers and people write it → the canonical :data:`STAT_NAMES` name."""
    k = re.sub(r"[^a-z0-9]", "", str(key).lower())
    k = k.replace("medium", "m").replace("large", "l")
    m = re.fullmatch(r"(ap|ar)(|50|050|05|5|75|075|m|l)", k)
    if not m:
        return None
    suffix = {"": "", "50": "50", "050": "50", "05": "50", "5": "50", "75": "75", "075": "75",
              "m": "M", "l": "L"}[m.group(2)]
    return m.group(1).upper() + suffix


def _value(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise PipelineError(where, f"not a number: {v!r}")
    try:
        x = float(v)
    except ValueError:
        raise PipelineError(where, f"not a number: {v!r}") from None
    if not math.isfinite(x):
        raise PipelineError(where, f"not a finite number: {v!r}")
    return x


def _from_mapping(d: dict, path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, v in d.items():
        name = _alias(key)
        if name is None:
            continue
        if name in out:
            raise PipelineError(path, f"field {key!r}: {name} given twice")
        out[name] = _value(v, f"{path}: field {key!r}")
    ignored = [str(k) for k in d if _alias(k) is None]
    if out and ignored:
        log.info("%s: ignored fields %s", path, ", ".join(ignored))
    return out


def _from_list(values: list, path: str) -> dict[str, float]:
    if len(values) != len(STAT_NAMES):
        raise PipelineError(path, f"stats: expected the {len(STAT_NAMES)} numbers of COCOeval.stats "
                                  f"({', '.join(STAT_NAMES)}), got {len(values)} numbers")
    return {name: _value(v, f"{path}: stats[{i}]") for i, (name, v) in enumerate(zip(STAT_NAMES, values))}


def _unwrap(obj: Any, path: str, depth: int = 0) -> dict[str, float]:
    """Find the metrics inside EvalAI / codalab style wrappers."""
    if depth > 5:
        raise PipelineError(path, "no COCO keypoint metrics found (nested too deep)")
    if isinstance(obj, list):
        if obj and all(not isinstance(v, (dict, list)) for v in obj):
            return _from_list(obj, path)
        if len(obj) == 1:
            return _unwrap(obj[0], path, depth + 1)
        raise PipelineError(path, f"expected a list of {len(STAT_NAMES)} numbers (COCOeval.stats) or a JSON "
                                  f"object of metrics, got a list of {len(obj)} items")
    if not isinstance(obj, dict):
        raise PipelineError(path, f"expected a JSON object of metrics or a list of {len(STAT_NAMES)} numbers, "
                                  f"got {type(obj).__name__}")
    for key in ("stats", "result", "results", "scores", "metrics"):
        if key in obj and isinstance(obj[key], (dict, list)):
            return _unwrap(obj[key], path, depth + 1)
    found = _from_mapping(obj, path)
    if found:
        return found
    nested = [v for v in obj.values() if isinstance(v, (dict, list))]
    if len(nested) == 1:  # {"test-dev": {...}}, {"test_split": {...}}
        return _unwrap(nested[0], path, depth + 1)
    raise PipelineError(path, f"no COCO keypoint metric field found (expected {', '.join(STAT_NAMES)}; "
                              f"got {', '.join(map(str, obj)) or 'an empty object'})")


_SUMMARY_RE = re.compile(
    r"Average\s+(?:Precision|Recall)\s*\((?P<kind>AP|AR)\)\s*@\[\s*IoU\s*=\s*(?P<iou>[\d.:]+)\s*\|"
    r"\s*area\s*=\s*(?P<area>\w+)\s*\|\s*maxDets\s*=\s*(?P<dets>\d+)\s*\]\s*=\s*(?P<v>\S+)")
_KV_RE = re.compile(r"^\s*(?P<k>A[PR][\w@.() -]*?)\s*[:=]\s*(?P<v>\S+)\s*$", re.I)
_IOU = {"0.50:0.95": "", "0.5:0.95": "", "0.50": "50", "0.5": "50", "0.75": "75"}
_AREA = {"all": "", "medium": "M", "large": "L"}


def _from_text(text: str, path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        where = f"{path}: line {n}"
        m = _SUMMARY_RE.search(line)
        if m:
            iou, area = m["iou"], m["area"].lower()
            if m["dets"] != "20" or area not in _AREA or iou not in _IOU or (_IOU[iou] and _AREA[area]):
                raise PipelineError(where, f"not a line of COCOeval's keypoint summary (IoU={iou}, "
                                           f"area={area}, maxDets={m['dets']}): is this a bbox/segm result?")
            name = m["kind"] + _IOU[iou] + _AREA[area]
        else:
            m = _KV_RE.match(line)
            name = _alias(m["k"]) if m else None
            if name is None:
                continue
        if name in out:
            raise PipelineError(where, f"{name} given twice")
        out[name] = _value(m["v"], where)
    if not out:
        raise PipelineError(path, "neither JSON nor a COCOeval summary: no line like "
                                  "'Average Precision (AP) @[ IoU=0.50:0.95 | area= all | maxDets= 20 ] = 0.760'")
    return out


def parse_server_scores(path: str | Path) -> dict[str, float]:
    """The COCO keypoint metrics in a scores file from the evaluation server, as fractions.

    Returns ``{"AP": 0.76, "AP50": ..., ...}`` (a subset of :data:`STAT_NAMES`, AP required).
    A malformed file raises a one-line :class:`PipelineError` naming the file and the field.
    """
    p = Path(path)
    if not p.is_file():
        raise PipelineError(str(p), "scores file not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PipelineError(str(p), "not a text file (expected JSON or COCOeval's printed summary)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] in ("{", "["):
            raise PipelineError(str(p), f"not valid JSON ({exc})") from None
        raw = _from_text(text, str(p))
    else:
        raw = _unwrap(obj, str(p))
    if "AP" not in raw:
        raise PipelineError(str(p), f"field AP missing (found {', '.join(raw)})")
    defined = {k: v for k, v in raw.items() if v != -1.0}  # pycocotools: -1 = undefined
    for k, v in defined.items():
        if v < 0 or v > 100:
            raise PipelineError(str(p), f"field {k}: {v} is neither a fraction in [0, 1] nor a percentage")
    percent = any(v > 1.0 for v in defined.values())
    scores = {k: (v / 100.0 if percent else v) for k, v in defined.items()}
    missing = [k for k in STAT_NAMES[:6] if k not in raw]  # the columns of Table 2
    if missing:
        log.warning("%s: no %s in the server's scores (Table 2 shows n/a)", p, ", ".join(missing))
    return {k: scores[k] for k in STAT_NAMES if k in scores}


# ------------------------------------------------------------------------------ MLflow
def log_server_scores(scores_file: str | Path, *, run: str, seed: int, tracking_uri: str, experiment: str,
                      eval_dir: str | Path | None = None, variant: str | None = None) -> dict[str, Any]:
    """Log the server's scores as ``coco_testdev/*`` (``coco_testdev_<variant>/*`` for the submission
    of a decoding variant, e.g. DARK) onto the run's latest evaluated MLflow run.

    The run is the one the report reads: the newest finished run of ``run`` and ``seed`` with tag
    ``evaluated=true`` in ``experiment``. Tags it ``testdev_source=server`` (and the results sha256
    the scores belong to), attaches the scores file, and writes a copy of the parsed scores to
    ``<eval_dir>/testdev_server_scores.json`` (so DVC's report stage sees a change).
    """
    from mlflow.entities import Metric, RunTag


    scores = parse_server_scores(scores_file)
    df = finished_runs(tracking_uri, experiment)
    if not df.empty and {"tags.row", "tags.seed"} <= set(df.columns):
        df = df[(df["tags.row"] == run) & (df["tags.seed"] == str(seed))]
    else:
        df = df.iloc[0:0]
    if df.empty:
        raise PipelineError(f"--run {run} --seed {seed}",
                            f"no finished, evaluated MLflow run of that run and seed in experiment "
                            f"{experiment!r} at {tracking_uri}: evaluate it first "
                            f"(python -m pipeline evaluate --run {run} --seed {seed})")
    row = df.iloc[0]  # newest first, as the report picks it
    run_id = str(row["run_id"])
    sha = row.get(f"tags.{variant_tag(TAG_RESULTS_SHA, variant)}")
    sha = sha if isinstance(sha, str) and sha else ""
    tags = [RunTag(variant_tag(TAG_SOURCE, variant), "server")] + (
        [RunTag(variant_tag(TAG_SCORED_SHA, variant), sha)] if sha else [])
    prefix = variant_prefix(variant)
    now = int(time.time() * 1000)
    client = connect(tracking_uri).tracking.MlflowClient()
    client.log_batch(run_id, tags=tags, metrics=[Metric(metric_key(prefix, k), float(v), now, 0) for k, v in scores.items()])
    client.log_artifact(run_id, str(scores_file), artifact_path="testdev_server")
    result = {"run": run, "seed": seed, "mlflow_run_id": run_id, "source": "server", "scores_file": str(scores_file),
              "variant": variant, "results_sha256": sha or None,
              "metrics": {metric_key(prefix, k): v for k, v in scores.items()}}
    if eval_dir is not None:
        write_json(Path(eval_dir) / f"{variant_tag('testdev_server_scores', variant)}.json", result)
    return result
