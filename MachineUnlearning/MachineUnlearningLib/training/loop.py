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
fixed); when that hook also has an ``on_gradients(model)`` method, it is called after every
backward pass and before clipping (e.g. to mask or add to the gradients); the loop has no
strategy-specific branch.

Teachers run in the student's BatchNorm mode, so a student that equals its teacher has KL 0 at
the first step: with ``batchnorm="train"`` every teacher BatchNorm layer the student trains
normalises by the batch's own statistics (as the student does) without updating any statistics;
with ``frozen`` (and for a frozen decoder's layers) both use the running statistics.

A batch (``batch_size`` > 1) stacks its steps' inputs into one forward pass; each step keeps its
own target, loss kind, teacher, weight and ascent cap, and the batch's loss is the mean of the
weighted per-step losses. Under torchrun the same loop runs on every process
(``training/distributed.py``): each rank takes its share of every batch, DDP averages the
gradients, and only rank 0 runs ``on_epoch_end``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

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
from MachineUnlearningLib.training import distributed
from MachineUnlearningLib.training.losses import task_loss, voxel_kl
from MachineUnlearningLib.training.steps import SUBJECT_PREFIX, TARGETS_TRUE, Plan, Step

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "dice-ce")
SCHEDULES = ("constant", "exponential")
BATCHNORM_MODES = ("train", "frozen")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
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
        batch_size: samples per optimiser step, over all processes of a torchrun run
            (MedicalNet: 1).
        loss: ``ce`` (cross-entropy, ignore -1) or ``dice-ce`` (+ MONAI masked soft Dice).
        ascent_cap: cap in nats on a gradient-ascent sample's loss; None = ln(C) x 2.
        grad_clip_norm: global gradient-norm clip; None = off.
        amp: CUDA automatic mixed precision (ignored on CPU).
        amp_dtype: ``float16`` (PyTorch's CUDA autocast default, with a gradient scaler) or
            ``bfloat16`` (no scaler needed: bf16 has float32's exponent range).
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
    amp_dtype: str = "float16"
    seed: int = 0
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    batchnorm: str = "train"

    def __post_init__(self) -> None:
        look_up_option(self.optimizer, OPTIMIZERS, "optimizer")
        look_up_option(self.loss, LOSSES, "loss")
        look_up_option(self.schedule, SCHEDULES, "schedule")
        look_up_option(self.batchnorm, BATCHNORM_MODES, "batchnorm")
        look_up_option(self.amp_dtype, AMP_DTYPES, "amp_dtype")
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
    """Per-epoch mean loss, optimiser steps in the epoch and in all so far (``step``), of one
    run (JSON-friendly)."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0  # the whole loop, wall clock
    hook_seconds: float = 0.0  # of which inside on_epoch_end (evaluations, stopping rules)
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
    """Loss of one sample (``losses.task_loss``).

    Args:
        logits: (1, C, d, h, w).
        target: (1, d', h', w') int64 class ids, -1 ignored; when its grid is finer than the
            logits', the logits are upsampled to it (trilinear) first.
    Returns:
        scalar tensor (nats for ``ce``).
    """
    return task_loss(logits, target, loss)


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

    In a torchrun run (``distributed.current().active``) every rank calls this with the same
    arguments; ``on_epoch_end`` runs on rank 0 only and its answer is broadcast, and the
    cancel file stops every rank at the same step once any rank sees it.
    """
    group = distributed.current()
    group.check_batch_size(config.batch_size)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    model = distributed.use_sync_batchnorm(model, device)
    frozen_modules = _freeze(model, frozen_prefixes)
    if config.batchnorm == "frozen":
        frozen_modules = _batchnorm_modules(model, prefixes=None)
    frozen_names = {name for name, module in model.named_modules() if module in frozen_modules}
    teachers = {
        name: _in_student_mode(teacher.to(device).eval(), frozen_names)
        for name, teacher in (teachers or {}).items()
    }
    gradient_hook = getattr(after_step, "on_gradients", None)
    optimizer = build_optimizer(model, config, head_prefixes)
    network = group.wrap(model, device)
    scheduler = (
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
        if config.schedule == "exponential"
        else None
    )
    autocast_dtype = AMP_DTYPES[config.amp_dtype] if config.amp and device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
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
            if group.any(cancel_path is not None and cancel_path.exists()):
                raise CancelledError(f"cancelled at epoch {epoch}, step {index}.")
            with translate_out_of_memory(phase):
                value = _optimiser_step(
                    network,
                    source,
                    batch,
                    config,
                    device,
                    optimizer,
                    scaler,
                    autocast_dtype,
                    target_maker,
                    rng,
                    generator,
                    ascent_cap,
                    teachers,
                    group,
                    model,
                    gradient_hook,
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
                "step": history.steps,
            }
        )
        if on_epoch_end is not None:
            hook_started = time.monotonic()
            stop = group.from_main(bool(on_epoch_end(epoch)) if group.is_main else False)
            history.hook_seconds += time.monotonic() - hook_started
            if stop:
                history.stopped_early_at = epoch
                break
    history.seconds = time.monotonic() - started
    return history


def _optimiser_step(
    network,
    source,
    batch,
    config,
    device,
    optimizer,
    scaler,
    autocast_dtype,
    target_maker,
    rng,
    generator,
    ascent_cap,
    teachers,
    group,
    model,
    gradient_hook,
) -> float:
    """One optimiser step over ``batch``; returns the batch's mean weighted loss (all ranks).

    Every step's sample and target are drawn, in order, on every rank (so the random streams
    match a one-process run); only this rank's share is stacked and run.
    """
    optimizer.zero_grad(set_to_none=True)
    mine = group.shard(len(batch))
    images, targets, local = [], [], []
    for i, step in enumerate(batch):
        sample = source.sample(step.subject_id, rng)
        target = target_maker(step, _own_target(source, step, sample), rng, generator)
        input_shape = sample.image.shape
        if i in mine:
            images.append(sample.image)
            targets.append(target)
            local.append(step)
    if local:
        # one sample: a view, not a copy (torch.stack always copies)
        x = images[0][None] if len(images) == 1 else torch.stack(images)
        y = targets[0][None] if len(targets) == 1 else torch.stack(targets)
        x, y = x.to(device), y.to(device)
    else:  # a short last batch leaves this rank nothing: an empty batch keeps DDP in step
        x = torch.empty((0, *input_shape), device=device)
    autocast = torch.autocast(
        device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
    )
    with autocast:
        logits = network(x)
        with torch.no_grad():
            references = {name: teachers[name](x) for name in {s.teacher for s in local} - {None}}
    # an empty batch still needs a graph through every parameter for DDP's gradient mean
    total = torch.zeros((), device=device) if local else logits.sum() * 0.0
    for i, step in enumerate(local):
        reference = references[step.teacher][i : i + 1] if step.teacher is not None else None
        loss = step_loss(step, logits[i : i + 1], y[i : i + 1], reference, config)
        if step.weight < 0:
            loss = loss.clamp(max=ascent_cap)
        total = total + step.weight * loss
    # DDP averages gradients over ranks: N / len(batch) makes that the batch mean
    total = total * group.world_size / len(batch)
    value = float(total.detach())
    if group.active:
        value = group.sum(value) / group.world_size
    if not math.isfinite(value):
        return value
    scaler.scale(total).backward()
    if config.grad_clip_norm is not None or gradient_hook is not None:
        scaler.unscale_(optimizer)
    if gradient_hook is not None:
        gradient_hook(model)
    if config.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(
            [p for p in network.parameters() if p.requires_grad], config.grad_clip_norm
        )
    scaler.step(optimizer)
    scaler.update()
    return value


def _own_target(source: SampleSource, step: Step, sample) -> torch.Tensor:
    """The labels a step's target maker starts from: its sample's, or for a ``subject:<id>``
    target that subject's labels on the same sample grid / patch (``SampleSource.target_like``),
    so other-subject targets follow patch sampling without the strategy knowing of it."""
    if not step.target.startswith(SUBJECT_PREFIX):
        return sample.target
    other = step.target[len(SUBJECT_PREFIX) :]
    target = source.target_like(other, sample)
    if target is None or sample.target is None or target.shape != sample.target.shape:
        raise InvalidInputError(f"target {step.target}: no label on the same grid.")
    return target


def _in_student_mode(teacher: torch.nn.Module, frozen_names: set[str]) -> torch.nn.Module:
    """``teacher`` (in eval mode) as the student runs it: a copy whose BatchNorm layers not
    named in ``frozen_names`` normalise by each batch's statistics (no running statistics, so
    nothing is updated); the teacher itself when the student freezes every such layer."""
    trained = [
        name
        for name, module in teacher.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and name not in frozen_names
    ]
    if not trained:
        return teacher
    copy_ = copy.deepcopy(teacher)
    for name, module in copy_.named_modules():
        if name in trained:
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return copy_


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
