"""A MONAI bundle's preprocessing, run with MONAI's own transforms, and its exact inverse.

A bundle's ``preprocessing`` is a ``Compose`` of dictionary transforms. The engine honours the
deterministic ones that either only read the files (it reads them itself), change intensities,
or resample / crop / pad in an invertible way; it refuses everything else, naming the config key
(``preprocessing#transforms#<i>``). Honoured transforms are MONAI's own classes built from the
bundle's own arguments (never re-implemented); the spatial ones are applied to the image and,
with nearest-neighbour interpolation, to the label map, so a training target stays on the
network's input grid.

Forward, per subject: the (C, D, H, W) arrays go back to nibabel's (C, x, y, z) order with the
file's affine, exactly what MONAI's ``LoadImaged`` + ``EnsureChannelFirstd`` hand a bundle; then
the chain; then, when the network needs it, ``DivisiblePadd`` to its size divisor (the engine
runs whole volumes; sliding-window inference is not honoured yet). The network input is the
chain's (C, X', Y', Z') output, in MONAI's axis order, so a bundle's weights see what they were
trained on.

Inverse: probabilities (C, X', Y', Z') are inverted through the chain's invertible transforms
(MONAI's ``Compose.inverse``, which replays the recorded operations backwards) onto the original
(C, x, y, z) grid and transposed to (C, D, H, W). The inverse runs on ``p - e_background`` and
adds ``e_background`` back, so voxels the chain cropped away or padded in get background
probability 1 and every voxel's probabilities still sum to 1.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from MachineUnlearningLib.data.labels import LabelPolicy
from MachineUnlearningLib.data.preprocessing import PreparedSample
from MachineUnlearningLib.data.volumes import SubjectVolumes
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.plain import to_plain

KIND = "monai-transforms"
IMAGE, LABEL = "image", "label"
# Keys of a MONAI ConfigParser item that are config syntax, not constructor arguments.
CONFIG_SYNTAX_KEYS = ("_target_", "_requires_", "_disabled_", "_desc_", "_mode_")
# Transforms whose work the engine does itself (reading, channel-first, tensor type).
PASS_THROUGH: dict[str, str] = {
    "LoadImaged": "the engine reads the NIfTI files itself, as MONAI's NibabelReader does",
    "EnsureChannelFirstd": "the engine's arrays are channel-first",
    "EnsureTyped": "the engine hands the network float32 tensors",
    "ToTensord": "the engine hands the network float32 tensors",
    "CastToTyped": "the engine hands the network float32 tensors",
    "ToDeviced": "the engine moves tensors to the run's device",
    "Identityd": "does nothing",
}
SPATIAL = (
    "Orientationd",
    "Spacingd",
    "CropForegroundd",
    "Resized",
    "SpatialPadd",
    "DivisiblePadd",
    "CenterSpatialCropd",
    "ResizeWithPadOrCropd",
)
INTENSITY = (
    "NormalizeIntensityd",
    "ScaleIntensityd",
    "ScaleIntensityRanged",
    "ScaleIntensityRangePercentilesd",
    "ThresholdIntensityd",
    "ClipIntensityPercentilesd",
)
HONOURED = (*SPATIAL, *INTENSITY)
# The interpolation argument of a spatial transform; the label map always uses "nearest".
INTERPOLATION_ARGUMENT = {"Spacingd": "mode", "Resized": "mode"}
# Arguments a dictionary transform may give per key (a list aligned with ``keys``).
PER_KEY_ARGUMENTS = ("mode", "padding_mode", "align_corners", "dtype", "anti_aliasing")
# Arguments the engine sets itself (its own keys) or that only route metadata.
ENGINE_ARGUMENTS = (
    "keys",
    "allow_missing_keys",
    "meta_keys",
    "meta_key_postfix",
    "source_key",
    "start_coord_key",
    "end_coord_key",
    "lazy",
)

Resolver = Callable[[int, str], Any]  # (transform index, argument name) -> parsed value


@dataclass(frozen=True)
class TransformStep:
    """One honoured transform: MONAI dictionary-transform name and its plain arguments."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class TransformChain:
    """A bundle's honoured preprocessing, stored in checkpoints as plain data.

    Attributes:
        steps: the honoured transforms, in order.
        pad_to_multiple: (d, h, w) the chain's output is padded to a multiple of (the network's
            size divisor); (1, 1, 1) = no padding.
        passed_through: the bundle's transforms the engine does itself (recorded, not run).
        source: where the chain was read, e.g. ``configs/inference.json#preprocessing``.
    """

    steps: tuple[TransformStep, ...]
    pad_to_multiple: tuple[int, int, int] = (1, 1, 1)
    passed_through: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        for step in self.steps:
            if step.name not in HONOURED:
                raise InvalidInputError(f"preprocessing: {step.name} is not an honoured transform.")

    @property
    def kind(self) -> str:
        return KIND

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "steps": [{"name": s.name, "arguments": dict(s.arguments)} for s in self.steps],
            "pad_to_multiple": list(self.pad_to_multiple),
            "passed_through": list(self.passed_through),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformChain:
        steps = tuple(TransformStep(s["name"], dict(s["arguments"])) for s in data["steps"])
        return cls(
            steps=steps,
            pad_to_multiple=tuple(data.get("pad_to_multiple", (1, 1, 1))),  # type: ignore[arg-type]
            passed_through=tuple(data.get("passed_through", ())),
            source=str(data.get("source", "")),
        )

    def describe(self) -> str:
        names = [s.name for s in self.steps]
        if self.pad_to_multiple != (1, 1, 1):
            names.append(f"DivisiblePadd(k={list(self.pad_to_multiple)}, engine)")
        return " -> ".join(names) or "(no transform)"

    @functools.cached_property
    def compose(self):
        """The MONAI ``Compose`` of the honoured transforms (+ the engine's padding)."""
        from monai.transforms import Compose, DivisiblePadd

        transforms = [_build(step) for step in self.steps]
        if self.pad_to_multiple != (1, 1, 1):
            transforms.append(
                DivisiblePadd(
                    keys=[IMAGE, LABEL], k=list(self.pad_to_multiple), allow_missing_keys=True
                )
            )
        return Compose(transforms)

    def prepare(self, volumes: SubjectVolumes, policy: LabelPolicy | None) -> PreparedSample:
        """Run the chain on one subject; the sample carries its own inverse (``restore``)."""
        from monai.data import MetaTensor

        affine = torch.as_tensor(volumes.affine, dtype=torch.float64)
        image = np.ascontiguousarray(volumes.image.transpose(0, 3, 2, 1))  # (C, x, y, z)
        data = {IMAGE: MetaTensor(torch.from_numpy(image).float(), affine=affine)}
        if policy is not None and volumes.raw_label is not None:
            classes = policy.apply(volumes.raw_label).transpose(2, 1, 0)[None]
            label = torch.from_numpy(np.ascontiguousarray(classes)).float()
            data[LABEL] = MetaTensor(label, affine=affine.clone())
        out = self.compose(data)
        prepared = out[IMAGE]
        target = out[LABEL].as_tensor()[0].round().long() if LABEL in out else None
        d, h, w = volumes.grid_shape
        restore = functools.partial(
            self._restore,
            copy.deepcopy(prepared.meta),
            copy.deepcopy(prepared.applied_operations),
            volumes.grid_shape,
        )
        return PreparedSample(
            image=prepared.as_tensor().float().contiguous(),
            target=target,
            box=(0, d, 0, h, 0, w),
            grid_shape=volumes.grid_shape,
            restore=restore,
        )

    def _restore(
        self, meta: dict, operations: list, grid_shape: tuple[int, int, int], probabilities
    ) -> torch.Tensor:
        """(C, X', Y', Z') probabilities on the network grid -> (C, D, H, W) original grid."""
        from monai.data import MetaTensor

        background = torch.zeros((probabilities.shape[0], 1, 1, 1))
        background[0] = 1.0
        shifted = MetaTensor(
            probabilities.float().cpu() - background,
            meta=copy.deepcopy(meta),
            applied_operations=copy.deepcopy(operations),
        )
        inverted = self.compose.inverse({IMAGE: shifted})[IMAGE]
        full = (torch.as_tensor(inverted.as_tensor()) + background).permute(0, 3, 2, 1)
        if tuple(full.shape[1:]) != tuple(grid_shape):
            raise RuntimeError(
                f"the inverse of {self.describe()} gave {tuple(full.shape[1:])}, not the "
                f"original grid {tuple(grid_shape)}"
            )
        return full.contiguous()


def chain_from_config(
    items: Sequence[Any],
    resolve: Resolver,
    where: str,
    image_key: str = IMAGE,
    pad_to_multiple: tuple[int, int, int] = (1, 1, 1),
) -> TransformChain:
    """Read a bundle's transform list (raw config items) into a chain, or refuse.

    Args:
        items: the raw ``transforms`` list of the bundle's ``preprocessing`` (dicts with
            ``_target_``; references not yet resolved).
        resolve: parsed value of argument ``name`` of item ``i`` (references and ``$``
            expressions evaluated by the bundle's ConfigParser).
        where: config id of the list, e.g. ``preprocessing#transforms``.
        image_key: the bundle's name for the image (its metadata's first input).
        pad_to_multiple: the network's size divisor.
    Raises InvalidInputError naming ``where#<i>`` (and the argument) for anything it cannot
    honour faithfully.
    """
    steps, passed = [], []
    for index, item in enumerate(items):
        key = f"{where}#{index}"
        if not isinstance(item, Mapping) or not isinstance(item.get("_target_"), str):
            raise InvalidInputError(f"{key}: expected a transform with a '_target_' class name.")
        if _is_true(item.get("_disabled_")):
            continue
        name = _dictionary_name(item["_target_"])
        if name.startswith("Rand"):
            raise InvalidInputError(
                f"{key}: {name} is a random augmentation; the engine prepares every sample "
                "deterministically and does not honour it.",
                hint="Give the engine the bundle's inference preprocessing (configs/inference.*).",
            )
        if name in PASS_THROUGH:
            passed.append(name)
            continue
        if name not in HONOURED:
            raise InvalidInputError(
                f"{key}: {item['_target_']} is not honoured by the engine.",
                hint=f"Honoured: {', '.join(HONOURED)}; read and type transforms "
                f"({', '.join(PASS_THROUGH)}) are done by the engine itself.",
            )
        steps.append(_step(item, index, key, name, resolve, image_key))
    chain = TransformChain(tuple(steps), tuple(pad_to_multiple), tuple(passed), where)
    for step in chain.steps:  # MONAI checks its own arguments
        try:
            _build(step)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{where}: {step.name}({step.arguments}): {exc}") from None
    return chain


def preprocessing_from_dict(data: Mapping[str, Any]):
    """A checkpoint's ``preprocessing`` metadata: a bundle chain or the engine's own."""
    from MachineUnlearningLib.data.preprocessing import Preprocessing

    if data.get("kind") == KIND:
        return TransformChain.from_dict(data)
    return Preprocessing.from_dict(dict(data))


def _step(
    item: Mapping[str, Any], index: int, key: str, name: str, resolve: Resolver, image_key: str
) -> TransformStep:
    keys = _as_list(resolve(index, "keys")) if "keys" in item else [image_key]
    if image_key not in keys:
        raise InvalidInputError(
            f"{key}#keys: {name} acts on {keys}, not on the image ({image_key!r}); only "
            "transforms of the image are honoured."
        )
    if name == "CropForegroundd" and resolve(index, "source_key") != image_key:
        raise InvalidInputError(
            f"{key}#source_key: the foreground must come from the image ({image_key!r}); a crop "
            "from another key cannot be applied at inference."
        )
    arguments = {}
    for argument in item:
        if argument in CONFIG_SYNTAX_KEYS or argument in ENGINE_ARGUMENTS:
            continue
        value = resolve(index, argument)
        if argument in PER_KEY_ARGUMENTS and isinstance(value, (list, tuple)) and len(keys) > 1:
            if len(value) == len(keys):
                value = value[keys.index(image_key)]
        if argument == "dtype":
            value = _dtype_name(value)
        arguments[argument] = to_plain(value, f"{key}#{argument}")
    return TransformStep(name, arguments)


def _build(step: TransformStep):
    """MONAI's dictionary transform for ``step`` on the engine's keys."""
    import monai.transforms

    transform_type = getattr(monai.transforms, step.name)
    arguments = dict(step.arguments)
    keys = [IMAGE, LABEL] if step.name in SPATIAL else [IMAGE]
    interpolation = INTERPOLATION_ARGUMENT.get(step.name)
    if interpolation is not None:
        default = inspect.signature(transform_type).parameters[interpolation].default
        arguments[interpolation] = [str(arguments.get(interpolation, default)), "nearest"]
        if "anti_aliasing" in arguments:
            arguments["anti_aliasing"] = [arguments["anti_aliasing"], False]
    if step.name == "CropForegroundd":
        arguments["source_key"] = IMAGE
    with warnings.catch_warnings():  # MONAI's notices about changed defaults of new arguments
        warnings.simplefilter("ignore", FutureWarning)
        return transform_type(keys=keys, allow_missing_keys=True, **arguments)


def _dictionary_name(target: str) -> str:
    name = target.rsplit(".", 1)[-1]
    known = set(HONOURED) | set(PASS_THROUGH)
    if name not in known and f"{name}d" in known:  # the array form of a honoured transform
        return f"{name}d"
    return name


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _dtype_name(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (type, np.dtype)):
        try:
            return np.dtype(value).name
        except TypeError:
            return value
    return value
