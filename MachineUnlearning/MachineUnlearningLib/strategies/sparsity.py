"""Mechanic: a linearly decaying L1 penalty on every weight (l1-sparse unlearning).

The penalty ``gamma_t * ||theta||_1`` with ``gamma_t = gamma * (1 - t / steps)`` at optimiser
step ``t`` (from 0) follows OPTML-Group/Unlearn-Sparse ``unlearn/FT.py`` (``FT_iter`` with
``with_l1``, its ``current_alpha``). :class:`L1Penalty` adds the penalty's gradient
``gamma_t * sign(theta)`` to every trainable parameter's gradient in the loop's
``on_gradients`` call, before clipping, so the loop's loss stays the task loss.
"""

from __future__ import annotations

import torch

from MachineUnlearningLib.runtime.errors import InvalidInputError


class L1Penalty:
    """``after_step`` hook whose ``on_gradients`` adds ``gamma_t * sign(theta)``.

    Args:
        gamma: initial weight (per entry, in loss units per unit of |theta|), >= 0.
        steps: optimiser steps over which ``gamma_t`` decays to 0, >= 1.
    """

    def __init__(self, gamma: float, steps: int) -> None:
        if gamma < 0 or steps < 1:
            raise InvalidInputError(
                f"strategy_params: gamma must be >= 0 and steps >= 1, got {gamma} and {steps}."
            )
        self.gamma = gamma
        self.steps = steps
        self.step = 0

    def current(self) -> float:
        """gamma_t of the next step."""
        return self.gamma * max(0.0, 1.0 - self.step / self.steps)

    @torch.no_grad()
    def on_gradients(self, model: torch.nn.Module) -> None:
        weight = self.current()
        self.step += 1
        if weight == 0.0:
            return
        for parameter in model.parameters():
            if parameter.requires_grad and parameter.grad is not None:
                parameter.grad.add_(parameter.sign(), alpha=weight)

    def __call__(self, model: torch.nn.Module) -> None:
        """Nothing after the step: the penalty acts through the gradient."""
