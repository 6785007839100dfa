"""Tests of MachineUnlearningLib.metrics.

Three independent references:

1. hand-computed tiny volumes;
2. ``challenge_reference`` below: a transcription, with SimpleITK, of the procedure of the
   official MRBrainS18 evaluation script (pathology mask, per-label threshold, in-plane
   BinaryErode + subtract, TransformIndexToPhysicalPoint, KD-tree, P95, SciPy's dice
   dissimilarity); compared at abs tol 1e-9;
3. MONAI's Dice (abs tol 1e-6: MONAI works in float32). MONAI's Hausdorff distance is compared
   only qualitatively, because its surface differs from the challenge's (see the test).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial import distance as scipy_distance

from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.evaluation.metrics import (
    SubjectMetrics,
    _challenge_boundary,
    dice_per_class,
    evaluate_subject,
    hd95_per_class,
    mae_hard,
    mae_probabilistic,
    mean_defined,
    paper_summary,
    summarize_sets,
    volumetric_similarity_per_class,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

MRBRAINS_SPACING = (3.0, 0.958, 0.958)  # (sz, sy, sx) mm
SHAPE = (6, 20, 24)  # (D, H, W)


# ---------------------------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------------------------


def a_blobby_pair(
    seed: int, num_classes: int, ignore_fraction: float = 0.08, shape=SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """(pred, truth) label volumes of shape (D, H, W): smoothed noise, argmax over classes.

    The prediction is the truth's noise field plus independent smoothed noise, so the two
    overlap partly. ``ignore_fraction`` of the truth (one blobby region) is set to -1.
    """
    rng = np.random.default_rng(seed)
    sigma = (0, 0.7, 2.0, 2.0)
    field = ndimage.gaussian_filter(rng.standard_normal((num_classes, *shape)), sigma)
    noise = ndimage.gaussian_filter(rng.standard_normal((num_classes, *shape)), sigma)
    truth = np.argmax(field, axis=0).astype(np.int64)
    pred = np.argmax(field + 0.6 * noise, axis=0).astype(np.int64)
    if ignore_fraction > 0:
        blob = ndimage.gaussian_filter(rng.standard_normal(shape), (0.7, 2.0, 2.0))
        truth[blob > np.quantile(blob, 1.0 - ignore_fraction)] = IGNORE_INDEX
    return pred, truth


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of a (C, D, H, W) array."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Independent reference: the official MRBrainS18 evaluation procedure, with SimpleITK
# ---------------------------------------------------------------------------------------------


def challenge_reference(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    num_classes: int,
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] | None = None,
) -> tuple[dict, dict, dict]:
    """Dice, HD95 (mm) and VS per class 1..C-1, following the official script's steps.

    Arrays are (z, y, x) as GetImageFromArray expects; spacing/origin are given to SimpleITK in
    its (x, y, z) order. The ignore value -1 plays the part of the script's labels 9..11.
    """
    sitk = pytest.importorskip("SimpleITK")
    truth_image = sitk.GetImageFromArray(truth.astype(np.int16))
    truth_image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    truth_image.SetOrigin(origin_xyz)
    if direction is not None:
        truth_image.SetDirection(direction)
    pred_image = sitk.GetImageFromArray(pred.astype(np.int16))
    pred_image.CopyInformation(truth_image)  # the prediction takes over the GT geometry

    # Pathology mask: 0 where the GT is ignored, 1 elsewhere; applied to both images.
    keep = sitk.BinaryThreshold(truth_image, IGNORE_INDEX, IGNORE_INDEX, 0, 1)
    truth_image = sitk.Mask(truth_image, keep)
    pred_image = sitk.Mask(pred_image, keep)

    def physical_points(edge_image) -> list:
        indices_zyx = np.argwhere(sitk.GetArrayFromImage(edge_image))
        return [truth_image.TransformIndexToPhysicalPoint(i.tolist()) for i in indices_zyx[:, ::-1]]

    dice, hd95, vs = {}, {}, {}
    for k in range(1, num_classes):
        a_image = sitk.BinaryThreshold(truth_image, k, k, 1, 0)
        b_image = sitk.BinaryThreshold(pred_image, k, k, 1, 0)
        a = sitk.GetArrayFromImage(a_image).astype(bool).ravel()
        b = sitk.GetArrayFromImage(b_image).astype(bool).ravel()
        n_a, n_b = int(a.sum()), int(b.sum())
        dice[k] = None if n_a + n_b == 0 else 1.0 - scipy_distance.dice(a, b)
        vs[k] = None if n_a + n_b == 0 else 1.0 - abs(n_a - n_b) / (n_a + n_b)
        if n_a == 0 or n_b == 0:
            hd95[k] = None
            continue
        edge_a = sitk.Subtract(a_image, sitk.BinaryErode(a_image, (1, 1, 0)))
        edge_b = sitk.Subtract(b_image, sitk.BinaryErode(b_image, (1, 1, 0)))
        points_a, points_b = physical_points(edge_a), physical_points(edge_b)
        d_a_to_b = cKDTree(points_b).query(points_a, k=1, eps=0, p=2)[0]
        d_b_to_a = cKDTree(points_a).query(points_b, k=1, eps=0, p=2)[0]
        hd95[k] = max(np.percentile(d_a_to_b, 95), np.percentile(d_b_to_a, 95))
    return dice, hd95, vs


def assert_same_per_class(ours: dict, reference: dict, abs_tol: float) -> None:
    assert ours.keys() == reference.keys()
    for k in reference:
        if reference[k] is None:
            assert ours[k] is None, f"class {k}: expected None, got {ours[k]}"
        else:
            assert ours[k] is not None, f"class {k}: expected {reference[k]}, got None"
            assert ours[k] == pytest.approx(reference[k], abs=abs_tol), f"class {k}"


# ---------------------------------------------------------------------------------------------
# 1. Hand-computed tiny volumes
# ---------------------------------------------------------------------------------------------

HAND_CASES = [
    pytest.param(
        [[[1, 1, 1, 0], [2, 2, 0, 0]]],
        [[[1, 1, 0, 0], [2, 0, 0, 2]]],
        3,
        {1: 0.8, 2: 0.5},  # class 1: 2*2/(3+2); class 2: 2*1/(2+2)
        {1: 0.8, 2: 1.0},  # class 1: 1 - 1/5; class 2: 1 - 0/4
        id="partial-overlap",
    ),
    pytest.param(
        [[[1, IGNORE_INDEX, 0, 0]]],
        [[[1, 1, 0, 0]]],
        2,
        {1: 1.0},  # would be 2/3 if the ignored voxel counted as a false positive
        {1: 1.0},
        id="ignored-voxel-is-no-false-positive",
    ),
    pytest.param(
        [[[1, 1, 0, 0]]],
        [[[1, 0, 0, 0]]],
        3,
        {1: 2 / 3, 2: None},
        {1: 2 / 3, 2: None},
        id="class-absent-from-both-is-None",
    ),
    pytest.param(
        [[[0, 0, 0, 0]]],
        [[[2, 0, 0, 0]]],
        3,
        {1: None, 2: 0.0},
        {1: None, 2: 0.0},
        id="class-only-in-prediction-is-zero",
    ),
    pytest.param(
        [[[IGNORE_INDEX, 0, 0, 0]]],
        [[[1, 0, 0, 0]]],
        2,
        {1: None},
        {1: None},
        id="class-only-on-ignored-voxels-is-None",
    ),
]


@pytest.mark.parametrize(("truth", "pred", "num_classes", "dice", "vs"), HAND_CASES)
def test_dice_and_vs_match_hand_computed_values(truth, pred, num_classes, dice, vs):
    truth, pred = np.array(truth), np.array(pred)
    assert_same_per_class(dice_per_class(pred, truth, num_classes), dice, abs_tol=1e-12)
    assert_same_per_class(
        volumetric_similarity_per_class(pred, truth, num_classes), vs, abs_tol=1e-12
    )


@pytest.mark.parametrize(
    ("probabilities", "truth", "expected"),
    [
        pytest.param(
            # C=2, voxels (p0, p1): (0.1, 0.9) y=1 -> 0.2; (0.8, 0.2) y=0 -> 0.4; third ignored
            [[[[0.1, 0.8, 0.5]]], [[[0.9, 0.2, 0.5]]]],
            [[[1, 0, IGNORE_INDEX]]],
            0.6 / 4,
            id="two-classes-with-ignore",
        ),
        pytest.param(
            # C=3, one voxel (0.2, 0.3, 0.5), y=2 -> 0.2 + 0.3 + 0.5 = 1.0, over 3 classes
            [[[[0.2]]], [[[0.3]]], [[[0.5]]]],
            [[[2]]],
            1.0 / 3,
            id="three-classes-one-voxel",
        ),
        pytest.param(
            # not normalised: the direct definition, not the softmax identity, is computed
            [[[[0.0]]], [[[0.0]]]],
            [[[0]]],
            0.5,
            id="unnormalised-probabilities",
        ),
    ],
)
def test_probabilistic_mae_matches_hand_computed_values(probabilities, truth, expected):
    assert mae_probabilistic(np.array(probabilities), np.array(truth)) == pytest.approx(
        expected, abs=1e-12
    )


@pytest.mark.parametrize(
    ("num_classes", "seed"), [(2, 0), (4, 1), (9, 2)], ids=["binary", "3-class", "8-class"]
)
def test_probabilistic_mae_equals_two_over_c_times_one_minus_mean_true_probability(
    num_classes, seed
):
    rng = np.random.default_rng(seed)
    probabilities = softmax(3.0 * rng.standard_normal((num_classes, 5, 6, 7)))
    truth = rng.integers(-1, num_classes, size=(5, 6, 7))
    valid = truth != IGNORE_INDEX
    p_true = np.take_along_axis(probabilities, np.clip(truth, 0, None)[None], axis=0)[0]
    identity = 2.0 / num_classes * (1.0 - p_true[valid].mean())
    assert mae_probabilistic(probabilities, truth) == pytest.approx(identity, rel=1e-12)


def test_hard_mae_counts_mismatches_over_non_ignored_voxels():
    truth = np.array([[[1, 0, IGNORE_INDEX, 2]]])
    pred = np.array([[[1, 1, 1, 0]]])
    assert mae_hard(pred, truth) == pytest.approx(2 / 3, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: mae_probabilistic(np.full((2, 1, 1, 2), 0.5), np.array([[[-1, -1]]])),
            "no voxel is evaluated",
            id="probabilistic-all-ignored",
        ),
        pytest.param(
            lambda: mae_probabilistic(np.full((2, 1, 1, 3), 0.5), np.array([[[0, 1]]])),
            "probabilities must have shape",
            id="probabilistic-shape-mismatch",
        ),
        pytest.param(
            lambda: mae_probabilistic(np.full((2, 1, 1, 2), 0.5), np.array([[[0, 2]]])),
            "allowed are -1..1",
            id="probabilistic-class-without-channel",
        ),
        pytest.param(
            lambda: mae_hard(np.array([[[0, 1]]]), np.array([[[-1, -1]]])),
            "no voxel is evaluated",
            id="hard-all-ignored",
        ),
        pytest.param(
            lambda: mae_hard(np.array([[[0, 1]]]), np.array([[[0, 1, 1]]])),
            "differs from truth shape",
            id="hard-shape-mismatch",
        ),
        pytest.param(
            lambda: dice_per_class(np.array([[[0, 3]]]), np.array([[[0, 1]]]), 3),
            "pred holds values in [0, 3]",
            id="dice-prediction-out-of-range",
        ),
        pytest.param(
            lambda: dice_per_class(np.array([[[0, 1]]]), np.array([[[0, 9]]]), 3),
            "truth holds values in [0, 9]",
            id="dice-raw-label-not-mapped",
        ),
        pytest.param(
            lambda: dice_per_class(np.array([[[0.0, 1.0]]]), np.array([[[0, 1]]]), 3),
            "integer class ids",
            id="dice-float-labels",
        ),
        pytest.param(
            lambda: dice_per_class(np.array([[0, 1]]), np.array([[0, 1]]), 3),
            "shape (D, H, W)",
            id="dice-2d-volume",
        ),
        pytest.param(
            lambda: dice_per_class(np.array([[[0, 0]]]), np.array([[[0, 0]]]), 1),
            "num_classes must be at least 2",
            id="dice-one-class",
        ),
        pytest.param(
            lambda: hd95_per_class(np.array([[[0, 1]]]), np.array([[[0, 1]]]), (1.0, 0.0, 1.0), 2),
            "spacing_mm must be three positive numbers",
            id="hd95-zero-spacing",
        ),
        pytest.param(
            lambda: hd95_per_class(np.array([[[0, 1]]]), np.array([[[0, 1]]]), (1.0, 1.0), 2),
            "spacing_mm must be three positive numbers",
            id="hd95-two-spacings",
        ),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


@pytest.mark.parametrize(
    ("truth", "pred", "spacing", "expected"),
    [
        pytest.param(
            np.pad(np.ones((2, 3, 3), int), ((0, 0), (1, 1), (1, 1))),
            np.pad(np.ones((2, 3, 3), int), ((0, 0), (1, 1), (1, 1))),
            MRBRAINS_SPACING,
            0.0,
            id="identical-squares",
        ),
        pytest.param(
            np.pad([[[1]]], ((0, 2), (1, 1), (1, 1))),
            np.pad([[[1]]], ((2, 0), (1, 1), (1, 1))),
            MRBRAINS_SPACING,
            6.0,  # two single voxels two 3-mm slices apart
            id="slice-spacing-counts",
        ),
        pytest.param(
            np.pad([[[1]]], ((0, 0), (1, 1), (1, 3))),
            np.pad([[[1]]], ((0, 0), (1, 1), (3, 1))),
            MRBRAINS_SPACING,
            2 * 0.958,  # two single voxels two 0.958-mm columns apart
            id="in-plane-spacing-counts",
        ),
        pytest.param(
            # The prediction fills the whole image, so the challenge boundary (image border =
            # foreground) is empty; the fallback takes the 8-voxel ring. Ring -> centre: four
            # at 1, four at sqrt(2): P95 (linear) = sqrt(2); centre -> ring: 1.
            np.pad([[[1]]], ((0, 0), (1, 1), (1, 1))),
            np.ones((1, 3, 3), int),
            (1.0, 1.0, 1.0),
            math.sqrt(2.0),
            id="prediction-filling-the-image-uses-the-fallback-boundary",
        ),
    ],
)
def test_hd95_matches_hand_computed_values(truth, pred, spacing, expected):
    truth, pred = np.asarray(truth), np.asarray(pred)
    assert hd95_per_class(pred, truth, spacing, 2)[1] == pytest.approx(expected, abs=1e-12)


def test_hd95_is_None_when_either_mask_is_empty():
    truth = np.array([[[0, 1, 2, IGNORE_INDEX]]])
    pred = np.array([[[1, 1, 0, 2]]])  # class 2 predicted only on the ignored voxel
    assert hd95_per_class(pred, truth, (1.0, 1.0, 1.0), 4) == {1: 0.0, 2: None, 3: None}


# ---------------------------------------------------------------------------------------------
# 2. Against the SimpleITK transcription of the official evaluation
# ---------------------------------------------------------------------------------------------


def test_simpleitk_erosion_kernel_is_the_in_plane_3x3_square_with_border_as_foreground():
    sitk = pytest.importorskip("SimpleITK")
    probe = np.ones((3, 7, 7), np.uint8)
    probe[1, 3, 3] = 0
    eroded = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(probe), (1, 1, 0)))
    expected = np.ones_like(probe)
    expected[1, 2:5, 2:5] = 0  # a full 3x3 square in the hole's slice, nothing across slices
    np.testing.assert_array_equal(eroded, expected)  # also: no erosion from the image border


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_equals_simpleitk_erode_and_subtract(seed):
    sitk = pytest.importorskip("SimpleITK")
    pred, _ = a_blobby_pair(seed, 3, ignore_fraction=0.0)
    mask = pred == 1
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    reference = sitk.GetArrayFromImage(
        sitk.Subtract(image, sitk.BinaryErode(image, (1, 1, 0)))
    ).astype(bool)
    assert reference.any()
    np.testing.assert_array_equal(_challenge_boundary(mask), reference)


def _absent_from_prediction(pred, truth):
    pred = pred.copy()
    pred[pred == 2] = 0
    return pred, truth


def _absent_from_both(pred, truth):
    pred, truth = pred.copy(), truth.copy()
    pred[pred == 3] = 0
    truth[truth == 3] = 0
    return pred, truth


def _absent_from_truth(pred, truth):
    truth = truth.copy()
    truth[truth == 1] = 0
    return pred, truth


_ROTATED = (math.cos(0.5), -math.sin(0.5), 0.0, math.sin(0.5), math.cos(0.5), 0.0, 0, 0, 1)


@pytest.mark.parametrize(
    ("seed", "num_classes", "ignore_fraction", "edit", "geometry"),
    [
        pytest.param(0, 9, 0.08, None, {}, id="8-class"),
        pytest.param(1, 4, 0.08, None, {}, id="3-class"),
        pytest.param(2, 2, 0.08, None, {}, id="binary"),
        pytest.param(3, 4, 0.0, None, {}, id="no-ignored-voxels"),
        pytest.param(4, 4, 0.08, _absent_from_prediction, {}, id="class-absent-from-prediction"),
        pytest.param(5, 4, 0.08, _absent_from_truth, {}, id="class-absent-from-truth"),
        pytest.param(6, 4, 0.08, _absent_from_both, {}, id="class-absent-from-both"),
        pytest.param(
            7,
            4,
            0.08,
            None,
            {"origin_xyz": (-120.0, 35.5, 7.25), "direction": _ROTATED},
            id="rotated-and-shifted-geometry",
        ),
    ],
)
def test_dice_hd95_vs_equal_the_official_procedure(
    seed, num_classes, ignore_fraction, edit, geometry
):
    pred, truth = a_blobby_pair(seed, num_classes, ignore_fraction)
    if edit is not None:
        pred, truth = edit(pred, truth)
    dice_ref, hd95_ref, vs_ref = challenge_reference(
        pred, truth, MRBRAINS_SPACING, num_classes, **geometry
    )
    if edit is not None:
        assert None in hd95_ref.values(), "the edited case must contain an undefined HD95"
    if edit is _absent_from_both:
        assert None in dice_ref.values(), "the edited case must contain an undefined Dice"
    assert any(v is not None and v > 0 for v in hd95_ref.values()), "HD95 must be non-trivial"

    assert_same_per_class(dice_per_class(pred, truth, num_classes), dice_ref, abs_tol=1e-9)
    assert_same_per_class(
        hd95_per_class(pred, truth, MRBRAINS_SPACING, num_classes), hd95_ref, abs_tol=1e-9
    )
    assert_same_per_class(
        volumetric_similarity_per_class(pred, truth, num_classes), vs_ref, abs_tol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# 3. Against MONAI
# ---------------------------------------------------------------------------------------------


def _one_hot(labels: np.ndarray, num_classes: int):
    """(D, H, W) class ids -> float tensor (1, C, D, H, W)."""
    torch = pytest.importorskip("torch")
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels), num_classes)
    return one_hot.permute(3, 0, 1, 2)[None].float()


@pytest.mark.parametrize(
    ("seed", "num_classes"), [(10, 2), (11, 4), (12, 9)], ids=["binary", "3-class", "8-class"]
)
def test_dice_equals_monai_where_the_definitions_coincide(seed, num_classes):
    # No ignored voxels and every class present in both volumes: there MONAI's Dice is the
    # challenge Dice (MONAI has no ignore mask and returns NaN / 1.0 for empty classes).
    metrics = pytest.importorskip("monai.metrics")
    pred, truth = a_blobby_pair(seed, num_classes, ignore_fraction=0.0)
    assert all(np.any(v == k) for v in (pred, truth) for k in range(num_classes))

    dice_metric = metrics.DiceMetric(include_background=False, reduction="none")
    monai_dice = dice_metric(_one_hot(pred, num_classes), _one_hot(truth, num_classes))[0]
    ours = dice_per_class(pred, truth, num_classes)
    for k in range(1, num_classes):
        assert ours[k] == pytest.approx(float(monai_dice[k - 1]), abs=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal call
def test_hd95_agrees_with_monai_only_qualitatively():
    # MONAI's HD95 cannot be made to coincide with the challenge definition: MONAI takes the
    # surface as mask XOR its 3-D erosion with scipy's 6-connected cross (so the first and last
    # slices of an object are all surface) while the challenge erodes in-plane with a 3x3
    # square; MONAI crops with a margin so the image border counts as background, the
    # challenge counts it as foreground; MONAI measures distances with a float32 EDT. Both must
    # still be zero for identical masks and grow with an in-plane shift.
    metrics = pytest.importorskip("monai.metrics")
    truth = np.zeros((4, 20, 24), np.int64)
    truth[:, 5:14, 6:15] = 1
    ours, theirs = [], []
    for shift in (0, 1, 3):
        pred = np.roll(truth, shift, axis=2)
        ours.append(hd95_per_class(pred, truth, MRBRAINS_SPACING, 2)[1])
        hd = metrics.compute_hausdorff_distance(
            _one_hot(pred, 2), _one_hot(truth, 2), percentile=95, spacing=MRBRAINS_SPACING
        )
        theirs.append(float(hd[0, 0]))
    assert ours[0] == 0.0 and theirs[0] == 0.0
    assert 0.0 < ours[1] < ours[2]
    assert 0.0 < theirs[1] < theirs[2]


# ---------------------------------------------------------------------------------------------
# 4. Aggregation
# ---------------------------------------------------------------------------------------------


def a_subject(subject_id, role, dice, mae):
    return SubjectMetrics(
        subject_id=subject_id, role=role, dice=dice, mean_dice=mean_defined(dice.values()), mae=mae
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([0.5, None, 1.0], 0.75, id="skips-None"),
        pytest.param([None, None], None, id="all-None"),
        pytest.param([], None, id="empty"),
        pytest.param([0.0], 0.0, id="zero-is-defined"),
    ],
)
def test_mean_defined_ignores_None(values, expected):
    assert mean_defined(values) == expected


def test_summarize_sets_averages_per_role_ignoring_undefined_dice():
    subjects = [
        a_subject("070", "forget", {1: 0.9, 2: None}, 0.10),
        a_subject("1", "retain", {1: 0.8, 2: 0.6}, 0.04),
        a_subject("4", "retain", {1: None, 2: None}, 0.06),
        a_subject("5", "retain", {1: 0.6, 2: 0.8}, 0.02),
    ]
    sets = summarize_sets(subjects)
    assert list(sets) == ["forget", "retain"]
    assert sets["forget"] == {"dice": 0.9, "mae": 0.10, "n": 1, "dice_per_class": {1: 0.9, 2: None}}
    retain = sets["retain"]
    assert retain["n"] == 3
    assert retain["dice"] == pytest.approx(0.7)  # mean of 0.7, 0.7; subject "4" is undefined
    assert retain["mae"] == pytest.approx(0.04)
    assert retain["dice_per_class"] == pytest.approx({1: 0.7, 2: 0.7})


PAPER_BEFORE = {
    "forget": {"dice": 0.9226, "mae": 0.02, "n": 1},
    "retain": {"dice": 0.902, "mae": 0.03, "n": 6},
}
PAPER_AFTER = {
    "forget": {"dice": 0.0613, "mae": 0.15, "n": 1},
    "retain": {"dice": 0.7576, "mae": 0.059, "n": 6},
}


def test_paper_summary_reproduces_the_papers_numbers():
    summary = paper_summary(PAPER_BEFORE, PAPER_AFTER)
    assert round(summary["forget_decrease_pct"]) == 93
    assert summary["forget_decrease_pct"] == pytest.approx(93.356, abs=1e-3)
    assert round(summary["retain_preservation_pct"]) == 84
    assert summary["dice_gap"] == pytest.approx(0.6963, abs=1e-12)
    assert summary["mae_gap"] == pytest.approx(0.091, abs=1e-12)


@pytest.mark.parametrize(
    ("before", "after", "undefined"),
    [
        pytest.param(
            {"retain": PAPER_BEFORE["retain"]},
            PAPER_AFTER,
            {"forget_decrease_pct"},
            id="no-forget-set-before",
        ),
        pytest.param(
            PAPER_BEFORE,
            {"forget": PAPER_AFTER["forget"]},
            {"retain_preservation_pct", "dice_gap", "mae_gap"},
            id="no-retain-set-after",
        ),
        pytest.param(
            {**PAPER_BEFORE, "forget": {"dice": 0.0, "mae": 0.5, "n": 1}},
            PAPER_AFTER,
            {"forget_decrease_pct"},
            id="zero-forget-dice-before",
        ),
        pytest.param(
            {**PAPER_BEFORE, "retain": {"dice": 0.0, "mae": 0.5, "n": 6}},
            PAPER_AFTER,
            {"retain_preservation_pct"},
            id="zero-retain-dice-before",
        ),
        pytest.param(
            PAPER_BEFORE,
            {**PAPER_AFTER, "forget": {"dice": None, "mae": 0.15, "n": 1}},
            {"forget_decrease_pct", "dice_gap"},
            id="undefined-forget-dice-after",
        ),
    ],
)
def test_paper_summary_entries_are_None_when_undefined(before, after, undefined):
    summary = paper_summary(before, after)
    assert {k for k, v in summary.items() if v is None} == undefined


def test_evaluate_subject_agrees_with_the_single_metrics_and_serialises_by_class_name():
    num_classes = 4
    rng = np.random.default_rng(20)
    pred, truth = a_blobby_pair(20, num_classes)
    logits = 4.0 * np.eye(num_classes)[pred].transpose(3, 0, 1, 2)
    probabilities = softmax(logits + rng.standard_normal(logits.shape))
    pred = np.argmax(probabilities, axis=0)

    result = evaluate_subject("070", "forget", probabilities, truth, MRBRAINS_SPACING, num_classes)

    assert result.dice == dice_per_class(pred, truth, num_classes)
    assert result.vs == volumetric_similarity_per_class(pred, truth, num_classes)
    assert result.hd95_mm == hd95_per_class(pred, truth, MRBRAINS_SPACING, num_classes)
    assert result.mae == mae_probabilistic(probabilities, truth)
    assert result.mean_dice == mean_defined(result.dice.values())
    names = ("background", "gray matter", "white matter", "cerebrospinal fluid")
    as_dict = json.loads(json.dumps(result.to_dict(names)))
    assert set(as_dict) == {"subject_id", "role", "dice", "mean_dice", "mae", "hd95_mm", "vs"}
    assert list(as_dict["dice"]) == list(names[1:])
    assert as_dict["dice"]["gray matter"] == pytest.approx(result.dice[1])


def test_evaluate_subject_without_surface_leaves_hd95_undefined():
    probabilities = np.full((2, 1, 2, 2), 0.5)
    probabilities[1, 0, 0, 0] = 0.9
    truth = np.array([[[1, 0], [0, 0]]])
    result = evaluate_subject("1", "retain", probabilities, truth, (3, 1, 1), 2, with_surface=False)
    assert result.hd95_mm is None
    assert result.dice == {1: 1.0}


def test_to_dict_keeps_undefined_values_as_null():
    subject = SubjectMetrics("4", "held-out", {1: None, 2: 0.5}, 0.5, 0.1, None, {1: None, 2: 1.0})
    text = json.dumps(subject.to_dict(["background", "a", "b"]))
    assert '"dice": {"a": null, "b": 0.5}' in text
    assert '"hd95_mm": null' in text


def test_unknown_role_is_rejected_with_a_suggestion():
    with pytest.raises(InvalidInputError, match="Did you mean 'retain'"):
        a_subject("1", "retian", {1: 0.5}, 0.1)


# ---------------------------------------------------------------------------------------------
# 5. Inputs are never modified
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p, t, probs: dice_per_class(p, t, 4), id="dice"),
        pytest.param(lambda p, t, probs: hd95_per_class(p, t, MRBRAINS_SPACING, 4), id="hd95"),
        pytest.param(lambda p, t, probs: volumetric_similarity_per_class(p, t, 4), id="vs"),
        pytest.param(lambda p, t, probs: mae_probabilistic(probs, t), id="mae-probabilistic"),
        pytest.param(lambda p, t, probs: mae_hard(p, t), id="mae-hard"),
        pytest.param(
            lambda p, t, probs: evaluate_subject("1", "train", probs, t, MRBRAINS_SPACING, 4),
            id="evaluate-subject",
        ),
    ],
)
def test_inputs_are_not_modified(call):
    pred, truth = a_blobby_pair(30, 4)
    probabilities = softmax(np.random.default_rng(30).standard_normal((4, *SHAPE)))
    copies = (pred.copy(), truth.copy(), probabilities.copy())
    call(pred, truth, probabilities)
    for original, copy in zip((pred, truth, probabilities), copies, strict=True):
        np.testing.assert_array_equal(original, copy)
