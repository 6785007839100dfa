"""MONAI bundles in and out: read the way the model zoo lays them out, preprocessed by MONAI's
own transforms, refused clearly (exit 2, the config key named), written back beside the
project checkpoint while the input bundle stays untouched."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import (
    MRBRAINS3_NAMES,
    TINY_NETWORKS,
    ZOO_PREPROCESSING,
    write_zoo_bundle,
)
from MachineUnlearningLib.app.cli import main
from MachineUnlearningLib.data.cohort import DEFAULT_MODALITIES, discover_cohort
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.patches import Sampling
from MachineUnlearningLib.data.transform_chain import TransformChain, chain_from_config
from MachineUnlearningLib.data.volumes import load_subject
from MachineUnlearningLib.model.bundle import read_bundle
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import parse_event
from MachineUnlearningLib.runtime.files import folder_hashes

UNET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 3, "out_channels": 4}
UNET |= TINY_NETWORKS["monai-unet"]
SEGRESNET = {"_target_": "SegResNet", "in_channels": 3, "out_channels": 4}
SEGRESNET |= TINY_NETWORKS["monai-segresnet"]


def run_cli(capsys, *argv: str) -> tuple[int, list]:
    """The real CLI in this process with --events; its exit code and events."""
    capsys.readouterr()
    code = main([*argv, "--events"])
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    return code, events


def error_of(events) -> str:
    errors = [e for e in events if e.kind == "error"]
    assert errors, "no error event"
    return errors[-1]["message"]


@pytest.fixture
def a_unet_bundle(tmp_path) -> Path:
    return write_zoo_bundle(tmp_path / "tiny_unet_bundle", dict(UNET))


# --- reading ----------------------------------------------------------------------------------


def test_a_zoo_bundle_gives_its_network_labels_and_preprocessing(a_unet_bundle):
    bundle = read_bundle(a_unet_bundle)
    assert bundle.spec.adapter == "monai-unet"
    assert bundle.spec.arguments["channels"] == [4, 8, 16]
    assert bundle.label_names == MRBRAINS3_NAMES
    assert bundle.input_names == DEFAULT_MODALITIES
    assert [s.name for s in bundle.chain.steps] == [
        "Orientationd",
        "Spacingd",
        "NormalizeIntensityd",
    ]
    assert bundle.chain.passed_through == ("LoadImaged", "EnsureChannelFirstd", "EnsureTyped")
    assert bundle.chain.pad_to_multiple == (4, 4, 4)  # the UNet's two stride-2 levels
    assert bundle.sampling == Sampling(
        sampling="patches", patch_size=(32, 32, 16), window_overlap=0.5
    )
    assert (bundle.name, bundle.version) == ("Tiny brain tissue segmentation", "0.1.0")
    model = bundle.load_network()
    saved = torch.load(a_unet_bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_a_yaml_bundle_of_a_segresnet_is_read_too(tmp_path):
    bundle = read_bundle(write_zoo_bundle(tmp_path / "b", dict(SEGRESNET), config_format="yaml"))
    assert bundle.config_file == "configs/inference.yaml"
    assert bundle.spec.adapter == "monai-segresnet" and bundle.chain.pad_to_multiple == (4, 4, 4)


def test_references_between_config_entries_are_followed(tmp_path):
    network = {**UNET, "channels": "@channels"}
    root = write_zoo_bundle(tmp_path / "b", network, weights_of=dict(UNET))
    config = json.loads((root / "configs" / "inference.json").read_text())
    config["channels"] = [4, 8, 16]
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    assert read_bundle(root).spec.arguments["channels"] == [4, 8, 16]


def test_the_chain_feeds_the_network_what_the_bundle_s_own_pipeline_does(
    a_unet_bundle, a_tiny_cohort
):
    """The bundle's Compose, instantiated by MONAI itself from the config and run on the files,
    gives the same network input as the engine's chain (which reads the files with nibabel)."""
    from monai.bundle import ConfigParser
    from monai.transforms import DivisiblePad

    parser = ConfigParser()
    parser.read_config(str(a_unet_bundle / "configs" / "inference.json"))
    theirs = parser.get_parsed_content("preprocessing")
    subject = next(s for s in discover_cohort(a_tiny_cohort) if s.subject_id == "070")
    files = [str(subject.images[m]) for m in DEFAULT_MODALITIES]
    expected = DivisiblePad(k=4)(theirs({"image": files})["image"]).as_tensor()
    chain = read_bundle(a_unet_bundle).chain
    ours = chain.prepare(load_subject(subject, DEFAULT_MODALITIES, True), None).image
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-5)


def test_restoring_the_prepared_labels_gives_back_the_original_grid(a_unet_bundle, a_tiny_cohort):
    subject = next(s for s in discover_cohort(a_tiny_cohort) if s.subject_id == "070")
    volumes = load_subject(subject, DEFAULT_MODALITIES, True)
    policy = get_label_policy("mrbrains3")
    sample = read_bundle(a_unet_bundle).chain.prepare(volumes, policy)
    assert sample.target.shape == sample.image.shape[1:]
    one_hot = torch.nn.functional.one_hot(sample.target.clamp_min(0), 4).permute(3, 0, 1, 2)
    restored = sample.restore(one_hot.float())
    assert restored.shape == (4, *volumes.grid_shape)
    assert torch.allclose(restored.sum(0), torch.ones(volumes.grid_shape), atol=1e-5)
    truth = torch.from_numpy(policy.apply(volumes.raw_label))
    agreement = (restored.argmax(0) == truth)[truth >= 0].float().mean()
    assert agreement > 0.9  # 1.9 mm there and back on a 0.96 mm grid


def test_a_chain_round_trips_through_plain_data(a_unet_bundle):
    chain = read_bundle(a_unet_bundle).chain
    data = json.loads(json.dumps(chain.to_dict()))
    assert TransformChain.from_dict(data) == chain


def test_a_per_key_mode_keeps_the_image_s_entry():
    items = [
        {
            "_target_": "Spacingd",
            "keys": ["image", "label"],
            "pixdim": [2, 2, 3],
            "mode": ["bilinear", "nearest"],
        }
    ]
    chain = chain_from_config(items, lambda i, k: items[i][k], "preprocessing#transforms")
    assert chain.steps[0].arguments == {"pixdim": [2, 2, 3], "mode": "bilinear"}


def test_disabled_transforms_are_skipped():
    items = [{"_target_": "RandFlipd", "keys": "image", "_disabled_": True}]
    assert chain_from_config(items, lambda i, k: items[i][k], "p#transforms").steps == ()


# --- refusals: exit 2, the key named ----------------------------------------------------------


REFUSALS = {
    "network-without-adapter": (
        {"network_def": {"_target_": "BasicUNet", "spatial_dims": 3}, "weights_of": dict(UNET)},
        "network_def#_target_",
    ),
    "sigmoid-outputs": (
        {"postprocessing": [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}]},
        "postprocessing#transforms#0#sigmoid",
    ),
    "thresholded-outputs": (
        {"postprocessing": [{"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5}]},
        "postprocessing#transforms#0#threshold",
    ),
    "weights-that-do-not-fit": (
        {"weights_of": {**UNET, "channels": [8, 16, 32]}},
        r"Shape mismatch: model\.0\.conv\.unit0\.conv\.weight file \[8, 3, 3, 3, 3\]",
    ),
    "random-augmentation": (
        {"preprocessing": [*ZOO_PREPROCESSING[:2], {"_target_": "RandFlipd", "keys": "image"}]},
        "preprocessing#transforms#2: RandFlipd is a random augmentation",
    ),
    "unknown-transform": (
        {"preprocessing": [{"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x"}]},
        "preprocessing#transforms#0: Lambdad is not honoured",
    ),
    "python-expression": (
        {"network_def": {**UNET, "channels": "$[4, 8, 16]"}, "weights_of": dict(UNET)},
        "network_def#channels: '\\$\\[4, 8, 16\\]' is a Python expression",
    ),
    "unknown-network-argument": (
        {"network_def": {**UNET, "chanels": [4, 8]}, "weights_of": dict(UNET)},
        r"network_def: UNet has no argument\(s\) \['chanels'\]",
    ),
    "deep-supervision": (
        {
            "network_def": {
                "_target_": "DynUNet",
                "spatial_dims": 3,
                "in_channels": 3,
                "out_channels": 4,
                **TINY_NETWORKS["monai-dynunet"],
                "deep_supervision": True,
            }
        },
        "network_def: deep_supervision",
    ),
    "input-channels-not-modalities": (
        {"input_names": ("t1", "t2", "flair")},
        "configs/metadata.json#network_data_format#inputs#image#channel_def",
    ),
    "a-crop-by-the-label": (
        {
            "preprocessing": [
                {"_target_": "CropForegroundd", "keys": ["image", "label"], "source_key": "label"}
            ]
        },
        "preprocessing#transforms#0#source_key",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_what_the_engine_cannot_honour_is_refused_naming_the_key(
    case, tmp_path, a_tiny_cohort, capsys
):
    changes, match = REFUSALS[case]
    changes = copy.deepcopy(changes)
    network = changes.pop("network_def", dict(UNET))
    bundle = write_zoo_bundle(tmp_path / "bundle", network, **changes)
    code, events = run_cli(
        capsys,
        *("unlearn", "--bundle", str(bundle), "--cohort", str(a_tiny_cohort)),
        *("--forget", "070", "--output", str(tmp_path / "out"), "--device", "cpu"),
    )
    assert code == 2
    assert events[-1]["status"] == "invalid"
    assert re.search(match, error_of(events)), error_of(events)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("models/model.pt", "models/model.pt"),
        ("configs/metadata.json", "configs/metadata.json: missing"),
        ("configs/inference.json", "no configs/inference.json"),
    ],
    ids=["missing-weights", "missing-metadata", "missing-config"],
)
def test_a_bundle_missing_a_file_is_refused_naming_it(
    damage, match, a_unet_bundle, a_tiny_cohort, tmp_path, capsys
):
    (a_unet_bundle / damage).unlink()
    code, events = run_cli(
        capsys,
        *("evaluate", "--bundle", str(a_unet_bundle), "--cohort", str(a_tiny_cohort)),
        *("--output", str(tmp_path / "out"), "--device", "cpu"),
    )
    assert code == 2 and match in error_of(events)


def test_a_bundle_without_network_def_is_refused(a_unet_bundle):
    path = a_unet_bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    del config["network_def"]
    path.write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match="network_def: missing"):
        read_bundle(a_unet_bundle)


def test_checkpoint_and_bundle_together_are_refused(a_unet_bundle, a_tiny_cohort, tmp_path, capsys):
    code, events = run_cli(
        capsys,
        *("evaluate", "--bundle", str(a_unet_bundle), "--checkpoint", "model.pt"),
        *("--cohort", str(a_tiny_cohort), "--output", str(tmp_path / "out")),
    )
    assert code == 2 and "either a checkpoint or a bundle" in error_of(events)


# --- train -> unlearn -> evaluate -> bundle out -----------------------------------------------


def run_quietly(*argv: str) -> tuple[int, list]:
    """The real CLI in this process with --events, its stdout kept; exit code and events."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([*argv, "--events"])
    return code, [e for e in map(parse_event, stdout.getvalue().splitlines()) if e]


@pytest.fixture(scope="module")
def a_bundle_flow(a_tiny_cohort, tmp_path_factory):
    """train --bundle (fine-tune), unlearn --bundle the result (noisy-label), evaluate --bundle
    the unlearned bundle: the CLI in this process, one event stream per command."""
    root = tmp_path_factory.mktemp("bundle-flow")
    # whole volumes (SimpleInferer): this flow's direction thresholds were set for them; the
    # zoo's SlidingWindowInferer (patches) is Testing/test_patches.py's
    bundle = write_zoo_bundle(
        root / "tiny_unet_bundle", dict(UNET), inferer={"_target_": "SimpleInferer"}
    )
    (bundle / "models" / "model.ts").write_bytes(b"a TorchScript export of the old weights")
    before = folder_hashes(bundle)
    common = ("--cohort", str(a_tiny_cohort), "--device", "cpu")
    runs = {
        "train": run_quietly(
            *("train", "--bundle", str(bundle), "--epochs", "20", *common),
            *("--output", str(root / "train")),
        )
    }
    runs["unlearn"] = run_quietly(
        *("unlearn", "--bundle", str(root / "train" / "bundle"), "--forget", "070"),
        *("--strategy", "noisy-label", "--epochs", "30", "--eval-epochs", "30"),
        *("--param", "learning_rate=0.005", "--param", "random_labels=wrong-class"),
        *("--requested-by", "DPO", *common, "--output", str(root / "unlearn")),
    )
    runs["evaluate"] = run_quietly(
        *("evaluate", "--bundle", str(root / "unlearn" / "bundle"), "--forget", "070"),
        *(*common, "--output", str(root / "evaluate")),
    )
    return root, bundle, before, runs


def test_every_command_of_the_bundle_flow_succeeds(a_bundle_flow):
    _, _, _, runs = a_bundle_flow
    for name, (code, events) in runs.items():
        assert code == 0, (name, [e.fields for e in events if e.kind == "error"])


def test_the_input_bundle_is_never_touched(a_bundle_flow):
    _, bundle, before, _ = a_bundle_flow
    assert folder_hashes(bundle) == before


def test_the_written_bundle_has_new_weights_a_new_version_and_no_stale_export(a_bundle_flow):
    root, bundle, _, runs = a_bundle_flow
    unlearned = root / "unlearn" / "bundle"
    assert (unlearned / "configs" / "inference.json").read_bytes() == (
        bundle / "configs" / "inference.json"
    ).read_bytes()
    assert (unlearned / "docs" / "README.md").is_file()
    assert not (unlearned / "models" / "model.ts").exists()
    metadata = json.loads((unlearned / "configs" / "metadata.json").read_text())
    assert metadata["version"] == "0.1.0+trained.1.unlearned.1"  # trained, then unlearned
    assert "noisy-label" in metadata["changelog"]["0.1.0+trained.1.unlearned.1"]
    assert list(metadata["changelog"])[1:] == ["0.1.0+trained.1", "0.1.0"]
    assert "070" not in json.dumps(metadata)  # the bundle names no subject
    old = torch.load(root / "train" / "bundle" / "models" / "model.pt", weights_only=True)
    new = torch.load(unlearned / "models" / "model.pt", weights_only=True)
    assert old.keys() == new.keys() and any(not torch.equal(old[k], new[k]) for k in old)
    warnings = [e["message"] for e in runs["train"][1] if e.kind == "warning"]
    assert any("models/model.ts" in w for w in warnings)


def test_the_deletion_record_and_report_name_the_bundles_and_their_hashes(a_bundle_flow):
    root, _, _, _ = a_bundle_flow
    record = json.loads((root / "unlearn" / "deletion-record.json").read_text())
    source = root / "train" / "bundle"
    assert record["bundles"]["input"]["root"] == str(source.resolve())
    assert record["bundles"]["input"]["name"] == "Tiny brain tissue segmentation"
    assert record["bundles"]["input"]["files"] == folder_hashes(source)
    assert record["bundles"]["output"]["files"] == folder_hashes(root / "unlearn" / "bundle")
    assert record["checkpoints"]["input"]["path"] == str(source.resolve() / "models" / "model.pt")
    report = (root / "unlearn" / "report.md").read_text()
    weights = next(
        f for f in record["bundles"]["output"]["files"] if f["path"] == "models/model.pt"
    )
    assert "Tiny brain tissue segmentation" in report and weights["sha256"] in report
    code = main(["verify-record", str(root / "unlearn" / "deletion-record.json")])
    assert code == 0


def test_unlearning_the_bundle_moves_forget_dice_down_more_than_retain(a_bundle_flow):
    root, _, _, _ = a_bundle_flow
    metrics = json.loads((root / "unlearn" / "metrics.json").read_text())
    before, after = metrics["evaluations"][0]["sets"], metrics["evaluations"][-1]["sets"]
    forget_drop = before["forget"]["dice"] - after["forget"]["dice"]
    retain_drop = before["retain"]["dice"] - after["retain"]["dice"]
    assert forget_drop > 0.05
    assert forget_drop > 2 * retain_drop


def test_the_unlearned_bundle_evaluates_as_the_unlearned_checkpoint_did(a_bundle_flow):
    root, _, _, _ = a_bundle_flow
    unlearned = json.loads((root / "unlearn" / "metrics.json").read_text())["evaluations"][-1]
    evaluated = json.loads((root / "evaluate" / "metrics.json").read_text())["evaluations"][0]
    assert evaluated["sets"]["forget"]["dice"] == pytest.approx(
        unlearned["sets"]["forget"]["dice"], abs=1e-6
    )
    assert evaluated["sets"]["retain"]["dice"] == pytest.approx(
        unlearned["sets"]["retain"]["dice"], abs=1e-6
    )


def test_the_trained_checkpoint_keeps_the_bundle_preprocessing(
    a_bundle_flow, a_tiny_cohort, capsys
):
    root, _, _, _ = a_bundle_flow
    checkpoint = torch.load(root / "train" / "model.pt", weights_only=True)
    assert checkpoint["adapter"] == "monai-unet"
    assert checkpoint["metadata"]["preprocessing"]["kind"] == "monai-transforms"
    assert checkpoint["metadata"]["bundle"]["name"] == "Tiny brain tissue segmentation"
    code, events = run_cli(
        capsys,
        *("audit", "--checkpoint", str(root / "train" / "model.pt")),
        *("--cohort", str(a_tiny_cohort), "--output", str(root / "audit"), "--device", "cpu"),
    )
    assert code == 0, error_of(events)


@pytest.mark.slow
def test_a_segresnet_bundle_unlearns_with_a_literature_method(a_tiny_cohort, tmp_path, capsys):
    bundle = write_zoo_bundle(tmp_path / "tiny_segresnet_bundle", dict(SEGRESNET))
    code, events = run_cli(
        capsys,
        *("unlearn", "--bundle", str(bundle), "--forget", "070", "--strategy", "salun"),
        *("--param", "steps=2", "--eval-epochs", "2", "--cohort", str(a_tiny_cohort)),
        *("--output", str(tmp_path / "out"), "--device", "cpu"),
    )
    assert code == 0, error_of(events)
    record = json.loads((tmp_path / "out" / "deletion-record.json").read_text())
    assert record["strategy"]["name"] == "salun"
    assert record["bundles"]["input"]["files"] == folder_hashes(bundle)
    assert (tmp_path / "out" / "bundle" / "models" / "model.pt").is_file()


# --- the JobSpec field the Slicer module fills -------------------------------------------------


def test_a_job_with_a_bundle_round_trips_and_needs_no_checkpoint(tmp_path):
    from MachineUnlearningLib.runtime.jobs import JobSpec

    job = JobSpec(
        command="unlearn", cohort="c", output="o", bundle=str(tmp_path), forget_ids=["070"]
    )
    again = JobSpec.from_dict(json.loads(job.to_json()))
    assert again.bundle == str(tmp_path) and again.checkpoint is None


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"bundle": 3}, "bundle: must be the path"),
        ({"bundle": "b", "checkpoint": "m.pt"}, "either a checkpoint or a bundle"),
        ({}, "checkpoint: a evaluate job needs"),
    ],
    ids=["not-a-path", "both", "neither"],
)
def test_a_job_s_bundle_is_validated(given, match):
    from MachineUnlearningLib.runtime.jobs import JobSpec

    with pytest.raises(InvalidInputError, match=match):
        JobSpec(command="evaluate", cohort="c", output="o", **given)


@pytest.mark.parametrize(
    ("version", "kind", "expected"),
    [
        ("0.2.0", "unlearned", "0.2.0+unlearned.1"),
        ("0.2.0+unlearned.1", "unlearned", "0.2.0+unlearned.2"),
        ("0.2.0+trained.1", "unlearned", "0.2.0+trained.1.unlearned.1"),
        ("1.0+build7", "trained", "1.0+build7.trained.1"),
        ("", "unlearned", "0.0.0+unlearned.1"),
    ],
)
def test_a_written_bundle_gets_the_next_version(version, kind, expected):
    from MachineUnlearningLib.model.bundle_writer import next_version

    assert next_version(version, kind) == expected


def test_a_network_def_given_by_reference_is_followed(tmp_path):
    root = write_zoo_bundle(tmp_path / "b", dict(UNET))
    path = root / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["unet_def"], config["network_def"] = config["network_def"], "@unet_def"
    config["use_sigmoid"] = False
    config["postprocessing"]["transforms"][0] = {
        "_target_": "Activationsd",
        "keys": "pred",
        "softmax": True,
        "sigmoid": "@use_sigmoid",
    }
    path.write_text(json.dumps(config))
    assert read_bundle(root).spec.adapter == "monai-unet"


def test_the_checkpoint_summary_reads_a_bundle_folder(a_unet_bundle):
    from MachineUnlearningLib.model.summary import describe_checkpoint

    summary = describe_checkpoint(a_unet_bundle)
    assert summary["origin"] == "bundle" and summary["adapter"] == "monai-unet"
    assert summary["bundle"]["name"] == "Tiny brain tissue segmentation"
    assert "Spacingd" in summary["bundle"]["preprocessing"]


def test_the_module_summary_line_names_the_bundle_and_its_outputs(a_unet_bundle):
    from MachineUnlearningLib.app.queries import checkpoint_summary
    from MachineUnlearningLib.model.summary import describe_checkpoint

    line = checkpoint_summary(describe_checkpoint(a_unet_bundle))
    assert line.startswith("MONAI bundle 'Tiny brain tissue segmentation'") and "None" not in line
    assert "UNet" in line and "outputs: background, gray matter" in line
