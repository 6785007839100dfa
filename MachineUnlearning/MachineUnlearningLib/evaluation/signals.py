"""Per-subject membership signals of a model, the privacy audit's input.

Computed on the subject's original grid from the model's softmax probabilities, over the
ground-truth foreground voxels only (labels > 0 of the policy): background dominates a brain
MRI and carries little membership signal, so whole-volume means would hide it.
"""

from __future__ import annotations

import numpy as np
import torch

from MachineUnlearningLib.evaluation.audit import SubjectSignals

EPSILON = 1e-6


def subject_signals(
    subject_id: str,
    role: str,
    probabilities: torch.Tensor,
    truth: np.ndarray,
    mean_dice: float | None,
) -> SubjectSignals:
    """Signals of one subject.

    Args:
        probabilities: (C, D, H, W) softmax output on the original grid.
        truth: (D, H, W) class ids (-1 ignored).
        mean_dice: the subject's mean foreground Dice.
    Returns:
        loss (mean CE in nats), confidence (mean p_y), entropy (nats), logit_confidence
        (mean log p_y - log(1 - p_y)), all over foreground voxels, and the Dice.
    """
    target = torch.from_numpy(np.asarray(truth, dtype=np.int64))
    foreground = target > 0
    if not bool(foreground.any()):
        return SubjectSignals(subject_id=subject_id, role=role, dice=mean_dice)
    p = probabilities[:, foreground].clamp(EPSILON, 1 - EPSILON)  # (C, N)
    p_true = p.gather(0, target[foreground][None])[0]
    entropy = -(p * p.log()).sum(0)
    return SubjectSignals(
        subject_id=subject_id,
        role=role,
        loss=float(-p_true.log().mean()),
        dice=mean_dice,
        confidence=float(p_true.mean()),
        entropy=float(entropy.mean()),
        logit_confidence=float((p_true.log() - (1 - p_true).log()).mean()),
    )
