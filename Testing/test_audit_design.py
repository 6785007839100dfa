"""The audit's operating characteristics (scripts/simulate_audit.py), simulated small and seeded.

The old held-out rule passes a do-nothing model far more often with 20 looks than with one; the
new audit rarely calls a do-nothing model forgotten and usually certifies a fresh retrain. The
committed docs/audit-design.json holds the full run on the bench references.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


def test_peeking_inflates_the_old_rule_and_the_bootstrap_interval_under_covers():
    old = load_script("simulate_audit").old_audit(reps=160, seed=0)
    passes = old["stopping_rule_do_nothing_z_minus_4_passes_within_20_looks"]
    assert passes["0.0"] > 3 * old["stopping_rule_do_nothing_one_look_passes"]
    assert passes["0.0"] > passes["1.0"]
    assert 0.5 < old["power_member_call_3sd_5_never_seen"] < 0.95
    assert min(old["bootstrap_auc_ci_coverage_6_vs_5_nominal_0.95"].values()) < 0.95
    assert old["permutation_p_size_6_vs_5_null"]["rejections_at_0.05"] <= 0.1


def test_the_new_audit_separates_doing_nothing_from_a_retrain():
    # three subjects with the spreads measured on the bench references (dice), separations
    # chosen to cover an easy, a typical and a hard-to-audit subject
    spread = {"retrained_sd": 0.0093, "originals_sd": 0.0056}
    measured = {
        "features": {
            "dice": {
                "spread": spread,
                "subjects": {
                    "a": {"separation_sds": 8.0},
                    "b": {"separation_sds": 5.0},
                    "c": {"separation_sds": 3.4},
                },
            }
        }
    }
    new = load_script("simulate_audit").new_audit(measured, reps=150, seed=1)
    assert new["false_forgotten_do_nothing_max"] <= 0.1
    assert new["power_retrain_min"] >= 0.5
    for subject in ("a", "b"):
        assert new["verdict_rates"]["do_nothing"][subject]["still remembered"] >= 0.95
        assert new["verdict_rates"]["retrain"][subject]["forgotten"] >= 0.7
    rates = new["stopping_rule_null_boundary_forgotten_rate"]
    assert rates["disjoint_seeds"] <= 0.1


def test_the_committed_design_json_says_what_the_audit_uses():
    from MachineUnlearningLib.evaluation.reference_audit import (
        DEFAULT_FEATURE,
        DEFAULT_MARGIN_SDS,
    )

    design = json.loads((REPO / "docs" / "audit-design.json").read_text())
    assert design["measured"]["best_feature"] == DEFAULT_FEATURE
    assert design["new_audit"]["margin_sds"] == DEFAULT_MARGIN_SDS
    assert design["command"].startswith("scripts/simulate_audit.py")
