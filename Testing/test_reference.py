"""Gaps to the retrain-from-scratch reference and the recipe round trip used by its cache."""

from __future__ import annotations

import pytest

from MachineUnlearningLib.commands.reference import recipe_overrides
from MachineUnlearningLib.evaluation.gaps import reference_gaps
from MachineUnlearningLib.evaluation.metrics import SubjectMetrics
from MachineUnlearningLib.evaluation.predict import Evaluation
from MachineUnlearningLib.training.recipes import resolve_recipe


def an_evaluation(name, values):
    subjects = [
        SubjectMetrics(subject_id=i, role=role, dice={1: d}, mean_dice=d, mae=m)
        for i, (role, d, m) in values.items()
    ]
    return Evaluation(model=name, epoch=1, subjects=subjects, predictions={}, signals=[])


def test_gaps_are_absolute_per_subject_and_per_set():
    unlearned = an_evaluation(
        "unlearned",
        {
            "070": ("forget", 0.30, 0.20),
            "1": ("retain", 0.80, 0.05),
            "4": ("retain", 0.70, 0.07),
            "H01": ("held-out", 0.60, 0.10),
        },
    )
    retrained = an_evaluation(
        "retrained",
        {
            "070": ("forget", 0.70, 0.09),
            "1": ("retain", 0.85, 0.04),
            "4": ("retain", 0.75, 0.06),
            "H01": ("held-out", 0.70, 0.09),
        },
    )
    gaps = reference_gaps(unlearned, retrained)
    assert gaps["subjects"]["070"]["dice_gap"] == pytest.approx(0.40)
    assert gaps["subjects"]["070"]["mae_gap"] == pytest.approx(0.11)
    assert gaps["sets"]["retain"]["dice_gap"] == pytest.approx(0.05)
    assert gaps["avg_gap"] == pytest.approx((0.40 + 0.05 + 0.10) / 3)


def test_a_subject_missing_from_the_reference_has_no_gap():
    unlearned = an_evaluation("u", {"070": ("forget", 0.3, 0.2), "1": ("retain", 0.8, 0.1)})
    retrained = an_evaluation("r", {"1": ("retain", 0.8, 0.1)})
    gaps = reference_gaps(unlearned, retrained)
    assert gaps["subjects"]["070"]["dice_gap"] is None
    assert gaps["sets"]["forget"]["dice_gap"] is None
    assert gaps["avg_gap"] == pytest.approx(0.0)


def test_a_stored_recipe_rebuilds_the_same_recipe():
    recipe = resolve_recipe("cpu-demo", {"base_width": 8, "input_size": [32, 64, 64]})
    rebuilt = resolve_recipe(
        "cpu-demo", {k: v for k, v in recipe_overrides(recipe.to_dict()).items() if k != "recipe"}
    )
    assert rebuilt.model == recipe.model
    assert rebuilt.preprocessing == recipe.preprocessing
    assert rebuilt.training.to_dict() | {"seed": 0} == recipe.training.to_dict() | {"seed": 0}


def test_unlearn_with_reference_auto_retrains_once_and_reports_gaps(
    a_tiny_cohort, a_tiny_trained_model, tmp_path, monkeypatch
):
    import json

    from MachineUnlearningLib.commands import run_job
    from MachineUnlearningLib.runtime.events import CollectingSink
    from MachineUnlearningLib.runtime.jobs import JobSpec

    monkeypatch.setenv("MACHINE_UNLEARNING_CACHE", str(tmp_path / "cache"))

    def run(name):
        sink = CollectingSink()
        job = JobSpec(
            command="unlearn",
            cohort=str(a_tiny_cohort),
            output=str(tmp_path / name),
            checkpoint=str(a_tiny_trained_model),
            forget_ids=["070"],
            epochs=1,
            device="cpu",
            reference="auto",
        )
        run_job(job, sink)
        return sink, json.loads((tmp_path / name / "metrics.json").read_text())

    first, metrics = run("first")
    reference = metrics["reference"]
    assert reference["model"] == "retrained"
    assert {s["subject_id"]: s["role"] for s in reference["subjects"]}["070"] == "forget"
    assert reference["gaps"]["avg_gap"] is not None
    assert set(reference["gaps"]["sets"]) == {"forget", "retain", "held-out"}
    audit = json.loads((tmp_path / "first" / "audit.json").read_text())
    assert "retrained" in audit
    trained = [e for e in first.of_kind("progress") if e["phase"] == "train"]
    assert trained, "the first run retrains the reference"

    second, again = run("second")
    assert not [e for e in second.of_kind("progress") if e["phase"] == "train"]
    assert any("reusing the retrained reference" in e["detail"] for e in second.of_kind("phase"))
    assert again["reference"]["gaps"] == reference["gaps"]
