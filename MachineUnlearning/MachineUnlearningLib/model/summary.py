"""What a checkpoint holds, as plain data (``machine-unlearning describe-checkpoint``).

Runs in the worker process (it loads the weights with torch); the Slicer module shows the
answer without importing torch (``app/queries.checkpoint_summary`` formats it).
"""

from __future__ import annotations

import os
from dataclasses import asdict

from MachineUnlearningLib.model.checkpoint import load_checkpoint


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """Architecture (``ModelConfig`` fields), ``label_policy``, ``modalities``, ``trained_on``.

    Subject ids are the ones the training job was given (folder names), never anything read
    from image headers. Raises InvalidInputError for a file that is no loadable model.
    """
    loaded = load_checkpoint(path)
    metadata = loaded.metadata or {}
    return {
        **asdict(loaded.config),
        "label_policy": metadata.get("label_policy"),
        "modalities": metadata.get("modalities"),
        "trained_on": list((metadata.get("subject_ids") or {}).get("trained_on") or []),
        "origin": metadata.get("origin", "project"),
    }
