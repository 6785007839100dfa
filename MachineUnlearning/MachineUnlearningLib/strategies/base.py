"""Strategy data types: a strategy is a named composition of mechanics, not a class hierarchy.

Mechanics (each in its own module):
- ``targets.py``: what a forget subject is trained toward (true labels with the loss
  maximised, uniform random voxel labels, wrong-class labels, another subject's labels);
- ``plan.py``: which subjects an epoch visits and with what loss weight (retain replay or not);
- ``surgery.py``: parameter surgery before training (re-initialise the encoder, freeze the
  decoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from MachineUnlearningLib.errors import InvalidInputError
from MachineUnlearningLib.options import look_up_option

FORGET_TARGETS = ("none", "ascent", "uniform-random", "wrong-class", "other-subject")


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


# Parameters every preset has (defaults: MedicalNet's optimiser with a constant learning rate,
# ../shared/reference/unlearning.md section 2.1).
COMMON_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("epochs", int, 50, "unlearning epochs (passes over the strategy's list)"),
    Parameter("learning_rate", float, 1e-3, "learning rate of every trainable parameter"),
    Parameter("optimizer", str, "sgd", "sgd (momentum 0.9) or adam"),
    Parameter("momentum", float, 0.9, "SGD momentum"),
    Parameter("weight_decay", float, 1e-3, "L2 weight decay"),
    Parameter("batch_size", int, 1, "samples per optimiser step"),
    Parameter("grad_clip_norm", float, 5.0, "global gradient-norm clip"),
)


@dataclass(frozen=True)
class Strategy:
    """A named unlearning preset.

    Attributes:
        name: registry key, e.g. ``noisy-label``.
        summary: one line for ``machine-unlearning strategies``.
        forget_target: how forget subjects are used: ``none`` (never shown), ``ascent`` (true
            labels, loss maximised), ``uniform-random``, ``wrong-class``, ``other-subject``.
        replay_retain: retain subjects stay in the loop with their true labels.
        reinit_encoder: re-initialise the encoder (MedicalNet init) before training.
        definition: the exact definition (markdown) for docs/strategies.md.
        interpretation: True when the definition is our reading of the paper, not the paper's.
        source: where the method comes from.
        parameters: the preset's own parameters, on top of COMMON_PARAMETERS.
        defaults: preset-specific defaults for common parameters.
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

    def __post_init__(self) -> None:
        look_up_option(self.forget_target, FORGET_TARGETS, "forget_target")
        if self.forget_target == "none" and not self.replay_retain:
            raise ValueError(f"{self.name}: a strategy must train on something")

    def all_parameters(self) -> tuple[Parameter, ...]:
        overrides = dict(self.defaults)
        common = tuple(
            Parameter(p.name, p.type, overrides.get(p.name, p.default), p.help)
            for p in COMMON_PARAMETERS
        )
        return common + self.parameters

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown names raise with the valid list."""
        parameters = {p.name: p for p in self.all_parameters()}
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
