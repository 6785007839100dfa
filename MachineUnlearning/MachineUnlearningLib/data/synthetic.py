"""An MRBrainS18-like demo cohort synthesised from the MNI ICBM152 2009 template.

Data licence. The anatomy comes from the MNI ICBM152 nonlinear symmetric 2009a template
(T1 average, grey- and white-matter probability maps) in the copies that ship inside the
installed ``nilearn`` package (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_
09a_converted.nii.gz``). nilearn's own description of the template
(``nilearn/datasets/description/icbm152_2009.rst``) lists its licence as "unknown"; the
``COPYING`` file of the ICBM152 2009 template archives from the McConnell Brain Imaging Centre
reads: "Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University. Permission to use, copy, modify, and distribute this
software and its documentation for any purpose and without fee is hereby granted, provided that
the above copyright notice appear in all copies. The authors and McGill University make no
representations about the suitability of this software for any purpose. It is provided "as is"
without express or implied warranty. [...]" Cohorts made here are derived works of the template:
keep that notice with any copy of them. No file is downloaded; nothing of a real patient is used.

What is made. Each subject is an affine + smooth non-linear warp of the template into a
240 x 240 x 48 grid of 0.958 x 0.958 x 3.0 mm (nibabel (x, y, z) order, RAS affine centred on the
grid), with MRBrainS18 labels 0..10 and three contrasts (``reg_T1``, ``reg_IR``, ``FLAIR``):

- GM / WM fractions come from the template probability maps, averaged over 3 mm along z (the
  slice profile, i.e. partial volume); CSF fills a shell of a few mm around the tissue and the
  space between tissue and that shell; ventricles are the template's central low-T1 region,
  dilated per subject; basal ganglia, cerebellum and brain stem are simple geometric regions in
  MNI coordinates (plausible, not anatomically exact); lesions (4), an infarct (9) and an
  "other" blob (10) are soft ellipsoids; skull and scalp are shells outside the CSF.
- Subjects differ like patients: head size, pose, a smooth warp at three scales (a few mm over
  the whole head, about 1 mm over 2-3 cm, a fraction of a mm over 1-2 cm: the shape of
  gyri and sulci changes, not only the head's), atrophy (thinner cortex, wider CSF, larger
  ventricles) that varies from region to region and between the hemispheres, asymmetric
  ventricles, lesion load and placement, and a scanner profile per modality (gain, contrast
  exponent, per-tissue jitter, bias field, noise level).
- Everything random is drawn once, from ``numpy.random.default_rng([seed, stable_hash(id)])``,
  into a :class:`SubjectParams` record; synthesis from a record is deterministic.

Why this file is longer than ~400 lines: it holds one mechanism (the generator) whose parts, the
template cache, the parameter record, the voxel model and the writer, are only used together.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
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
from MachineUnlearningLib.data.tissue_contrast import smooth_field, texture_field
from MachineUnlearningLib.data.volumes import write_nifti
from MachineUnlearningLib.runtime.errors import InvalidInputError

GRID_SHAPE: tuple[int, int, int] = (240, 240, 48)
"""MRBrainS18 grid, nibabel (x, y, z) order, voxels."""
VOXEL_SIZE_MM: tuple[float, float, float] = (0.958, 0.958, 3.0)
"""Voxel size along (x, y, z), mm."""
GRID_CENTRE_MNI: tuple[float, float, float] = (0.0, -18.0, 10.0)
"""MNI point (mm) that lands on the grid centre before the subject's pose is applied."""
TEMPLATE_FILES: dict[str, str] = {
    key: f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz" for key in ("t1", "gm", "wm")
}
HELD_OUT_PREFIX = "H"
WARP_SCALES: tuple[tuple[int, int, int], ...] = ((5, 5, 4), (10, 10, 6), (18, 18, 10))
"""Control points (x, y, z) of the three warp scales: on the 240 x 240 x 48 grid about 5-6 cm,
2-3 cm and 1.3-1.6 cm between control points (head shape; lobes and gyri; sulci)."""
REGIONAL_ATROPHY_CONTROL: tuple[int, int, int] = (3, 3, 2)
"""Control points of the regional atrophy field (about 8 cm between them: lobe-sized)."""
MIDLINE_SOFTNESS_MM = 5.0
"""Width of the left/right transition of the asymmetric terms at the midline, mm."""
# Training subjects that carry the ignored labels, so that every cohort exercises that path;
# "070", the default forget subject, stays ordinary. Held-out subjects draw them at random.
INFARCT_SUBJECTS: frozenset[str] = frozenset({"1", "148"})
OTHER_SUBJECTS: frozenset[str] = frozenset({"1", "7"})
# NIfTI descrip (80 bytes at most): the template's copyright line, carried into every file.
_NOTICE = "synthetic; MNI ICBM152 2009 (C) 1993-2004 L. Collins, MNI, McGill University"

# Template region codes (geometric rules, see _region_map).
_CEREBRUM, _DEEP_GREY, _CEREBELLUM, _BRAIN_STEM = 0, 1, 2, 3

# Voxel classes of the intensity model, the raw label each one gets, and its relative mean
# intensity per contrast (white matter of T1 = 1). Cerebellum and brain stem are mixtures of
# the gm / wm classes and are relabelled by region afterwards.
_CLASSES = ("csf", "gm", "deep_gm", "wm", "ventricle", "lesion", "infarct", "other", "skull",
            "scalp")  # fmt: skip
_CLASS_LABEL = {"csf": 5, "gm": 1, "deep_gm": 2, "wm": 3, "ventricle": 6, "lesion": 4,
                "infarct": 9, "other": 10}  # fmt: skip
_MEANS: dict[str, dict[str, float]] = {
    # 3D T1 gradient echo: WM bright, GM mid, CSF dark, fat (scalp) bright, bone dark.
    "reg_T1": {"csf": 0.25, "gm": 0.60, "deep_gm": 0.72, "wm": 1.00, "ventricle": 0.24,
               "lesion": 0.70, "infarct": 0.33, "other": 0.28, "skull": 0.10, "scalp": 0.90},
    # T1 inversion recovery (TI 400 ms): strong GM/WM contrast, CSF nulled.
    "reg_IR": {"csf": 0.04, "gm": 0.42, "deep_gm": 0.58, "wm": 1.00, "ventricle": 0.03,
               "lesion": 0.55, "infarct": 0.10, "other": 0.06, "skull": 0.05, "scalp": 0.75},
    # T2-FLAIR: CSF suppressed, GM above WM, lesions bright.
    "FLAIR": {"csf": 0.10, "gm": 0.80, "deep_gm": 0.72, "wm": 0.62, "ventricle": 0.08,
              "lesion": 1.45, "infarct": 0.40, "other": 0.18, "skull": 0.06, "scalp": 0.65},
}  # fmt: skip
MODALITIES: tuple[str, ...] = tuple(MODALITY_FILES)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Blob:
    """A soft ellipsoid in MNI space.

    Attributes:
        centre_mni: centre (x, y, z), MNI mm.
        radii_mm: semi-axes along MNI (x, y, z), mm.
    """

    centre_mni: tuple[float, float, float]
    radii_mm: tuple[float, float, float]


@dataclass(frozen=True)
class ScannerProfile:
    """How one contrast of one subject was acquired.

    Attributes:
        gain: intensity scale; the brightest tissue sits near ``1000 * gain`` (a.u.).
        contrast: exponent applied to the relative class means (1 = nominal contrast).
        class_jitter: per-class multiplicative jitter of the means, in ``_CLASSES`` order.
        bias_strength: standard deviation of the log bias field (0.1 = about +-10 %).
        noise: Rician noise sigma as a fraction of the brightest tissue mean.
    """

    gain: float
    contrast: float
    class_jitter: tuple[float, ...]
    bias_strength: float
    noise: float


@dataclass(frozen=True)
class SubjectParams:
    """Every random choice behind one synthetic subject (synthesis from it is deterministic).

    Attributes:
        subject_id: folder name (string, never int-cast).
        seed: the cohort seed it was drawn with.
        scale: global head size factor (1 = template size).
        rotation_deg: rotation about the (x, y, z) axes, degrees.
        translation_mm: head translation in the grid, (x, y, z) mm.
        warp_mm: standard deviation of the smooth non-linear displacement, mm.
        tissue_loss: atrophy at tissue edges, 0..0.35: the GM+WM fraction ``p`` becomes
            ``(p - tissue_loss) / (1 - tissue_loss)`` (thinner cortex, wider sulci).
        ventricle_dilation_mm: growth of the ventricles, mm.
        csf_shell_mm: extracerebral CSF thickness outside the template tissue surface, mm.
        skull_mm: skull thickness, mm.
        scalp_mm: scalp thickness, mm.
        texture: within-tissue texture amplitude (relative standard deviation).
        lesions: white-matter lesions (label 4).
        infarct: infarction (label 9), or None.
        other: "other" pathology (label 10), or None.
        scanner: one :class:`ScannerProfile` per modality, in ``MODALITIES`` order.
        field_seed: seed of the smooth fields and the noise (warp, texture, bias, Rician noise).
        medium_warp_mm: SD of the displacement of the second warp scale (2-3 cm), mm.
        fine_warp_mm: SD of the displacement of the third warp scale (1-2 cm), mm.
        regional_atrophy: relative SD of ``tissue_loss`` across regions (smooth over ~8 cm).
        atrophy_asymmetry: ``tissue_loss`` of the left hemisphere over the right's, minus 1.
        ventricle_asymmetry_mm: left minus right ventricle growth, mm.
    """

    subject_id: str
    seed: int
    scale: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    warp_mm: float
    tissue_loss: float
    ventricle_dilation_mm: float
    csf_shell_mm: float
    skull_mm: float
    scalp_mm: float
    texture: float
    lesions: tuple[Blob, ...]
    infarct: Blob | None
    other: Blob | None
    scanner: tuple[ScannerProfile, ...]
    field_seed: int
    medium_warp_mm: float = 0.0
    fine_warp_mm: float = 0.0
    regional_atrophy: float = 0.0
    atrophy_asymmetry: float = 0.0
    ventricle_asymmetry_mm: float = 0.0


@dataclass(frozen=True)
class SyntheticSubject:
    """One synthetic subject in memory.

    Attributes:
        subject_id: folder name.
        image: modality -> (X, Y, Z) float32 array (nibabel order; whole numbers, a.u.).
        label: (X, Y, Z) uint8 raw MRBrainS18 labels 0..10.
        affine: (4, 4) voxel (x, y, z) -> RAS mm, shared by all arrays.
        params: the record it was synthesised from.
    """

    subject_id: str
    image: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    params: SubjectParams


@dataclass(frozen=True)
class _Template:
    """Template-derived fields on the 1 mm MNI grid (I, J, K) = MNI (x, y, z) axes."""

    affine: np.ndarray  # (4, 4) template voxel -> MNI mm
    gm: np.ndarray  # float32 GM fraction, averaged over 3 mm along z
    wm: np.ndarray  # float32 WM fraction, idem
    tissue_distance: np.ndarray  # float32 distance outside GM+WM >= 0.5, mm (-0.5 inside)
    ventricle_distance: np.ndarray  # float32 signed distance to the ventricles, mm (+ outside)
    region: np.ndarray  # uint8 region codes
    lesion_sites: np.ndarray  # (N, 3) MNI mm, deep / periventricular white matter
    cortex_sites: np.ndarray  # (N, 3) MNI mm, lateral cortex (infarcts)
    deep_sites: np.ndarray  # (N, 3) MNI mm, deep grey matter (label 10 blobs)


# --------------------------------------------------------------------------- public API


def stable_hash(text: str) -> int:
    """A 32-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def held_out_ids(count: int) -> list[str]:
    """Ids of ``count`` held-out synthetic subjects: ``H01``, ``H02``, ..."""
    return [f"{HELD_OUT_PREFIX}{i:02d}" for i in range(1, count + 1)]


def sample_subject_params(subject_id: str, seed: int = 0) -> SubjectParams:
    """Draw every random choice of one subject from ``(seed, stable_hash(subject_id))``.

    Training ids in ``INFARCT_SUBJECTS`` / ``OTHER_SUBJECTS`` always get labels 9 / 10; other
    ids (held-out) get each with probability 0.3.
    """
    _check_seed(seed)
    if not isinstance(subject_id, str) or not subject_id:
        raise InvalidInputError(
            f"subject id {subject_id!r} is not a non-empty string.",
            hint="Subject ids are folder names such as '070' (never int-cast).",
        )
    rng = np.random.default_rng([seed, stable_hash(subject_id)])
    tpl = _load_template()
    atrophy = float(rng.uniform(0.0, 1.0))  # a latent "age": drives CSF, ventricles, lesions
    n_lesions = 3 + int(rng.poisson(1.0 + 10.0 * atrophy * rng.uniform(0.3, 1.0)))
    lesions = tuple(_draw_blob(rng, tpl.lesion_sites, 2.5, 6.0) for _ in range(n_lesions))
    pathology = rng.uniform(size=2) < 0.3
    if subject_id in MRBRAINS18_TRAINING_IDS:
        pathology = (subject_id in INFARCT_SUBJECTS, subject_id in OTHER_SUBJECTS)
    infarct = _draw_blob(rng, tpl.cortex_sites, 6.0, 10.0) if pathology[0] else None
    other = _draw_blob(rng, tpl.deep_sites, 3.0, 5.0) if pathology[1] else None
    scanner = tuple(
        ScannerProfile(
            gain=float(rng.uniform(0.8, 1.25)),
            contrast=float(rng.uniform(0.88, 1.12)),
            class_jitter=tuple(
                float(v) for v in np.clip(rng.normal(1, 0.03, len(_CLASSES)), 0.92, 1.08)
            ),
            bias_strength=float(rng.uniform(0.04, 0.15)),
            noise=float(rng.uniform(0.015, 0.04)),
        )
        for _ in MODALITIES
    )
    return SubjectParams(
        subject_id=subject_id,
        seed=seed,
        scale=float(rng.uniform(0.85, 0.98)),
        rotation_deg=_floats3(rng.uniform(-4.0, 4.0, 3)),
        translation_mm=_floats3(rng.uniform([-6, -6, -3], [6, 6, 3])),
        warp_mm=float(rng.uniform(1.5, 3.0)),
        tissue_loss=float(0.35 * atrophy),
        ventricle_dilation_mm=float(0.3 + 3.5 * atrophy + rng.uniform(0.0, 0.7)),
        csf_shell_mm=float(rng.uniform(2.5, 3.5)),
        skull_mm=float(rng.uniform(4.5, 7.0)),
        scalp_mm=float(rng.uniform(3.5, 6.0)),
        texture=float(rng.uniform(0.02, 0.045)),
        lesions=lesions,
        infarct=infarct,
        other=other,
        scanner=scanner,
        field_seed=int(rng.integers(0, 2**31 - 1)),
        medium_warp_mm=float(rng.uniform(0.6, 1.4)),
        fine_warp_mm=float(rng.uniform(0.3, 0.7)),
        regional_atrophy=float(rng.uniform(0.2, 0.6)),
        atrophy_asymmetry=float(rng.uniform(-0.3, 0.3)),
        ventricle_asymmetry_mm=float(rng.uniform(-1.5, 1.5)),
    )


def synthesize_subject(
    subject_id: str,
    seed: int = 0,
    *,
    params: SubjectParams | None = None,
    shape: tuple[int, int, int] = GRID_SHAPE,
    voxel_size_mm: tuple[float, float, float] = VOXEL_SIZE_MM,
) -> SyntheticSubject:
    """Synthesise one subject in memory.

    Args:
        subject_id: folder name; with ``seed`` it fixes every random choice.
        seed: cohort seed (non-negative int).
        params: a record from :func:`sample_subject_params` to replay or edit (its own
            subject_id and seed are then used); None draws it.
        shape: grid (X, Y, Z) in voxels; tests may pass a smaller grid with a larger
            ``voxel_size_mm`` (the anatomy is defined in mm, so it only gets coarser).
        voxel_size_mm: voxel size along (x, y, z), mm.

    Returns:
        Images (X, Y, Z) float32, labels (X, Y, Z) uint8 and the shared RAS affine.
    """
    if params is None:
        params = sample_subject_params(subject_id, seed)
    shape = _check_grid(shape, voxel_size_mm)
    tpl = _load_template()
    affine = grid_affine(shape, voxel_size_mm)
    rng = np.random.default_rng(params.field_seed)
    coords = _template_coordinates(params, tpl, affine, shape, rng)
    fractions, region = _class_fractions(params, tpl, coords, affine, rng)
    label = _labels(fractions, region)
    texture = texture_field(rng, shape, voxel_size_mm)
    image = {
        name: _contrast(fractions, profile, _MEANS[name], params.texture * texture, rng)
        for name, profile in zip(MODALITIES, params.scanner, strict=True)
    }
    return SyntheticSubject(params.subject_id, image, label, affine, params)


def make_cohort(
    out_dir: Path,
    seed: int = 0,
    held_out: int = 0,
    training_ids: Sequence[str] = MRBRAINS18_TRAINING_IDS,
    *,
    overwrite: bool = False,
) -> list[Subject]:
    """Write a synthetic MRBrainS18-layout cohort and return its subjects.

    Writes ``out_dir/training/<id>/{segm.nii.gz, pre/FLAIR.nii.gz, pre/reg_T1.nii.gz,
    pre/reg_IR.nii.gz}`` for each training id and the same under ``out_dir/held-out/H01 ...``
    for ``held_out`` extra subjects. Images are int16 (a.u.), labels uint8, each file written
    atomically. Raises InvalidInputError if subject folders already exist and ``overwrite``
    is False, or if other subject folders than the ones written exist (never deleted).
    """
    _check_seed(seed)
    if not 0 <= int(held_out) <= 99:
        raise InvalidInputError(
            f"held_out: {held_out} is out of range.", hint="Use 0 to 99 held-out subjects."
        )
    plan = [(TRAINING_GROUP, sid) for sid in _check_ids(training_ids)]
    plan += [(HELD_OUT_GROUP, sid) for sid in held_out_ids(int(held_out))]
    _check_out_dir(Path(out_dir), plan, overwrite)
    subjects = []
    for group, subject_id in plan:
        synthetic = synthesize_subject(subject_id, seed)
        subjects.append(write_subject(synthetic, Path(out_dir) / group / subject_id, group))
    return subjects


def write_subject(synthetic: SyntheticSubject, folder: Path, group: str) -> Subject:
    """Write one subject's label and images into ``folder`` (atomically, file by file)."""
    write_nifti(folder / LABEL_FILE, synthetic.label, synthetic.affine, np.uint8, _NOTICE)
    for name, array in synthetic.image.items():
        write_nifti(folder / MODALITY_FILES[name], array, synthetic.affine, np.int16, _NOTICE)
    return Subject(
        subject_id=synthetic.subject_id,
        group=group,
        images={name: folder / rel for name, rel in MODALITY_FILES.items()},
        label=folder / LABEL_FILE,
    )


def grid_affine(
    shape: tuple[int, int, int] = GRID_SHAPE,
    voxel_size_mm: tuple[float, float, float] = VOXEL_SIZE_MM,
) -> np.ndarray:
    """(4, 4) RAS affine of a grid with the given voxel sizes, its centre at (0, 0, 0) mm."""
    affine = np.diag([*voxel_size_mm, 1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1.0) / 2.0 * np.asarray(voxel_size_mm)
    return affine


# --------------------------------------------------------------------------- template


def template_dir() -> Path:
    """Folder of nilearn's bundled MNI152 files (nilearn itself is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    folder = Path(list(spec.submodule_search_locations)[0]) if spec else None
    if folder is None or not all(
        (folder / "datasets/data" / f).is_file() for f in TEMPLATE_FILES.values()
    ):
        raise InvalidInputError(
            "synthetic cohort: the MNI152 2009 template files of nilearn were not found "
            f"({', '.join(TEMPLATE_FILES.values())}).",
            hint="Install nilearn (pip install nilearn); it ships these files.",
        )
    return folder / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def _load_template() -> _Template:
    """Load and pre-process the template once per process (a few seconds)."""
    import nibabel as nib
    from scipy import ndimage

    folder = template_dir()
    images = {k: nib.load(str(folder / f)) for k, f in TEMPLATE_FILES.items()}
    affine = images["t1"].affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise InvalidInputError("synthetic cohort: unexpected oblique MNI152 template affine.")
    t1, gm, wm = (np.asarray(images[k].dataobj, dtype=np.float32) / 255.0 for k in TEMPLATE_FILES)
    tissue = gm + wm >= 0.5
    x, y, z = _mni_axes(affine, t1.shape)
    region = _region_map(x, y, z)
    ventricles = _ventricle_mask(t1, tissue, x, y, z)
    ventricle_distance = _signed_distance(ventricles, affine)
    gm_pv = ndimage.uniform_filter1d(gm, 3, axis=2)  # 3 mm slab along z = slice profile
    wm_pv = ndimage.uniform_filter1d(wm, 3, axis=2)
    cerebrum = region == _CEREBRUM
    near_ventricles = (ventricle_distance < 12.0) | ((abs(x) < 35) & (z > 5))
    lesion_mask = (wm > 0.95) & cerebrum & (z > -5) & (z < 50) & near_ventricles
    cortex_mask = (gm > 0.8) & cerebrum & (abs(x) > 30) & (z > 0) & (z < 50)
    deep_mask = (gm > 0.6) & (region == _DEEP_GREY)
    return _Template(
        affine=affine,
        gm=gm_pv,
        wm=wm_pv,
        tissue_distance=_outside_distance(tissue, affine),
        ventricle_distance=ventricle_distance,
        region=region,
        lesion_sites=_sites(lesion_mask, affine),
        cortex_sites=_sites(cortex_mask, affine),
        deep_sites=_sites(deep_mask, affine),
    )


def _mni_axes(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Broadcastable MNI coordinate axes (mm) of an axis-aligned template grid."""
    return tuple(
        (np.arange(n, dtype=np.float32) * affine[d, d] + affine[d, 3]).reshape(
            [n if a == d else 1 for a in range(3)]
        )
        for d, n in enumerate(shape)
    )


def _region_map(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Region codes from geometric rules on MNI coordinates (mm); plausible, not exact.

    Brain stem: an elliptic cylinder along the midbrain-pons-medulla line below z = -6.
    Cerebellum: posterior (y < -38 - 0.15 |x|) and below a tentorium surface that descends
    backwards and sideways (fitted by eye to the template's tentorial CSF gap).
    Deep grey: one ellipsoid per hemisphere around caudate, putamen, pallidum and thalamus.
    """
    centre_y = np.where(z > -32, -25.0, -26.0 + (z + 32.0) * (13.0 / 28.0))
    radius_x = np.where(z > -45, 14.0, 9.0)
    brain_stem = (x**2 / radius_x**2 + (y - centre_y) ** 2 / 12.0**2 < 1) & (z < -6)
    tentorium = -8.0 - 0.25 * abs(x) + 0.3 * np.minimum(y + 50.0, 0.0)
    cerebellum = ~brain_stem & (y < -38.0 - 0.15 * abs(x)) & (z < tentorium)
    deep = (abs(x) - 17.0) ** 2 / 13.0**2 + (y + 1.0) ** 2 / 27.0**2 + (z - 4.0) ** 2 / 15.0**2 < 1
    region = np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), _CEREBRUM, np.uint8)
    region[deep] = _DEEP_GREY
    region[cerebellum] = _CEREBELLUM
    region[brain_stem] = _BRAIN_STEM
    return region


def _ventricle_mask(
    t1: np.ndarray, tissue: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Lateral and third ventricles: large central connected low-T1 regions outside tissue."""
    from scipy import ndimage

    box = (abs(x) < 30) & (y > -45) & (y < 35) & (z > -5) & (z < 35)
    candidate = (t1 > 0) & (t1 < 0.45) & ~tissue & box
    components, count = ndimage.label(candidate)
    sizes = ndimage.sum_labels(candidate, components, np.arange(1, count + 1))
    return np.isin(components, 1 + np.flatnonzero(sizes > 300))


def _outside_distance(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Distance (mm, float32) outside the mask, zero half a voxel out; -0.5 voxel inside."""
    from scipy import ndimage

    sampling = np.abs(np.diag(affine)[:3])
    half = np.float32(0.5 * sampling.min())
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling).astype(np.float32)
    return np.where(mask, -half, outside - half)


def _signed_distance(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Signed distance (mm, float32) to the surface of a compact mask: negative inside.

    The transform runs on the mask's bounding box plus 15 voxels only; voxels beyond get
    +1000 mm (enough for the few mm of growth it is used for).
    """
    from scipy import ndimage

    sampling = np.abs(np.diag(affine)[:3])
    out = np.full(mask.shape, 1000.0, dtype=np.float32)
    idx = np.argwhere(mask)
    lo, hi = np.maximum(idx.min(0) - 15, 0), idx.max(0) + 16
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub = mask[box]
    outside = ndimage.distance_transform_edt(~sub, sampling=sampling)
    inside = ndimage.distance_transform_edt(sub, sampling=sampling)
    # Half a voxel shift so the zero level lies between the last inside and first outside voxel.
    half = 0.5 * float(sampling.min())
    out[box] = np.where(sub, half - inside, outside - half)
    return out


def _sites(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(N, 3) MNI mm coordinates of the mask's voxels (every 2nd voxel along each axis)."""
    idx = np.argwhere(mask[::2, ::2, ::2]) * 2
    return (idx @ affine[:3, :3].T + affine[:3, 3]).astype(np.float64)


# --------------------------------------------------------------------------- geometry


def _template_coordinates(
    params: SubjectParams,
    tpl: _Template,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """(3, X, Y, Z) float32 template voxel coordinates of every grid voxel.

    Grid mm g and MNI mm m relate by g = scale * R (m - c) + t; a smooth random displacement
    at three scales (``WARP_SCALES``: ``warp_mm``, ``medium_warp_mm``, ``fine_warp_mm``) is
    added in template space.
    """
    to_template = _grid_to_template(params, tpl, affine)
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    coords = np.empty((3, *shape), dtype=np.float32)
    voxel_mm = np.abs(np.diag(tpl.affine)[:3])
    for d in range(3):
        m = to_template[d].astype(np.float32)
        coords[d] = (
            m[0] * axes[0][:, None, None]
            + m[1] * axes[1][None, :, None]
            + m[2] * axes[2][None, None, :]
            + m[3]
        )
        coords[d] += smooth_field(rng, shape, WARP_SCALES[0]) * (params.warp_mm / voxel_mm[d])
    finer = ((WARP_SCALES[1], params.medium_warp_mm), (WARP_SCALES[2], params.fine_warp_mm))
    for control, amplitude_mm in finer:
        for d in range(3):
            coords[d] += smooth_field(rng, shape, control) * (amplitude_mm / voxel_mm[d])
    return coords


def _grid_to_template(params: SubjectParams, tpl: _Template, affine: np.ndarray) -> np.ndarray:
    """(4, 4) grid voxel (x, y, z) -> template voxel, without the warp."""
    rx, ry, rz = np.deg2rad(params.rotation_deg)
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    rotation = rot_z @ rot_y @ rot_x
    grid_to_mni = np.eye(4)
    grid_to_mni[:3, :3] = rotation.T / params.scale
    grid_to_mni[:3, 3] = np.asarray(GRID_CENTRE_MNI) - rotation.T @ params.translation_mm / (
        params.scale
    )
    return np.linalg.inv(tpl.affine) @ grid_to_mni @ affine


def _sample(field: np.ndarray, coords: np.ndarray, order: int, outside: float) -> np.ndarray:
    """Interpolate a template field at (3, X, Y, Z) voxel coordinates -> (X, Y, Z), same dtype."""
    from scipy import ndimage

    out = np.empty(coords.shape[1:], dtype=field.dtype)
    ndimage.map_coordinates(field, coords, output=out, order=order, cval=outside, prefilter=False)
    return out


def _blob_field(
    blobs: Sequence[Blob],
    tpl: _Template,
    coords: np.ndarray,
    affine: np.ndarray,
    to_template: np.ndarray,
) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1]: max over soft ellipsoids (edge width about 1 mm)."""
    total = np.zeros(coords.shape[1:], dtype=np.float32)
    from_template = np.linalg.inv(to_template)
    voxel_mm = np.abs(np.diag(affine)[:3])
    tpl_mm = np.abs(np.diag(tpl.affine)[:3])
    for blob in blobs:
        centre = np.linalg.inv(tpl.affine) @ [*blob.centre_mni, 1.0]
        middle = (from_template @ centre)[:3]
        reach = (max(blob.radii_mm) + 12.0) / voxel_mm  # + warp and rotation margin
        lo = np.clip(np.floor(middle - reach), 0, np.array(total.shape)).astype(int)
        hi = np.clip(np.ceil(middle + reach) + 1, 0, np.array(total.shape)).astype(int)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            continue
        q = sum(
            ((coords[d][box] - centre[d]) * tpl_mm[d] / blob.radii_mm[d]) ** 2 for d in range(3)
        )
        edge = 1.0 / (1.0 + np.exp((np.sqrt(q) - 1.0) * min(blob.radii_mm) / 0.5))
        total[box] = np.maximum(total[box], edge.astype(np.float32))
    return total


# --------------------------------------------------------------------------- voxel model


def _class_fractions(
    params: SubjectParams,
    tpl: _Template,
    coords: np.ndarray,
    affine: np.ndarray,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-class volume fractions (each (X, Y, Z) float32, summing to <= 1) and region codes."""
    dist = _sample(tpl.tissue_distance, coords, 1, 1000.0)
    gm = np.clip(_sample(tpl.gm, coords, 1, 0.0), 0, 1)
    wm = np.clip(_sample(tpl.wm, coords, 1, 0.0), 0, 1)
    region = _sample(tpl.region, coords, 0, _CEREBRUM)

    def shell(width_mm: float) -> np.ndarray:  # soft inside-of-surface at d = width
        return np.clip(width_mm + 0.5 - dist, 0.0, 1.0)

    # +1 in the left hemisphere (MNI x < 0), -1 in the right, smooth across the midline
    x_mm = coords[0] * float(tpl.affine[0, 0]) + float(tpl.affine[0, 3])  # float32 throughout
    left = -np.tanh(x_mm / MIDLINE_SOFTNESS_MM)
    regional = smooth_field(rng, coords.shape[1:], REGIONAL_ATROPHY_CONTROL)
    loss = params.tissue_loss * np.clip(1.0 + params.regional_atrophy * regional, 0.2, 2.0)
    loss = np.clip(loss * (1.0 + 0.5 * params.atrophy_asymmetry * left), 0.0, 0.45)
    tissue = gm + wm  # atrophy: raise the partial-volume threshold at tissue edges
    keep = np.clip((tissue - loss) / (1.0 - loss), 0.0, 1.0) / np.maximum(tissue, 1e-6)
    intracranial = shell(params.csf_shell_mm)
    gm = np.minimum(gm * keep, intracranial)
    wm = np.minimum(wm * keep, intracranial - gm)
    vent_dist = _sample(tpl.ventricle_distance, coords, 1, 1000.0)
    growth = np.maximum(
        params.ventricle_dilation_mm + 0.5 * params.ventricle_asymmetry_mm * left, 0
    )
    vent = np.clip(growth + 0.5 - vent_dist, 0.0, 1.0)
    gm *= 1.0 - vent
    wm *= 1.0 - vent
    rest = np.maximum(intracranial - gm - wm, 0.0)
    deep = region == _DEEP_GREY
    f = {"ventricle": rest * vent, "csf": rest * (1.0 - vent)}
    f["deep_gm"], f["gm"], f["wm"] = np.where(deep, gm, 0.0), np.where(deep, 0.0, gm), wm
    to_template = _grid_to_template(params, tpl, affine)
    lesion = _blob_field(params.lesions, tpl, coords, affine, to_template)
    f["lesion"] = lesion * f["wm"]
    f["wm"] = f["wm"] - f["lesion"]
    tissue_classes = ("gm", "deep_gm", "wm", "lesion")
    for name, blob in (("infarct", params.infarct), ("other", params.other)):
        hit = _blob_field([blob] if blob else [], tpl, coords, affine, to_template)
        f[name] = sum(hit * f[c] for c in tissue_classes)
        for c in tissue_classes:
            f[c] = f[c] * (1.0 - hit)
    outer_skull = shell(params.csf_shell_mm + params.skull_mm)
    f["skull"] = outer_skull - intracranial
    f["scalp"] = shell(params.csf_shell_mm + params.skull_mm + params.scalp_mm) - outer_skull
    return {k: v.astype(np.float32, copy=False) for k, v in f.items()}, region


def _labels(fractions: dict[str, np.ndarray], region: np.ndarray) -> np.ndarray:
    """(X, Y, Z) uint8 raw labels: the dominant intracranial class, then region relabelling."""
    names = list(_CLASS_LABEL)
    best = fractions[names[0]].copy()
    label = np.full(best.shape, _CLASS_LABEL[names[0]], dtype=np.uint8)
    for name in names[1:]:
        wins = fractions[name] > best
        best[wins] = fractions[name][wins]
        label[wins] = _CLASS_LABEL[name]
    intracranial = sum(fractions[n] for n in names)
    label[intracranial < 0.5] = 0
    brain = np.isin(label, (1, 2, 3, 4))
    label[brain & (region == _CEREBELLUM)] = 7
    label[brain & (region == _BRAIN_STEM)] = 8
    return label


def _contrast(
    fractions: dict[str, np.ndarray],
    profile: ScannerProfile,
    means: dict[str, float],
    texture: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One contrast, (X, Y, Z) float32 whole numbers: tissue model, texture, blur, bias, noise."""
    from scipy import ndimage

    mean = {
        name: (means[name] ** profile.contrast) * profile.class_jitter[i]
        for i, name in enumerate(_CLASSES)
    }
    image = np.zeros_like(texture)
    for name in _CLASSES:
        image += fractions[name] * np.float32(mean[name])
    image *= 1.0 + texture
    image = ndimage.gaussian_filter(image, sigma=(0.45, 0.45, 0.0), truncate=3.0)  # in-plane PSF
    image *= np.exp(profile.bias_strength * smooth_field(rng, image.shape, (3, 3, 3)))
    reference = 1000.0 * profile.gain
    image *= np.float32(reference / max(mean["gm"], mean["wm"]))
    sigma = np.float32(profile.noise * reference)
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.round(np.sqrt(real * real + imaginary * imaginary)).astype(np.float32)


# --------------------------------------------------------------------------- validation, I/O


def _draw_blob(rng: np.random.Generator, sites: np.ndarray, r_min: float, r_max: float) -> Blob:
    """A blob centred near a random site (MNI mm) with semi-axes uniform in [r_min, r_max] mm."""
    centre = sites[rng.integers(len(sites))] + rng.uniform(-1.0, 1.0, 3)
    return Blob(centre_mni=_floats3(centre), radii_mm=_floats3(rng.uniform(r_min, r_max, 3)))


def _floats3(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(
            f"seed: {seed!r} is not a non-negative integer.", hint="Use e.g. --seed 0."
        )


def _check_grid(shape: Sequence[int], voxel_size_mm: Sequence[float]) -> tuple[int, int, int]:
    if len(shape) != 3 or min(shape) < 1 or len(voxel_size_mm) != 3 or min(voxel_size_mm) <= 0:
        raise InvalidInputError(
            f"synthetic grid: shape {shape} / voxel size {voxel_size_mm} mm is invalid.",
            hint="Give three positive voxel counts and three positive voxel sizes (mm).",
        )
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_ids(ids: Sequence[str]) -> list[str]:
    ids = list(ids)
    bad = [
        i
        for i in ids
        if not isinstance(i, str)
        or i in ("", ".", "..")
        or "/" in i
        or "\\" in i
        or i.startswith(HELD_OUT_PREFIX)
    ]
    if bad or len(set(ids)) != len(ids):
        raise InvalidInputError(
            f"training_ids: invalid or repeated subject ids {bad or ids}.",
            hint=f"Use unique folder names as strings (not starting with "
            f"{HELD_OUT_PREFIX!r}), e.g. {', '.join(MRBRAINS18_TRAINING_IDS)}.",
        )
    return ids


def _check_out_dir(out_dir: Path, plan: list[tuple[str, str]], overwrite: bool) -> None:
    existing = [
        (group, p.name)
        for group in (TRAINING_GROUP, HELD_OUT_GROUP)
        if (out_dir / group).is_dir()
        for p in sorted((out_dir / group).iterdir())
        if p.is_dir()
    ]
    if existing and not overwrite:
        raise InvalidInputError(
            f"cohort: {out_dir} already holds {len(existing)} subject folder(s) "
            f"(e.g. {existing[0][0]}/{existing[0][1]}).",
            hint="Choose an empty folder, or pass overwrite=True (--overwrite) to replace them.",
        )
    stale = sorted(set(existing) - set(plan))
    if stale:
        raise InvalidInputError(
            f"cohort: {out_dir} holds subject folders this cohort would not write: "
            f"{', '.join(f'{g}/{s}' for g, s in stale)}.",
            hint="Delete them yourself or choose an empty folder; they are never deleted here.",
        )
