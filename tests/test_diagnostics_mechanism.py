"""The per-epoch mechanism measurements (positive pixels, non-positive ground-truth dots, separation
ratios, joint errors) and the Sinkhorn convergence summary, on hand-built heatmaps whose answers are
counted by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import diagnostics

JOINTS = ("nose", "left_eye", "right_eye")
PAIRS = ((1, 2),)


def test_nearest_pixel_reads_the_pixel_whose_cell_holds_the_dot():
    heat = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)  # value = 4 * row + col
    pts = np.array([[[1.49, 0.51]], [[2.5, 1.0]], [[-0.5, 2.4]], [[3.5, -0.5]], [[np.nan, 0.0]]])
    heat5 = np.repeat(heat, 5, axis=0)
    got = diagnostics.nearest_pixel_values(heat5, pts)[:, 0]
    # (1.49, 0.51) -> col 1, row 1 = 5; (2.5, 1) -> col 3 (a half rounds up), row 1 = 7;
    # (-0.5, 2.4) -> col 0, row 2 = 8; (3.5, -0.5) is past the last centre: border col 3, row 0 = 3
    assert got[:4].tolist() == [5.0, 7.0, 8.0, 3.0] and math.isnan(got[4])


def _batch():
    """Two people, three joints, 4x5 heatmaps with hand-placed values."""
    heat = np.full((2, 3, 4, 5), -1.0, dtype=np.float32)
    heat[0, 0, 1, 2] = 2.0   # person 0, nose: positive at its dot (x=2, y=1)
    heat[0, 1, 3, 0] = 1.0   # left eye positive away from its dot: the dot reads -1
    heat[0, 2, 0, 4] = 0.5
    heat[1, 0, 2, 2] = 0.0   # person 1, nose: exactly 0 at its dot counts as non-positive
    kp = np.array([[[2.0, 1.0], [1.0, 1.0], [4.0, 0.2]],
                   [[2.2, 1.9], [0.0, 0.0], [3.0, 3.0]]])
    weight = np.array([[1, 1, 1], [1, 0, 1]], dtype=np.float32)  # person 1's left eye unweighted
    return heat, kp, weight


def test_tally_counts_positive_pixels_and_non_positive_dots():
    heat, kp, weight = _batch()
    tally = diagnostics.MechanismTally()
    tally.add(heat[:1], kp[:1], weight[:1])  # batch by batch, as validation feeds it
    tally.add(heat[1:], kp[1:], weight[1:])
    pred = kp.copy()
    pred[:, 0] += [3.0, 4.0]  # nose 5 px off in both people
    out = tally.summary(pred, JOINTS, PAIRS)
    assert out["pos_share"] == pytest.approx(3 / 120)  # 3 positive pixels of 2*3*20
    # weighted dots: p0 nose (2 > 0), p0 left eye (-1), p0 right eye (0.5 > 0), p1 nose (0), p1 right eye (-1)
    assert out["gt_nonpos_share"] == pytest.approx(3 / 5)
    # errors over the 5 weighted joints: 5, 0, 0, 5, 0 -> median 0; nose median 5
    assert out["joint_err"] == 0.0 and out["joint_err.nose"] == 5.0 and out["joint_err.right_eye"] == 0.0
    # the eye pair: only person 0 has both eyes weighted; pred = gt there, so the ratio is 1
    assert out["sep_ratio"] == pytest.approx(1.0) and out["sep_ratio.eye"] == pytest.approx(1.0)
    assert out["collapsed_pairs"] == 0.0


def test_tally_flags_a_collapsed_pair_and_leaves_undefined_values_nan():
    heat, kp, weight = _batch()
    tally = diagnostics.MechanismTally()
    tally.add(heat, kp, weight)
    pred = kp.copy()
    pred[0, 2] = pred[0, 1] + [0.1, 0.0]  # both eyes on one spot: separation 0.1 / |(1,1)-(4,0.2)|
    out = tally.summary(pred, JOINTS, PAIRS)
    true_sep = math.hypot(3.0, 0.8)
    assert out["sep_ratio.eye"] == pytest.approx(0.1 / true_sep) and out["collapsed_pairs"] == 1.0
    empty = diagnostics.MechanismTally().summary(np.zeros((0, 3, 2)), JOINTS, PAIRS)
    assert all(math.isnan(empty[k]) for k in ("pos_share", "gt_nonpos_share", "sep_ratio", "joint_err"))
    with pytest.raises(ValueError):
        tally.summary(pred[:1], JOINTS, PAIRS)


def test_convergence_summary_by_hand():
    its = np.array([[1, 3, 5, 9], [2, 4, 8, 1000], [1, 2, 6, 11]])
    out = diagnostics.convergence_summary(its, [1e-2, 1e-3, 1e-4, 1e-6], 1000, 0.25)
    assert out["iterations_median"] == [1.0, 3.0, 6.0, 11.0] and out["iterations_max"] == [2.0, 4.0, 8.0, 1000.0]
    assert out["iterations_p95"][0] == pytest.approx(1.9)  # numpy's linear rule: 1 + 0.9 * (2 - 1)
    assert out["cap"] == 1000 and out["heatmaps"] == 3 and out["epsilon_effective"] == 0.25
    none = diagnostics.convergence_summary(np.zeros((0, 2)), [1e-2, 1e-3], 10, 1.0)
    assert none["heatmaps"] == 0 and none["iterations_median"] == [None, None]
