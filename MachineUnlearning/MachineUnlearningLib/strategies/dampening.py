"""Mechanic: selective synaptic dampening (SSD; Foster et al. 2023, arXiv 2308.07707).

Importances are diagonal Fisher estimates: ``I_D`` = mean over D (retain and forget subjects)
of the squared per-subject gradient of the voxel-wise cross-entropy, ``I_f`` = the same over
the forget subjects (``gradients.py``: true labels, BatchNorm in eval mode, one subject = one
batch). Every parameter entry with ``I_f > alpha * I_D`` is multiplied by
``min(lambda * I_D / I_f, 1)``; every other entry is left bit-identical. No training follows.

Because D contains the forget subjects, ``I_D >= (|F| / |D|) * I_f`` entry by entry, so an
``alpha >= |D| / |F|`` can select nothing; :func:`selective_dampening` refuses it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.model.adapters import in_scope
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.strategies.gradients import Gradients, subject_gradients


@torch.no_grad()
def dampen_(
    model: torch.nn.Module,
    importance_all: Gradients,
    importance_forget: Gradients,
    alpha: float,
    dampening: float,
    skip_prefixes: Sequence[str] = (),
) -> dict[str, int]:
    """Dampen ``model``'s parameters in place; returns ``{"dampened": n, "entries": N}``.

    Args:
        importance_all: I_D per parameter name, each of the parameter's shape.
        importance_forget: I_f, same layout.
        alpha: selection threshold (SSD's alpha), > 0.
        dampening: SSD's lambda, > 0.
        skip_prefixes: parameters under these prefixes (``model.adapters.in_scope``) stay
            untouched (a frozen decoder).
    """
    if not alpha > 0 or not dampening > 0:
        raise InvalidInputError(
            f"strategy_params: alpha and lambda must be > 0, got {alpha} and {dampening}."
        )
    dampened = entries = 0
    for name, parameter in model.named_parameters():
        if in_scope(name, skip_prefixes):
            continue
        i_d = importance_all[name].to(parameter.device)
        i_f = importance_forget[name].to(parameter.device)
        selected = i_f > alpha * i_d
        factor = (dampening * i_d / torch.where(selected, i_f, 1.0)).clamp(max=1.0)
        parameter.copy_(torch.where(selected, parameter * factor, parameter))
        dampened += int(selected.sum())
        entries += parameter.numel()
    return {"dampened": dampened, "entries": entries}


def selective_dampening(
    model: torch.nn.Module,
    source: SampleSource,
    forget_ids: Sequence[str],
    retain_ids: Sequence[str],
    device: torch.device,
    alpha: float,
    dampening: float,
    skip_prefixes: Sequence[str] = (),
) -> dict:
    """Compute both importances at ``model``'s current weights, then :func:`dampen_` it.

    Returns what to record: the counts, alpha, lambda and the seconds it took.
    """
    started = time.monotonic()
    bound = (len(set(retain_ids) - set(forget_ids)) + len(forget_ids)) / max(len(forget_ids), 1)
    if alpha >= bound:
        raise InvalidInputError(
            f"strategy_params.alpha: {alpha} can dampen nothing here: with {len(forget_ids)} "
            f"forget subject(s) among {bound * len(forget_ids):g} in D, I_f <= {bound:g} * I_D "
            "for every weight.",
            hint=f"Choose alpha < {bound:g} (e.g. alpha={bound / 2:g}).",
        )
    importance_all, importance_forget = importances(model, source, forget_ids, retain_ids, device)
    counts = dampen_(model, importance_all, importance_forget, alpha, dampening, skip_prefixes)
    return {
        **counts,
        "alpha": alpha,
        "lambda": dampening,
        "seconds": round(time.monotonic() - started, 2),
    }


def importances(
    model: torch.nn.Module,
    source: SampleSource,
    forget_ids: Sequence[str],
    retain_ids: Sequence[str],
    device: torch.device,
) -> tuple[Gradients, Gradients]:
    """(I_D, I_f): mean squared per-subject gradients over D = retain + forget, and over the
    forget subjects; one gradient pass per subject."""
    forget = set(forget_ids)
    if not forget:
        raise InvalidInputError("selective dampening needs at least one forget subject.")
    sum_all: Gradients = {}
    sum_forget: Gradients = {}
    subjects = [*[r for r in retain_ids if r not in forget], *forget_ids]
    for subject_id, gradients in subject_gradients(model, source, subjects, device):
        for name, g in gradients.items():
            square = g.square()
            sum_all[name] = sum_all[name] + square if name in sum_all else square
            if subject_id in forget:
                sum_forget[name] = sum_forget[name] + square if name in sum_forget else square
    return (
        {n: v / len(subjects) for n, v in sum_all.items()},
        {n: v / len(forget_ids) for n, v in sum_forget.items()},
    )
