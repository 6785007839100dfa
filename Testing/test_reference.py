"""Gaps to the retrain-from-scratch reference and the recipe round trip used by its cache."""

from __future__ import annotations

import pytest

from MachineUnlearningLib.evaluation import Evaluation
from MachineUnlearningLib.metrics import SubjectMetrics
from MachineUnlearningLib.recipes import resolve_recipe
from MachineUnlearningLib.reference import recipe_overrides, reference_gaps


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
