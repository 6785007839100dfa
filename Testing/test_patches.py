"""Full-resolution models: patch training (MONAI's RandCropByPosNegLabeld) and sliding-window
inference (monai.inferers.sliding_window_inference) as recipe options and from a bundle's
SlidingWindowInferer; predictions still land on the original grid."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from test_bundles import UNET, error_of, run_cli

from conftest import TINY_NETWORKS, phantom_affine, write_zoo_bundle
from MachineUnlearningLib.commands import run_job
from MachineUnlearningLib.data.cohort import DEFAULT_MODALITIES, discover_cohort
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.patches import PatchSampler, Sampling
from MachineUnlearningLib.data.preprocessing import PreparedSample, Preprocessing
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.model.checkpoint import load_checkpoint
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.runtime.jobs import JobSpec
from MachineUnlearningLib.strategies import get_strategy
from MachineUnlearningLib.training.recipes import resolve_recipe

PATCH = (8, 16, 16)
UNET_PATCHES = {
    "architecture": "monai-unet",
    **{f"network.{k}": v for k, v in TINY_NETWORKS["monai-unet"].items()},
    "sampling": "patches",
    "patch_size": list(PATCH),
    "window_overlap": 0.5,
    "batch_size": 2,
}


# --- the options ------------------------------------------------------------------------------


def test_whole_volumes_stay_the_default_and_leave_recipe_dicts_unchanged():
    recipe = resolve_recipe("bench")
    assert recipe.sampling == Sampling() and recipe.sampling.inference == "whole-volume"
    assert "sampling" not in recipe.to_dict()  # retrain cache keys of whole-volume recipes hold
    patched = resolve_recipe("bench", {**UNET_PATCHES, "target_grid": "input"})
    assert patched.sampling.inference == "sliding-window"  # follows sampling by default
    assert patched.to_dict()["sampling"]["patch_size"] == list(PATCH)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"sampling": "tiles"}, "sampling"),
        ({"inference": "whole-volume"}, "inference"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"window_overlap": 1.0}, "window_overlap"),
        ({"window_mode": "cubic"}, "window_mode"),
        ({"window_batch_size": 0}, "window_batch_size"),
        ({"window_sigma_scale": "wide"}, "window_sigma_scale"),
        ({"patch_size": [8, 18, 16]}, "patch_size"),  # UNet strides 2, 2: multiples of 4
        ({"crop_jitter": 0.1}, "crop_jitter"),
    ],
)
def test_bad_sampling_options_are_refused_naming_the_key(overrides, key):
    with pytest.raises(InvalidInputError) as caught:
        resolve_recipe("bench", {**UNET_PATCHES, **overrides})
    assert caught.value.message.startswith(key), caught.value.message


def test_patches_need_labels_at_the_image_s_resolution():
    with pytest.raises(InvalidInputError, match="^target_grid"):
        resolve_recipe("bench", {**UNET_PATCHES, "target_grid": "output"})


def test_patches_need_a_full_resolution_network():
    with pytest.raises(InvalidInputError, match="^sampling: .* medicalnet's logits are at 1/4"):
        resolve_recipe("bench", {"sampling": "patches", "patch_size": [16, 32, 32]})


# --- patches and windows ----------------------------------------------------------------------


def blob_sample() -> PreparedSample:
    """A 40^3 one-channel volume whose labelled foreground is a 6^3 cube in its middle."""
    image = torch.randn(1, 40, 40, 40)
    target = torch.zeros(40, 40, 40, dtype=torch.long)
    target[17:23, 17:23, 17:23] = 2
    return PreparedSample(image=image, target=target, box=(0, 40) * 3, grid_shape=(40, 40, 40))


def foreground_centred(fraction: float, draws: int, seed: int) -> float:
    sampler = PatchSampler(Sampling(sampling="patches", patch_size=8, positive_fraction=fraction))
    sample, rng = blob_sample(), np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        patch = sampler.draw("blob", sample, rng)
        assert tuple(patch.image.shape) == (1, 8, 8, 8) and tuple(patch.target.shape) == (8, 8, 8)
        hits += int(patch.target[4, 4, 4] > 0)  # MONAI's crop centre is voxel size // 2
    return hits / draws


@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_patches_are_centred_on_foreground_at_the_stated_fraction(fraction):
    # 400 seeded draws: binomial SD sqrt(0.25 * 0.75 / 400) = 0.022; foreground is 0.3 % of
    # the volume, so without the positive/negative rule almost no patch would be centred on it.
    observed = foreground_centred(fraction, 400, seed=0)
    assert abs(observed - fraction) < 0.07, observed
    assert foreground_centred(fraction, 50, seed=1) == foreground_centred(fraction, 50, seed=1)


def test_a_volume_smaller_than_a_patch_is_padded_with_ignored_labels():
    sample = blob_sample()
    small = PreparedSample(
        sample.image[:, :6], sample.target[:6], (0, 6, 0, 40, 0, 40), (6, 40, 40)
    )
    patch = PatchSampler(Sampling(sampling="patches", patch_size=8)).draw(
        "small", small, np.random.default_rng(0)
    )
    assert tuple(patch.target.shape) == (8, 8, 8)
    assert int((patch.target == -1).sum()) == 2 * 8 * 8  # one padded plane each side


@pytest.fixture(scope="module")
def a_patch_source(a_tiny_cohort):
    subjects = [s for s in discover_cohort(a_tiny_cohort) if s.subject_id in ("1", "070")]
    return SampleSource(
        subjects,
        DEFAULT_MODALITIES,
        get_label_policy("mrbrains3"),
        Preprocessing(input_size=(16, 32, 32), target_grid="input"),
        sampling=Sampling(sampling="patches", patch_size=PATCH, window_overlap=0.5),
    )


def test_the_source_keeps_the_original_resolution_and_draws_patches_of_it(a_patch_source):
    whole = a_patch_source.sample("1")
    z0, z1, y0, y1, x0, x1 = whole.box
    assert tuple(whole.image.shape[1:]) == (z1 - z0, y1 - y0, x1 - x0)  # cropped, not resized
    patch = a_patch_source.sample("1", np.random.default_rng(0))
    assert tuple(patch.image.shape) == (3, *PATCH) and patch.patch_centre is not None
    other = a_patch_source.target_like("070", patch)  # another subject's labels, same place
    assert other.shape == patch.target.shape and not torch.equal(other, patch.target)


def test_windows_cover_the_volume_at_the_stated_overlap(a_patch_source):
    whole = a_patch_source.sample("1")
    windows = a_patch_source.windows("1")
    assert all(tuple(w.image.shape) == (3, *PATCH) for w in windows)
    labelled = sum(int((w.target >= 0).sum()) for w in windows)
    # overlap 0.5: every interior voxel is seen by 2 windows per axis that has more than one
    assert labelled > int((whole.target >= 0).sum())


# --- a patch-trained model end to end ---------------------------------------------------------


@pytest.fixture(scope="module")
def a_patch_trained_model(a_tiny_cohort, tmp_path_factory):
    output = tmp_path_factory.mktemp("patch-baseline")
    job = JobSpec(
        command="train",
        cohort=str(a_tiny_cohort),
        output=str(output),
        epochs=3,
        seed=0,
        device="cpu",
        config={"recipe": "bench", **UNET_PATCHES},
    )
    run_job(job, CollectingSink())
    return output / "model.pt"


def test_a_patch_trained_model_records_how_it_sees_a_subject(a_patch_trained_model):
    meta = load_checkpoint(a_patch_trained_model).metadata
    assert Sampling.from_dict(meta["sampling"]) == Sampling(
        sampling="patches", patch_size=PATCH, window_overlap=0.5
    )
    assert meta["recipe"]["sampling"]["inference"] == "sliding-window"
    from MachineUnlearningLib.app.queries import checkpoint_summary
    from MachineUnlearningLib.model.summary import describe_checkpoint

    line = checkpoint_summary(describe_checkpoint(a_patch_trained_model))
    assert "8x16x16 patches (0.5 foreground-centred), sliding-window inference" in line


def test_sliding_window_predictions_land_on_the_original_grid(
    a_patch_trained_model, a_tiny_cohort, tmp_path
):
    output = tmp_path / "evaluate"
    job = JobSpec(
        command="evaluate",
        cohort=str(a_tiny_cohort),
        output=str(output),
        checkpoint=str(a_patch_trained_model),
        device="cpu",
    )
    sink = CollectingSink()
    run_job(job, sink)
    truth = nib.load(str(a_tiny_cohort / "training" / "070" / "segm.nii.gz"))
    prediction = nib.load(str(output / "predictions" / "evaluated" / "070.nii.gz"))
    assert prediction.shape == truth.shape == (40, 40, 12)
    np.testing.assert_allclose(prediction.affine, phantom_affine())
    labels = np.asarray(prediction.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and (labels > 0).any()
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["dice_grid"] == "original"


@pytest.mark.parametrize("strategy", ["salun", "ssd", "learn-others", "scrub"])
def test_a_patch_trained_model_unlearns_on_patches(
    strategy, a_patch_trained_model, a_tiny_cohort, tmp_path
):
    """Every mechanic that reads a subject runs on patches / windows: SalUn's saliency and
    SSD's importances (gradients over the windows), learn-others' other-subject targets (on the
    same patch), SCRUB's teacher KL (the teacher runs on the patch batch); the unlearned model
    keeps the sampling it was trained with."""
    output = tmp_path / "unlearn"
    budget = {"epochs": 1} if get_strategy(strategy).budget == "epochs" else {}
    job = JobSpec(
        command="unlearn",
        cohort=str(a_tiny_cohort),
        output=str(output),
        checkpoint=str(a_patch_trained_model),
        forget_ids=["070"],
        strategy=strategy,
        strategy_params={} if budget else {"steps": 2},
        device="cpu",
        **budget,
    )
    run_job(job, CollectingSink())
    meta = load_checkpoint(output / "unlearned.pt").metadata
    assert Sampling.from_dict(meta["sampling"]).patch_size == PATCH


# --- a bundle's SlidingWindowInferer ----------------------------------------------------------


def with_inferer(root, inferer: dict):
    path = root / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["inferer"] = inferer
    path.write_text(json.dumps(config))
    return root


SLIDING = {
    "_target_": "SlidingWindowInferer",
    "roi_size": [16, 16, 8],
    "sw_batch_size": 2,
    "overlap": 0.25,
    "mode": "gaussian",
    "progress": False,
}


def test_a_bundle_s_sliding_window_inferer_becomes_its_sampling(tmp_path):
    from MachineUnlearningLib.model.bundle import read_bundle

    bundle = with_inferer(write_zoo_bundle(tmp_path / "b", dict(UNET)), SLIDING)
    sampling = read_bundle(bundle).sampling
    assert sampling == Sampling(
        sampling="patches",
        patch_size=(16, 16, 8),
        window_batch_size=2,
        window_overlap=0.25,
        window_mode="gaussian",
    )


def test_a_bundle_with_a_sliding_window_inferer_goes_through_unlearn(
    a_tiny_cohort, tmp_path, capsys
):
    bundle = with_inferer(write_zoo_bundle(tmp_path / "bundle", dict(UNET)), SLIDING)
    out = tmp_path / "out"
    code, events = run_cli(
        capsys,
        *("unlearn", "--bundle", str(bundle), "--forget", "070", "--strategy", "noisy-label"),
        *("--epochs", "1", "--eval-epochs", "1", "--cohort", str(a_tiny_cohort)),
        *("--output", str(out), "--device", "cpu", "--set", "positive_fraction=0.8"),
    )
    assert code == 0, error_of(events)
    loads = [e["detail"] for e in events if e.kind == "phase" and e["name"] == "load"]
    assert any("16x16x8 patches (0.8 foreground-centred), sliding-window" in d for d in loads)
    meta = load_checkpoint(out / "unlearned.pt").metadata
    assert meta["sampling"]["patch_size"] == [16, 16, 8]
    assert meta["sampling"]["positive_fraction"] == 0.8
    prediction = nib.load(str(next((out / "predictions").rglob("070.nii.gz"))))
    assert prediction.shape == (40, 40, 12)
    np.testing.assert_allclose(prediction.affine, phantom_affine())


@pytest.mark.parametrize(
    ("inferer", "key"),
    [
        ({"_target_": "SaliencyInferer", "cam_name": "GradCAM"}, "inferer#_target_"),
        ({**SLIDING, "padding_mode": "reflect"}, "inferer#padding_mode"),
        ({**SLIDING, "with_coord": True}, "inferer#with_coord"),
        ({**SLIDING, "roi_size": [16, 18, 8]}, "inferer#roi_size"),
        ({**SLIDING, "roi_size": [16, 16, -1]}, "inferer#roi_size"),
        ({k: v for k, v in SLIDING.items() if k != "roi_size"}, "inferer#roi_size"),
    ],
    ids=["other-inferer", "padding-mode", "with-coord", "odd-roi", "whole-axis", "no-roi"],
)
def test_an_inferer_the_engine_cannot_honour_is_refused_naming_the_key(
    inferer, key, a_tiny_cohort, tmp_path, capsys
):
    bundle = with_inferer(write_zoo_bundle(tmp_path / "bundle", dict(UNET)), inferer)
    code, events = run_cli(
        capsys,
        *("unlearn", "--bundle", str(bundle), "--cohort", str(a_tiny_cohort)),
        *("--forget", "070", "--output", str(tmp_path / "out"), "--device", "cpu"),
    )
    assert code == 2
    assert re.match(re.escape(key), error_of(events)), error_of(events)
