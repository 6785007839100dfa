"""Applies a strategy's declared mechanics to the model before the loop.

The unlearn job calls :func:`prepare` once, on a fresh copy of the original model; the result
carries what ``training.train`` needs beyond the plan (teachers, an ``after_step`` hook) and
what the run must record (seeds, mask and dampening counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.model.adapters import ModelSpec
from MachineUnlearningLib.strategies.base import Strategy
from MachineUnlearningLib.strategies.dampening import selective_dampening
from MachineUnlearningLib.strategies.saliency import KeepUnmasked, saliency_mask
from MachineUnlearningLib.strategies.sparsity import L1Penalty
from MachineUnlearningLib.strategies.surgery import reinitialise_encoder
from MachineUnlearningLib.strategies.teachers import build_teachers
from MachineUnlearningLib.training.loop import StepHook


@dataclass
class Prepared:
    """What :func:`prepare` hands to the loop and to the run's record."""

    teachers: dict[str, torch.nn.Module] = field(default_factory=dict)
    after_step: StepHook | None = None
    record: dict[str, Any] = field(default_factory=dict)


class Hooks:
    """Several ``after_step`` hooks as one: each one's ``on_gradients`` (if any), in order."""

    def __init__(self, hooks: Sequence) -> None:
        self.hooks = list(hooks)

    def on_gradients(self, model: torch.nn.Module) -> None:
        for hook in self.hooks:
            if hasattr(hook, "on_gradients"):
                hook.on_gradients(model)

    def __call__(self, model: torch.nn.Module) -> None:
        for hook in self.hooks:
            hook(model)


def prepare(
    strategy: Strategy,
    model: torch.nn.Module,
    original: torch.nn.Module,
    spec: ModelSpec,
    source: SampleSource,
    forget_ids: Sequence[str],
    retain_ids: Sequence[str],
    params: dict,
    seed: int,
    device: torch.device,
    frozen_prefixes: Sequence[str] = (),
) -> Prepared:
    """Edit ``model`` (the student, a copy of ``original``, architecture ``spec``) as
    ``strategy`` declares; ``frozen_prefixes`` (a frozen decoder) are left to SSD untouched.

    Order: the saliency mask is taken at the original weights, then encoder re-initialisation,
    then selective dampening; teachers are built from ``original`` (never modified).
    """
    prepared = Prepared()
    hooks: list = []
    if strategy.regulariser == "l1":
        hooks.append(L1Penalty(params["gamma"], params["steps"]))
    if strategy.update_mask == "saliency":
        mask = saliency_mask(model, source, forget_ids, device, params["mask_fraction"])
        hooks.append(KeepUnmasked(model, mask))
        prepared.record["saliency_mask"] = {
            "fraction": params["mask_fraction"],
            "masked": int(sum(int(m.sum()) for m in mask.values())),
            "entries": int(sum(m.numel() for m in mask.values())),
        }
    if hooks:
        prepared.after_step = hooks[0] if len(hooks) == 1 else Hooks(hooks)
    if strategy.reinit_encoder:
        reinitialise_encoder(model, spec, seed=seed)
    if strategy.surgery == "selective-dampening":
        prepared.record["dampening"] = selective_dampening(
            model,
            source,
            forget_ids,
            retain_ids,
            device,
            alpha=params["alpha"],
            dampening=params["lambda"],
            skip_prefixes=frozen_prefixes,
        )
    prepared.teachers = build_teachers(strategy.teachers, original, seed, device, spec)
    if "random" in strategy.teachers:
        prepared.record["random_teacher_seed"] = seed
    return prepared
