"""Shared fixtures: a tiny phantom cohort in the MRBrainS18 layout and a tiny trained model.

The phantom is not the demo cohort (that one is 240 x 240 x 48 and takes seconds per subject):
it is a 40 x 40 x 12 head of nested ellipsoids (CSF shell, cortical GM, WM, ventricles, a lesion
and an ignored label-9 patch) whose size, position and intensities vary per subject, so tests of
learning behaviour run in seconds on a CPU with a fixed seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from MachineUnlearningLib.data.cohort import MRBRAINS18_TRAINING_IDS

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
"""``../shared`` from the repository root: data for tests and benchmarks, never needed at run
time (a fresh clone has no such folder beside it)."""


def require_shared(relative: str, what: str) -> Path:
    """``SHARED_DIR / relative``, or skip the test with the reason when it is missing.

    Under ``CI=true`` a missing ../shared is a failure instead: CI must run every test.
    """
    path = SHARED_DIR / relative
    if not path.exists():
        reason = f"{what} needs {path} (the shared/ folder beside the checkout), which is missing"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{reason}; with CI=true every test must run.")
        pytest.skip(f"{reason}; skipped because CI is not 'true'.")
    return path


PHANTOM_SHAPE = (40, 40, 12)  # (x, y, z) as nibabel stores it
PHANTOM_SPACING = (0.958, 0.958, 3.0)
HELD_OUT_IDS = ("H01", "H02", "H03")
TINY_RECIPE = {
    "input_size": [32, 48, 48],
    "base_width": 4,
    "head_channels": 8,
    "crop_jitter": 0.0,
}


def phantom_affine() -> np.ndarray:
    affine = np.diag([*PHANTOM_SPACING, 1.0])
    affine[:3, 3] = [-19.0, -19.0, -18.0]
    return affine


def make_phantom(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images (FLAIR, reg_T1, reg_IR) float32 and raw labels uint8, all (x, y, z)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=float) for n in PHANTOM_SHAPE), indexing="ij")
    cx, cy, cz = 19.5 + rng.uniform(-2, 2), 19.5 + rng.uniform(-2, 2), 5.5 + rng.uniform(-0.5, 0.5)
    scale = rng.uniform(0.85, 1.05)
    r = np.sqrt(
        ((x - cx) / (16 * scale)) ** 2 + ((y - cy) / (14 * scale)) ** 2 + ((z - cz) / 5.5) ** 2
    )
    labels = np.zeros(PHANTOM_SHAPE, dtype=np.uint8)
    labels[r < 1.0] = 5  # extracerebral CSF
    labels[r < 0.85] = 1  # cortical GM
    labels[r < 0.6] = 3  # WM
    ventricle = rng.uniform(0.15, 0.3)
    labels[r < ventricle] = 6
    lx, ly = cx + rng.uniform(3, 6), cy + rng.uniform(-4, 4)
    labels[((x - lx) ** 2 + (y - ly) ** 2 < 4) & (np.abs(z - cz) < 2) & (labels == 3)] = 4
    labels[((x - cx + 8) ** 2 + (y - cy) ** 2 < 3) & (np.abs(z - cz) < 1.5)] = 9
    means = {0: 0.0, 1: 0.55, 3: 0.85, 4: 0.65, 5: 0.2, 6: 0.15, 9: 0.4}
    gain = rng.uniform(0.8, 1.2)
    t1 = np.vectorize(means.get)(labels).astype(np.float32) * gain
    t1 += rng.normal(0, 0.03, PHANTOM_SHAPE).astype(np.float32) * (labels > 0)
    flair = np.where(labels > 0, 1.0 - t1 * 0.6 + (labels == 4) * 0.5, 0).astype(np.float32)
    ir = np.where(labels > 0, t1**2, 0).astype(np.float32)
    return {"FLAIR": flair, "reg_T1": t1, "reg_IR": ir}, labels


def write_phantom_subject(folder: Path, seed: int) -> None:
    images, labels = make_phantom(seed)
    (folder / "pre").mkdir(parents=True, exist_ok=True)
    affine = phantom_affine()
    for name, data in images.items():
        nib.save(nib.Nifti1Image(data, affine), str(folder / "pre" / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(folder / "segm.nii.gz"))


def write_phantom_cohort(root: Path) -> Path:
    for index, subject_id in enumerate(MRBRAINS18_TRAINING_IDS):
        write_phantom_subject(root / "training" / subject_id, seed=index)
    for index, subject_id in enumerate(HELD_OUT_IDS):
        write_phantom_subject(root / "held-out" / subject_id, seed=100 + index)
    return root


@pytest.fixture(scope="session")
def a_tiny_cohort(tmp_path_factory) -> Path:
    """7 training subjects with the real MRBrainS18 ids + 3 held-out, phantom-sized."""
    return write_phantom_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture
def a_fresh_cohort(tmp_path) -> Path:
    """A cohort a test may damage."""
    return write_phantom_cohort(tmp_path / "cohort")


@pytest.fixture(scope="session")
def a_tiny_trained_model(a_tiny_cohort, tmp_path_factory) -> Path:
    """A tiny baseline trained in-process on the phantom cohort (fixed seed)."""
    from MachineUnlearningLib.commands import run_job
    from MachineUnlearningLib.runtime.events import CollectingSink
    from MachineUnlearningLib.runtime.jobs import JobSpec

    output = tmp_path_factory.mktemp("baseline")
    job = JobSpec(
        command="train",
        cohort=str(a_tiny_cohort),
        output=str(output),
        epochs=25,
        seed=0,
        device="cpu",
        config={**TINY_RECIPE, "schedule": "constant"},
    )
    run_job(job, CollectingSink())
    return output / "model.pt"


TINY_SOURCE_IDS = ("1", "4", "070")


@pytest.fixture(scope="session")
def a_tiny_source(a_tiny_cohort):
    """Three phantom subjects prepared at 16 x 32 x 32 (mrbrains3), for loop-level tests."""
    from MachineUnlearningLib.data.cohort import DEFAULT_MODALITIES, discover_cohort
    from MachineUnlearningLib.data.labels import get_label_policy
    from MachineUnlearningLib.data.preprocessing import Preprocessing
    from MachineUnlearningLib.data.samples import SampleSource

    subjects = [s for s in discover_cohort(a_tiny_cohort) if s.subject_id in TINY_SOURCE_IDS]
    return SampleSource(
        subjects,
        DEFAULT_MODALITIES,
        get_label_policy("mrbrains3"),
        Preprocessing(input_size=(16, 32, 32)),
    )


def a_tiny_model(seed: int = 0):
    """A seeded ResNet-10 at base width 4 for 3 channels and 4 classes."""
    from MachineUnlearningLib.model.resnet import MedicalNetSegmentation, ModelConfig

    config = ModelConfig(
        depth=10, shortcut_type="B", num_classes=4, in_channels=3, base_width=4, head_channels=8
    )
    return MedicalNetSegmentation(config, generator=torch.Generator().manual_seed(seed))
