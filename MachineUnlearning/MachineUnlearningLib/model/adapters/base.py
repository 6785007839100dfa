"""Architecture adapters: how the engine builds, splits and feeds one network family.

An :class:`Adapter` is data (style principle 5): a registry entry per family that says which
class builds the network, which constructor arguments it passes by default, which module-name
prefixes are the encoder and which the decoder / head (the groups ``random-encoder``,
``--fix-decoder``, SSD and SalUn act on), the input sizes the network accepts, where its logits
land, and the preprocessing the family trains with by default. A :class:`ModelSpec` is one
concrete network: an adapter name and its constructor arguments as plain JSON types, which is
what a project checkpoint records so that it loads with ``torch.load(weights_only=True)``.

Scopes are prefixes of parameter / module names, matched exactly or up to a dot
(:func:`in_scope`): ``encoder1`` covers ``encoder1.layer.conv1.conv.weight`` but not
``encoder10.layer...`` (a plain ``str.startswith`` would).

This module imports no torch at import time, so listing adapters stays instant.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.plain import from_plain, to_plain

Size3 = tuple[int, int, int]
Arguments = dict[str, Any]  # constructor arguments, plain JSON types only
Prefixes = tuple[str, ...]


def in_scope(name: str, prefixes: Iterable[str]) -> bool:
    """True when ``name`` is one of ``prefixes`` or lies below one (``prefix.``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def per_axis(value: Any, what: str) -> Size3:
    """An int or a 3-sequence of ints as (d, h, w)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value, value)
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    raise ValueError(f"{what} must be an int or three ints, got {value!r}")


def product_per_axis(values: Sequence[Any], what: str) -> Size3:
    """Per-axis product of a list of strides (each an int or three ints)."""
    total = [1, 1, 1]
    for value in values:
        for axis, s in enumerate(per_axis(value, what)):
            total[axis] *= s
    return tuple(total)  # type: ignore[return-value]


Builder = Callable[["Adapter", Arguments, "int | None"], Any]
Reinitialiser = Callable[["ModelSpec", Any, Prefixes, int], None]


@dataclass(frozen=True)
class Adapter:
    """One network family.

    Attributes:
        name: registry key, e.g. ``monai-unet``.
        summary: one line for listings and docs.
        network_class: dotted path of the class that builds the network (``module:Class``),
            e.g. ``monai.networks.nets.unet:UNet``; bundles whose ``network_def#_target_``
            names this class (``UNet``, ``monai.networks.nets.UNet``) use this adapter.
        channel_arguments: the argument names of (input channels, output classes).
        defaults: ``(argument, value)`` pairs passed unless given (plain JSON; the source of
            each is stated in ``defaults_source``).
        defaults_source: where the defaults come from, one line.
        encoder: arguments -> module-name prefixes of the encoder.
        decoder: arguments -> module-name prefixes of the decoder / segmentation head.
        split: the split in words and why, for docs/bring-your-own-model.md (markdown).
        size_divisor: arguments -> (d, h, w): every input size must be a multiple.
        size_rule: the same in words, for docs.
        output_shape: (arguments, input (D, H, W)) -> logit grid (d, h, w).
        output_stride: the logit grid's stride relative to the input (1 = full resolution).
        default_preprocessing: ``(Preprocessing field, value)`` pairs the family trains with
            unless the recipe or the user says otherwise.
        check: raises ValueError stating the rule for arguments the engine cannot use.
        excluded_arguments: constructor arguments the engine refuses to pass (with the reason).
        argument_order: the arguments' canonical order for a builder of the engine's own
            (MONAI classes: their signature's order), so equal specs print alike.
        builder: builds the network from resolved arguments and an optional seed; None = the
            class called with the arguments under a seeded global RNG.
        reinitialise: re-draws the parameters under the given prefixes with the family's
            initialisation; None = take them from a freshly built, seeded network.
    """

    name: str
    summary: str
    network_class: str
    channel_arguments: tuple[str, str]
    defaults: tuple[tuple[str, Any], ...]
    defaults_source: str
    encoder: Callable[[Arguments], Prefixes]
    decoder: Callable[[Arguments], Prefixes]
    split: str
    size_divisor: Callable[[Arguments], Size3]
    size_rule: str = "any"
    output_shape: Callable[[Arguments, Size3], Size3] = field(
        default=lambda arguments, size: tuple(size)
    )
    output_stride: int = 1
    default_preprocessing: tuple[tuple[str, Any], ...] = (("target_grid", "input"),)
    check: Callable[[Arguments], None] = field(default=lambda arguments: None)
    excluded_arguments: tuple[tuple[str, str], ...] = ()
    argument_order: tuple[str, ...] = ()
    builder: Builder | None = None
    reinitialise: Reinitialiser | None = None

    @property
    def class_name(self) -> str:
        return self.network_class.rsplit(":", 1)[-1]

    def network_type(self) -> type:
        module, _, name = self.network_class.partition(":")
        return getattr(importlib.import_module(module), name)

    def accepted_arguments(self) -> dict[str, inspect.Parameter] | None:
        """The constructor's parameters (None when the builder is the engine's own)."""
        if self.builder is not None:
            return None
        return dict(inspect.signature(self.network_type()).parameters)

    def resolve(self, given: Mapping[str, Any], where: str) -> Arguments:
        """Defaults overlaid with ``given``, checked; errors name ``where.<argument>``."""
        plain = {k: to_plain(v, f"{where}.{k}") for k, v in given.items()}
        accepted = self.accepted_arguments()
        if accepted is not None:
            unknown = sorted(set(plain) - set(accepted))
            if unknown:
                raise InvalidInputError(
                    f"{where}: {self.class_name} has no argument(s) {unknown} (MONAI "
                    f"{_monai_version()}).",
                    hint=f"Valid: {', '.join(accepted)}.",
                )
            for name, reason in self.excluded_arguments:
                if name in plain:
                    raise InvalidInputError(f"{where}.{name}: not supported: {reason}.")
        arguments = {**dict(self.defaults), **plain}
        if accepted is not None:
            missing = [
                n
                for n, p in accepted.items()
                if p.default is inspect.Parameter.empty and n not in arguments
            ]
            if missing:
                raise InvalidInputError(
                    f"{where}: {self.class_name} needs the argument(s) {missing}.",
                    hint=f"Add them, e.g. --set network.{missing[0]}=...",
                )
            for name in self.channel_arguments:
                if name not in arguments:  # recorded explicitly, never left to a default
                    arguments[name] = to_plain(accepted[name].default, f"{where}.{name}")
        try:
            self.check(arguments)
        except ValueError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        order = list(accepted) if accepted is not None else list(self.argument_order)
        return {
            **{n: arguments[n] for n in order if n in arguments},
            **{n: v for n, v in arguments.items() if n not in order},
        }

    def build(self, arguments: Arguments, seed: int | None = None):
        """The network (CPU, training mode). ``seed`` makes its initial weights reproducible."""
        if self.builder is not None:
            return self.builder(self, arguments, seed)
        import torch

        if seed is None:
            return self._construct(arguments)
        with torch.random.fork_rng(devices=[]):  # the run's global RNG stream is left alone
            torch.manual_seed(seed)
            return self._construct(arguments)

    def _construct(self, arguments: Arguments):
        try:
            return self.network_type()(**from_plain(arguments))
        except (ValueError, TypeError, AssertionError) as exc:
            raise InvalidInputError(
                f"network: {self.class_name}({_short(arguments)}) cannot be built: {exc}",
                hint="Check the network arguments against MONAI's documentation.",
            ) from None


@dataclass(frozen=True)
class ModelSpec:
    """One concrete network: adapter name + resolved constructor arguments (plain JSON).

    Build with :meth:`build`; everything the engine needs to know about the network (groups,
    channels, sizes) is asked of the spec, so strategies never name an architecture.
    """

    adapter: str
    arguments: Arguments

    @property
    def family(self) -> Adapter:
        from MachineUnlearningLib.model.adapters import get_adapter

        return get_adapter(self.adapter)

    @property
    def in_channels(self) -> int:
        return int(self.arguments[self.family.channel_arguments[0]])

    @property
    def num_classes(self) -> int:
        return int(self.arguments[self.family.channel_arguments[1]])

    @property
    def encoder_prefixes(self) -> Prefixes:
        return self.family.encoder(self.arguments)

    @property
    def decoder_prefixes(self) -> Prefixes:
        return self.family.decoder(self.arguments)

    @property
    def size_divisor(self) -> Size3:
        return self.family.size_divisor(self.arguments)

    def output_shape(self, input_size: Sequence[int]) -> Size3:
        """Logit grid (d, h, w) for an input of ``input_size`` (D, H, W) voxels."""
        return tuple(self.family.output_shape(self.arguments, tuple(input_size)))  # type: ignore

    def check_input_size(self, input_size: Sequence[int], where: str = "input_size") -> None:
        """InvalidInputError unless every size is a multiple of the network's divisor."""
        divisor = self.size_divisor
        if any(int(n) % k for n, k in zip(input_size, divisor, strict=True)):
            suggestion = [
                max(k, round(int(n) / k) * k) for n, k in zip(input_size, divisor, strict=True)
            ]
            raise InvalidInputError(
                f"{where}: {list(input_size)} does not fit {self.adapter}: every size must be "
                f"a multiple of {list(divisor)} (its downsampling).",
                hint=f"e.g. --set input_size={','.join(map(str, suggestion))}",
            )

    def with_channels(self, in_channels: int, num_classes: int) -> ModelSpec:
        """The same network for other input channels / classes (re-checked)."""
        in_name, out_name = self.family.channel_arguments
        changed = {**self.arguments, in_name: in_channels, out_name: num_classes}
        return ModelSpec.create(self.adapter, changed, "model")

    def build(self, seed: int | None = None):
        """The network (CPU, training mode), its weights drawn from ``seed`` if given."""
        return self.family.build(self.arguments, seed)

    def reinitialise(self, model, prefixes: Prefixes, seed: int) -> None:
        """Re-draw ``model``'s parameters and buffers under ``prefixes``, in place, seeded."""
        if self.family.reinitialise is not None:
            self.family.reinitialise(self, model, prefixes, seed)
            return
        copy_scoped_state(self.build(seed), model, prefixes)

    def describe(self) -> str:
        """e.g. "monai-unet (UNet channels=[8, 16, 32], strides=[2, 2]; 3 in, 4 classes)"."""
        family = self.family
        shown = {k: v for k, v in self.arguments.items() if k not in family.channel_arguments}
        return (
            f"{self.adapter} ({family.class_name} {_short(shown)}; {self.in_channels} in, "
            f"{self.num_classes} classes)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model") -> ModelSpec:
        if not isinstance(data, Mapping) or "adapter" not in data:
            raise InvalidInputError(f"{where}: expected {{'adapter': ..., 'arguments': ...}}.")
        return cls.create(data["adapter"], data.get("arguments") or {}, where)

    @classmethod
    def create(cls, adapter: str, given: Mapping[str, Any], where: str = "network") -> ModelSpec:
        """Resolve ``given`` against ``adapter`` (defaults, checks) into a spec."""
        from MachineUnlearningLib.model.adapters import get_adapter

        family = get_adapter(adapter)
        return cls(family.name, family.resolve(given, where))


def copy_scoped_state(source, target, prefixes: Prefixes) -> None:
    """Copy ``source``'s parameters and buffers under ``prefixes`` into ``target`` in place."""
    import torch

    fresh = dict(source.named_parameters()) | dict(source.named_buffers())
    with torch.no_grad():
        for name, tensor in [*target.named_parameters(), *target.named_buffers()]:
            if in_scope(name, prefixes):
                tensor.copy_(fresh[name])


def _short(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in arguments.items())


def _monai_version() -> str:
    try:
        import monai

        return monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        return "not installed"
