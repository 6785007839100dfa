"""Named baseline recipes: architecture, label policy, modalities, preprocessing, optimiser.

A recipe is data. ``cpu-demo`` is sized to train on two CPU cores in minutes; ``medicalnet``
is MedicalNet's own MRBrainS18 set-up (ResNet-50, 56 x 448 x 448, SGD with the head at
lr x 100), meant for a GPU. Any field can be overridden by name (JobSpec ``config`` or CLI flags);
``architecture`` and ``network.<argument>`` choose another network (``model/adapters``), whose
adapter's default preprocessing then applies unless overridden too. ``sampling=patches`` (with
``patch_size``, ``positive_fraction``, ``window_overlap``, ... ``data/patches.py``) trains a
full-resolution model on patches and evaluates it with sliding windows; whole volumes stay every
named recipe's default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from MachineUnlearningLib.data.cohort import DEFAULT_MODALITIES, MODALITY_FILES
from MachineUnlearningLib.data.labels import LABEL_POLICIES
from MachineUnlearningLib.data.patches import FIELDS as SAMPLING_KEYS
from MachineUnlearningLib.data.patches import Sampling, check_sampling
from MachineUnlearningLib.data.preprocessing import Preprocessing
from MachineUnlearningLib.model.adapters import ModelSpec, get_adapter
from MachineUnlearningLib.model.adapters.overrides import is_model_key, resolve_model
from MachineUnlearningLib.model.resnet import ModelConfig, default_shortcut
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.training.loop import TrainingConfig


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build and train a baseline.

    Attributes:
        name: recipe name.
        label_policy: ``mrbrains8``, ``mrbrains3`` or ``binary``.
        modalities: input channels, in order (MedicalNet weights take one channel).
        model: the network, adapter + arguments (its input channels and classes follow the two
            fields above).
        preprocessing: spatial and intensity preprocessing.
        training: optimiser recipe and epochs.
        sampling: whole volumes (default) or patches with sliding-window inference.
    """

    name: str
    label_policy: str
    modalities: tuple[str, ...]
    model: ModelSpec
    preprocessing: Preprocessing
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: Sampling = field(default_factory=Sampling)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``sampling`` only when patches, so a whole-volume recipe's dict (and the
        retrain cache keys made from it) is what it was before patch sampling existed."""
        out = {
            "name": self.name,
            "label_policy": self.label_policy,
            "modalities": list(self.modalities),
            "model": self.model.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "training": self.training.to_dict(),
        }
        if self.sampling.patches:
            out["sampling"] = self.sampling.to_dict()
        return out


def _cpu_demo(
    name: str = "cpu-demo",
    base_width: int = 16,
    head_channels: int = 32,
    input_size: tuple[int, int, int] = (96, 160, 160),
    epochs: int = 60,
) -> Recipe:
    """ResNet-10 (shortcut B) on the three MRBrainS18 contrasts, Dice + cross-entropy on the
    input grid, Adam with exponential decay, no augmentation; ``_bench`` is the same at a
    smaller scale."""
    return Recipe(
        name=name,
        label_policy="mrbrains3",
        modalities=DEFAULT_MODALITIES,
        model=_medicalnet(
            ModelConfig(
                depth=10,
                shortcut_type="B",
                num_classes=4,
                in_channels=3,
                base_width=base_width,
                head_channels=head_channels,
            )
        ),
        preprocessing=Preprocessing(input_size=input_size, target_grid="input"),
        training=TrainingConfig(
            epochs=epochs,
            optimizer="adam",
            learning_rate=3e-3,
            head_lr_multiplier=1.0,
            weight_decay=0.0,
            loss="dice-ce",
            schedule="exponential",
            gamma=0.97,
            grad_clip_norm=5.0,
        ),
    )


def _medicalnet_recipe() -> Recipe:
    return Recipe(
        name="medicalnet",
        label_policy="mrbrains3",
        modalities=("reg_T1",),
        model=_medicalnet(ModelConfig(depth=50, shortcut_type=default_shortcut(50), num_classes=4)),
        preprocessing=Preprocessing(input_size=(56, 448, 448), image_interpolation="nearest"),
        training=TrainingConfig(
            epochs=200,
            optimizer="sgd",
            learning_rate=1e-3,
            head_lr_multiplier=100.0,
            momentum=0.9,
            weight_decay=1e-3,
            schedule="exponential",
            gamma=0.99,
            loss="ce",
            grad_clip_norm=None,
        ),
    )


def _bench() -> Recipe:
    """Sized so that one leave-one-out retrain (6 subjects) takes under a minute on 2 CPU cores
    (docs/benchmarks.md section 6 times it).

    The cpu-demo recipe at half its width and a twelfth of its input voxels; trained long
    enough to fit its training subjects (docs/benchmarks.md, "Memorisation").
    """
    return _cpu_demo("bench", base_width=8, head_channels=16, input_size=(32, 80, 80), epochs=40)


def _medicalnet(config: ModelConfig) -> ModelSpec:
    return ModelSpec.create("medicalnet", config.to_dict(), "model")


RECIPES = {r.name: r for r in (_cpu_demo(), _bench(), _medicalnet_recipe())}

_MODEL_KEYS = ("architecture", "depth", "shortcut_type", "base_width", "head_channels")
_PREPROCESSING_KEYS = tuple(f.name for f in dataclasses.fields(Preprocessing))
_TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingConfig))
OVERRIDE_KEYS = (
    "label_policy",
    "modalities",
    *_MODEL_KEYS,
    *_PREPROCESSING_KEYS,
    *_TRAINING_KEYS,
    *SAMPLING_KEYS,
)


def resolve_recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe ``name`` with ``overrides`` (flat field names) applied and validated."""
    recipe = RECIPES[look_up_option(name, RECIPES, "recipe")]
    overrides = dict(overrides or {})
    unknown = sorted(k for k in set(overrides) - set(OVERRIDE_KEYS) if not is_model_key(k))
    if unknown:
        raise InvalidInputError(
            f"config: unknown setting(s) {unknown}.", hint=f"Valid: {', '.join(OVERRIDE_KEYS)}."
        )
    policy = look_up_option(
        overrides.get("label_policy", recipe.label_policy), LABEL_POLICIES, "label_policy"
    )
    modalities = overrides.get("modalities", recipe.modalities)
    modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    for modality in modalities:
        look_up_option(modality, MODALITY_FILES, "modalities")
    model = resolve_model(
        recipe.model, overrides, len(modalities), LABEL_POLICIES[policy].num_classes
    )
    family_defaults = (
        dict(get_adapter(model.adapter).default_preprocessing)
        if model.adapter != recipe.model.adapter
        else {}
    )
    preprocessing = dataclasses.replace(
        recipe.preprocessing,
        **{**family_defaults, **{k: overrides[k] for k in _PREPROCESSING_KEYS if k in overrides}},
    )
    given = {k: overrides[k] for k in SAMPLING_KEYS if k in overrides}
    if "sampling" in given and "inference" not in given:
        given["inference"] = None  # the inference that matches the new sampling
    sampling = dataclasses.replace(recipe.sampling, **given)
    check_sampling(preprocessing, sampling)
    if sampling.patches and model.family.output_stride != 1:
        # stitched windows of coarser logits do not map back exactly where a volume is not a
        # multiple of the stride (MONAI rounds the scaled positions)
        raise InvalidInputError(
            f"sampling: patches need a full-resolution network (logits on its input grid); "
            f"{model.adapter}'s logits are at 1/{model.family.output_stride}.",
            hint="Use sampling=whole-volume for it, or a MONAI architecture for patches.",
        )
    if sampling.patches:  # the network sees patches / windows, never input_size
        model.check_input_size(sampling.patch_size, "patch_size")
    else:
        model.check_input_size(preprocessing.input_size)
    training = dataclasses.replace(
        recipe.training, **{k: overrides[k] for k in _TRAINING_KEYS if k in overrides}
    )
    return Recipe(recipe.name, policy, modalities, model, preprocessing, training, sampling)
