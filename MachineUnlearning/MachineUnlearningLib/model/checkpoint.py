"""Reading and writing model files: the project's own format and MedicalNet's released layouts.

Longer than the usual ~400 lines because every accepted layout, the architecture inference and
the loud mismatch report belong together: they are one procedure (DESIGN.md section 4) and
splitting them would scatter the rules of what counts as "the same model".

Layouts read (always ``torch.load(weights_only=True)``, never arbitrary unpickling):

* project, version 2: ``{"format": "machine-unlearning-checkpoint", "format_version": 2,
  "adapter", "model_config", "state_dict", "metadata", "software"}`` written by
  :func:`save_checkpoint`: ``adapter`` names the architecture adapter (``model/adapters``) and
  ``model_config`` holds its constructor arguments (plain JSON types);
* project, version 1 (before architecture adapters): the same without ``adapter``; always a
  MedicalNet ResNet;
* MedicalNet fine-tuned (train.py): ``{"ecpoch" | "epoch", "batch_id", "state_dict",
  "optimizer" | "optimeizer"}`` with ``module.``-prefixed keys including ``conv_seg.*``;
* MedicalNet pretrained: ``{"state_dict": {"module.conv1.weight": ...}}``, backbone only;
* MONAI's ``CheckpointSaver`` layout ``{"model": state dict, ...}`` (bundle weights only);
* a bare state dict (``{name: tensor}``), with or without the ``module.`` prefix.

MedicalNet's own loader keeps only keys already in the model and so can load nothing without
saying so. Here every backbone entry of the model must be matched by name and shape, or the
load fails and names the missing, unexpected and shape-mismatched keys.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from MachineUnlearningLib.model.adapters import DEFAULT_ADAPTER, ModelSpec, in_scope
from MachineUnlearningLib.model.resnet import (
    BLOCKS_PER_STAGE,
    BOTTLENECK_DEPTHS,
    MedicalNetSegmentation,
    ModelConfig,
    is_decoder_key,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError

CHECKPOINT_FORMAT = "machine-unlearning-checkpoint"
CHECKPOINT_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
MAX_LISTED_KEYS = 20
_DATA_PARALLEL_PREFIX = "module."
# BatchNorm step counters: absent from state dicts written before PyTorch 0.4.1 and unused by
# MedicalNet's BN layers (fixed momentum), so a file may lack them; they are then set to 0.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class LoadReport:
    """What a load matched, and what it found out about the file.

    Attributes:
        source: file name.
        layout: "project", "medicalnet" (``state_dict`` wrapper), "monai" (``model``
            wrapper) or "state-dict" (bare).
        backbone_matched: backbone entries loaded (name and shape equal).
        backbone_expected: backbone entries the model has (318 for MedicalNet ResNet-50 B).
        missing, unexpected: backbone keys only in the model / only in the file.
        mismatched: ``(key, file shape, model shape)`` for keys present in both.
        defaulted: optional entries (BN ``num_batches_tracked``) absent from the file, set to 0.
        inferred: the file's architecture in words, e.g. "ResNet-18 shortcut A, base width 64".
        inferred_depth, inferred_shortcut: the same as data (None when not recognised).
        epoch: the file's ``ecpoch``/``epoch`` entry, if any.
        head_loaded: whether ``conv_seg`` weights came from the file.
        head_note: why the head was or was not loaded.
        input_channels_adapted: conv1 was widened from 1 to the model's input channels.
    """

    source: str
    layout: str
    backbone_matched: int
    backbone_expected: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    defaulted: tuple[str, ...] = ()
    inferred: str = ""
    inferred_depth: int | None = None
    inferred_shortcut: str | None = None
    epoch: int | None = None
    head_loaded: bool = False
    head_note: str = ""
    input_channels_adapted: bool = False

    def summary(self) -> str:
        """One line, e.g. "matched 318/318 backbone entries from resnet_50.pth (...); ..."."""
        text = (
            f"matched {self.backbone_matched}/{self.backbone_expected} backbone entries "
            f"from {self.source} (file looks like {self.inferred or 'an unknown layout'}"
        )
        text += f", epoch {self.epoch})" if self.epoch is not None else ")"
        if self.defaulted:
            text += f"; {len(self.defaulted)} BN step counters absent, set to 0"
        if self.input_channels_adapted:
            text += "; conv1 adapted from 1 input channel"
        return f"{text}; {self.head_note}"


@dataclass(frozen=True)
class LoadedModel:
    """Result of :func:`load_checkpoint`: a ready model (eval mode) and what came with it.

    Attributes:
        model: the network on the asked device, eval mode.
        config: the MedicalNet architecture (None for other adapters; use ``spec``).
        metadata: the checkpoint's metadata (label policy, preprocessing, history, ...).
        report: what the load matched.
        spec: adapter and constructor arguments, for every architecture.
    """

    model: nn.Module
    config: ModelConfig | None
    metadata: dict
    report: LoadReport
    spec: ModelSpec


class CheckpointMismatchError(InvalidInputError):
    """The file's entries do not fit the model; ``report`` lists the differences."""

    def __init__(self, message: str, hint: str, report: LoadReport) -> None:
        super().__init__(message, hint)
        self.report = report


@dataclass
class _FileContent:
    state_dict: dict[str, torch.Tensor]
    layout: str
    epoch: int | None = None
    model_config: dict | None = None
    metadata: dict = field(default_factory=dict)
    adapter: str | None = None


# --- writing -------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelSpec | ModelConfig,
    metadata: dict,
    *,
    overwrite: bool = False,
) -> None:
    """Write ``model`` in the project format, atomically (temp file, fsync, rename).

    ``config``: the model's :class:`ModelSpec` (any architecture) or, for a MedicalNet ResNet,
    its :class:`ModelConfig`. ``metadata`` (label policy, modalities, preprocessing, training
    history, subject ids, ...) may hold only str/int/float/bool/None, lists, str-keyed dicts and
    tensors, so that the file loads with ``weights_only=True``; anything else raises TypeError
    naming where it is.
    An existing ``path`` is refused (InvalidInputError) unless ``overwrite=True``.
    """
    path = Path(path)
    spec = config if isinstance(config, ModelSpec) else medicalnet_spec(config)
    if spec.adapter == DEFAULT_ADAPTER and getattr(model, "config", None) is not None:
        if model.config.to_dict() != spec.arguments:
            raise ValueError(f"config {config} does not describe the model ({model.config})")
    _check_plain(metadata, "metadata")
    if path.exists() and not overwrite:
        raise InvalidInputError(
            f"{path}: refusing to overwrite an existing file.",
            hint="Choose a new output path (inputs are never overwritten by accident).",
        )
    if not path.parent.is_dir():
        raise InvalidInputError(
            f"{path}: folder {path.parent} does not exist.", hint="Create the folder first."
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = _non_finite_keys(state)
    if bad:
        raise ValueError(f"refusing to save non-finite weights: {_list_keys(bad)}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "adapter": spec.adapter,
        "model_config": dict(spec.arguments),
        "state_dict": state,
        "metadata": metadata,
        "software": {
            "torch": str(torch.__version__),  # TorchVersion would need unpickling
            "monai": _monai_version(),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    _atomic_save(payload, path)


def medicalnet_spec(config: ModelConfig) -> ModelSpec:
    """The adapter spec of a MedicalNet ResNet."""
    return ModelSpec(DEFAULT_ADAPTER, config.to_dict())


def _monai_version() -> str | None:
    try:
        import monai
    except ImportError:  # pragma: no cover - monai is a dependency
        return None
    return str(monai.__version__)


def _atomic_save(payload: dict, path: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename durable (POSIX only)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _check_plain(value: object, where: str) -> None:
    if isinstance(value, _JSON_SCALARS) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a str")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where}: {type(value).__name__} is not allowed in checkpoint metadata; "
        "use str, int, float, bool, None, list, dict or tensors"
    )


# --- reading -------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a complete model (backbone and head) from any accepted layout.

    The architecture comes from ``adapter`` and ``model_config`` in project files (version 1
    files are MedicalNet ResNets) and, for MedicalNet files, is inferred from key names
    and shapes otherwise (depth from blocks per stage, shortcut from ``downsample`` keys, widths
    and channels from ``conv1``, classes from ``conv_seg.6.weight``). Every entry must match.
    Returns the model on ``device`` in eval mode. A backbone-only (pretrained) file raises
    InvalidInputError: use :func:`load_pretrained_backbone` for those.
    """
    path = Path(path)
    content = _read(path)
    if content.adapter not in (None, DEFAULT_ADAPTER):
        return _load_adapted(path, content, device)
    state = content.state_dict
    guess = _infer(state)
    if content.model_config is not None:
        config = _project_config(path, content.model_config)
    elif not any(is_decoder_key(k) for k in state):
        raise InvalidInputError(
            f"{path}: the file has no segmentation head (no conv_seg.* keys); it looks "
            f"like a pretrained MedicalNet backbone ({guess.describe()}).",
            hint="Use it as the pretrained backbone of a training run instead.",
        )
    elif guess.config is None:
        raise InvalidInputError(
            f"{path}: cannot tell the architecture from the keys ({guess.describe()}).",
            hint="Expected a MedicalNet ResNet (10/18/34/50/101/152/200) with conv_seg.",
        )
    else:
        config = guess.config
    model = MedicalNetSegmentation(config)
    expected = model.state_dict()
    diff = _compare(state, expected)
    if diff.missing or diff.unexpected or diff.mismatched:
        raise _mismatch_error(path, content, model, diff, what="entries")
    defaults = {k: torch.zeros_like(expected[k]) for k in diff.defaulted}
    model.load_state_dict({**expected, **diff.matched, **defaults}, strict=True)
    model.to(device).eval()
    n_backbone = sum(1 for k in expected if not is_decoder_key(k))
    report = LoadReport(
        source=path.name,
        layout=content.layout,
        backbone_matched=sum(1 for k in diff.matched if not is_decoder_key(k)),
        backbone_expected=n_backbone,
        defaulted=diff.defaulted,
        inferred=guess.describe(),
        inferred_depth=guess.depth,
        inferred_shortcut=guess.shortcut,
        epoch=content.epoch,
        head_loaded=True,
        head_note=f"head loaded ({config.num_classes} classes)",
    )
    return LoadedModel(
        model=model,
        config=config,
        metadata=content.metadata,
        report=report,
        spec=medicalnet_spec(config),
    )


def _load_adapted(path: Path, content: _FileContent, device) -> LoadedModel:
    """A project checkpoint of a non-MedicalNet adapter: build it, every entry must fit."""
    try:
        spec = ModelSpec.create(content.adapter, content.model_config or {}, "model_config")
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc.message}", hint="The file is damaged.") from None
    model = spec.build()
    fitted = fit_state_dict(model, content.state_dict, str(path), spec.describe())
    model.load_state_dict(fitted, strict=True)
    model.to(device).eval()
    encoder = [k for k in fitted if in_scope(k, spec.encoder_prefixes)]
    report = LoadReport(
        source=path.name,
        layout=content.layout,
        backbone_matched=len(encoder),
        backbone_expected=len(encoder),
        inferred=spec.describe(),
        head_loaded=True,
        head_note=f"head loaded ({spec.num_classes} classes)",
    )
    return LoadedModel(model, None, content.metadata, report, spec)


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, described: str
) -> dict[str, torch.Tensor]:
    """``state`` checked against ``model``: every entry by name and shape, nothing extra.

    Returns the state to load (absent BatchNorm step counters set to 0). Raises
    InvalidInputError naming ``source``, listing the missing, unexpected and shape-mismatched
    keys.
    """
    expected = model.state_dict()
    diff = _compare(state, expected)
    if diff.missing or diff.unexpected or diff.mismatched:
        parts = [
            f"{source}: the weights do not fit the network {described}: "
            f"{len(diff.missing)} missing, {len(diff.unexpected)} unexpected and "
            f"{len(diff.mismatched)} shape-mismatched entries."
        ]
        if diff.missing:
            parts.append(f"Missing: {_list_keys(diff.missing)}.")
        if diff.unexpected:
            parts.append(f"Unexpected: {_list_keys(diff.unexpected)}.")
        if diff.mismatched:
            shown = [f"{k} file {list(a)} vs model {list(b)}" for k, a, b in diff.mismatched]
            parts.append(f"Shape mismatch: {_list_keys(shown)}.")
        raise InvalidInputError(
            " ".join(parts),
            hint="Use the weights that were trained with this network definition.",
        )
    return {**diff.matched, **{k: torch.zeros_like(expected[k]) for k in diff.defaulted}}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of any accepted layout (``weights_only=True``) and the layout's name."""
    content = _read(Path(path))
    return content.state_dict, content.layout


def _project_config(path: Path, data: object) -> ModelConfig:
    try:
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"{path}: invalid model_config: {exc}", hint="The file is damaged."
        ) from exc


def load_pretrained_backbone(
    model: MedicalNetSegmentation,
    path: str | os.PathLike,
    *,
    adapt_input_channels: bool = False,
) -> LoadReport:
    """Load backbone weights (MedicalNet ``resnet_*.pth`` or any accepted layout) into ``model``.

    Every backbone entry of ``model`` must be matched by name and shape and the file may hold no
    other backbone entries; otherwise InvalidInputError lists the differences and says what the
    file looks like, and ``model`` is left untouched. The ``conv_seg`` head is loaded only when the
    file has one of identical shapes (same class count); otherwise the model keeps its fresh head.

    ``adapt_input_channels``: a file trained on 1 channel (all MedicalNet weights) can feed a
    model with k > 1 channels by repeating conv1's weight over the k channels and dividing by k,
    so a k-channel input whose channels are all equal gives exactly the 1-channel response.
    By default such a file is refused.
    """
    path = Path(path)
    content = _read(path)
    state = dict(content.state_dict)
    expected = model.state_dict()
    backbone_expected = {k: v for k, v in expected.items() if not is_decoder_key(k)}
    backbone_file = {k: v for k, v in state.items() if not is_decoder_key(k)}
    diff = _compare(backbone_file, backbone_expected)
    adapted = _adapt_conv1(path, backbone_file, diff, model, adapt_input_channels)
    if adapted:
        diff = _compare(backbone_file, backbone_expected)
    if diff.missing or diff.unexpected or diff.mismatched or not diff.matched:
        raise _mismatch_error(path, content, model, diff, what="backbone entries")
    head_file = {k: v for k, v in state.items() if is_decoder_key(k)}
    head_expected = {k: v for k, v in expected.items() if is_decoder_key(k)}
    head_diff = _compare(head_file, head_expected)
    head_loaded = bool(head_file) and not (
        head_diff.missing or head_diff.unexpected or head_diff.mismatched
    )
    if head_loaded:
        note = f"head loaded ({model.config.num_classes} classes)"
    elif not head_file:
        note = "file has no conv_seg head: head kept fresh"
    else:
        note = f"{_describe_head(head_file, model.config)}: head kept fresh"
    new_state = {**expected, **diff.matched, **(head_diff.matched if head_loaded else {})}
    new_state.update({k: torch.zeros_like(expected[k]) for k in diff.defaulted})
    model.load_state_dict(new_state, strict=True)
    guess = _infer(state)
    return LoadReport(
        source=path.name,
        layout=content.layout,
        backbone_matched=len(diff.matched),
        backbone_expected=len(backbone_expected),
        defaulted=diff.defaulted,
        inferred=guess.describe(),
        inferred_depth=guess.depth,
        inferred_shortcut=guess.shortcut,
        epoch=content.epoch,
        head_loaded=head_loaded,
        head_note=note,
        input_channels_adapted=adapted,
    )


def _describe_head(head_file: dict[str, torch.Tensor], config: ModelConfig) -> str:
    classes = head_file.get("conv_seg.6.weight")
    if classes is not None and classes.ndim == 5 and classes.shape[0] != config.num_classes:
        return f"file head has {classes.shape[0]} classes, model has {config.num_classes}"
    return "file head has a different layout or width than the model's"


def _read(path: Path) -> _FileContent:
    """torch.load with weights_only=True, unwrap the layout, strip ``module.``, check values."""
    if not path.is_file():
        raise InvalidInputError(f"{path}: file not found.", hint="Check the model file path.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # not a pickle torch can read at all (garbage, truncated)
            raise InvalidInputError(
                f"{path}: not a readable PyTorch checkpoint ({_unpickler_reason(exc)}).",
                hint="Check that the file is complete and was written by torch.save.",
            ) from exc
        raise InvalidInputError(
            f"{path}: the file contains Python objects other than tensors and plain "
            f"containers (it refers to {found.group(1)}); it was not unpickled "
            "(weights_only=True).",
            hint="Only load model files from sources you trust; re-save the weights only.",
        ) from exc
    except Exception as exc:  # corrupt zip, truncated file, not a torch file at all
        raise InvalidInputError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}).",
            hint="Check that the file is complete and was written by torch.save.",
        ) from exc
    content = _unwrap(path, obj)
    bad_values = [k for k, v in content.state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise InvalidInputError(
            f"{path}: state dict entries that are not tensors: {_list_keys(bad_values)}.",
            hint="The file is not a model state dict.",
        )
    bad = _non_finite_keys(content.state_dict)
    if bad:
        raise InvalidInputError(
            f"{path}: non-finite (NaN or infinite) weights in {_list_keys(bad)}.",
            hint="The training that wrote this file diverged; use an earlier checkpoint.",
        )
    return content


def _unpickler_reason(exc: Exception) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _unwrap(path: Path, obj: object) -> _FileContent:
    if not isinstance(obj, dict):
        raise InvalidInputError(
            f"{path}: expected a dict, found {type(obj).__name__}.",
            hint="Expected a MedicalNet .pth file or a checkpoint written by this extension.",
        )
    if obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise InvalidInputError(
                f"{path}: checkpoint format_version {version!r} is not supported "
                f"(this version reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}).",
                hint="Update the MachineUnlearning extension.",
            )
        needed = ("model_config", "state_dict", "metadata") + (("adapter",) if version > 1 else ())
        missing = [k for k in needed if k not in obj]
        if missing:
            raise InvalidInputError(f"{path}: checkpoint lacks {missing}.", hint="Damaged file.")
        return _FileContent(
            state_dict=_strip_prefix(obj["state_dict"], path),
            layout="project",
            model_config=obj["model_config"],
            metadata=obj["metadata"],
            adapter=obj.get("adapter", DEFAULT_ADAPTER),
        )
    if isinstance(obj.get("state_dict"), dict):
        epoch = obj.get("ecpoch", obj.get("epoch"))
        metadata = {"origin": "medicalnet", "epoch": epoch, "batch_id": obj.get("batch_id")}
        return _FileContent(
            state_dict=_strip_prefix(obj["state_dict"], path),
            layout="medicalnet",
            epoch=epoch if isinstance(epoch, int) else None,
            metadata=metadata,
        )
    if isinstance(obj.get("model"), dict) and obj["model"]:  # MONAI CheckpointSaver
        return _FileContent(state_dict=_strip_prefix(obj["model"], path), layout="monai")
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return _FileContent(state_dict=_strip_prefix(obj, path), layout="state-dict")
    raise InvalidInputError(
        f"{path}: no state dict found; top-level keys: {_list_keys([str(k) for k in obj])}.",
        hint="Expected a 'state_dict' entry (MedicalNet) or a checkpoint of this extension.",
    )


def _strip_prefix(state: dict, path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{path}: state dict key {key!r} is not a str.")
        name = key[len(_DATA_PARALLEL_PREFIX) :] if key.startswith(_DATA_PARALLEL_PREFIX) else key
        out[name] = value
    return out


def _non_finite_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


# --- comparing -----------------------------------------------------------------------------


@dataclass
class _Diff:
    matched: dict[str, torch.Tensor]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    defaulted: tuple[str, ...]


def _compare(file_state: dict, model_state: dict) -> _Diff:
    """Match by name and shape; absent ``num_batches_tracked`` counters are defaulted."""
    matched, missing, mismatched, defaulted = {}, [], [], []
    for key, target in model_state.items():
        if key not in file_state:
            (defaulted if key.endswith(_OPTIONAL_SUFFIX) else missing).append(key)
        elif tuple(file_state[key].shape) != tuple(target.shape):
            mismatched.append((key, tuple(file_state[key].shape), tuple(target.shape)))
        else:
            matched[key] = file_state[key]
    unexpected = [k for k in file_state if k not in model_state]
    return _Diff(matched, missing, unexpected, mismatched, tuple(defaulted))


def _adapt_conv1(
    path: Path, state: dict, diff: _Diff, model: MedicalNetSegmentation, adapt: bool
) -> bool:
    """Widen a 1-channel conv1 in ``state`` (in place) to the model's k channels: repeat / k.

    Only when conv1's input channels are the file's sole difference from the model.
    """
    weight = state.get("conv1.weight")
    k = model.config.in_channels
    only_conv1 = [m[0] for m in diff.mismatched] == ["conv1.weight"]
    if not only_conv1 or diff.missing or diff.unexpected or weight.shape[1] != 1:
        return False
    file_shape = tuple(weight.shape)
    if file_shape[:1] + file_shape[2:] != (model.config.base_width, 7, 7, 7):
        return False
    if not adapt:
        raise InvalidInputError(
            f"{path}: conv1 takes 1 input channel, the model takes {k} (conv1.weight "
            f"{tuple(weight.shape)}).",
            hint="Pass adapt_input_channels=True to repeat the 1-channel weights over the "
            f"{k} channels (divided by {k}), or build the model with in_channels=1.",
        )
    state["conv1.weight"] = weight.repeat(1, k, 1, 1, 1) / k
    return True


def _mismatch_error(
    path: Path, content: _FileContent, model: MedicalNetSegmentation, diff: _Diff, what: str
) -> CheckpointMismatchError:
    state = content.state_dict
    guess = _infer(state)
    parts = [
        f"{path}: the file does not fit the model ({model.config.describe()}): "
        f"{len(diff.missing)} missing, {len(diff.unexpected)} unexpected and "
        f"{len(diff.mismatched)} shape-mismatched {what}; the file looks like "
        f"{guess.describe()}."
    ]
    if diff.missing:
        parts.append(f"Missing: {_list_keys(diff.missing)}.")
    if diff.unexpected:
        parts.append(f"Unexpected: {_list_keys(diff.unexpected)}.")
    if diff.mismatched:
        shown = [f"{k} file {list(a)} vs model {list(b)}" for k, a, b in diff.mismatched]
        parts.append(f"Shape mismatch: {_list_keys(shown)}.")
    prefix = _shared_unknown_prefix(state, model)
    if prefix:
        parts.append(f"Every key starts with '{prefix}', which the model does not use.")
    hint = "Pick the file that matches the model, or build the model to match the file"
    if guess.config is not None:
        c = guess.config
        hint += f" (depth={c.depth}, shortcut_type={c.shortcut_type!r}, base_width={c.base_width})"
    report = LoadReport(
        source=path.name,
        layout=content.layout,
        backbone_matched=0,
        backbone_expected=sum(1 for k in model.state_dict() if not is_decoder_key(k)),
        missing=tuple(diff.missing),
        unexpected=tuple(diff.unexpected),
        mismatched=tuple(diff.mismatched),
        defaulted=diff.defaulted,
        inferred=guess.describe(),
        inferred_depth=guess.depth,
        inferred_shortcut=guess.shortcut,
        epoch=content.epoch,
        head_note="nothing loaded",
    )
    return CheckpointMismatchError(" ".join(parts), hint + ".", report)


def _shared_unknown_prefix(state: dict, model: nn.Module) -> str | None:
    firsts = {k.split(".", 1)[0] for k in state}
    if len(firsts) == 1 and not hasattr(model, next(iter(firsts))):
        return next(iter(firsts)) + "."
    return None


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return f"{shown} (and {more} more)" if more > 0 else shown


# --- architecture inference -----------------------------------------------------------------


@dataclass(frozen=True)
class _Guess:
    depth: int | None
    shortcut: str | None
    config: ModelConfig | None
    blocks: tuple[int, ...]
    bottleneck: bool
    has_head: bool

    def describe(self) -> str:
        if self.config is not None:
            head = f", head with {self.config.num_classes} classes" if self.has_head else ""
            return self.config.describe() + head
        if not self.blocks:
            return "not a MedicalNet ResNet (no layer1..layer4 keys)"
        kind = "Bottleneck" if self.bottleneck else "BasicBlock"
        return f"an unrecognised {kind} ResNet with {list(self.blocks)} blocks per stage"


def _infer(state: dict[str, torch.Tensor]) -> _Guess:
    """Depth from blocks per stage, shortcut from ``downsample`` keys, widths from shapes."""
    blocks = []
    for stage in range(1, 5):
        prefix = f"layer{stage}."
        indices = {k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)}
        blocks.append(len({i for i in indices if i.isdigit()}))
    if not any(blocks):
        return _Guess(None, None, None, (), False, False)
    bottleneck = "layer1.0.conv3.weight" in state
    depths = [
        d
        for d, pattern in BLOCKS_PER_STAGE.items()
        if pattern == tuple(blocks) and (d in BOTTLENECK_DEPTHS) == bottleneck
    ]
    shortcut = "B" if any(".downsample." in k for k in state) else "A"
    depth = depths[0] if depths else None
    conv1 = state.get("conv1.weight")
    head = state.get("conv_seg.6.weight")
    config = None
    if depth is not None and conv1 is not None and conv1.ndim == 5:
        try:
            config = ModelConfig(
                depth=depth,
                shortcut_type=shortcut,
                num_classes=int(head.shape[0]) if head is not None else 1,
                in_channels=int(conv1.shape[1]),
                base_width=int(conv1.shape[0]),
                head_channels=int(head.shape[1]) if head is not None else 32,
            )
        except ValueError:
            config = None
    shortcut = shortcut if depth else None
    return _Guess(depth, shortcut, config, tuple(blocks), bottleneck, head is not None)
