"""Networks the engine can unlearn: architecture adapters, MedicalNet, checkpoints, bundles."""

from MachineUnlearningLib.model.adapters import ADAPTERS, ModelSpec, get_adapter, in_scope
from MachineUnlearningLib.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointMismatchError,
    LoadedModel,
    LoadReport,
    load_checkpoint,
    load_pretrained_backbone,
    medicalnet_spec,
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
    "ADAPTERS",
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
    "ModelSpec",
    "default_shortcut",
    "get_adapter",
    "in_scope",
    "is_decoder_key",
    "load_checkpoint",
    "load_pretrained_backbone",
    "medicalnet_spec",
    "output_size",
    "reinitialise_",
    "save_checkpoint",
]
