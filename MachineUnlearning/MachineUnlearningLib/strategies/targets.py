"""Mechanic: what each step's target is.

A target maker turns a step's target name and its subject's true target ``(d, h, w)`` int64
(-1 = ignored) into the target to train on, same shape. Random targets are drawn after the
spatial preprocessing, per non-ignored voxel, and re-drawn every time a subject is sampled;
ignored voxels stay -1.
"""

from __future__ import annotations

import numpy as np
import torch

from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.training.steps import (
    SUBJECT_PREFIX,
    TARGETS_TRUE,
    UNIFORM_RANDOM,
    WRONG_CLASS,
    Step,
)


def uniform_random_labels(
    target: torch.Tensor, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Each non-ignored voxel ~ Uniform{0..C-1}. (d, h, w) int64 -> same."""
    noise = torch.randint(0, num_classes, target.shape, generator=generator)
    return torch.where(target == IGNORE_INDEX, target, noise)


def wrong_class_labels(
    target: torch.Tensor, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Each non-ignored voxel ~ Uniform(classes other than its true one). (d, h, w) -> same."""
    shift = torch.randint(1, num_classes, target.shape, generator=generator)
    wrong = (target.clamp_min(0) + shift) % num_classes
    return torch.where(target == IGNORE_INDEX, target, wrong)


class TargetMaker:
    """Callable used by ``training.train``: resolves every target name a preset may use."""

    def __init__(self, source: SampleSource) -> None:
        self.source = source
        self.num_classes = source.policy.num_classes

    def __call__(
        self,
        step: Step,
        target: torch.Tensor,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if step.target == TARGETS_TRUE:
            return target
        if step.target == UNIFORM_RANDOM:
            return uniform_random_labels(target, self.num_classes, generator)
        if step.target == WRONG_CLASS:
            return wrong_class_labels(target, self.num_classes, generator)
        if step.target.startswith(SUBJECT_PREFIX):
            # the loop already hands the other subject's labels on this step's sample or patch
            # (training.loop._own_target -> SampleSource.target_like)
            return target
        raise InvalidInputError(f"unknown target {step.target!r}.")
