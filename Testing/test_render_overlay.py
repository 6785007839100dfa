"""Offscreen rendering of prediction overlays in real Slicer slice views (trame-slicer).

Layer 4 of the testing plan: a trame-slicer ``SlicerApp`` with a ``DirectViewFactory`` that
renders offscreen builds real slice views (slice logic + Slicer's 2-D displayable managers);
the data are put in its scene with ``MachineUnlearningLib.app.scene`` and each rendered view is
read back with ``vtkWindowToImageFilter``. Pixels are checked against the class colours: a
labelled pixel shows the class colour blended at the segmentation's default 2-D fill opacity
(0.5) over the grey MRI, an unlabelled one shows the MRI unchanged, air stays black.

Rendering needs an OpenGL context without a display: VTK's EGL window on Mesa
(``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, set here unless already set; Debian
packages libegl1 + libegl-mesa0 + libgl1-mesa-dri). trame-slicer 2.0.0 also needs the
``slicer-layer-dm`` wheel. These tests fail, not skip, when either is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from MachineUnlearningLib.data.labels import get_label_policy

try:
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    from MachineUnlearningLib.app import scene as mrml

    MISSING = ""
except ImportError as error:  # each test fails with this (a collection error would stop all)
    MISSING = (
        "offscreen rendering tests need slicer-core, trame-slicer 2.0.0 and slicer-layer-dm "
        f"(pip install -e '.[test]'): {error}"
    )

POLICY = get_label_policy("mrbrains3")  # background, gray matter, white matter, CSF
SPACING_MM = (0.958, 0.958, 3.0)
SHAPE = (40, 48, 6)  # nibabel (x, y, z)
VIEW_SIZE = (200, 240)  # pixels (width, height): about 5 pixels per voxel
TISSUE_INTENSITY = {0: 0.0, 1: 60.0, 2: 90.0, 3: 30.0}  # per class; "skull" ring gets 100
FILL_OPACITY = 0.5  # vtkMRMLSegmentationDisplayNode default Opacity2DFill


# ---------------------------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------------------------


def an_affine() -> np.ndarray:
    """Left-handed RAS affine (x flipped, as many scanners write it) with an offset."""
    affine = np.diag([-SPACING_MM[0], SPACING_MM[1], SPACING_MM[2], 1.0])
    affine[:3, 3] = (20.0, -25.0, 10.0)
    return affine


def a_head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MRI, labels, unlearned labels), (x, y, z), constant along z.

    Concentric in-plane: WM core, GM ring, CSF ring, an unlabelled bright "skull" ring, air.
    The "unlearned" prediction calls the WM core CSF (as a forgotten subject might look).
    """
    x, y = np.indices(SHAPE[:2])
    r = np.hypot((x - 19.5) / 17.0, (y - 23.5) / 21.0)
    labels2d = np.select([r < 0.45, r < 0.7, r < 0.85], [2, 1, 3], 0).astype(np.uint8)
    mri2d = np.vectorize(TISSUE_INTENSITY.get)(labels2d).astype(np.float32)
    mri2d[(r >= 0.85) & (r < 1.0)] = 100.0
    unlearned2d = np.where(labels2d == 2, 3, labels2d).astype(np.uint8)
    return tuple(np.repeat(a[:, :, None], SHAPE[2], axis=2) for a in (mri2d, labels2d, unlearned2d))


@pytest.fixture(autouse=True)
def _needs_trame_slicer():
    if MISSING:
        pytest.fail(MISSING, pytrace=False)


GL_WINDOW = os.environ.get("VTK_DEFAULT_OPENGL_WINDOW") or "vtkEGLRenderWindow"
GL_PROBE = """
import vtkmodules.vtkRenderingOpenGL2
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkRenderWindow
window = vtkRenderWindow()
window.SetOffScreenRendering(1)
window.AddRenderer(vtkRenderer())
window.SetSize(8, 8)
window.Render()
assert window.SupportsOpenGL(), "no OpenGL support"
"""


@pytest.fixture(scope="module")
def offscreen_opengl() -> str:
    """The VTK OpenGL window class to use, after checking in a child process that it renders.

    A window class that cannot get a context crashes VTK (segfault) rather than raising, so
    the check runs in a child and a failure becomes an explicit test failure.
    """
    env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": GL_WINDOW}
    probe = subprocess.run(
        [sys.executable, "-c", GL_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        pytest.fail(
            f"VTK cannot render offscreen with VTK_DEFAULT_OPENGL_WINDOW={GL_WINDOW} (exit "
            f"{probe.returncode}): install the Debian packages libegl1 libegl-mesa0 "
            "libgl1-mesa-dri (EGL on Mesa), or libosmesa6 and set VTK_DEFAULT_OPENGL_WINDOW="
            f"vtkOSOpenGLRenderWindow.\n{probe.stderr[-2000:]}",
            pytrace=False,
        )
    return GL_WINDOW


@pytest.fixture
def a_slicer_app(offscreen_opengl, monkeypatch):
    """A new trame-slicer app whose views render offscreen.

    VTK reads ``VTK_DEFAULT_OPENGL_WINDOW`` when it creates a render window, so setting it
    before the app makes its views is enough.
    """
    monkeypatch.setenv("VTK_DEFAULT_OPENGL_WINDOW", offscreen_opengl)
    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    yield app
    # No more renders: tearing the slice pipelines down would log harmless VTK errors.
    for view in app.view_manager.get_views():
        view.set_render_blocked(True)


@pytest.fixture
def a_case(tmp_path):
    """Paths of the MRI and both predictions, plus the arrays and affine written."""
    affine = an_affine()
    mri, labels, unlearned = a_head()
    for name, array in (("t1", mri), ("original", labels), ("unlearned", unlearned)):
        nib.save(nib.Nifti1Image(array, affine), tmp_path / f"{name}.nii.gz")
    return tmp_path, affine, mri, labels, unlearned


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def a_slice_view(app, tag: str):
    view = app.view_manager.create_view(ViewLayoutDefinition.slice_view("Axial", label=tag))
    view.render_window().SetSize(*VIEW_SIZE)
    return view


def show_mri(app, case_dir, view_tags=("Red",)):
    """Load the MRI, show it in new views (window 0..100), fit them; return (volume, views)."""
    volume = mrml.load_volume(app.scene, case_dir / "t1.nii.gz", "T1")
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 100.0)
    display.SetInterpolate(False)  # nearest voxel: exact grey levels up to the boundaries
    views = [a_slice_view(app, tag) for tag in view_tags]
    for view in views:
        view.set_background_volume_id(volume.GetID())
        view.fit_view_to_content()
    return volume, views


def import_prediction(app, case_dir, name: str, volume):
    return mrml.import_label_map_as_segmentation(
        app.scene,
        case_dir / f"{name}.nii.gz",
        volume,
        POLICY.class_names,
        POLICY.class_colours,
        name,
    )


def rendered(view) -> np.ndarray:
    """RGB pixels of ``view``, shape (H, W, 3), row 0 at the bottom (VTK's XY order)."""
    view.render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    width, height, _ = grab.GetOutput().GetDimensions()
    pixels = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
    return pixels.reshape(height, width, 3).astype(float)


def voxel_under_each_pixel(view, affine: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(H, W, 3) nibabel voxel index under each pixel centre, nudged by ``margin`` voxels.

    Uses the slice node's XY-to-RAS matrix, so it is independent of how the view was fitted.
    """
    xy_to_ras = view.get_view_node().GetXYToRAS()
    m = np.array([[xy_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    height, width = VIEW_SIZE[1], VIEW_SIZE[0]
    y, x = np.mgrid[0:height, 0:width] + 0.5
    xy = np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
    ijk = (np.linalg.inv(affine) @ m @ xy)[:3].T.reshape(height, width, 3)
    return ijk + margin


def label_under_pixels(view, affine, labels: np.ndarray, margin=0.8) -> np.ndarray:
    """(H, W) label under each pixel, -1 near a label boundary or off the volume.

    A pixel counts only if the label is the same at the pixel and ``margin`` voxels away in
    each in-plane direction, so segment outlines (drawn opaque) are left out.
    """
    labels = np.asarray(labels, dtype=int)
    found = None
    for di, dj in ((0, 0), (margin, 0), (-margin, 0), (0, margin), (0, -margin)):
        ijk = np.round(voxel_under_each_pixel(view, affine) + (di, dj, 0)).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(labels.shape)), axis=-1)
        clipped = np.clip(ijk, 0, np.array(labels.shape) - 1)
        value = np.where(inside, labels[clipped[..., 0], clipped[..., 1], clipped[..., 2]], -2)
        found = value if found is None else np.where(found == value, found, -1)
    return found


def expected_blend(under: np.ndarray, class_id: int) -> np.ndarray:
    colour = np.array(POLICY.class_colours[class_id], float)
    return (1.0 - FILL_OPACITY) * under + FILL_OPACITY * colour


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_a_prediction_overlay_tints_each_class_with_its_colour(a_slicer_app, a_case):
    case_dir, affine, mri, labels, _ = a_case
    volume, (view,) = show_mri(a_slicer_app, case_dir)
    before = rendered(view)

    import_prediction(a_slicer_app, case_dir, "original", volume)
    after = rendered(view)

    label = label_under_pixels(view, affine, labels)
    skull = label_under_pixels(view, affine, (mri == 100).astype(int)) == 1
    air = label_under_pixels(view, affine, (mri == 0).astype(int)) == 1
    assert air.sum() > 1000 and skull.sum() > 500
    # without overlay the MRI is grey: R = G = B, 255 * intensity / 100
    for class_id in (1, 2, 3):
        pixels = before[label == class_id]
        assert len(pixels) > 200, f"class {class_id} barely visible"
        np.testing.assert_allclose(pixels, 2.55 * TISSUE_INTENSITY[class_id], atol=3)
    # with it, each class is its colour blended over that grey
    for class_id in (1, 2, 3):
        got = after[label == class_id].mean(axis=0)
        want = expected_blend(before[label == class_id].mean(axis=0), class_id)
        np.testing.assert_allclose(got, want, atol=12, err_msg=POLICY.class_names[class_id])
    gm, csf = after[label == 1].mean(axis=0), after[label == 3].mean(axis=0)
    assert gm[2] - gm[0] > 60  # gray matter (70, 130, 230): blue dominates red
    assert min(csf[1], csf[2]) - csf[0] > 50  # CSF (80, 220, 240): cyan
    # the unlabelled skull is unchanged and the air stays dark
    np.testing.assert_allclose(after[skull], before[skull], atol=2)
    assert before[air].max() < 10 and after[air].max() < 10
    changed = np.abs(after - before).max(axis=-1)
    assert changed[(label == 1) | (label == 3)].min() > 20  # every such pixel, not just on average


def test_compare_views_render_each_prediction_only_in_its_own_view(a_slicer_app, a_case):
    case_dir, affine, _, labels, unlearned_labels = a_case
    volume, (red, yellow) = show_mri(a_slicer_app, case_dir, ("Red", "Yellow"))
    original = import_prediction(a_slicer_app, case_dir, "original", volume)
    unlearned = import_prediction(a_slicer_app, case_dir, "unlearned", volume)

    mrml.setup_compare_views(a_slicer_app.scene, volume, original, unlearned)
    for view in (red, yellow):
        view.fit_view_to_content()
    red_pixels, yellow_pixels = rendered(red), rendered(yellow)

    core = label_under_pixels(red, affine, labels) == 2  # WM core in the original
    assert core.sum() > 200
    assert label_under_pixels(yellow, affine, unlearned_labels)[core].tolist() == [3] * core.sum()
    wm_grey = 2.55 * TISSUE_INTENSITY[2]
    np.testing.assert_allclose(
        red_pixels[core].mean(axis=0), expected_blend(wm_grey, 2), atol=12
    )  # white matter colour in the original's view
    np.testing.assert_allclose(
        yellow_pixels[core].mean(axis=0), expected_blend(wm_grey, 3), atol=12
    )  # CSF colour in the unlearned model's view
