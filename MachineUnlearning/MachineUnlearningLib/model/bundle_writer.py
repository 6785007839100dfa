"""A MONAI bundle written back: a copy of the input bundle with new weights.

The copy keeps every config and document of the input bundle, replaces ``models/model.pt`` with
the new state dict, gives ``configs/metadata.json`` a new version and a changelog entry, and
leaves out every other weights file of ``models/`` (they would still hold the old weights). It
is built in a temporary folder beside the destination and renamed into place; the input bundle
is only read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from MachineUnlearningLib.model.bundle import METADATA_FILE, WEIGHTS_FILE, Bundle
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

CHANGE_KINDS = ("trained", "unlearned")


def write_bundle(
    bundle: Bundle,
    destination: str | os.PathLike,
    state_dict: Mapping,
    change: str,
    kind: str = "unlearned",
) -> tuple[Path, list[str]]:
    """Write a copy of ``bundle`` at ``destination`` with ``state_dict`` as its weights.

    ``configs/metadata.json`` gets a new version (:func:`next_version`: ``0.2.0`` ->
    ``0.2.0+unlearned.1`` for ``kind`` "unlearned", "trained" likewise) and ``change`` as its
    changelog entry; other weights files of ``models/`` are left out (they hold the old
    weights) and returned by name. The copy is made in a temporary folder beside
    ``destination`` and renamed into place; an existing ``destination`` is refused.
    """
    import torch

    destination = Path(destination)
    if destination.exists():
        raise InvalidInputError(
            f"bundle output: {destination} already exists; it is never overwritten.",
            hint="Choose a new --output folder.",
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    stale = sorted(
        p.relative_to(bundle.root).as_posix()
        for p in (bundle.root / "models").rglob("*")
        if p.is_file() and p.relative_to(bundle.root).as_posix() != WEIGHTS_FILE
    )
    temporary = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        copy = temporary / "bundle"
        shutil.copytree(bundle.root, copy, ignore=_ignore_models(bundle.root))
        (copy / "models").mkdir(exist_ok=True)
        state = {k: v.detach().cpu() for k, v in state_dict.items()}
        torch.save(state, copy / WEIGHTS_FILE)
        _update_metadata(copy / METADATA_FILE, change, look_up_option(kind, CHANGE_KINDS, "kind"))
        os.replace(copy, destination)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return destination, stale


def _ignore_models(root: Path):
    models = (root / "models").resolve()

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder).resolve() == models:
            return [n for n in names if n != Path(WEIGHTS_FILE).name]
        if models in Path(folder).resolve().parents:
            return names
        return []

    return ignore


def next_version(version: str, kind: str) -> str:
    """The version after a change of ``kind``, as semantic-version build metadata:
    ``0.2.0`` -> ``0.2.0+unlearned.1`` -> ``0.2.0+unlearned.2``; ``0.2.0+trained.1`` ->
    ``0.2.0+trained.1.unlearned.1`` (one ``+``, dot-separated identifiers)."""
    base, plus, build = (version or "0.0.0").partition("+")
    found = re.fullmatch(rf"(?:(.*)\.)?{kind}\.(\d+)", build) if plus else None
    if found is not None:
        head = f"{found.group(1)}." if found.group(1) else ""
        return f"{base}+{head}{kind}.{int(found.group(2)) + 1}"
    return f"{base}+{build}{'.' if build else ''}{kind}.1"


def _update_metadata(path: Path, change: str, kind: str) -> None:
    metadata = json.loads(path.read_text(encoding="utf-8"))
    new_version = next_version(str(metadata.get("version") or ""), kind)
    metadata["version"] = new_version
    changelog = metadata.get("changelog") if isinstance(metadata.get("changelog"), dict) else {}
    metadata["changelog"] = {new_version: change, **changelog}
    path.write_text(json.dumps(metadata, indent=4) + "\n", encoding="utf-8")
