"""Put a run's results into an MRML scene: volumes, predictions, metrics tables, plots, views.

The only engine module that imports ``slicer``; the CLI and the worker never import it. Every
function takes the ``scene`` (``vtkMRMLScene``) it works on, so the same code runs inside
3D Slicer (``slicer.mrmlScene``) and in plain Python with the ``slicer-core`` wheel (a new
``slicer.vtkMRMLScene()``), where ``slicer.app``, ``slicer.modules`` and ``slicer.util.loadVolume``
do not exist. Nothing here needs a registered module logic: NIfTI files are read through
storage nodes and label maps are imported with the static
``vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode``.

Inputs follow docs/contracts.md: ``metrics.json`` (schema_version 1) and the label-map NIfTI
files of ``predictions/<model>/<id>.nii.gz`` (class ids 0..C-1 of the label policy).

Why this file is longer than ~400 lines: it is the one place allowed to import ``slicer``
(the engine's layering rule), so every MRML helper lives here, in three independent sections
(volumes and segmentations, tables and plots, slice views).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicer
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import (
    VTK_CHAR,
    VTK_SHORT,
    VTK_SIGNED_CHAR,
    VTK_UNSIGNED_CHAR,
    VTK_UNSIGNED_SHORT,
    vtkDoubleArray,
    vtkStringArray,
)
from vtkmodules.vtkImagingCore import vtkImageCast

from MachineUnlearningLib.app.roles import normalise_role
from MachineUnlearningLib.evaluation.metrics import ROLES
from MachineUnlearningLib.runtime.errors import InvalidInputError

ROLE_COLOURS: dict[str, tuple[float, float, float]] = {
    "forget": (0.85, 0.2, 0.2),
    "retain": (0.2, 0.45, 0.85),
    "held-out": (0.3, 0.65, 0.3),
    "train": (0.5, 0.5, 0.5),
}
"""Plot colour (RGB 0..1) of each role's Dice curve."""

# Label scalar types imported as they are. Others are cast to short first: 64-bit integers
# (int64 NIfTI) are not compiled into the PyPI VTK's reslice filters and crash them, and
# float label maps would make float segment labelmaps.
_LABEL_SCALAR_TYPES = (VTK_CHAR, VTK_SIGNED_CHAR, VTK_UNSIGNED_CHAR, VTK_SHORT, VTK_UNSIGNED_SHORT)


# ---------------------------------------------------------------------------------------------
# Volumes and segmentations
# ---------------------------------------------------------------------------------------------


def _read_nifti(scene, node, path: Path | str, *, force_right_handed: bool):
    """Read ``path`` into ``node`` (already in ``scene``) through a new storage node.

    ``force_right_handed`` is Slicer's default reading mode: a file whose IJK axes are
    left-handed has its last axis flipped (same physical image, other voxel order). The flip
    is a reslice, which the PyPI VTK build cannot do for 64-bit integer images (it crashes),
    so label maps are read without it. Returns the storage node; on failure removes both
    nodes and raises InvalidInputError.
    """
    path = Path(path)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path.as_posix())
    storage.SetForceRightHandedIJKCoordinateSystem(force_right_handed)
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not path.is_file() or not storage.ReadData(node) or node.GetImageData() is None:
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InvalidInputError(
            f"{path}: could not be read as a NIfTI volume.",
            hint="Check that the file exists and is a .nii or .nii.gz image.",
        )
    return storage


def load_volume(scene, path: Path | str, name: str):
    """Load a NIfTI image as a ``vtkMRMLScalarVolumeNode`` named ``name``.

    Geometry is read from the file's qform/sform (RAS in both NIfTI and Slicer), as Slicer's
    "Add data" does; the storage node stays attached so the user can save the volume.
    """
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    _read_nifti(scene, volume, path, force_right_handed=True)
    volume.CreateDefaultDisplayNodes()
    return volume


def _colour_table(scene, class_names: Sequence[str], class_colours: Sequence[Sequence[int]]):
    """A hidden ``vtkMRMLColorTableNode`` with one named entry per class (colours 0..255)."""
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetHideFromEditors(True)
    table.SetNumberOfColors(len(class_names))
    for index, (class_name, rgb) in enumerate(zip(class_names, class_colours, strict=True)):
        r, g, b = (float(c) / 255.0 for c in rgb)
        table.SetColor(index, str(class_name), r, g, b, 1.0)
    scene.AddNode(table)
    return table


def _label_image(raw_node, path: Path, num_classes: int):
    """The image of ``raw_node`` as a label image: values checked, cast to short if needed."""
    image = raw_node.GetImageData()
    values = vtk_to_numpy(image.GetPointData().GetScalars())
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > num_classes - 1 or (values != values.round()).any():
        raise InvalidInputError(
            f"{path}: label values span {low:g}..{high:g}; expected integer class ids "
            f"0..{num_classes - 1}.",
            hint="Pass the class names of the label policy the prediction was made with.",
        )
    if image.GetScalarType() in _LABEL_SCALAR_TYPES:
        return image
    cast = vtkImageCast()
    cast.SetInputData(image)
    cast.SetOutputScalarTypeToShort()
    cast.Update()
    return cast.GetOutput()


def import_label_map_as_segmentation(
    scene,
    path: Path | str,
    reference_volume,
    class_names: Sequence[str],
    class_colours: Sequence[Sequence[int]],
    name: str,
):
    """Load a label-map NIfTI as a ``vtkMRMLSegmentationNode``, one segment per present class.

    Args:
        scene: the MRML scene.
        path: label map, class ids 0..C-1 (any integer or integral float type); 0 is
            background and gets no segment; absent classes get no segment either.
        reference_volume: volume node whose grid becomes the segmentation's reference
            geometry (the MRI the prediction belongs to), or None to keep the label map's.
        class_names: C names, index = class id; segment names.
        class_colours: C RGB triples, 0..255; segment colours (divided by 255).
        name: name of the new segmentation node.

    Segments are added in class-id order. The temporary label-map, storage, display and
    colour-table nodes are removed again.

    Raises:
        ValueError: ``class_names`` and ``class_colours`` differ in length or have < 2 entries.
        InvalidInputError: unreadable file, or values that are not class ids 0..C-1.
    """
    if len(class_names) != len(class_colours) or len(class_names) < 2:
        raise ValueError(
            f"class_names ({len(class_names)}) and class_colours ({len(class_colours)}) must "
            "have the same length, at least 2 (background + one class)."
        )
    path = Path(path)
    raw = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{name} (reading)")
    temporary = [raw, _read_nifti(scene, raw, path, force_right_handed=False)]
    try:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} (labels)")
        temporary.append(labelmap)
        labelmap.CopyOrientation(raw)
        labelmap.SetAndObserveImageData(_label_image(raw, path, len(class_names)))
        colours = _colour_table(scene, class_names, class_colours)
        display = slicer.vtkMRMLLabelMapVolumeDisplayNode()
        scene.AddNode(display)
        temporary += [colours, display]
        display.SetAndObserveColorNodeID(colours.GetID())
        labelmap.SetAndObserveDisplayNodeID(display.GetID())

        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.CreateDefaultDisplayNodes()
        if reference_volume is not None:
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            scene.RemoveNode(segmentation)
            raise InvalidInputError(
                f"{path}: Slicer could not import the label map into a segmentation.",
                hint="Check that the file is a 3-D label map on the grid of the MRI.",
            )
    finally:
        for node in temporary:
            scene.RemoveNode(node)
    return segmentation


# ---------------------------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------------------------


def _number(value: Any) -> float:
    """``value`` as float; None (JSON null) and non-numbers become NaN."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _strings(name: str, values: Iterable[Any]) -> vtkStringArray:
    array = vtkStringArray()
    array.SetName(name)
    for value in values:
        array.InsertNextValue("" if value is None else str(value))
    return array


def _doubles(name: str, values: Iterable[Any]) -> vtkDoubleArray:
    array = vtkDoubleArray()
    array.SetName(name)
    for value in values:
        array.InsertNextValue(_number(value))
    return array


def _fill_table(scene, table, name: str, columns: Sequence[vtkStringArray | vtkDoubleArray]):
    """Replace the columns of ``table`` (or of a new table named ``name``) with ``columns``.

    Column names become the view's header: a new table node leaves
    ``UseColumnTitleAsColumnHeader`` off, and then qMRMLTableView shows the names as an
    editable first row, so view row k would be table row k - 1 (qMRMLTableModel.cxx,
    ``tableRowOffset``). One ModifiedEvent for the whole fill.
    """
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    modifying = table.StartModify()
    try:
        table.RemoveAllColumns()
        for column in columns:
            table.AddColumn(column)
        table.SetUseColumnTitleAsColumnHeader(True)
    finally:
        table.EndModify(modifying)
    return table


def _ordered_roles(roles: Iterable[str]) -> list[str]:
    """Distinct ``roles`` in the order of ``metrics.ROLES``, unknown ones after, as met."""
    seen = list(dict.fromkeys(roles))
    return [r for r in ROLES if r in seen] + [r for r in seen if r not in ROLES]


def _foreground_classes(metrics: Mapping[str, Any]) -> list[str]:
    """Foreground class names: ``class_names[1:]``, else the Dice keys in order of appearance."""
    names = metrics.get("class_names")
    if names:
        return [str(n) for n in names[1:]]
    keys = (
        k
        for e in metrics.get("evaluations", [])
        for s in e.get("subjects", [])
        for k in s.get("dice") or {}
    )
    return list(dict.fromkeys(keys))


def metrics_to_table(scene, metrics: Mapping[str, Any], name: str = "Unlearning metrics"):
    """One row per subject per evaluation of ``metrics.json``, as a ``vtkMRMLTableNode``.

    Columns: ``subject``, ``role``, ``model`` (strings; "070" stays "070"), ``epoch``,
    ``mean Dice``, ``MAE``, then ``Dice <class name>`` per foreground class (doubles; null
    and missing values are NaN). The table is locked against editing in Slicer's table view.
    """
    classes = _foreground_classes(metrics)
    rows = [(e, s) for e in metrics.get("evaluations", []) for s in e.get("subjects", [])]
    columns = [
        _strings("subject", (s.get("subject_id") for _, s in rows)),
        _strings("role", (s.get("role") for _, s in rows)),
        _strings("model", (e.get("model") for e, _ in rows)),
        _doubles("epoch", (e.get("epoch") for e, _ in rows)),
        _doubles("mean Dice", (s.get("mean_dice") for _, s in rows)),
        _doubles("MAE", (s.get("mae") for _, s in rows)),
    ]
    columns += [
        _doubles(f"Dice {c}", ((s.get("dice") or {}).get(c) for _, s in rows)) for c in classes
    ]
    table = _fill_table(scene, None, name, columns)
    table.SetLocked(True)
    return table


def _split_evaluations(metrics: Mapping[str, Any]) -> tuple[Mapping | None, list[Mapping]]:
    """(the ``original`` evaluation or None, the ``unlearned`` ones sorted by epoch)."""
    evaluations = metrics.get("evaluations", [])
    original = next((e for e in evaluations if e.get("model") == "original"), None)
    unlearned = [e for e in evaluations if e.get("model") == "unlearned"]
    return original, sorted(unlearned, key=lambda e: _number(e.get("epoch")))


def _set_value(evaluation: Mapping | None, role: str, key: str) -> Any:
    return ((evaluation or {}).get("sets") or {}).get(role, {}).get(key)


SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("forget_decrease_pct", "forget decrease (%)"),
    ("retain_preservation_pct", "retain preservation (%)"),
    ("dice_gap", "Dice gap"),
    ("mae_gap", "MAE gap"),
)
"""metrics.json ``summary`` keys and their column names."""


def summary_to_table(scene, metrics: Mapping[str, Any], name: str = "Unlearning summary"):
    """The paper's summary: one row per unlearned epoch, as a ``vtkMRMLTableNode``.

    Columns: ``epoch``; per role of the evaluations' ``sets`` (forget, retain, held-out, ...)
    ``<role> Dice original`` and ``<role> Dice unlearned``; then the ``summary`` numbers
    (see ``SUMMARY_KEYS``). Epochs come from the unlearned evaluations and the ``summary``
    entries together; missing values are NaN.
    """
    original, unlearned = _split_evaluations(metrics)
    summaries = {_number(s.get("epoch")): s for s in metrics.get("summary") or []}
    by_epoch = {_number(e.get("epoch")): e for e in unlearned}
    epochs = sorted(set(by_epoch) | set(summaries))
    roles = _ordered_roles(r for e in [original, *unlearned] if e for r in e.get("sets") or {})
    columns = [_doubles("epoch", epochs)]
    for role in roles:
        columns.append(
            _doubles(f"{role} Dice original", [_set_value(original, role, "dice")] * len(epochs))
        )
        columns.append(
            _doubles(
                f"{role} Dice unlearned",
                (_set_value(by_epoch.get(e), role, "dice") for e in epochs),
            )
        )
    for key, title in SUMMARY_KEYS:
        columns.append(_doubles(title, (summaries.get(e, {}).get(key) for e in epochs)))
    table = _fill_table(scene, None, name, columns)
    table.SetLocked(True)
    return table


def dice_curves_to_plot(scene, metrics: Mapping[str, Any], name: str = "Dice per epoch"):
    """Set Dice against epoch, one curve per role, as a ``vtkMRMLPlotChartNode``.

    Points: the ``original`` evaluation at epoch 0, then each ``unlearned`` evaluation at its
    epoch; values are the ``sets`` Dice of each role (NaN where a role was not scored). The
    chart's series read a locked table named ``<name> table`` with columns ``epoch`` and
    ``<role> Dice``. The series are scatter series drawn with lines, because Slicer's "line"
    type spaces points evenly and ignores the X column, while epochs are uneven (0, 20, 50).
    Show it in Slicer with ``slicer.modules.plots.logic().ShowChartInLayout(chart)``.
    """
    original, unlearned = _split_evaluations(metrics)
    points = ([(0.0, original)] if original else []) + [
        (_number(e.get("epoch")), e) for e in unlearned
    ]
    roles = _ordered_roles(r for _, e in points for r in e.get("sets") or {})
    columns = [_doubles("epoch", (epoch for epoch, _ in points))]
    columns += [
        _doubles(f"{role} Dice", (_set_value(e, role, "dice") for _, e in points)) for role in roles
    ]
    table = _fill_table(scene, None, f"{name} table", columns)
    table.SetLocked(True)

    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle("epoch")
    chart.SetYAxisTitle("Dice")
    for role in roles:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {role}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("epoch")
        series.SetYColumnName(f"{role} Dice")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetColor(*ROLE_COLOURS.get(role, (0.0, 0.0, 0.0)))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def subject_roles_to_table(
    scene,
    roles: Mapping[str, str],
    table=None,
    groups: Mapping[str, str] | None = None,
):
    """Subject roles as an editable ``vtkMRMLTableNode`` with string columns only.

    Args:
        scene: the MRML scene.
        roles: subject id -> role (``roles.ROLES``: "forget", "retain", "held-out").
        table: table to overwrite, or None for a new one named "Subject roles".
        groups: subject id -> cohort group ("training" / "held-out"); None derives it from
            the role (held-out -> "held-out", else "training").

    Columns: ``subject`` (ids stay strings, "070" keeps its zero), ``group``, ``role``.
    """
    groups = groups or {}
    ids = list(roles)
    group_of = [groups.get(s, "held-out" if roles[s] == "held-out" else "training") for s in ids]
    columns = [
        _strings("subject", ids),
        _strings("group", group_of),
        _strings("role", (roles[s] for s in ids)),
    ]
    return _fill_table(scene, table, "Subject roles", columns)


def table_to_subject_roles(table) -> dict[str, str]:
    """Read back the roles of :func:`subject_roles_to_table`, after any edits in Slicer.

    Roles are read case-insensitively (``roles.normalise_role``). Rows with an empty subject
    id or an empty role are left out. Raises InvalidInputError for a missing column, a role
    that is not forget / retain / held-out, or a subject listed twice.
    """
    indices = {}
    for column in ("subject", "role"):
        indices[column] = table.GetColumnIndex(column)
        if indices[column] < 0:
            raise InvalidInputError(
                f"table {table.GetName()!r}: no {column!r} column.",
                hint="Make the table with subject_roles_to_table().",
            )
    roles: dict[str, str] = {}
    for row in range(table.GetNumberOfRows()):
        subject = table.GetCellText(row, indices["subject"]).strip()
        role = table.GetCellText(row, indices["role"]).strip()
        if not subject or not role:
            continue
        if subject in roles:
            raise InvalidInputError(
                f"table {table.GetName()!r}: subject {subject!r} is listed twice.",
                hint="Give each subject one row.",
            )
        roles[subject] = normalise_role(role, subject)
    return roles


# ---------------------------------------------------------------------------------------------
# Slice views
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareViews:
    """What :func:`setup_compare_views` set.

    Attributes:
        slice_node_ids: (view of the original prediction, view of the unlearned one).
        composite_node_ids: their slice composite nodes, in the same order.
        created_node_ids: slice and composite nodes that did not exist and were made.
    """

    slice_node_ids: tuple[str, str]
    composite_node_ids: tuple[str, str]
    created_node_ids: tuple[str, ...]


def _composite_node(scene, slice_node):
    """The slice composite node of ``slice_node`` (same layout name), or None."""
    layout_name = slice_node.GetLayoutName()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if composite.GetLayoutName() == layout_name:
            return composite
    return None


def _slice_nodes(scene, view_node_id: str) -> tuple[Any, Any, list[str]]:
    """(slice node, its composite node, ids of the nodes made) for ``view_node_id``.

    A missing view (plain slicer-core scene, custom layout not shown yet) is made the way a
    Slicer slice view makes it: a ``vtkMRMLSliceLogic`` adds a slice node whose layout name is
    the id without its ``vtkMRMLSliceNode`` prefix, plus its composite node. A missing
    composite node alone is added with the slice node's layout name.
    """
    slice_node = scene.GetNodeByID(view_node_id)
    created: list[str] = []
    if slice_node is None:
        layout_name = view_node_id.removeprefix("vtkMRMLSliceNode")
        if scene.GetDefaultNodeByClass("vtkMRMLSliceNode") is None:
            slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        slice_node = logic.AddSliceNode(layout_name)
        logic.SetMRMLScene(None)
        created.append(slice_node.GetID())
    composite = _composite_node(scene, slice_node)
    if composite is None:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(slice_node.GetLayoutName())
        composite.SetSingletonTag(slice_node.GetLayoutName())
        scene.AddNode(composite)
        created.append(composite.GetID())
    elif created:
        created.append(composite.GetID())
    return slice_node, composite, created


def setup_compare_views(
    scene,
    volume,
    original_segmentation,
    unlearned_segmentation,
    view_node_ids: tuple[str, str] = ("vtkMRMLSliceNodeRed", "vtkMRMLSliceNodeYellow"),
    orientation: str = "Axial",
    link: bool = True,
) -> CompareViews:
    """Side-by-side comparison: the MRI in two slice views, one prediction in each.

    The first view shows ``original_segmentation`` only, the second ``unlearned_segmentation``
    only (each display node is restricted to its view); both show ``volume`` as background,
    in the same ``orientation``, through its centre, and with linked (and hot-linked) slice
    controls when ``link``. Missing slice/composite nodes are created (see
    ``CompareViews.created_node_ids``). Fitting the field of view needs the views
    themselves: in Slicer call ``slicer.util.resetSliceViews()`` afterwards.
    """
    slices, composites, created = [], [], []
    for view_node_id in view_node_ids:
        slice_node, composite, made = _slice_nodes(scene, view_node_id)
        slices.append(slice_node)
        composites.append(composite)
        created += made
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    centre = [(bounds[2 * i] + bounds[2 * i + 1]) / 2.0 for i in range(3)]
    for slice_node, composite in zip(slices, composites, strict=True):
        slice_node.SetOrientation(orientation)
        slice_node.JumpSliceByCentering(*centre)
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLabelVolumeID(None)
        composite.SetLinkedControl(int(link))
        composite.SetHotLinkedControl(int(link))
    for segmentation, slice_node in zip(
        (original_segmentation, unlearned_segmentation), slices, strict=True
    ):
        if segmentation.GetDisplayNode() is None:
            segmentation.CreateDefaultDisplayNodes()
        display = segmentation.GetDisplayNode()
        display.SetDisplayableOnlyInView(slice_node.GetID())
        display.SetVisibility(True)
    return CompareViews(
        slice_node_ids=(slices[0].GetID(), slices[1].GetID()),
        composite_node_ids=(composites[0].GetID(), composites[1].GetID()),
        created_node_ids=tuple(created),
    )
