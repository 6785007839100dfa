"""The MedicalNet 3D ResNet segmentation network and its checkpoint files."""

from MachineUnlearningLib.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointMismatchError,
    LoadedModel,
    LoadReport,
    load_checkpoint,
    load_pretrained_backbone,
    save_checkpoint,
)
from MachineUnlearningLib.model.resnet import (
    DECODER_PARAMETER_PREFIXES,
    ENCODER_PARAMETER_PREFIXES,
    SHORTCUT_TYPES,
    VALID_DEPTHS,
    MedicalNetSegmentation,
    ModelConfig,
    default_shortcut,
    is_decoder_key,
    output_size,
    reinitialise_,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "DECODER_PARAMETER_PREFIXES",
    "ENCODER_PARAMETER_PREFIXES",
    "SHORTCUT_TYPES",
    "VALID_DEPTHS",
    "CheckpointMismatchError",
    "LoadReport",
    "LoadedModel",
    "MedicalNetSegmentation",
    "ModelConfig",
    "default_shortcut",
    "is_decoder_key",
    "load_checkpoint",
    "load_pretrained_backbone",
    "output_size",
    "reinitialise_",
    "save_checkpoint",
]
