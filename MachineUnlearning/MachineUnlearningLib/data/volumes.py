"""Reading a subject's NIfTI files into arrays, with the checks a clinician's data needs.

Arrays are returned in MedicalNet's (D, H, W) order: nibabel's (x, y, z) arrays are transposed
so that axis 0 is the slice axis. Affines stay nibabel's (RAS, mm) and always belong to the
``(x, y, z)`` array; :func:`to_nifti_order` undoes the transpose before writing.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MachineUnlearningLib.data.cohort import Subject, check_files_exist
from MachineUnlearningLib.data.labels import RAW_LABEL_VALUES
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.files import atomic_path

AFFINE_TOLERANCE_MM = 1e-3
GZIP_LEVEL = 4
"""gzip level of written cohorts: near level 9's size at a fraction of its time."""


@dataclass(frozen=True)
class SubjectVolumes:
    """One subject's images and raw labels on its reference grid.

    Attributes:
        subject_id: the id the user gave.
        image: (C, D, H, W) float32, one channel per modality in the requested order.
        raw_label: (D, H, W) int64 raw MRBrainS18 labels 0..10, or None.
        affine: (4, 4) voxel (x, y, z) -> RAS mm affine of the reference (first) modality.
        spacing_mm: voxel size (sz, sy, sx) in mm, in the (D, H, W) order of the arrays.
    """

    subject_id: str
    image: np.ndarray
    raw_label: np.ndarray | None
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])  # type: ignore[return-value]


def to_dhw(array_xyz: np.ndarray) -> np.ndarray:
    """(x, y, z) nibabel array -> (z, y, x) = (D, H, W)."""
    return np.ascontiguousarray(np.transpose(array_xyz, (2, 1, 0)))


def to_nifti_order(array_dhw: np.ndarray) -> np.ndarray:
    """(D, H, W) array -> nibabel's (x, y, z) order."""
    return np.ascontiguousarray(np.transpose(array_dhw, (2, 1, 0)))


def _load_nifti(path: Path, subject_id: str, what: str):
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except FileNotFoundError:
        raise InvalidInputError(f"subject {subject_id}: missing {what} file {path}.") from None
    except Exception as exc:  # nibabel raises several types for damaged files
        raise InvalidInputError(
            f"subject {subject_id}: cannot read {what} file {path} ({type(exc).__name__}: {exc}).",
            hint="Check that the file is a complete NIfTI (.nii or .nii.gz).",
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(
            f"subject {subject_id}: {what} file {path} has shape {data.shape}; "
            "expected a 3-D volume."
        )
    return data, np.asarray(image.affine, dtype=np.float64)


def load_subject(subject: Subject, modalities: tuple[str, ...], need_label: bool) -> SubjectVolumes:
    """Read and check one subject.

    Raises InvalidInputError, naming the file, when a modality or the label is missing, when
    shapes or affines differ between the subject's files, when the label holds non-integer
    values or values outside 0..10, or when an image holds NaN/inf.
    """
    check_files_exist(subject, modalities, need_label)
    channels = []
    reference_shape = reference_affine = None
    reference_name = ""
    for modality in modalities:
        path = subject.images[modality]
        data, affine = _load_nifti(path, subject.subject_id, modality)
        if reference_shape is None:
            reference_shape, reference_affine, reference_name = data.shape, affine, str(path)
        _check_same_grid(
            subject.subject_id,
            path,
            data.shape,
            affine,
            reference_name,
            reference_shape,
            reference_affine,
        )
        values = np.asarray(data, dtype=np.float32)
        if not np.isfinite(values).all():
            raise InvalidInputError(
                f"subject {subject.subject_id}: {path} contains NaN or infinite values.",
                hint="Re-export the image; the model cannot use non-finite intensities.",
            )
        channels.append(to_dhw(values))
    raw_label = None
    if need_label or subject.label is not None:
        assert subject.label is not None  # check_files_exist guarantees it when needed
        data, affine = _load_nifti(subject.label, subject.subject_id, "label")
        _check_same_grid(
            subject.subject_id,
            subject.label,
            data.shape,
            affine,
            reference_name,
            reference_shape,
            reference_affine,
        )
        raw_label = to_dhw(_integer_labels(data, subject.label, subject.subject_id))
    zooms = np.sqrt((reference_affine[:3, :3] ** 2).sum(axis=0))  # (sx, sy, sz)
    return SubjectVolumes(
        subject_id=subject.subject_id,
        image=np.stack(channels),
        raw_label=raw_label,
        affine=reference_affine,
        spacing_mm=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
    )


def _check_same_grid(subject_id, path, shape, affine, ref_name, ref_shape, ref_affine) -> None:
    if shape != ref_shape:
        raise InvalidInputError(
            f"subject {subject_id}: {path} has shape {shape} but {ref_name} has {ref_shape}.",
            hint="All files of a subject must be on one grid (MRBrainS18: the FLAIR grid); "
            "use the registered reg_* images.",
        )
    if not np.allclose(affine, ref_affine, atol=AFFINE_TOLERANCE_MM):
        raise InvalidInputError(
            f"subject {subject_id}: {path} has a different affine (orientation/origin/spacing) "
            f"than {ref_name}.",
            hint="Resample the file onto the reference grid, or use the registered reg_* images.",
        )


def _integer_labels(data: np.ndarray, path: Path, subject_id: str) -> np.ndarray:
    values = np.asarray(data)
    if not np.issubdtype(values.dtype, np.integer):
        rounded = np.rint(values)
        if not np.allclose(values, rounded, atol=1e-3):
            raise InvalidInputError(
                f"subject {subject_id}: label file {path} holds non-integer values.",
                hint="A label map must hold integer class ids 0..10; was it resampled with "
                "linear interpolation? Use nearest neighbour.",
            )
        values = rounded
    labels = values.astype(np.int64)
    unknown = sorted(set(np.unique(labels).tolist()) - RAW_LABEL_VALUES)
    if unknown:
        raise InvalidInputError(
            f"subject {subject_id}: label file {path} holds unknown label value(s) {unknown[:10]}.",
            hint="MRBrainS18 labels are 0..10 (see docs/user-guide.md for their meanings).",
        )
    return labels


def write_label_map(path: Path | str, labels_dhw: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (D, H, W) class-id map as a uint8 NIfTI with the subject's affine."""
    import nibabel as nib

    image = nib.Nifti1Image(to_nifti_order(labels_dhw.astype(np.uint8)), affine)
    image.header.set_data_dtype(np.uint8)
    with atomic_path(path) as tmp:
        _save_nifti(nib, image, tmp)
    return Path(path)


def write_nifti(
    path: Path | str, array_xyz: np.ndarray, affine: np.ndarray, dtype: type, description: str
) -> Path:
    """Write an (X, Y, Z) array as .nii.gz (qform = sform = affine, mm), atomically.

    Integer dtypes are rounded and clipped to their range. The gzip stream carries no time
    stamp, so the same array gives the same bytes (bit-identical cohorts for a seed).
    ``description`` (at most 80 characters) goes into the header's ``descrip``.
    """
    import nibabel as nib

    data = np.asarray(array_xyz)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.round(data), info.min, info.max)
    image = nib.Nifti1Image(data.astype(dtype), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description
    payload = gzip.compress(image.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
        tmp.chmod(0o644)  # data files, readable like any nib.save output
    return Path(path)


def _save_nifti(nib, image, tmp: Path) -> None:
    # nibabel chooses compression from the file name, so write to a .nii.gz name and move it.
    named = tmp.parent / (tmp.name + ".nii.gz")
    try:
        nib.save(image, str(named))
        os.replace(named, tmp)
    finally:
        if named.exists():
            named.unlink()
