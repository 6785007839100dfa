"""The membership-inference audit: percentiles, p-values, verdicts, attack and stopping rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MachineUnlearningLib.evaluation.audit import (
    FEATURE_DIRECTIONS,
    SubjectSignals,
    auc_mann_whitney,
    audit,
    bootstrap_auc_ci,
    percentile_in_reference,
    population_attack,
    stopping_rule_satisfied,
    tail_p_values,
    tpr_at_fpr,
    verdict_for_subject,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

NEVER_SEEN_LOSS = (0.30, 0.34, 0.28)  # mean 0.3067, SD 0.0306
TRAINED_ON_LOSS = (0.10, 0.12, 0.11, 0.09)


def held_out(*losses: float, dice: float = 0.78) -> list[SubjectSignals]:
    return [SubjectSignals(f"H{i}", "held-out", loss=x, dice=dice) for i, x in enumerate(losses)]


def retain(*losses: float) -> list[SubjectSignals]:
    return [SubjectSignals(f"R{i}", "retain", loss=x, dice=0.9) for i, x in enumerate(losses)]


def forget(loss: float, subject_id: str = "070", dice: float | None = None) -> SubjectSignals:
    return SubjectSignals(subject_id, "forget", loss=loss, dice=dice)


@pytest.fixture
def a_cohort_of_signals() -> list[SubjectSignals]:
    return [
        *held_out(*NEVER_SEEN_LOSS),
        *retain(*TRAINED_ON_LOSS),
        forget(0.10, "still-known"),
        forget(0.31, "forgotten"),
        forget(0.90, "collapsed"),
    ]


# --- percentiles and empirical p-values ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.0), (2.0, 0.375), (2.5, 0.5), (4.0, 0.875), (5.0, 1.0)],
    ids=["below-all", "tie-counts-half", "middle", "tie-at-top", "above-all"],
)
def test_percentile_counts_values_below_plus_half_the_ties(value, expected):
    assert percentile_in_reference(value, [1, 2, 3, 4]) == pytest.approx(expected)


def test_tail_p_values_use_the_plus_one_correction():
    assert tail_p_values(0.5, [1, 2, 3, 4], "lower") == pytest.approx((0.2, 1.0))
    assert tail_p_values(0.5, [1, 2, 3, 4], "higher") == pytest.approx((1.0, 0.2))


def test_tail_p_values_count_ties_in_both_tails():
    # 2 values <= 2 and 3 values >= 2 among [1, 2, 3, 4]
    assert tail_p_values(2.0, [1, 2, 3, 4], "lower") == pytest.approx((3 / 5, 4 / 5))


def test_percentile_of_an_empty_reference_is_an_input_error():
    with pytest.raises(InvalidInputError, match="reference"):
        percentile_in_reference(1.0, [])


def test_every_feature_has_a_documented_member_direction():
    assert FEATURE_DIRECTIONS == {
        "loss": "lower",
        "dice": "higher",
        "confidence": "higher",
        "entropy": "lower",
        "logit_confidence": "higher",
    }


# --- verdicts ------------------------------------------------------------------------------


def test_a_forget_subject_with_loss_far_below_the_never_seen_is_a_member():
    v = verdict_for_subject(forget(0.10), held_out(*NEVER_SEEN_LOSS), retain(*TRAINED_ON_LOSS))
    assert v.verdict == "member"
    assert v.z_score == pytest.approx(
        (0.10 - np.mean(NEVER_SEEN_LOSS)) / np.std(NEVER_SEEN_LOSS, ddof=1)
    )
    assert v.p_member < 0.05 < v.p_over_forgotten
    assert v.percentile == 0.0
    assert v.p_member_empirical == pytest.approx(0.25) == v.min_empirical_p
    assert v.member_mean == pytest.approx(np.mean(TRAINED_ON_LOSS))


def test_a_forget_subject_inside_the_never_seen_cloud_is_indistinguishable():
    v = verdict_for_subject(forget(0.31), held_out(*NEVER_SEEN_LOSS), retain(*TRAINED_ON_LOSS))
    assert v.verdict == "indistinguishable"
    assert v.percentile == pytest.approx(2 / 3)


def test_a_forget_subject_with_loss_far_above_the_never_seen_is_over_forgotten():
    v = verdict_for_subject(forget(0.90), held_out(*NEVER_SEEN_LOSS), retain(*TRAINED_ON_LOSS))
    assert v.verdict == "over-forgotten"
    assert v.p_over_forgotten < 0.05
    assert "OVER-FORGOTTEN" in v.explanation


@pytest.mark.parametrize(
    ("dice", "expected"),
    [(0.95, "member"), (0.77, "indistinguishable"), (0.06, "over-forgotten")],
    ids=["high-dice-member", "typical-dice", "collapsed-dice"],
)
def test_dice_is_oriented_higher_is_member_like(dice, expected):
    reference = [
        SubjectSignals(f"H{i}", "held-out", dice=d) for i, d in enumerate((0.78, 0.76, 0.80))
    ]
    v = verdict_for_subject(forget(0.3, dice=dice), reference, feature="dice")
    assert v.verdict == expected


def test_beyond_the_range_but_within_chance_is_indistinguishable():
    # 0.19 is below every never-seen value, but only 1.1 SD below their mean.
    v = verdict_for_subject(forget(0.19), held_out(0.2, 0.3, 0.4))
    assert v.value < v.non_member_min
    assert v.verdict == "indistinguishable"


def test_a_parametric_outlier_inside_the_never_seen_range_is_not_flagged():
    never_seen = held_out(0.30, 0.31, 0.29, 0.30, 0.31, 0.29, 0.30, 0.30, 0.31, 0.01)
    v = verdict_for_subject(forget(0.05), never_seen)
    assert v.p_member < 0.05  # the Gaussian test alone would flag it
    assert v.verdict == "indistinguishable"  # but a never-seen subject lies beyond it


def test_the_z_threshold_grows_for_small_cohorts_and_matches_alpha():
    v3 = verdict_for_subject(forget(0.31), held_out(*NEVER_SEEN_LOSS))
    assert v3.z_threshold == pytest.approx(3.3717, abs=1e-3)
    at_threshold = v3.non_member_mean - v3.z_threshold * v3.non_member_sd
    edge = verdict_for_subject(forget(at_threshold), held_out(*NEVER_SEEN_LOSS))
    assert edge.p_member == pytest.approx(0.05, abs=1e-6)
    assert edge.p_member + edge.p_over_forgotten == pytest.approx(1.0)
    v6 = verdict_for_subject(forget(0.31), held_out(0.30, 0.34, 0.28, 0.33, 0.29, 0.31))
    assert 2.0 < v6.z_threshold < v3.z_threshold


def test_without_spread_the_verdict_rests_on_the_range_alone():
    flat = held_out(0.3, 0.3, 0.3)
    below = verdict_for_subject(forget(0.1), flat)
    assert below.verdict == "member" and below.z_score is None and below.p_member is None
    assert "range only" in below.explanation
    assert verdict_for_subject(forget(0.3), flat).verdict == "indistinguishable"


def test_the_subject_itself_is_left_out_of_the_references():
    subject = SubjectSignals("H0", "held-out", loss=0.05)
    others = held_out(0.30, 0.34, 0.28)  # ids H0, H1, H2: H0 is the subject itself
    v = verdict_for_subject(subject, others)
    assert v.n_non_members == 2


def test_every_verdict_states_its_number_and_the_small_cohort_caveat():
    v = verdict_for_subject(forget(0.10), held_out(*NEVER_SEEN_LOSS))
    assert "1/(n+1) = 0.25" in v.explanation
    assert "0.25" in v.caveat and "does not prove" in v.caveat
    assert "z = -6.76" in v.explanation


def test_fewer_than_two_never_seen_subjects_is_an_input_error():
    with pytest.raises(InvalidInputError, match="non_members") as info:
        verdict_for_subject(forget(0.1), held_out(0.3))
    assert "--held-out" in info.value.hint


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.2], ids=["zero", "half", "above-one"])
def test_alpha_outside_zero_to_half_is_rejected(alpha):
    with pytest.raises(InvalidInputError, match="alpha"):
        verdict_for_subject(forget(0.1), held_out(*NEVER_SEEN_LOSS), alpha=alpha)


def test_a_missing_feature_value_names_the_subject():
    with pytest.raises(InvalidInputError, match="'070'"):
        verdict_for_subject(forget(0.1), held_out(*NEVER_SEEN_LOSS), feature="entropy")


def test_an_unknown_feature_suggests_the_closest_name():
    with pytest.raises(InvalidInputError, match="Did you mean 'loss'"):
        verdict_for_subject(forget(0.1), held_out(*NEVER_SEEN_LOSS), feature="los")


def test_a_non_finite_signal_is_rejected_at_construction():
    with pytest.raises(InvalidInputError, match="loss"):
        SubjectSignals("070", "forget", loss=float("nan"))


# --- population attack ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "non_members", "expected"),
    [
        ([3, 4], [1, 2], 1.0),
        ([1, 2], [3, 4], 0.0),
        ([1, 1], [1, 1], 0.5),
        ([2, 3], [1, 2], 3.5 / 4),
        ([1, 2, 3], [2, 4], 1.5 / 6),
    ],
    ids=["perfect", "reversed", "identical", "one-tie", "ties-and-overlap"],
)
def test_auc_is_the_mann_whitney_probability_with_ties_as_half(members, non_members, expected):
    assert auc_mann_whitney(members, non_members) == pytest.approx(expected)


def test_tpr_at_low_fpr_with_few_non_members_counts_members_beyond_all_of_them():
    assert tpr_at_fpr([5, 6, 1], [2, 3, 4], 0.01) == pytest.approx(2 / 3)
    assert tpr_at_fpr([4, 6, 1], [2, 3, 4], 0.01) == pytest.approx(1 / 3)  # a tie is an FP


def test_tpr_at_low_fpr_allows_one_percent_of_many_non_members():
    non_members = np.arange(200.0)  # 1 % = 2 false positives allowed
    assert tpr_at_fpr([198.5, 197.5, 150.0], non_members, 0.01) == pytest.approx(2 / 3)


def test_population_attack_orients_loss_so_lower_is_member():
    attack = population_attack(retain(0.1, 0.2), held_out(0.5, 0.6), "loss", n_resamples=50)
    assert attack.auc == 1.0 and attack.tpr_at_fpr == 1.0
    assert (attack.n_members, attack.n_non_members) == (2, 2)


def test_bootstrap_interval_is_deterministic_for_a_seed_and_contains_the_auc():
    members, non_members = [0.9, 0.7, 0.5, 0.65, 0.8], [0.6, 0.4, 0.55, 0.3]
    first = bootstrap_auc_ci(members, non_members, n_resamples=1000, seed=7)
    again = bootstrap_auc_ci(members, non_members, n_resamples=1000, seed=7)
    auc = auc_mann_whitney(members, non_members)
    assert first == again
    few = [bootstrap_auc_ci(members, non_members, n_resamples=5, seed=s) for s in range(10)]
    assert few == [bootstrap_auc_ci(members, non_members, n_resamples=5, seed=s) for s in range(10)]
    assert len(set(few)) > 1  # the seed really drives the resampling
    assert 0.0 <= first[0] <= auc <= first[1] <= 1.0
    assert first[0] < first[1]


def test_population_attack_needs_two_of_each_group():
    with pytest.raises(InvalidInputError, match="non_members"):
        population_attack(retain(0.1, 0.2), held_out(0.5), "loss")


# --- the audit -----------------------------------------------------------------------------


def test_audit_judges_every_forget_and_retain_subject(a_cohort_of_signals):
    report = audit(a_cohort_of_signals, "loss", n_resamples=100)
    verdicts = {v.subject_id: v.verdict for v in report.forget_verdicts}
    assert verdicts == {
        "still-known": "member",
        "forgotten": "indistinguishable",
        "collapsed": "over-forgotten",
    }
    assert [v.subject_id for v in report.retain_verdicts] == ["R0", "R1", "R2", "R3"]
    assert report.retain_flagged == 4
    assert report.overall == "mixed"
    assert report.attack.n_members == 4 and report.attack.n_non_members == 3


def test_an_audit_with_only_indistinguishable_forget_subjects_says_so():
    signals = [*held_out(*NEVER_SEEN_LOSS), *retain(*TRAINED_ON_LOSS), forget(0.31)]
    assert audit(signals, n_resamples=10).overall == "indistinguishable"


def test_the_audit_report_is_json_friendly_and_its_page_carries_the_caveat(a_cohort_of_signals):
    report = audit(a_cohort_of_signals, n_resamples=100, model_label="unlearned, epoch 50")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["overall"] == "mixed" and data["forget_verdicts"][2]["verdict"] == "over-forgotten"
    page = report.to_markdown()
    assert "| collapsed | forget |" in page and "**over-forgotten**" in page
    assert "unlearned, epoch 50" in page
    assert report.caveat in page and "1/(n+1) = 0.25" in page
    # AUC 1.0 on 4 vs 3 subjects: one labelling of C(7, 4) = 35 is as extreme
    assert report.attack.auc_p_exact and report.attack.auc_p_value == pytest.approx(1 / 35)
    assert "permutation p = 0.0286, exact" in page


def test_an_audit_without_held_out_subjects_explains_how_to_get_them():
    with pytest.raises(InvalidInputError, match="held-out") as info:
        audit([*retain(*TRAINED_ON_LOSS), forget(0.1)])
    assert "--held-out" in info.value.hint and "held-out/" in info.value.hint


@pytest.mark.parametrize(
    ("signals", "field"),
    [
        ([*held_out(0.3), *retain(0.1, 0.2)], "held-out"),
        ([*held_out(0.3, 0.4), *retain(0.1)], "retain"),
    ],
    ids=["one-held-out", "one-retain"],
)
def test_an_audit_needs_two_subjects_in_each_reference_group(signals, field):
    with pytest.raises(InvalidInputError, match=f"^{field}: only 1 subject"):
        audit(signals)


def test_duplicate_subject_ids_are_rejected():
    with pytest.raises(InvalidInputError, match="duplicate"):
        audit([*held_out(0.3, 0.4), *retain(0.1, 0.2), *retain(0.15)])


# --- stopping rule -------------------------------------------------------------------------


def verdicts_for(*losses: float):
    reference = held_out(*NEVER_SEEN_LOSS)
    return [verdict_for_subject(forget(x, f"F{i}"), reference) for i, x in enumerate(losses)]


def test_stop_when_all_forget_subjects_are_indistinguishable_and_retain_dice_holds():
    ok, reason = stopping_rule_satisfied(verdicts_for(0.31, 0.29), 0.86, 0.90)
    assert ok and "indistinguishable" in reason


def test_retain_dice_exactly_at_the_tolerance_is_enough():
    assert stopping_rule_satisfied(verdicts_for(0.31), 0.95, 1.0, tolerance=0.05)[0]


def test_do_not_stop_when_retain_dice_dropped_too_far():
    ok, reason = stopping_rule_satisfied(verdicts_for(0.31), 0.85, 0.90)
    assert not ok and "retain Dice 0.8500 is below 0.8550" in reason


@pytest.mark.parametrize("loss", [0.10, 0.90], ids=["still-member", "over-forgotten"])
def test_do_not_stop_while_the_audit_flags_a_forget_subject_in_either_tail(loss):
    ok, reason = stopping_rule_satisfied(verdicts_for(0.31, loss), 0.9, 0.9)
    assert not ok and "F1" in reason and "F0" not in reason


def test_do_not_stop_without_verdicts():
    assert not stopping_rule_satisfied([], 0.9, 0.9)[0]
