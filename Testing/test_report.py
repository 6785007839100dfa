"""Tests of the run report: files, self-contained HTML, tables, figures and overlay colours."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.outputs.report import (
    PAPER_ROW_LABEL,
    OverlayCase,
    axial_display,
    choose_axial_slices,
    fmt_dice,
    fmt_pct,
    load_canonical,
    markdown_to_html,
    overlay_rgb,
    write_report,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

POLICY = get_label_policy("mrbrains3")
SHAPE = (40, 40, 8)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INJECTED = '<script>alert("x")</script>'


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(array, np.diag([1.0, 1.0, 3.0, 1.0]) if affine is None else affine),
        str(path),
    )
    return path


def _raw_labels() -> np.ndarray:
    """Nested ellipses: raw 1 (GM), 3 (WM), 5 (CSF) on slices 1..6, a few raw 9 (ignored)."""
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    r = ((x - 20) / 16.0) ** 2 + ((y - 20) / 12.0) ** 2
    plane = np.select([r < 0.1, r < 0.5, r < 1.0], [5, 3, 1], 0)
    raw = np.zeros(SHAPE, dtype=np.uint8)
    raw[:, :, 1:7] = plane[..., None]
    raw[20, 20, 3] = 9
    return raw


def _subject_files(root: Path, subject_id: str, forget: bool) -> OverlayCase:
    raw = _raw_labels()
    rng = np.random.default_rng(0)
    mri = (raw * 20.0 + rng.normal(100.0, 5.0, SHAPE)).astype(np.float32)
    original = np.maximum(POLICY.apply(raw), 0).astype(np.uint8)
    unlearned = np.where(original > 0, original % 3 + 1, 0).astype(np.uint8) if forget else original
    folder = root / subject_id
    return OverlayCase(
        subject_id=subject_id,
        role="forget" if forget else "retain",
        image_path=_save(folder / "pre" / "reg_T1.nii.gz", mri),
        truth_path=_save(folder / "segm.nii.gz", raw),
        original_prediction=_save(root / "pred" / "original" / f"{subject_id}.nii.gz", original),
        unlearned_prediction=_save(root / "pred" / "unlearned" / f"{subject_id}.nii.gz", unlearned),
    )


def _subject(sid, role, dice, mae):
    names = POLICY.class_names[1:]
    per_class = {n: d for n, d in zip(names, dice, strict=True)}
    defined = [d for d in dice if d is not None]
    return {
        "subject_id": sid,
        "role": role,
        "dice": per_class,
        "mean_dice": sum(defined) / len(defined) if defined else None,
        "mae": mae,
        "hd95_mm": None,
        "vs": None,
    }


def _evaluation(model, epoch, forget, retain, held_out):
    subjects = [
        _subject("070", "forget", *forget),
        _subject("1", "retain", *retain),
        _subject("H01", "held-out", *held_out),
    ]
    sets = {s["role"]: {"dice": s["mean_dice"], "mae": s["mae"], "n": 1} for s in subjects}
    return {"model": model, "epoch": epoch, "subjects": subjects, "sets": sets}


def _a_metrics_dict() -> dict:
    return {
        "schema_version": 1,
        "label_policy": "mrbrains3",
        "class_names": list(POLICY.class_names),
        "class_colours": [list(c) for c in POLICY.class_colours],
        "mae_definition": "probabilistic",
        "roles": {"070": "forget", "1": "retain", "H01": "held-out"},
        "evaluations": [
            _evaluation(
                "original",
                0,
                ([0.92, 0.93, 0.91], 0.05),
                ([0.90, 0.91, 0.89], 0.04),
                ([0.88, 0.87, None], 0.06),
            ),
            _evaluation(
                "unlearned",
                20,
                ([0.40, 0.41, 0.39], 0.30),
                ([0.85, 0.86, 0.84], 0.07),
                ([0.80, 0.81, None], 0.08),
            ),
            _evaluation(
                "unlearned",
                50,
                ([0.06, 0.07, 0.05], 0.45),
                ([0.76, 0.77, 0.75], 0.09),
                ([0.70, 0.71, None], 0.10),
            ),
        ],
        "summary": [
            {
                "epoch": 20,
                "forget_decrease_pct": 56.5217,
                "retain_preservation_pct": 94.4444,
                "dice_gap": 0.45,
                "mae_gap": None,
            },
            {
                "epoch": 50,
                "forget_decrease_pct": 93.4783,
                "retain_preservation_pct": 84.4444,
                "dice_gap": 0.7,
                "mae_gap": 0.36,
            },
        ],
    }


@pytest.fixture(scope="module")
def a_written_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cases = [
        _subject_files(root / "cohort", "070", forget=True),
        _subject_files(root / "cohort", "1", forget=False),
    ]
    settings = {
        "strategy": "noisy-label",
        "fix_decoder": True,
        "epochs": 50,
        "seed": 7,
        "forget_ids": ["070"],
        "software_versions": {"torch": "2.3.0"},
    }
    extra = [("Deletion record", f"Note: {INJECTED}\n\n| field | value |\n|---|---|\n| id | 070 |")]
    output = root / "output"
    paths = write_report(output, _a_metrics_dict(), settings, cases, "mrbrains3", extra)
    return {
        "paths": paths,
        "output": output,
        "html": paths["html"].read_text("utf-8"),
        "markdown": paths["markdown"].read_text("utf-8"),
    }


def _md_row(markdown: str, first_cell: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def _embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


# ---------------------------------------------------------------------------------------------
# Files and self-containment
# ---------------------------------------------------------------------------------------------


def test_report_writes_html_markdown_and_figures(a_written_report):
    paths, output = a_written_report["paths"], a_written_report["output"]
    assert paths["html"] == output / "report.html" and paths["markdown"] == output / "report.md"
    assert paths["curves"].parent == output / "figures"
    for key in ("html", "markdown", "curves", "overlays"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert not [p for p in output.rglob("*") if p.name.endswith(".tmp")]


def test_html_references_nothing_external(a_written_report):
    page = a_written_report["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_html_embeds_every_figure_as_a_valid_png(a_written_report):
    from PIL import Image

    pngs = _embedded_pngs(a_written_report["html"])
    assert len(pngs) == 2
    for data in pngs:
        assert data.startswith(PNG_SIGNATURE)
        width, height = Image.open(io.BytesIO(data)).size
        assert width > 300 and height > 200


def test_markdown_references_figures_relatively(a_written_report):
    markdown, output = a_written_report["markdown"], a_written_report["output"]
    targets = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(targets) == ["figures/curves.png", "figures/overlays.png"]
    assert all((output / t).is_file() for t in targets)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def test_summary_row_shows_before_after_and_paper_numbers(a_written_report):
    row = _md_row(a_written_report["markdown"], "ours, unlearned epoch 50")
    # columns: forget/retain/held-out Dice, forget/retain/held-out MAE, decrease, preservation,
    # Dice gap, MAE gap
    assert row[1] == "0.9200 → 0.0600"
    assert row[3] == "0.8750 → 0.7050"
    assert row[4] == "0.0500 → 0.4500"
    assert row[7:] == ["93.5 %", "84.4 %", "0.7000", "0.3600"]
    assert "93.5 %" in a_written_report["html"]


def test_paper_reference_row_is_labelled_as_published(a_written_report):
    row = _md_row(a_written_report["markdown"], PAPER_ROW_LABEL)
    assert "published figures, not ours" in row[0]
    assert row[1] == "0.9226 → 0.0613" and row[2] == "n/a → 0.7576"
    assert row[7:] == ["93 %", "84 %", "0.6963", "0.091"]
    assert PAPER_ROW_LABEL in a_written_report["html"]


def test_missing_summary_value_renders_as_na(a_written_report):
    assert _md_row(a_written_report["markdown"], "ours, unlearned epoch 20")[-1] == "n/a"


@pytest.mark.parametrize(
    ("formatter", "value", "expected"),
    [
        (fmt_dice, None, "n/a"),
        (fmt_dice, float("nan"), "n/a"),
        (fmt_dice, 0.12345, "0.1235"),
        (fmt_pct, None, "n/a"),
        (fmt_pct, 93.36, "93.4 %"),
    ],
    ids=["dice-none", "dice-nan", "dice-4-decimals", "pct-none", "pct-1-decimal"],
)
def test_number_formats(formatter, value, expected):
    assert formatter(value) == expected


def test_per_subject_table_lists_roles_and_dice(a_written_report):
    markdown = a_written_report["markdown"]
    assert _md_row(markdown, "070")[:4] == ["070", "forget", "0.9200", "0.0600"]
    assert _md_row(markdown, "H01")[1] == "held-out"


def test_per_label_table_has_every_class_and_skips_undefined(a_written_report):
    markdown = a_written_report["markdown"]
    for name in POLICY.class_names[1:]:
        assert _md_row(markdown, name)
    csf = _md_row(markdown, "cerebrospinal fluid")
    # forget before/after, retain before/after, held-out before/after
    assert csf[1:3] == ["0.9100", "0.0500"] and csf[5:7] == ["n/a", "n/a"]


def test_settings_table_shows_the_run_settings(a_written_report):
    markdown = a_written_report["markdown"]
    assert _md_row(markdown, "strategy")[1] == "noisy-label"
    assert _md_row(markdown, "forget ids")[1] == "070"
    assert _md_row(markdown, "label policy")[1] == "mrbrains3"
    assert _md_row(markdown, "software versions")[1] == "torch 2.3.0"
    assert "all computation was local" in markdown.lower()


def test_extra_sections_are_escaped_in_html_and_kept_in_markdown(a_written_report):
    page, markdown = a_written_report["html"], a_written_report["markdown"]
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert "<h2>Deletion record</h2>" in page and "<td>id</td>" in page
    assert INJECTED in markdown


def test_markdown_to_html_does_not_embed_foreign_images():
    page = markdown_to_html("![x](http://example.org/a.png)\n\n```\n<b>\n```", images={})
    assert "<img" not in page and "&lt;b&gt;" in page


# ---------------------------------------------------------------------------------------------
# Overlays and orientation
# ---------------------------------------------------------------------------------------------


def test_overlay_rgb_blends_class_colour_only_on_labelled_pixels():
    image = np.full((4, 5), 0.5)
    labels = np.zeros((4, 5), dtype=int)
    labels[1, 2], labels[2, 3], labels[3, 0] = 2, 3, -1
    colours = POLICY.class_colours
    rgb = overlay_rgb(image, labels, colours, alpha=0.5, window=(0.0, 1.0))
    assert rgb.shape == (4, 5, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    np.testing.assert_allclose(rgb[1, 2], 0.25 + 0.5 * np.array(colours[2]) / 255.0)
    np.testing.assert_allclose(rgb[2, 3], 0.25 + 0.5 * np.array(colours[3]) / 255.0)
    np.testing.assert_allclose(rgb[0, 0], [0.5, 0.5, 0.5])  # background
    np.testing.assert_allclose(rgb[3, 0], [0.5, 0.5, 0.5])  # ignored voxel


def test_overlay_rgb_windows_intensities_to_percentiles():
    image = np.linspace(0.0, 100.0, 101).reshape(1, 101)
    grey = overlay_rgb(image, None, POLICY.class_colours)[..., 0]
    assert grey[0, 0] == 0.0 and grey[0, -1] == 1.0 and 0.45 < grey[0, 50] < 0.55


def test_overlay_rgb_rejects_a_class_without_colour():
    with pytest.raises(ValueError, match="class id 7 has no colour"):
        overlay_rgb(np.zeros((2, 2)), np.full((2, 2), 7), POLICY.class_colours)


def test_axial_display_puts_anterior_up_and_patient_right_on_the_left():
    volume = np.zeros((6, 5, 2))
    volume[5, 4, 1] = 1.0  # most right (x) and most anterior (y) voxel of slice z=1
    shown = axial_display(volume, 1)
    assert shown.shape == (5, 6) and shown[0, 0] == 1.0


def test_load_canonical_reorients_an_lps_file(tmp_path):
    data = np.zeros((6, 5, 2), dtype=np.int16)
    data[0, 0, 1] = 1  # in an LPS file index 0 along x/y is the right-most, anterior-most voxel
    path = _save(tmp_path / "lps.nii.gz", data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    volume, _, zooms = load_canonical(path, "test volume")
    assert axial_display(volume, 1)[0, 0] == 1 and list(zooms) == [1.0, 1.0, 1.0]


def test_choose_axial_slices_prefers_the_fullest_slices():
    labels = np.zeros((10, 10, 12), dtype=int)
    for z, size in {2: 2, 4: 8, 5: 9, 6: 10, 7: 9, 9: 3}.items():
        labels[:size, :size, z] = 1
    assert choose_axial_slices(labels, 3) == [4, 6, 7]
    assert choose_axial_slices(np.zeros((4, 4, 8)), 2) == [2, 5]


# ---------------------------------------------------------------------------------------------
# Invalid input
# ---------------------------------------------------------------------------------------------


def test_report_rejects_a_label_policy_that_differs_from_the_metrics(tmp_path):
    with pytest.raises(InvalidInputError, match="label_policy 'mrbrains3' differs"):
        write_report(tmp_path, _a_metrics_dict(), {}, [], "binary")


def test_report_rejects_a_prediction_on_another_grid(tmp_path):
    case = _subject_files(tmp_path, "070", forget=True)
    _save(case.unlearned_prediction, np.zeros((20, 20, 8), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="expected|shape"):
        write_report(tmp_path / "out", _a_metrics_dict(), {}, [case], "mrbrains3")
    assert not (tmp_path / "out" / "report.html").exists()


def test_report_rejects_a_prediction_with_a_class_outside_the_policy(tmp_path):
    case = _subject_files(tmp_path, "070", forget=True)
    _save(case.original_prediction, np.full(SHAPE, 5, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="class id 5; label policy 'mrbrains3' has 4"):
        write_report(tmp_path / "out", _a_metrics_dict(), {}, [case], "mrbrains3")
