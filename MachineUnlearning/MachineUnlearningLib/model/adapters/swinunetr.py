"""Adapter: MONAI ``SwinUNETR`` (Hatamizadeh et al. 2022): Swin transformer encoder, CNN decoder."""

from __future__ import annotations

from MachineUnlearningLib.model.adapters.base import Adapter, Arguments, Prefixes

# MONAI's own names: the transformer and the residual blocks on the input and on each stage's
# output (encoder1-4, encoder10) are the encoder; decoder5..decoder1 and ``out`` the decoder.
ENCODER: Prefixes = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")
DECODER: Prefixes = ("decoder5", "decoder4", "decoder3", "decoder2", "decoder1", "out")


def _check(arguments: Arguments) -> None:
    if arguments.get("spatial_dims", 3) != 3:
        raise ValueError("spatial_dims must be 3 (the engine segments 3-D volumes)")


def _divisor(arguments: Arguments) -> tuple[int, int, int]:
    # MONAI checks every input size against patch_size ** 5 (SwinUNETR._check_input_size).
    return (int(arguments.get("patch_size", 2)) ** 5,) * 3


ADAPTER = Adapter(
    name="monai-swinunetr",
    summary="MONAI SwinUNETR (Swin transformer encoder, convolutional decoder); full resolution",
    network_class="monai.networks.nets.swin_unetr:SwinUNETR",
    channel_arguments=("in_channels", "out_channels"),
    defaults=(),
    defaults_source="MONAI's own defaults (feature_size 24, depths 2,2,2,2, window 7)",
    encoder=lambda arguments: ENCODER,
    decoder=lambda arguments: DECODER,
    split="encoder: `swinViT` (the Swin transformer) and `encoder1`-`encoder4`, `encoder10` "
    "(MONAI's residual blocks on the input and on each stage's output, before the skips); "
    "decoder: `decoder5`-`decoder1` and `out` (the logits), MONAI's own names for the "
    "convolutional decoder. Note `encoder1` vs `encoder10`: scopes match whole name parts.",
    size_divisor=_divisor,
    size_rule="multiples of patch_size^5 (32)",
    check=_check,
    excluded_arguments=(("norm_layer", "a class, not a plain value (MONAI's LayerNorm is used)"),),
)
