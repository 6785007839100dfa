"""Mechanic: frozen teacher models for KL-to-teacher losses (SCRUB, Bad Teacher).

``original``: a copy of the model being unlearned (the competent teacher). ``random``: a model
of the same architecture (``ModelSpec.build``) with its family's initialisation drawn from an
RNG seeded by the run's seed (the incompetent teacher; the seed is recorded). Teachers are in
eval mode with ``requires_grad=False``; ``training.train`` only runs them under ``no_grad``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from MachineUnlearningLib.model.adapters import ModelSpec
from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.strategies.base import TEACHERS


def build_teachers(
    names: Sequence[str],
    original: torch.nn.Module,
    seed: int,
    device: torch.device,
    spec: ModelSpec,
) -> dict[str, torch.nn.Module]:
    """``{name: frozen model on device}`` for each of ``names`` (``original`` / ``random``)."""
    teachers: dict[str, torch.nn.Module] = {}
    for name in names:
        look_up_option(name, TEACHERS, "teacher")
        if name == "original":
            teacher = copy.deepcopy(original)
        else:
            teacher = spec.build(seed)
        teachers[name] = teacher.to(device).eval().requires_grad_(False)
    return teachers
