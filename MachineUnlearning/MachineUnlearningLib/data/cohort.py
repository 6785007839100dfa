"""Subjects of an MRBrainS18-layout cohort: discovery and validation.

Layout (the MRBrainS18 training release; the top folder names are ours for held-out)::

    ROOT/training/<id>/segm.nii.gz
    ROOT/training/<id>/pre/{FLAIR,reg_T1,reg_IR}.nii.gz
    ROOT/held-out/<id>/...            (optional, same layout)

Subject ids are strings ("070" keeps its leading zero) and are never cast to int.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from MachineUnlearningLib.runtime.errors import InvalidInputError

MRBRAINS18_TRAINING_IDS: tuple[str, ...] = ("1", "4", "5", "7", "14", "070", "148")
MODALITY_FILES: dict[str, str] = {
    "FLAIR": "pre/FLAIR.nii.gz",
    "reg_T1": "pre/reg_T1.nii.gz",
    "reg_IR": "pre/reg_IR.nii.gz",
}
LABEL_FILE = "segm.nii.gz"
TRAINING_GROUP = "training"
HELD_OUT_GROUP = "held-out"
DEFAULT_MODALITIES: tuple[str, ...] = ("FLAIR", "reg_T1", "reg_IR")


@dataclass(frozen=True)
class Subject:
    """One subject of a cohort.

    Attributes:
        subject_id: the folder name, as the user gave it (a string, never int-cast).
        group: ``training`` or ``held-out`` (the folder it was found in).
        images: modality name -> NIfTI path.
        label: path of ``segm.nii.gz``, or None for an inference-only case.
    """

    subject_id: str
    group: str
    images: dict[str, Path] = field(default_factory=dict)
    label: Path | None = None


def discover_cohort(root: Path | str) -> list[Subject]:
    """Find every subject under ``root/training`` and ``root/held-out``.

    Only the folder structure is read here (no image is opened); :func:`validate_subject`
    checks the files. Raises InvalidInputError for a missing or empty cohort and for an id
    that appears in both groups.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(
            f"cohort: folder {root} does not exist.",
            hint="Point --cohort at the folder that holds training/ (make one with "
            "'machine-unlearning make-cohort --out DIR').",
        )
    subjects: list[Subject] = []
    for group in (TRAINING_GROUP, HELD_OUT_GROUP):
        group_dir = root / group
        if not group_dir.is_dir():
            continue
        for folder in sorted(p for p in group_dir.iterdir() if p.is_dir()):
            images = {m: folder / rel for m, rel in MODALITY_FILES.items()}
            label = folder / LABEL_FILE
            subjects.append(
                Subject(
                    subject_id=folder.name,
                    group=group,
                    images=images,
                    label=label if label.exists() else None,
                )
            )
    if not subjects:
        raise InvalidInputError(
            f"cohort: no subject folders under {root / TRAINING_GROUP} or {root / HELD_OUT_GROUP}.",
            hint="Expected the MRBrainS18 layout ROOT/training/<id>/pre/FLAIR.nii.gz ...",
        )
    seen: dict[str, str] = {}
    for subject in subjects:
        if subject.subject_id in seen:
            raise InvalidInputError(
                f"cohort: subject id {subject.subject_id!r} appears in both "
                f"{seen[subject.subject_id]}/ and {subject.group}/ under {root}.",
                hint="Subject ids must be unique across the cohort; rename one folder.",
            )
        seen[subject.subject_id] = subject.group
    return subjects


def select_subjects(subjects: list[Subject], ids: list[str], field_name: str) -> list[Subject]:
    """Return the subjects with the given ids, in the given order; unknown ids are an error."""
    by_id = {s.subject_id: s for s in subjects}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InvalidInputError(
            f"{field_name}: subject id(s) {missing} not found in the cohort.",
            hint=f"Known ids: {', '.join(sorted(by_id))}. Ids are folder names, e.g. '070'.",
        )
    return [by_id[i] for i in ids]


def check_files_exist(subject: Subject, modalities: tuple[str, ...], need_label: bool) -> None:
    """Raise InvalidInputError naming the first missing modality or label file."""
    for modality in modalities:
        path = subject.images.get(modality)
        if path is None or not path.exists():
            raise InvalidInputError(
                f"subject {subject.subject_id}: missing modality {modality} ({path}).",
                hint=f"Add the file, or choose other modalities (--modalities); "
                f"expected {MODALITY_FILES.get(modality, modality)} in the subject folder.",
            )
    if need_label and subject.label is None:
        raise InvalidInputError(
            f"subject {subject.subject_id}: missing label file "
            f"{LABEL_FILE} in its folder ({subject.group}/{subject.subject_id}).",
            hint="Training and evaluation need the ground-truth segm.nii.gz.",
        )
