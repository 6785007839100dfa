"""Evaluation's shortcuts change no number: one argmax inside the crop box (against the plain
full-grid argmax) and HD95 that queries only the boundary voxels the masks do not share
(against brute-force distances; test_metrics.py checks HD95 against SimpleITK too)."""

from __future__ import annotations

import numpy as np
import torch

from conftest import TINY_SOURCE_IDS, a_tiny_model
from MachineUnlearningLib.data.preprocessing import class_targets_on_grid
from MachineUnlearningLib.evaluation import metrics
from MachineUnlearningLib.evaluation.metrics import evaluate_subject
from MachineUnlearningLib.evaluation.predict import (
    argmax_on_grid,
    evaluate_model,
    predict_probabilities,
)

CPU = torch.device("cpu")


def test_argmax_in_the_box_equals_the_full_grid_argmax_with_ties():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.zeros(4, 6, 9, 11)
    probabilities[0] = 1.0
    inside = torch.randint(0, 3, (4, 3, 5, 6), generator=generator).float() / 2  # many ties
    probabilities[:, 2:5, 1:6, 4:10] = inside
    labels = argmax_on_grid(probabilities, (2, 5, 1, 6, 4, 10))
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.argmax(probabilities.numpy(), axis=0))


def test_evaluate_model_equals_the_plain_full_grid_evaluation(a_tiny_source):
    model = a_tiny_model(seed=3)
    roles = {i: "retain" for i in TINY_SOURCE_IDS}
    evaluation = evaluate_model(
        model, a_tiny_source, roles, CPU, "x", 0, keep_predictions=TINY_SOURCE_IDS
    )
    for scored in evaluation.subjects:
        subject_id = scored.subject_id
        probabilities = predict_probabilities(model, a_tiny_source, subject_id, CPU)
        volumes = a_tiny_source.volumes[subject_id]
        plain = evaluate_subject(
            subject_id,
            "retain",
            probabilities.numpy(),
            class_targets_on_grid(volumes, a_tiny_source.policy),
            volumes.spacing_mm,
            a_tiny_source.policy.num_classes,
        )
        assert scored == plain
        np.testing.assert_array_equal(
            evaluation.predictions[subject_id],
            probabilities.argmax(0).numpy().astype(np.uint8),
        )
    assert any(s.hd95_mm and any(v for v in s.hd95_mm.values()) for s in evaluation.subjects)


def test_hd95_equals_brute_force_distances_between_boundaries():
    rng = np.random.default_rng(4)
    spacing = np.array([3.0, 0.958, 0.958])
    for _ in range(5):
        a = np.zeros((6, 20, 20), dtype=bool)
        a[1:5, 3:15, 4:16] = True
        b = a.copy()
        b[2:4, rng.integers(2, 8) : 12, 5:18] = True  # shares most of its boundary with a
        b[1, 3:6, 4:9] = False
        boundary_a = np.argwhere(metrics._challenge_boundary(a)) * spacing
        boundary_b = np.argwhere(metrics._challenge_boundary(b)) * spacing
        pairwise = np.linalg.norm(boundary_a[:, None] - boundary_b[None], axis=2)
        expected = max(
            np.percentile(pairwise.min(axis=1), 95), np.percentile(pairwise.min(axis=0), 95)
        )
        assert metrics._hd95_of_masks(a, b, spacing) == expected
