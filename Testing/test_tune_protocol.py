"""scripts/tune_protocol.py: the search's objective and its equal-budget check."""

from __future__ import annotations

import pytest

from conftest import load_script

tune = load_script("tune_protocol")


def a_pair(**changes):
    pair = {
        "forget_gap": 0.0,
        "tau": 0.025,
        "retain_kept_pct": 100.0,
        "held_out_kept_pct": 100.0,
        "audit": "forgotten",
    }
    return {**pair, **changes}


def test_a_retrain_like_result_scores_zero_and_each_term_is_one_at_the_goal_s_edge():
    assert tune.objective(a_pair()) == 0.0
    assert tune.objective(a_pair(forget_gap=-0.025)) == pytest.approx(1.0)
    assert tune.objective(a_pair(retain_kept_pct=98.0)) == pytest.approx(1.0)
    assert tune.objective(a_pair(held_out_kept_pct=102.0)) == pytest.approx(1.0)
    assert tune.objective(a_pair(audit="still remembered")) == 1.0
    assert tune.objective(a_pair(held_out_kept_pct=None)) == 0.0


def test_over_forgetting_costs_as_much_as_under_forgetting():
    assert tune.objective(a_pair(forget_gap=0.05)) == tune.objective(a_pair(forget_gap=-0.05))


def test_every_method_gets_the_same_number_of_trials():
    trials = [("scrub", ["--param", "steps=60"]), ("neggrad-plus", ["--param", "alpha=0.9"])]
    assert tune.check_equal_budget(trials, ["scrub", "neggrad-plus"]) == 2
    with pytest.raises(SystemExit, match="unequal budgets"):
        tune.check_equal_budget(trials[:1], ["scrub", "neggrad-plus"])
    with pytest.raises(SystemExit, match="unknown method"):
        tune.check_equal_budget([("salun", [])], ["scrub"])
