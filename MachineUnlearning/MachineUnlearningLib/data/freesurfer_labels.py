"""FreeSurfer label numbers -> MRBrainS18 labels and tissue classes (the label-map cohort's table).

A whole-head label map numbered with FreeSurfer's look-up table (``FreeSurferColorLUT.txt``; the
names below are that table's) becomes an MRBrainS18 ``segm.nii.gz`` and three synthetic
contrasts. Each accepted number has two targets:

- ``mrbrains18``: the raw MRBrainS18 label 0..10 written to ``segm.nii.gz`` (data/labels.py);
- ``tissue``: the intensity class of the contrast model (data/tissue_contrast.py), finer than
  the label where the images of real scans differ (thalamus is brighter than putamen on T1,
  skull is dark, scalp fat bright, though all head tissue is label 0).

Decisions the issue left open (each a choice; the reason follows):

- hippocampus (17/53) and amygdala (18/54) -> 1 cortical grey matter: they are grey matter of
  the medial temporal lobe, continuous with the cortex; MRBrainS18's eight classes have no
  limbic class and its basal-ganglia class holds the central nuclei only.
- accumbens (26/58) and the caudate/putamen mix (136/137) -> 2 basal ganglia: striatum.
- "subcortical grey matter" (163/164) and non-WM hypointensities (80-82) -> 2: they lie
  between the ventricles and the striatum in these maps.
- ventral DC (28/60) -> 3 white matter: the region is mostly the cerebral peduncles and
  optic tracts, white matter on every contrast; brain stem (8) stays exactly FreeSurfer's 16.
- vessels (30/62) -> 2 basal ganglia: FreeSurfer marks with it small vessel / perivascular
  spaces under and inside the lenticular nucleus; at 3 mm slices they belong to that nucleus.
  Their intensity class is ``vessel`` (dark on T1, like fluid).
- optic chiasm (85) -> 10 "other" (ignored by training and scoring): it is neither cerebrum nor
  brain stem, and MRBrainS18's "other" label exists for exactly such structures. This gives
  every subject a little of label 10; it has white-matter intensity.
- WM hypointensities (77-79) and FreeSurfer's lesion labels (25/57; in these maps they sit
  between the lateral ventricles and the white matter, i.e. periventricular lesions) -> 4.
- choroid plexus (31/63) and every ventricle (4/5/14/15/43/44/72) -> 6 ventricles.
- 502-530 -> 0 background. In FreeSurfer's own table 500-558 are hippocampal subfields; the
  whole-head maps this generator is made for (SynthSeg's training label maps, README)
  reuse 502-530 for non-brain head tissue without naming them. Their tissue classes below are
  our reading of where each one lies (measured on these maps: what it touches, how far from
  the brain and from the air): 511 and 509 touch the air (skin and scalp), 515 lies against
  the CSF (skull), 516 inside and around it (fatty marrow and subcutaneous fat), 506 in the
  orbits (eyes), 512 below the brain stem (spinal cord), 502 and 514 next to the CSF at the
  skull base and around the brain (dura and venous sinuses), 507 everywhere else (muscle and
  soft tissue). Numbers in 502-530 not seen in those maps get ``muscle``. A map that uses
  502-530 in FreeSurfer's sense (hippocampal subfields) would be misread as head tissue.

Any other number is refused (InvalidInputError) by :func:`unknown_labels`'s caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Intensity classes of the contrast model. ``air`` has no signal (noise only).
TISSUES: tuple[str, ...] = (
    "air",
    "csf",
    "cortex",
    "medial_temporal",
    "thalamus",
    "striatum",
    "pallidum",
    "deep_grey",
    "vessel",
    "wm",
    "ventral_dc",
    "lesion",
    "infarct",
    "cerebellar_cortex",
    "cerebellar_wm",
    "brain_stem",
    "skin",
    "muscle",
    "bone",
    "fat",
    "eye",
    "dura",
    "cord",
)
HEAD_LABEL_RANGE: tuple[int, int] = (502, 530)
"""Inclusive range of the non-brain head labels of whole-head maps (label 0 in ``segm``)."""


@dataclass(frozen=True)
class FreeSurferLabel:
    """One accepted FreeSurfer label number.

    Attributes:
        number: the value in the label map.
        name: FreeSurfer's name for it (head labels: our reading, see the module docstring).
        mrbrains18: raw MRBrainS18 label 0..10 it becomes in ``segm.nii.gz``.
        tissue: its intensity class, one of ``TISSUES``.
    """

    number: int
    name: str
    mrbrains18: int
    tissue: str


def _pair(number: int, name: str, mrbrains18: int, tissue: str) -> list[FreeSurferLabel]:
    """Left label ``number`` and its right twin ``number + offset`` (FreeSurfer's numbering)."""
    right = {2: 41, 3: 42, 4: 43, 5: 44, 7: 46, 8: 47, 10: 49, 11: 50, 12: 51, 13: 52, 17: 53,
             18: 54, 25: 57, 26: 58, 28: 60, 30: 62, 31: 63, 78: 79, 81: 82, 136: 137,
             163: 164}[number]  # fmt: skip
    return [
        FreeSurferLabel(number, f"Left-{name}", mrbrains18, tissue),
        FreeSurferLabel(right, f"Right-{name}", mrbrains18, tissue),
    ]


_BRAIN: list[FreeSurferLabel] = [
    FreeSurferLabel(0, "Unknown", 0, "air"),
    *_pair(2, "Cerebral-White-Matter", 3, "wm"),
    *_pair(3, "Cerebral-Cortex", 1, "cortex"),
    *_pair(4, "Lateral-Ventricle", 6, "csf"),
    *_pair(5, "Inf-Lat-Vent", 6, "csf"),
    *_pair(7, "Cerebellum-White-Matter", 7, "cerebellar_wm"),
    *_pair(8, "Cerebellum-Cortex", 7, "cerebellar_cortex"),
    *_pair(10, "Thalamus", 2, "thalamus"),
    *_pair(11, "Caudate", 2, "striatum"),
    *_pair(12, "Putamen", 2, "striatum"),
    *_pair(13, "Pallidum", 2, "pallidum"),
    FreeSurferLabel(14, "3rd-Ventricle", 6, "csf"),
    FreeSurferLabel(15, "4th-Ventricle", 6, "csf"),
    FreeSurferLabel(16, "Brain-Stem", 8, "brain_stem"),
    *_pair(17, "Hippocampus", 1, "medial_temporal"),
    *_pair(18, "Amygdala", 1, "medial_temporal"),
    FreeSurferLabel(24, "CSF", 5, "csf"),
    *_pair(25, "Lesion", 4, "lesion"),
    *_pair(26, "Accumbens-area", 2, "striatum"),
    *_pair(28, "VentralDC", 3, "ventral_dc"),
    *_pair(30, "vessel", 2, "vessel"),
    *_pair(31, "choroid-plexus", 6, "csf"),
    FreeSurferLabel(72, "5th-Ventricle", 6, "csf"),
    FreeSurferLabel(77, "WM-hypointensities", 4, "lesion"),
    *_pair(78, "WM-hypointensities", 4, "lesion"),
    FreeSurferLabel(80, "non-WM-hypointensities", 2, "deep_grey"),
    *_pair(81, "non-WM-hypointensities", 2, "deep_grey"),
    FreeSurferLabel(85, "Optic-Chiasm", 10, "wm"),
    *_pair(136, "Caudate/Putamen", 2, "striatum"),
    *_pair(163, "Subcortical-Gray-Matter", 2, "deep_grey"),
]

_HEAD_TISSUE: dict[int, tuple[str, str]] = {
    502: ("head: dura / venous sinus (skull base)", "dura"),
    506: ("head: eye", "eye"),
    507: ("head: muscle and soft tissue", "muscle"),
    508: ("head: orbital soft tissue", "muscle"),
    509: ("head: skin (face)", "skin"),
    511: ("head: skin and scalp", "skin"),
    512: ("head: spinal cord", "cord"),
    514: ("head: dura / venous sinus", "dura"),
    515: ("head: skull", "bone"),
    516: ("head: fat and marrow", "fat"),
    530: ("head: soft tissue (optic region)", "muscle"),
}


def _head(number: int) -> FreeSurferLabel:
    name, tissue = _HEAD_TISSUE.get(number, ("head: other soft tissue", "muscle"))
    return FreeSurferLabel(number, name, 0, tissue)


_HEAD = [_head(n) for n in range(HEAD_LABEL_RANGE[0], HEAD_LABEL_RANGE[1] + 1)]

FREESURFER_LABELS: dict[int, FreeSurferLabel] = {entry.number: entry for entry in _BRAIN + _HEAD}
"""Every accepted label number -> its entry."""


def unknown_labels(values: np.ndarray) -> list[int]:
    """The sorted distinct values of the integer array ``values`` that are not in the table."""
    values = np.asarray(values)
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 65535:  # a histogram is one pass; np.unique sorts 16 M voxels
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=1))
    else:
        present = np.unique(values)
    return sorted(int(v) for v in present if int(v) not in FREESURFER_LABELS)


def mapping_markdown() -> str:
    """docs/label-map-cohort.md: the decisions (this module's docstring) and the whole table."""
    decisions = __doc__.split("Decisions the issue left open", 1)[1].split("\n", 1)[1]
    decisions = decisions.split("Any other number is refused")[0].strip()
    lines = [
        "# FreeSurfer labels -> MRBrainS18 labels (the label-map cohort)",
        "",
        "Generated from `MachineUnlearningLib/data/freesurfer_labels.py` by "
        "`scripts/generate_label_map_docs.py`; do not edit by hand.",
        "",
        "`machine-unlearning make-cohort --label-maps DIR` turns each FreeSurfer number of a "
        "label map into an MRBrainS18 label (`segm.nii.gz`) and an intensity class (the "
        "contrast model). A map holding any number not listed here is refused (exit code 2).",
        "",
        "## Decisions",
        "",
        decisions,
        "",
        "## The table",
        "",
        "| FreeSurfer | name | MRBrainS18 label | tissue class |",
        "|---|---|---|---|",
    ]
    for number in sorted(FREESURFER_LABELS):
        entry = FREESURFER_LABELS[number]
        lines.append(f"| {number} | {entry.name} | {entry.mrbrains18} | {entry.tissue} |")
    return "\n".join(lines) + "\n"


INFARCT_COMPARTMENT: tuple[int, str] = (9, "infarct")
"""Drawn by the generator (data/pathology.py); no FreeSurfer number maps to it."""


def compartments() -> tuple[tuple[int, str], ...]:
    """Every (MRBrainS18 label, tissue) pair a voxel fraction can belong to, sorted.

    Index 0 is ``(0, "air")``: outside the source volume is air.
    """
    pairs = {(e.mrbrains18, e.tissue) for e in FREESURFER_LABELS.values()} | {INFARCT_COMPARTMENT}
    ordered = tuple(sorted(pairs))
    assert ordered[0] == (0, "air")
    return ordered


def compartment_lookup() -> np.ndarray:
    """uint8 array: FreeSurfer number -> index into :func:`compartments` (255: unknown)."""
    index = {pair: i for i, pair in enumerate(compartments())}
    table = np.full(max(FREESURFER_LABELS) + 1, 255, dtype=np.uint8)
    for number, entry in FREESURFER_LABELS.items():
        table[number] = index[(entry.mrbrains18, entry.tissue)]
    return table
