"""scripts/benchmark_strategies.py: which audit verdict a preset row carries."""

from __future__ import annotations

import json

from conftest import load_script

strategies = load_script("benchmark_strategies")


def test_the_verdict_against_the_subject_s_own_retrains_comes_first(tmp_path):
    (tmp_path / "audit.json").write_text(json.dumps({"unlearned": {"overall": "over-forgotten"}}))
    assert strategies.final_verdict(tmp_path) == "over-forgotten (vs held-out)"
    (tmp_path / "reference-audit.json").write_text(json.dumps({"verdict": "still remembered"}))
    assert strategies.final_verdict(tmp_path) == "still remembered"


def test_a_reference_audit_that_did_not_run_falls_back_or_says_none(tmp_path):
    (tmp_path / "reference-audit.json").write_text(json.dumps({"verdict": None}))
    assert strategies.final_verdict(tmp_path) is None
