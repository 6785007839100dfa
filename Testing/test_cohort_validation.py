"""Bad cohort inputs: each gives InvalidInputError naming the file, and exit code 2 from the CLI."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from MachineUnlearningLib.app.cli import main
from MachineUnlearningLib.data.cohort import DEFAULT_MODALITIES, discover_cohort
from MachineUnlearningLib.data.volumes import load_subject
from MachineUnlearningLib.runtime.errors import InvalidInputError


def _subject(cohort, subject_id="070"):
    return next(s for s in discover_cohort(cohort) if s.subject_id == subject_id)


def _rewrite(path, transform_data=None, affine=None):
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    data = transform_data(data) if transform_data else data
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), str(path))


def test_discovery_keeps_string_ids_and_groups(a_tiny_cohort):
    subjects = discover_cohort(a_tiny_cohort)
    ids = {s.subject_id: s.group for s in subjects}
    assert ids["070"] == "training" and ids["H01"] == "held-out"
    assert "70" not in ids
    assert len(subjects) == 10


def test_loaded_subject_is_dhw_with_spacing(a_tiny_cohort):
    volumes = load_subject(_subject(a_tiny_cohort), DEFAULT_MODALITIES, need_label=True)
    assert volumes.image.shape == (3, 12, 40, 40)
    assert volumes.raw_label.shape == (12, 40, 40)
    assert volumes.spacing_mm == pytest.approx((3.0, 0.958, 0.958))


def _damage_missing_modality(cohort):
    (cohort / "training/070/pre/reg_IR.nii.gz").unlink()
    return "reg_IR"


def _damage_shape(cohort):
    _rewrite(cohort / "training/070/pre/reg_T1.nii.gz", lambda d: d[:, :, :-1])
    return "reg_T1.nii.gz has shape"


def _damage_affine(cohort):
    path = cohort / "training/070/pre/reg_T1.nii.gz"
    affine = nib.load(str(path)).affine.copy()
    affine[0, 3] += 5.0
    _rewrite(path, affine=affine)
    return "different affine"


def _damage_non_integer(cohort):
    _rewrite(cohort / "training/070/segm.nii.gz", lambda d: d.astype(np.float32) + 0.4)
    return "non-integer"


def _damage_unknown_label(cohort):
    _rewrite(
        cohort / "training/070/segm.nii.gz", lambda d: np.where(d == 3, 17, d).astype(np.uint8)
    )
    return "unknown label value(s) [17]"


def _damage_nan(cohort):
    def poison(d):
        d = d.astype(np.float32).copy()
        d[0, 0, 0] = np.nan
        return d

    _rewrite(cohort / "training/070/pre/FLAIR.nii.gz", poison)
    return "NaN"


@pytest.mark.parametrize(
    "damage",
    [
        _damage_missing_modality,
        _damage_shape,
        _damage_affine,
        _damage_non_integer,
        _damage_unknown_label,
        _damage_nan,
    ],
    ids=[
        "missing-modality",
        "shape-mismatch",
        "affine-mismatch",
        "non-integer-labels",
        "unknown-labels",
        "nan-intensity",
    ],
)
def test_damaged_subject_is_refused_naming_it(a_fresh_cohort, damage):
    expected = damage(a_fresh_cohort)
    with pytest.raises(InvalidInputError) as error:
        load_subject(_subject(a_fresh_cohort), DEFAULT_MODALITIES, need_label=True)
    assert "070" in str(error.value)
    assert expected in str(error.value)


def test_empty_cohort_folder_is_refused(tmp_path):
    (tmp_path / "training").mkdir()
    with pytest.raises(InvalidInputError, match="no subject folders"):
        discover_cohort(tmp_path)


def test_missing_cohort_folder_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        discover_cohort(tmp_path / "nowhere")


def test_duplicate_ids_across_groups_are_refused(a_fresh_cohort):
    shutil.copytree(a_fresh_cohort / "training/070", a_fresh_cohort / "held-out/070")
    with pytest.raises(InvalidInputError, match="'070' appears in both"):
        discover_cohort(a_fresh_cohort)


@pytest.mark.parametrize(
    "damage",
    [
        _damage_missing_modality,
        _damage_shape,
        _damage_affine,
        _damage_non_integer,
        _damage_unknown_label,
    ],
    ids=[
        "missing-modality",
        "shape-mismatch",
        "affine-mismatch",
        "non-integer-labels",
        "unknown-labels",
    ],
)
def test_cli_reports_bad_input_on_one_line_with_exit_code_2(
    a_fresh_cohort, tmp_path, capsys, damage
):
    damage(a_fresh_cohort)
    code = main(
        [
            "train",
            "--cohort",
            str(a_fresh_cohort),
            "--output",
            str(tmp_path / "out"),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--set",
            "input_size=16,32,32",
            "--set",
            "base_width=4",
        ]
    )
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "070" in errors[0]
    assert not (tmp_path / "out" / "model.pt").exists()


def test_cli_unknown_forget_id_exits_2(a_tiny_cohort, a_tiny_trained_model, tmp_path, capsys):
    code = main(
        [
            "unlearn",
            "--cohort",
            str(a_tiny_cohort),
            "--checkpoint",
            str(a_tiny_trained_model),
            "--forget",
            "70",
            "--output",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    assert "['70'] not found" in capsys.readouterr().err
