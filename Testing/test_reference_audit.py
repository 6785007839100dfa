"""The audit of a forget subject against its own references: TOST, auditability, LR, AUC p."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MachineUnlearningLib.evaluation.audit import auc_mann_whitney
from MachineUnlearningLib.evaluation.reference_audit import (
    ReferenceScores,
    auc_permutation_p,
    pooled_spread,
    reference_verdict,
    split_seeds,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

# Dice-like numbers: retrains around 0.50 (SD 0.01), originals around 0.56 (6 SD above).
RETRAINED = (0.49, 0.50, 0.51)
ORIGINALS = (0.555, 0.56, 0.565)


def refs(retrained=RETRAINED, originals=ORIGINALS, feature="dice", subject="070"):
    return ReferenceScores(
        subject, feature, tuple(retrained), tuple(originals), (0, 1, 2), (0, 1, 2)
    )


def test_pooled_spread_pools_within_subject_variances():
    spread = pooled_spread([refs(), refs((0.3, 0.32, 0.34), subject="1")])
    # sums of squares 0.0002 and 0.0008 over 2 + 2 degrees of freedom
    assert spread.retrained_df == 4
    assert spread.retrained_sd == pytest.approx(math.sqrt(0.001 / 4))
    assert spread.originals_df == 4 and spread.subjects == ("070", "1")
    with pytest.raises(InvalidInputError, match="seed spread"):
        pooled_spread([refs((0.5, 0.5, 0.5))])


def test_a_retrain_like_score_is_forgotten_and_the_original_is_still_remembered():
    spread = pooled_spread([refs()])
    retrain = reference_verdict(0.50, refs(), spread)
    assert retrain.verdict == "forgotten" and retrain.auditable
    assert retrain.p_equivalence < 0.05 and retrain.log_likelihood_ratio < 0
    assert retrain.margin == pytest.approx(3 * spread.retrained_sd)
    original = reference_verdict(0.56, refs(), spread)
    assert original.verdict == "still remembered" and original.log_likelihood_ratio > 0
    assert original.gap_sds == pytest.approx(6.0)
    collapsed = reference_verdict(0.30, refs(), spread)
    assert collapsed.verdict == "over-forgotten" and collapsed.gap_sds < -10
    # just outside the certified band on the member side is not "forgotten"
    edge = reference_verdict(0.50 + retrain.band_half_width * 1.01, refs(), spread)
    assert edge.verdict == "still remembered"
    assert "FORGOTTEN" in retrain.explanation and "1 time(s)" in retrain.explanation


def test_originals_too_close_to_the_retrains_make_the_subject_not_auditable():
    close = refs(originals=(0.505, 0.51, 0.515))
    verdict = reference_verdict(0.50, close, pooled_spread([close]))
    assert verdict.verdict == "not auditable" and not verdict.auditable
    assert verdict.separation_sds < verdict.min_separation / verdict.seed_sd


def test_a_collapse_far_below_the_retrains_is_over_forgotten_even_when_not_auditable():
    # the originals overlap the retrains (no "forgotten" / "still remembered" call is
    # possible), but a model scoring 20 SDs below every retrain is worse than models that
    # never saw the subject: that needs only the retrains
    close = refs(originals=(0.505, 0.51, 0.515))
    spread = pooled_spread([close])
    collapsed = reference_verdict(0.30, close, spread)
    assert collapsed.verdict == "over-forgotten" and not collapsed.auditable
    assert "retrains alone" in collapsed.explanation
    # just inside the margin, or above the retrains, stays "not auditable"
    inside = reference_verdict(0.50 - 0.9 * collapsed.margin, close, spread)
    assert inside.verdict == "not auditable"
    assert reference_verdict(0.60, close, spread).verdict == "not auditable"


def test_a_lower_is_member_feature_is_oriented():
    loss = refs(retrained=(1.2, 1.25, 1.3), originals=(0.9, 0.95, 1.0), feature="loss")
    spread = pooled_spread([loss])
    assert reference_verdict(0.95, loss, spread).verdict == "still remembered"
    assert reference_verdict(1.25, loss, spread).verdict == "forgotten"
    assert reference_verdict(2.5, loss, spread).verdict == "over-forgotten"


def test_fewer_certification_references_widen_the_uncertainty():
    spread = pooled_spread([refs()])
    all_three = reference_verdict(0.515, refs(), spread)
    two = reference_verdict(0.515, refs().only_seeds([1, 2]), spread)
    assert two.n_retrained == 2 and two.band_half_width < all_three.band_half_width


def test_bad_settings_are_refused():
    spread = pooled_spread([refs()])
    with pytest.raises(InvalidInputError, match="alpha"):
        reference_verdict(0.5, refs(), spread, alpha=0.7)
    with pytest.raises(InvalidInputError, match="margin_sds"):
        reference_verdict(0.5, refs(), spread, margin_sds=0)
    with pytest.raises(InvalidInputError, match="reference seeds"):
        split_seeds([0, 1])
    assert split_seeds([0, 1, 2]) == ([0], [1, 2])


def test_the_auc_permutation_p_value_is_exact_and_has_its_size():
    # perfect separation of 3 vs 3: one labelling of 20 is as extreme
    p, exact = auc_permutation_p([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert exact and p == pytest.approx(1 / 20)
    # under the null the test rejects at most alpha of the time (6 vs 5, as in the issue)
    rng = np.random.default_rng(0)
    rejections = [
        auc_permutation_p(rng.normal(size=6), rng.normal(size=5))[0] <= 0.05 for _ in range(300)
    ]
    assert np.mean(rejections) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)
    # and it has power against a real shift
    shifted = [
        auc_permutation_p(rng.normal(2.0, size=6), rng.normal(size=5))[0] <= 0.05
        for _ in range(100)
    ]
    assert np.mean(shifted) > 0.6
    m, h = rng.normal(size=9), rng.normal(size=9)
    p_mc, exact_mc = auc_permutation_p(m, h, max_exact=10, n_resamples=2000)
    p_ex, _ = auc_permutation_p(m, h)
    assert not exact_mc and abs(p_mc - p_ex) < 0.05
    assert 0.0 <= auc_mann_whitney(m, h) <= 1.0
