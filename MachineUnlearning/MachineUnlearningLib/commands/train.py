"""``train`` (every training subject) and ``retrain`` (the retain subjects only).

Under torchrun every process trains (``training/distributed.py``); only rank 0 creates the
output folder, evaluates and writes the checkpoint and metrics.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from MachineUnlearningLib.commands.common import (
    MODEL_FILE,
    emit_metrics,
    metrics_document,
    prepare_output,
    resolve_roles,
)
from MachineUnlearningLib.data.cohort import discover_cohort, select_subjects
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.evaluation.predict import evaluate_model
from MachineUnlearningLib.model.checkpoint import load_pretrained_backbone, save_checkpoint
from MachineUnlearningLib.model.resnet import MedicalNetSegmentation
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json
from MachineUnlearningLib.runtime.jobs import JobSpec
from MachineUnlearningLib.training import distributed
from MachineUnlearningLib.training.loop import train
from MachineUnlearningLib.training.recipes import Recipe, resolve_recipe
from MachineUnlearningLib.training.steps import Step


def build_model(recipe: Recipe, job: JobSpec, sink: EventSink, seed: int) -> MedicalNetSegmentation:
    """A fresh model for ``recipe``; with ``job.checkpoint``, a MedicalNet backbone loaded in."""
    torch.manual_seed(seed)
    model = MedicalNetSegmentation(recipe.model, generator=torch.Generator().manual_seed(seed))
    if job.checkpoint:
        report = load_pretrained_backbone(
            model, job.checkpoint, adapt_input_channels=len(recipe.modalities) > 1
        )
        sink.emit("phase", name="load", detail=f"pretrained backbone: {report.summary()}")
    return model


def train_baseline(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``train``: every training subject; ``retrain``: the retain subjects only (exact reference).

    Both start from the same initialisation (same seed, same pretrained backbone), so a retrain
    differs from the baseline only by the subjects it never saw.
    """
    recipe = resolve_recipe(
        job.config.get("recipe", "cpu-demo"), {k: v for k, v in job.config.items() if k != "recipe"}
    )
    overrides = {}
    if job.epochs is not None:
        overrides["epochs"] = job.epochs
    if job.learning_rate is not None:
        overrides["learning_rate"] = job.learning_rate
    overrides["seed"] = job.seed
    recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, **overrides))
    group = distributed.current()
    group.check_batch_size(recipe.training.batch_size)
    output = prepare_output(job) if group.is_main else Path(job.output)
    device = group.device(job.device)
    subjects = discover_cohort(job.cohort)
    roles = resolve_roles(subjects, job)
    train_ids = roles.retain if job.command == "retrain" else roles.retain + roles.forget
    if job.command == "train" and job.forget_ids:
        raise InvalidInputError(
            "forget_ids: a baseline is trained on every training subject.",
            hint="Use 'retrain --forget ...' for the retrain-from-scratch reference.",
        )
    policy = get_label_policy(recipe.label_policy)
    eval_roles = {i: "retain" for i in train_ids} | {i: "forget" for i in roles.forget}
    eval_roles |= {i: "held-out" for i in roles.held_out}
    sink.emit(
        "phase",
        name="load",
        detail=f"{len(eval_roles)} subjects, {recipe.label_policy}, "
        f"modalities {', '.join(recipe.modalities)}",
    )
    source = SampleSource(
        select_subjects(subjects, list(eval_roles), "cohort"),
        recipe.modalities,
        policy,
        recipe.preprocessing,
    )
    model = build_model(recipe, job, sink, job.seed)
    sink.emit(
        "phase",
        name="train",
        detail=f"{recipe.model.describe()}, "
        f"{recipe.training.epochs} epochs on {len(train_ids)} subjects, device {device}",
    )

    def plan(epoch: int, rng) -> list[Step]:
        order = rng.permutation(len(train_ids))
        return [Step(train_ids[i]) for i in order]

    started = time.monotonic()
    history = train(model, source, plan, recipe.training, device, sink, job.cancel_path)
    seconds = time.monotonic() - started
    if not group.is_main:
        return {}
    sink.emit("phase", name="evaluate", detail=f"{len(eval_roles)} subjects")
    evaluation = evaluate_model(
        model,
        source,
        eval_roles,
        device,
        "baseline" if job.command == "train" else "retrained",
        history.epochs[-1]["epoch"],
    )
    emit_metrics(sink, evaluation)
    metadata = {
        "recipe": recipe.to_dict(),
        "label_policy": recipe.label_policy,
        "modalities": list(recipe.modalities),
        "preprocessing": recipe.preprocessing.to_dict(),
        "subject_ids": {
            "trained_on": train_ids,
            "held_out": roles.held_out,
            "never_seen": roles.forget if job.command == "retrain" else [],
        },
        "training_history": [
            {
                "kind": job.command,
                "epochs": history.epochs,
                "steps": history.steps,
                "seconds": round(seconds, 2),
                "device": distributed.device_label(device),
                "world_size": group.world_size,
                "seed": job.seed,
                "pretrained_backbone": Path(job.checkpoint).name if job.checkpoint else None,
            }
        ],
    }
    model_path = output / MODEL_FILE
    save_checkpoint(model_path, model.cpu(), recipe.model, metadata)
    sink.emit("artifact", kind="checkpoint", path=str(model_path))
    metrics_path = write_json(
        output / "metrics.json", metrics_document(policy, eval_roles, [evaluation])
    )
    sink.emit("artifact", kind="metrics", path=str(metrics_path))
    return {"checkpoint": str(model_path), "metrics": str(metrics_path)}
