"""Where the module's runs write (a local folder, never a synced one) and how a run's outputs go.

A run's outputs are personal data on a real cohort: predictions and report figures show the
forgotten subject's anatomy, metrics and audits are per subject, the unlearned model is derived
from the cohort. Hospitals often sync Documents (OneDrive "Known Folder Move" on Windows,
iCloud "Desktop & Documents" on macOS), which was the old default through Slicer's scene
folder, so the default root is the platform's local, per-user application-data folder.
Slicer's own ``slicer.app.cachePath`` is local too, but it is for data Slicer may clear.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from MachineUnlearningLib.runtime.errors import InvalidInputError

FOLDER_NAME = "MachineUnlearning"
RUNS = "runs"
KEPT_FILES: tuple[str, ...] = ("deletion-record.json",)
"""What "Delete this run's outputs" keeps: the record a data-protection officer files."""
JOB_FILE = "job.json"
_WHAT = {
    "predictions": "predictions/ (label maps of every subject)",
    "figures": "figures/ (report images)",
    "unlearned.pt": "unlearned.pt (the unlearned model)",
    "metrics.json": "metrics.json (per-subject Dice and MAE)",
    "audit.json": "audit.json (per-subject membership signals)",
    "reference-audit.json": "reference-audit.json (the audit against retrained models)",
    "job.json": "job.json (the run's settings)",
}


def default_output_root(
    system: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """The default folder under which each run gets its own subfolder.

    - Windows: ``%LOCALAPPDATA%\\MachineUnlearning\\runs`` (AppData\\Local is neither roamed
      nor moved to OneDrive);
    - macOS: ``~/Library/Application Support/MachineUnlearning/runs`` (not iCloud-synced);
    - Linux and others: ``$XDG_DATA_HOME/MachineUnlearning/runs``, default
      ``~/.local/share/MachineUnlearning/runs`` (XDG base directory specification).
    """
    system = system or platform.system()
    environ = os.environ if environ is None else environ
    home = home or Path.home()
    if system == "Windows":
        base = Path(environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif system == "Darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / FOLDER_NAME / RUNS


def new_run_folder(root: Path | str, label: str, now: float | None = None) -> Path:
    """``root/<YYYYmmdd-HHMMSS>-<label>``, with ``-2``, ``-3``... if that name is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    folder = Path(root) / f"{stamp}-{label}"
    number = 2
    while folder.exists():
        folder = Path(root) / f"{stamp}-{label}-{number}"
        number += 1
    return folder


@dataclass(frozen=True)
class DeletionPlan:
    """What "Delete this run's outputs" removes from ``folder`` and what it keeps."""

    folder: Path
    remove: tuple[Path, ...]
    keep: tuple[Path, ...]

    def confirmation_text(self) -> str:
        removed = [_WHAT.get(p.name, p.name + ("/" if p.is_dir() else "")) for p in self.remove]
        kept = ", ".join(p.name for p in self.keep) or "nothing"
        return (
            f"Delete the outputs of the run in {self.folder}?\n\n"
            f"Removed: {'; '.join(removed)}.\n\n"
            f"It keeps {kept} in that folder (the deletion record to file; it names the "
            "subjects by their ids and holds file hashes). The input model, the cohort and any "
            "copy saved with 'Save unlearned model' are not touched. The run's tables, chart "
            "and predictions are also removed from the scene."
        )


def plan_deletion(folder: Path | str) -> DeletionPlan:
    """The plan for a run folder the module made (it holds ``job.json``).

    The job's input checkpoint and cohort are never in the plan, even if they lie inside the
    folder. Raises InvalidInputError for a folder that is not a run folder.
    """
    folder = Path(folder)
    job_file = folder / JOB_FILE
    if not job_file.is_file():
        raise InvalidInputError(
            f"{folder} is not a run folder of this module (no {JOB_FILE}); nothing deleted.",
            hint="Delete it by hand if it holds outputs you no longer need.",
        )
    job = json.loads(job_file.read_text(encoding="utf-8"))
    inputs = {Path(p).resolve() for p in (job.get("checkpoint"), job.get("cohort")) if p}
    remove, keep = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name in KEPT_FILES:
            keep.append(entry)
        elif entry.resolve() not in inputs and not any(
            _inside(i, entry) for i in inputs if not entry.is_symlink()
        ):
            remove.append(entry)
    return DeletionPlan(folder=folder, remove=tuple(remove), keep=tuple(keep))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def delete_outputs(plan: DeletionPlan) -> None:
    """Remove what ``plan`` lists; links are removed, never followed."""
    for entry in plan.remove:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
