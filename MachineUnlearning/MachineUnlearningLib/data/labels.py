"""MRBrainS18 label table and the label policies that map raw labels to training classes.

Raw labels (``segm.nii.gz``), from the MRBrainS18 challenge: 0 background, 1 cortical gray
matter, 2 basal ganglia, 3 white matter, 4 white matter lesions, 5 extracerebral CSF,
6 ventricles, 7 cerebellum, 8 brain stem, 9 infarction (ignored), 10 other (ignored).

A policy maps raw label values to class indices 0..C-1, or to ``IGNORE_INDEX`` (-1) for voxels
that neither train nor count in metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MachineUnlearningLib.runtime.options import look_up_option

IGNORE_INDEX = -1

MRBRAINS18_LABEL_NAMES: dict[int, str] = {
    0: "background",
    1: "cortical gray matter",
    2: "basal ganglia",
    3: "white matter",
    4: "white matter lesions",
    5: "cerebrospinal fluid",
    6: "ventricles",
    7: "cerebellum",
    8: "brain stem",
    9: "infarction",
    10: "other",
}

# RGB in 0..255. Our own choice (the challenge publishes no colour table): distinct hues,
# tissue-like where a convention exists (GM grey-blue, WM light, CSF blue).
MRBRAINS18_LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (70, 130, 230),
    2: (230, 150, 40),
    3: (245, 245, 210),
    4: (220, 40, 40),
    5: (80, 220, 240),
    6: (40, 60, 200),
    7: (120, 200, 80),
    8: (200, 90, 200),
    9: (120, 60, 20),
    10: (128, 128, 128),
}

RAW_LABEL_VALUES = frozenset(MRBRAINS18_LABEL_NAMES)


@dataclass(frozen=True)
class LabelPolicy:
    """How raw MRBrainS18 labels become training classes.

    Attributes:
        name: registry key (``mrbrains8``, ``mrbrains3``, ``binary``).
        description: one line for help texts and reports.
        class_names: name of each output class, index = class id; class 0 is background.
        raw_to_class: raw label value -> class id or ``IGNORE_INDEX``.
        class_colours: RGB 0..255 per class, for overlays.
    """

    name: str
    description: str
    class_names: tuple[str, ...]
    raw_to_class: dict[int, int]
    class_colours: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lookup_table(self) -> np.ndarray:
        """Array ``t`` of length 11 with ``t[raw] = class id or -1``."""
        table = np.full(max(RAW_LABEL_VALUES) + 1, IGNORE_INDEX, dtype=np.int64)
        for raw, cls in self.raw_to_class.items():
            table[raw] = cls
        return table

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Map a raw label volume (any integer shape) to class ids (int64, same shape)."""
        return self.lookup_table()[np.asarray(raw, dtype=np.int64)]


def _identity8() -> LabelPolicy:
    mapping = {v: v for v in range(9)} | {9: IGNORE_INDEX, 10: IGNORE_INDEX}
    return LabelPolicy(
        name="mrbrains8",
        description="official 8 structures + background (labels 0..8); 9/10 ignored",
        class_names=tuple(MRBRAINS18_LABEL_NAMES[v] for v in range(9)),
        raw_to_class=mapping,
        class_colours=tuple(MRBRAINS18_LABEL_COLOURS[v] for v in range(9)),
    )


def _three_class() -> LabelPolicy:
    mapping = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 0, 8: 0}
    mapping |= {9: IGNORE_INDEX, 10: IGNORE_INDEX}
    return LabelPolicy(
        name="mrbrains3",
        description="GM (1+2) / WM (3+4) / CSF (5+6); cerebellum and brain stem -> background "
        "(MRBrainS13 merge); 9/10 ignored",
        class_names=("background", "gray matter", "white matter", "cerebrospinal fluid"),
        raw_to_class=mapping,
        class_colours=((0, 0, 0), (70, 130, 230), (245, 245, 210), (80, 220, 240)),
    )


def _binary() -> LabelPolicy:
    mapping = {0: 0} | {v: 1 for v in range(1, 9)} | {9: IGNORE_INDEX, 10: IGNORE_INDEX}
    return LabelPolicy(
        name="binary",
        description="brain (labels 1..8) vs background; 9/10 ignored (project policy)",
        class_names=("background", "brain"),
        raw_to_class=mapping,
        class_colours=((0, 0, 0), (230, 150, 40)),
    )


LABEL_POLICIES: dict[str, LabelPolicy] = {
    p.name: p for p in (_identity8(), _three_class(), _binary())
}


def get_label_policy(name: str) -> LabelPolicy:
    """Return the policy registered under ``name`` (InvalidInputError lists the valid ones)."""
    return LABEL_POLICIES[look_up_option(name, LABEL_POLICIES, "label_policy")]
