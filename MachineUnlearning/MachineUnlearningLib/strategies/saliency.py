"""Mechanic: a weight-saliency mask; weights outside it keep their original values (SalUn).

Saliency of a weight = |d L_f / d theta| at the original weights, with L_f the mean voxel-wise
cross-entropy of the forget subjects with their true labels (the sign of SalUn's -L_f does not
matter under the absolute value). The mask holds the top ``fraction`` of all parameter entries
by saliency, with one global threshold over every parameter tensor (exactly
``round(fraction * N)`` entries). Training then updates only masked entries, as
OPTML-Group/Unlearn-Saliency's ``Classification/unlearn/RL.py`` does (``_apply_mask_to_grads``
after ``backward``, ``_restore_masked_params`` after ``optimizer.step``): :class:`KeepUnmasked`
multiplies every gradient by the mask before the loop clips it (so the clip bounds the masked
update, not the whole gradient), and after every optimiser step sets
``theta = m * theta' + (1 - m) * theta_o`` (undoing weight decay and momentum on the others).
BatchNorm running statistics are buffers, not weights, and move as in any training run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.strategies.gradients import mean_gradient

Mask = dict[str, torch.Tensor]  # parameter name -> bool tensor of the parameter's shape


def top_fraction_mask(scores: dict[str, torch.Tensor], fraction: float) -> Mask:
    """True for the ``round(fraction * N)`` highest-scoring entries over all tensors together."""
    if not 0.0 <= fraction <= 1.0:
        raise InvalidInputError(
            f"strategy_params.mask_fraction: must be in [0, 1], got {fraction}.",
            hint="e.g. 0.5 (SalUn's default: half of the weights may change).",
        )
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    k = round(fraction * flat.numel())
    if k:
        chosen[torch.topk(flat, k, sorted=False).indices] = True
    mask, start = {}, 0
    for name, s in scores.items():
        mask[name] = chosen[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return mask


def saliency_mask(
    model: torch.nn.Module,
    source: SampleSource,
    forget_ids: Sequence[str],
    device: torch.device,
    fraction: float,
) -> Mask:
    """SalUn's mask of ``model`` (at its current weights) for the forget subjects."""
    gradient = mean_gradient(model, source, forget_ids, device)
    return top_fraction_mask({n: g.abs() for n, g in gradient.items()}, fraction)


class KeepUnmasked:
    """``after_step`` hook: entries outside ``mask`` go back to their values at construction;
    its ``on_gradients`` zeroes their gradients before clipping.

    Holds a copy of every parameter (one model's worth of memory) and the mask.
    """

    def __init__(self, model: torch.nn.Module, mask: Mask) -> None:
        self.mask = mask
        self.reference = {n: p.detach().clone() for n, p in model.named_parameters()}
        missing = sorted(set(self.reference) - set(mask))
        if missing:
            raise ValueError(f"the mask lacks parameters {missing[:3]}...")

    @torch.no_grad()
    def on_gradients(self, model: torch.nn.Module) -> None:
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(self.mask[name].to(parameter.grad.device))

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> None:
        for name, parameter in model.named_parameters():
            kept = self.reference[name].to(parameter.device)
            parameter.copy_(torch.where(self.mask[name].to(parameter.device), parameter, kept))
