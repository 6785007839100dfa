"""Per-sample loss maths used by the training loop (pure functions, no state).

Shapes: logits ``(B, C, d, h, w)``; label maps ``(B, d', h', w')`` int64 class ids with -1 =
ignored. When the label grid is finer than the logits' (the cpu-demo recipe trains on the input
grid), logits are upsampled to it (trilinear) before any loss, as for cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from MachineUnlearningLib.data.labels import IGNORE_INDEX


def on_label_grid(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits`` (B, C, d, h, w) as float32 on ``target``'s (B, d', h', w') grid."""
    logits = logits.float()
    if logits.shape[2:] != target.shape[1:]:
        logits = F.interpolate(logits, size=target.shape[1:], mode="trilinear", align_corners=False)
    return logits


def voxel_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL_vox(p_teacher || p_student) in nats.

    The mean over the non-ignored voxels of ``target`` of
    ``sum_c p_t,c (log p_t,c - log p_s,c)``, with ``p = softmax(logits / temperature)`` over
    the class axis (no ``temperature**2`` factor). Only the student's logits carry gradient.

    Args:
        student_logits: (B, C, d, h, w).
        teacher_logits: (B, C, d, h, w), same shape.
        target: (B, d', h', w') int64; only its ignore mask (-1) is used.
        temperature: softmax temperature, > 0.
    Returns:
        scalar tensor; 0 when every voxel is ignored.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_student = torch.log_softmax(on_label_grid(student_logits, target) / temperature, dim=1)
    log_teacher = torch.log_softmax(
        on_label_grid(teacher_logits.detach(), target) / temperature, dim=1
    )
    per_voxel = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(1)
    keep = target != IGNORE_INDEX  # (B, d', h', w')
    return (per_voxel * keep).sum() / keep.sum().clamp_min(1)
