"""Running a model on subjects and scoring it on their original grids.

Predictions follow the MedicalNet test pipeline: preprocess, softmax on the output grid, resize
the probabilities (trilinear) back to the crop box on the original grid, argmax there. Metrics
(``metrics.py``) are computed on that original grid, so they are comparable with the
MRBrainS18 challenge's; every evaluation (including the stopping rule's per-epoch one) uses it,
no cheaper grid. What keeps it cheap: inputs are the source's cached samples, the argmax is
taken once and only inside the crop box, and predictions are kept in memory as uint8 maps
(the commands write them as NIfTI once, at the end).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from MachineUnlearningLib.data.patches import SLIDING_WINDOW, sliding_window_logits
from MachineUnlearningLib.data.preprocessing import class_targets_on_grid, restore_probabilities
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.evaluation.audit import SubjectSignals
from MachineUnlearningLib.evaluation.metrics import SubjectMetrics, evaluate_subject, summarize_sets
from MachineUnlearningLib.evaluation.signals import subject_signals
from MachineUnlearningLib.runtime.device import translate_out_of_memory


@dataclass(frozen=True)
class Evaluation:
    """One model scored on a set of subjects at one epoch.

    Attributes:
        model: ``original``, ``unlearned``, ``retrained`` or ``baseline``.
        epoch: training epoch of the model (0 = before unlearning), or None.
        subjects: per-subject metrics.
        predictions: subject id -> (D, H, W) uint8 class map, for the subjects asked to keep.
        signals: per-subject membership signals (the privacy audit's input).
    """

    model: str
    epoch: int | None
    subjects: list[SubjectMetrics]
    predictions: dict[str, np.ndarray]
    signals: list[SubjectSignals]

    def sets(self) -> dict:
        return summarize_sets(self.subjects)

    def to_dict(self, class_names: list[str]) -> dict:
        sets = {
            role: {"dice": v["dice"], "mae": v["mae"], "n": v["n"]}
            for role, v in self.sets().items()
        }
        return {
            "model": self.model,
            "epoch": self.epoch,
            "subjects": [s.to_dict(class_names) for s in self.subjects],
            "sets": sets,
        }


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, source: SampleSource, subject_id: str, device: torch.device
) -> torch.Tensor:
    """(C, D, H, W) softmax probabilities of ``model`` for one subject, on its original grid:
    one pass over the whole sample or, for a patch-trained model, sliding windows over it."""
    sample = source.sample(subject_id)
    model.eval()
    with translate_out_of_memory("inference"):
        image = sample.image[None].to(device)
        if source.sampling.inference == SLIDING_WINDOW:
            logits = sliding_window_logits(model, image, source.sampling)
        else:
            logits = model(image)
    probabilities = torch.softmax(logits.float(), dim=1)[0].cpu()
    return restore_probabilities(probabilities, sample)


def argmax_on_grid(probabilities: torch.Tensor, box: tuple[int, ...]) -> np.ndarray:
    """``argmax(probabilities, axis=0)`` as (D, H, W) uint8, computed inside the crop ``box``
    only: outside it the restored probabilities are background with probability 1, whose
    argmax is 0. Ties go to the lower class, as ``np.argmax``'s first maximum."""
    z0, z1, y0, y1, x0, x1 = box
    inside = probabilities[:, z0:z1, y0:y1, x0:x1]
    best, label = inside[0].clone(), torch.zeros(inside.shape[1:], dtype=torch.uint8)
    for c in range(1, inside.shape[0]):
        higher = inside[c] > best
        label[higher] = c
        torch.maximum(best, inside[c], out=best)
    labels = np.zeros(probabilities.shape[1:], dtype=np.uint8)
    labels[z0:z1, y0:y1, x0:x1] = label.numpy()
    return labels


def evaluate_model(
    model: torch.nn.Module,
    source: SampleSource,
    roles: Mapping[str, str],
    device: torch.device,
    model_name: str,
    epoch: int | None,
    with_surface: bool = True,
    keep_predictions: tuple[str, ...] = (),
) -> Evaluation:
    """Score ``model`` on every subject in ``roles`` (subject id -> role).

    ``keep_predictions`` names the subjects whose argmax maps are kept in the result. Each
    subject's input is the source's cached sample; its argmax is computed once (inside the
    crop box) and serves the metrics and the kept prediction.
    """
    results, predictions, signals = [], {}, []
    for subject_id, role in roles.items():
        probabilities = predict_probabilities(model, source, subject_id, device)
        labels = argmax_on_grid(probabilities, source.sample(subject_id).box)
        volumes = source.volumes[subject_id]
        truth = class_targets_on_grid(volumes, source.policy)
        scored = evaluate_subject(
            subject_id,
            role,
            probabilities.numpy(),
            truth,
            volumes.spacing_mm,
            source.policy.num_classes,
            with_surface=with_surface,
            prediction=labels,
        )
        results.append(scored)
        signals.append(subject_signals(subject_id, role, probabilities, truth, scored.mean_dice))
        if subject_id in keep_predictions:
            predictions[subject_id] = labels
    return Evaluation(
        model=model_name, epoch=epoch, subjects=results, predictions=predictions, signals=signals
    )
