"""An MRBrainS18-layout cohort synthesised from real whole-head FreeSurfer label maps.

``machine-unlearning make-cohort --label-maps DIR --out X [--seed S] [--held-out K]``. Every
``*.nii`` / ``*.nii.gz`` file of ``DIR`` is one subject's anatomy (for example the 16 training
label maps of the public SynthSeg repository, README). Sorted by file name, the first seven
become the MRBrainS18 training ids ``1, 4, 5, 7, 14, 070, 148``; the next ``K`` (default: all
the rest) become ``held-out/H01 ...``. Per subject:

1. read and check the map (3-D, integer values, every value in data/freesurfer_labels.py's
   table), reorient it to RAS;
2. place the MRBrainS18 grid (240 x 240 x 48, 0.958 x 0.958 x 3.0 mm, data/resampling.py) on
   the brain's bounding-box centre with a small random pose (the head's position in the coil),
   and sample every voxel through its 3 mm slice profile: compartment fractions
   (partial volume), from which ``segm`` takes the majority label;
3. draw white-matter lesions (per-subject load from none to heavy) and, for some subjects, an
   infarct (label 9); the optic chiasm gives every subject a little label 10
   (data/pathology.py, data/freesurfer_labels.py);
4. render T1, T1-IR and FLAIR from per-tissue intensities with a per-subject scanner profile
   (data/tissue_contrast.py).

Everything random comes from ``numpy.random.default_rng([seed, stable_hash(file name)])``, so a
cohort is bit-identical for a seed and a subject does not change when other files are added.
The sidecar ``label-map-cohort.json`` names, per subject id, the file it came from (the file
name only: nothing read from a header is written) and the random choices drawn for it.

The cohort is written into a staging folder inside ``--out`` and moved into place only when
every subject succeeded, so bad input never leaves a half cohort behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from MachineUnlearningLib.data.cohort import (
    HELD_OUT_GROUP,
    LABEL_FILE,
    MODALITY_FILES,
    MRBRAINS18_TRAINING_IDS,
    TRAINING_GROUP,
    Subject,
)
from MachineUnlearningLib.data.freesurfer_labels import (
    FREESURFER_LABELS,
    TISSUES,
    compartment_lookup,
    compartments,
    unknown_labels,
)
from MachineUnlearningLib.data.pathology import add_infarct, add_lesions
from MachineUnlearningLib.data.resampling import (
    SLICE_WEIGHTS,
    grid_to_source_voxels,
    reorient_to_ras,
    rigid_pose,
    slice_profile_counts,
)
from MachineUnlearningLib.data.synthetic import (
    GRID_SHAPE,
    HELD_OUT_PREFIX,
    VOXEL_SIZE_MM,
    grid_affine,
    held_out_ids,
    stable_hash,
)
from MachineUnlearningLib.data.tissue_contrast import (
    ContrastProfile,
    draw_profile,
    render,
    texture_field,
)
from MachineUnlearningLib.data.volumes import write_nifti
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.files import write_json

SIDECAR_FILE = "label-map-cohort.json"
SIDECAR_VERSION = 1
LABEL_MAP_SUFFIXES = (".nii.gz", ".nii")
MODALITIES: tuple[str, ...] = tuple(MODALITY_FILES)
INFARCT_PROBABILITY = 0.3
"""Share of subjects with an infarct (label 9); MRBrainS18's 7 training subjects have some."""
MAX_ROTATION_DEG: tuple[float, float, float] = (4.0, 3.0, 4.0)
"""Head pose in the coil: pitch (about x), roll (y), yaw (z), uniform in +-these, degrees."""
MAX_TRANSLATION_MM: tuple[float, float, float] = (4.0, 4.0, 2.0)
BRAIN_LABELS_FOR_CENTRE = (1, 2, 3, 4, 6, 7)
"""MRBrainS18 labels whose bounding box is centred on the grid: cerebrum and cerebellum (the
brain stem runs on into the neck, which would push the slab down)."""
_NOTICE = "synthetic from a FreeSurfer label map (machine-unlearning make-cohort)"


@dataclass(frozen=True)
class LabelMapParams:
    """Every random choice behind one subject (synthesis from it and its map is deterministic).

    Attributes:
        file_name: the label map's file name (the random key, with the seed).
        seed: the cohort seed.
        rotation_deg: head pose, rotations about x, y, z (degrees).
        translation_mm: head position relative to the grid centre, (x, y, z) mm.
        lesion_load: white-matter lesion load, 0 (none) .. 1 (heavy).
        infarct: whether an infarct (label 9) is drawn.
        texture: within-tissue texture amplitude (relative SD).
        contrasts: one acquisition per modality, in ``MODALITIES`` order.
        field_seed: seed of the spatial streams (lesion and infarct placement, texture, bias,
            noise).
    """

    file_name: str
    seed: int
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    lesion_load: float
    infarct: bool
    texture: float
    contrasts: tuple[ContrastProfile, ...]
    field_seed: int


@dataclass(frozen=True)
class LabelMap:
    """A checked label map, reoriented to RAS.

    Attributes:
        path: the file.
        labels: (I, J, K) int32 FreeSurfer numbers, axes along +R, +A, +S.
        affine: (4, 4) voxel -> RAS mm of ``labels``.
    """

    path: Path
    labels: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class LabelMapSubject:
    """One synthesised subject in memory.

    Attributes:
        image: modality -> (X, Y, Z) float32 whole numbers (a.u.).
        label: (X, Y, Z) uint8 raw MRBrainS18 labels 0..10.
        affine: (4, 4) voxel -> RAS mm, shared by all arrays.
        grid_to_source: (4, 4) target voxel -> voxel of ``LabelMap.labels``.
        fractions: (K, X, Y, Z) float32 compartment fractions after pathology, or None.
        lesion_blobs: number of drawn lesion blobs.
        params: the record it was synthesised from.
    """

    image: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    grid_to_source: np.ndarray
    fractions: np.ndarray | None
    lesion_blobs: int
    params: LabelMapParams


# --------------------------------------------------------------------------- inputs


def list_label_maps(folder: Path | str) -> list[Path]:
    """The ``*.nii`` / ``*.nii.gz`` files of ``folder`` (hidden ones skipped), sorted by name.

    Raises InvalidInputError when the folder does not exist or holds no such file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(
            f"label maps: folder {folder} does not exist.",
            hint="Pass --label-maps DIR with the FreeSurfer-numbered label maps (.nii.gz).",
        )
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.name.endswith(LABEL_MAP_SUFFIXES) and not p.name.startswith(".")
        ),
        key=lambda p: p.name,
    )
    if not files:
        raise InvalidInputError(
            f"label maps: {folder} holds no .nii or .nii.gz file.",
            hint="Point --label-maps at the folder of label maps (see README, 'A cohort from "
            "real anatomies').",
        )
    return files


def check_label_map_header(path: Path | str) -> None:
    """Read only the header: InvalidInputError naming the file if unreadable or not 3-D."""
    _shape_3d(_open(Path(path)).shape, Path(path))


def read_label_map(path: Path | str) -> LabelMap:
    """Read, check and reorient one label map.

    Raises InvalidInputError naming the file when it cannot be read, is not 3-D, holds
    non-integer values, or holds values outside the FreeSurfer table.
    """
    path = Path(path)
    image = _open(path)
    _shape_3d(image.shape, path)
    try:
        data = np.asanyarray(image.dataobj).reshape(image.shape[:3])
    except Exception as exc:  # a truncated gzip stream fails only here
        raise InvalidInputError(
            f"label map {path}: cannot be read ({type(exc).__name__}).",
            hint="Check that the file is a complete NIfTI (.nii or .nii.gz).",
        ) from None
    if not np.issubdtype(data.dtype, np.integer):
        values = np.asarray(data, dtype=np.float32)
        rounded = np.rint(values)
        if not np.isfinite(values).all() or np.abs(values - rounded).max() > 1e-3:
            raise InvalidInputError(
                f"label map {path}: holds non-integer values.",
                hint="A label map holds integer FreeSurfer label numbers; was it resampled "
                "with linear interpolation? Use nearest neighbour.",
            )
        data = rounded
    labels = np.asarray(data).astype(np.int32)
    unknown = unknown_labels(labels)
    if unknown:
        raise InvalidInputError(
            f"label map {path}: label value(s) {unknown[:10]} are not in the FreeSurfer table "
            "this generator knows.",
            hint="Accepted: FreeSurfer's aseg numbers and the head labels 502-530 (see "
            "data/freesurfer_labels.py).",
        )
    ras, affine = reorient_to_ras(labels, np.asarray(image.affine, dtype=np.float64))
    return LabelMap(path=path, labels=np.ascontiguousarray(ras), affine=affine)


def _open(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for damaged files
        raise InvalidInputError(
            f"label map {path}: cannot be read ({type(exc).__name__}).",
            hint="Check that the file is a complete NIfTI (.nii or .nii.gz).",
        ) from None


def _shape_3d(shape: tuple[int, ...], path: Path) -> None:
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InvalidInputError(
            f"label map {path}: shape {tuple(shape)} is not a 3-D volume.",
            hint="Give one 3-D label map per subject.",
        )


# --------------------------------------------------------------------------- random choices


def draw_params(file_name: str, seed: int = 0) -> LabelMapParams:
    """Every random choice of one subject, from ``(seed, stable_hash(file_name))``."""
    rng = np.random.default_rng([seed, stable_hash(file_name)])
    rotation = tuple(float(v) for v in rng.uniform(-1.0, 1.0, 3) * MAX_ROTATION_DEG)
    translation = tuple(float(v) for v in rng.uniform(-1.0, 1.0, 3) * MAX_TRANSLATION_MM)
    return LabelMapParams(
        file_name=file_name,
        seed=seed,
        rotation_deg=rotation,  # type: ignore[arg-type]
        translation_mm=translation,  # type: ignore[arg-type]
        lesion_load=float(rng.uniform(0.0, 1.0)),
        infarct=bool(rng.uniform() < INFARCT_PROBABILITY),
        texture=float(rng.uniform(0.02, 0.045)),
        contrasts=tuple(draw_profile(rng, m) for m in MODALITIES),
        field_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------- synthesis


def synthesize_from_label_map(
    label_map: LabelMap,
    params: LabelMapParams,
    *,
    shape: tuple[int, int, int] = GRID_SHAPE,
    voxel_size_mm: tuple[float, float, float] = VOXEL_SIZE_MM,
    keep_fractions: bool = False,
) -> LabelMapSubject:
    """Synthesise one subject from its label map and random choices.

    Args:
        label_map: from :func:`read_label_map`.
        params: from :func:`draw_params`.
        shape: target grid (X, Y, Z), voxels.
        voxel_size_mm: target voxel size (x, y, z), mm (z is the slice thickness).
        keep_fractions: keep the (K, X, Y, Z) fractions in the result (tests).
    """
    pairs = compartments()
    source = compartment_lookup()[label_map.labels]
    affine = grid_affine(shape, voxel_size_mm)
    centre = _brain_centre_mm(label_map)
    pose = rigid_pose(params.rotation_deg, params.translation_mm, centre)
    to_source = grid_to_source_voxels(label_map.affine, pose, affine)
    counts = slice_profile_counts(source, to_source, shape, len(pairs))
    fractions = counts.astype(np.float32) / np.float32(sum(SLICE_WEIGHTS))
    del counts
    rng = np.random.default_rng(params.field_seed)
    blobs = add_lesions(fractions, pairs, params.lesion_load, rng, voxel_size_mm)
    if params.infarct:
        add_infarct(fractions, pairs, rng, voxel_size_mm)
    label = majority_labels(fractions, pairs)
    tissue_of = np.array([TISSUES.index(t) for _, t in pairs])
    texture = params.texture * texture_field(rng, shape, voxel_size_mm)
    image = {
        profile.modality: render(fractions, tissue_of, profile, texture, rng)
        for profile in params.contrasts
    }
    return LabelMapSubject(
        image=image,
        label=label,
        affine=affine,
        grid_to_source=to_source,
        fractions=fractions if keep_fractions else None,
        lesion_blobs=blobs,
        params=params,
    )


def majority_labels(fractions: np.ndarray, pairs: tuple[tuple[int, str], ...]) -> np.ndarray:
    """(X, Y, Z) uint8 MRBrainS18 label with the largest summed fraction (ties: lower label)."""
    labels = sorted({label for label, _ in pairs})
    best = np.zeros(fractions.shape[1:], dtype=np.float32)
    out = np.zeros(fractions.shape[1:], dtype=np.uint8)
    for label in labels:
        total = sum(fractions[k] for k, (lab, _) in enumerate(pairs) if lab == label)
        wins = total > best + 1e-6
        best[wins] = total[wins]
        out[wins] = label
    return out


def _brain_centre_mm(label_map: LabelMap) -> np.ndarray:
    """RAS mm centre of the bounding box of the cerebrum and cerebellum (by MRBrainS18 label)."""
    brain_numbers = [
        n for n, e in FREESURFER_LABELS.items() if e.mrbrains18 in BRAIN_LABELS_FOR_CENTRE
    ]
    brain = np.isin(label_map.labels, brain_numbers)
    if not brain.any():
        raise InvalidInputError(
            f"label map {label_map.path}: holds no cerebrum or cerebellum label.",
            hint="Give whole-head or brain label maps with FreeSurfer numbers (2, 3, 41, 42 ...).",
        )
    lo, hi = [], []
    for axis in range(3):
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(present[0])
        hi.append(present[-1])
    middle = (np.asarray(lo) + np.asarray(hi)) / 2.0
    return (label_map.affine @ [*middle, 1.0])[:3]


# --------------------------------------------------------------------------- cohort


def make_label_map_cohort(
    label_maps: Path | str,
    out_dir: Path | str,
    seed: int = 0,
    held_out: int | None = None,
    *,
    shape: tuple[int, int, int] = GRID_SHAPE,
    voxel_size_mm: tuple[float, float, float] = VOXEL_SIZE_MM,
) -> list[Subject]:
    """Write the cohort and its sidecar; return its subjects (training first).

    Args:
        label_maps: folder of FreeSurfer-numbered label maps.
        out_dir: cohort folder (created; must not hold subject folders yet).
        seed: cohort seed (non-negative).
        held_out: held-out subjects after the seven training ones; None = every other map.
        shape: target grid (X, Y, Z); the MRBrainS18 grid unless a test asks for a coarser one.
        voxel_size_mm: target voxel size (x, y, z), mm.

    Raises InvalidInputError (exit code 2), naming the folder or file, for an empty folder,
    too few maps, a bad map, a bad seed or an existing cohort.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed: {seed!r} is not a non-negative integer.", hint="--seed 0")
    files = list_label_maps(label_maps)
    needed = len(MRBRAINS18_TRAINING_IDS)
    if held_out is None:
        held_out = max(len(files) - needed, 0)
    if held_out < 0 or held_out > 99:
        raise InvalidInputError(
            f"held_out: {held_out} is out of range.", hint="Use 0 to 99 held-out subjects."
        )
    if len(files) < needed + held_out:
        raise InvalidInputError(
            f"label maps: {label_maps} holds {len(files)} label map(s); "
            f"{needed} training + {held_out} held-out need {needed + held_out}.",
            hint="Add label maps or ask for fewer held-out subjects (--held-out K).",
        )
    plan = [(TRAINING_GROUP, sid) for sid in MRBRAINS18_TRAINING_IDS]
    plan += [(HELD_OUT_GROUP, sid) for sid in held_out_ids(held_out)]
    for path in files[: len(plan)]:
        check_label_map_header(path)  # cheap; the values are checked as each map is read
    out_dir = Path(out_dir)
    _refuse_existing(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".make-cohort-", dir=out_dir))
    records = []
    try:
        for (group, subject_id), path in zip(plan, files, strict=False):
            params = draw_params(path.name, seed)
            subject = synthesize_from_label_map(
                read_label_map(path), params, shape=shape, voxel_size_mm=voxel_size_mm
            )
            _write_subject(subject, staging / group / subject_id)
            records.append(_record(subject_id, group, subject, voxel_size_mm))
        write_json(
            staging / SIDECAR_FILE,
            {
                "generator": "machine-unlearning make-cohort --label-maps",
                "version": SIDECAR_VERSION,
                "seed": int(seed),
                "grid": {"shape": list(shape), "voxel_size_mm": list(voxel_size_mm)},
                "subjects": records,
            },
        )
        for name in (TRAINING_GROUP, HELD_OUT_GROUP, SIDECAR_FILE):
            if (staging / name).exists():
                (staging / name).rename(out_dir / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    subjects = []
    for (group, subject_id), _ in zip(plan, files, strict=False):
        folder = out_dir / group / subject_id
        subjects.append(
            Subject(
                subject_id=subject_id,
                group=group,
                images={name: folder / rel for name, rel in MODALITY_FILES.items()},
                label=folder / LABEL_FILE,
            )
        )
    return subjects


def _refuse_existing(out_dir: Path) -> None:
    existing = [
        f"{group}/{p.name}"
        for group in (TRAINING_GROUP, HELD_OUT_GROUP)
        if (out_dir / group).is_dir()
        for p in sorted((out_dir / group).iterdir())
    ]
    if (out_dir / SIDECAR_FILE).exists():
        existing.append(SIDECAR_FILE)
    if existing:
        raise InvalidInputError(
            f"cohort: {out_dir} already holds a cohort ({existing[0]} ...).",
            hint="Choose a new --out folder; an existing cohort is never overwritten.",
        )


def _write_subject(subject: LabelMapSubject, folder: Path) -> None:
    write_nifti(folder / LABEL_FILE, subject.label, subject.affine, np.uint8, _NOTICE)
    for name, array in subject.image.items():
        write_nifti(folder / MODALITY_FILES[name], array, subject.affine, np.int16, _NOTICE)


def _record(
    subject_id: str, group: str, subject: LabelMapSubject, voxel_size_mm: tuple[float, ...]
) -> dict:
    """The sidecar entry: the id, the source file's name and the drawn choices (no header)."""
    params = asdict(subject.params)
    params.pop("seed")
    voxel_ml = float(np.prod(voxel_size_mm)) / 1000.0
    counts = np.bincount(subject.label.ravel(), minlength=11)
    volumes_ml = {str(label): round(float(counts[label]) * voxel_ml, 2) for label in range(1, 11)}
    return {
        "id": subject_id,
        "group": group,
        "label_map": params.pop("file_name"),
        "lesion_blobs": subject.lesion_blobs,
        "label_volumes_ml": volumes_ml,
        "drawn": params,
    }


__all__ = [
    "HELD_OUT_PREFIX",
    "SIDECAR_FILE",
    "LabelMap",
    "LabelMapParams",
    "LabelMapSubject",
    "check_label_map_header",
    "draw_params",
    "list_label_maps",
    "make_label_map_cohort",
    "majority_labels",
    "read_label_map",
    "synthesize_from_label_map",
]
