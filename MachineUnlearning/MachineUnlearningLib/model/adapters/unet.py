"""Adapter: MONAI ``UNet`` (``monai.networks.nets.UNet``, Kerfoot et al. 2018 residual U-Net).

MONAI nests the levels: ``model`` is ``Sequential(down, SkipConnection(submodule), up)`` and
each ``submodule`` is the next level, down to the bottom layer. For ``len(channels) = n`` the
level-k path is ``model`` + ``.1.submodule`` x k; its down layer is ``<path>.0``, its up layer
``<path>.2``, and the bottom layer is the path at k = n - 1.
"""

from __future__ import annotations

from MachineUnlearningLib.model.adapters.base import Adapter, Arguments, Prefixes, product_per_axis


def _path(level: int) -> str:
    return "model" + ".1.submodule" * level


def _levels(arguments: Arguments) -> int:
    return len(arguments["channels"])


def encoder(arguments: Arguments) -> Prefixes:
    """Every down layer (``<level>.0``) and the bottom layer."""
    n = _levels(arguments)
    return (*(f"{_path(k)}.0" for k in range(n - 1)), _path(n - 1))


def decoder(arguments: Arguments) -> Prefixes:
    """Every up layer (``<level>.2``), the top one (``model.2``) producing the class logits."""
    return tuple(f"{_path(k)}.2" for k in reversed(range(_levels(arguments) - 1)))


def _check(arguments: Arguments) -> None:
    if arguments.get("spatial_dims") != 3:
        raise ValueError("spatial_dims must be 3 (the engine segments 3-D volumes)")
    if (
        len(arguments["channels"]) < 2
        or len(arguments["strides"]) != len(arguments["channels"]) - 1
    ):
        raise ValueError("UNet needs len(channels) >= 2 and len(strides) == len(channels) - 1")


ADAPTER = Adapter(
    name="monai-unet",
    summary="MONAI UNet (residual units optional); logits at full resolution",
    network_class="monai.networks.nets.unet:UNet",
    channel_arguments=("in_channels", "out_channels"),
    defaults=(
        ("spatial_dims", 3),
        ("channels", [16, 32, 64, 128, 256]),
        ("strides", [2, 2, 2, 2]),
        ("num_res_units", 2),
    ),
    defaults_source="the MONAI model zoo's spleen_ct_segmentation bundle (channels, strides, "
    "residual units; the norm stays MONAI's default, instance)",
    encoder=encoder,
    decoder=decoder,
    split="encoder: the contracting path, every down layer `<level>.0` and the bottom layer "
    "(levels nest as `model`, `model.1.submodule`, ...); decoder: the expanding path, every up "
    "layer `<level>.2`, the last of which (`model.2`) outputs the class logits. This is the "
    "U-Net's own encoder / decoder split; skip connections carry encoder features unchanged.",
    size_divisor=lambda arguments: product_per_axis(arguments["strides"], "strides"),
    size_rule="multiples of prod(strides)",
    check=_check,
)
