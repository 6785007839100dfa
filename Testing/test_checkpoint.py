"""Checkpoint files: MedicalNet's released layouts, the project format, and loud refusals."""

from __future__ import annotations

import math

import pytest
import torch

from MachineUnlearningLib.model import (
    CHECKPOINT_FORMAT,
    CheckpointMismatchError,
    MedicalNetSegmentation,
    ModelConfig,
    default_shortcut,
    is_decoder_key,
    load_checkpoint,
    load_pretrained_backbone,
    save_checkpoint,
)
from MachineUnlearningLib.runtime.errors import EXIT_INVALID_INPUT, InvalidInputError

torch.set_num_threads(1)

A_TINY_INPUT = (1, 1, 8, 16, 16)


def a_model(depth=50, shortcut=None, num_classes=4, base_width=8, seed=0, **kwargs):
    config = ModelConfig(
        depth=depth,
        shortcut_type=shortcut or default_shortcut(depth),
        num_classes=num_classes,
        base_width=base_width,
        **kwargs,
    )
    return MedicalNetSegmentation(config, generator=torch.Generator().manual_seed(seed))


def a_trained_model(depth=50, shortcut=None, num_classes=4, **kwargs):
    """A small model whose BN running statistics are no longer the defaults (as after training)."""
    model = a_model(depth, shortcut, num_classes, seed=1, **kwargs).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, model.config.in_channels, 8, 16, 16))
    return model.eval()


def backbone_of(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not is_decoder_key(k)}


def with_module_prefix(state: dict) -> dict:
    return {f"module.{k}": v for k, v in state.items()}


def write_medicalnet_pretrained(path, state: dict, prefix: bool = True):
    """Exactly the released layout: {'state_dict': {'module.conv1.weight': ...}}, no conv_seg."""
    torch.save({"state_dict": with_module_prefix(state) if prefix else state}, path)
    return path


def write_medicalnet_finetuned(path, model, epoch_key="ecpoch", optimizer_key="optimizer"):
    """The layout MedicalNet's train.py writes: epoch (misspelled), batch_id, state_dict, opt."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    loss = model(torch.randn(2, model.config.in_channels, 8, 16, 16)).square().mean()
    loss.backward()
    optimizer.step()
    model.eval()
    torch.save(
        {
            epoch_key: 110,
            "batch_id": 0,
            "state_dict": with_module_prefix(model.state_dict()),
            optimizer_key: optimizer.state_dict(),
        },
        path,
    )
    return path


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


class RunsCodeWhenUnpickled:
    """Unpickling this object would create ``marker`` (it calls ``open(marker, 'w')``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- (1) the released pretrained ResNet-50 file ---------------------------------------------


@pytest.fixture(scope="module")
def a_medicalnet_resnet50_file(tmp_path_factory):
    """resnet_50.pth in the released layout, from a full-width ResNet-50 B (46M parameters)."""
    torch.manual_seed(1)
    source = MedicalNetSegmentation(ModelConfig(depth=50, shortcut_type="B", num_classes=2))
    state = backbone_of(source)
    del source
    path = tmp_path_factory.mktemp("pretrain") / "resnet_50.pth"
    return write_medicalnet_pretrained(path, state), state


def test_released_resnet50_file_loads_all_318_backbone_entries(a_medicalnet_resnet50_file):
    path, state = a_medicalnet_resnet50_file
    torch.manual_seed(2)
    model = MedicalNetSegmentation(ModelConfig(depth=50, shortcut_type="B", num_classes=4))
    fresh_head = {k: v.clone() for k, v in model.conv_seg.state_dict().items()}

    report = load_pretrained_backbone(model, path)

    assert report.backbone_matched == report.backbone_expected == 318
    assert (report.inferred_depth, report.inferred_shortcut) == (50, "B")
    assert report.layout == "medicalnet" and not report.head_loaded
    assert "matched 318/318 backbone entries from resnet_50.pth" in report.summary()
    assert "head kept fresh" in report.summary()
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(torch.equal(model.conv_seg.state_dict()[k], v) for k, v in fresh_head.items())


def test_released_backbone_file_is_refused_as_a_complete_model(a_medicalnet_resnet50_file):
    path, _ = a_medicalnet_resnet50_file
    with pytest.raises(InvalidInputError, match="no segmentation head") as caught:
        load_checkpoint(path)
    assert "pretrained backbone" in caught.value.hint
    assert "ResNet-50 shortcut B" in str(caught.value)


# --- (2)-(4) loud refusals and tolerated variants --------------------------------------------


def test_corrupted_file_is_refused_naming_every_bad_key_and_leaves_the_model_untouched(tmp_path):
    state = backbone_of(a_trained_model(50))
    state["layer2.0.conv_one.weight"] = state.pop("layer2.0.conv1.weight")
    state["layer3.1.bn2.weight"] = torch.ones(5)
    path = write_medicalnet_pretrained(tmp_path / "resnet_50.pth", state)
    model = a_model(50)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(CheckpointMismatchError) as caught:
        load_pretrained_backbone(model, path)

    message = str(caught.value)
    assert str(path) in message
    assert "Missing: layer2.0.conv1.weight" in message
    assert "Unexpected: layer2.0.conv_one.weight" in message
    assert "layer3.1.bn2.weight file [5] vs model [32]" in message
    assert caught.value.exit_code == EXIT_INVALID_INPUT
    report = caught.value.report
    assert report.missing == ("layer2.0.conv1.weight",)
    assert report.unexpected == ("layer2.0.conv_one.weight",)
    assert report.mismatched == (("layer3.1.bn2.weight", (5,), (32,)),)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict-wrapper", "bare-dict"])
def test_file_without_module_prefix_also_loads(tmp_path, wrapped):
    state = backbone_of(a_trained_model(18))
    path = tmp_path / "resnet_18.pth"
    torch.save({"state_dict": state} if wrapped else state, path)
    model = a_model(18)
    report = load_pretrained_backbone(model, path)
    assert report.backbone_matched == report.backbone_expected == len(state)
    assert report.layout == ("medicalnet" if wrapped else "state-dict")
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_resnet18_shortcut_a_file_into_resnet50_is_refused_saying_what_the_file_is(tmp_path):
    path = write_medicalnet_pretrained(tmp_path / "resnet_18.pth", backbone_of(a_model(18, "A")))
    with pytest.raises(InvalidInputError) as caught:
        load_pretrained_backbone(a_model(50, "B"), path)
    message = str(caught.value)
    assert "the file looks like ResNet-18 shortcut A" in message
    assert "model (ResNet-50 shortcut B" in message
    assert "(and " in message  # long key lists are cut, with a count
    assert "depth=18, shortcut_type='A'" in caught.value.hint


@pytest.mark.parametrize(
    ("file_depth", "file_shortcut", "model_depth", "model_shortcut", "looks_like"),
    [
        (34, "B", 34, "A", "ResNet-34 shortcut B"),
        (34, "A", 34, "B", "ResNet-34 shortcut A"),
        (101, "B", 50, "B", "ResNet-101 shortcut B"),
        (34, "A", 50, "A", "ResNet-34 shortcut A"),
    ],
    ids=["shortcut-B-into-A", "shortcut-A-into-B", "resnet101-into-50", "resnet34-into-50"],
)
def test_other_architectures_are_refused_even_when_every_model_key_exists(
    tmp_path, file_depth, file_shortcut, model_depth, model_shortcut, looks_like
):
    source = a_model(file_depth, file_shortcut, base_width=4)
    path = write_medicalnet_pretrained(tmp_path / "other.pth", backbone_of(source))
    with pytest.raises(InvalidInputError, match=f"the file looks like {looks_like}"):
        load_pretrained_backbone(a_model(model_depth, model_shortcut, base_width=4), path)


def test_width_mismatch_is_refused_with_the_width_of_the_file(tmp_path):
    path = write_medicalnet_pretrained(tmp_path / "r10.pth", backbone_of(a_model(10)))
    with pytest.raises(InvalidInputError, match="looks like ResNet-10 shortcut B, base width 8"):
        load_pretrained_backbone(a_model(10, base_width=4), path)


def test_keys_under_an_unknown_prefix_are_refused_not_silently_skipped(tmp_path):
    state = {f"backbone.{k}": v for k, v in backbone_of(a_model(10)).items()}
    path = tmp_path / "r10.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(InvalidInputError, match="Every key starts with 'backbone.'"):
        load_pretrained_backbone(a_model(10), path)


def test_file_without_bn_step_counters_loads_and_says_so(tmp_path):
    state = backbone_of(a_trained_model(10))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = write_medicalnet_pretrained(tmp_path / "old.pth", state)
    model = a_model(10)
    n_bn = 12  # bn1, 2 per block in 4 blocks, 3 downsample BNs (layer2..4)
    report = load_pretrained_backbone(model, path)
    assert report.backbone_matched == len(state) == report.backbone_expected - n_bn
    assert len(report.defaulted) == n_bn
    assert f"{n_bn} BN step counters absent" in report.summary()
    assert model.bn1.num_batches_tracked.item() == 0


# --- heads and input channels ------------------------------------------------------------------


def test_pretrained_load_takes_the_head_when_classes_match(tmp_path):
    source = a_trained_model(18, num_classes=4)
    path = write_medicalnet_finetuned(tmp_path / "ft.pth.tar", source)
    model = a_model(18, num_classes=4)
    report = load_pretrained_backbone(model, path)
    assert report.head_loaded and report.epoch == 110
    x = torch.randn(*A_TINY_INPUT)
    assert torch.equal(outputs(model, x), outputs(source, x))


def test_pretrained_load_keeps_a_fresh_head_when_classes_differ(tmp_path):
    path = write_medicalnet_finetuned(tmp_path / "ft.pth.tar", a_trained_model(18, num_classes=4))
    model = a_model(18, num_classes=2)
    fresh = model.conv_seg[6].weight.clone()
    report = load_pretrained_backbone(model, path)
    assert not report.head_loaded
    assert "file head has 4 classes, model has 2: head kept fresh" in report.summary()
    assert torch.equal(model.conv_seg[6].weight, fresh)


def test_one_channel_file_into_three_channel_model_is_refused_by_default(tmp_path):
    path = write_medicalnet_pretrained(tmp_path / "r18.pth", backbone_of(a_model(18)))
    with pytest.raises(InvalidInputError, match="conv1 takes 1 input channel, the model takes 3"):
        load_pretrained_backbone(a_model(18, in_channels=3), path)


def test_adapted_input_channels_give_the_one_channel_response_on_equal_channels(tmp_path):
    source = a_trained_model(18)
    path = write_medicalnet_finetuned(tmp_path / "ft.pth.tar", source)
    model = a_model(18, in_channels=3)
    report = load_pretrained_backbone(model, path, adapt_input_channels=True)
    assert report.input_channels_adapted and report.head_loaded
    assert report.backbone_matched == report.backbone_expected
    x = torch.randn(*A_TINY_INPUT)
    torch.testing.assert_close(outputs(model, x.repeat(1, 3, 1, 1, 1)), outputs(source, x))


# --- (5) MedicalNet fine-tuned files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "epoch_key", "optimizer_key"),
    [(50, "ecpoch", "optimizer"), (18, "ecpoch", "optimeizer"), (10, "epoch", "optimizer")],
    ids=["resnet50-ecpoch-optimizer", "resnet18-optimeizer", "resnet10-epoch"],
)
def test_finetuned_file_loads_with_inferred_config_and_identical_outputs(
    tmp_path, depth, epoch_key, optimizer_key
):
    source = a_trained_model(depth, num_classes=3, head_channels=16)
    path = tmp_path / f"resnet_{depth}_epoch_110_batch_0.pth.tar"
    write_medicalnet_finetuned(path, source, epoch_key, optimizer_key)

    loaded = load_checkpoint(path)

    assert loaded.config == source.config
    assert not loaded.model.training
    assert loaded.report.epoch == 110 and loaded.metadata["batch_id"] == 0
    assert loaded.report.backbone_matched == loaded.report.backbone_expected
    x = torch.randn(*A_TINY_INPUT)
    assert torch.equal(outputs(loaded.model, x), outputs(source, x))


def test_finetuned_file_with_a_missing_head_entry_is_refused(tmp_path):
    source = a_trained_model(10)
    state = {k: v for k, v in source.state_dict().items() if k != "conv_seg.3.weight"}
    path = tmp_path / "broken.pth.tar"
    torch.save({"ecpoch": 3, "state_dict": with_module_prefix(state)}, path)
    with pytest.raises(InvalidInputError, match="Missing: conv_seg.3.weight"):
        load_checkpoint(path)


# --- (6) the project format ------------------------------------------------------------------


A_METADATA = {
    "label_policy": "mrbrains3",
    "modalities": ["T1", "FLAIR"],
    "preprocessing": {"crop": [48, 240, 240], "normalise": "zscore-nonzero", "clip": None},
    "training_history": [{"kind": "train", "epochs": 2, "loss": 0.75, "ok": True}],
    "subject_ids": {"retain": ["1", "4"], "forget": ["070"]},
    "created": "2026-01-01T00:00:00+00:00",
    "class_weights": torch.tensor([0.5, 1.0, 2.0]),
}


def test_project_checkpoint_round_trip_preserves_outputs_config_and_metadata(tmp_path):
    source = a_trained_model(34, num_classes=3, in_channels=2)
    path = tmp_path / "model.pt"
    save_checkpoint(path, source, source.config, A_METADATA)

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["format_version"] == 2
    assert raw["adapter"] == "medicalnet" and raw["model_config"] == source.config.to_dict()
    loaded = load_checkpoint(path)

    assert loaded.config == source.config and loaded.report.layout == "project"
    assert loaded.metadata.keys() == A_METADATA.keys()
    assert torch.equal(loaded.metadata.pop("class_weights"), A_METADATA["class_weights"])
    assert loaded.metadata == {k: v for k, v in A_METADATA.items() if k != "class_weights"}
    x = torch.randn(1, 2, 8, 16, 16)
    assert torch.equal(outputs(loaded.model, x), outputs(source, x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    model = a_model(10)
    path = tmp_path / "model.pt"
    path.write_bytes(b"precious input")
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        save_checkpoint(path, model, model.config, {})
    assert path.read_bytes() == b"precious input"
    save_checkpoint(path, model, model.config, {}, overwrite=True)
    assert load_checkpoint(path).config == model.config


def test_save_rejects_metadata_that_would_need_unpickling(tmp_path):
    model = a_model(10)
    with pytest.raises(TypeError, match=r"metadata\['history'\]\[0\]: tuple is not allowed"):
        save_checkpoint(tmp_path / "m.pt", model, model.config, {"history": [(1, 2)]})
    assert not list(tmp_path.iterdir())


def test_save_rejects_a_config_that_does_not_describe_the_model(tmp_path):
    model = a_model(10)
    other = ModelConfig(depth=18, shortcut_type="A", num_classes=4, base_width=8)
    with pytest.raises(ValueError, match="does not describe the model"):
        save_checkpoint(tmp_path / "m.pt", model, other, {})


def test_project_checkpoint_from_a_newer_version_is_refused(tmp_path):
    model = a_model(10)
    path = tmp_path / "future.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": 3,
            "adapter": "medicalnet",
            "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "metadata": {},
        },
        path,
    )
    with pytest.raises(InvalidInputError, match="format_version 3 is not supported"):
        load_checkpoint(path)


def test_file_with_pickled_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    state = with_module_prefix(backbone_of(a_model(10)))
    torch.save({"state_dict": state, "extra": RunsCodeWhenUnpickled(marker)}, path)
    for load in (load_checkpoint, lambda p: load_pretrained_backbone(a_model(10), p)):
        with pytest.raises(InvalidInputError, match="was not unpickled") as caught:
            load(path)
        assert "open" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
        (b"", "not a readable PyTorch checkpoint"),
        (None, "file not found"),
    ],
    ids=["garbage", "empty", "missing"],
)
def test_unreadable_files_are_invalid_input(tmp_path, content, match):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=match):
        load_checkpoint(path)


def test_file_without_a_state_dict_lists_its_top_level_keys(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights": [1, 2], "note": "hello"}, path)
    with pytest.raises(InvalidInputError, match="top-level keys: weights, note"):
        load_checkpoint(path)


# --- (7) non-finite weights ------------------------------------------------------------------


def test_non_finite_weights_are_refused_naming_the_keys(tmp_path):
    state = a_trained_model(10).state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0, 0] = math.nan
    state["conv_seg.4.running_var"][1] = math.inf
    path = tmp_path / "diverged.pth.tar"
    torch.save({"ecpoch": 7, "state_dict": with_module_prefix(state)}, path)
    for load in (load_checkpoint, lambda p: load_pretrained_backbone(a_model(10), p)):
        with pytest.raises(InvalidInputError, match="non-finite") as caught:
            load(path)
        assert "layer1.0.conv1.weight" in str(caught.value)
        assert "conv_seg.4.running_var" in str(caught.value)
