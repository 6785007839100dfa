"""Segmentation metrics: MRBrainS18 challenge Dice / HD95 / VS, MAE, and set summaries.

Conventions (all functions):

- Label volumes are integer numpy arrays of shape (D, H, W) = (z, y, x); axis 0 is the slice
  axis. They hold class ids 0..C-1 of a label policy; class 0 is background and is never scored.
  The ground truth may also hold ``IGNORE_INDEX`` (-1) for voxels excluded from evaluation
  (MRBrainS18 labels 9/10). Those voxels are removed from the ground truth *and* the prediction
  before anything is counted, as the official evaluation does with its pathology mask.
- Voxel spacing is a tuple (sz, sy, sx) in mm, in the same order as the array axes.
- Probabilities are float arrays of shape (C, D, H, W) (softmax output of one subject).
- Per-class results are dicts ``{class_id: value}`` over the foreground classes 1..C-1; an
  undefined value is ``None`` (never 0, 1 or -1), and means skip it (:func:`mean_defined`).

The maths are pure functions that never modify their inputs; :class:`SubjectMetrics`,
:func:`summarize_sets` and :func:`paper_summary` aggregate them for ``metrics.json``
(docs/contracts.md). Definitions: the procedure of the official MRBrainS18 evaluation script
(hjkuijf/MRBrainS18 ``evaluation.py``) and the paper's summary numbers. This module reimplements
the challenge procedure with scipy; Testing/test_metrics.py checks it against a SimpleITK
transcription of the official procedure.

Length: about 500 lines, over the ~400-line guide, mostly docstrings; the maths (first half) and
the aggregation for metrics.json (last third) could be split into two modules if it grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.runtime.options import look_up_option

ROLES = ("forget", "retain", "held-out", "train")
"""Valid values of :attr:`SubjectMetrics.role`."""

MAE_DEFINITION = "probabilistic"
"""Which MAE :func:`evaluate_subject` reports (``mae_definition`` in metrics.json)."""

# Structuring element of the challenge's boundary extraction, in (D, H, W) order: SimpleITK's
# BinaryErode with radius (1, 1, 0) in its (x, y, z) order and its default kernel (a "ball").
# A radius-1 ITK ball in 2-D is the full 3x3 square (checked with SimpleITK 2.5), and radius 0
# along z means no erosion across slices.
_INPLANE_BOX = np.ones((1, 3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _as_label_volume(volume: np.ndarray, name: str) -> np.ndarray:
    """Return ``volume`` as an integer array of shape (D, H, W), or raise ValueError."""
    array = np.asarray(volume)
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (D, H, W); got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}).")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(
            f"{name} must hold integer class ids; got dtype {array.dtype}. "
            "Cast with np.rint(volume).astype(np.int64) first."
        )
    return array


def _check_value_range(array: np.ndarray, name: str, low: int, high: int) -> None:
    """Raise ValueError unless every value of ``array`` lies in [low, high]."""
    lo, hi = int(array.min()), int(array.max())
    if lo < low or hi > high:
        raise ValueError(
            f"{name} holds values in [{lo}, {hi}]; allowed are {low}..{high}. "
            "Map raw labels through the label policy (ignored voxels must be -1)."
        )


def _label_pair(
    pred: np.ndarray, truth: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (prediction, ground truth) pair of (D, H, W) label volumes."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + 1); got {num_classes}.")
    pred = _as_label_volume(pred, "pred")
    truth = _as_label_volume(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}.")
    _check_value_range(pred, "pred", 0, num_classes - 1)
    _check_value_range(truth, "truth", IGNORE_INDEX, num_classes - 1)
    return pred, truth


def _spacing(spacing_mm: Sequence[float]) -> np.ndarray:
    """Validate a (sz, sy, sx) spacing in mm; return it as a float64 array of shape (3,)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(
            f"spacing_mm must be three positive numbers (sz, sy, sx) in mm; got {spacing_mm!r}."
        )
    return spacing


# ---------------------------------------------------------------------------------------------
# Overlap metrics (Dice, VS)
# ---------------------------------------------------------------------------------------------


def _class_counts(
    pred: np.ndarray, truth: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts over non-ignored voxels, each of shape (C,), int64.

    Returns (#truth == k, #pred == k, #(truth == k and pred == k)) for k = 0..C-1.
    """
    valid = truth != IGNORE_INDEX
    t = truth[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    confusion = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes)
    return confusion.sum(axis=1), confusion.sum(axis=0), np.diagonal(confusion).copy()


def _dice_from_counts(
    n_truth: np.ndarray, n_pred: np.ndarray, n_both: np.ndarray
) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for k in range(1, len(n_truth)):
        denominator = int(n_truth[k]) + int(n_pred[k])
        out[k] = None if denominator == 0 else 2.0 * int(n_both[k]) / denominator
    return out


def _vs_from_counts(n_truth: np.ndarray, n_pred: np.ndarray) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for k in range(1, len(n_truth)):
        a, b = int(n_truth[k]), int(n_pred[k])
        out[k] = None if a + b == 0 else 1.0 - abs(a - b) / (a + b)
    return out


def dice_per_class(
    pred: np.ndarray, truth: np.ndarray, num_classes: int
) -> dict[int, float | None]:
    """Dice of each foreground class, MRBrainS18 challenge formula.

    Dice_k = 2 |A_k ∩ B_k| / (|A_k| + |B_k|), A_k = {truth == k}, B_k = {pred == k}, both
    restricted to voxels where truth != -1 (so a predicted class on an ignored voxel is no false
    positive).

    Args:
        pred: predicted class ids, shape (D, H, W), values 0..C-1.
        truth: ground-truth class ids, shape (D, H, W), values -1..C-1.
        num_classes: C, including background.

    Returns:
        {k: Dice in [0, 1] or None when both A_k and B_k are empty} for k = 1..C-1.

    Raises:
        ValueError: shapes differ, values out of range, non-integer dtype, or C < 2.
    """
    pred, truth = _label_pair(pred, truth, num_classes)
    n_truth, n_pred, n_both = _class_counts(pred, truth, num_classes)
    return _dice_from_counts(n_truth, n_pred, n_both)


def volumetric_similarity_per_class(
    pred: np.ndarray, truth: np.ndarray, num_classes: int
) -> dict[int, float | None]:
    """Volumetric similarity of each foreground class: 1 - |#A - #B| / (#A + #B).

    #A, #B are voxel counts of truth == k and pred == k over non-ignored voxels (the challenge
    states the ratio in mL; the ratio is identical). Shapes and errors as :func:`dice_per_class`.

    Returns:
        {k: VS in [0, 1] or None when #A + #B == 0} for k = 1..C-1.
    """
    pred, truth = _label_pair(pred, truth, num_classes)
    n_truth, n_pred, _ = _class_counts(pred, truth, num_classes)
    return _vs_from_counts(n_truth, n_pred)


# ---------------------------------------------------------------------------------------------
# Surface metric (HD95)
# ---------------------------------------------------------------------------------------------


def _challenge_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean (D, H, W) mask: mask minus its in-plane 3x3 erosion.

    Like SimpleITK's BinaryErode (BoundaryToForeground on), voxels outside the image count as
    foreground, so an object touching the in-plane image border has no boundary there.

    If that leaves no boundary at all although the mask is non-empty (the mask fills every slice
    it touches, e.g. a collapsed model that predicts one class everywhere), the official script
    has no defined result (it would fail on an empty point set); we then count the image border
    as background so that the HD95 stays finite and meaningful.
    """
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=_INPLANE_BOX, border_value=1)
    boundary = mask & ~eroded
    if not boundary.any():
        eroded = ndimage.binary_erosion(mask, structure=_INPLANE_BOX, border_value=0)
        boundary = mask & ~eroded
    return boundary


def _hd95_of_masks(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float | None:
    """HD95 in mm between two boolean (D, H, W) masks; None if either is empty."""
    if not a.any() or not b.any():
        return None
    # Boundary voxel indices (N, 3) in (z, y, x) order -> physical points in mm. The origin and
    # direction of the image do not matter: distances are invariant to them.
    boundary_a, boundary_b = _challenge_boundary(a), _challenge_boundary(b)
    points_a = np.argwhere(boundary_a) * spacing
    points_b = np.argwhere(boundary_b) * spacing
    # A boundary voxel of both masks is at distance 0 from the other: only the rest is queried
    # (same distances, so the same percentiles; a good prediction shares many boundary voxels).
    shared = boundary_a & boundary_b
    d_a_to_b = _nearest_distances(points_a, points_b, shared[boundary_a])
    d_b_to_a = _nearest_distances(points_b, points_a, shared[boundary_b])
    return float(max(np.percentile(d_a_to_b, 95), np.percentile(d_b_to_a, 95)))


def _nearest_distances(
    points: np.ndarray, others: np.ndarray, known_zero: np.ndarray
) -> np.ndarray:
    """Euclidean distance of each of ``points`` (N, 3) to its nearest of ``others`` (M, 3);
    ``known_zero`` (N,) marks points that are themselves among ``others``."""
    from scipy.spatial import cKDTree

    distances = np.zeros(len(points))
    if not known_zero.all():
        distances[~known_zero] = cKDTree(others).query(points[~known_zero], k=1, workers=-1)[0]
    return distances


def hd95_per_class(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    num_classes: int,
) -> dict[int, float | None]:
    """95th-percentile Hausdorff distance (mm) of each foreground class, challenge definition.

    Per class k, with ignored voxels (truth == -1) set to background in both volumes:
    boundary(X) = X minus its erosion by an in-plane 3x3 square (no erosion across slices;
    outside the image counts as foreground); boundary voxels become points in mm using the
    spacing (so 3 mm slices count); directed nearest-neighbour Euclidean distances both ways;
    HD95 = max(P95(d_A->B), P95(d_B->A)) with numpy's default (linear) percentile.

    Args:
        pred: predicted class ids, shape (D, H, W), values 0..C-1.
        truth: ground-truth class ids, shape (D, H, W), values -1..C-1.
        spacing_mm: (sz, sy, sx) voxel spacing in mm.
        num_classes: C, including background.

    Returns:
        {k: HD95 in mm, or None when either mask is empty} for k = 1..C-1.

    Raises:
        ValueError: as :func:`dice_per_class`, or an invalid spacing.
    """
    pred, truth = _label_pair(pred, truth, num_classes)
    spacing = _spacing(spacing_mm)
    valid = truth != IGNORE_INDEX
    return {
        k: _hd95_of_masks(truth == k, (pred == k) & valid, spacing) for k in range(1, num_classes)
    }


# ---------------------------------------------------------------------------------------------
# MAE
# ---------------------------------------------------------------------------------------------


def mae_probabilistic(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error between class probabilities and the one-hot ground truth.

    MAE = mean over non-ignored voxels v and classes c of |p_vc - 1[c == y_v]|, in [0, 2/C] for
    softmax outputs, where it equals (2/C)(1 - mean_v p_{v,y_v}). Computed one class at a time
    (no one-hot volume is built); accumulated in float64.

    Args:
        probabilities: shape (C, D, H, W), float (softmax output).
        truth: class ids, shape (D, H, W), values -1..C-1 (-1 = ignored).

    Raises:
        ValueError: shapes mismatch, truth out of range, or no voxel is evaluated.
    """
    probabilities = np.asarray(probabilities)
    truth = _as_label_volume(truth, "truth")
    if probabilities.ndim != 4 or probabilities.shape[1:] != truth.shape:
        raise ValueError(
            f"probabilities must have shape (C, *truth.shape) with truth.shape = {truth.shape}; "
            f"got {probabilities.shape}."
        )
    num_classes = probabilities.shape[0]
    _check_value_range(truth, "truth", IGNORE_INDEX, num_classes - 1)
    valid = truth != IGNORE_INDEX
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise ValueError("no voxel is evaluated: every truth voxel is ignored (-1).")
    labels = truth[valid]
    total = 0.0
    for c in range(num_classes):
        p_c = probabilities[c][valid].astype(np.float64)
        total += float(np.abs(p_c - (labels == c)).sum())
    return total / (n_valid * num_classes)


def mae_hard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of non-ignored voxels whose predicted class differs from the truth.

    Args:
        pred: predicted class ids, shape (D, H, W).
        truth: class ids, shape (D, H, W), -1 = ignored.

    Raises:
        ValueError: shapes mismatch, non-integer dtype, or no voxel is evaluated.
    """
    pred = _as_label_volume(pred, "pred")
    truth = _as_label_volume(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}.")
    valid = truth != IGNORE_INDEX
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise ValueError("no voxel is evaluated: every truth voxel is ignored (-1).")
    return int(np.count_nonzero(pred[valid] != truth[valid])) / n_valid


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None if no value is defined."""
    defined = [float(v) for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def _by_name(
    values: Mapping[int, float | None] | None, class_names: Sequence[str]
) -> dict[str, float | None] | None:
    if values is None:
        return None
    out: dict[str, float | None] = {}
    for k, v in sorted(values.items()):
        if not 0 <= k < len(class_names):
            raise ValueError(f"class id {k} has no name in class_names {list(class_names)}.")
        out[class_names[k]] = None if v is None else float(v)
    return out


@dataclass(frozen=True)
class SubjectMetrics:
    """Metrics of one subject under one model (one entry of metrics.json ``subjects``).

    Attributes:
        subject_id: cohort subject id, e.g. "070".
        role: one of ``ROLES`` ("forget", "retain", "held-out", "train").
        dice: {class id: Dice or None} over foreground classes 1..C-1.
        mean_dice: mean of the defined values of ``dice``; None if none is defined.
        mae: MAE of the subject (``MAE_DEFINITION``, probabilistic by default), in [0, 2/C].
        hd95_mm: {class id: HD95 in mm or None}, or None when not computed.
        vs: {class id: volumetric similarity or None}, or None when not computed.
    """

    subject_id: str
    role: str
    dice: Mapping[int, float | None]
    mean_dice: float | None
    mae: float
    hd95_mm: Mapping[int, float | None] | None = None
    vs: Mapping[int, float | None] | None = None

    def __post_init__(self) -> None:
        look_up_option(self.role, ROLES, "role")

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-friendly dict; per-class values keyed by class name, None kept (-> null).

        Args:
            class_names: name of every class of the label policy, index = class id
                (``LabelPolicy.class_names``, background included).
        """
        return {
            "subject_id": self.subject_id,
            "role": self.role,
            "dice": _by_name(self.dice, class_names),
            "mean_dice": None if self.mean_dice is None else float(self.mean_dice),
            "mae": float(self.mae),
            "hd95_mm": _by_name(self.hd95_mm, class_names),
            "vs": _by_name(self.vs, class_names),
        }


def evaluate_subject(
    subject_id: str,
    role: str,
    probabilities: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    num_classes: int,
    with_surface: bool = True,
    prediction: np.ndarray | None = None,
) -> SubjectMetrics:
    """All metrics of one subject from its softmax output.

    The prediction is argmax of ``probabilities`` over the class axis (or ``prediction``, when
    the caller already has that argmax, so it is not computed twice). Dice and VS are always
    computed (they share one pass of voxel counts); HD95 only when ``with_surface`` (it costs
    an erosion and two KD-tree queries per class), else ``hd95_mm`` is None.

    Args:
        subject_id: cohort subject id.
        role: one of ``ROLES``.
        probabilities: shape (C, D, H, W), float.
        truth: class ids, shape (D, H, W), values -1..C-1.
        spacing_mm: (sz, sy, sx) in mm.
        num_classes: C; must equal probabilities.shape[0].
        with_surface: compute HD95.
        prediction: ``argmax(probabilities, axis=0)``, shape (D, H, W), if already computed.

    Raises:
        ValueError: inconsistent shapes or class counts.
        InvalidInputError: unknown role.
    """
    look_up_option(role, ROLES, "role")
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 4 or probabilities.shape[0] != num_classes:
        raise ValueError(
            f"probabilities must have shape (C={num_classes}, D, H, W); got {probabilities.shape}."
        )
    pred = np.argmax(probabilities, axis=0) if prediction is None else prediction
    if pred.shape != probabilities.shape[1:]:
        raise ValueError(f"prediction shape {pred.shape} differs from {probabilities.shape[1:]}.")
    pred, truth = _label_pair(pred, truth, num_classes)
    n_truth, n_pred, n_both = _class_counts(pred, truth, num_classes)
    dice = _dice_from_counts(n_truth, n_pred, n_both)
    hd95 = hd95_per_class(pred, truth, spacing_mm, num_classes) if with_surface else None
    return SubjectMetrics(
        subject_id=subject_id,
        role=role,
        dice=dice,
        mean_dice=mean_defined(dice.values()),
        mae=mae_probabilistic(probabilities, truth),
        hd95_mm=hd95,
        vs=_vs_from_counts(n_truth, n_pred),
    )


def summarize_sets(subjects: Sequence[SubjectMetrics]) -> dict[str, dict[str, Any]]:
    """Per-role means over subjects (the ``sets`` of metrics.json).

    Returns:
        {role: {"dice": mean of subject mean_dice (None-aware), "mae": mean MAE, "n": number
        of subjects, "dice_per_class": {class id: mean Dice (None-aware)}}}, roles in order of
        first appearance.
    """
    by_role: dict[str, list[SubjectMetrics]] = {}
    for subject in subjects:
        by_role.setdefault(subject.role, []).append(subject)
    out: dict[str, dict[str, Any]] = {}
    for role, members in by_role.items():
        class_ids = sorted({k for s in members for k in s.dice})
        out[role] = {
            "dice": mean_defined(s.mean_dice for s in members),
            "mae": mean_defined(s.mae for s in members),
            "n": len(members),
            "dice_per_class": {k: mean_defined(s.dice.get(k) for s in members) for k in class_ids},
        }
    return out


def _set_value(summary: Mapping[str, Mapping[str, Any]], role: str, key: str) -> float | None:
    entry = summary.get(role)
    value = None if entry is None else entry.get(key)
    return None if value is None else float(value)


def paper_summary(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> dict[str, float | None]:
    """The paper's summary numbers from two :func:`summarize_sets` outputs.

    ``before`` is the original model θ_o, ``after`` the unlearned model θ_u; F = forget set,
    R = retain set.

    Returns:
        {"forget_decrease_pct": (Dice_F(θ_o) - Dice_F(θ_u)) / Dice_F(θ_o) * 100,
         "retain_preservation_pct": Dice_R(θ_u) / Dice_R(θ_o) * 100,
         "dice_gap": Dice_R(θ_u) - Dice_F(θ_u),
         "mae_gap": MAE_F(θ_u) - MAE_R(θ_u)}; an entry is None when a role or value it needs is
        missing or its denominator is zero.
    """
    dice_f0 = _set_value(before, "forget", "dice")
    dice_r0 = _set_value(before, "retain", "dice")
    dice_f1 = _set_value(after, "forget", "dice")
    dice_r1 = _set_value(after, "retain", "dice")
    mae_f1 = _set_value(after, "forget", "mae")
    mae_r1 = _set_value(after, "retain", "mae")
    return {
        "forget_decrease_pct": None
        if dice_f0 is None or dice_f1 is None or dice_f0 == 0
        else (dice_f0 - dice_f1) / dice_f0 * 100.0,
        "retain_preservation_pct": None
        if dice_r0 is None or dice_r1 is None or dice_r0 == 0
        else dice_r1 / dice_r0 * 100.0,
        "dice_gap": None if dice_r1 is None or dice_f1 is None else dice_r1 - dice_f1,
        "mae_gap": None if mae_f1 is None or mae_r1 is None else mae_f1 - mae_r1,
    }
