"""In-memory source of network-ready samples for a set of subjects.

Every subject is read and preprocessed once per run: volumes are read when the source is made,
a subject's deterministic sample (no crop jitter; what evaluation, the strategies' mechanics and
every recipe without jitter use) is prepared on first use and cached. With crop jitter each
training visit draws a new box, so the crop, resize and normalisation of that box are redone
(that is the augmentation); what does not depend on the box is cached: the head's foreground
box (a percentile per channel over the whole volume) and the label-policy class ids.
``preprocessing`` is the engine's own :class:`Preprocessing` or a MONAI bundle's transform
chain (``data/transform_chain.py``), which prepares and restores samples itself.

With ``sampling="patches"`` (``data/patches.py``) the cached sample is the subject's whole
prepared volume at its own resolution, a training visit (``rng`` given) draws a patch of it,
:meth:`SampleSource.windows` cuts it into the inference windows and
:meth:`SampleSource.target_like` gives another subject's labels on a drawn patch, so the loop
and every mechanic see what the model is trained and evaluated on, whatever the strategy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MachineUnlearningLib.data.cohort import Subject
from MachineUnlearningLib.data.labels import LabelPolicy
from MachineUnlearningLib.data.patches import PatchSampler, Sampling, check_sampling
from MachineUnlearningLib.data.preprocessing import (
    PreparedSample,
    Preprocessing,
    foreground_box,
    jitter_box,
    prepare_sample,
)
from MachineUnlearningLib.data.volumes import SubjectVolumes, load_subject


class SampleSource:
    """Loads subjects once and hands out prepared samples by subject id."""

    def __init__(
        self,
        subjects: Sequence[Subject],
        modalities: tuple[str, ...],
        policy: LabelPolicy,
        preprocessing: Preprocessing,
        need_labels: bool = True,
        output_shape: tuple[int, int, int] | None = None,
        sampling: Sampling | None = None,
    ) -> None:
        self.output_shape = output_shape  # the network's logit grid (target_grid="output")
        self.sampling = sampling or Sampling()
        check_sampling(preprocessing, self.sampling)
        self._patches = PatchSampler(self.sampling) if self.sampling.patches else None
        self.policy = policy
        self.modalities = tuple(modalities)
        self.preprocessing = preprocessing
        self.subjects = {s.subject_id: s for s in subjects}
        self.volumes: dict[str, SubjectVolumes] = {
            s.subject_id: load_subject(s, modalities, need_labels) for s in subjects
        }
        self._cache: dict[str, PreparedSample] = {}
        self._boxes: dict[str, tuple[int, ...]] = {}
        self._class_ids: dict[str, np.ndarray | None] = {}

    def sample(self, subject_id: str, rng: np.random.Generator | None = None) -> PreparedSample:
        """The prepared sample; with ``rng`` and crop jitter on, a freshly jittered crop; with
        ``rng`` and patch sampling, a patch drawn from it."""
        if self._patches is not None:
            whole = self._whole_volume(subject_id)
            return whole if rng is None else self._patches.draw(subject_id, whole, rng)
        volumes = self.volumes[subject_id]
        if not isinstance(self.preprocessing, Preprocessing):  # a bundle's transform chain
            if subject_id not in self._cache:
                self._cache[subject_id] = self.preprocessing.prepare(volumes, self.policy)
            return self._cache[subject_id]
        jitter = self.preprocessing.crop_jitter
        if rng is not None and jitter > 0:
            if subject_id not in self._boxes:
                self._boxes[subject_id] = foreground_box(volumes.image)
            box = jitter_box(self._boxes[subject_id], volumes.grid_shape, jitter, rng)
            if subject_id not in self._class_ids:
                raw = volumes.raw_label
                self._class_ids[subject_id] = None if raw is None else self.policy.apply(raw)
            return prepare_sample(
                volumes,
                self.policy,
                self.preprocessing,
                box=box,
                class_ids=self._class_ids[subject_id],
                output_shape=self.output_shape,
            )
        if subject_id not in self._cache:
            self._cache[subject_id] = prepare_sample(
                volumes, self.policy, self.preprocessing, output_shape=self.output_shape
            )
        return self._cache[subject_id]

    def windows(self, subject_id: str) -> list[PreparedSample]:
        """What the model sees of a subject at fixed weights: its sample, or with patch
        sampling the windows of ``patch_size`` that cover it (gradients, importances)."""
        if self._patches is None:
            return [self.sample(subject_id)]
        return self._patches.windows(self._whole_volume(subject_id))

    def target_like(self, subject_id: str, like: PreparedSample):
        """``subject_id``'s target on the grid of ``like`` (a step's sample): its own
        sample's target, or on a drawn patch the labels at the same place (ignored outside)."""
        if self._patches is None or like.patch_centre is None:
            return self.sample(subject_id).target
        return self._patches.aligned_target(subject_id, self._whole_volume(subject_id), like)

    def _whole_volume(self, subject_id: str) -> PreparedSample:
        """With patch sampling: the prepared volume at its own resolution (cached)."""
        if subject_id not in self._cache:
            volumes = self.volumes[subject_id]
            if isinstance(self.preprocessing, Preprocessing):
                prepared = prepare_sample(volumes, self.policy, self.preprocessing, resize=False)
            else:
                prepared = self.preprocessing.prepare(volumes, self.policy)
            self._cache[subject_id] = prepared
        return self._cache[subject_id]
