"""Recipe settings that choose and size the network: ``architecture`` and ``network.<arg>``.

``--set architecture=monai-unet --set network.channels=8,16,32 --set network.strides=2,2``
picks an adapter and gives its constructor arguments; MedicalNet keeps its flat settings
(``depth``, ``shortcut_type``, ``base_width``, ``head_channels``). Input channels and classes
always follow the recipe's modalities and label policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from MachineUnlearningLib.model.adapters import DEFAULT_ADAPTER, ModelSpec, get_adapter
from MachineUnlearningLib.runtime.errors import InvalidInputError

ARCHITECTURE_KEY = "architecture"
NETWORK_PREFIX = "network."
MEDICALNET_KEYS = ("depth", "shortcut_type", "base_width", "head_channels")


def is_model_key(key: str) -> bool:
    """True for the recipe settings this module resolves."""
    return key == ARCHITECTURE_KEY or key in MEDICALNET_KEYS or key.startswith(NETWORK_PREFIX)


def resolve_model(
    base: ModelSpec, overrides: Mapping[str, Any], in_channels: int, num_classes: int
) -> ModelSpec:
    """``base`` changed by the model settings in ``overrides`` (others are ignored).

    A new ``architecture`` starts from that adapter's defaults; the same one keeps ``base``'s
    arguments. Errors name the setting (InvalidInputError).
    """
    adapter = get_adapter(str(overrides.get(ARCHITECTURE_KEY, base.adapter)))
    arguments = dict(base.arguments) if adapter.name == base.adapter else {}
    flat = {k: overrides[k] for k in MEDICALNET_KEYS if k in overrides}
    if flat and adapter.name != DEFAULT_ADAPTER:
        raise InvalidInputError(
            f"{sorted(flat)[0]}: a MedicalNet setting; {adapter.name} takes network.<argument>.",
            hint=f"e.g. --set {NETWORK_PREFIX}{next(iter(dict(adapter.defaults)), 'channels')}=...",
        )
    network = {
        k[len(NETWORK_PREFIX) :]: v for k, v in overrides.items() if k.startswith(NETWORK_PREFIX)
    }
    in_name, out_name = adapter.channel_arguments
    given = {**arguments, **flat, **network, in_name: in_channels, out_name: num_classes}
    return ModelSpec.create(adapter.name, given, "network")


def model_overrides(model: Mapping[str, Any]) -> dict[str, Any]:
    """Flat settings that rebuild a recorded recipe's model (``Recipe.to_dict()["model"]``);
    a recipe recorded before adapters is a MedicalNet ``ModelConfig`` dict."""
    if "adapter" not in model:
        return {k: model[k] for k in MEDICALNET_KEYS}
    adapter = get_adapter(model["adapter"])
    arguments = {k: v for k, v in model["arguments"].items() if k not in adapter.channel_arguments}
    if adapter.name == DEFAULT_ADAPTER:  # the named recipes' own family: no architecture key
        return {k: arguments[k] for k in MEDICALNET_KEYS}
    return {ARCHITECTURE_KEY: adapter.name, **{NETWORK_PREFIX + k: v for k, v in arguments.items()}}
