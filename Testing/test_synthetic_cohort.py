"""The synthetic MRBrainS18-like demo cohort: layout, geometry, labels, contrasts, determinism.

One small cohort (training subject "1" and held-out "H01") is written once per module; the
other tests use it or a coarse in-memory grid.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from MachineUnlearningLib.data import synthetic
from MachineUnlearningLib.data.cohort import LABEL_FILE, MODALITY_FILES
from MachineUnlearningLib.data.synthetic import (
    make_cohort,
    sample_subject_params,
    stable_hash,
    synthesize_subject,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

SUBJECT_FILES = (LABEL_FILE, *MODALITY_FILES.values())
COARSE = {"shape": (60, 60, 12), "voxel_size_mm": (3.832, 3.832, 12.0)}


@pytest.fixture(scope="module")
def a_cohort(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("cohort")
    subjects = make_cohort(root, seed=0, held_out=1, training_ids=("1",))
    return root, subjects


@pytest.fixture(scope="module")
def volumes(a_cohort) -> dict[str, dict[str, np.ndarray]]:
    """subject id -> file name -> array, as read back with nibabel."""
    root, subjects = a_cohort
    out = {}
    for subject in subjects:
        folder = root / subject.group / subject.subject_id
        out[subject.subject_id] = {
            name: np.asanyarray(nib.load(folder / name).dataobj) for name in SUBJECT_FILES
        }
    return out


def test_cohort_writes_exactly_the_mrbrains18_layout(a_cohort):
    root, subjects = a_cohort
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    expected = {
        f"{group}/{name}" for group in ("training/1", "held-out/H01") for name in SUBJECT_FILES
    }
    assert written == expected
    assert [(s.subject_id, s.group) for s in subjects] == [("1", "training"), ("H01", "held-out")]
    assert subjects[0].label == root / "training/1/segm.nii.gz"
    assert subjects[1].images["reg_IR"] == root / "held-out/H01/pre/reg_IR.nii.gz"


def test_every_volume_is_240x240x48_at_0958x0958x3mm_in_a_centred_ras_affine(a_cohort):
    root, _ = a_cohort
    for path in sorted(root.rglob("*.nii.gz")):
        image = nib.load(path)
        assert image.shape == (240, 240, 48), path
        assert np.allclose(image.header.get_zooms(), (0.958, 0.958, 3.0), atol=1e-5), path
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S"), path
        centre = image.affine @ [119.5, 119.5, 23.5, 1.0]
        assert np.allclose(centre[:3], 0.0, atol=1e-3), path


def test_files_of_a_subject_share_one_affine_and_use_integer_dtypes(a_cohort):
    root, subjects = a_cohort
    for subject in subjects:
        folder = root / subject.group / subject.subject_id
        images = [nib.load(folder / name) for name in SUBJECT_FILES]
        for image in images[1:]:
            assert np.array_equal(image.affine, images[0].affine)
            assert image.get_data_dtype() == np.int16
        assert images[0].get_data_dtype() == np.uint8


def test_labels_are_mrbrains18_values_with_every_scored_structure_present(volumes):
    for subject_id, arrays in volumes.items():
        values = set(np.unique(arrays[LABEL_FILE]).tolist())
        assert values <= set(range(11)), subject_id
        assert set(range(1, 9)) <= values, (subject_id, values)


def test_subject_1_carries_the_ignored_labels_and_070_stays_ordinary(volumes):
    assert {9, 10} <= set(np.unique(volumes["1"][LABEL_FILE]).tolist())
    ordinary = sample_subject_params("070", seed=0)
    assert ordinary.infarct is None and ordinary.other is None


def test_synthesis_is_deterministic_for_a_seed(volumes):
    again = synthesize_subject("1", seed=0)
    on_disk = volumes["1"]
    assert np.array_equal(again.label, on_disk[LABEL_FILE])
    for modality, rel in MODALITY_FILES.items():
        assert np.array_equal(again.image[modality], on_disk[rel].astype(np.float32)), modality
    assert sample_subject_params("1", seed=0) == again.params


def test_different_seeds_give_different_subjects():
    first = synthesize_subject("070", seed=0, **COARSE)
    second = synthesize_subject("070", seed=1, **COARSE)
    assert first.label.shape == (60, 60, 12)
    assert first.params != second.params
    assert not np.array_equal(first.label, second.label)
    assert not np.array_equal(first.image["FLAIR"], second.image["FLAIR"])


def test_subjects_differ_in_anatomy(volumes):
    voxel_ml = 0.958 * 0.958 * 3.0 / 1000.0
    a, b = volumes["1"][LABEL_FILE], volumes["H01"][LABEL_FILE]
    ventricles = [np.sum(v == 6) * voxel_ml for v in (a, b)]
    assert abs(ventricles[0] - ventricles[1]) > 0.1 * max(ventricles)
    brain = (a > 0) | (b > 0)
    assert np.mean(a[brain] != b[brain]) > 0.2  # pose, warp and atrophy move every boundary


def _means(image: np.ndarray, label: np.ndarray) -> dict[int, float]:
    return {v: float(image[label == v].mean()) for v in range(11) if np.any(label == v)}


def test_each_modality_has_its_tissue_contrast(volumes):
    for subject_id, arrays in volumes.items():
        label = arrays[LABEL_FILE]
        t1 = _means(arrays[MODALITY_FILES["reg_T1"]], label)
        ir = _means(arrays[MODALITY_FILES["reg_IR"]], label)
        flair = _means(arrays[MODALITY_FILES["FLAIR"]], label)
        assert t1[3] > t1[1] > t1[5], (subject_id, t1)  # WM > GM > CSF
        assert ir[3] > ir[1] > ir[5] and ir[5] < 0.25 * ir[3], (subject_id, ir)
        assert flair[1] > flair[3] > flair[5], (subject_id, flair)  # GM > WM > CSF
        assert flair[4] > 1.5 * flair[3], (subject_id, flair)  # lesions bright
        assert flair[6] < 0.3 * flair[3], (subject_id, flair)  # ventricles dark


def test_background_far_from_the_head_is_near_zero(volumes):
    for arrays in volumes.values():
        corner = arrays[MODALITY_FILES["reg_T1"]][:20, :20, :]
        assert corner.mean() < 0.1 * arrays[MODALITY_FILES["reg_T1"]].max()


def test_existing_cohort_is_refused_without_overwrite(a_cohort):
    root, _ = a_cohort
    with pytest.raises(InvalidInputError, match="already holds"):
        make_cohort(root, seed=0, held_out=1, training_ids=("1",))


def test_overwrite_never_deletes_subject_folders_it_would_not_write(a_cohort):
    root, _ = a_cohort
    with pytest.raises(InvalidInputError, match="never deleted|would not write"):
        make_cohort(root, seed=0, held_out=0, training_ids=(), overwrite=True)
    assert (root / "held-out/H01/segm.nii.gz").is_file()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"seed": 1.5},
        {"held_out": 100},
        {"training_ids": ("1", "1")},
        {"training_ids": ("H01",)},
        {"training_ids": ("a/b",)},
    ],
    ids=[
        "negative-seed",
        "float-seed",
        "too-many-held-out",
        "repeated-id",
        "held-out-prefix",
        "path-in-id",
    ],
)
def test_invalid_arguments_are_refused_before_writing(tmp_path, kwargs):
    with pytest.raises(InvalidInputError):
        make_cohort(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_missing_nilearn_templates_name_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InvalidInputError) as error:
        synthetic.template_dir()
    assert "pip install nilearn" in error.value.hint


def test_stable_hash_does_not_depend_on_the_process():
    assert stable_hash("070") == 2830906949
    assert stable_hash("070") != stable_hash("70")
