"""MedicalNet (Med3D) 3D ResNet segmentation network, weight-compatible with the released files.

Attribute and parameter names equal the keys of Tencent/MedicalNet checkpoints (after removing
their ``module.`` prefix): ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` and the ``conv_seg`` head.
Structure as in the released code (not the paper): layer2 has stride 2, layer3 dilation 2,
layer4 dilation 4, both with stride 1, so the encoder ends at 1/8 resolution and the head's
transposed convolution brings the logits back to 1/4 of the input size per axis.

Shapes: input ``(B, C_in, D, H, W)`` float; logits ``(B, C, D', H', W')`` with, per axis,
``n' = 2 * ceil(ceil(ceil(n / 2) / 2) / 2)`` (``n / 4`` when ``n`` is divisible by 8).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from MachineUnlearningLib.model.adapters.medicalnet import DECODER as MEDICALNET_DECODER
from MachineUnlearningLib.model.adapters.medicalnet import ENCODER as MEDICALNET_ENCODER

VALID_DEPTHS = (10, 18, 34, 50, 101, 152, 200)
SHORTCUT_TYPES = ("A", "B")

# Blocks per stage for each depth (Tencent/MedicalNet models/resnet.py).
BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
BOTTLENECK_DEPTHS = frozenset({50, 101, 152, 200})

# (stride, dilation) of layer1..layer4, as in the released code.
STAGE_STRIDES = (1, 2, 1, 1)
STAGE_DILATIONS = (1, 1, 2, 4)
STAGE_WIDTH_MULTIPLIERS = (1, 2, 4, 8)

# The encoder / decoder split is the adapter's (model/adapters/medicalnet.py); named here too.
ENCODER_PARAMETER_PREFIXES = MEDICALNET_ENCODER
DECODER_PARAMETER_PREFIXES = MEDICALNET_DECODER


def default_shortcut(depth: int) -> str:
    """Shortcut type of MedicalNet's released weights: "B" for 10 and 50+, "A" for 18 and 34."""
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"depth must be one of {_depth_list()}; got {depth!r}")
    return "A" if depth in (18, 34) else "B"


def _depth_list() -> str:
    return ", ".join(str(d) for d in VALID_DEPTHS)


def _require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture arguments of :class:`MedicalNetSegmentation`; plain data, JSON-serialisable.

    Attributes:
        depth: ResNet depth, one of 10, 18, 34, 50, 101, 152, 200 (BasicBlock below 50).
        shortcut_type: "A" (parameter-free: strided identity plus zero channels) or "B"
            (1x1x1 conv + BN, keys ``downsample.0/1``); see :func:`default_shortcut`.
        num_classes: C, number of output channels (logits), >= 1.
        in_channels: C_in, image channels (modalities) of the input; MedicalNet weights use 1.
        base_width: stem channels; stage planes are base_width * (1, 2, 4, 8). 64 is
            MedicalNet; smaller values (8, 16) exist only for CPU demos and tests.
        head_channels: width of the ``conv_seg`` head; 32 is MedicalNet.
    """

    depth: int
    shortcut_type: str
    num_classes: int
    in_channels: int = 1
    base_width: int = 64
    head_channels: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or self.depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"depth must be one of {_depth_list()}; got {self.depth!r}")
        if self.shortcut_type not in SHORTCUT_TYPES:
            raise ValueError(f"shortcut_type must be 'A' or 'B'; got {self.shortcut_type!r}")
        for name in ("num_classes", "in_channels", "base_width", "head_channels"):
            _require_positive_int(name, getattr(self, name))

    @property
    def uses_bottleneck(self) -> bool:
        """True for depths 50 and above (Bottleneck blocks, expansion 4)."""
        return self.depth in BOTTLENECK_DEPTHS

    @property
    def encoder_channels(self) -> int:
        """Channels of the layer4 output, i.e. the head's input (2048 for MedicalNet R50)."""
        expansion = 4 if self.uses_bottleneck else 1
        return self.base_width * STAGE_WIDTH_MULTIPLIERS[-1] * expansion

    def describe(self) -> str:
        """Backbone in words, e.g. "ResNet-50 shortcut B, base width 64, 1 input channel"."""
        plural = "" if self.in_channels == 1 else "s"
        return (
            f"ResNet-{self.depth} shortcut {self.shortcut_type}, base width {self.base_width}, "
            f"{self.in_channels} input channel{plural}"
        )

    def to_dict(self) -> dict[str, int | str]:
        """Plain JSON types only."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a dict; got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"model config has unknown keys {unknown}; valid keys: {', '.join(sorted(known))}"
            )
        missing = sorted(k for k in ("depth", "shortcut_type", "num_classes") if k not in data)
        if missing:
            raise ValueError(f"model config lacks required keys {missing}")
        return cls(**data)


def _conv3x3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class ZeroPadShortcut(nn.Module):
    """Shortcut A: strided identity (average pooling, kernel 1) plus zero-filled channels.

    Parameter-free, so it adds no state-dict keys. ``(B, C_in, D, H, W)`` ->
    ``(B, out_channels, ceil(D/s), ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        missing = self.out_channels - out.shape[1]
        if missing <= 0:
            return out
        zeros = out.new_zeros((out.shape[0], missing, *out.shape[2:]))
        return torch.cat([out, zeros], dim=1)


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions, expansion 1: ``(B, in, D, H, W)`` -> ``(B, planes, D/s, ...)``."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (stride, dilation) -> 1x1x1 (expansion 4).

    ``(B, in, D, H, W)`` -> ``(B, 4 * planes, D/s, H/s, W/s)``.
    """

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes, stride=stride, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def reinitialise_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Apply MedicalNet's initialisation, in place, to every submodule of ``module``.

    Conv3d: Kaiming-normal, mode fan_out (ReLU gain), bias (if any) zero. ConvTranspose3d:
    PyTorch's default (Kaiming-uniform with a = sqrt(5), bias uniform in +-1/sqrt(fan_in)),
    as MedicalNet leaves it. BatchNorm3d: weight 1, bias 0, running statistics reset.
    Pass a seeded ``generator`` to make the draw reproducible (record its seed). Returns
    ``module``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.ConvTranspose3d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                # PyTorch's fan_in for a transposed-conv weight [in, out, k, k, k].
                fan_in = m.weight.shape[1] * math.prod(m.weight.shape[2:])
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.BatchNorm3d):
            m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class MedicalNetSegmentation(nn.Module):
    """MedicalNet 3D ResNet encoder with the ``conv_seg`` head; logits at 1/4 resolution.

    Args:
        config: architecture (depth, shortcut type, channels, widths); see :class:`ModelConfig`.
        generator: optional seeded generator for the initial weights (else torch's global RNG).

    Forward: ``x`` of shape ``(B, C_in, D, H, W)`` -> logits ``(B, num_classes, D', H', W')``,
    ``n' = 2 * ceil(ceil(ceil(n / 2) / 2) / 2)`` per axis; no softmax, no final upsampling.
    Intermediate shapes for ``n`` divisible by 8: conv1 ``n/2``, maxpool/layer1 ``n/4``,
    layer2-4 ``n/8`` with ``encoder_channels`` channels, conv_seg ``n/4``.
    """

    encoder_parameter_prefixes = ENCODER_PARAMETER_PREFIXES
    decoder_parameter_prefixes = DECODER_PARAMETER_PREFIXES

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig; got {type(config).__name__}")
        self.config = config
        block = Bottleneck if config.uses_bottleneck else BasicBlock
        width = config.base_width
        self.conv1 = nn.Conv3d(config.in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        stages = []
        for blocks, mult, stride, dilation in zip(
            BLOCKS_PER_STAGE[config.depth],
            STAGE_WIDTH_MULTIPLIERS,
            STAGE_STRIDES,
            STAGE_DILATIONS,
            strict=True,
        ):
            stage, inplanes = self._make_stage(
                block, inplanes, width * mult, blocks, stride, dilation
            )
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        head = config.head_channels
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(inplanes, head, kernel_size=2, stride=2),
            nn.BatchNorm3d(head),
            nn.ReLU(inplace=True),
            nn.Conv3d(head, head, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm3d(head),
            nn.ReLU(inplace=True),
            nn.Conv3d(head, config.num_classes, 1, stride=1, bias=False),
        )
        reinitialise_(self, generator)

    def _make_stage(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        inplanes: int,
        planes: int,
        blocks: int,
        stride: int,
        dilation: int,
    ) -> tuple[nn.Sequential, int]:
        out_planes = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or inplanes != out_planes:
            if self.config.shortcut_type == "A":
                downsample = ZeroPadShortcut(out_planes, stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(inplanes, out_planes, 1, stride=stride, bias=False),
                    nn.BatchNorm3d(out_planes),
                )
        layers = [block(inplanes, planes, stride, dilation, downsample)]
        layers += [block(out_planes, planes, 1, dilation, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers), out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, D, H, W)`` -> logits ``(B, num_classes, D', H', W')``."""
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.config.in_channels}, D, H, W); "
                f"got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.conv_seg(x)

    def encoder_modules(self) -> dict[str, nn.Module]:
        """The backbone (names = :attr:`encoder_parameter_prefixes`), in forward order."""
        return {name: getattr(self, name) for name in self.encoder_parameter_prefixes}

    def decoder_modules(self) -> dict[str, nn.Module]:
        """The segmentation head (``conv_seg``)."""
        return {name: getattr(self, name) for name in self.decoder_parameter_prefixes}


def is_decoder_key(key: str) -> bool:
    """True for state-dict keys of the ``conv_seg`` head (``module.`` prefix already removed)."""
    return key.split(".", 1)[0] in DECODER_PARAMETER_PREFIXES


def output_size(n: int) -> int:
    """Logit size along one axis for an input of ``n`` voxels: 2 * ceil(ceil(ceil(n/2)/2)/2)."""
    for _ in range(3):
        n = -(-n // 2)
    return 2 * n
