"""Adapter: MONAI ``DynUNet`` (the nnU-Net-style dynamic U-Net, Isensee et al. 2021)."""

from __future__ import annotations

from MachineUnlearningLib.model.adapters.base import Adapter, Arguments, Prefixes, product_per_axis

ENCODER: Prefixes = ("input_block", "downsamples", "bottleneck")
DECODER: Prefixes = ("upsamples", "output_block")


def _check(arguments: Arguments) -> None:
    if arguments.get("spatial_dims") != 3:
        raise ValueError("spatial_dims must be 3 (the engine segments 3-D volumes)")
    if arguments.get("deep_supervision", False):
        raise ValueError(
            "deep_supervision: true is not supported: in training mode the network then returns "
            "the stacked auxiliary outputs, and the engine trains the main output only; set it "
            "to false (the main output and its weights are the same)"
        )


ADAPTER = Adapter(
    name="monai-dynunet",
    summary="MONAI DynUNet (nnU-Net style; per-level kernels and strides); full resolution",
    network_class="monai.networks.nets.dynunet:DynUNet",
    channel_arguments=("in_channels", "out_channels"),
    defaults=(
        ("spatial_dims", 3),
        ("kernel_size", [3, 3, 3, 3, 3]),
        ("strides", [1, 2, 2, 2, 2]),
        ("upsample_kernel_size", [2, 2, 2, 2]),
    ),
    defaults_source="nnU-Net's 3-D full-resolution layout (3x3x3 kernels, stride 1 then 2), "
    "MONAI's default filters",
    encoder=lambda arguments: ENCODER,
    decoder=lambda arguments: DECODER,
    split="encoder: `input_block`, `downsamples` and `bottleneck` (the contracting path); "
    "decoder: `upsamples` and `output_block` (the logits). `skip_layers` is MONAI's second "
    "name for the same modules (no parameters of its own), so it is in neither list.",
    size_divisor=lambda arguments: product_per_axis(arguments["strides"], "strides"),
    size_rule="multiples of prod(strides)",
    check=_check,
)
