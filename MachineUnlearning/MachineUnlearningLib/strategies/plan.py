"""Mechanic: which subjects an epoch visits, toward which target, with what loss weight."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.strategies.base import Strategy
from MachineUnlearningLib.training.steps import (
    SUBJECT_PREFIX,
    TARGETS_TRUE,
    UNIFORM_RANDOM,
    WRONG_CLASS,
    Plan,
    Step,
)

RANDOM_LABEL_TARGETS = ("uniform-random", "wrong-class")


class Cycle:
    """Subject ids in shuffled passes without end, as a shuffling data loader cycles through its
    data set: each pass is a fresh permutation drawn from the run's generator."""

    def __init__(self, ids: Sequence[str]) -> None:
        if not ids:
            raise ValueError("a cycle needs at least one subject")
        self.ids = list(ids)
        self.pool: list[str] = []

    def next(self, rng: np.random.Generator) -> str:
        if not self.pool:
            self.pool = [self.ids[i] for i in rng.permutation(len(self.ids))][::-1]
        return self.pool.pop()


def forget_step(
    strategy: Strategy,
    subject_id: str,
    retain_ids: Sequence[str],
    rng: np.random.Generator,
    weight: float,
) -> Step:
    """The step for one forget subject under ``strategy.forget_target``."""
    kind = strategy.forget_target
    if kind == "ascent":
        return Step(subject_id, TARGETS_TRUE, -weight)
    if kind == "uniform-random":
        return Step(subject_id, UNIFORM_RANDOM, weight)
    if kind == "wrong-class":
        return Step(subject_id, WRONG_CLASS, weight)
    if kind == "other-subject":
        other = retain_ids[int(rng.integers(len(retain_ids)))]
        return Step(subject_id, SUBJECT_PREFIX + other, weight)
    raise ValueError(f"no forget step for target {kind!r}")


def build_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """The strategy's plan: its own ``plan_builder`` if it has one, else :func:`composed_plan`."""
    builder = strategy.plan_builder or composed_plan
    return builder(strategy, forget_ids, retain_ids, params)


def composed_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """An epoch = forget steps (unless ``none``) + retain steps (if replayed), shuffled.

    ``forget_weight`` and ``retain_weight`` (default 1) scale each sample's loss; LearnOthers
    draws the retain subject whose mask a forget subject learns once per epoch; a
    ``random_labels`` parameter picks uniform-random or wrong-class relabelling.
    """
    if strategy.forget_target in RANDOM_LABEL_TARGETS and "random_labels" in params:
        chosen = look_up_option(params["random_labels"], RANDOM_LABEL_TARGETS, "random_labels")
        strategy = dataclasses.replace(strategy, forget_target=chosen)
    replay = strategy.replay_retain or bool(params.get("replay_retain", False))
    forget_weight = float(params.get("forget_weight", 1.0))
    retain_weight = float(params.get("retain_weight", 1.0))

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        steps: list[Step] = []
        if strategy.forget_target != "none":
            steps += [forget_step(strategy, f, retain_ids, rng, forget_weight) for f in forget_ids]
        if replay:
            steps += [Step(r, TARGETS_TRUE, retain_weight) for r in retain_ids]
        order = rng.permutation(len(steps))
        return [steps[i] for i in order]

    return plan
