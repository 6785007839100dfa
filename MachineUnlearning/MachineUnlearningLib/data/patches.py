"""Patch training and sliding-window inference: the spatial sampling of a full-resolution model.

``sampling="whole-volume"`` (MedicalNet's, the default) hands the network the whole prepared
volume (resized to ``input_size``, or a bundle's transform chain output). ``"patches"`` keeps
the prepared volume at its own resolution (the engine's preprocessing crops to the head and
normalises but does not resize; a bundle's chain runs as it is) and trains on ``patch_size``
patches drawn by MONAI's ``RandCropByPosNegLabeld``: a patch is centred on a foreground voxel
(class id > 0) with probability ``positive_fraction``, else on a background voxel (class 0);
volumes smaller than a patch are first padded (MONAI's ``SpatialPadd``: image 0, label -1 =
ignored). A patch-trained model is evaluated with ``monai.inferers.sliding_window_inference``
(``inference="sliding-window"``, windows of ``patch_size``), and every mechanic that reads a
subject at fixed weights (SalUn's saliency, SSD's importances) sees the windows of
``patch_size`` that MONAI's ``SlidingWindowSplitter`` cuts with the same overlap.

Defaults and their sources: ``patch_size`` (96, 96, 96), the ``roi_size`` of MONAI's 3D
segmentation tutorials and model-zoo bundles (spleen_ct_segmentation, swin_unetr_btcv);
``positive_fraction`` 0.5 = MONAI's ``pos=1, neg=1``; ``window_overlap`` 0.25,
``window_batch_size`` 1, ``window_mode`` ``constant`` and ``window_sigma_scale`` 0.125 are
``sliding_window_inference``'s own defaults (MONAI 1.6).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.data.preprocessing import PreparedSample, Preprocessing
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

WHOLE_VOLUME, PATCHES, SLIDING_WINDOW = "whole-volume", "patches", "sliding-window"
SAMPLINGS = (WHOLE_VOLUME, PATCHES)
INFERENCES = (WHOLE_VOLUME, SLIDING_WINDOW)
WINDOW_MODES = ("constant", "gaussian")  # MONAI's BlendMode
FIELDS = (
    "sampling",
    "patch_size",
    "positive_fraction",
    "inference",
    "window_overlap",
    "window_batch_size",
    "window_mode",
    "window_sigma_scale",
)
_IMAGE, _LABEL, _FG, _BG = "image", "label", "foreground_indices", "background_indices"


@dataclass(frozen=True)
class Sampling:
    """How a model sees a subject spatially, stored in checkpoints (when not whole-volume).

    Attributes:
        sampling: ``whole-volume`` (default; MedicalNet's) or ``patches``.
        patch_size: voxels of a training patch and of an inference window, in the network
            input's axis order ((D, H, W) for the engine's preprocessing, a bundle's own for
            its roi_size); each a multiple of the network's size divisor.
        positive_fraction: probability that a patch is centred on a foreground voxel.
        inference: ``whole-volume`` or ``sliding-window``; None = the one that matches
            ``sampling`` (a model is evaluated and unlearned the way it was trained).
        window_overlap: overlap of neighbouring windows, fraction of ``patch_size`` in [0, 1).
        window_batch_size: windows per forward pass (``sw_batch_size``).
        window_mode: ``constant`` (equal weights) or ``gaussian`` blending of overlaps.
        window_sigma_scale: the Gaussian's sigma as a fraction of the window size.
    """

    sampling: str = WHOLE_VOLUME
    patch_size: tuple[int, int, int] = (96, 96, 96)
    positive_fraction: float = 0.5
    inference: str | None = None
    window_overlap: float = 0.25
    window_batch_size: int = 1
    window_mode: str = "constant"
    window_sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        look_up_option(self.sampling, SAMPLINGS, "sampling")
        size = self.patch_size
        size = (size,) * 3 if isinstance(size, int) else tuple(size)
        if len(size) != 3 or not all(_int(v) >= 4 for v in size):
            raise InvalidInputError(
                f"patch_size: must be three sizes >= 4 (D, H, W), got {self.patch_size!r}.",
                hint="e.g. 32 64 64, each a multiple of the network's size divisor.",
            )
        object.__setattr__(self, "patch_size", tuple(int(v) for v in size))
        for name in ("positive_fraction", "window_overlap", "window_sigma_scale"):
            object.__setattr__(self, name, _number(getattr(self, name), name, float))
        object.__setattr__(
            self, "window_batch_size", _number(self.window_batch_size, "window_batch_size", int)
        )
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise InvalidInputError(
                f"positive_fraction: must be in [0, 1], got {self.positive_fraction!r}.",
                hint="e.g. 0.5 (MONAI's pos=1, neg=1).",
            )
        matching = SLIDING_WINDOW if self.sampling == PATCHES else WHOLE_VOLUME
        inference = matching if self.inference is None else self.inference
        look_up_option(inference, INFERENCES, "inference")
        if inference != matching:
            raise InvalidInputError(
                f"inference: {inference} does not match sampling {self.sampling}: a model is "
                "evaluated and unlearned the way it was trained.",
                hint=f"With sampling {self.sampling} use inference {matching} (the default).",
            )
        object.__setattr__(self, "inference", inference)
        if not 0.0 <= self.window_overlap < 1.0:
            raise InvalidInputError(
                f"window_overlap: must be in [0, 1), got {self.window_overlap!r}.", hint="e.g. 0.25"
            )
        if self.window_batch_size < 1:
            raise InvalidInputError(
                f"window_batch_size: must be >= 1, got {self.window_batch_size!r}."
            )
        if not self.window_sigma_scale > 0:
            raise InvalidInputError(
                f"window_sigma_scale: must be > 0, got {self.window_sigma_scale!r}.",
                hint="e.g. 0.125 (MONAI's default).",
            )
        look_up_option(self.window_mode, WINDOW_MODES, "window_mode")

    @property
    def patches(self) -> bool:
        return self.sampling == PATCHES

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "patch_size": list(self.patch_size)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Sampling:
        """A checkpoint's ``sampling`` metadata; absent (None) = whole-volume."""
        if not data:
            return cls()
        return cls(**{k: v for k, v in data.items() if k in FIELDS})

    def describe(self) -> str:
        if not self.patches:
            return "whole volumes"
        size = "x".join(map(str, self.patch_size))
        return (
            f"{size} patches ({self.positive_fraction:g} foreground-centred), sliding-window "
            f"inference (overlap {self.window_overlap:g}, {self.window_mode})"
        )


OPTION_DOCS = {
    "sampling": "`whole-volume` (MedicalNet's) or `patches`",
    "patch_size": "training patch and inference window in voxels, in the network input's axis "
    "order, multiples of the network's size divisor; default: MONAI tutorials' / zoo bundles' "
    "`roi_size`",
    "positive_fraction": "probability a patch is centred on a foreground voxel; default: "
    "MONAI's `pos=1, neg=1`",
    "inference": "`whole-volume` or `sliding-window`; default: the one matching `sampling` "
    "(others are refused)",
    "window_overlap": "overlap of neighbouring windows (fraction); `sliding_window_inference`'s "
    "default",
    "window_batch_size": "windows per forward pass (`sw_batch_size`); MONAI's default",
    "window_mode": "`constant` or `gaussian` blending; MONAI's default",
    "window_sigma_scale": "sigma of the Gaussian blending (fraction of the window); MONAI's "
    "default",
}


def sampling_markdown() -> str:
    """The recipe options of patch sampling, with defaults, for docs/bring-your-own-model.md."""
    defaults = Sampling().to_dict()
    defaults["inference"] = None
    lines = ["| option (`--set`) | default | meaning |", "|---|---|---|"]
    for name in FIELDS:
        value = defaults[name]
        shown = "follows `sampling`" if value is None else f"`{value}`"
        lines.append(f"| `{name}` | {shown} | {OPTION_DOCS[name]} |")
    return "\n".join(lines)


def check_sampling(preprocessing: Any, sampling: Sampling) -> None:
    """Refuse engine preprocessing settings that patch sampling does not use (naming them)."""
    if not sampling.patches or not isinstance(preprocessing, Preprocessing):
        return
    if preprocessing.crop_jitter:
        raise InvalidInputError(
            "crop_jitter: not used with sampling patches (the patches are the augmentation).",
            hint="Set crop_jitter=0 or sampling=whole-volume.",
        )
    if preprocessing.target_grid != "input":
        raise InvalidInputError(
            "target_grid: patches are trained against labels at the image's resolution.",
            hint="Set target_grid=input (the loss upsamples coarser logits to it).",
        )


def _number(value: Any, name: str, kind: type) -> Any:
    """``value`` as ``kind`` (float or int); InvalidInputError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name}: must be a number, got {value!r}.")
    if kind is int and float(value) != int(value):
        raise InvalidInputError(f"{name}: must be a whole number, got {value!r}.")
    return kind(value)


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else 0


class PatchSampler:
    """Draws patches and cuts windows of a subject's prepared sample, with MONAI's transforms.

    The sample source keeps one per run; per subject it caches the padded volume and its
    foreground / background voxel indices (what RandCropByPosNegLabeld would otherwise
    recompute at every draw).
    """

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self._padded: dict[str, dict[str, Any]] = {}

    @functools.cached_property
    def _pad(self) -> Callable:
        from monai.transforms import Compose, SpatialPadd

        size = list(self.sampling.patch_size)
        return Compose(
            [
                SpatialPadd(keys=[_IMAGE], spatial_size=size, value=0),
                SpatialPadd(keys=[_LABEL], spatial_size=size, value=IGNORE_INDEX),
            ]
        )

    @functools.cached_property
    def _crop(self):
        from monai.transforms import RandCropByPosNegLabeld

        fraction = float(self.sampling.positive_fraction)
        return RandCropByPosNegLabeld(
            keys=[_IMAGE, _LABEL],
            label_key=_LABEL,
            spatial_size=list(self.sampling.patch_size),
            pos=fraction,
            neg=1.0 - fraction,
            num_samples=1,
            fg_indices_key=_FG,
            bg_indices_key=_BG,
        )

    def _padded_subject(self, subject_id: str, sample: PreparedSample) -> dict[str, Any]:
        if subject_id not in self._padded:
            from monai.transforms.utils import map_binary_to_indices

            if sample.target is None:
                raise InvalidInputError(f"subject {subject_id}: patches need its label map.")
            data = self._pad({_IMAGE: sample.image, _LABEL: sample.target[None].float()})
            label = torch.as_tensor(data[_LABEL])
            foreground, _ = map_binary_to_indices(label > 0)
            background, _ = map_binary_to_indices(label == 0)
            self._padded[subject_id] = {
                _IMAGE: torch.as_tensor(data[_IMAGE]),
                _LABEL: label,
                _FG: foreground,
                _BG: background,
            }
        return self._padded[subject_id]

    def draw(
        self, subject_id: str, sample: PreparedSample, rng: np.random.Generator
    ) -> PreparedSample:
        """One training patch of ``sample`` (image (C, *patch_size), target (*patch_size)),
        its centre drawn from ``rng`` (the run's seeded stream)."""
        data = self._padded_subject(subject_id, sample)
        self._crop.set_random_state(seed=int(rng.integers(2**31 - 1)))
        with warnings.catch_warnings():  # MONAI warns when a subject has no foreground voxel
            warnings.simplefilter("ignore", UserWarning)
            patch = self._crop(dict(data))[0]
        centre = tuple(int(c) for c in patch[_IMAGE].meta["crop_center"])
        return replace(
            sample,
            image=torch.as_tensor(patch[_IMAGE]).float().contiguous(),
            target=torch.as_tensor(patch[_LABEL])[0].round().long().contiguous(),
            patch_centre=centre,  # type: ignore[arg-type]
        )

    def aligned_target(self, subject_id: str, sample: PreparedSample, like: PreparedSample):
        """``subject_id``'s target on the patch ``like`` was cut at (same centre in its padded
        volume; what lies outside it is ignored, -1): another subject's labels as a target."""
        from monai.transforms import SpatialCrop, SpatialPad

        if like.patch_centre is None:
            raise ValueError("aligned_target needs a drawn patch")
        label = self._padded_subject(subject_id, sample)[_LABEL]
        size = list(self.sampling.patch_size)
        cropped = SpatialCrop(roi_center=list(like.patch_centre), roi_size=size)(label)
        padded = SpatialPad(size, value=IGNORE_INDEX)(cropped)
        return torch.as_tensor(padded)[0].round().long()

    def windows(self, sample: PreparedSample) -> list[PreparedSample]:
        """``sample`` cut into windows of ``patch_size`` at the run's overlap (MONAI's
        ``SlidingWindowSplitter``; the border is padded: image 0, label -1)."""
        from monai.inferers import SlidingWindowSplitter

        size, overlap = self.sampling.patch_size, float(self.sampling.window_overlap)
        images = list(SlidingWindowSplitter(size, overlap=overlap, pad_value=0)(sample.image[None]))
        labels: list = [None] * len(images)
        if sample.target is not None:
            target = sample.target[None, None].float()
            splitter = SlidingWindowSplitter(size, overlap=overlap, pad_value=IGNORE_INDEX)
            labels = [label for label, _ in splitter(target)]
        return [
            replace(
                sample,
                image=image[0].contiguous(),
                target=None if label is None else label[0, 0].round().long().contiguous(),
            )
            for (image, _), label in zip(images, labels, strict=True)
        ]


def sliding_window_logits(
    model: torch.nn.Module, image: torch.Tensor, sampling: Sampling
) -> torch.Tensor:
    """(1, C, ...) logits of ``model`` over a whole (1, C_in, D, H, W) ``image`` by MONAI's
    ``sliding_window_inference`` (windows of ``patch_size``, blended); a network whose logits
    are coarser than its input (MedicalNet: 1/4) gives them on that coarser grid."""
    from monai.inferers import sliding_window_inference

    logits = sliding_window_inference(
        image,
        roi_size=list(sampling.patch_size),
        sw_batch_size=int(sampling.window_batch_size),
        predictor=model,
        overlap=float(sampling.window_overlap),
        mode=sampling.window_mode,
        sigma_scale=float(sampling.window_sigma_scale),
    )
    return torch.as_tensor(logits)
