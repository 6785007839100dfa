"""Adapter: MONAI ``SegResNet`` (Myronenko 2018, without the VAE branch)."""

from __future__ import annotations

from MachineUnlearningLib.model.adapters.base import Adapter, Arguments, Prefixes

ENCODER: Prefixes = ("convInit", "down_layers")
DECODER: Prefixes = ("up_samples", "up_layers", "conv_final")


def _check(arguments: Arguments) -> None:
    if arguments.get("spatial_dims", 3) != 3:
        raise ValueError("spatial_dims must be 3 (the engine segments 3-D volumes)")
    if not arguments.get("use_conv_final", True):
        raise ValueError(
            "use_conv_final must be true: without it the network outputs features, not class logits"
        )


ADAPTER = Adapter(
    name="monai-segresnet",
    summary="MONAI SegResNet (residual encoder, light decoder); logits at full resolution",
    network_class="monai.networks.nets.segresnet:SegResNet",
    channel_arguments=("in_channels", "out_channels"),
    defaults=(("spatial_dims", 3),),
    defaults_source="MONAI's own defaults (init_filters 8, blocks_down 1,2,2,4, blocks_up 1,1,1)",
    encoder=lambda arguments: ENCODER,
    decoder=lambda arguments: DECODER,
    split="encoder: `convInit` and `down_layers` (the residual blocks of the contracting path, "
    "the network's larger part by design); decoder: `up_samples`, `up_layers` and "
    "`conv_final` (the logits), the paper's light-weight decoder.",
    size_divisor=lambda arguments: (
        (2 ** (len(arguments.get("blocks_down", (1, 2, 2, 4))) - 1),) * 3
    ),
    size_rule="multiples of 2^(len(blocks_down) - 1)",
    check=_check,
)
