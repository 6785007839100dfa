"""In-memory source of network-ready samples for a set of subjects.

Every subject is read and preprocessed once per run: volumes are read when the source is made,
a subject's deterministic sample (no crop jitter; what evaluation, the strategies' mechanics and
every recipe without jitter use) is prepared on first use and cached. With crop jitter each
training visit draws a new box, so the crop, resize and normalisation of that box are redone
(that is the augmentation); what does not depend on the box is cached: the head's foreground
box (a percentile per channel over the whole volume) and the label-policy class ids.
``preprocessing`` is the engine's own :class:`Preprocessing` or a MONAI bundle's transform
chain (``data/transform_chain.py``), which prepares and restores samples itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MachineUnlearningLib.data.cohort import Subject
from MachineUnlearningLib.data.labels import LabelPolicy
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
    ) -> None:
        self.output_shape = output_shape  # the network's logit grid (target_grid="output")
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
        """The prepared sample; with ``rng`` and crop jitter on, a freshly jittered crop."""
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
