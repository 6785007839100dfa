"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written output, and a cancelled or crashed run leaves at most a
stray ``.tmp-*`` file, never a truncated result under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path | str, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def write_label_map(path: Path | str, labels_dhw: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (D, H, W) class-id map as a uint8 NIfTI with the subject's affine."""
    import nibabel as nib

    from MachineUnlearningLib.data.volumes import to_nifti_order

    image = nib.Nifti1Image(to_nifti_order(labels_dhw.astype(np.uint8)), affine)
    image.header.set_data_dtype(np.uint8)
    with atomic_path(path) as tmp:
        _save_nifti(nib, image, tmp)
    return Path(path)


def _save_nifti(nib, image, tmp: Path) -> None:
    # nibabel chooses compression from the file name, so write to a .nii.gz name and move it.
    named = tmp.parent / (tmp.name + ".nii.gz")
    try:
        nib.save(image, str(named))
        os.replace(named, tmp)
    finally:
        if named.exists():
            named.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
