"""The vocabulary of a training plan: steps, plans and target names (no torch).

A plan says, for each epoch, which :class:`Step` s to take; ``training.loop.train`` runs them.
Strategies build plans from this module alone, so the strategy registry (what the Slicer
module lists) imports neither torch nor monai.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from MachineUnlearningLib.runtime.options import look_up_option

TARGETS_TRUE = "true"
UNIFORM_RANDOM = "uniform-random"
WRONG_CLASS = "wrong-class"
SUBJECT_PREFIX = "subject:"
STEP_LOSSES = ("task", "kl", "task+kl")


@dataclass(frozen=True)
class Step:
    """One sample of a plan.

    Attributes:
        subject_id: whose image is the input.
        target: ``true`` (its own labels) or a name handled by the run's ``target_maker``
            (e.g. ``uniform-random``, ``subject:<id>``).
        weight: loss multiplier; negative = gradient ascent.
        loss: ``task`` (the config's loss against ``target``), ``kl`` (KL_vox(p_teacher ||
            p_student) over the target's non-ignored voxels) or ``task+kl`` (task +
            ``config.kl_weight`` * kl).
        teacher: for ``kl`` / ``task+kl``: the name of the frozen model in ``train``'s
            ``teachers`` whose prediction on the same input is the reference; else None.
    """

    subject_id: str
    target: str = TARGETS_TRUE
    weight: float = 1.0
    loss: str = "task"
    teacher: str | None = None

    def __post_init__(self) -> None:
        look_up_option(self.loss, STEP_LOSSES, "step loss")
        if (self.teacher is None) == ("kl" in self.loss):
            raise ValueError(f"step {self}: a teacher is needed by, and only by, kl losses")


Plan = Callable[[int, np.random.Generator], list[Step]]
"""(epoch starting at 1, the run's generator) -> the epoch's steps, in order."""
