"""The retrain cache: originals and leave-one-out retrains, trained once, keyed by content."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import TINY_RECIPE
from MachineUnlearningLib.commands.retrains import (
    RetrainRequest,
    cached_model,
    leave_one_out,
    originals,
    score_models,
    training_subjects,
)
from MachineUnlearningLib.data.cohort import MRBRAINS18_TRAINING_IDS
from MachineUnlearningLib.model.checkpoint import load_checkpoint
from MachineUnlearningLib.runtime.errors import CancelledError, InvalidInputError
from MachineUnlearningLib.runtime.events import CollectingSink

CONFIG = {"recipe": "cpu-demo", **TINY_RECIPE, "epochs": 2, "schedule": "constant"}


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MACHINE_UNLEARNING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def trained(sink: CollectingSink) -> bool:
    return any(e["phase"] == "train" for e in sink.of_kind("progress"))


def test_a_model_is_trained_once_and_then_reused(a_fresh_cohort, cache):
    request = RetrainRequest(str(a_fresh_cohort), CONFIG, ("1", "4", "5"), seed=0)
    first_sink, second_sink = CollectingSink(), CollectingSink()
    first = cached_model(request, first_sink, device="cpu")
    second = cached_model(request, second_sink, device="cpu")
    assert not first.reused and trained(first_sink)
    assert second.reused and not trained(second_sink)
    assert first.path == second.path and first.path.is_file()
    assert first.training_seconds is not None and first.training_seconds == second.training_seconds
    meta = load_checkpoint(first.path).metadata
    assert meta["subject_ids"]["trained_on"] == ["1", "4", "5"]
    key = json.loads((first.path.parent / "cache-key.json").read_text())
    assert [i for i, _ in key["trained_on"]] == ["1", "4", "5"] and key["seed"] == 0
    assert not [p for p in (cache / "retrains").iterdir() if p.name.startswith(".partial")]


def test_the_key_follows_the_data_not_the_folder(a_fresh_cohort, tmp_path, cache):
    request = RetrainRequest(str(a_fresh_cohort), CONFIG, ("1", "4"), seed=0)
    first = cached_model(request, CollectingSink(), device="cpu")
    moved = tmp_path / "moved"
    shutil.copytree(a_fresh_cohort, moved)
    again = cached_model(RetrainRequest(str(moved), CONFIG, ("1", "4"), 0), CollectingSink())
    assert again.reused and again.path == first.path
    label = moved / "training" / "4" / "segm.nii.gz"
    image = nib.load(str(label))
    data = np.asanyarray(image.dataobj).copy()
    data[data == 6] = 5  # an edited subject
    nib.save(nib.Nifti1Image(data, image.affine), str(label))
    edited = cached_model(RetrainRequest(str(moved), CONFIG, ("1", "4"), 0), CollectingSink())
    assert not edited.reused and edited.path != first.path
    other_seed = cached_model(RetrainRequest(str(moved), CONFIG, ("1", "4"), 1), CollectingSink())
    assert not other_seed.reused and other_seed.path not in (first.path, edited.path)


def test_leave_one_out_and_originals(a_fresh_cohort, cache):
    cohort = str(a_fresh_cohort)
    sink = CollectingSink()
    retrains = leave_one_out(cohort, CONFIG, ["070"], [0, 1], sink, device="cpu")
    assert set(retrains) == {("070", 0), ("070", 1)}
    for (left_out, seed), cached in retrains.items():
        meta = load_checkpoint(cached.path).metadata
        assert meta["subject_ids"]["trained_on"] == [
            i for i in training_subjects(cohort) if i != left_out
        ]
        assert sorted(training_subjects(cohort)) == sorted(MRBRAINS18_TRAINING_IDS)
        assert meta["subject_ids"]["never_seen"] == ["070"]
        assert meta["training_history"][0]["seed"] == seed
    assert retrains[("070", 0)].path != retrains[("070", 1)].path
    base = originals(cohort, CONFIG, [0], sink, device="cpu")[0]
    meta = load_checkpoint(base.path).metadata
    assert sorted(meta["subject_ids"]["trained_on"]) == sorted(training_subjects(cohort))
    with pytest.raises(InvalidInputError, match="not a training subject"):
        leave_one_out(cohort, CONFIG, ["H01"], [0], sink, device="cpu")


def test_scores_name_each_subjects_role_and_are_cached(a_fresh_cohort, cache):
    cohort = str(a_fresh_cohort)
    retrain = leave_one_out(cohort, CONFIG, ["070"], [0], CollectingSink(), device="cpu")
    cached = retrain[("070", 0)]
    ids = ["070", "1", "H01"]
    scores = score_models([cached], cohort, ids, device="cpu")[cached.path]
    assert {i: scores[i]["role"] for i in ids} == {
        "070": "forget",
        "1": "retain",
        "H01": "held-out",
    }
    for i in ids:
        assert scores[i]["loss"] > 0 and 0 <= scores[i]["dice"] <= 1
    stored = cached.path.parent / "scores.json"
    stamp = stored.stat().st_mtime_ns
    again = score_models([cached], cohort, ids, device="cpu")[cached.path]
    assert again == scores and stored.stat().st_mtime_ns == stamp


class CancelAfterFirstStep(CollectingSink):
    """Asks the run to stop (its cancel file) once the first training step is done."""

    def __init__(self, cancel_file) -> None:
        super().__init__()
        self.cancel_file = cancel_file

    def emit(self, event: str, **fields) -> None:
        super().emit(event, **fields)
        if event == "progress":
            self.cancel_file.write_text("stop")


def test_a_cancelled_training_leaves_nothing_under_the_key(a_fresh_cohort, cache, tmp_path):
    cancel = tmp_path / "CANCEL"
    request = RetrainRequest(str(a_fresh_cohort), CONFIG, ("1", "4"), seed=3)
    with pytest.raises(CancelledError):
        cached_model(request, CancelAfterFirstStep(cancel), "cpu", cancel_file=str(cancel))
    assert not list((cache / "retrains").iterdir())
    cancel.unlink()
    assert not cached_model(request, CollectingSink(), device="cpu").reused


def test_a_request_cannot_train_on_a_left_out_subject():
    with pytest.raises(InvalidInputError, match="both trained on and left out"):
        RetrainRequest("c", CONFIG, ("1", "4"), 0, ("4",))
    with pytest.raises(InvalidInputError, match="no subject"):
        RetrainRequest("c", CONFIG, (), 0)


def test_a_changed_recipe_definition_is_not_served_from_the_cache(
    a_fresh_cohort, cache, monkeypatch
):
    """The key holds the resolved recipe: {"recipe": "cpu-demo"} after the recipe's
    definition changed must train a new model (a stale one once came back)."""
    import dataclasses

    from MachineUnlearningLib.training import recipes

    config = {"recipe": "cpu-demo", **TINY_RECIPE, "epochs": 1}
    request = RetrainRequest(str(a_fresh_cohort), config, ("1", "4"), seed=0)
    first = cached_model(request, CollectingSink(), device="cpu")
    changed = dataclasses.replace(
        recipes.RECIPES["cpu-demo"],
        training=dataclasses.replace(recipes.RECIPES["cpu-demo"].training, gamma=0.5),
    )
    monkeypatch.setitem(recipes.RECIPES, "cpu-demo", changed)
    second = cached_model(request, CollectingSink(), device="cpu")
    assert not second.reused and second.path != first.path
