"""The report's statistics: the trend test of the last validation points, the paired-t p-value read off a
t-interval, and Holm's step-down over a findings file's comparisons."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.metrics.uncertainty import Interval, holm, t_interval, t_interval_pvalue
from pipeline.report.trend import Trend, curve_trend, ols_slope


def _curve(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(values) + 1), "train_loss": [1.0] * len(values),
                         "val_metric": values})


def test_ols_slope_interval_matches_linregress():
    x, y = [4.0, 5.0, 6.0, 7.0], [0.30, 0.34, 0.35, 0.41]
    ref = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * ref.stderr
    slope, lo, hi = ols_slope(x, y)
    assert slope == pytest.approx(ref.slope) and lo == pytest.approx(ref.slope - half)
    assert hi == pytest.approx(ref.slope + half)


def test_one_seed_trend_uses_the_last_three_points():
    # an lr step at epoch 4: the last two points are nearly equal, the last three still rise steadily
    tr = curve_trend({0: _curve([0.1, 0.2, 0.30, 0.31, 0.32, 0.331])}, scale=100.0)
    ref = stats.linregress([4, 5, 6], [31.0, 32.0, 33.1])
    assert tr.seeds == 1 and tr.slope == pytest.approx(ref.slope)
    half = stats.t.ppf(0.975, 1) * ref.stderr
    assert (tr.low, tr.high) == pytest.approx((ref.slope - half, ref.slope + half))
    assert tr.verdict == "still rising" and tr.low > 0


def test_several_seeds_pool_the_per_seed_slopes_with_t():
    curves = {0: _curve([1, 2, 3, 4.0]), 1: _curve([1, 2, 4, 6.0]), 2: _curve([1, 2, 3, 3.5])}
    tr = curve_trend(curves)
    slopes = [1.0, 2.0, 0.75]  # epochs 2..4: (2, 3, 4) → 1; (2, 4, 6) → 2; (2, 3, 3.5) → 0.75
    iv = t_interval(slopes)
    assert tr.seeds == 3 and (tr.slope, tr.low, tr.high) == pytest.approx((iv.mean, iv.low, iv.high))


def test_trend_wording_follows_the_interval():
    assert Trend(-0.5, -0.8, -0.2, 3, 2).verdict == "falling"
    assert Trend(0.01, -0.031, 0.05, 3, 2).verdict == "flat within ±0.05"
    assert Trend(0.01, -0.061, 0.05, 3, 2).verdict == "flat within ±0.07"  # rounded up, never down
    assert curve_trend({0: _curve([0.1, 0.2])}) is None  # fewer than 3 points: undecidable
    flat = curve_trend({0: _curve([5.0, 5.0, 5.0, 5.0])})
    assert flat.slope == 0 and flat.verdict == "flat within ±0.00"


def test_t_interval_pvalue_is_the_paired_t_test():
    a, b = [0.50, 0.53, 0.49, 0.55], [0.47, 0.52, 0.44, 0.50]
    iv = t_interval([x - y for x, y in zip(a, b)])
    assert t_interval_pvalue(iv) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert math.isnan(t_interval_pvalue(Interval(0.1, 0.05, 0.2, 1000, "bootstrap")))
    assert t_interval_pvalue(Interval(0.02, 0.02, 0.02, 3, "t")) == 0.0  # identical differences


def test_holm_by_hand():
    # sorted: 0.005 ≤ 0.05/4, 0.01 ≤ 0.05/3, 0.03 > 0.05/2 → stop: 0.04 is not rejected although ≤ 0.05
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.01, 0.02, 0.04]) == [True, True, True]  # 0.01 ≤ .0167, 0.02 ≤ .025, 0.04 ≤ .05
    assert holm([0.03, 0.2]) == [False, False]  # 0.03 > 0.025: nothing, although 0.03 < 0.05 alone
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([1.5])


def test_findings_family_marks_holm_survivors():
    from pipeline.report.findings import Family, _verdict

    diffs = {"a": [0.50, 0.52, 0.51], "b": [0.05, 0.30, 0.10], "c": [0.02, -0.01, 0.03]}
    pvals = {k: stats.ttest_1samp(v, 0.0).pvalue for k, v in diffs.items()}
    # by hand: p_a ≈ 1.3e-4 ≤ .05/3, p_b ≈ 0.14 > .05/2: only a survives (b already fails at 95 %)
    assert pvals["a"] < 0.05 / 3 and pvals["b"] > 0.05 / 2
    family = Family()
    text = "\n".join(f"{k}: {_verdict(t_interval(v), family, (k,))}" for k, v in diffs.items())
    bootstrap = _verdict(Interval(0.1, 0.05, 0.2, 1000, "bootstrap"), family, ("d",))
    assert "resolved" not in bootstrap.replace("no verdict", "")
    out = family.resolve(text).splitlines()
    assert out[0] == "a: resolved: the interval excludes 0; † resolved after Holm over 3 comparisons"
    assert out[1] == "b: not resolved: the interval includes 0; not resolved after Holm over 3 comparisons"
    assert family.summary().startswith("Comparisons in this file: 3 with ≥ 2 training seeds (t over seeds), 1 of "
                                       "them resolved at 95 %, 1 after Holm")
    assert "1 more rest on one seed" in family.summary()
