"""Run report: ``report.html`` (self-contained), ``report.md`` and ``figures/*.png``.

The input is a run's ``metrics.json`` dictionary (schema in docs/contracts.md), the run settings
and the subjects to show as overlays. The report is first written as Markdown; the HTML is that
same text rendered by a small, escaping Markdown subset (:func:`markdown_to_html`) with the
figures embedded as base64 data URIs, no external CSS, JavaScript or fonts, so it opens offline.
Every file is written atomically (temporary name + rename).

Image orientation of the overlays: volumes are reoriented to the closest canonical RAS+ axes
(nibabel ``as_closest_canonical``: axes permuted and flipped, never resampled) and axial slices
are shown in the radiological convention that 3D Slicer uses: anterior at the top, the patient's
right on the left of the image.

This file (about 700 lines) is longer than the ~400 lines the style guide suggests: it holds
three concepts, marked by section comments, that could become separate modules (tables and
``write_report``; figures; the Markdown-to-HTML renderer); they were kept together here because
the report was built as one unit.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.evaluation.metrics import mean_defined
from MachineUnlearningLib.runtime.errors import InvalidInputError

SET_ORDER = ("forget", "retain", "held-out", "train")
SET_COLOURS = {"forget": "#d62728", "retain": "#1f77b4", "held-out": "#2ca02c", "train": "#7f7f7f"}
PAPER_ROW_LABEL = "Paper (MRBrainS18, Noisy Label, 50 epochs; published figures, not ours)"
# Published strings, kept verbatim so that their precision is not overstated.
PAPER_ROW = {
    "forget_dice": "0.9226 → 0.0613",
    "retain_dice": "n/a → 0.7576",
    "decrease": "93 %",
    "preservation": "84 %",
    "dice_gap": "0.6963",
    "mae_gap": "0.091",
}
PRIVACY_LINE = "All computation was local; subjects are named by the ids the user gave."
OVERLAY_PRIVACY_NOTE = (
    "The overlay figure shows MRI slices of the subjects named in it, the forget subject "
    "included: handle this report as personal data."
)
SLICES_PER_CASE = 3
OVERLAY_ALPHA = 0.5
PANEL_INCHES = 2.4


@dataclass(frozen=True)
class OverlayCase:
    """One subject shown in the overlay figure.

    Attributes:
        subject_id: the id the user gave, e.g. "070".
        role: "forget", "retain" or "held-out".
        image_path: one MRI modality (NIfTI) on the original grid, e.g. ``pre/reg_T1.nii.gz``.
        truth_path: raw MRBrainS18 ``segm.nii.gz`` (labels 0..10, mapped with the label policy),
            or None when the subject has no ground truth.
        original_prediction: label map NIfTI of the original model (class ids of the policy).
        unlearned_prediction: label map NIfTI of the unlearned model, same grid.
    """

    subject_id: str
    role: str
    image_path: Path
    truth_path: Path | None
    original_prediction: Path
    unlearned_prediction: Path


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _number(value: Any, digits: int, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals; None, NaN or a non-number -> "n/a"."""
    if value is None or isinstance(value, bool):
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(number) else f"{number:.{digits}f}{suffix}"


def fmt_dice(value: Any) -> str:
    """Dice, MAE and gaps: 4 decimals ("n/a" for None)."""
    return _number(value, 4)


def fmt_pct(value: Any) -> str:
    """Percentages: 1 decimal and " %" ("n/a" for None)."""
    return _number(value, 1, " %")


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return str(text).replace("\n", " ").replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _setting_text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_setting_text(v)}" for k, v in value.items()) or "n/a"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_setting_text(v) for v in value) or "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Reading metrics.json
# ---------------------------------------------------------------------------------------------


def _evaluations(metrics: Mapping[str, Any]) -> tuple[dict | None, list[dict]]:
    """(original evaluation or None, unlearned evaluations sorted by epoch)."""
    evaluations = metrics.get("evaluations") or []
    original = next((e for e in evaluations if e.get("model") == "original"), None)
    unlearned = sorted(
        (e for e in evaluations if e.get("model") == "unlearned"), key=lambda e: e.get("epoch", 0)
    )
    return original, unlearned


def _set_names(evaluations: Sequence[Mapping[str, Any] | None]) -> list[str]:
    present = {name for e in evaluations if e for name in (e.get("sets") or {})}
    return [s for s in SET_ORDER if s in present] + sorted(present - set(SET_ORDER))


def _set_value(evaluation: Mapping[str, Any] | None, set_name: str, key: str) -> Any:
    if evaluation is None:
        return None
    return ((evaluation.get("sets") or {}).get(set_name) or {}).get(key)


def _check_metrics(metrics: Mapping[str, Any], label_policy_name: str) -> None:
    version = metrics.get("schema_version")
    if version != 1:
        raise InvalidInputError(
            f"metrics: schema_version {version!r} is not supported by the report.",
            hint="Regenerate metrics.json with this version of the engine (schema_version 1).",
        )
    recorded = metrics.get("label_policy")
    if recorded is not None and recorded != label_policy_name:
        raise InvalidInputError(
            f"metrics: label_policy {recorded!r} differs from the report's {label_policy_name!r}.",
            hint="Pass the label policy the run was evaluated with.",
        )


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _summary_table(metrics: Mapping[str, Any]) -> str:
    """Paper-style summary: one row per unlearned epoch, then the published reference row."""
    original, unlearned = _evaluations(metrics)
    sets = [s for s in _set_names([original, *unlearned]) if s != "train"]
    summaries = {s.get("epoch"): s for s in metrics.get("summary") or []}
    epochs = sorted({e.get("epoch") for e in unlearned} | set(summaries), key=lambda x: x or 0)
    by_epoch = {e.get("epoch"): e for e in unlearned}
    header = ["Run"] + [f"{s} Dice" for s in sets] + [f"{s} MAE" for s in sets]
    header += ["forget decrease", "retain preservation", "Dice gap", "MAE gap"]
    rows = []
    for epoch in epochs:
        after, summary = by_epoch.get(epoch), summaries.get(epoch, {})
        row = [f"ours, unlearned epoch {epoch}"]
        for key in ("dice", "mae"):
            row += [
                f"{fmt_dice(_set_value(original, s, key))} → {fmt_dice(_set_value(after, s, key))}"
                for s in sets
            ]
        row += [
            fmt_pct(summary.get("forget_decrease_pct")),
            fmt_pct(summary.get("retain_preservation_pct")),
            fmt_dice(summary.get("dice_gap")),
            fmt_dice(summary.get("mae_gap")),
        ]
        rows.append(row)
    paper = {"forget": PAPER_ROW["forget_dice"], "retain": PAPER_ROW["retain_dice"]}
    rows.append(
        [PAPER_ROW_LABEL]
        + [paper.get(s, "n/a") for s in sets]
        + ["n/a"] * len(sets)
        + [PAPER_ROW[k] for k in ("decrease", "preservation", "dice_gap", "mae_gap")]
    )
    return _md_table(header, rows)


def _subjects_by_id(evaluation: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    subjects = (evaluation or {}).get("subjects") or []
    return {str(s["subject_id"]): s for s in subjects if isinstance(s, Mapping)}


def _subject_order(metrics: Mapping[str, Any], *evaluations) -> list[tuple[str, str]]:
    """(subject id, role) pairs: forget, retain, held-out, others; ids in order of appearance."""
    roles = {str(k): v for k, v in (metrics.get("roles") or {}).items()}
    for evaluation in evaluations:
        for sid, subject in _subjects_by_id(evaluation).items():
            roles.setdefault(sid, subject.get("role", "n/a"))
    rank = {name: i for i, name in enumerate(SET_ORDER)}
    ordered = sorted(roles.items(), key=lambda kv: rank.get(kv[1], len(rank)))
    return ordered


def _subject_table(metrics: Mapping[str, Any]) -> str:
    original, unlearned = _evaluations(metrics)
    last = unlearned[-1] if unlearned else None
    before, after = _subjects_by_id(original), _subjects_by_id(last)
    rows = []
    for sid, role in _subject_order(metrics, original, last):
        b, a = before.get(sid, {}), after.get(sid, {})
        rows.append(
            [
                sid,
                role,
                fmt_dice(b.get("mean_dice")),
                fmt_dice(a.get("mean_dice")),
                fmt_dice(b.get("mae")),
                fmt_dice(a.get("mae")),
            ]
        )
    header = ["subject", "role", "Dice before", "Dice after", "MAE before", "MAE after"]
    return _md_table(header, rows)


def _label_table(metrics: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """Mean per-class Dice of each set's subjects (None skipped), original vs last epoch."""
    original, unlearned = _evaluations(metrics)
    last = unlearned[-1] if unlearned else None
    sets = _set_names([original, last])
    header = ["class"]
    for s in sets:
        header += [f"{s} before", f"{s} after"]
    rows = []
    for name in class_names[1:]:
        row = [name]
        for s in sets:
            for evaluation in (original, last):
                members = [m for m in _subjects_by_id(evaluation).values() if m.get("role") == s]
                row.append(fmt_dice(mean_defined((m.get("dice") or {}).get(name) for m in members)))
        rows.append(row)
    return _md_table(header, rows)


def _settings_table(settings: Mapping[str, Any], metrics: Mapping[str, Any], policy: str) -> str:
    values = dict(settings)
    values.setdefault("label_policy", policy)
    values.setdefault("mae_definition", metrics.get("mae_definition"))
    rows = [[str(k).replace("_", " "), _setting_text(v)] for k, v in values.items()]
    return _md_table(["setting", "value"], rows)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def overlay_rgb(
    image_slice: np.ndarray,
    label_slice: np.ndarray | None,
    colours: Sequence[Sequence[int]],
    alpha: float = OVERLAY_ALPHA,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blend a label slice over a grey MRI slice.

    Args:
        image_slice: (H, W) intensities.
        label_slice: (H, W) class ids, or None for the MRI alone. Class 0 (background) and
            negative ids (ignored voxels) are not drawn.
        colours: RGB 0..255 per class id (index = class id).
        alpha: opacity of the label colour, 0..1.
        window: (low, high) intensity mapped to black..white; default the slice's 1st and 99th
            percentiles.

    Returns:
        (H, W, 3) float RGB in [0, 1]: ``(1 - alpha) * grey + alpha * colour`` on labelled
        pixels, grey elsewhere.

    Raises:
        ValueError: shapes differ, alpha outside [0, 1], or a class id has no colour.
    """
    image = np.asarray(image_slice, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image_slice must be 2-D (H, W); got shape {image.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    low, high = window if window is not None else np.percentile(image, (1, 99))
    grey = np.clip((image - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if label_slice is None:
        return rgb
    labels = np.asarray(label_slice).astype(np.int64)
    if labels.shape != image.shape:
        raise ValueError(f"label_slice shape {labels.shape} != image_slice shape {image.shape}.")
    table = np.asarray(colours, dtype=np.float64).reshape(-1, 3) / 255.0
    if labels.size and labels.max() >= len(table):
        raise ValueError(f"class id {labels.max()} has no colour ({len(table)} colours given).")
    drawn = labels > 0
    rgb[drawn] = (1.0 - alpha) * rgb[drawn] + alpha * table[labels[drawn]]
    return rgb


def axial_display(volume_ras: np.ndarray, z: int) -> np.ndarray:
    """Axial slice ``z`` of a canonical RAS+ (x, y, z) array, oriented for display.

    Returns (rows, cols) = (y reversed, x reversed): anterior at the top, the patient's right on
    the left (radiological convention, as in 3D Slicer).
    """
    return volume_ras[:, :, z].T[::-1, ::-1]


def choose_axial_slices(labels_ras: np.ndarray, count: int = SLICES_PER_CASE) -> list[int]:
    """Up to ``count`` axial indices z, spread over the slices with the most labelled voxels.

    Candidates are the slices holding at least half the labelled voxels of the fullest slice;
    ``count`` of them are picked at evenly spaced ranks. Without labels: evenly spaced slices
    around the middle.
    """
    counts = (np.asarray(labels_ras) > 0).sum(axis=(0, 1))
    depth = counts.shape[0]
    if counts.max(initial=0) == 0:
        candidates = np.arange(depth // 4, max(depth // 4 + 1, 3 * depth // 4))
    else:
        candidates = np.flatnonzero(counts >= 0.5 * counts.max())
    picks = np.linspace(0, len(candidates) - 1, num=min(count, len(candidates)))
    return sorted({int(candidates[int(round(p))]) for p in picks})


def load_canonical(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(array, affine, voxel size mm) of a 3-D NIfTI reoriented to canonical RAS+ axes."""
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises several types for missing or damaged files
        raise InvalidInputError(f"report: cannot read {what} {path} ({exc}).") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(f"report: {what} {path} has shape {data.shape}; expected 3-D.")
    return data, np.asarray(image.affine), np.asarray(image.header.get_zooms()[:3], dtype=float)


def _case_volumes(case: OverlayCase, policy_name: str) -> dict[str, Any]:
    image, affine, zooms = load_canonical(case.image_path, f"MRI of subject {case.subject_id}")
    out: dict[str, Any] = {"image": image.astype(np.float64), "affine": affine, "zooms": zooms}
    policy = get_label_policy(policy_name)
    sources = {
        "truth": case.truth_path,
        "original": case.original_prediction,
        "unlearned": case.unlearned_prediction,
    }
    for key, path in sources.items():
        if path is None:
            out[key] = None
            continue
        labels, _, _ = load_canonical(path, f"{key} label map of subject {case.subject_id}")
        if labels.shape != image.shape:
            raise InvalidInputError(
                f"report: {path} has shape {labels.shape}; the MRI {case.image_path} has "
                f"{image.shape}.",
                hint="Overlays need label maps on the MRI's original grid.",
            )
        labels = np.rint(labels).astype(np.int64)
        if key != "truth" and labels.max(initial=0) >= policy.num_classes:
            raise InvalidInputError(
                f"report: {path} holds class id {labels.max()}; label policy {policy.name!r} has "
                f"{policy.num_classes} classes.",
                hint="Pass the label policy the predictions were made with.",
            )
        if key == "truth":
            if labels.min() < 0 or labels.max() > 10:
                raise InvalidInputError(
                    f"report: {path} holds values outside the raw labels 0..10."
                )
            labels = policy.apply(labels)
        out[key] = labels
    return out


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _draw_overlay_row(axes_row, case: OverlayCase, vols: dict, z: int, colours) -> None:
    """Fill one figure row (4 axes) with axial slice ``z`` of one subject."""
    image = axial_display(vols["image"], z)
    aspect = vols["zooms"][1] / vols["zooms"][0]  # display rows are y, columns x
    centre = [vols["image"].shape[0] / 2, vols["image"].shape[1] / 2, z, 1]
    for ax, key in zip(axes_row, (None, "truth", "original", "unlearned"), strict=True):
        labels = None if key is None or vols[key] is None else axial_display(vols[key], z)
        rgb = overlay_rgb(image, labels, colours, window=vols["window"])
        ax.imshow(rgb, aspect=aspect, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if key == "truth" and vols[key] is None:
            ax.text(0.5, 0.5, "no ground truth", color="w", ha="center", transform=ax.transAxes)
    s_mm = (vols["affine"] @ centre)[2]
    axes_row[0].set_ylabel(f"{case.subject_id} ({case.role})\naxial S = {s_mm:.1f} mm", fontsize=9)
    for text, x, y in (("R", 0.03, 0.5), ("L", 0.97, 0.5), ("A", 0.5, 0.97)):
        axes_row[0].text(
            x,
            y,
            text,
            color="yellow",
            fontsize=8,
            ha="center",
            va="center",
            transform=axes_row[0].transAxes,
        )


def render_overlays(
    cases: Sequence[OverlayCase],
    policy_name: str,
    class_names: Sequence[str],
    colours: Sequence[Sequence[int]],
    unlearned_label: str = "unlearned model",
) -> bytes:
    """PNG: one row per (subject, axial slice), columns MRI | truth | original | unlearned.

    Slices: :func:`choose_axial_slices` on the ground truth (else the original prediction);
    orientation: :func:`axial_display`; MRI window: the subject's 1st..99th percentile.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = []
    for case in cases:
        vols = _case_volumes(case, policy_name)
        vols["window"] = tuple(np.percentile(vols["image"], (1, 99)))
        reference = vols["truth"] if vols["truth"] is not None else vols["original"]
        rows += [(case, vols, z) for z in choose_axial_slices(reference)]
    size = (4 * PANEL_INCHES, len(rows) * PANEL_INCHES + 0.9)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots(max(len(rows), 1), 4, squeeze=False)
    for ax, title in zip(
        axes[0], ("MRI", "ground truth", "original model", unlearned_label), strict=True
    ):
        ax.set_title(title, fontsize=10)
    for axes_row, (case, vols, z) in zip(axes, rows, strict=False):
        _draw_overlay_row(axes_row, case, vols, z, colours)
    handles = [
        Patch(facecolor=np.asarray(colours[i]) / 255.0, edgecolor="k", label=name)
        for i, name in enumerate(class_names)
        if i > 0
    ]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 4),
        fontsize=9,
        frameon=False,
    )
    return _png_bytes(figure)


def render_curves(metrics: Mapping[str, Any]) -> bytes:
    """PNG: Dice and MAE of each set against the unlearning epoch (0 = original model)."""
    from matplotlib.figure import Figure

    original, unlearned = _evaluations(metrics)
    evaluations = [e for e in (original, *unlearned) if e is not None]
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    axes = figure.subplots(1, 2)
    mae_name = metrics.get("mae_definition", "n/a")
    for ax, key, title in (
        (axes[0], "dice", "Dice (higher = better)"),
        (axes[1], "mae", f"MAE, {mae_name} (lower = better)"),
    ):
        for set_name in _set_names(evaluations):
            points = [
                (0 if e is original else e.get("epoch", 0), _set_value(e, set_name, key))
                for e in evaluations
            ]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=set_name, color=SET_COLOURS.get(set_name))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("unlearning epoch (0 = original model)")
        ax.grid(alpha=0.3)
        if key == "dice":
            ax.set_ylim(0, 1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    return _png_bytes(figure)


# ---------------------------------------------------------------------------------------------
# Markdown -> HTML (small, escaping subset)
# ---------------------------------------------------------------------------------------------

_IMAGE_LINE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;
padding:.6em;overflow-x:auto}code{background:#f2f2f2;padding:0 .2em}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}"""


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=True)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def _html_table(lines: list[str]) -> str:
    rows = [_split_row(x) for x in lines]
    has_header = len(rows) > 1 and all(re.fullmatch(r":?-+:?", c or "-") for c in rows[1])
    out = ["<table>"]
    if has_header:
        out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr>")
        rows = rows[2:]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out + ["</table>"])


def markdown_to_html(text: str, images: Mapping[str, bytes] | None = None) -> str:
    """Render a Markdown subset; every piece of text is HTML-escaped.

    Supported: ``#`` headers, ``|`` tables, fenced code blocks, ``- `` lists, paragraphs,
    inline `code` and **bold**, and image lines ``![caption](path)`` whose ``path`` is a key of
    ``images`` (embedded as a PNG data URI). Any other image line stays literal text, so the
    result never references an external resource.
    """
    images = images or {}
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        image = _IMAGE_LINE.match(stripped)
        if not stripped:
            i += 1
        elif heading:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif image and image.group(2) in images:
            data = base64.b64encode(images[image.group(2)]).decode("ascii")
            alt = html.escape(image.group(1), quote=True)
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                f"<figcaption>{_inline(image.group(1))}</figcaption></figure>"
            )
            i += 1
        else:
            kind = _block_kind(line)
            kind = "p" if kind == "other" else kind  # e.g. an image that is not ours: literal
            j = i + 1
            while j < len(lines) and lines[j].strip() and _block_kind(lines[j]) == kind:
                j += 1
            block = [x.strip() for x in lines[i:j]]
            if kind == "table":
                out.append(_html_table(block))
            elif kind == "list":
                out.append("<ul>" + "".join(f"<li>{_inline(x[2:])}</li>" for x in block) + "</ul>")
            else:
                out.append(f"<p>{_inline(' '.join(block))}</p>")
            i = j
    return "\n".join(out)


def _block_kind(line: str) -> str:
    stripped = line.strip()
    if (
        stripped.startswith("```")
        or re.match(r"^#{1,6}\s", stripped)
        or _IMAGE_LINE.match(stripped)
    ):
        return "other"
    if stripped.startswith("|"):
        return "table"
    return "list" if stripped[:2] in ("- ", "* ") else "p"


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _markdown(metrics, settings, policy_name, class_names, figures, extra_sections) -> str:
    mae_name = metrics.get("mae_definition", "n/a")
    parts = [
        "# Machine unlearning report",
        PRIVACY_LINE + (f" {OVERLAY_PRIVACY_NOTE}" if "overlays" in figures else ""),
        "## Run settings",
        _settings_table(settings, metrics, policy_name),
        "## Summary (paper-style)",
        "Cells read original model (epoch 0) → unlearned model. Forget decrease = "
        "(Dice_F before − Dice_F after) / Dice_F before; retain preservation = Dice_R after / "
        "Dice_R before; Dice gap = Dice_R − Dice_F after unlearning; MAE gap = MAE_F − MAE_R after "
        f"unlearning (sign inferred from the paper). MAE definition: `{mae_name}`. The paper row "
        "repeats published figures for comparison; it was not computed here.",
        _summary_table(metrics),
        "## Per subject (original model vs last unlearned epoch)",
        _subject_table(metrics),
        "## Dice per label (mean over each set's subjects; original vs last unlearned epoch)",
        _label_table(metrics, class_names),
    ]
    captions = {
        "curves": "Dice and MAE of each subject set against the unlearning epoch "
        "(epoch 0 = original model).",
        "overlays": "Axial slices, radiological convention (anterior up, patient's right on the "
        "left); labels in the policy's class colours over the MRI (1st–99th percentile window).",
    }
    for key, name in figures.items():
        parts += [f"## Figure: {key}", f"![{captions[key]}](figures/{name})"]
    for title, text in extra_sections:
        parts += [f"## {' '.join(str(title).split())}", str(text)]
    return "\n\n".join(parts) + "\n"


def write_report(
    output_dir: Path,
    metrics: dict,
    settings: dict,
    overlay_cases: Sequence[OverlayCase],
    label_policy_name: str,
    extra_sections: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` into ``output_dir``.

    Args:
        output_dir: run output folder (created if absent).
        metrics: a metrics.json dictionary (schema_version 1, docs/contracts.md).
        settings: run settings shown as a key/value table (strategy, epochs, seed, ...).
        overlay_cases: subjects for the overlay figure (none: no overlay figure).
        label_policy_name: the policy the predictions use; must match ``metrics["label_policy"]``.
        extra_sections: (title, Markdown-subset text) pairs appended to both outputs.

    Returns:
        {"html", "markdown", "curves", "overlays"} -> written path ("overlays" only with cases).

    Raises:
        InvalidInputError: unsupported schema, mismatching label policy, unreadable or
            mismatching NIfTI files.
    """
    output_dir = Path(output_dir)
    _check_metrics(metrics, label_policy_name)
    policy = get_label_policy(label_policy_name)
    class_names = list(metrics.get("class_names") or policy.class_names)
    colours = [tuple(c) for c in (metrics.get("class_colours") or policy.class_colours)]
    if len(colours) < len(class_names):
        raise InvalidInputError(
            f"metrics: {len(colours)} class_colours for {len(class_names)} class_names."
        )
    _, unlearned = _evaluations(metrics)
    last_label = (
        f"unlearned model (epoch {unlearned[-1].get('epoch')})" if unlearned else "unlearned model"
    )
    pngs = {"curves": render_curves(metrics)}
    if overlay_cases:
        pngs["overlays"] = render_overlays(
            overlay_cases, label_policy_name, class_names, colours, last_label
        )
    names = {key: f"{key}.png" for key in pngs}
    paths: dict[str, Path] = {}
    for key, data in pngs.items():
        paths[key] = output_dir / "figures" / names[key]
        _write_atomic(paths[key], data)
    markdown = _markdown(metrics, settings, label_policy_name, class_names, names, extra_sections)
    embedded = {f"figures/{names[k]}": data for k, data in pngs.items()}
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Machine unlearning report</title><style>{_CSS}</style></head><body>\n"
        f"{markdown_to_html(markdown, embedded)}\n</body></html>\n"
    )
    paths["markdown"] = output_dir / "report.md"
    paths["html"] = output_dir / "report.html"
    _write_atomic(paths["markdown"], markdown.encode("utf-8"))
    _write_atomic(paths["html"], page.encode("utf-8"))
    return paths
