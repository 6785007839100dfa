"""Render docs/screenshot.png: the original vs the unlearned model's prediction, side by side.

The image is made the way the Slicer module shows a result: ``MachineUnlearningLib.app.scene``
loads the MRI and both label maps into a scene and sets up the two linked compare views;
trame-slicer renders those views offscreen (real Slicer slice views, EGL on Mesa).

Usage (repository root, the test extra installed)::

    python scripts/render_screenshot.py                       # synthetic example
    python scripts/render_screenshot.py --mri COHORT/training/070/pre/reg_T1.nii.gz \\
        --original RUN/predictions/original/070.nii.gz \\
        --unlearned RUN/predictions/unlearned/070.nii.gz --out docs/screenshot.png

Without ``--mri`` the example is synthetic: subject "070" of the demo cohort generator
(``MachineUnlearningLib.data.synthetic``), its reference labels under the ``mrbrains3`` policy
standing in for the original model's prediction, and an illustrative "unlearned" prediction
made by corrupting those labels in smooth random patches (seeded, so the image is
reproducible). No model is run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIEW_TAGS = ("Red", "Yellow")
TITLES = ("original model", "unlearned model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mri", type=Path, help="MRI NIfTI (default: synthetic example)")
    parser.add_argument("--original", type=Path, help="original model's label map NIfTI")
    parser.add_argument("--unlearned", type=Path, help="unlearned model's label map NIfTI")
    parser.add_argument("--policy", default="mrbrains3", help="label policy of the label maps")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--size", type=int, default=380, help="pixels per view (square)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic example")
    args = parser.parse_args(argv)
    given = [p is not None for p in (args.mri, args.original, args.unlearned)]
    if any(given) and not all(given):
        parser.error("give --mri, --original and --unlearned together (or none of them)")
    return args


def synthetic_case(folder: Path, policy, seed: int) -> tuple[Path, Path, Path]:
    """Write (MRI, original prediction, unlearned prediction) of the synthetic example."""
    from scipy import ndimage

    from MachineUnlearningLib.data.synthetic import synthesize_subject

    subject = synthesize_subject("070", seed)
    original = policy.apply(subject.label).clip(0).astype(np.uint8)
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(original.shape), sigma=(6, 6, 1.5))
    field /= field.std()
    wrong = np.roll(np.arange(policy.num_classes), -1)  # class c -> c + 1, last -> 1
    wrong[-1] = 1
    unlearned = np.where((field > 0.35) & (original > 0), wrong[original], original)
    unlearned[(field < -1.2) & (original > 0)] = 0
    paths = (folder / "t1.nii.gz", folder / "original.nii.gz", folder / "unlearned.nii.gz")
    arrays = (subject.image["reg_T1"], original, unlearned.astype(np.uint8))
    for path, array in zip(paths, arrays, strict=True):
        nib.save(nib.Nifti1Image(array, subject.affine), path)
    return paths


def render_views(mri: Path, original: Path, unlearned: Path, policy, size: int) -> list:
    """RGB arrays (size, size, 3), top row first, of the two compare views."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    from MachineUnlearningLib.app import scene as mrml

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    views = []
    for tag in VIEW_TAGS:
        view = app.view_manager.create_view(ViewLayoutDefinition.slice_view("Axial", label=tag))
        view.render_window().SetSize(size, size)
        views.append(view)
    volume = mrml.load_volume(app.scene, mri, "MRI")
    names, colours = policy.class_names, policy.class_colours
    segmentations = [
        mrml.import_label_map_as_segmentation(app.scene, p, volume, names, colours, t)
        for p, t in ((original, TITLES[0]), (unlearned, TITLES[1]))
    ]
    mrml.setup_compare_views(app.scene, volume, *segmentations)
    images = []
    for view in views:
        view.fit_view_to_content()
        view.render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(view.render_window())
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        width, height, _ = grab.GetOutput().GetDimensions()
        pixels = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
        images.append(pixels.reshape(height, width, 3)[::-1].copy())
    for view in views:
        view.set_render_blocked(True)
    return images


def compose(images: list, policy, size: int):
    """Both views side by side under their titles, with a colour legend below."""
    from PIL import Image, ImageDraw, ImageFont

    gap, title_h, legend_h = 6, 28, 30
    width = 2 * size + gap
    canvas = Image.new("RGB", (width, title_h + size + legend_h), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    for index, (image, title) in enumerate(zip(images, TITLES, strict=True)):
        left = index * (size + gap)
        canvas.paste(Image.fromarray(image), (left, title_h))
        draw.text((left + size / 2, title_h / 2), title, fill="white", font=font, anchor="mm")
    x, y = 10, title_h + size + legend_h / 2
    for name, colour in zip(policy.class_names[1:], policy.class_colours[1:], strict=True):
        draw.rectangle((x, y - 7, x + 14, y + 7), fill=tuple(colour))
        draw.text((x + 20, y), name, fill="white", font=font, anchor="lm")
        x += 30 + draw.textlength(name, font=font)
    return canvas


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from MachineUnlearningLib.data.labels import get_label_policy

    policy = get_label_policy(args.policy)
    with tempfile.TemporaryDirectory() as folder:
        if args.mri is None:
            paths = synthetic_case(Path(folder), policy, args.seed)
        else:
            paths = (args.mri, args.original, args.unlearned)
        images = render_views(*paths, policy, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compose(images, policy, args.size).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
