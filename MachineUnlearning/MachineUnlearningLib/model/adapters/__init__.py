"""Registry of architecture adapters (one module per family), torch-free at import.

``get_adapter(name)`` returns a frozen :class:`Adapter`; ``adapter_for_target(target)`` finds
the adapter of a MONAI bundle's ``network_def#_target_``; ``adapters_markdown()`` renders the
table of docs/bring-your-own-model.md from this registry.
"""

from __future__ import annotations

from MachineUnlearningLib.model.adapters import dynunet, medicalnet, segresnet, swinunetr, unet
from MachineUnlearningLib.model.adapters.base import (
    Adapter,
    ModelSpec,
    copy_scoped_state,
    in_scope,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

ADAPTERS: dict[str, Adapter] = {}
DEFAULT_ADAPTER = "medicalnet"


def register(adapter: Adapter) -> Adapter:
    """Add ``adapter``; a duplicate name is an error."""
    if adapter.name in ADAPTERS:
        raise ValueError(f"adapter {adapter.name!r} is already registered")
    ADAPTERS[adapter.name] = adapter
    return adapter


for _module in (medicalnet, unet, segresnet, dynunet, swinunetr):
    register(_module.ADAPTER)


def get_adapter(name: str) -> Adapter:
    """The adapter ``name``; an unknown name lists the valid ones."""
    return ADAPTERS[look_up_option(name, ADAPTERS, "architecture")]


def adapter_for_target(target: object, where: str = "network_def#_target_") -> Adapter:
    """The adapter whose class a bundle's ``_target_`` names (``UNet``,
    ``monai.networks.nets.UNet``, ``monai.networks.nets.unet.UNet``)."""
    if isinstance(target, str):
        name = target.rsplit(".", 1)[-1]
        module = target.rsplit(".", 1)[0] if "." in target else ""
        for adapter in ADAPTERS.values():
            family_module, _, class_name = adapter.network_class.partition(":")
            same_module = module in ("", "monai.networks.nets", family_module)
            if name == class_name and same_module and family_module.startswith("monai."):
                return adapter
    supported = ", ".join(a.class_name for a in ADAPTERS.values() if a.name != DEFAULT_ADAPTER)
    raise InvalidInputError(
        f"{where}: {target!r} has no architecture adapter.",
        hint=f"Supported MONAI networks: {supported} (docs/bring-your-own-model.md).",
    )


def adapters_markdown(tested: dict[str, list[str]] | None = None) -> str:
    """The adapter table of docs/bring-your-own-model.md (family, class, encoder / decoder
    prefixes at the adapter's default arguments, logit grid, input sizes, tested strategies);
    ``tested`` maps an adapter name to the strategies its tests run."""
    lines = [
        "| adapter | network class | encoder | decoder / head | logits | input sizes | "
        "tested strategies |",
        "|---|---|---|---|---|---|---|",
    ]
    for adapter in ADAPTERS.values():
        arguments = dict(adapter.defaults)
        encoder = ", ".join(f"`{p}`" for p in adapter.encoder(arguments))
        decoder = ", ".join(f"`{p}`" for p in adapter.decoder(arguments))
        grid = "input grid" if adapter.output_stride == 1 else f"1/{adapter.output_stride}"
        strategies = ", ".join((tested or {}).get(adapter.name, [])) or "none"
        module, _, class_name = adapter.network_class.partition(":")
        lines.append(
            f"| `{adapter.name}` | `{module}.{class_name}` | {encoder} | {decoder} | {grid} | "
            f"{adapter.size_rule} | {strategies} |"
        )
    return "\n".join(lines)


__all__ = [
    "ADAPTERS",
    "DEFAULT_ADAPTER",
    "Adapter",
    "ModelSpec",
    "adapter_for_target",
    "adapters_markdown",
    "copy_scoped_state",
    "get_adapter",
    "in_scope",
    "register",
]
