"""The MedicalNet 3D ResNet: shapes, MedicalNet key layout and counts, structure, init, config."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from MachineUnlearningLib.model import (
    MedicalNetSegmentation,
    ModelConfig,
    default_shortcut,
    is_decoder_key,
    output_size,
    reinitialise_,
)

torch.set_num_threads(1)

STATS_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def a_small_model(depth: int, shortcut: str | None = None, **kwargs) -> MedicalNetSegmentation:
    config = ModelConfig(
        depth=depth,
        shortcut_type=shortcut or default_shortcut(depth),
        num_classes=kwargs.pop("num_classes", 3),
        base_width=kwargs.pop("base_width", 8),
        **kwargs,
    )
    return MedicalNetSegmentation(config, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def a_medicalnet_resnet50() -> MedicalNetSegmentation:
    """Full-width ResNet-50 shortcut B (46M parameters): built once, forwarded on tiny inputs."""
    torch.manual_seed(0)
    return MedicalNetSegmentation(ModelConfig(depth=50, shortcut_type="B", num_classes=4))


def expected_logit_shape(size: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(2 * math.ceil(math.ceil(math.ceil(n / 2) / 2) / 2) for n in size)


# --- shapes --------------------------------------------------------------------------------

SIZES = [(8, 16, 16), (16, 8, 24), (9, 15, 17), (5, 7, 3), (1, 1, 1)]


@pytest.mark.parametrize("depth", [10, 18, 34, 50], ids=lambda d: f"resnet{d}")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_logits_have_num_classes_channels_at_quarter_resolution(depth, size):
    model = a_small_model(depth, base_width=4, head_channels=8).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, *size))
    assert tuple(logits.shape) == (2, 3, *expected_logit_shape(size))


@pytest.mark.parametrize(
    ("n", "expected"), [(8, 2), (48, 12), (56, 14), (240, 60), (448, 112), (9, 4), (1, 2)]
)
def test_output_size_follows_the_released_layer_table(n, expected):
    assert output_size(n) == expected


def test_full_width_resnet50_runs_on_a_tiny_input(a_medicalnet_resnet50):
    with torch.no_grad():
        logits = a_medicalnet_resnet50.eval()(torch.randn(1, 1, 8, 16, 16))
    assert tuple(logits.shape) == (1, 4, 2, 4, 4)
    assert torch.isfinite(logits).all()


def test_multichannel_model_takes_one_channel_per_modality():
    model = a_small_model(18, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 8, 8)).shape == (1, 3, 2, 2, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, D, H, W\)"):
        model(torch.randn(1, 1, 8, 8, 8))


def test_input_without_batch_axis_is_rejected():
    with pytest.raises(ValueError, match="expected input of shape"):
        a_small_model(10)(torch.randn(1, 8, 8, 8))


def test_logits_are_not_softmaxed():
    model = a_small_model(10).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 8, 8, 8))
    assert not torch.allclose(logits.sum(dim=1), torch.ones(1))


# --- MedicalNet key layout and counts ------------------------------------------------------


def test_resnet50_b_backbone_has_318_entries_and_46155072_parameters(a_medicalnet_resnet50):
    backbone = {
        k: v for k, v in a_medicalnet_resnet50.state_dict().items() if not is_decoder_key(k)
    }
    params = sum(v.numel() for k, v in backbone.items() if not k.endswith(STATS_SUFFIXES))
    assert len(backbone) == 318
    assert params == 46_155_072
    convs = [m for m in a_medicalnet_resnet50.modules() if type(m) is nn.Conv3d]
    assert len(convs) - 2 == 53  # minus conv_seg.3 and conv_seg.6


def test_resnet50_key_names_are_medicalnet_checkpoint_keys(a_medicalnet_resnet50):
    keys = set(a_medicalnet_resnet50.state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "layer3.5.bn3.bias",
        "layer4.2.conv2.weight",
        "conv_seg.0.weight",
        "conv_seg.0.bias",
        "conv_seg.4.running_mean",
        "conv_seg.6.weight",
    ]:
        assert key in keys
    assert "conv_seg.6.bias" not in keys and "conv_seg.3.bias" not in keys
    assert {k.split(".")[1] for k in keys if ".downsample." in k} == {"0"}


@pytest.mark.parametrize("num_classes", [2, 4, 9], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("base_width", [4, 8], ids=lambda w: f"width{w}")
def test_head_parameter_count_follows_the_conv_seg_table(base_width, num_classes):
    model = a_small_model(50, base_width=base_width, num_classes=num_classes)
    e, h = 32 * base_width, 32  # encoder channels, head width
    expected = (e * h * 8 + h) + 2 * h + h * h * 27 + 2 * h + h * num_classes
    assert sum(p.numel() for p in model.conv_seg.parameters()) == expected
    # At MedicalNet width (e = 2048) the same formula gives 552,096 + 32 C.
    assert (2048 * h * 8 + h) + 2 * h + h * h * 27 + 2 * h == 552_096


def test_full_resnet50_head_parameter_count(a_medicalnet_resnet50):
    head = a_medicalnet_resnet50.conv_seg
    assert sum(p.numel() for p in head.parameters()) == 552_096 + 32 * 4
    assert tuple(head[0].weight.shape) == (2048, 32, 2, 2, 2)
    assert tuple(head[6].weight.shape) == (4, 32, 1, 1, 1)


@pytest.mark.parametrize("depth", [18, 34], ids=lambda d: f"resnet{d}")
def test_shortcut_a_has_no_downsample_keys(depth):
    keys = a_small_model(depth, "A").state_dict()
    assert not [k for k in keys if "downsample" in k]


@pytest.mark.parametrize(
    ("depth", "shortcut", "stages"),
    [(10, "B", {"2", "3", "4"}), (34, "B", {"2", "3", "4"}), (50, "B", {"1", "2", "3", "4"})],
    ids=["resnet10B", "resnet34B", "resnet50B"],
)
def test_shortcut_b_adds_downsample_where_shape_changes(depth, shortcut, stages):
    keys = a_small_model(depth, shortcut).state_dict()
    with_downsample = {k[len("layer")] for k in keys if ".downsample." in k}
    assert with_downsample == stages
    assert all(k.split(".")[1] == "0" for k in keys if ".downsample." in k)


@pytest.mark.parametrize(("depth", "expected"), [(10, "B"), (18, "A"), (34, "A"), (50, "B")])
def test_default_shortcut_is_that_of_the_released_weights(depth, expected):
    assert default_shortcut(depth) == expected


def test_shortcut_a_resnet50_has_no_parameters_in_its_shortcuts():
    b = a_small_model(50, "B")
    a = a_small_model(50, "A")
    assert not [k for k in a.state_dict() if "downsample" in k]
    assert sum(p.numel() for p in a.parameters()) < sum(p.numel() for p in b.parameters())


# --- structure -----------------------------------------------------------------------------


def spatial_convs(stage: nn.Sequential) -> list[nn.Conv3d]:
    return [m for m in stage.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]


@pytest.mark.parametrize("depth", [10, 34, 50], ids=lambda d: f"resnet{d}")
def test_layer3_and_layer4_are_dilated_2_and_4_with_stride_1(depth):
    model = a_small_model(depth)
    for stage, dilation in ((model.layer3, 2), (model.layer4, 4)):
        for conv in spatial_convs(stage):
            assert conv.dilation == (dilation,) * 3
            assert conv.padding == (dilation,) * 3
            assert conv.stride == (1, 1, 1)
    for conv in spatial_convs(model.layer1):
        assert conv.dilation == (1, 1, 1) and conv.stride == (1, 1, 1)


@pytest.mark.parametrize("depth", [10, 34, 50], ids=lambda d: f"resnet{d}")
def test_only_block_0_of_layer2_has_stride_2(depth):
    model = a_small_model(depth)
    strides = [conv.stride for conv in spatial_convs(model.layer2)]
    assert strides[0] == (2, 2, 2)
    assert all(s == (1, 1, 1) for s in strides[1:])


def test_stem_is_7x7x7_stride_2_then_maxpool_3_stride_2():
    model = a_small_model(50)
    assert model.conv1.kernel_size == (7, 7, 7) and model.conv1.stride == (2, 2, 2)
    assert model.conv1.padding == (3, 3, 3) and model.conv1.bias is None
    assert model.maxpool.kernel_size == 3 and model.maxpool.stride == 2
    assert model.maxpool.padding == 1


def test_head_layers_match_medicalnet_conv_seg():
    head = a_small_model(50, head_channels=32).conv_seg
    kinds = [type(m) for m in head]
    assert kinds == [
        nn.ConvTranspose3d,
        nn.BatchNorm3d,
        nn.ReLU,
        nn.Conv3d,
        nn.BatchNorm3d,
        nn.ReLU,
        nn.Conv3d,
    ]
    assert head[0].kernel_size == (2, 2, 2) and head[0].stride == (2, 2, 2)
    assert head[0].bias is not None and head[3].bias is None and head[6].bias is None


@pytest.mark.parametrize("base_width", [8, 16], ids=lambda w: f"width{w}")
def test_base_width_scales_every_stage(base_width):
    model = a_small_model(50, base_width=base_width)
    assert model.conv1.out_channels == base_width
    assert model.layer1[0].conv3.out_channels == 4 * base_width
    assert model.layer4[-1].conv3.out_channels == 32 * base_width
    assert model.conv_seg[0].in_channels == 32 * base_width
    assert model.config.encoder_channels == 32 * base_width


def test_encoder_and_decoder_partition_every_parameter():
    model = a_small_model(18)
    names = [n for n, _ in model.named_parameters()]
    enc = [n for n in names if n.split(".")[0] in model.encoder_parameter_prefixes]
    dec = [n for n in names if n.split(".")[0] in model.decoder_parameter_prefixes]
    assert sorted(enc + dec) == sorted(names) and not set(enc) & set(dec)
    assert list(model.encoder_modules()) == list(model.encoder_parameter_prefixes)
    assert model.decoder_modules()["conv_seg"] is model.conv_seg


# --- initialisation ------------------------------------------------------------------------


def test_convs_are_kaiming_normal_fan_out(a_medicalnet_resnet50):
    conv = a_medicalnet_resnet50.layer4[0].conv2  # 512 x 512 x 27 weights
    fan_out = conv.out_channels * 27
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3


def test_batchnorm_starts_at_weight_1_bias_0(a_medicalnet_resnet50):
    for m in a_medicalnet_resnet50.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_transposed_conv_keeps_pytorch_default_init():
    up = a_small_model(50, base_width=16).conv_seg[0]  # weight [512, 32, 2, 2, 2]
    bound = 1 / math.sqrt(32 * 8)  # kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert up.weight.abs().max().item() <= bound
    assert up.weight.abs().max().item() > 0.9 * bound


def test_reinitialise_resets_weights_and_running_stats():
    model = a_small_model(18).train()
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8, 8))
        model.bn1.weight.fill_(3.0)
    assert model.bn1.running_mean.abs().sum() > 0
    reinitialise_(model.layer1)
    reinitialise_(model.bn1)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.running_mean == 0)
    assert torch.all(model.bn1.running_var == 1) and model.bn1.num_batches_tracked == 0
    assert torch.all(model.layer1[0].bn1.running_mean == 0)


def test_reinitialise_with_the_same_seed_draws_the_same_weights():
    model = a_small_model(10)
    reinitialise_(model, torch.Generator().manual_seed(7))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    reinitialise_(model, torch.Generator().manual_seed(7))
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    reinitialise_(model, torch.Generator().manual_seed(8))
    assert not torch.equal(first["conv1.weight"], model.conv1.weight)


# --- configuration -------------------------------------------------------------------------


def test_config_round_trips_through_json():
    config = ModelConfig(depth=34, shortcut_type="A", num_classes=9, in_channels=3, base_width=16)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"depth": 42}, "depth must be one of 10, 18, 34, 50, 101, 152, 200"),
        ({"depth": True}, "depth must be one of"),
        ({"shortcut_type": "C"}, "shortcut_type must be 'A' or 'B'"),
        ({"shortcut_type": "b"}, "shortcut_type must be 'A' or 'B'"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"in_channels": -1}, "in_channels must be a positive integer"),
        ({"base_width": 8.0}, "base_width must be a positive integer"),
        ({"head_channels": True}, "head_channels must be a positive integer"),
    ],
    ids=["depth42", "depth-bool", "shortcutC", "shortcut-lower", "classes0", "inch-neg",
         "width-float", "head-bool"],
)  # fmt: skip
def test_invalid_config_raises_value_error_stating_the_rule(kwargs, rule):
    args = {"depth": 50, "shortcut_type": "B", "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=rule):
        ModelConfig(**args)


def test_config_from_dict_names_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['widht'\]"):
        ModelConfig.from_dict({"depth": 50, "shortcut_type": "B", "num_classes": 2, "widht": 8})
    with pytest.raises(ValueError, match=r"lacks required keys \['num_classes'\]"):
        ModelConfig.from_dict({"depth": 50, "shortcut_type": "B"})


def test_default_shortcut_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth must be one of"):
        default_shortcut(11)
