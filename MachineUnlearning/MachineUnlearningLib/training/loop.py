"""The one optimisation loop: baseline training, retraining and every unlearning strategy.

A run is a model, a :class:`TrainingConfig` and a *plan*: for each epoch, the list of
:class:`Step` s to take (which subject, which target, which loss weight). Strategies differ only
in the plan they build, the targets they ask for and the parameters they freeze or reset
(``strategies/``); the loop itself never changes.

Loss per sample: ``weight * L`` where the step's ``loss`` kind picks ``L``: ``task`` (default)
is cross-entropy over non-ignored voxels (``config.loss="ce"``) or cross-entropy + MONAI's
masked soft Dice (``"dice-ce"``); ``kl`` is KL_vox(p_teacher || p_student) against one of the
run's frozen ``teachers`` (``losses.voxel_kl``); ``task+kl`` is ``task + config.kl_weight * kl``.
A negative weight is gradient ascent, bounded: the per-sample loss is capped at ``ascent_cap``
(in nats) so its gradient vanishes once the subject is predicted no better than chance (or, for
``kl``, once the student is that far from its teacher), and gradients are clipped to
``grad_clip_norm``. A non-finite loss stops the run with TrainingDivergedError. An optional
``after_step(model)`` runs after every optimiser step (e.g. to restore weights a strategy keeps
fixed); the loop has no strategy-specific branch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.model.adapters import in_scope
from MachineUnlearningLib.runtime.device import translate_out_of_memory
from MachineUnlearningLib.runtime.errors import (
    CancelledError,
    InvalidInputError,
    TrainingDivergedError,
)
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.training.losses import on_label_grid, voxel_kl
from MachineUnlearningLib.training.steps import TARGETS_TRUE, Plan, Step

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "dice-ce")
SCHEDULES = ("constant", "exponential")
BATCHNORM_MODES = ("train", "frozen")
MEDICALNET_HEAD = ("conv_seg",)  # the default head group (the caller passes its adapter's)


@dataclass(frozen=True)
class TrainingConfig:
    """One optimisation recipe. Defaults are MedicalNet's (SGD, head lr x100) unless noted.

    Attributes:
        epochs: passes over the plan.
        optimizer: ``sgd`` (MedicalNet: momentum 0.9, weight decay 1e-3) or ``adam``.
        learning_rate: base learning rate (MedicalNet: 1e-3).
        head_lr_multiplier: learning-rate factor of the head group (the adapter's decoder;
            MedicalNet's ``conv_seg``: 100).
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        schedule: ``constant`` or ``exponential`` (MedicalNet: gamma 0.99 per epoch).
        gamma: decay factor of the exponential schedule.
        batch_size: samples per optimiser step (MedicalNet: 1).
        loss: ``ce`` (cross-entropy, ignore -1) or ``dice-ce`` (+ MONAI masked soft Dice).
        ascent_cap: cap in nats on a gradient-ascent sample's loss; None = ln(C) x 2.
        grad_clip_norm: global gradient-norm clip; None = off.
        amp: CUDA automatic mixed precision (ignored on CPU).
        seed: seeds torch and every random choice of the run.
        kl_weight: weight of the KL term of ``task+kl`` steps (SCRUB's alpha).
        kl_temperature: softmax temperature of the KL-to-teacher losses (1 = plain softmax).
        batchnorm: ``train`` (BatchNorm normalises by each batch and updates its running
            statistics, PyTorch's training mode) or ``frozen`` (every BatchNorm layer stays in
            eval mode: the running statistics of the starting model are used and never move).
    """

    epochs: int = 50
    optimizer: str = "sgd"
    learning_rate: float = 1e-3
    head_lr_multiplier: float = 100.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    schedule: str = "constant"
    gamma: float = 0.99
    batch_size: int = 1
    loss: str = "ce"
    ascent_cap: float | None = None
    grad_clip_norm: float | None = 5.0
    amp: bool = True
    seed: int = 0
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    batchnorm: str = "train"

    def __post_init__(self) -> None:
        look_up_option(self.optimizer, OPTIMIZERS, "optimizer")
        look_up_option(self.loss, LOSSES, "loss")
        look_up_option(self.schedule, SCHEDULES, "schedule")
        look_up_option(self.batchnorm, BATCHNORM_MODES, "batchnorm")
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidInputError("epochs and batch_size must be >= 1.")
        if not self.learning_rate > 0:
            raise InvalidInputError(f"learning_rate: must be > 0, got {self.learning_rate}.")
        if not self.kl_temperature > 0:
            raise InvalidInputError(f"kl_temperature: must be > 0, got {self.kl_temperature}.")

    def to_dict(self) -> dict:
        return asdict(self)


TargetMaker = Callable[[Step, torch.Tensor, np.random.Generator, torch.Generator], torch.Tensor]
EpochHook = Callable[[int], bool]
StepHook = Callable[[torch.nn.Module], None]


@dataclass
class TrainingHistory:
    """Per-epoch mean loss and optimiser steps of one run (JSON-friendly)."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped_early_at: int | None = None


def true_targets(step: Step, target: torch.Tensor, rng, generator) -> torch.Tensor:
    """Target maker that only knows ``true``."""
    if step.target != TARGETS_TRUE:
        raise InvalidInputError(f"unknown target {step.target!r} for this run.")
    return target


def build_optimizer(
    model: torch.nn.Module, config: TrainingConfig, head_prefixes: Sequence[str] = MEDICALNET_HEAD
) -> torch.optim.Optimizer:
    """Two parameter groups: the head (``head_prefixes``, the adapter's decoder; MedicalNet's
    ``conv_seg``) at lr x head_lr_multiplier, the rest at lr."""
    head, body = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (head if in_scope(name, head_prefixes) else body).append(parameter)
    groups = [
        {"params": body, "lr": config.learning_rate},
        {"params": head, "lr": config.learning_rate * config.head_lr_multiplier},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise InvalidInputError("training: every parameter is frozen; nothing to train.")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, weight_decay=config.weight_decay)


def sample_loss(logits: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss of one sample.

    Args:
        logits: (1, C, d, h, w).
        target: (1, d', h', w') int64 class ids, -1 ignored; when its grid is finer than the
            logits', the logits are upsampled to it (trilinear) first.
    Returns:
        scalar tensor (nats for ``ce``).
    """
    logits = on_label_grid(logits, target)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    if loss == "ce":
        return ce
    from monai.losses import MaskedDiceLoss

    mask = (target != IGNORE_INDEX)[:, None].float()
    dice = MaskedDiceLoss(softmax=True, to_onehot_y=True, include_background=False)(
        logits.float(), target.clamp_min(0)[:, None], mask=mask
    )
    return ce + dice


def step_loss(
    step: Step,
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    config: TrainingConfig,
) -> torch.Tensor:
    """Unweighted loss of one step (shapes as :func:`sample_loss`; ``teacher_logits`` as
    ``logits``, required by ``kl`` kinds)."""
    if step.loss == "task":
        return sample_loss(logits, target, config.loss)
    kl = voxel_kl(logits, teacher_logits, target, config.kl_temperature)
    if step.loss == "kl":
        return kl
    return sample_loss(logits, target, config.loss) + config.kl_weight * kl


def train(
    model: torch.nn.Module,
    source: SampleSource,
    plan: Plan,
    config: TrainingConfig,
    device: torch.device,
    sink: EventSink,
    cancel_path: Path | None = None,
    target_maker: TargetMaker = true_targets,
    frozen_prefixes: Sequence[str] = (),
    on_epoch_end: EpochHook | None = None,
    phase: str = "train",
    teachers: Mapping[str, torch.nn.Module] | None = None,
    after_step: StepHook | None = None,
    head_prefixes: Sequence[str] = MEDICALNET_HEAD,
) -> TrainingHistory:
    """Run the loop; returns the history. ``on_epoch_end(epoch)`` returning True stops early.

    Frozen parameters (names under ``frozen_prefixes``, ``model.adapters.in_scope``) get
    ``requires_grad=False`` and their BatchNorm layers stay in eval mode, so their running
    statistics do not move either. ``teachers`` (name -> model, for steps with a ``kl`` loss)
    are moved to ``device``, put in eval mode and only run under ``no_grad`` on the step's
    input, so neither their weights nor their BatchNorm statistics change. ``after_step(model)``
    is called after every optimiser step. ``head_prefixes`` is the group trained at
    ``head_lr_multiplier`` x the learning rate.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    frozen_modules = _freeze(model, frozen_prefixes)
    if config.batchnorm == "frozen":
        frozen_modules = _batchnorm_modules(model, prefixes=None)
    teachers = dict(teachers or {})
    for teacher in teachers.values():
        teacher.to(device).eval()
    optimizer = build_optimizer(model, config, head_prefixes)
    scheduler = (
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
        if config.schedule == "exponential"
        else None
    )
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    num_classes = source.policy.num_classes
    ascent_cap = config.ascent_cap if config.ascent_cap is not None else 2 * math.log(num_classes)
    history = TrainingHistory()
    started = time.monotonic()
    total_steps = None  # estimated from the first epoch's plan (used for progress and ETA)
    for epoch in range(1, config.epochs + 1):
        steps = plan(epoch, rng)
        missing = sorted({s.teacher for s in steps if s.teacher is not None} - set(teachers))
        if missing:
            raise InvalidInputError(f"{phase}: the plan names teacher(s) {missing}; none given.")
        batches = [
            steps[i : i + config.batch_size] for i in range(0, len(steps), config.batch_size)
        ]
        if total_steps is None:
            total_steps = len(batches) * config.epochs
        model.train()
        for module in frozen_modules:
            module.eval()
        losses = []
        for index, batch in enumerate(batches, start=1):
            if cancel_path is not None and cancel_path.exists():
                raise CancelledError(f"cancelled at epoch {epoch}, step {index}.")
            with translate_out_of_memory(phase):
                value = _optimiser_step(
                    model,
                    source,
                    batch,
                    config,
                    device,
                    optimizer,
                    scaler,
                    use_amp,
                    target_maker,
                    rng,
                    generator,
                    ascent_cap,
                    teachers,
                )
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"{phase}: the loss became {value} at epoch {epoch}, step {index}.",
                    hint="Lower the learning rate, or for gradient ascent lower ascent_cap / "
                    "keep grad_clip_norm on.",
                )
            if after_step is not None:
                after_step(model)
            losses.append(value)
            history.steps += 1
            elapsed = time.monotonic() - started
            # plans may shrink after the first epoch (SCRUB's max pass): never report < 0 left
            total_steps = max(total_steps, history.steps)
            remaining = total_steps - history.steps
            sink.emit(
                "progress",
                phase=phase,
                epoch=epoch,
                epochs=config.epochs,
                step=history.steps,
                steps=total_steps,
                loss=round(value, 6),
                eta_s=round(elapsed / history.steps * remaining, 1),
            )
        if scheduler is not None:
            scheduler.step()
        history.epochs.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else None,
                "steps": len(batches),
            }
        )
        if on_epoch_end is not None and on_epoch_end(epoch):
            history.stopped_early_at = epoch
            break
    history.seconds = time.monotonic() - started
    return history


def _optimiser_step(
    model,
    source,
    batch,
    config,
    device,
    optimizer,
    scaler,
    use_amp,
    target_maker,
    rng,
    generator,
    ascent_cap,
    teachers,
) -> float:
    optimizer.zero_grad(set_to_none=True)
    images, targets = [], []
    for step in batch:
        sample = source.sample(step.subject_id, rng)
        target = target_maker(step, sample.target, rng, generator)
        images.append(sample.image)
        targets.append(target)
    x = torch.stack(images).to(device)
    y = torch.stack(targets).to(device)
    with torch.autocast(device_type=device.type, enabled=use_amp):
        logits = model(x)
        with torch.no_grad():
            references = {name: teachers[name](x) for name in {s.teacher for s in batch} - {None}}
    total = torch.zeros((), device=device)
    for i, step in enumerate(batch):
        reference = references[step.teacher][i : i + 1] if step.teacher is not None else None
        loss = step_loss(step, logits[i : i + 1], y[i : i + 1], reference, config)
        if step.weight < 0:
            loss = loss.clamp(max=ascent_cap)
        total = total + step.weight * loss
    total = total / len(batch)
    value = float(total.detach())
    if not math.isfinite(value):
        return value
    scaler.scale(total).backward()
    if config.grad_clip_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], config.grad_clip_norm
        )
    scaler.step(optimizer)
    scaler.update()
    return value


def _freeze(model: torch.nn.Module, prefixes: Sequence[str]) -> list[torch.nn.Module]:
    """Set requires_grad=False under ``prefixes``; return their BatchNorm modules."""
    if not prefixes:
        return []
    prefixes = tuple(prefixes)
    for name, parameter in model.named_parameters():
        if in_scope(name, prefixes):
            parameter.requires_grad_(False)
    return _batchnorm_modules(model, prefixes)


def _batchnorm_modules(
    model: torch.nn.Module, prefixes: tuple[str, ...] | None
) -> list[torch.nn.Module]:
    """BatchNorm modules under ``prefixes`` (None = every one)."""
    return [
        module
        for name, module in model.named_modules()
        if (prefixes is None or in_scope(name, prefixes))
        and isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    ]
