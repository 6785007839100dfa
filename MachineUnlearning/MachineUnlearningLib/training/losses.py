"""Per-sample loss maths used by the training loop (pure functions, no state).

Shapes: logits ``(B, C, d, h, w)``; label maps ``(B, d', h', w')`` int64 class ids with -1 =
ignored. When the label grid is finer than the logits' (the cpu-demo recipe trains on the input
grid), logits are upsampled to it (trilinear, PyTorch's ``align_corners=False`` convention)
before any loss.

Two choices keep the input-grid loss lean (docs/benchmarks.md section 2 measures them):

- the upsampling is separable: three small matrix products (one per axis) instead of
  ``F.interpolate``, whose CPU backward is a slow scatter; same weights, results equal to
  ``F.interpolate`` to float32 rounding (max abs difference ~1e-6 on logits of size ~10);
- cross-entropy and the masked soft Dice of :func:`task_loss` are one autograd node with a
  closed-form gradient: one log-softmax, one exp and the per-class sums in the forward pass,
  the gradient in a few in-place passes, instead of autograd through softmax, log-softmax,
  one-hot and masked copies of every full-size tensor. The value equals
  ``F.cross_entropy(..., ignore_index=-1)`` + MONAI's ``MaskedDiceLoss(softmax=True,
  to_onehot_y=True, include_background=False)`` to float32 summation order (relative
  difference ~1e-6; ``Testing/test_losses.py`` checks value and gradient against them).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from MachineUnlearningLib.data.labels import IGNORE_INDEX

DICE_SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr and smooth_dr defaults
TASK_LOSSES = ("ce", "dice-ce")


@lru_cache(maxsize=32)
def _interpolation_matrix(
    n_in: int, n_out: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(n_out, n_in) linear-interpolation weights of PyTorch's ``align_corners=False``:
    source position ``(i + 0.5) * n_in / n_out - 0.5``, clamped at 0, between two neighbours
    (the last one repeated at the upper edge)."""
    position = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(0)
    low = position.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    upper = position - low
    rows = torch.arange(n_out)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix.index_put_((rows, low), 1.0 - upper, accumulate=True)
    matrix.index_put_((rows, high), upper, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def upsample_trilinear(volume: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize of ``volume`` (B, C, d, h, w) to ``size`` (D, H, W), as
    ``F.interpolate(mode="trilinear", align_corners=False)`` computes it, by one matrix
    product per axis (differentiable; its backward is three more matrix products)."""
    b, c, d, h, w = volume.shape
    depth, height, width = (int(n) for n in size)
    weights = [
        _interpolation_matrix(n_in, n_out, volume.device, volume.dtype)
        for n_in, n_out in ((d, depth), (h, height), (w, width))
    ]
    out = volume if w == width else volume @ weights[2].T  # (B, C, d, h, W)
    out = out if h == height else weights[1] @ out  # (B, C, d, H, W)
    if d != depth:
        out = (weights[0] @ out.reshape(b, c, d, height * width)).reshape(
            b, c, depth, height, width
        )
    return out


def on_label_grid(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits`` (B, C, d, h, w) as float32 on ``target``'s (B, d', h', w') grid."""
    logits = logits.float()
    if logits.shape[2:] != target.shape[1:]:
        logits = upsample_trilinear(logits, tuple(target.shape[1:]))
    return logits


def task_loss(logits: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Cross-entropy (``ce``) or cross-entropy + masked soft Dice (``dice-ce``) in nats.

    Args:
        logits: (B, C, d, h, w); upsampled to ``target``'s grid when that is finer.
        target: (B, d', h', w') int64 class ids, -1 ignored.
        loss: ``ce`` or ``dice-ce``.
    Returns:
        scalar: the mean cross-entropy over non-ignored voxels (0 when all are ignored), plus
        for ``dice-ce`` the mean over samples and foreground classes c of
        ``1 - (2 TP_c + s) / (P_c + G_c + s)`` (soft TP and P from the softmax, over
        non-ignored voxels; s = 1e-5; MONAI's ``MaskedDiceLoss`` formula).
    """
    if loss not in TASK_LOSSES:
        raise ValueError(f"loss must be one of {TASK_LOSSES}, got {loss!r}")
    return _SoftmaxTaskLoss.apply(on_label_grid(logits, target), target, loss == "dice-ce")


class _SoftmaxTaskLoss(torch.autograd.Function):
    """CE (+ soft Dice) of float32 logits already on the target grid, closed-form gradient.

    Gradient, per non-ignored voxel v of sample b and class k (p = softmax, y = true class,
    n = number of non-ignored voxels, K = B (C - 1), D_c = P_c + G_c + s, N_c = 2 TP_c + s):
    CE: (p_vk - [k = y_v]) / n. Dice: p_vk (g_vk - sum_c p_vc g_vc) with
    g_vc = alpha_c [c = y_v] + beta_c, alpha_c = -2 / (K D_c), beta_c = N_c / (K D_c^2) for
    c >= 1 and 0 for the background.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, target: torch.Tensor, with_dice: bool) -> torch.Tensor:
        batch, classes = z.shape[:2]
        flat = z.reshape(batch, classes, -1)
        labels = target.reshape(batch, 1, -1)
        valid = labels != IGNORE_INDEX  # (B, 1, N)
        all_valid = bool(valid.all())
        if not all_valid:
            labels = labels.clamp_min(0)
        count = valid.sum().clamp_min(1).to(z.dtype)
        log_p = torch.log_softmax(flat, dim=1)  # (B, C, N)
        log_p_true = log_p.gather(1, labels)  # (B, 1, N)
        if not all_valid:
            log_p_true = log_p_true.masked_fill(~valid, 0.0)
        value = -log_p_true.sum() / count
        p = log_p.exp_()  # softmax, in place: the log-probabilities are not needed again
        alpha = beta = None
        if with_dice:
            p_true = log_p_true.exp()
            if not all_valid:
                p_true.masked_fill_(~valid, 0.0)
            predicted = (p if all_valid else p * valid).sum(2)  # (B, C)
            # per-class sums by bincount in float64: a float32 scatter-add of ~1e6 values
            # into 4 bins loses ~1e-5 relative
            bins = (labels[:, 0] + classes * torch.arange(batch, device=z.device)[:, None]).reshape(
                -1
            )
            true_positive = _class_sums(bins, p_true.reshape(-1), batch, classes)
            truth = _class_sums(bins, None if all_valid else valid.reshape(-1), batch, classes)
            numerator = 2 * true_positive + DICE_SMOOTH
            denominator = predicted + truth + DICE_SMOOTH
            per_class = 1 - numerator[:, 1:] / denominator[:, 1:]
            value = value + per_class.mean()
            scale = per_class.numel()
            alpha = -2 / (scale * denominator)
            beta = numerator / (scale * denominator**2)
            alpha[:, 0] = 0
            beta[:, 0] = 0
        ctx.save_for_backward(p, labels, valid if not all_valid else None, count)
        ctx.dice = (alpha, beta)
        ctx.shape = z.shape
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        p, labels, valid, count = ctx.saved_tensors
        alpha, beta = ctx.dice
        ce_weight = grad_output / count
        if alpha is None:
            grad = p.mul_(ce_weight)  # p is not needed after this; reuse its memory
            grad.scatter_add_(1, labels, ce_weight.neg().expand(labels.shape))
        else:
            p_true = p.gather(1, labels)  # (B, 1, N)
            alpha, beta = alpha * grad_output, beta * grad_output
            alpha_true = alpha.gather(1, labels[:, 0])[:, None]  # (B, 1, N)
            # s_v = sum_c p_vc g_vc = sum_c beta_c p_vc + alpha_{y_v} p_{v, y_v}
            mixed = torch.einsum("bc,bcn->bn", beta, p)[:, None]
            mixed.addcmul_(alpha_true, p_true)
            grad = p.mul_((ce_weight + beta)[:, :, None] - mixed)
            grad.scatter_add_(1, labels, alpha_true.mul_(p_true).sub_(ce_weight))
        if valid is not None:
            grad.masked_fill_(~valid, 0.0)
        ctx.dice = None
        return grad.reshape(ctx.shape), None, None


def _class_sums(
    bins: torch.Tensor, weights: torch.Tensor | None, batch: int, classes: int
) -> torch.Tensor:
    """(B, C) float32 sums of ``weights`` (None = ones) by ``bins`` = class + C * sample."""
    weights = None if weights is None else weights.double()
    counts = torch.bincount(bins, weights=weights, minlength=batch * classes)
    return counts.reshape(batch, classes).float()


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
    with torch.no_grad():
        log_teacher = torch.log_softmax(on_label_grid(teacher_logits, target) / temperature, dim=1)
    per_voxel = torch.nn.functional.kl_div(
        log_student, log_teacher, reduction="none", log_target=True
    ).sum(1)
    keep = target != IGNORE_INDEX  # (B, d', h', w')
    return (per_voxel * keep).sum() / keep.sum().clamp_min(1)
