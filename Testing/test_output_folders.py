"""Where the module's runs go by default (never a synced folder) and what deleting one removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from MachineUnlearningLib.app import output_folders
from MachineUnlearningLib.runtime.errors import InvalidInputError


@pytest.mark.parametrize(
    ("system", "environ", "expected"),
    [
        ("Windows", {"LOCALAPPDATA": r"C:\Users\dr\AppData\Local"},
         r"C:\Users\dr\AppData\Local/MachineUnlearning/runs"),
        ("Darwin", {}, "/home/dr/Library/Application Support/MachineUnlearning/runs"),
        ("Linux", {"XDG_DATA_HOME": "/data/dr"}, "/data/dr/MachineUnlearning/runs"),
        ("Linux", {}, "/home/dr/.local/share/MachineUnlearning/runs"),
    ],
    ids=["windows", "macos", "linux-xdg", "linux-default"],
)  # fmt: skip
def test_the_default_root_is_local_application_data(system, environ, expected):
    root = output_folders.default_output_root(system, environ, Path("/home/dr"))
    assert root.as_posix() == Path(expected).as_posix()
    assert "Documents" not in root.parts and "OneDrive" not in str(root)


def test_windows_without_localappdata_still_avoids_documents():
    root = output_folders.default_output_root("Windows", {}, Path("/home/dr"))
    assert root.parts[-4:] == ("AppData", "Local", "MachineUnlearning", "runs")


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path):
    first = output_folders.new_run_folder(tmp_path, "noisy-label", now=0.0)
    first.mkdir()
    second = output_folders.new_run_folder(tmp_path, "noisy-label", now=0.0)
    assert second != first and second.name == first.name + "-2"


def a_run_folder(root: Path, **job) -> Path:
    run = root / "run"
    (run / "predictions" / "unlearned").mkdir(parents=True)
    (run / "predictions" / "unlearned" / "070.nii.gz").write_bytes(b"label map")
    for name in ("report.html", "metrics.json", "deletion-record.json", "unlearned.pt"):
        (run / name).write_text("{}")
    (run / "job.json").write_text(json.dumps({"command": "unlearn", **job}))
    return run


def test_deleting_keeps_only_the_deletion_record(tmp_path):
    run = a_run_folder(tmp_path)
    plan = output_folders.plan_deletion(run)
    assert [p.name for p in plan.keep] == ["deletion-record.json"]
    text = plan.confirmation_text()
    assert str(run) in text and "predictions/" in text and "keeps deletion-record.json" in text
    output_folders.delete_outputs(plan)
    assert sorted(p.name for p in run.iterdir()) == ["deletion-record.json"]


def test_a_folder_that_is_no_run_folder_is_refused(tmp_path):
    (tmp_path / "precious.nii.gz").write_bytes(b"scan")
    with pytest.raises(InvalidInputError, match="not a run folder"):
        output_folders.plan_deletion(tmp_path)
    assert (tmp_path / "precious.nii.gz").exists()


def test_inputs_inside_the_run_folder_and_link_targets_are_never_deleted(tmp_path):
    outside = tmp_path / "cohort-elsewhere"
    outside.mkdir()
    (outside / "scan.nii.gz").write_bytes(b"scan")
    run = a_run_folder(tmp_path, checkpoint=str(tmp_path / "run" / "input.pt"))
    (run / "input.pt").write_bytes(b"the input model")
    (run / "cohort-link").symlink_to(outside, target_is_directory=True)
    output_folders.delete_outputs(output_folders.plan_deletion(run))
    assert (run / "input.pt").exists()
    assert not (run / "cohort-link").exists() and (outside / "scan.nii.gz").exists()
