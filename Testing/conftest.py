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
        output_shape=(4, 8, 8),  # MedicalNet's logit grid for 16 x 32 x 32 (1/4 per axis)
    )


def a_tiny_model(seed: int = 0):
    """A seeded ResNet-10 at base width 4 for 3 channels and 4 classes."""
    from MachineUnlearningLib.model.resnet import MedicalNetSegmentation, ModelConfig

    config = ModelConfig(
        depth=10, shortcut_type="B", num_classes=4, in_channels=3, base_width=4, head_channels=8
    )
    return MedicalNetSegmentation(config, generator=torch.Generator().manual_seed(seed))


# --- architectures and MONAI bundles -----------------------------------------------------------

# The smallest instance of each adapter that still has every part (encoder levels, decoder,
# norms); input sizes must be multiples of the size divisor (4, or 32 for SwinUNETR).
TINY_NETWORKS: dict[str, dict] = {
    "medicalnet": {"depth": 10, "shortcut_type": "B", "base_width": 4, "head_channels": 8},
    "monai-unet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "monai-segresnet": {
        "init_filters": 4,
        "blocks_down": [1, 1, 1],
        "blocks_up": [1, 1],
        "norm": ["GROUP", {"num_groups": 2}],
    },
    "monai-dynunet": {
        "kernel_size": [3, 3, 3],
        "strides": [1, 2, 2],
        "upsample_kernel_size": [2, 2],
        "filters": [4, 8, 16],
    },
    "monai-swinunetr": {  # group norm: the 1-voxel bottleneck of a 32^3 input trains with it
        "feature_size": 12,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "window_size": 2,
        "norm_name": ["group", {"num_groups": 4}],
    },
}
TINY_INPUT_SIZES: dict[str, tuple[int, int, int]] = {
    name: (32, 32, 32) if name == "monai-swinunetr" else (16, 32, 32) for name in TINY_NETWORKS
}


def a_tiny_spec(adapter: str, in_channels: int = 3, num_classes: int = 4):
    """The tiny network of ``adapter`` as a ModelSpec (3 modalities, mrbrains3 classes)."""
    from MachineUnlearningLib.model.adapters import ModelSpec, get_adapter

    in_name, out_name = get_adapter(adapter).channel_arguments
    arguments = {**TINY_NETWORKS[adapter], in_name: in_channels, out_name: num_classes}
    return ModelSpec.create(adapter, arguments)


def architecture_settings(adapter: str) -> dict:
    """JobSpec ``config`` entries that select ``adapter``'s tiny network."""
    if adapter == "medicalnet":
        return dict(TINY_NETWORKS[adapter])
    return {
        "architecture": adapter,
        **{f"network.{k}": v for k, v in TINY_NETWORKS[adapter].items()},
    }


MRBRAINS3_NAMES = ("background", "gray matter", "white matter", "cerebrospinal fluid")
ZOO_PREPROCESSING = [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    {"_target_": "Spacingd", "keys": "image", "pixdim": [1.9, 1.9, 3.0], "mode": "bilinear"},
    {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True},
    {"_target_": "EnsureTyped", "keys": "image"},
]
ZOO_POSTPROCESSING = [
    {"_target_": "Activationsd", "keys": "pred", "softmax": True},
    {
        "_target_": "Invertd",
        "keys": "pred",
        "transform": "@preprocessing",
        "orig_keys": "image",
        "nearest_interp": False,
        "to_tensor": True,
    },
    {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir"},
]


ZOO_INFERER = {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16], "overlap": 0.5}


def write_zoo_bundle(
    root: Path,
    network_def: dict,
    *,
    preprocessing: list | None = None,
    postprocessing: list | None = None,
    label_names: tuple[str, ...] = MRBRAINS3_NAMES,
    input_names: tuple[str, ...] = ("FLAIR", "reg_T1", "reg_IR"),
    weights_of: dict | None = None,
    seed: int = 0,
    config_format: str = "json",
    inferer: dict | None = None,
) -> Path:
    """A bundle laid out like the MONAI model zoo's (configs/inference.json, metadata.json,
    models/model.pt, docs/README.md), written by hand; the weights are those of MONAI's own
    class built from ``weights_of`` (default ``network_def``) with a fixed seed."""
    import json

    import monai.networks.nets as nets

    root.mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "models").mkdir()
    (root / "docs").mkdir()
    inference = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": ZOO_PREPROCESSING if preprocessing is None else preprocessing,
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "inferer": ZOO_INFERER if inferer is None else inferer,
        "postprocessing": {
            "_target_": "Compose",
            "transforms": ZOO_POSTPROCESSING if postprocessing is None else postprocessing,
        },
        "checkpointloader": {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"},
        },
    }
    if config_format == "json":
        (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=4))
    else:
        import yaml

        (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(inference))
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "written by a test"},
        "monai_version": "1.4.0",
        "name": "Tiny brain tissue segmentation",
        "task": "phantom brain tissue segmentation",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "num_channels": len(input_names),
                    "channel_def": {str(i): n for i, n in enumerate(input_names)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(label_names),
                    "channel_def": {str(i): n for i, n in enumerate(label_names)},
                }
            },
        },
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4))
    (root / "docs" / "README.md").write_text("# Tiny bundle\nWritten by the test suite.\n")
    source = dict(weights_of or network_def)
    network_type = getattr(nets, source.pop("_target_").rsplit(".", 1)[-1])
    torch.manual_seed(seed)
    torch.save(network_type(**source).state_dict(), root / "models" / "model.pt")
    return root


def load_script(name: str):
    """The module ``scripts/<name>.py`` (the benchmark and rendering scripts are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
