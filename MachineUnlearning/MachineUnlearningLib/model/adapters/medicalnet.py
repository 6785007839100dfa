"""Adapter: MedicalNet 3D ResNet + ``conv_seg`` head (``model/resnet.py``), the engine's own."""

from __future__ import annotations

from MachineUnlearningLib.model.adapters.base import Adapter, Arguments, Prefixes, Size3

# The released MedicalNet layout (Tencent/MedicalNet models/resnet.py): the ResNet backbone is
# the encoder; conv_seg (transposed conv + two convs) is the whole decoder.
ENCODER: Prefixes = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
DECODER: Prefixes = ("conv_seg",)


def _build(adapter: Adapter, arguments: Arguments, seed: int | None):
    import torch

    from MachineUnlearningLib.model.resnet import MedicalNetSegmentation, ModelConfig

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return MedicalNetSegmentation(ModelConfig.from_dict(arguments), generator=generator)


def _check(arguments: Arguments) -> None:
    from MachineUnlearningLib.model.resnet import ModelConfig

    ModelConfig.from_dict(arguments)  # ValueError states the rule


def _reinitialise(spec, model, prefixes: Prefixes, seed: int) -> None:
    """MedicalNet's initialisation, one generator in prefix order (as the engine always did)."""
    import torch

    from MachineUnlearningLib.model.resnet import reinitialise_

    generator = torch.Generator().manual_seed(seed)
    for prefix in prefixes:
        reinitialise_(model.get_submodule(prefix), generator=generator)


def _output_shape(arguments: Arguments, size: Size3) -> Size3:
    from MachineUnlearningLib.model.resnet import output_size

    return tuple(output_size(int(n)) for n in size)  # type: ignore[return-value]


ADAPTER = Adapter(
    name="medicalnet",
    summary="MedicalNet (Med3D) 3D ResNet 10-200 with the conv_seg head; logits at 1/4",
    network_class="MachineUnlearningLib.model.resnet:MedicalNetSegmentation",
    channel_arguments=("in_channels", "num_classes"),
    defaults=(("in_channels", 1), ("base_width", 64), ("head_channels", 32)),
    defaults_source="MedicalNet's released networks (ModelConfig)",
    encoder=lambda arguments: ENCODER,
    decoder=lambda arguments: DECODER,
    split="encoder: the ResNet backbone `conv1`, `bn1`, `layer1`-`layer4` (what MedicalNet "
    "pretrains and releases); decoder: `conv_seg`, the segmentation head MedicalNet adds for "
    "fine-tuning (transposed convolution + two convolutions).",
    size_divisor=lambda arguments: (1, 1, 1),
    output_shape=_output_shape,
    output_stride=4,
    default_preprocessing=(),
    check=_check,
    argument_order=(
        "depth",
        "shortcut_type",
        "num_classes",
        "in_channels",
        "base_width",
        "head_channels",
    ),  # ModelConfig's fields
    builder=_build,
    reinitialise=_reinitialise,
)
