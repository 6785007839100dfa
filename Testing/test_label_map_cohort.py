"""The label-map cohort: real FreeSurfer anatomies -> the MRBrainS18 layout (issue 10).

The tests on ``../shared/data/label-maps`` synthesise two subjects once per module (a few
seconds each); they skip with the reason when ../shared is missing and fail under CI=true
(``conftest.require_shared``). Bad-input tests write tiny label maps of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import require_shared
from MachineUnlearningLib.app.cli import main
from MachineUnlearningLib.data.cohort import MRBRAINS18_TRAINING_IDS, discover_cohort
from MachineUnlearningLib.data.freesurfer_labels import (
    FREESURFER_LABELS,
    TISSUES,
    compartments,
    mapping_markdown,
)
from MachineUnlearningLib.data.label_map_cohort import (
    SIDECAR_FILE,
    LabelMap,
    draw_params,
    list_label_maps,
    make_label_map_cohort,
    read_label_map,
    synthesize_from_label_map,
)
from MachineUnlearningLib.data.pathology import add_infarct, add_lesions, lesion_count
from MachineUnlearningLib.data.resampling import reorient_to_ras
from MachineUnlearningLib.data.synthetic import grid_affine
from MachineUnlearningLib.data.volumes import load_subject
from MachineUnlearningLib.runtime.errors import InvalidInputError

LABEL_MAPS = "data/label-maps"
COARSE_GRID = {"shape": (40, 40, 8), "voxel_size_mm": (5.748, 5.748, 18.0)}
MRBRAINS18_OF = {n: e.mrbrains18 for n, e in FREESURFER_LABELS.items()}


@pytest.fixture(scope="module")
def label_maps_dir() -> Path:
    return require_shared(LABEL_MAPS, "the label-map cohort tests")


@pytest.fixture(scope="module")
def first_two(label_maps_dir):
    """The first two shared maps, read, and their subjects at seed 0 (fractions kept)."""
    files = list_label_maps(label_maps_dir)[:2]
    maps = [read_label_map(f) for f in files]
    subjects = [
        synthesize_from_label_map(m, draw_params(f.name, 0), keep_fractions=True)
        for m, f in zip(maps, files, strict=True)
    ]
    return maps, subjects


@pytest.fixture(scope="module")
def pure_voxels(first_two):
    """Per subject: (N, 3) pure voxels inside the source volume, their source numbers."""
    maps, subjects = first_two
    out = []
    for label_map, subject in zip(maps, subjects, strict=True):
        pure = np.argwhere(subject.fractions.max(axis=0) == 1.0)
        source = _source_labels_at_centres(label_map, subject, pure)
        out.append((pure[source >= 0], source[source >= 0]))
    return out


def _source_labels_at_centres(label_map: LabelMap, subject, voxels: np.ndarray) -> np.ndarray:
    """FreeSurfer number at the source voxel nearest to each target voxel centre (N, 3);
    -1 outside the source volume."""
    homogeneous = np.c_[voxels, np.ones(len(voxels))]
    source = np.rint(homogeneous @ subject.grid_to_source.T)[:, :3].astype(int)
    inside = np.all((source >= 0) & (source < label_map.labels.shape), axis=1)
    out = np.full(len(voxels), -1)
    out[inside] = label_map.labels[tuple(source[inside].T)]
    return out


# -- grid, affine, layout ---------------------------------------------------------------------


def test_subjects_are_on_the_mrbrains18_grid_in_a_ras_affine(first_two):
    _, subjects = first_two
    for subject in subjects:
        assert subject.label.shape == (240, 240, 48)
        assert subject.label.dtype == np.uint8
        assert {k: v.shape for k, v in subject.image.items()} == {
            "FLAIR": (240, 240, 48),
            "reg_T1": (240, 240, 48),
            "reg_IR": (240, 240, 48),
        }
        np.testing.assert_allclose(subject.affine, grid_affine())
        assert nib.aff2axcodes(subject.affine) == ("R", "A", "S")
        np.testing.assert_allclose(nib.affines.voxel_sizes(subject.affine), (0.958, 0.958, 3.0))


def test_reorientation_keeps_every_voxel_at_its_world_position():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 50, (6, 7, 8))
    lia = np.array([[-1.0, 0, 0, 3], [0, 0, 1, -4], [0, -1, 0, 5], [0, 0, 0, 1]])  # L, I, A
    ras, ras_affine = reorient_to_ras(data, lia)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    for index in rng.integers(0, (6, 7, 8), (20, 3)):
        world = lia @ [*index, 1]
        back = np.rint(np.linalg.inv(ras_affine) @ world)[:3].astype(int)
        assert ras[tuple(back)] == data[tuple(index)]


def test_the_brain_comes_out_right_way_up_left_on_the_left(first_two):
    """Independent of the generator's own transform: world positions of tagged structures.

    Left cerebral white matter (FreeSurfer 2) is retagged as the optic chiasm (-> label 10),
    so label 10 marks the left hemisphere in the output; the cerebellum (7) must lie below
    and behind the ventricles (6), as in any RAS image of a head.
    """
    maps, _ = first_two
    tagged = maps[0].labels.copy()
    tagged[tagged == 85] = 24
    tagged[tagged == 2] = 85
    subject = synthesize_from_label_map(
        LabelMap(maps[0].path, tagged, maps[0].affine),
        draw_params(maps[0].path.name, 0),
        shape=(120, 120, 24),
        voxel_size_mm=(1.916, 1.916, 6.0),
    )

    def centre_mm(label: int) -> np.ndarray:
        voxels = np.argwhere(subject.label == label)
        return (np.c_[voxels, np.ones(len(voxels))] @ subject.affine.T)[:, :3].mean(axis=0)

    left, ventricles, cerebellum = centre_mm(10), centre_mm(6), centre_mm(7)
    assert left[0] < ventricles[0] - 15.0  # the left hemisphere's WM centre is ~25 mm left
    assert cerebellum[1] < ventricles[1] - 8.0  # posterior (the ventricles reach far back)
    assert cerebellum[2] < ventricles[2] - 25.0  # inferior


# -- the mapping, voxel by voxel ---------------------------------------------------------------


@pytest.mark.parametrize(
    "freesurfer, mrbrains18",
    [
        (3, 1),  # left cortex -> cortical grey matter
        (42, 1),
        (17, 1),  # hippocampus -> cortical grey matter (our decision)
        (10, 2),  # thalamus -> basal ganglia
        (12, 2),  # putamen
        (2, 3),  # cerebral white matter
        (28, 3),  # ventral DC -> white matter (our decision)
        (24, 5),  # CSF
        (4, 6),  # lateral ventricle
        (8, 7),  # cerebellar cortex -> cerebellum
        (46, 7),  # cerebellar white matter -> cerebellum
        (16, 8),  # brain stem
        (515, 0),  # skull -> background
        (511, 0),  # scalp -> background
    ],
)
def test_pure_voxels_carry_the_mapped_label_of_their_source(
    first_two, pure_voxels, freesurfer, mrbrains18
):
    """A voxel whose whole slice profile lies in one source structure gets that structure's
    MRBrainS18 label (pure voxels: no partial volume, no drawn lesion)."""
    _, subjects = first_two
    checked = 0
    for subject, (pure, source) in zip(subjects, pure_voxels, strict=True):
        hits = pure[source == freesurfer]
        checked += len(hits)
        assert (subject.label[tuple(hits.T)] == mrbrains18).all()
    assert checked >= 20, f"too few pure voxels of FreeSurfer {freesurfer} to check"


def test_every_pure_voxel_agrees_with_the_table(first_two, pure_voxels):
    _, subjects = first_two
    subject, (pure, source) = subjects[0], pure_voxels[0]
    expected = np.vectorize(MRBRAINS18_OF.get)(source)
    assert len(pure) > 500_000
    assert (subject.label[tuple(pure.T)] == expected).all()


def test_every_scored_structure_and_a_little_of_label_10_are_present(first_two):
    _, subjects = first_two
    for subject in subjects:
        counts = np.bincount(subject.label.ravel(), minlength=11)
        assert (counts[1:9] > 0).all(), counts
        assert 0 < counts[10] < 500  # the optic chiasm


def test_the_slice_profile_gives_partial_volume_in_images_and_majority_labels(first_two):
    _, subjects = first_two
    subject = subjects[0]
    pairs = compartments()
    cortex, csf = pairs.index((1, "cortex")), pairs.index((5, "csf"))
    f = subject.fractions
    mixed = (np.abs(f[cortex] - 0.5) <= 0.1) & (np.abs(f[cortex] + f[csf] - 1.0) < 1e-6)
    pure_cortex, pure_csf = f[cortex] == 1.0, f[csf] == 1.0
    t1 = subject.image["reg_T1"]
    assert mixed.sum() > 1000
    assert t1[pure_csf].mean() < t1[mixed].mean() < t1[pure_cortex].mean()
    # majority: more cortex than CSF -> 1, more CSF than cortex -> 5
    two_only = np.abs(f[cortex] + f[csf] - 1.0) < 1e-6
    mostly_cortex = (f[cortex] > 0.55) & two_only
    mostly_csf = (f[csf] > 0.55) & two_only
    assert (subject.label[mostly_cortex] == 1).all()
    assert (subject.label[mostly_csf] == 5).all()


# -- contrasts ----------------------------------------------------------------------------------


def test_each_modality_has_its_tissue_contrast_and_the_head_its_intensities(first_two):
    _, subjects = first_two
    pairs = compartments()

    def pure_mean(subject, pair, modality):
        return subject.image[modality][subject.fractions[pairs.index(pair)] == 1.0].mean()

    for subject in subjects:
        wm, gm, csf = (3, "wm"), (1, "cortex"), (5, "csf")
        for modality in ("reg_T1", "reg_IR"):
            values = [pure_mean(subject, p, modality) for p in (wm, gm, csf)]
            assert values[0] > 1.2 * values[1] > 1.2 * values[2], (modality, values)
        flair = [pure_mean(subject, p, "FLAIR") for p in (gm, wm, csf)]
        assert flair[0] > 1.1 * flair[1] > 2 * flair[2], flair
        bone, fat = (
            pure_mean(subject, (0, "bone"), "reg_T1"),
            pure_mean(subject, (0, "fat"), "reg_T1"),
        )
        assert fat > 3 * bone
        background = subject.image["reg_T1"][:5, :5, :]  # air in a corner: noise only
        assert background.mean() < 0.1 * pure_mean(subject, wm, "reg_T1")


# -- randomness --------------------------------------------------------------------------------


def test_synthesis_is_bit_identical_for_a_seed(first_two, label_maps_dir):
    maps, subjects = first_two
    again = synthesize_from_label_map(
        read_label_map(maps[0].path), draw_params(maps[0].path.name, 0)
    )
    assert np.array_equal(again.label, subjects[0].label)
    for name, image in subjects[0].image.items():
        assert np.array_equal(again.image[name], image), name


def test_another_seed_changes_the_scan_not_the_anatomy():
    a, b = draw_params("training_seg_01.nii.gz", 0), draw_params("training_seg_01.nii.gz", 1)
    assert a != b
    assert a.contrasts[0].gain != b.contrasts[0].gain
    assert a == draw_params("training_seg_01.nii.gz", 0)


def test_two_subjects_really_differ(first_two):
    _, (one, two) = first_two

    def dice(label):
        x, y = one.label == label, two.label == label
        return 2 * (x & y).sum() / (x.sum() + y.sum())

    assert dice(1) < 0.6  # cortical folding differs (same grid, both centred on the brain)
    volumes = [np.bincount(s.label.ravel(), minlength=11) for s in (one, two)]
    for label in (1, 5, 6):  # cortex, CSF, ventricles: 412 / 480, 395 / 332, 46 / 56 ml
        assert abs(volumes[0][label] - volumes[1][label]) > 0.1 * volumes[0][label], label
    assert one.params.contrasts != two.params.contrasts


# -- pathology -------------------------------------------------------------------------------


def _toy_fractions() -> tuple[np.ndarray, tuple[tuple[int, str], ...]]:
    """A 40 x 40 x 12 brain of 2 x 2 x 3 mm voxels: cortex shell, WM, central ventricles."""
    pairs = compartments()
    shape = (40, 40, 12)
    x, y, z = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    r = np.sqrt((x / 18) ** 2 + (y / 18) ** 2 + (z / 5.5) ** 2)
    f = np.zeros((len(pairs), *shape), dtype=np.float32)
    f[pairs.index((0, "air"))][r >= 1.0] = 1
    f[pairs.index((1, "cortex"))][(r < 1.0) & (r >= 0.8)] = 1
    f[pairs.index((3, "wm"))][(r < 0.8) & (r >= 0.2)] = 1
    f[pairs.index((6, "csf"))][r < 0.2] = 1
    return f, pairs


@pytest.mark.parametrize("load", [0.2, 0.6, 1.0])
def test_lesions_replace_white_matter_only(load):
    before, pairs = _toy_fractions()
    after = before.copy()
    blobs = add_lesions(after, pairs, load, np.random.default_rng(3), (2.0, 2.0, 3.0))
    assert blobs == lesion_count(load) > 0
    wm, lesion = pairs.index((3, "wm")), pairs.index((4, "lesion"))
    gained = after[lesion] - before[lesion]
    np.testing.assert_allclose(gained, before[wm] - after[wm], atol=1e-6)
    assert gained.sum() > 0
    assert (gained[before[wm] == 0] == 0).all()  # never outside the white matter
    others = [k for k in range(len(pairs)) if k not in (wm, lesion)]
    assert np.array_equal(after[others], before[others])


def test_lesion_load_runs_from_none_to_heavy():
    assert lesion_count(0.0) == lesion_count(0.1) == 0
    volumes = []
    for load in (0.2, 0.5, 1.0):
        fractions, pairs = _toy_fractions()
        add_lesions(fractions, pairs, load, np.random.default_rng(1), (2.0, 2.0, 3.0))
        volumes.append(fractions[pairs.index((4, "lesion"))].sum())
    assert volumes[0] < volumes[1] < volumes[2]
    assert volumes[2] > 10 * volumes[0]


def test_an_infarct_takes_brain_tissue_only():
    before, pairs = _toy_fractions()
    after = before.copy()
    assert add_infarct(after, pairs, np.random.default_rng(0), (2.0, 2.0, 3.0))
    infarct = pairs.index((9, "infarct"))
    assert after[infarct].sum() > 1.0
    np.testing.assert_allclose(after.sum(axis=0), before.sum(axis=0), atol=1e-5)
    for k, (label, _) in enumerate(pairs):
        if label not in (1, 2, 3, 4, 9):
            assert np.array_equal(after[k], before[k]), pairs[k]


def test_the_mapping_page_in_docs_is_current():
    committed = Path(__file__).resolve().parents[1] / "docs" / "label-map-cohort.md"
    assert committed.read_text(encoding="utf-8") == mapping_markdown(), (
        "docs/label-map-cohort.md is stale: run scripts/generate_label_map_docs.py"
    )
    assert "| 17 | Left-Hippocampus | 1 | medial_temporal |" in mapping_markdown()


def test_the_table_covers_the_shared_maps_and_names_every_tissue():
    assert {e.tissue for e in FREESURFER_LABELS.values()} <= set(TISSUES)
    assert all(FREESURFER_LABELS[n].mrbrains18 == 0 for n in range(502, 531))
    assert {FREESURFER_LABELS[n].mrbrains18 for n in (25, 57, 77)} == {4}
    assert FREESURFER_LABELS[85].mrbrains18 == 10


# -- the cohort on disk: layout, sidecar, bit-identical files ----------------------------------


def test_the_cohort_has_the_mrbrains18_layout_and_a_sidecar_naming_files_only(
    label_maps_dir, tmp_path
):
    maps = tmp_path / "maps"
    maps.mkdir()
    files = list_label_maps(label_maps_dir)[:8]
    for f in files:
        (maps / f.name).symlink_to(f)
    out = tmp_path / "cohort"
    subjects = make_label_map_cohort(maps, out, seed=0, held_out=1, **COARSE_GRID)
    found = {(s.group, s.subject_id) for s in discover_cohort(out)}
    assert found == {("training", i) for i in MRBRAINS18_TRAINING_IDS} | {("held-out", "H01")}
    assert [s.subject_id for s in subjects] == [*MRBRAINS18_TRAINING_IDS, "H01"]
    for subject in subjects:
        volumes = load_subject(subject, ("FLAIR", "reg_T1", "reg_IR"), need_label=True)
        assert volumes.image.shape == (3, 8, 40, 40)
    text = (out / SIDECAR_FILE).read_text(encoding="utf-8")
    sidecar = json.loads(text)
    assert [(e["id"], e["group"], e["label_map"]) for e in sidecar["subjects"]] == [
        *[(i, "training", f.name) for i, f in zip(MRBRAINS18_TRAINING_IDS, files, strict=False)],
        ("H01", "held-out", files[7].name),
    ]
    assert sidecar["seed"] == 0
    assert str(label_maps_dir) not in text and str(maps) not in text  # file names only
    assert "affine" not in text and "descrip" not in text  # nothing read from a header
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def _tiny_map(path: Path, seed: int = 0, value_offset: float = 0.0, dtype=np.int16) -> Path:
    """A 24^3 label map of 4 mm voxels in LIA: a head, skull, CSF, cortex, WM, ventricles."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(24) - 11.5,) * 3, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2) / rng.uniform(10.5, 11.5)
    labels = np.zeros((24, 24, 24))
    for limit, value in ((1.0, 511), (0.9, 515), (0.8, 24), (0.72, 3), (0.55, 2), (0.2, 4)):
        labels[r < limit] = value
    labels[(r < 0.55) & (y > 4)] = 8  # a "cerebellum" at the back of the array
    affine = np.array([[-4.0, 0, 0, 48], [0, 0, 4.0, -48], [0, -4.0, 0, 48], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image((labels + value_offset).astype(dtype), affine), str(path))
    return path


def _tiny_folder(folder: Path, count: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _tiny_map(folder / f"map_{i:02d}.nii.gz", seed=i)
    return folder


def test_a_cohort_is_bit_identical_for_a_seed(tmp_path):
    maps = _tiny_folder(tmp_path / "maps", 8)

    def digest(out: Path) -> dict[str, str]:
        return {
            str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file()
        }

    first = tmp_path / "a"
    make_label_map_cohort(maps, first, seed=5, **COARSE_GRID)
    make_label_map_cohort(maps, tmp_path / "b", seed=5, **COARSE_GRID)
    make_label_map_cohort(maps, tmp_path / "c", seed=6, **COARSE_GRID)
    assert digest(first) == digest(tmp_path / "b")
    assert len(digest(first)) == 8 * 4 + 1
    assert digest(first) != digest(tmp_path / "c")
    assert (first / "held-out" / "H01" / "segm.nii.gz").is_file()


# -- bad input: exit code 2, one line naming the file, nothing left behind --------------------


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["make-cohort", *args])
    return code, capsys.readouterr().err


def test_an_empty_folder_is_refused_in_a_real_subprocess(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not a label map\n")
    out = tmp_path / "cohort"
    result = subprocess.run(
        [sys.executable, "-m", "MachineUnlearningLib", "make-cohort", "--label-maps", str(empty),
         "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if str(empty) in line]
    assert len(error) == 1 and "no .nii or .nii.gz" in error[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("four-d", "is not a 3-D volume"),
        ("two-d", "is not a 3-D volume"),
        ("non-integer", "non-integer values"),
        ("unknown", "[999]"),
        ("unreadable", "cannot be read"),
    ],
)
def test_a_bad_label_map_is_refused_naming_it(tmp_path, capsys, problem, expected):
    maps = _tiny_folder(tmp_path / "maps", 7)
    bad = maps / "a_bad.nii.gz"  # sorts first: found before any subject is generated
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    if problem == "four-d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), affine), str(bad))
    elif problem == "two-d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), affine), str(bad))
    elif problem == "non-integer":
        _tiny_map(bad, value_offset=0.5, dtype=np.float32)
    elif problem == "unknown":
        _tiny_map(bad)
        image = nib.load(str(bad))
        data = np.asanyarray(image.dataobj).copy()
        data[0, 0, 0] = 999
        nib.save(nib.Nifti1Image(data, image.affine), str(bad))
    else:
        bad.write_bytes(b"\x1f\x8b definitely not a NIfTI")
    (maps / "map_06.nii.gz").unlink()  # keep exactly 7 maps
    out = tmp_path / "cohort"
    code, err = _run_cli(["--label-maps", str(maps), "--out", str(out)], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if str(bad) in line]
    assert len(lines) == 1 and expected in lines[0], err
    assert not out.exists()


def test_a_bad_map_found_late_leaves_no_half_cohort(tmp_path):
    maps = _tiny_folder(tmp_path / "maps", 7)
    bad = maps / "map_06.nii.gz"
    _tiny_map(bad, value_offset=0.5, dtype=np.float32)  # the last one: 6 subjects come first
    out = tmp_path / "cohort"
    out.mkdir()  # an existing empty folder stays, empty
    with pytest.raises(InvalidInputError, match="non-integer") as error:
        make_label_map_cohort(maps, out, **COARSE_GRID)
    assert str(bad) in error.value.message
    assert list(out.iterdir()) == []


def test_too_few_maps_for_the_held_out_count_is_refused(tmp_path, capsys):
    maps = _tiny_folder(tmp_path / "maps", 8)
    code, err = _run_cli(
        ["--label-maps", str(maps), "--out", str(tmp_path / "c"), "--held-out", "2"], capsys
    )
    assert code == 2
    line = next(line for line in err.splitlines() if str(maps) in line)
    assert "holds 8 label map(s)" in line and "need 9" in line
    code, err = _run_cli(
        ["--label-maps", str(_tiny_folder(tmp_path / "six", 6)), "--out", str(tmp_path / "d")],
        capsys,
    )
    assert code == 2 and "holds 6 label map(s)" in err


def test_an_existing_cohort_is_never_overwritten(tmp_path):
    maps = _tiny_folder(tmp_path / "maps", 7)
    out = tmp_path / "cohort"
    make_label_map_cohort(maps, out, **COARSE_GRID)
    before = (out / SIDECAR_FILE).read_bytes()
    with pytest.raises(InvalidInputError, match="already holds a cohort"):
        make_label_map_cohort(maps, out, seed=1, **COARSE_GRID)
    assert (out / SIDECAR_FILE).read_bytes() == before
