"""MONAI bundles in and out: the network, its weights, its labels and its preprocessing.

A bundle is read the way MONAI's model zoo lays it out::

    BUNDLE/configs/inference.json | .yaml | .yml   network_def, preprocessing, postprocessing
    BUNDLE/configs/metadata.json                   version, network_data_format (label names)
    BUNDLE/models/model.pt                         the weights (state dict)

with ``monai.bundle.ConfigParser`` (which merges and resolves macros and relative ids). The
engine never runs Python from a bundle's config: it reads literal values and follows ``@``
references, and refuses a ``$`` expression where it needs a value, naming the key. What it
cannot honour faithfully is refused with InvalidInputError (exit 2) naming the config key: a
network with no adapter (``network_def#_target_``), sigmoid multi-label outputs
(``postprocessing#transforms#<i>#sigmoid``), a missing weights file (``models/model.pt``),
weights that do not fit the network (the keys listed), preprocessing it cannot run
(``preprocessing#transforms#<i>``, ``data/transform_chain.py``), an inferer other than
``SimpleInferer`` / ``SlidingWindowInferer`` (``inferer#_target_``) or an inferer argument that
would change what the engine predicts (``inferer#<argument>``).

A ``SlidingWindowInferer`` is honoured: the bundle's model was trained on patches of its
``roi_size``, so the engine trains (fine-tunes, unlearns) it on such patches and predicts with
``sliding_window_inference`` at its ``overlap``, ``sw_batch_size``, ``mode`` and
``sigma_scale`` (``data/patches.py``).

Written back by ``model/bundle_writer.py``: a copy of the bundle folder with the new weights
in ``models/model.pt``, ``configs/metadata.json`` given a new version and a changelog entry, and
no other weights file of ``models/`` (a TorchScript ``model.ts`` would still hold the old
weights). The input bundle is only ever read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MachineUnlearningLib.data.cohort import MODALITY_FILES
from MachineUnlearningLib.data.labels import LABEL_POLICIES, LabelPolicy
from MachineUnlearningLib.data.patches import PATCHES, Sampling
from MachineUnlearningLib.data.transform_chain import (
    CONFIG_SYNTAX_KEYS,
    IMAGE,
    TransformChain,
    chain_from_config,
)
from MachineUnlearningLib.model.adapters import ModelSpec, adapter_for_target
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
METADATA_FILE = "configs/metadata.json"
WEIGHTS_FILE = "models/model.pt"
NETWORK_KEY = "network_def"
PREPROCESSING_KEY = "preprocessing"
POSTPROCESSING_KEY = "postprocessing"


@dataclass(frozen=True)
class Bundle:
    """A MONAI bundle the engine can use.

    Attributes:
        root: the bundle folder (absolute).
        config_file: the config read, relative to ``root`` (e.g. ``configs/inference.json``).
        name: the metadata's ``name`` (else the folder name).
        version: the metadata's ``version`` ("" if absent).
        spec: the network as adapter + constructor arguments (from ``network_def``).
        label_names: output channel names (``network_data_format#outputs#<key>#channel_def``),
            index = channel; "" where the metadata gives none.
        input_names: input channel names (``...#inputs#image#channel_def``), as given.
        chain: the honoured preprocessing.
        sampling: whole volumes (``SimpleInferer`` or none) or patches of the
            ``SlidingWindowInferer``'s ``roi_size`` with sliding-window inference.
        notes: what the bundle asks that the engine does differently.
    """

    root: Path
    config_file: str
    name: str
    version: str
    spec: ModelSpec
    label_names: tuple[str, ...]
    input_names: tuple[str, ...]
    chain: TransformChain
    sampling: Sampling = Sampling()
    notes: tuple[str, ...] = ()

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS_FILE

    def describe(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"MONAI bundle '{self.name}'{version} ({self.spec.describe()})"

    def load_network(self, device="cpu"):
        """The network with the bundle's weights (every entry must fit), eval mode."""
        from MachineUnlearningLib.model.checkpoint import fit_state_dict, read_state_dict

        if not self.weights.is_file():
            raise InvalidInputError(
                f"{WEIGHTS_FILE}: {self.weights} does not exist.",
                hint="A bundle keeps its weights in models/model.pt (a state dict).",
            )
        state, _ = read_state_dict(self.weights)
        model = self.spec.build()
        model.load_state_dict(fit_state_dict(model, state, str(self.weights), self.spec.describe()))
        return model.to(device).eval()

    def modalities(self, given: Any = None) -> tuple[str, ...]:
        """The cohort modalities feeding the input channels: ``given`` (``--set modalities``),
        else the metadata's input channel names when they are modality names."""
        if given is not None:
            chosen = (given,) if isinstance(given, str) else tuple(given)
            for modality in chosen:
                look_up_option(modality, MODALITY_FILES, "modalities")
        elif self.input_names and all(n in MODALITY_FILES for n in self.input_names):
            chosen = self.input_names
        else:
            raise InvalidInputError(
                f"{METADATA_FILE}#network_data_format#inputs#{IMAGE}#channel_def: the input "
                f"channels {list(self.input_names) or '(not named)'} are not cohort modalities.",
                hint=f"Say which modality feeds each of the {self.spec.in_channels} channel(s), "
                f"e.g. --set modalities={','.join(list(MODALITY_FILES)[: self.spec.in_channels])}",
            )
        if len(chosen) != self.spec.in_channels:
            raise InvalidInputError(
                f"modalities: {list(chosen)} give {len(chosen)} channel(s); the bundle's network "
                f"takes {self.spec.in_channels} ({NETWORK_KEY}#in_channels).",
                hint="Give one modality per input channel.",
            )
        return chosen

    def label_policy(self, given: str | None = None) -> LabelPolicy:
        """The cohort's label policy for the output channels: ``given``, else the one policy
        with as many classes as the network has outputs."""
        classes = self.spec.num_classes
        if given is not None:
            policy = LABEL_POLICIES[look_up_option(given, LABEL_POLICIES, "label_policy")]
        else:
            fitting = [p for p in LABEL_POLICIES.values() if p.num_classes == classes]
            if len(fitting) != 1:
                raise InvalidInputError(
                    f"{NETWORK_KEY}#out_channels: {classes} output channels match no single "
                    "label policy of the cohort.",
                    hint="Choose one with --set label_policy=... ("
                    + ", ".join(
                        f"{p.name}: {p.num_classes} classes" for p in LABEL_POLICIES.values()
                    )
                    + ").",
                )
            policy = fitting[0]
        if policy.num_classes != classes:
            raise InvalidInputError(
                f"label_policy: {policy.name} has {policy.num_classes} classes; the bundle's "
                f"network has {classes} output channels ({NETWORK_KEY}#out_channels).",
                hint="Choose a label policy with as many classes as the network has outputs.",
            )
        return policy

    def record(self) -> dict[str, Any]:
        """What a checkpoint and a deletion record say about the bundle (plain JSON)."""
        return {
            "name": self.name,
            "version": self.version,
            "root": str(self.root),
            "config_file": self.config_file,
            "label_names": list(self.label_names),
            "input_names": list(self.input_names),
            "notes": list(self.notes),
            "inference": self.sampling.describe(),
        }


def read_bundle(root: str | os.PathLike) -> Bundle:
    """Read the bundle at ``root`` (network, labels, preprocessing); weights are read later
    (:meth:`Bundle.load_network`). Refusals name the config key (InvalidInputError, exit 2)."""
    from monai.bundle import ConfigParser

    root = Path(root).resolve()
    if not root.is_dir():
        raise InvalidInputError(
            f"bundle: {root} is not a folder.",
            hint="Point --bundle at a MONAI bundle folder (configs/, models/).",
        )
    config_file = next(
        (f"configs/{n}" for n in CONFIG_NAMES if (root / "configs" / n).is_file()), None
    )
    if config_file is None:
        raise InvalidInputError(
            f"bundle: {root} has no configs/inference.json (or .yaml).",
            hint="The engine reads a bundle's inference config: network_def and preprocessing.",
        )
    if not (root / METADATA_FILE).is_file():
        raise InvalidInputError(
            f"{METADATA_FILE}: missing in {root}.",
            hint="A bundle describes its labels and version in configs/metadata.json.",
        )
    parser = ConfigParser()
    try:
        parser.read_meta(str(root / METADATA_FILE))
        parser.read_config(str(root / config_file))
        parser.resolve_macro_and_relative_ids()
    except Exception as exc:  # json / yaml errors, unresolvable macros
        raise InvalidInputError(
            f"bundle: cannot read {config_file} or {METADATA_FILE} ({type(exc).__name__}: {exc})."
        ) from None
    reader = _ConfigReader(parser, config_file)
    meta = parser.get(ConfigParser.meta_key) or {}
    spec = _network(reader)
    outputs = _format_entries(meta, "outputs")
    inputs = _format_entries(meta, "inputs")
    image_key = next(iter(inputs), IMAGE)
    _check_postprocessing(reader)
    chain = _preprocessing(reader, image_key, spec)
    label_names = _channel_names(outputs, spec.num_classes)
    input_names = tuple(n for n in _channel_names(inputs, spec.in_channels) if n)
    return Bundle(
        root=root,
        config_file=config_file,
        name=str(meta.get("name") or root.name),
        version=str(meta.get("version") or ""),
        spec=spec,
        label_names=label_names,
        input_names=input_names,
        chain=chain,
        sampling=_inferer_sampling(reader, spec),
    )


class _ConfigReader:
    """Literal values of a parsed config, following ``@`` references, never evaluating ``$``."""

    def __init__(self, parser, config_file: str) -> None:
        self.parser = parser
        self.config_file = config_file

    def has(self, key: str) -> bool:
        return self.parser.get(key, _ABSENT) is not _ABSENT

    def raw(self, key: str) -> Any:
        value = self.parser.get(key, _ABSENT)
        if value is _ABSENT:
            raise InvalidInputError(f"{key}: missing from {self.config_file}.")
        return value

    def follow(self, key: str) -> tuple[str, Any]:
        """``key``'s raw entry, following ``@`` references to another entry; (its key, it)."""
        raw = self.raw(key)
        for _ in range(20):
            if not (isinstance(raw, str) and raw.startswith("@")):
                return key, raw
            key = raw[1:].replace("::", "#")
            raw = self.raw(key)
        raise InvalidInputError(f"{key}: references nest too deep (a cycle?).")

    def value(self, key: str, raw: Any = None, depth: int = 0) -> Any:
        raw = self.raw(key) if raw is None else raw
        if depth > 20:
            raise InvalidInputError(f"{key}: references nest too deep (a cycle?).")
        if isinstance(raw, str) and raw.startswith("@"):
            return self.value(raw[1:].replace("::", "#"), depth=depth + 1)
        if isinstance(raw, str) and raw.startswith(("$", "%")):
            raise InvalidInputError(
                f"{key}: {raw!r} is a Python expression; the engine does not run code from a "
                "bundle's config.",
                hint="Write the value literally in the config (a number, list or string).",
            )
        if isinstance(raw, Mapping):
            if "_target_" in raw:
                raise InvalidInputError(f"{key}: an object ({raw['_target_']}), not a value.")
            return {k: self.value(f"{key}#{k}", v, depth) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(f"{key}#{i}", v, depth) for i, v in enumerate(raw)]
        return raw


_ABSENT = object()


def _network(reader: _ConfigReader) -> ModelSpec:
    if not reader.has(NETWORK_KEY):
        raise InvalidInputError(
            f"{NETWORK_KEY}: missing from {reader.config_file}.",
            hint="The engine builds the bundle's network from its network_def.",
        )
    key, raw = reader.follow(NETWORK_KEY)
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{key}: expected a dict with a _target_.")
    adapter = adapter_for_target(raw.get("_target_"), f"{key}#_target_")
    arguments = {
        k: reader.value(f"{key}#{k}", v) for k, v in raw.items() if k not in CONFIG_SYNTAX_KEYS
    }
    return ModelSpec.create(adapter.name, arguments, NETWORK_KEY)


def _format_entries(meta: Mapping[str, Any], which: str) -> dict[str, Any]:
    entries = (meta.get("network_data_format") or {}).get(which) or {}
    return dict(entries) if isinstance(entries, Mapping) else {}


def _channel_names(entries: Mapping[str, Any], channels: int) -> tuple[str, ...]:
    first = next(iter(entries.values()), {}) if entries else {}
    names = first.get("channel_def") if isinstance(first, Mapping) else None
    names = names if isinstance(names, Mapping) else {}
    return tuple(str(names.get(str(i), names.get(i, ""))) for i in range(channels))


def _transform_items(reader: _ConfigReader, key: str) -> list:
    key, raw = reader.follow(key)
    if isinstance(raw, Mapping) and raw.get("_target_", "").rsplit(".", 1)[-1] == "Compose":
        items = raw.get("transforms")
        if isinstance(items, list):
            return items
    raise InvalidInputError(
        f"{key}: expected a Compose with a literal 'transforms' list.",
        hint="The engine reads the transform list itself; it does not run config code.",
    )


def _preprocessing(reader: _ConfigReader, image_key: str, spec: ModelSpec) -> TransformChain:
    if not reader.has(PREPROCESSING_KEY):
        raise InvalidInputError(
            f"{PREPROCESSING_KEY}: missing from {reader.config_file}.",
            hint="The engine runs the bundle's own preprocessing; it must be in the config.",
        )
    items = _transform_items(reader, PREPROCESSING_KEY)
    where = f"{PREPROCESSING_KEY}#transforms"

    def resolve(index: int, argument: str) -> Any:
        return reader.value(f"{where}#{index}#{argument}", items[index][argument])

    chain = chain_from_config(items, resolve, where, image_key, spec.size_divisor)
    return TransformChain(
        chain.steps, chain.pad_to_multiple, chain.passed_through, f"{reader.config_file}#{where}"
    )


def _check_postprocessing(reader: _ConfigReader) -> None:
    """Refuse sigmoid (multi-label) outputs: the engine trains and scores softmax classes."""
    if not reader.has(POSTPROCESSING_KEY):
        return
    items = _transform_items(reader, POSTPROCESSING_KEY)
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("_target_", "")).rsplit(".", 1)[-1]
        key = f"{POSTPROCESSING_KEY}#transforms#{index}"
        if name in ("Activationsd", "Activations") and _given(reader, item, key, "sigmoid"):
            raise InvalidInputError(
                f"{key}#sigmoid: sigmoid (multi-label) outputs are not supported: the engine "
                "trains and scores one softmax class per voxel.",
                hint="Only bundles whose outputs are mutually exclusive classes (softmax) can "
                "be unlearned.",
            )
        if name in ("AsDiscreted", "AsDiscrete") and _given(reader, item, key, "threshold"):
            raise InvalidInputError(
                f"{key}#threshold: thresholded (multi-label) outputs are not supported: the "
                "engine takes the argmax over softmax classes."
            )


def _given(reader: _ConfigReader, item: Mapping[str, Any], key: str, argument: str) -> bool:
    """Whether a transform's ``argument`` is set (present, and neither None nor False)."""
    if argument not in item:
        return False
    return reader.value(f"{key}#{argument}", item[argument]) not in (None, False)


INFERER_KEY = "inferer"
# SlidingWindowInferer arguments -> Sampling fields (MONAI 1.6's names).
INFERER_ARGUMENTS = {
    "roi_size": "patch_size",
    "overlap": "window_overlap",
    "sw_batch_size": "window_batch_size",
    "mode": "window_mode",
    "sigma_scale": "window_sigma_scale",
}
# Arguments that only say where or how fast the windows run, not what they predict.
INFERER_PLACEMENT = (
    "sw_device",
    "device",
    "progress",
    "cache_roi_weight_map",
    "cpu_thresh",
    "buffer_steps",
    "buffer_dim",
)
# Arguments honoured only at MONAI's default (the engine pads windows with zeros).
INFERER_AT_DEFAULT = {"padding_mode": "constant", "cval": 0, "with_coord": False}


def _inferer_sampling(reader: _ConfigReader, spec: ModelSpec) -> Sampling:
    """Whole volumes for no inferer / ``SimpleInferer``; patches + sliding windows for a
    ``SlidingWindowInferer``; anything else refused naming ``inferer#...``."""
    if not reader.has(INFERER_KEY):
        return Sampling()
    key, raw = reader.follow(INFERER_KEY)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("_target_"), str):
        raise InvalidInputError(f"{key}: expected an inferer with a '_target_' class name.")
    name = raw["_target_"].rsplit(".", 1)[-1]
    if name == "SimpleInferer":
        return Sampling()
    if name != "SlidingWindowInferer":
        raise InvalidInputError(
            f"{key}#_target_: {raw['_target_']} is not honoured by the engine.",
            hint="Honoured inferers: SimpleInferer (whole volumes) and SlidingWindowInferer.",
        )
    if "roi_size" not in raw:
        raise InvalidInputError(f"{key}#roi_size: a SlidingWindowInferer needs its roi_size.")
    fields: dict[str, Any] = {"sampling": PATCHES}
    for argument, given in raw.items():
        if argument in CONFIG_SYNTAX_KEYS or argument in INFERER_PLACEMENT:
            continue
        value = reader.value(f"{key}#{argument}", given)
        if argument in INFERER_ARGUMENTS:
            fields[INFERER_ARGUMENTS[argument]] = value
        elif argument in INFERER_AT_DEFAULT and value == INFERER_AT_DEFAULT[argument]:
            continue
        else:
            known = argument in INFERER_AT_DEFAULT
            raise InvalidInputError(
                f"{key}#{argument}: {argument}={value!r} is not honoured by the engine"
                + (f" (only {INFERER_AT_DEFAULT[argument]!r})." if known else "."),
                hint=f"Honoured: {', '.join(INFERER_ARGUMENTS)}; ignored (placement only): "
                f"{', '.join(INFERER_PLACEMENT)}.",
            )
    size = fields["patch_size"]
    if isinstance(size, (list, tuple)) and any(int(v) <= 0 for v in size):
        raise InvalidInputError(
            f"{key}#roi_size: {size} has a non-positive size (a whole axis); the engine needs "
            "the window size on every axis."
        )
    try:
        sampling = Sampling(**fields)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{key}: {exc.message}", hint=exc.hint) from None
    spec.check_input_size(sampling.patch_size, f"{key}#roi_size")
    return sampling


def bundle_rules_markdown() -> str:
    """What the engine honours in a bundle's preprocessing, for docs/bring-your-own-model.md."""
    from MachineUnlearningLib.data.transform_chain import INTENSITY, PASS_THROUGH, SPATIAL

    def names(items) -> str:
        return ", ".join(f"`{n}`" for n in items)

    lines = [
        "| transforms (`preprocessing#transforms#<i>`) | what the engine does |",
        "|---|---|",
        *(f"| `{name}` | not run: {why} |" for name, why in PASS_THROUGH.items()),
        f"| {names(SPATIAL)} | run (MONAI's class, the bundle's arguments) on the image and, "
        "with nearest-neighbour interpolation, the label map; inverted for predictions |",
        f"| {names(INTENSITY)} | run on the image |",
        "| `Rand*` | refused: random augmentation (samples are prepared deterministically) |",
        "| any other | refused, naming the key |",
    ]
    return "\n".join(lines)


def inferer_rules_markdown() -> str:
    """What the engine does with a bundle's ``inferer``, for docs/bring-your-own-model.md."""

    def names(items) -> str:
        return ", ".join(f"`{n}`" for n in items)

    mapped = ", ".join(f"`{a}` -> `{f}`" for a, f in INFERER_ARGUMENTS.items())
    at_default = ", ".join(f"`{a}` (only `{v}`)" for a, v in INFERER_AT_DEFAULT.items())
    lines = [
        "| `inferer` | what the engine does |",
        "|---|---|",
        "| none, `SimpleInferer` | whole volumes (`sampling: whole-volume`) |",
        f"| `SlidingWindowInferer` | patches of its `roi_size` for training and unlearning, "
        f"`sliding_window_inference` for predictions; honoured: {mapped}; ignored (where and "
        f"how fast, not what): {names(INFERER_PLACEMENT)}; refused otherwise: {at_default}, "
        "any other argument, a non-positive (whole-axis) `roi_size` |",
        "| any other | refused, naming `inferer#_target_` |",
    ]
    return "\n".join(lines)
