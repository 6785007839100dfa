"""MedicalNet-style preprocessing and its exact inverse.

Forward (per subject, channels-first ``(C, D, H, W)``):

1. crop to the head's box: voxels brighter than 20 % of the channel's 99th percentile in any
   channel, plus a 2-voxel margin (MedicalNet keeps voxels that differ from the corner value,
   which keeps the whole grid when the background is noisy, as real MRI backgrounds are);
2. resize the crop to ``input_size`` (trilinear by default; MedicalNet uses nearest neighbour for
   images, available as ``image_interpolation="nearest"``);
3. z-score each channel over its voxels > 0; voxels <= 0 are set to 0 (MedicalNet fills them
   with unseeded N(0, 1) noise, which would make runs irreproducible);
4. labels: raw -> class ids by the label policy (ignored -> -1), then nearest-neighbour resize of
   the crop to the network's output grid (the caller passes it: the model adapter's logit grid,
   1/4 of the input per axis for MedicalNet) or, with ``target_grid="input"``, to the input
   grid (the loss then upsamples the logits).

Inverse: softmax probabilities ``(C, d, h, w)`` on the output grid are resized (trilinear,
MedicalNet's order 1) to the crop box and pasted into the original grid, where voxels outside the
box are background with probability 1; the argmax is then on the original 240 x 240 x 48 grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from MachineUnlearningLib.data.labels import IGNORE_INDEX, LabelPolicy
from MachineUnlearningLib.data.volumes import SubjectVolumes
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

IMAGE_INTERPOLATIONS = ("trilinear", "nearest")
TARGET_GRIDS = ("output", "input")
Box = tuple[int, int, int, int, int, int]  # z0, z1, y0, y1, x0, x1 (end exclusive)
FOREGROUND_THRESHOLD = 0.2  # fraction of a channel's 99th percentile that counts as head
FOREGROUND_MARGIN = 2  # voxels added around the head box
SPARSE_PLANE_FRACTION = 0.01


@dataclass(frozen=True)
class Preprocessing:
    """Spatial and intensity preprocessing, stored in every checkpoint.

    Attributes:
        input_size: network input (D, H, W) in voxels; MedicalNet's is (56, 448, 448).
        crop_to_foreground: crop to the foreground box before resizing (MedicalNet: yes).
        image_interpolation: ``trilinear`` (default) or ``nearest`` (MedicalNet's).
        crop_jitter: training-time augmentation: each box bound moves by up to this fraction
            of the box extent (0 = off). MedicalNet crops randomly around the label box.
        target_grid: where training labels live: ``output`` (the network's logit grid, e.g.
            1/4 of the input for MedicalNet; the caller passes it) or ``input`` (the network
            input grid; the loss then upsamples the logits trilinearly to it, which trains the
            model for the trilinear upsampling its predictions go through, so boundaries land
            between logit voxels).
    """

    input_size: tuple[int, int, int] = (56, 448, 448)
    crop_to_foreground: bool = True
    image_interpolation: str = "trilinear"
    crop_jitter: float = 0.0
    target_grid: str = "output"

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 3 or min(size) < 8:
            raise InvalidInputError(
                f"input_size: must be three sizes >= 8 (D, H, W), got {self.input_size!r}.",
                hint="e.g. 56 448 448 (MedicalNet) or 32 96 96 (CPU demo).",
            )
        object.__setattr__(self, "input_size", size)
        look_up_option(self.image_interpolation, IMAGE_INTERPOLATIONS, "image_interpolation")
        look_up_option(self.target_grid, TARGET_GRIDS, "target_grid")
        if not 0.0 <= self.crop_jitter < 0.5:
            raise InvalidInputError(
                f"crop_jitter: must be in [0, 0.5), got {self.crop_jitter!r}.", hint="e.g. 0.05"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(**{**data, "input_size": tuple(data["input_size"])})


@dataclass(frozen=True)
class PreparedSample:
    """One network-ready sample.

    Attributes:
        image: (C, D_in, H_in, W_in) float32 network input.
        target: int64 class ids (-1 = ignore) on the output grid (d, h, w) or, with
            ``target_grid="input"``, on the input grid; None without labels.
        box: crop box in the original grid (z0, z1, y0, y1, x0, x1), end exclusive.
        grid_shape: original (D, H, W).
        restore: how this sample's output-grid probabilities (C, d, h, w) go back to the
            original grid (C, D, H, W); None = the crop-box inverse of
            :func:`restore_probabilities` (a bundle's transform chain brings its own).
        patch_centre: for a training patch (``data/patches.py``), its centre voxel in the
            (padded) prepared volume; None for a whole sample or a window.
    """

    image: torch.Tensor
    target: torch.Tensor | None
    box: Box
    grid_shape: tuple[int, int, int]
    restore: Callable[[torch.Tensor], torch.Tensor] | None = None
    patch_centre: tuple[int, int, int] | None = None


def foreground_box(
    image: np.ndarray, threshold: float = FOREGROUND_THRESHOLD, margin: int = FOREGROUND_MARGIN
) -> Box:
    """Bounding box of the head: voxels brighter than ``threshold`` x the channel's 99th
    percentile in any channel (planes with only sparse noise voxels ignored), grown by
    ``margin`` voxels and clipped to the grid.

    MedicalNet keeps voxels that differ from the corner value, which on a real (noisy)
    background keeps the whole grid; a relative intensity threshold finds the head.

    Args:
        image: (C, D, H, W).
    Returns:
        (z0, z1, y0, y1, x0, x1), end exclusive; the whole grid when nothing passes.
    """
    mask = np.zeros(image.shape[1:], dtype=bool)
    for channel in image:
        high = float(np.percentile(channel, 99))
        if high > 0:
            mask |= channel > threshold * high
    if not mask.any():
        d, h, w = mask.shape
        return (0, d, 0, h, 0, w)
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = mask.sum(axis=other)
        # a plane belongs to the head when it holds more than 1 % of the fullest plane's
        # voxels; isolated bright noise voxels of the background do not.
        present = np.flatnonzero(counts > SPARSE_PLANE_FRACTION * counts.max())
        bounds += [
            max(int(present[0]) - margin, 0),
            min(int(present[-1]) + 1 + margin, mask.shape[axis]),
        ]
    return tuple(bounds)  # type: ignore[return-value]


def jitter_box(
    box: Box, grid_shape: tuple[int, int, int], fraction: float, rng: np.random.Generator
) -> Box:
    """Move each bound of ``box`` by a uniform random amount up to ``fraction`` of its extent."""
    out = []
    for axis in range(3):
        lo, hi = box[2 * axis], box[2 * axis + 1]
        extent = hi - lo
        step = int(round(fraction * extent))
        lo = int(np.clip(lo + rng.integers(-step, step + 1), 0, grid_shape[axis] - 1))
        hi = int(np.clip(hi + rng.integers(-step, step + 1), lo + 1, grid_shape[axis]))
        out += [lo, hi]
    return tuple(out)  # type: ignore[return-value]


def _crop(array: np.ndarray, box: Box) -> np.ndarray:
    z0, z1, y0, y1, x0, x1 = box
    return array[..., z0:z1, y0:y1, x0:x1]


def _normalise(image: torch.Tensor) -> torch.Tensor:
    """Per-channel z-score over voxels > 0; other voxels become 0. (C, D, H, W) -> same."""
    inside = image > 0
    dims = (1, 2, 3)
    count = inside.sum(dim=dims, keepdim=True)
    mean = (image * inside).sum(dim=dims, keepdim=True) / count.clamp_min(1)
    variance = (((image - mean) * inside) ** 2).sum(dim=dims, keepdim=True)
    std = (variance / (count - 1).clamp_min(1)).sqrt().clamp_min(1e-6)
    usable = inside & (count >= 2)  # a channel with < 2 positive voxels stays all zero
    return torch.where(usable, (image - mean) / std, torch.zeros_like(image))


def prepare_sample(
    volumes: SubjectVolumes,
    policy: LabelPolicy | None,
    preprocessing: Preprocessing,
    box: Box | None = None,
    class_ids: np.ndarray | None = None,
    output_shape: tuple[int, int, int] | None = None,
    resize: bool = True,
) -> PreparedSample:
    """Crop, resize and normalise one subject (``box`` overrides the foreground box).

    ``resize=False`` (patch sampling, ``data/patches.py``) keeps the crop at the original
    resolution: image and target are on the crop box's grid.

    ``class_ids`` (D, H, W), when given, is ``policy.apply(volumes.raw_label)`` computed once
    by the caller (a sample source re-cropping the same subject), so it is not recomputed.
    ``output_shape``: the network's logit grid (d, h, w) for ``input_size``, needed with
    ``target_grid="output"`` (from the model adapter: ``ModelSpec.output_shape``).
    """
    grid = volumes.grid_shape
    if box is None:
        box = (
            foreground_box(volumes.image)
            if preprocessing.crop_to_foreground
            else (0, grid[0], 0, grid[1], 0, grid[2])
        )
    cropped = torch.from_numpy(np.ascontiguousarray(_crop(volumes.image, box)))
    mode = preprocessing.image_interpolation
    resized = (
        F.interpolate(
            cropped[None].float(),
            size=preprocessing.input_size,
            mode=mode,
            **({"align_corners": False} if mode == "trilinear" else {}),
        )[0]
        if resize
        else cropped.float()
    )
    image = _normalise(resized)
    target = None
    if policy is not None and volumes.raw_label is not None:
        cropped_classes = (
            policy.apply(_crop(volumes.raw_label, box))
            if class_ids is None
            else np.ascontiguousarray(_crop(class_ids, box))
        )
        classes = torch.from_numpy(cropped_classes)
        if not resize:
            return PreparedSample(image=image, target=classes.long(), box=box, grid_shape=grid)
        size = preprocessing.input_size
        if preprocessing.target_grid == "output":
            if output_shape is None:
                raise ValueError("target_grid 'output' needs the network's output_shape")
            size = tuple(output_shape)
        target = resize_labels(classes, size)
    return PreparedSample(image=image, target=target, box=box, grid_shape=grid)


def resize_labels(labels: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a (D, H, W) int64 label map to ``size``."""
    resized = F.interpolate(labels[None, None].float(), size=size, mode="nearest")
    return resized[0, 0].round().long()


def restore_probabilities(probabilities: torch.Tensor, sample: PreparedSample) -> torch.Tensor:
    """Map output-grid probabilities back onto the subject's original grid.

    Args:
        probabilities: (C, d, h, w) softmax output for ``sample``.
    Returns:
        (C, D, H, W) probabilities on the original grid; outside the crop box the background
        class has probability 1.
    """
    if sample.restore is not None:
        return sample.restore(probabilities)
    z0, z1, y0, y1, x0, x1 = sample.box
    inside = F.interpolate(
        probabilities[None].float(),
        size=(z1 - z0, y1 - y0, x1 - x0),
        mode="trilinear",
        align_corners=False,
    )[0]
    full = torch.zeros((probabilities.shape[0], *sample.grid_shape), dtype=torch.float32)
    full[0] = 1.0
    full[:, z0:z1, y0:y1, x0:x1] = inside
    return full


def class_targets_on_grid(volumes: SubjectVolumes, policy: LabelPolicy) -> np.ndarray:
    """(D, H, W) int64 class ids on the original grid (-1 = ignored), for metrics."""
    if volumes.raw_label is None:
        raise InvalidInputError(f"subject {volumes.subject_id}: no label to evaluate against.")
    return policy.apply(volumes.raw_label)


__all__ = [
    "IGNORE_INDEX",
    "Preprocessing",
    "PreparedSample",
    "class_targets_on_grid",
    "foreground_box",
    "jitter_box",
    "prepare_sample",
    "resize_labels",
    "restore_probabilities",
]
