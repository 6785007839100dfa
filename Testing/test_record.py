"""The deletion record: hashes, privacy, atomic write without overwrite, verification, page."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from MachineUnlearningLib.evaluation.audit import SubjectSignals, audit
from MachineUnlearningLib.outputs import record as record_module
from MachineUnlearningLib.outputs.record import (
    GUARANTEES,
    build_deletion_record,
    load_record,
    record_to_markdown,
    sha256_file,
    verify_record,
    write_record,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

PATIENT_NAME = "Jane Doe"


def write_nifti_with_a_name_in_its_header(path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4))
    image.header["descrip"] = PATIENT_NAME.encode()
    image.header["db_name"] = PATIENT_NAME.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


@pytest.fixture
def a_finished_run(tmp_path: Path) -> dict:
    """Files of a small finished run: a cohort, an input and an output checkpoint."""
    cohort = tmp_path / "cohort"
    label = cohort / "training" / "070" / "segm.nii.gz"
    write_nifti_with_a_name_in_its_header(label)
    flair = cohort / "training" / "070" / "pre" / "FLAIR.nii.gz"
    flair.parent.mkdir(parents=True)
    flair.write_bytes(b"not really an image" * 100)
    other = cohort / "held-out" / "H1" / "segm.nii.gz"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another subject")
    model_in, model_out = tmp_path / "baseline" / "model.pt", tmp_path / "run" / "unlearned.pt"
    model_in.parent.mkdir()
    model_out.parent.mkdir()
    model_in.write_bytes(b"weights before" * 1000)
    model_out.write_bytes(b"weights after" * 1000)
    return {
        "cohort_root": cohort,
        "cohort_files": [other, label, flair],
        "input_checkpoint": model_in,
        "output_checkpoint": model_out,
    }


def build(run: dict, **overrides) -> dict:
    arguments = {
        "job": {"command": "unlearn", "forget_ids": ["070"], "seed": 0},
        "requested_by": "DPO office, ticket 42",
        "subject_ids": ["070"],
        "strategy": "noisy-label",
        "strategy_params": {"noise_seed": 3},
        "metrics_before": {"forget": {"dice": 0.9, "n": 1}, "retain": {"dice": 0.88, "n": 4}},
        "metrics_after": {"forget": {"dice": 0.7, "n": 1}, "retain": {"dice": 0.86, "n": 4}},
        "audit": None,
        "guarantee": "approximate",
        "started_at": datetime(2025, 1, 2, 10, 0, tzinfo=timezone.utc),
        "finished_at": "2025-01-02T11:00:00Z",
        **run,
    }
    arguments.update(overrides)
    return build_deletion_record(**arguments)


def test_hashes_equal_hashlib_on_the_file(tmp_path: Path):
    data = bytes(range(256)) * 9000  # more than one 1 MiB chunk with a small chunk size
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_a_record_lists_who_what_when_and_the_hash_of_every_file(a_finished_run):
    record = build(a_finished_run)
    assert record["record_version"] == 1
    uuid.UUID(record["record_id"])
    assert record["created"].endswith("Z")
    assert record["request"] == {
        "requested_by": "DPO office, ticket 42",
        "subject_ids": ["070"],
        "notes": "",
    }
    assert record["when"] == {
        "started_at": "2025-01-02T10:00:00Z",
        "finished_at": "2025-01-02T11:00:00Z",
    }
    out = a_finished_run["output_checkpoint"]
    assert record["checkpoints"]["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["checkpoints"]["output"]["path"] == str(out.resolve())
    paths = [f["path"] for f in record["cohort"]["files"]]
    assert paths == [
        "held-out/H1/segm.nii.gz",
        "training/070/pre/FLAIR.nii.gz",
        "training/070/segm.nii.gz",
    ]
    flair = a_finished_run["cohort_root"] / paths[1]
    assert record["cohort"]["files"][1]["sha256"] == hashlib.sha256(flair.read_bytes()).hexdigest()
    assert record["strategy"] == {"name": "noisy-label", "params": {"noise_seed": 3}}
    assert record["metrics"]["after"]["forget"]["dice"] == 0.7


def test_the_guarantee_is_explained_and_the_limits_are_stated(a_finished_run):
    approximate = build(a_finished_run)
    exact = build(a_finished_run, guarantee="exact", strategy="retrain")
    assert approximate["guarantee"] == {
        "kind": "approximate",
        "meaning": GUARANTEES["approximate"],
    }
    assert "not provably removed" in approximate["guarantee"]["meaning"]
    assert exact["guarantee"]["kind"] == "exact"
    assert any("do not prove" in s for s in approximate["does_not_prove"])


def test_an_unknown_guarantee_is_rejected_with_a_suggestion(a_finished_run):
    with pytest.raises(InvalidInputError, match="Did you mean 'exact'"):
        build(a_finished_run, guarantee="exakt")


def test_software_versions_report_missing_packages_as_null(a_finished_run, monkeypatch):
    monkeypatch.setattr(record_module, "SOFTWARE_PACKAGES", ("numpy", "surely-not-a-package-x"))
    software = build(a_finished_run)["software"]
    assert software["packages"] == {"numpy": np.__version__, "surely-not-a-package-x": None}
    assert software["python"] and software["platform"]


def test_no_image_header_field_reaches_the_record(a_finished_run):
    label = a_finished_run["cohort_root"] / "training" / "070" / "segm.nii.gz"
    header = nib.load(str(label)).header
    assert PATIENT_NAME in str(header["descrip"]) and PATIENT_NAME in str(header["db_name"])
    record = build(a_finished_run)
    assert PATIENT_NAME not in json.dumps(record)
    assert PATIENT_NAME not in record_to_markdown(record)


def test_a_written_record_verifies(a_finished_run, tmp_path: Path):
    path = write_record(build(a_finished_run), tmp_path / "run" / "deletion-record.json")
    result = verify_record(path)
    assert result.ok and len(result.checks) == 5
    assert "OK: all 5 files match" in result.to_text()
    assert load_record(path)["request"]["subject_ids"] == ["070"]


def test_one_changed_byte_in_the_output_checkpoint_fails_verification(
    a_finished_run, tmp_path: Path
):
    path = write_record(build(a_finished_run), tmp_path / "deletion-record.json")
    model = a_finished_run["output_checkpoint"]
    data = bytearray(model.read_bytes())
    data[100] ^= 0x01
    model.write_bytes(bytes(data))
    result = verify_record(path)
    assert not result.ok
    assert [(c.kind, Path(c.name).name, c.status) for c in result.problems] == [
        ("output checkpoint", "unlearned.pt", "mismatch")
    ]
    assert "MISMATCH" in result.to_text() and "unlearned.pt" in result.to_text()


def test_a_deleted_cohort_file_is_reported_missing_by_name(a_finished_run, tmp_path: Path):
    path = write_record(build(a_finished_run), tmp_path / "deletion-record.json")
    (a_finished_run["cohort_root"] / "training" / "070" / "pre" / "FLAIR.nii.gz").unlink()
    result = verify_record(path)
    assert [(c.name, c.status) for c in result.problems] == [
        ("training/070/pre/FLAIR.nii.gz", "missing")
    ]
    assert "MISSING" in result.to_text() and "FAILED: 1 of 5" in result.to_text()


def test_a_moved_cohort_verifies_against_base_dir(a_finished_run, tmp_path: Path):
    path = write_record(build(a_finished_run), tmp_path / "deletion-record.json")
    moved = tmp_path / "archive" / "cohort"
    shutil.move(a_finished_run["cohort_root"], moved)
    assert not verify_record(path).ok
    assert verify_record(path, base_dir=moved).ok


def test_an_existing_record_is_never_overwritten(a_finished_run, tmp_path: Path):
    path = write_record(build(a_finished_run), tmp_path / "deletion-record.json")
    before = path.read_bytes()
    with pytest.raises(InvalidInputError, match="already exists"):
        write_record(build(a_finished_run), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["deletion-record.json"]


def test_non_finite_metrics_become_null_so_the_record_is_strict_json(
    a_finished_run, tmp_path: Path
):
    record = build(a_finished_run, metrics_after={"forget": {"dice": float("nan")}})
    path = write_record(record, tmp_path / "deletion-record.json")
    assert json.loads(path.read_text())["metrics"]["after"]["forget"]["dice"] is None


def test_a_cohort_file_outside_the_cohort_root_is_rejected(a_finished_run):
    stray = a_finished_run["input_checkpoint"]
    files = [*a_finished_run["cohort_files"], stray]
    with pytest.raises(InvalidInputError, match="model.pt is not under the cohort root"):
        build(a_finished_run, cohort_files=files)


def test_a_missing_checkpoint_is_named(a_finished_run):
    with pytest.raises(InvalidInputError, match="output_checkpoint"):
        build(a_finished_run, output_checkpoint=Path("/nonexistent/unlearned.pt"))


def test_verifying_something_that_is_not_a_record_is_an_input_error(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(InvalidInputError, match="record_version"):
        verify_record(path)


def test_the_page_shows_who_what_when_short_and_full_hashes_and_the_verdict(a_finished_run):
    signals = [
        SubjectSignals("H1", "held-out", loss=0.30),
        SubjectSignals("H2", "held-out", loss=0.34),
        SubjectSignals("H3", "held-out", loss=0.28),
        SubjectSignals("1", "retain", loss=0.10),
        SubjectSignals("4", "retain", loss=0.12),
        SubjectSignals("070", "forget", loss=0.31),
    ]
    report = audit(signals, n_resamples=20).to_dict()
    record = build(a_finished_run, audit=report, requested_by="Dr. A | DPO")
    page = record_to_markdown(record)
    digest = record["checkpoints"]["output"]["sha256"]
    assert f"`{digest[:12]}`" in page and f"`{digest}`" in page
    assert "Dr. A \\| DPO" in page  # the pipe cannot break the table
    assert "**approximate**" in page and GUARANTEES["approximate"] in page
    assert "indistinguishable (feature loss); 070: indistinguishable" in page
    assert "2025-01-02T10:00:00Z" in page and "070" in page
    assert "What this record does not prove" in page


def test_the_forgetting_summary_names_the_verdict_or_why_there_is_none():
    from MachineUnlearningLib.outputs.record import forgetting_summary

    assert "not run (no reference-audit.json" in forgetting_summary(None)
    missing = forgetting_summary({"method": "none", "reason": "the cache lacks 6 models"})
    assert missing == "Forgetting audit: not run: the cache lacks 6 models."
    text = forgetting_summary(
        {
            "subject": "070",
            "verdict": "forgotten",
            "unlearned": {"p_equivalence": 0.004, "margin_sds": 3.0, "gap_sds": 0.4},
            "original": {"verdict": "still remembered"},
        }
    )
    assert "070" in text and "FORGOTTEN" in text and "p = 0.004" in text
    assert "doing nothing: still remembered" in text
