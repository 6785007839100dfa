"""Mechanic: parameter surgery before unlearning (re-initialise the encoder).

Which parameters are the encoder is the architecture adapter's statement
(``ModelSpec.encoder_prefixes``, ``model/adapters``); the draw is the family's own
initialisation (MedicalNet's Kaiming scheme for the ResNet, MONAI's constructors for MONAI
networks), seeded.
"""

from __future__ import annotations

import torch

from MachineUnlearningLib.model.adapters import ModelSpec


def reinitialise_encoder(model: torch.nn.Module, spec: ModelSpec, seed: int) -> None:
    """Re-draw every encoder parameter and buffer of ``model`` (BN statistics reset too).

    The draw uses its own RNG seeded by ``seed`` (recorded in the run's outputs), so the same
    seed gives the same encoder; the decoder is left bit-identical.
    """
    spec.reinitialise(model, spec.encoder_prefixes, seed)
