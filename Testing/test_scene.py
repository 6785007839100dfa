"""Tests of MachineUnlearningLib.app.scene at the MRML level, with the slicer-core wheel.

Each test builds its own ``slicer.vtkMRMLScene()`` and tiny NIfTI files (nibabel, RAS
affines with MRBrainS18's 0.958 x 0.958 x 3 mm voxels), then checks the nodes that
``scene.py`` makes against the arrays that were written.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from MachineUnlearningLib.runtime.errors import InvalidInputError

try:
    import slicer
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonCore import VTK_DOUBLE, VTK_STRING
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    from MachineUnlearningLib.app import scene as mrml

    MISSING = ""
except ImportError as error:  # each test fails with this (a collection error would stop all)
    MISSING = f"the MRML tests need slicer-core (pip install -e '.[test]'): {error}"

SPACING_MM = (0.958, 0.958, 3.0)
SHAPE = (20, 24, 8)  # nibabel (x, y, z) = Slicer (I, J, K)
CLASS_NAMES = ("background", "gray matter", "white matter", "cerebrospinal fluid")
CLASS_COLOURS = ((0, 0, 0), (70, 130, 230), (245, 245, 210), (80, 220, 240))


# ---------------------------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------------------------


def an_affine(handedness: str) -> np.ndarray:
    """RAS affine with the MRBrainS18 voxel size, a small rotation about S and an offset.

    ``left-handed`` flips the x axis (the case for which Slicer reorders the voxels).
    """
    angle = math.radians(10.0)
    rotation = np.array(
        [
            [math.cos(angle), -math.sin(angle), 0.0],
            [math.sin(angle), math.cos(angle), 0.0],
            [0, 0, 1],
        ]
    )
    flip = np.diag([-1.0 if handedness == "left-handed" else 1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ flip @ np.diag(SPACING_MM)
    affine[:3, 3] = (12.5, -30.0, 7.0)
    return affine


def some_labels(shape=SHAPE) -> np.ndarray:
    """Class 1 and class 3 spheres (in voxel units), class 2 absent; uint8 (x, y, z)."""
    x, y, z = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    labels[(x - 6) ** 2 + (y - 8) ** 2 + (z - 4) ** 2 <= 16] = 1
    labels[(x - 14) ** 2 + (y - 16) ** 2 + (z - 3) ** 2 <= 6] = 3
    return labels


def an_mri(shape=SHAPE) -> np.ndarray:
    """float32 (x, y, z) with a distinct value at every voxel, so voxel order is checkable."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


@pytest.fixture(params=["right-handed", "left-handed"])
def a_subject(request, tmp_path):
    """(MRI path, label path, affine, MRI array, label array) written with nibabel."""
    affine = an_affine(request.param)
    mri, labels = an_mri(), some_labels()
    nib.save(nib.Nifti1Image(mri, affine), tmp_path / "t1.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "labels.nii.gz")
    return tmp_path / "t1.nii.gz", tmp_path / "labels.nii.gz", affine, mri, labels


@pytest.fixture(autouse=True)
def _needs_slicer_core():
    if MISSING:
        pytest.fail(MISSING, pytrace=False)


@pytest.fixture
def a_scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def some_metrics() -> dict:
    """A metrics.json dict (schema_version 1): original + two unlearned epochs, 3 subjects."""

    def subject(sid, role, gm, wm, csf, mae):
        dice = {"gray matter": gm, "white matter": wm, "cerebrospinal fluid": csf}
        defined = [v for v in dice.values() if v is not None]
        return {
            "subject_id": sid,
            "role": role,
            "dice": dice,
            "mean_dice": sum(defined) / len(defined),
            "mae": mae,
            "hd95_mm": None,
            "vs": None,
        }

    def evaluation(model, epoch, forget, retain, held_out):
        subjects = [
            subject("070", "forget", *forget),
            subject("1", "retain", *retain),
            subject("H01", "held-out", *held_out),
        ]
        sets = {s["role"]: {"dice": s["mean_dice"], "mae": s["mae"], "n": 1} for s in subjects}
        return {"model": model, "epoch": epoch, "subjects": subjects, "sets": sets}

    return {
        "schema_version": 1,
        "label_policy": "mrbrains3",
        "class_names": list(CLASS_NAMES),
        "class_colours": [list(c) for c in CLASS_COLOURS],
        "mae_definition": "probabilistic",
        "roles": {"070": "forget", "1": "retain", "H01": "held-out"},
        # per role: (GM, WM, CSF Dice, MAE) of forget "070", retain "1", held-out "H01"
        "evaluations": [
            evaluation("original", 0,
                       (0.9, 0.8, 0.7, 0.05), (0.9, 0.9, 0.9, 0.04), (0.8, 0.8, None, 0.06)),
            evaluation("unlearned", 20,
                       (0.5, 0.4, 0.3, 0.2), (0.8, 0.8, 0.8, 0.05), (0.7, 0.7, 0.7, 0.07)),
            evaluation("unlearned", 50,
                       (0.1, 0.1, 0.1, 0.4), (0.7, 0.7, 0.7, 0.06), (0.6, 0.6, 0.6, 0.08)),
        ],
        "summary": [
            {"epoch": 20, "forget_decrease_pct": 50.0, "retain_preservation_pct": 88.9,
             "dice_gap": 0.4, "mae_gap": 0.15},
            {"epoch": 50, "forget_decrease_pct": 87.5, "retain_preservation_pct": 77.8,
             "dice_gap": 0.6, "mae_gap": None},
        ],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def ijk_to_ras(volume) -> np.ndarray:
    matrix = vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def nibabel_index_of_each_voxel(volume, affine: np.ndarray) -> tuple[np.ndarray, ...]:
    """For every voxel of ``volume`` (Slicer array order K, J, I), its nibabel (x, y, z) index.

    Goes through physical RAS coordinates, so it checks that both voxels are the same point.
    """
    dims = volume.GetImageData().GetDimensions()
    k, j, i = np.indices(dims[::-1])
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    xyz = (np.linalg.inv(affine) @ ijk_to_ras(volume) @ ijk)[:3]
    assert np.allclose(xyz, np.round(xyz), atol=1e-4), "voxel centres do not coincide"
    return tuple(np.round(xyz).astype(int).reshape(3, *dims[::-1]))


def binary_count(segmentation, segment_id: str) -> int:
    """Voxels of one segment, from its own binary labelmap representation."""
    image = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, image)
    return int(np.count_nonzero(vtk_to_numpy(image.GetPointData().GetScalars())))


def segments_by_name(segmentation_node) -> dict[str, object]:
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    return {segmentation.GetSegment(i).GetName(): i for i in ids}


def column(table, name: str) -> list:
    array = table.GetTable().GetColumnByName(name)
    assert array is not None, f"no column {name!r}"
    return [array.GetValue(r) for r in range(array.GetNumberOfValues())]


def nodes_of_class(scene, class_name: str) -> list:
    return [
        scene.GetNthNodeByClass(n, class_name)
        for n in range(scene.GetNumberOfNodesByClass(class_name))
    ]


# ---------------------------------------------------------------------------------------------
# Volumes and segmentations
# ---------------------------------------------------------------------------------------------


def test_a_loaded_volume_has_the_spacing_and_voxels_of_the_nifti(a_scene, a_subject):
    mri_path, _, affine, mri, _ = a_subject

    volume = mrml.load_volume(a_scene, mri_path, "T1")

    assert volume.GetName() == "T1"
    assert volume.GetSpacing() == pytest.approx(SPACING_MM)
    assert volume.GetOrigin() == pytest.approx(ijk_to_ras(volume)[:3, 3])
    assert volume.GetImageData().GetDimensions() == SHAPE
    voxels = slicer.util.arrayFromVolume(volume)
    np.testing.assert_array_equal(voxels, mri[nibabel_index_of_each_voxel(volume, affine)])
    assert volume.GetStorageNode().GetFileName() == mri_path.as_posix()
    assert volume.GetDisplayNode() is not None


def test_a_right_handed_nifti_keeps_its_affine_as_ijk_to_ras(a_scene, tmp_path):
    affine = an_affine("right-handed")
    nib.save(nib.Nifti1Image(an_mri(), affine), tmp_path / "t1.nii.gz")

    volume = mrml.load_volume(a_scene, tmp_path / "t1.nii.gz", "T1")

    np.testing.assert_allclose(ijk_to_ras(volume), affine, atol=1e-6)


def test_a_missing_file_raises_and_leaves_no_node(a_scene, tmp_path):
    with pytest.raises(InvalidInputError, match="could not be read"):
        mrml.load_volume(a_scene, tmp_path / "absent.nii.gz", "T1")

    assert a_scene.GetNumberOfNodes() == 0


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.int64, np.float32], ids=lambda t: np.dtype(t).name
)
def test_a_label_map_becomes_one_named_coloured_segment_per_present_class(
    a_scene, a_subject, dtype
):
    mri_path, label_path, affine, _, labels = a_subject
    nib.save(nib.Nifti1Image(labels.astype(dtype), affine, dtype=dtype), label_path)
    volume = mrml.load_volume(a_scene, mri_path, "T1")

    node = mrml.import_label_map_as_segmentation(
        a_scene, label_path, volume, CLASS_NAMES, CLASS_COLOURS, "original 070"
    )

    assert node.GetName() == "original 070"
    segments = segments_by_name(node)
    assert list(segments) == ["gray matter", "cerebrospinal fluid"]  # class 2 is absent
    for class_id in (1, 3):
        segment_id = segments[CLASS_NAMES[class_id]]
        colour = node.GetSegmentation().GetSegment(segment_id).GetColor()
        assert colour == pytest.approx([c / 255 for c in CLASS_COLOURS[class_id]])
        assert binary_count(node, segment_id) == np.count_nonzero(labels == class_id)


def test_an_imported_segmentation_exports_back_onto_the_mri_grid(a_scene, a_subject):
    mri_path, label_path, affine, _, labels = a_subject
    volume = mrml.load_volume(a_scene, mri_path, "T1")
    node = mrml.import_label_map_as_segmentation(
        a_scene, label_path, volume, CLASS_NAMES, CLASS_COLOURS, "original 070"
    )
    exported = a_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.ExportAllSegmentsToLabelmapNode(
        node, exported, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    )

    np.testing.assert_allclose(ijk_to_ras(exported), ijk_to_ras(volume), atol=1e-6)
    # exported values are segment numbers 1..N in segment order: map them back to class ids
    segment_number_to_class = np.array([0, 1, 3])
    exported_classes = segment_number_to_class[slicer.util.arrayFromVolume(exported)]
    np.testing.assert_array_equal(
        exported_classes, labels[nibabel_index_of_each_voxel(volume, affine)]
    )


def test_import_leaves_no_temporary_node(a_scene, a_subject):
    mri_path, label_path, *_ = a_subject
    volume = mrml.load_volume(a_scene, mri_path, "T1")

    mrml.import_label_map_as_segmentation(
        a_scene, label_path, volume, CLASS_NAMES, CLASS_COLOURS, "original 070"
    )

    assert nodes_of_class(a_scene, "vtkMRMLLabelMapVolumeNode") == []
    assert nodes_of_class(a_scene, "vtkMRMLColorTableNode") == []
    assert [n.GetName() for n in nodes_of_class(a_scene, "vtkMRMLScalarVolumeNode")] == ["T1"]
    assert len(nodes_of_class(a_scene, "vtkMRMLSegmentationNode")) == 1


def test_a_label_beyond_the_classes_raises_and_leaves_no_node(a_scene, a_subject):
    mri_path, label_path, affine, _, labels = a_subject
    labels = labels.copy()
    labels[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(labels, affine), label_path)
    volume = mrml.load_volume(a_scene, mri_path, "T1")
    before = a_scene.GetNumberOfNodes()

    with pytest.raises(InvalidInputError, match=r"0\.\.7.*class ids 0\.\.3"):
        mrml.import_label_map_as_segmentation(
            a_scene, label_path, volume, CLASS_NAMES, CLASS_COLOURS, "bad"
        )

    assert a_scene.GetNumberOfNodes() == before


def test_mismatched_names_and_colours_raise_value_error(a_scene, a_subject):
    _, label_path, *_ = a_subject
    with pytest.raises(ValueError, match="same length"):
        mrml.import_label_map_as_segmentation(
            a_scene, label_path, None, CLASS_NAMES, CLASS_COLOURS[:2], "bad"
        )


# ---------------------------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------------------------


def test_the_metrics_table_has_one_row_per_subject_and_evaluation(a_scene, some_metrics):
    table = mrml.metrics_to_table(a_scene, some_metrics, "metrics")

    assert table.GetName() == "metrics"
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names == [
        "subject", "role", "model", "epoch", "mean Dice", "MAE",
        "Dice gray matter", "Dice white matter", "Dice cerebrospinal fluid",
    ]  # fmt: skip
    assert table.GetNumberOfRows() == 9
    assert column(table, "subject") == ["070", "1", "H01"] * 3
    assert column(table, "role") == ["forget", "retain", "held-out"] * 3
    assert column(table, "model") == ["original"] * 3 + ["unlearned"] * 6
    assert column(table, "epoch") == [0.0] * 3 + [20.0] * 3 + [50.0] * 3
    assert column(table, "Dice gray matter")[:3] == [0.9, 0.9, 0.8]
    assert column(table, "MAE")[3:6] == [0.2, 0.05, 0.07]
    assert column(table, "mean Dice")[2] == pytest.approx(0.8)
    assert math.isnan(column(table, "Dice cerebrospinal fluid")[2])  # null -> NaN
    assert table.GetColumnType("subject") == VTK_STRING
    assert all(table.GetColumnType(n) == VTK_DOUBLE for n in names[3:])


def test_the_summary_table_has_one_row_per_unlearned_epoch(a_scene, some_metrics):
    table = mrml.summary_to_table(a_scene, some_metrics, "summary")

    assert table.GetNumberOfRows() == 2
    assert column(table, "epoch") == [20.0, 50.0]
    assert column(table, "forget Dice original") == pytest.approx([0.8, 0.8])
    assert column(table, "forget Dice unlearned") == pytest.approx([0.4, 0.1])
    assert column(table, "held-out Dice unlearned") == pytest.approx([0.7, 0.6])
    assert column(table, "forget decrease (%)") == [50.0, 87.5]
    assert column(table, "Dice gap") == [0.4, 0.6]
    assert math.isnan(column(table, "MAE gap")[1])


def test_the_dice_plot_has_one_curve_per_role_over_the_evaluated_epochs(a_scene, some_metrics):
    chart = mrml.dice_curves_to_plot(a_scene, some_metrics, "Dice")

    assert chart.IsA("vtkMRMLPlotChartNode")
    series = [chart.GetNthPlotSeriesNode(n) for n in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == [
        "forget Dice",
        "retain Dice",
        "held-out Dice",
    ]
    for s in series:
        assert s.GetXColumnName() == "epoch"
        assert s.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter
        assert s.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleSolid
        assert s.GetTableNode().GetNumberOfRows() == 3
    table = series[0].GetTableNode()
    assert column(table, "epoch") == [0.0, 20.0, 50.0]
    assert column(table, "forget Dice") == pytest.approx([0.8, 0.4, 0.1])
    assert column(table, "retain Dice") == pytest.approx([0.9, 0.8, 0.7])


def test_subject_roles_round_trip_with_ids_kept_as_strings(a_scene):
    roles = {"070": "forget", "1": "retain", "4": "retain", "H01": "held-out"}

    table = mrml.subject_roles_to_table(a_scene, roles)

    assert table.GetColumnType("subject") == VTK_STRING
    assert column(table, "subject") == ["070", "1", "4", "H01"]
    assert column(table, "group") == ["training", "training", "training", "held-out"]
    assert mrml.table_to_subject_roles(table) == roles


def test_subject_roles_overwrite_the_given_table(a_scene):
    table = mrml.subject_roles_to_table(a_scene, {"070": "forget", "1": "retain"})

    same = mrml.subject_roles_to_table(
        a_scene, {"5": "forget"}, table=table, groups={"5": "held-out"}
    )

    assert same is table
    assert table.GetNumberOfRows() == 1
    assert column(table, "group") == ["held-out"]
    assert mrml.table_to_subject_roles(table) == {"5": "forget"}


def test_edited_roles_are_validated_and_empty_rows_skipped(a_scene):
    table = mrml.subject_roles_to_table(a_scene, {"070": "forget", "1": "retain", "4": "retain"})
    role_column = table.GetColumnIndex("role")

    table.SetCellText(2, role_column, "")
    assert mrml.table_to_subject_roles(table) == {"070": "forget", "1": "retain"}

    table.SetCellText(1, role_column, "retian")
    with pytest.raises(InvalidInputError, match="'1'.*Did you mean 'retain'"):
        mrml.table_to_subject_roles(table)

    table.SetCellText(1, role_column, "retain")
    table.SetCellText(1, table.GetColumnIndex("subject"), "070")
    with pytest.raises(InvalidInputError, match="'070' is listed twice"):
        mrml.table_to_subject_roles(table)


def test_a_table_without_a_role_column_raises(a_scene):
    table = a_scene.AddNewNodeByClass("vtkMRMLTableNode", "other")
    table.AddColumn(mrml._strings("subject", ["070"]))

    with pytest.raises(InvalidInputError, match="no 'role' column"):
        mrml.table_to_subject_roles(table)


# ---------------------------------------------------------------------------------------------
# Slice views
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_predictions(a_scene, a_subject):
    """(MRI volume, original segmentation, unlearned segmentation) in ``a_scene``."""
    mri_path, label_path, *_ = a_subject
    volume = mrml.load_volume(a_scene, mri_path, "T1")
    args = (label_path, volume, CLASS_NAMES, CLASS_COLOURS)
    original = mrml.import_label_map_as_segmentation(a_scene, *args, "original")
    unlearned = mrml.import_label_map_as_segmentation(a_scene, *args, "unlearned")
    return volume, original, unlearned


def test_compare_views_show_each_prediction_only_in_its_own_view(a_scene, two_predictions):
    volume, original, unlearned = two_predictions

    views = mrml.setup_compare_views(a_scene, volume, original, unlearned)

    red, yellow = views.slice_node_ids
    assert (red, yellow) == ("vtkMRMLSliceNodeRed", "vtkMRMLSliceNodeYellow")
    assert original.GetDisplayNode().IsDisplayableInView(red)
    assert not original.GetDisplayNode().IsDisplayableInView(yellow)
    assert unlearned.GetDisplayNode().IsDisplayableInView(yellow)
    assert not unlearned.GetDisplayNode().IsDisplayableInView(red)
    for slice_id, composite_id in zip(views.slice_node_ids, views.composite_node_ids, strict=True):
        composite = a_scene.GetNodeByID(composite_id)
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetLinkedControl() and composite.GetHotLinkedControl()
        assert a_scene.GetNodeByID(slice_id).GetOrientation() == "Axial"
        assert (
            slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(a_scene.GetNodeByID(slice_id))
            is composite
        )


def test_compare_views_make_missing_views_and_reuse_existing_ones(a_scene, two_predictions):
    volume, original, unlearned = two_predictions

    first = mrml.setup_compare_views(a_scene, volume, original, unlearned)
    again = mrml.setup_compare_views(a_scene, volume, original, unlearned, link=False)

    assert set(first.created_node_ids) == {*first.slice_node_ids, *first.composite_node_ids}
    assert again.created_node_ids == ()
    assert again.slice_node_ids == first.slice_node_ids
    assert not a_scene.GetNodeByID(again.composite_node_ids[0]).GetLinkedControl()


def test_compare_views_add_a_composite_node_a_slice_node_lacks(a_scene, two_predictions):
    volume, original, unlearned = two_predictions
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(a_scene)
    for tag in ("Left", "Right"):
        node = slicer.vtkMRMLSliceNode()
        node.SetLayoutName(tag)
        node.SetSingletonTag(tag)
        a_scene.AddNode(node)

    views = mrml.setup_compare_views(
        a_scene, volume, original, unlearned, ("vtkMRMLSliceNodeLeft", "vtkMRMLSliceNodeRight")
    )

    assert views.created_node_ids == views.composite_node_ids
    for slice_id, composite_id in zip(views.slice_node_ids, views.composite_node_ids, strict=True):
        slice_node = a_scene.GetNodeByID(slice_id)
        composite = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(slice_node)
        assert composite is a_scene.GetNodeByID(composite_id)
        assert composite.GetBackgroundVolumeID() == volume.GetID()
    assert original.GetDisplayNode().IsDisplayableInView("vtkMRMLSliceNodeLeft")
    assert not original.GetDisplayNode().IsDisplayableInView("vtkMRMLSliceNodeRight")


def test_every_table_the_module_makes_shows_its_column_names_as_the_header(a_scene):
    # otherwise qMRMLTableView shows the names as an editable first row and view row k is
    # table row k - 1 (qMRMLTableModel.cxx, tableRowOffset)
    metrics = {
        "class_names": ["background", "gray matter"],
        "roles": {"070": "forget"},
        "evaluations": [
            {"model": "original", "epoch": 0, "sets": {"forget": {"dice": 0.9}},
             "subjects": [{"subject_id": "070", "role": "forget", "mean_dice": 0.9}]},
        ],
        "summary": [{"epoch": 0}],
    }  # fmt: skip
    tables = [
        mrml.subject_roles_to_table(a_scene, {"070": "forget"}),
        mrml.metrics_to_table(a_scene, metrics),
        mrml.summary_to_table(a_scene, metrics),
        mrml.dice_curves_to_plot(a_scene, metrics).GetNthPlotSeriesNode(0).GetTableNode(),
    ]
    assert [t.GetUseColumnTitleAsColumnHeader() for t in tables] == [True] * 4


def test_roles_are_read_case_insensitively_and_train_is_no_role(a_scene):
    table = mrml.subject_roles_to_table(a_scene, {"070": "forget", "1": "retain", "4": "retain"})
    role_column = table.GetColumnIndex("role")
    table.SetCellText(0, role_column, " Forget ")
    table.SetCellText(1, role_column, "Held out")
    assert mrml.table_to_subject_roles(table) == {"070": "forget", "1": "held-out", "4": "retain"}
    table.SetCellText(2, role_column, "train")
    with pytest.raises(InvalidInputError, match="'4'.*'train'") as raised:
        mrml.table_to_subject_roles(table)
    assert raised.value.hint == "Valid values: forget, retain, held-out."
