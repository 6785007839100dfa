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
        valid = None if bool(labels.min() >= 0) else labels != IGNORE_INDEX  # labels >= -1
        if valid is not None:
            labels = labels.clamp_min(0)
        count = labels.numel() if valid is None else max(int(valid.sum()), 1)
        log_p = torch.log_softmax(flat, dim=1)  # (B, C, N)
        log_p_true = log_p.gather(1, labels)  # (B, 1, N)
        if valid is not None:
            log_p_true.masked_fill_(~valid, 0.0)
        value = (-log_p_true.sum(dtype=torch.float64) / count).to(z.dtype)
        p = log_p.exp_()  # softmax, in place: the log-probabilities are not needed again
        alpha = beta = p_true = None
        if with_dice:
            p_true = log_p_true.exp_()  # (B, 1, N); its log is not needed again either
            if valid is not None:
                p_true.masked_fill_(~valid, 0.0)
            predicted = (p if valid is None else p * valid).sum(2)  # (B, C)
            bins = labels.reshape(-1)  # class + C * sample
            if batch > 1:
                offsets = classes * torch.arange(batch, device=z.device)[:, None, None]
                bins = (labels + offsets).reshape(-1)
            # per-class sums in float64: a float32 scatter-add of ~1e6 values into a few bins
            # loses ~1e-5 relative
            true_positive = torch.zeros(batch * classes, dtype=torch.float64, device=z.device)
            true_positive.scatter_add_(0, bins, p_true.reshape(-1).double())
            counted = (
                torch.ones(1, dtype=torch.int64, device=z.device).expand(bins.numel())
                if valid is None
                else valid.reshape(-1).long()
            )
            truth = torch.zeros(batch * classes, dtype=torch.int64, device=z.device)
            truth.index_add_(0, bins, counted)
            numerator = (2 * true_positive + DICE_SMOOTH).to(z.dtype).reshape(batch, classes)
            denominator = predicted + truth.reshape(batch, classes) + DICE_SMOOTH
            per_class = 1 - numerator[:, 1:] / denominator[:, 1:]
            value = value + per_class.mean()
            scale = per_class.numel()
            alpha = -2 / (scale * denominator)
            beta = numerator / (scale * denominator**2)
            alpha[:, 0] = 0
            beta[:, 0] = 0
        ctx.save_for_backward(p, labels)
        ctx.state = (valid, count, p_true, alpha, beta, z.shape)
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        p, labels = ctx.saved_tensors
        valid, count, p_true, alpha, beta, shape = ctx.state
        ctx.state = None
        ce_weight = grad_output / count
        if alpha is None:
            grad = p.mul_(ce_weight)  # p is not needed after this; reuse its memory
            grad.scatter_add_(1, labels, ce_weight.neg().expand(labels.shape))
        else:
            alpha, beta = alpha * grad_output, beta * grad_output
            alpha_true = alpha.gather(1, labels[:, 0])[:, None]  # (B, 1, N)
            # s_v = sum_c p_vc g_vc = sum_c beta_c p_vc + alpha_{y_v} p_{v, y_v}
            mixed = torch.einsum("bc,bcn->bn", beta, p)[:, None]
            mixed.addcmul_(alpha_true, p_true)
            grad = p.mul_((ce_weight + beta)[:, :, None] - mixed)
            grad.scatter_add_(1, labels, alpha_true.mul_(p_true).sub_(ce_weight))
        if valid is not None:
            grad.masked_fill_(~valid, 0.0)
        return grad.reshape(shape), None, None


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
