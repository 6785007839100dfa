"""``unlearn`` audited against the forget subject's own references (tiny cohort, real training).

The original is the cached original at seed 0 of a tiny recipe, so the reference ensemble
(originals and retrains without 070 at seeds 0, 1, 2) fits it exactly.
"""

from __future__ import annotations

import json

import pytest

from conftest import TINY_RECIPE
from MachineUnlearningLib.commands import run_job
from MachineUnlearningLib.commands.references import load_references, references_for_job
from MachineUnlearningLib.evaluation.reference_audit import VERDICTS
from MachineUnlearningLib.model.checkpoint import load_checkpoint
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.runtime.jobs import JobSpec

CONFIG = {"recipe": "cpu-demo", **TINY_RECIPE, "epochs": 2, "schedule": "constant"}


@pytest.fixture(scope="module")
def a_bank(a_tiny_cohort, tmp_path_factory):
    cache = tmp_path_factory.mktemp("reference-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("MACHINE_UNLEARNING_CACHE", str(cache))
    bank = load_references(
        str(a_tiny_cohort), CONFIG, CollectingSink(), train=["070"], device="cpu"
    )
    yield bank
    patch.undo()


def unlearn_job(cohort, bank, output, **changes) -> JobSpec:
    return JobSpec(
        **{
            "command": "unlearn",
            "cohort": str(cohort),
            "output": str(output),
            "checkpoint": str(bank.originals[0].path),
            "forget_ids": ["070"],
            "strategy": "noisy-label",
            "epochs": 3,
            "device": "cpu",
            "strategy_params": {"learning_rate": 0.05},
            **changes,
        }
    )


def test_the_stopping_rule_chooses_with_one_seed_and_certifies_once_with_the_others(
    a_tiny_cohort, a_bank, tmp_path
):
    sink = CollectingSink()
    job = unlearn_job(
        a_tiny_cohort, a_bank, tmp_path / "run",
        stop_when_indistinguishable=True, stop_retain_tolerance=0.5,
    )  # fmt: skip
    outputs = run_job(job, sink)
    audit = json.loads((tmp_path / "run" / "reference-audit.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    unlearned_epochs = [e["epoch"] for e in metrics["evaluations"] if e["model"] == "unlearned"]
    assert audit["verdict"] in VERDICTS and audit["subject"] == "070"
    assert audit["looks"] == {"certification": 1, "selection": len(unlearned_epochs)}
    assert audit["selection"]["selection_seeds"] == [0]
    assert audit["certification_seeds"] == [1, 2]
    assert audit["unlearned"]["retrained_seeds"] == [1, 2]
    expected = a_bank.references("070", seeds=[1, 2])
    assert audit["unlearned"]["references"]["retrained"] == list(expected.retrained_keys)
    assert audit["unlearned"]["references"]["originals"] == list(expected.original_keys)
    assert audit["selection"]["chosen_epoch"] in unlearned_epochs
    # the original, scored by the run, is the cached original's score (same pipeline)
    original_value = audit["original"]["value"]
    assert original_value == pytest.approx(
        a_bank.scores[a_bank.originals[0].path]["070"]["dice"], abs=1e-9
    )
    # the written model is the chosen epoch's
    history = load_checkpoint(outputs["checkpoint"]).metadata["training_history"][-1]
    assert history["chosen_epoch"] == audit["selection"]["chosen_epoch"]
    record = json.loads((tmp_path / "run" / "deletion-record.json").read_text())
    entry = record["forgetting_audit"]
    assert entry["verdict"] == audit["verdict"] and entry["margin"] > 0
    assert entry["looks"] == audit["looks"] and entry["margin_sds"] == 3.0
    assert entry["references"]["retrained"] == list(expected.retrained_keys)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Audit against retrained models" in report
    assert "Secondary check: comparison with never-seen subjects" in report
    assert any(e["name"] == "audit" for e in sink.of_kind("phase"))


def test_without_references_the_run_says_so_plainly(a_tiny_cohort, a_bank, tmp_path):
    sink = CollectingSink()
    run_job(unlearn_job(a_tiny_cohort, a_bank, tmp_path / "none", references="none"), sink)
    record = json.loads((tmp_path / "none" / "deletion-record.json").read_text())
    assert record["forgetting_audit"]["verdict"] is None
    assert "--references none" in record["forgetting_audit"]["reason"]
    assert any("no audit against retrained models" in e["message"] for e in sink.of_kind("warning"))
    metadata = load_checkpoint(a_bank.originals[0].path).metadata
    # another subject's references are not in the cache: 'cached' never trains them
    other = unlearn_job(a_tiny_cohort, a_bank, tmp_path / "o", forget_ids=["1"])
    quiet = CollectingSink()
    bank, reason = references_for_job(other, metadata, quiet)
    assert bank is None and "--references auto" in reason and "model(s) to train" in reason
    assert not [e for e in quiet.of_kind("progress") if e["phase"] == "train"]
    two = unlearn_job(a_tiny_cohort, a_bank, tmp_path / "t", forget_ids=["070", "1"])
    assert "one forget subject at a time" in references_for_job(two, metadata, quiet)[1]


def test_the_audit_command_audits_against_the_references_and_keeps_the_held_out_check(
    a_tiny_cohort, a_bank, tmp_path
):
    job = JobSpec(
        command="audit",
        cohort=str(a_tiny_cohort),
        output=str(tmp_path / "audit"),
        checkpoint=str(a_bank.originals[0].path),
        forget_ids=["070"],
        device="cpu",
    )
    outputs = run_job(job, CollectingSink())
    document = json.loads((tmp_path / "audit" / "reference-audit.json").read_text())
    # the original itself: its score is one of the originals' (it is the seed-0 original)
    assert document["unlearned"]["value"] == pytest.approx(
        a_bank.references("070").originals[0], abs=1e-9
    )
    assert document["verdict"] in VERDICTS and document["unlearned"]["looks"] == 1
    assert "audit" in outputs and (tmp_path / "audit" / "audit.md").exists()
