"""Architecture adapters: each family builds through its own class, splits into exactly the
declared encoder and decoder, and round-trips through a self-describing checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import TINY_INPUT_SIZES, TINY_NETWORKS, a_tiny_spec
from MachineUnlearningLib.model.adapters import (
    ADAPTERS,
    ModelSpec,
    adapter_for_target,
    get_adapter,
    in_scope,
    register,
)
from MachineUnlearningLib.model.adapters.overrides import model_overrides, resolve_model
from MachineUnlearningLib.model.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    medicalnet_spec,
    save_checkpoint,
)
from MachineUnlearningLib.model.resnet import ModelConfig
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.strategies.surgery import reinitialise_encoder
from MachineUnlearningLib.training.recipes import resolve_recipe

FAMILIES = list(TINY_NETWORKS)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every parameter moved off its initial value (as after training)."""
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def named(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- the registry -----------------------------------------------------------------------------


def test_every_family_of_the_issue_is_registered():
    assert list(ADAPTERS) == [
        "medicalnet",
        "monai-unet",
        "monai-segresnet",
        "monai-dynunet",
        "monai-swinunetr",
    ]


def test_a_duplicate_adapter_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(ADAPTERS["monai-unet"])


def test_an_unknown_architecture_suggests_the_closest():
    with pytest.raises(InvalidInputError, match="Did you mean 'monai-unet'"):
        get_adapter("monai-unett")


@pytest.mark.parametrize(
    ("target", "adapter"),
    [
        ("UNet", "monai-unet"),
        ("monai.networks.nets.UNet", "monai-unet"),
        ("monai.networks.nets.segresnet.SegResNet", "monai-segresnet"),
        ("DynUNet", "monai-dynunet"),
        ("SwinUNETR", "monai-swinunetr"),
    ],
)
def test_a_bundle_target_finds_its_adapter(target, adapter):
    assert adapter_for_target(target).name == adapter


@pytest.mark.parametrize("target", ["BasicUNet", "mypackage.UNet", "$@net", None])
def test_a_target_without_an_adapter_is_refused_naming_the_key(target):
    with pytest.raises(InvalidInputError, match="network_def#_target_") as error:
        adapter_for_target(target)
    assert "SegResNet" in error.value.hint


def test_scopes_match_whole_name_parts():
    assert in_scope("encoder1.layer.conv1.conv.weight", ("encoder1",))
    assert not in_scope("encoder10.layer.conv1.conv.weight", ("encoder1",))
    assert in_scope("bn1", ("bn1",)) and not in_scope("bn10.weight", ("bn1",))


# --- building and splitting -------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_network_is_the_family_class_and_its_logits_land_where_the_adapter_says(family):
    spec = a_tiny_spec(family)
    model = spec.build(seed=0)
    assert type(model).__name__ == get_adapter(family).class_name
    size = TINY_INPUT_SIZES[family]
    spec.check_input_size(size)
    with torch.no_grad():
        logits = model.eval()(torch.zeros(1, spec.in_channels, *size))
    assert logits.shape == (1, spec.num_classes, *spec.output_shape(size))


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_and_decoder_split_every_parameter_exactly_once(family):
    spec = a_tiny_spec(family)
    names = [n for n, _ in spec.build().named_parameters()]
    encoder = {n for n in names if in_scope(n, spec.encoder_prefixes)}
    decoder = {n for n in names if in_scope(n, spec.decoder_prefixes)}
    assert encoder and decoder
    assert not encoder & decoder
    assert encoder | decoder == set(names)
    for prefix in (*spec.encoder_prefixes, *spec.decoder_prefixes):  # no dead prefix
        assert any(in_scope(n, (prefix,)) for n in names), prefix


def test_unet_levels_nest_as_monai_builds_them():
    spec = a_tiny_spec("monai-unet")  # channels 4, 8, 16: two levels and the bottom
    assert spec.encoder_prefixes == (
        "model.0",
        "model.1.submodule.0",
        "model.1.submodule.1.submodule",
    )
    assert spec.decoder_prefixes == ("model.1.submodule.2", "model.2")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_seed_builds_the_same_weights(family):
    first, again = a_tiny_spec(family).build(seed=3), a_tiny_spec(family).build(seed=3)
    other = a_tiny_spec(family).build(seed=4)
    state, other_state = first.state_dict(), other.state_dict()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    assert any(not torch.equal(v, other_state[k]) for k, v in state.items())


@pytest.mark.parametrize("family", FAMILIES)
def test_reinitialising_the_encoder_redraws_exactly_the_encoder(family):
    spec = a_tiny_spec(family)
    model = perturbed(spec.build(seed=0))
    before = named(model)
    reinitialise_encoder(model, spec, seed=7)
    after = named(model)
    for name in before:
        if in_scope(name, spec.decoder_prefixes):
            assert torch.equal(after[name], before[name]), name
        else:
            assert not torch.equal(after[name], before[name]), name
    again = perturbed(spec.build(seed=0))
    reinitialise_encoder(again, spec, seed=7)
    assert all(torch.equal(p, after[n]) for n, p in again.named_parameters())


@pytest.mark.parametrize(
    ("family", "given", "match"),
    [
        ("monai-unet", {"chanels": [4, 8]}, r"network: UNet has no argument\(s\) \['chanels'\]"),
        ("monai-unet", {"spatial_dims": 2}, "spatial_dims must be 3"),
        ("monai-dynunet", {"deep_supervision": True}, "deep_supervision"),
        ("monai-segresnet", {"use_conv_final": False}, "use_conv_final"),
        ("monai-swinunetr", {"norm_layer": "LayerNorm"}, "norm_layer: not supported"),
        ("monai-unet", {"act": torch.nn.ReLU}, r"network\.act: type .* is not a plain value"),
        ("medicalnet", {"depth": 11}, "depth must be one of"),
    ],
    ids=["unknown", "2d", "deep-supervision", "no-final-conv", "class-argument", "class", "depth"],
)
def test_arguments_the_engine_cannot_use_are_refused_naming_them(family, given, match):
    arguments = {**TINY_NETWORKS[family], "in_channels": 1}
    out = get_adapter(family).channel_arguments[1]
    with pytest.raises(InvalidInputError, match=match):
        ModelSpec.create(family, {**arguments, out: 2, **given})


def test_an_input_size_off_the_divisor_is_refused_with_a_suggestion():
    spec = a_tiny_spec("monai-unet")
    with pytest.raises(InvalidInputError, match=r"multiple of \[4, 4, 4\]") as error:
        spec.check_input_size((18, 32, 32))
    assert "input_size=20,32,32" in error.value.hint or "input_size=16,32,32" in error.value.hint


def test_arguments_are_recorded_as_plain_values():
    spec = ModelSpec.create(
        "monai-segresnet",
        {"in_channels": 1, "out_channels": 2, "norm": ("GROUP", {"num_groups": 2})},
    )
    assert spec.arguments["norm"] == ["GROUP", {"num_groups": 2}]
    assert spec.arguments["spatial_dims"] == 3  # the adapter's default, recorded


# --- recipes choose the architecture ----------------------------------------------------------


def test_a_recipe_switches_to_a_monai_network_with_its_default_preprocessing():
    recipe = resolve_recipe(
        "cpu-demo",
        {
            "architecture": "monai-unet",
            "network.channels": [4, 8, 16],
            "network.strides": [2, 2],
            "input_size": [16, 32, 32],
        },
    )
    assert recipe.model.adapter == "monai-unet"
    assert (recipe.model.in_channels, recipe.model.num_classes) == (3, 4)
    assert recipe.preprocessing.target_grid == "input"
    rebuilt = resolve_recipe(
        "cpu-demo", model_overrides(recipe.to_dict()["model"]) | {"input_size": [16, 32, 32]}
    )
    assert rebuilt.model == recipe.model


def test_a_medicalnet_setting_on_a_monai_network_is_refused():
    with pytest.raises(InvalidInputError, match="depth: a MedicalNet setting"):
        resolve_model(a_tiny_spec("medicalnet"), {"architecture": "monai-unet", "depth": 18}, 3, 4)


def test_a_recipe_input_size_that_the_network_cannot_take_is_refused():
    with pytest.raises(InvalidInputError, match="input_size"):
        resolve_recipe("cpu-demo", {"architecture": "monai-swinunetr", "input_size": [16, 32, 32]})


def test_the_medicalnet_recipes_keep_their_flat_settings():
    recipe = resolve_recipe("cpu-demo", {"depth": 18, "shortcut_type": "A", "base_width": 8})
    assert recipe.model.adapter == "medicalnet" and recipe.model.arguments["depth"] == 18
    assert model_overrides(recipe.to_dict()["model"]) == {
        "depth": 18,
        "shortcut_type": "A",
        "base_width": 8,
        "head_channels": 32,
    }


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_records_the_adapter_and_loads_with_weights_only(family, tmp_path):
    spec = a_tiny_spec(family)
    model = perturbed(spec.build(seed=0)).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, spec, {"label_policy": "mrbrains3"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["adapter"] == family
    assert raw["model_config"] == spec.arguments
    loaded = load_checkpoint(path)
    assert loaded.spec == spec and loaded.metadata == {"label_policy": "mrbrains3"}
    x = torch.randn(1, spec.in_channels, *TINY_INPUT_SIZES[family])
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_a_version_one_checkpoint_without_an_adapter_still_loads(tmp_path):
    spec = a_tiny_spec("medicalnet")
    model = perturbed(spec.build(seed=0)).eval()
    path = tmp_path / "old.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": 1,
            "model_config": dict(spec.arguments),
            "state_dict": model.state_dict(),
            "metadata": {"label_policy": "mrbrains3"},
        },
        path,
    )
    loaded = load_checkpoint(path)
    assert loaded.spec == spec and loaded.config == ModelConfig.from_dict(spec.arguments)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.model.state_dict().items())


def test_a_monai_checkpoint_whose_weights_do_not_fit_lists_the_keys(tmp_path):
    spec = a_tiny_spec("monai-unet")
    state = spec.build().state_dict()
    state.pop("model.2.0.conv.weight")
    path = tmp_path / "model.pt"
    model = spec.build()
    save_checkpoint(path, model, spec, {})
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = state
    torch.save(payload, path)
    with pytest.raises(InvalidInputError, match=r"Missing: model\.2\.0\.conv\.weight"):
        load_checkpoint(path)


def test_a_checkpoint_of_an_unknown_adapter_is_refused(tmp_path):
    spec = a_tiny_spec("monai-unet")
    path = tmp_path / "model.pt"
    save_checkpoint(path, spec.build(), spec, {})
    payload = torch.load(path, weights_only=True)
    payload["adapter"] = "monai-unetr"
    torch.save(payload, path)
    with pytest.raises(InvalidInputError, match="architecture"):
        load_checkpoint(path)


def test_a_medicalnet_spec_equals_its_config():
    config = ModelConfig(depth=10, shortcut_type="B", num_classes=4, in_channels=3, base_width=4)
    spec = medicalnet_spec(config)
    assert spec == ModelSpec.create("medicalnet", config.to_dict())
    created = ModelSpec.create("medicalnet", dict(reversed(config.to_dict().items())))
    assert list(created.arguments) == list(config.to_dict())  # one canonical order
    assert copy.deepcopy(spec.build(seed=1).config) == config


@pytest.mark.parametrize("family", ["medicalnet", "monai-unet"])
def test_the_checkpoint_summary_names_the_architecture(family, tmp_path):
    from MachineUnlearningLib.model.summary import describe_checkpoint

    spec = a_tiny_spec(family)
    path = tmp_path / "model.pt"
    save_checkpoint(path, spec.build(), spec, {"label_policy": "mrbrains3"})
    summary = describe_checkpoint(path)
    assert summary["adapter"] == family and summary["architecture"] == spec.describe()
    assert (summary["in_channels"], summary["num_classes"]) == (3, 4)
    assert ("depth" in summary) == (family == "medicalnet")


@pytest.mark.parametrize("family", ["medicalnet", "monai-unet", "monai-segresnet"])
def test_the_module_summary_line_names_any_adapter(family, tmp_path):
    """The Model section's line (app/queries.checkpoint_summary) names the architecture the
    worker described; it used to print "MedicalNet ResNet-None" for every MONAI network."""
    from MachineUnlearningLib.app.queries import checkpoint_summary
    from MachineUnlearningLib.model.summary import describe_checkpoint

    spec = a_tiny_spec(family)
    path = tmp_path / "model.pt"
    save_checkpoint(path, spec.build(), spec, {"label_policy": "mrbrains3"})
    line = checkpoint_summary(describe_checkpoint(path))
    assert "None" not in line
    assert "3 input(s), 4 classes" in line and line.endswith("labels: mrbrains3")
    if family == "medicalnet":
        assert line.startswith(f"MedicalNet ResNet-{spec.arguments['depth']} (shortcut B")
    else:
        assert line.startswith(spec.describe())
