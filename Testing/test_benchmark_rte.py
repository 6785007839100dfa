"""scripts/benchmark_rte.py on the phantom cohort: the retrain and the unlearning run are real
CLI subprocesses of one script on the same threads, and RTE is their time ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_rte_script_runs_retrain_and_unlearn_and_reports_their_ratio(
    a_tiny_cohort, a_tiny_trained_model, tmp_path
):
    out = tmp_path / "rte.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "benchmark_rte.py"),
            *("--cohort", str(a_tiny_cohort), "--checkpoint", str(a_tiny_trained_model)),
            *("--forget", "070", "--work", str(tmp_path / "runs"), "--scale", "0.08"),
            *("--threads", "1", "--json", str(out)),
            "--method",
            "noisy-label+fix-decoder=--strategy noisy-label --fix-decoder --eval-epochs 2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    retrain, [method] = data["retrain"], data["methods"]
    assert data["threads"] == 1
    assert retrain["epochs"] == 2  # 0.08 x the baseline recipe's 25 epochs
    assert method["epochs"] == 4  # 0.08 x noisy-label's 50 epochs
    assert method["steps"] == 4 * 7  # 1 forget + 6 retain subjects per epoch
    assert retrain["loop_s"] > 0 and retrain["command_s"] > retrain["loop_s"]
    assert 0 < method["evaluations_in_loop_s"] < method["loop_s_with_evaluations"]
    assert method["loop_s"] == pytest.approx(
        method["loop_s_with_evaluations"] - method["evaluations_in_loop_s"], abs=0.02
    )
    assert method["rte_loop"] == pytest.approx(retrain["loop_s"] / method["loop_s"], rel=0.02)
    assert method["rte_command"] == pytest.approx(
        retrain["command_s"] / method["command_s"], rel=0.02
    )
    assert "--fix-decoder" in method["args"]
    assert (tmp_path / "runs" / "retrain" / "model.pt").exists()
    assert "forget" in method["sets"] and "retain" in retrain["sets"]
