"""Mechanic: parameter surgery before unlearning."""

from __future__ import annotations

import torch

from MachineUnlearningLib.model.resnet import MedicalNetSegmentation, reinitialise_

DECODER_PREFIXES: tuple[str, ...] = MedicalNetSegmentation.decoder_parameter_prefixes


def reinitialise_encoder(model: MedicalNetSegmentation, seed: int) -> None:
    """Re-draw every encoder weight with MedicalNet's initialisation (BN stats reset too).

    The draw uses its own generator seeded by ``seed`` (recorded in the run's outputs), so the
    same seed gives the same encoder.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.encoder_modules().values():
        reinitialise_(module, generator=generator)
