"""From per-seed run records to what the tables print: means over seeds, their intervals, paired Δs.

A run of params.yaml is trained once per training seed. For each table row this module gives

- the mean of every metric over the seeds;
- for the table's main metric, a 95 % interval of that mean: Student's t over seeds when there are at
  least two, else a percentile interval from the paired bootstrap over evaluation images (evaluation
  noise only: it says nothing about how another training seed would land);
- for a row compared with a baseline (HDM vs MSE, the ablations), Δ = row − baseline paired by seed
  (the t-interval of the per-seed differences) or, with one common seed, the paired bootstrap's Δ
  interval (the same resampled images for both runs).

The bootstrap inputs are the per-image match files the evaluation stage writes next to each run's
metrics (``<split>.boot.npz``, see :func:`bootstrap_file`). Both datasets resample images: on MPII every
person of a drawn image comes along (people of one image are not independent draws).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..io import read_json
from ..metrics import coco_bootstrap, mpii_bootstrap
from ..metrics.bootstrap_files import bootstrap_file
from ..metrics.uncertainty import Interval, paired_delta, t_interval
from ..tracking.metric_names import metric_key
from .beyond import REPORT_TABLES, split_variant, variant_split
from .paper_numbers import PaperTable
from .records import RunRecord

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def mean_metrics(rec: RunRecord) -> dict[str, float]:
    """The mean over seeds of every metric a seed reports (pycocotools' −1 "undefined" and NaN left out)."""
    keys = {k for m in rec.metrics.values() for k in m}
    out = {}
    for k in sorted(keys):
        vals = [m[k] for m in rec.metrics.values() if _finite(m.get(k))]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out


def _per_seed(rec: RunRecord, key: str) -> dict[int, float]:
    return {s: m[key] for s, m in rec.metrics.items() if _finite(m.get(key))}


BootFn = Callable[[str, str, str | None, int], dict[str, Interval] | None]


@dataclass
class RowIntervals:
    """The intervals printed on one measured line (main metric, raw units)."""

    value: Interval
    delta: Interval | None = None


def pair_interval(split: str, key: str, run: str, baseline: str | None, records: Mapping[str, RunRecord],
                  bootstrap: BootFn | None = None) -> RowIntervals | None:
    """The intervals of ``run``'s metric ``key`` and, with a ``baseline`` that has a common seed, of
    Δ = run − baseline: t over seeds (paired by seed), or, below two seeds, the paired image bootstrap
    of ``split`` on the smallest common seed (``bootstrap(split, run, baseline_or_None, seed)`` returns
    {"value", "delta"} intervals, or None when its inputs are missing). None when ``run`` has no value."""
    if run not in records:
        return None
    vals = _per_seed(records[run], key)
    if not vals:
        return None
    base = records.get(baseline) if baseline else None
    bvals = _per_seed(base, key) if base is not None else {}
    value = t_interval(list(vals.values()))
    delta = paired_delta(vals, bvals) if set(vals) & set(bvals) else None
    needs_boot = value.n < 2 or (delta is not None and delta.n < 2)
    if needs_boot and bootstrap is not None:
        seed = min(set(vals) & set(bvals)) if delta is not None else min(vals)
        boot = bootstrap(split, run, baseline if delta is not None else None, seed)
        if boot is not None:
            if value.n < 2:
                value = boot["value"]
            if delta is not None and delta.n < 2 and boot.get("delta") is not None:
                delta = boot["delta"]
    return RowIntervals(value=value, delta=delta)


def table_intervals(table: PaperTable, records: Mapping[str, RunRecord],
                    bootstrap: BootFn | None = None) -> dict[str, RowIntervals]:
    """:func:`pair_interval` of the main metric of every measured line of ``table`` (Δ against the
    row's baseline), keyed by run."""
    key = metric_key(table.split, table.main_metric)
    out: dict[str, RowIntervals] = {}
    for row in table.rows:
        if row.is_benchmark:
            iv = pair_interval(table.split, key, row.run, row.baseline_run, records, bootstrap)
            if iv is not None:
                out[row.run] = iv
    return out


def contrast_interval(key: str, plus: tuple[str, str], minus: tuple[str, str],
                      records: Mapping[str, RunRecord]) -> Interval | None:
    """The t-interval over seeds of (plus[0] − plus[1]) − (minus[0] − minus[1]) of metric ``key``, per
    seed (an interaction: does a difference change between two settings?). None unless all four runs
    share a seed; method "none" with one common seed (no bootstrap pairs four runs)."""
    runs = (*plus, *minus)
    if not all(r in records for r in runs):
        return None
    per = [_per_seed(records[r], key) for r in runs]
    common = sorted(set.intersection(*(set(p) for p in per)))
    if not common:
        return None
    return t_interval([(per[0][s] - per[1][s]) - (per[2][s] - per[3][s]) for s in common])


def all_intervals(records: Mapping[str, RunRecord], bootstrap: BootFn | None = None
                  ) -> dict[str, dict[str, RowIntervals]]:
    """:func:`table_intervals` for every report table, keyed "table1" … "table6"."""
    return {t.key: table_intervals(t, records, bootstrap) for t in REPORT_TABLES}


def seed_noise(records: Mapping[str, RunRecord], key: str) -> tuple[float, int]:
    """The pooled standard deviation over seeds of ``key`` across runs with ≥ 2 seeds, and its degrees
    of freedom: the run-to-run noise floor a single run carries. (NaN, 0) without repeated seeds."""
    ss, dof = 0.0, 0
    for rec in records.values():
        vals = list(_per_seed(rec, key).values())
        if len(vals) >= 2:
            m = sum(vals) / len(vals)
            ss += sum((v - m) ** 2 for v in vals)
            dof += len(vals) - 1
    return (math.sqrt(ss / dof), dof) if dof else (math.nan, 0)


def image_bootstrap(paths: Any, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> BootFn:
    """The paired image bootstrap over the files the evaluation stage wrote (``paths``: the profile's
    :class:`~pipeline.config.Paths`). Returns None where a file is missing (the line then has no
    interval), so an old evaluation never breaks the report."""

    def boot(split: str, run: str, baseline: str | None, run_seed: int) -> dict[str, Interval] | None:
        files = [_boot_file(paths, r, split, run_seed) for r in (run, baseline or run)]
        if not all(f.is_file() for f in files):
            log.info("%s seed %d: no bootstrap data for %s (%s); no interval", run, run_seed, split,
                     ", ".join(str(f) for f in files if not f.is_file()))
            return None
        a, b = (_with_images(paths, load_bootstrap_data(f)) for f in files)
        if a is None or b is None:
            log.info("%s seed %d: no image id per MPII person (rerun the evaluation); no interval", run, run_seed)
            return None
        res = paired_bootstrap_any(a, b, resamples=resamples, seed=seed)
        return {"value": res["a"], "delta": res["delta"] if baseline else None}

    return boot


def _with_images(paths: Any, data: Any) -> Any:
    """MPII data with the image of each person: from the file, else from the profile's validation
    annotation (the evaluation scores its people in that file's order); None when neither has them.
    COCO data passes through (its unit is the image already)."""
    if not isinstance(data, mpii_bootstrap.MpiiCorrect) or data.image_ids is not None:
        return data
    ids = mpii_val_image_ids(paths)
    if ids is None or len(ids) != data.n_people:
        return None
    return mpii_bootstrap.with_image_ids(data, ids)


def mpii_val_image_ids(paths: Any) -> list[int] | None:
    """The image id of each person of the profile's MPII validation annotation, in file order (the
    numeric stem of the image name, as :func:`pipeline.data.mpii.load_mpii_people` sets it; the entry
    index when the stem is not a number). None when the profile has no such file."""
    if not hasattr(paths, "dataset"):
        return None
    path = Path(paths.dataset("mpii")) / "annot" / "valid.json"
    if not path.is_file():
        return None
    entries = read_json(path)
    stems = [Path(str(e.get("image", ""))).stem if isinstance(e, dict) else "" for e in entries]
    return [int(s) if s.isdigit() else i for i, s in enumerate(stems)]


def _boot_file(paths: Any, name: str, split: str, seed: int) -> Path:
    """The bootstrap file of a run, or of a decoding variant ``<run>+<variant>`` of it
    (``<split>_<variant>.boot.npz`` of that run's evaluation)."""
    run, variant = split_variant(name)
    return bootstrap_file(paths.eval_dir(run, seed), variant_split(split, variant))


def load_bootstrap_data(path: Path) -> Any:
    """A run's per-image (COCO) or per-person (MPII) evaluation data for the bootstrap."""
    if path.name.startswith("mpii"):
        return mpii_bootstrap.load_correct(path)
    return coco_bootstrap.load_matches(path)


def paired_bootstrap_any(a: Any, b: Any, *, resamples: int, seed: int) -> dict[str, Interval]:
    if isinstance(a, mpii_bootstrap.MpiiCorrect):
        return mpii_bootstrap.paired_bootstrap_pckh(a, b, resamples=resamples, seed=seed)
    return coco_bootstrap.paired_bootstrap(a, b, resamples=resamples, seed=seed)
