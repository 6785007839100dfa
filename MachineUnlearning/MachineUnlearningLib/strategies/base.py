"""Strategy data types: a strategy is a named composition of mechanics, not a class hierarchy.

Mechanics (each in its own module):
- ``targets.py``: what a forget subject is trained toward (true labels with the loss
  maximised, uniform random voxel labels, wrong-class labels, another subject's labels);
- ``plan.py``: which subjects an epoch visits and with what loss weight (retain replay or not);
- ``surgery.py``: parameter surgery before training (re-initialise the encoder; the encoder
  and decoder are the architecture adapter's scopes, ``model/adapters``);
- ``dampening.py``: selective synaptic dampening (SSD), parameter surgery without training;
- ``saliency.py``: a weight-saliency mask; weights outside it are kept at their original values;
- ``teachers.py``: frozen reference models for KL-to-teacher losses;
- ``gradients.py``: per-subject gradients at fixed weights (used by saliency and dampening);
- ``preparation.py``: applies a strategy's declared mechanics before the loop.

Presets: ``presets.py`` (the paper's), ``literature.py`` (established methods).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

# Forget targets the composed plan (plan.build_plan) handles ...
COMPOSED_FORGET_TARGETS = ("none", "ascent", "uniform-random", "wrong-class", "other-subject")
# ... and those only a preset's own plan builder (or no training at all) gives meaning to.
FORGET_TARGETS = (*COMPOSED_FORGET_TARGETS, "teacher-divergence", "random-teacher", "importance")
TEACHERS = ("original", "random")
SURGERIES = ("none", "selective-dampening")
UPDATE_MASKS = ("none", "saliency")
REGULARISERS = ("none", "l1")
BUDGETS = ("epochs", "steps")

# (strategy, forget ids, retain ids, resolved params) -> training.Plan
PlanBuilder = Callable[["Strategy", Sequence[str], Sequence[str], dict], Callable]


@dataclass(frozen=True)
class Parameter:
    """One tunable parameter of a strategy: name, Python type, default and a one-line help."""

    name: str
    type: type
    default: Any
    help: str

    def coerce(self, value: Any) -> Any:
        if value is None and self.default is None:
            return None
        try:
            if self.type is bool and isinstance(value, str):
                return value.lower() in ("1", "true", "yes")
            return self.type(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"strategy_params.{self.name}: expected {self.type.__name__}, got {value!r}.",
                hint=self.help,
            ) from None


# Parameters every preset has (defaults: MedicalNet's SGD with a constant learning rate,
# ../shared/reference/unlearning.md section 2.1).
COMMON_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("epochs", int, 50, "unlearning epochs (passes over the strategy's list)"),
    Parameter(
        "learning_rate",
        float,
        1e-2,
        "learning rate of every trainable parameter (ours: MedicalNet's 1e-3 moved the cpu-demo "
        "model's forget Dice by only 6 % in 50 epochs)",
    ),
    Parameter("optimizer", str, "sgd", "sgd (momentum 0.9) or adam"),
    Parameter("momentum", float, 0.9, "SGD momentum"),
    Parameter("weight_decay", float, 1e-3, "L2 weight decay"),
    Parameter("batch_size", int, 1, "samples per optimiser step"),
    Parameter("grad_clip_norm", float, 5.0, "global gradient-norm clip"),
    Parameter(
        "batchnorm",
        str,
        "train",
        "train (BatchNorm statistics from each batch, running averages move) or frozen "
        "(the original model's running statistics, never updated)",
    ),
)

# A step-budget strategy (Strategy.budget "steps") has this instead of ``epochs``: its plan
# gives one optimiser step per loop epoch, so the loop's epochs count optimiser steps.
STEPS = Parameter(
    "steps",
    int,
    30,
    "optimiser steps in all (the budget; an epoch of a cohort is only a few volumes, so "
    "budgets are counted in steps, issue 11)",
)


@dataclass(frozen=True)
class Strategy:
    """A named unlearning preset.

    Attributes:
        name: registry key, e.g. ``noisy-label``.
        summary: one line for ``machine-unlearning strategies``.
        forget_target: how forget subjects are used: ``none`` (never shown), ``ascent`` (true
            labels, loss maximised), ``uniform-random``, ``wrong-class``, ``other-subject``;
            with a ``plan_builder`` also ``teacher-divergence`` (pushed away from the original
            model's prediction), ``random-teacher`` (pulled toward a random model's); without
            training ``importance`` (only their gradients are used).
        replay_retain: retain subjects stay in the loop with their true labels.
        reinit_encoder: re-initialise the encoder (the adapter's scope, its family's
            initialisation) before training.
        definition: the exact definition (markdown) for docs/strategies.md.
        interpretation: True when the definition is our reading (of the paper's name) or our
            adaptation (of a published method), not the source's own algorithm.
        source: where the method comes from.
        parameters: the preset's own parameters, on top of COMMON_PARAMETERS.
        defaults: preset-specific defaults for common parameters.
        trains: False for a method that only edits weights (no loop; the common, optimiser
            parameters then do not apply).
        teachers: frozen models the plan's KL steps name: ``original`` (a copy of the model
            being unlearned) and/or ``random`` (same architecture, seeded random init).
        surgery: further surgery before training: ``none`` or ``selective-dampening`` (SSD).
        update_mask: ``none`` or ``saliency`` (only the most forget-salient weights change).
        regulariser: ``none`` or ``l1`` (a decaying L1 penalty on every weight, l1-sparse).
        budget: ``epochs`` (the paper's unit: passes over the plan's list) or ``steps``
            (the ``steps`` parameter replaces ``epochs``; the plan returns one batch per loop
            epoch, so evaluation epochs and the history count optimiser steps).
        plan_builder: the preset's own plan (same signature as ``plan.build_plan``); None =
            the composition of ``forget_target`` and ``replay_retain``.
    """

    name: str
    summary: str
    forget_target: str
    replay_retain: bool
    reinit_encoder: bool
    definition: str
    interpretation: bool
    source: str
    parameters: tuple[Parameter, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    trains: bool = True
    teachers: tuple[str, ...] = ()
    surgery: str = "none"
    update_mask: str = "none"
    regulariser: str = "none"
    budget: str = "epochs"
    plan_builder: PlanBuilder | None = None

    def __post_init__(self) -> None:
        look_up_option(self.forget_target, FORGET_TARGETS, "forget_target")
        look_up_option(self.regulariser, REGULARISERS, "regulariser")
        look_up_option(self.budget, BUDGETS, "budget")
        look_up_option(self.surgery, SURGERIES, "surgery")
        look_up_option(self.update_mask, UPDATE_MASKS, "update_mask")
        for teacher in self.teachers:
            look_up_option(teacher, TEACHERS, "teachers")
        if not self.trains:
            if self.surgery == "none" and not self.reinit_encoder:
                raise ValueError(f"{self.name}: a strategy that does not train must edit weights")
            return
        if self.forget_target == "none" and not self.replay_retain:
            raise ValueError(f"{self.name}: a strategy must train on something")
        if self.forget_target not in COMPOSED_FORGET_TARGETS and self.plan_builder is None:
            raise ValueError(f"{self.name}: forget_target {self.forget_target!r} needs a plan")

    def all_parameters(self) -> tuple[Parameter, ...]:
        if not self.trains:
            return self.parameters
        overrides = dict(self.defaults)
        budget = (STEPS,) if self.budget == "steps" else COMMON_PARAMETERS[:1]
        common = tuple(
            Parameter(p.name, p.type, overrides.get(p.name, p.default), p.help)
            for p in (*budget, *COMMON_PARAMETERS[1:])
        )
        return common + self.parameters

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown names raise with the valid list."""
        parameters = {p.name: p for p in self.all_parameters()}
        if self.budget == "steps" and "epochs" in given:
            raise InvalidInputError(
                f"{self.name} counts its budget in optimiser steps, not epochs (an epoch of a "
                "cohort is only a few volumes).",
                hint=f"Give strategy_params steps=N (CLI: --param steps=N; default "
                f"{parameters['steps'].default}) instead of epochs.",
            )
        unknown = sorted(set(given) - set(parameters))
        if unknown:
            raise InvalidInputError(
                f"strategy_params: {self.name} has no parameter(s) {unknown}.",
                hint=f"Valid: {', '.join(parameters)}.",
            )
        return {
            name: (p.coerce(given[name]) if name in given else p.default)
            for name, p in parameters.items()
        }
