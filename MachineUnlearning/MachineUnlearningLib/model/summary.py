"""What a checkpoint or a MONAI bundle holds, as plain data (``describe-checkpoint``).

Runs in the worker process (it loads the weights with torch); the Slicer module shows the
answer without importing torch (``app/queries.checkpoint_summary`` formats it).
"""

from __future__ import annotations

import os
from pathlib import Path

from MachineUnlearningLib.data.patches import Sampling
from MachineUnlearningLib.model.adapters import DEFAULT_ADAPTER
from MachineUnlearningLib.model.checkpoint import load_checkpoint


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """``adapter``, ``architecture`` (in words), ``label_policy``, ``modalities``,
    ``trained_on``, ``origin``, ``sampling`` (in words: whole volumes, or patches with
    sliding-window inference); for a MedicalNet ResNet also its ``ModelConfig`` fields
    (``depth``, ``shortcut_type``, ...). A folder is read as a MONAI bundle (``origin``
    "bundle", with ``bundle``: name, version, label names, preprocessing, notes).

    Subject ids are the ones the training job was given (folder names), never anything read
    from image headers. Raises InvalidInputError for a file that is no loadable model.
    """
    if Path(path).is_dir():
        return _describe_bundle(Path(path))
    loaded = load_checkpoint(path)
    metadata = loaded.metadata or {}
    spec = loaded.spec
    fields = dict(spec.arguments) if spec.adapter == DEFAULT_ADAPTER else {}
    return {
        **fields,
        "adapter": spec.adapter,
        "architecture": spec.describe(),
        "in_channels": spec.in_channels,
        "num_classes": spec.num_classes,
        "label_policy": metadata.get("label_policy"),
        "modalities": metadata.get("modalities"),
        "trained_on": list((metadata.get("subject_ids") or {}).get("trained_on") or []),
        "origin": "bundle" if metadata.get("bundle") else metadata.get("origin", "project"),
        "sampling": Sampling.from_dict(metadata.get("sampling")).describe(),
    }


def _describe_bundle(root: Path) -> dict:
    from MachineUnlearningLib.model.bundle import read_bundle

    bundle = read_bundle(root)
    return {
        "adapter": bundle.spec.adapter,
        "architecture": bundle.describe(),
        "in_channels": bundle.spec.in_channels,
        "num_classes": bundle.spec.num_classes,
        "label_policy": None,
        "modalities": list(bundle.input_names),
        "trained_on": [],
        "origin": "bundle",
        "sampling": bundle.sampling.describe(),
        "bundle": {**bundle.record(), "preprocessing": bundle.chain.describe()},
    }
