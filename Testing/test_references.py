"""The reference ensemble from the retrain cache, and a verdict against it, on the tiny cohort."""

from __future__ import annotations

import pytest

from conftest import TINY_RECIPE
from MachineUnlearningLib.commands.references import load_references, missing_for, training_cost
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import CollectingSink

CONFIG = {"recipe": "cpu-demo", **TINY_RECIPE, "epochs": 2, "schedule": "constant"}


def trained_models(sink: CollectingSink) -> int:
    return sum(
        1
        for e in sink.of_kind("phase")
        if e["name"] == "retrain-cache" and e["detail"].startswith("training")
    )


def test_references_are_trained_once_for_the_asked_subject_and_then_only_read(
    a_fresh_cohort, monkeypatch, tmp_path
):
    monkeypatch.setenv("MACHINE_UNLEARNING_CACHE", str(tmp_path / "cache"))
    cohort = str(a_fresh_cohort)
    empty = load_references(cohort, CONFIG, CollectingSink(), device="cpu")
    assert empty.subjects() == [] and len(missing_for(empty, "070")) == 6
    assert "6 model(s) to train" in training_cost(empty, 6)

    first = CollectingSink()
    bank = load_references(cohort, CONFIG, first, train=["070"], device="cpu")
    assert trained_models(first) == 6  # 3 originals + 3 retrains without 070
    assert bank.subjects() == ["070"] and missing_for(bank, "070") == []
    assert any("retrain without 1, seed 0" == m for m in bank.missing)

    again = CollectingSink()
    reread = load_references(cohort, CONFIG, again, device="cpu")
    assert trained_models(again) == 0 and reread.subjects() == ["070"]

    refs = reread.references("070")
    assert len(refs.retrained) == 3 and len(refs.originals) == 3
    assert len(set(refs.retrained_keys)) == 3 and len(set(refs.original_keys)) == 3
    assert set(refs.retrained_keys).isdisjoint(refs.original_keys)
    # a score equal to the retrains' mean is judged on the retrains' side of the originals
    mean_retrained = sum(refs.retrained) / 3
    verdict = reread.verdict("070", mean_retrained, looks=1)
    assert verdict.gap_sds == pytest.approx(0.0, abs=1e-9)
    assert verdict.verdict in ("forgotten", "not auditable")
    assert verdict.references["retrained"] == list(refs.retrained_keys)
    described = reread.describe()
    assert described["subjects"] == ["070"] and "070@1" in described["retrains"]
    with pytest.raises(InvalidInputError, match="no complete reference ensemble"):
        reread.verdict("1", 0.5)
    with pytest.raises(InvalidInputError, match="not training subjects"):
        load_references(cohort, CONFIG, CollectingSink(), train=["H01"], device="cpu")


def test_the_reference_options_are_validated():
    from MachineUnlearningLib.runtime.jobs import JobSpec

    common = {"command": "audit", "cohort": "c", "output": "o", "checkpoint": "m.pt"}
    assert JobSpec(**common).references == "cached"
    assert JobSpec(**common).reference_seeds == [0, 1, 2]
    with pytest.raises(InvalidInputError, match="references"):
        JobSpec(**common, references="sometimes")
    for seeds in ([], [0, 0, 1], ["0"], "012"):
        with pytest.raises(InvalidInputError, match="reference_seeds"):
            JobSpec(**common, reference_seeds=seeds)
    job = JobSpec(**common, reference_seeds=[3, 4, 5])
    assert JobSpec.from_dict(job.to_dict()).reference_seeds == [3, 4, 5]


def test_the_stopping_rule_refuses_too_few_reference_seeds_before_any_work(tmp_path):
    from MachineUnlearningLib.commands import run_job
    from MachineUnlearningLib.runtime.jobs import JobSpec

    job = JobSpec(
        command="unlearn",
        cohort=str(tmp_path / "cohort"),
        output=str(tmp_path / "out"),
        checkpoint=str(tmp_path / "model.pt"),
        forget_ids=["070"],
        stop_when_indistinguishable=True,
        reference_seeds=[0, 1],
    )
    with pytest.raises(InvalidInputError, match="reference seeds"):
        run_job(job, CollectingSink())
    assert not (tmp_path / "out").exists()
