"""``train`` (every training subject) and ``retrain`` (the retain subjects only).

With ``--bundle`` the network and preprocessing are the MONAI bundle's: ``train`` fine-tunes
the bundle's weights, ``retrain`` starts the same network from a seeded initialisation (the
bundle does not record its own); the optimiser is the recipe's. The trained model is also
written back as a bundle (``OUTPUT/bundle``).

Under torchrun every process trains (``training/distributed.py``); only rank 0 creates the
output folder, evaluates and writes the checkpoint, metrics and bundle.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from MachineUnlearningLib.commands.common import (
    BUNDLE_FOLDER,
    BUNDLE_SAMPLING_FIXED,
    BUNDLE_SETTINGS,
    MODEL_FILE,
    bundle_metadata,
    bundle_policy,
    bundle_sampling,
    emit_metrics,
    metrics_document,
    prepare_output,
    resolve_roles,
    sample_source,
)
from MachineUnlearningLib.data.cohort import discover_cohort, select_subjects
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.preprocessing import Preprocessing
from MachineUnlearningLib.evaluation.predict import evaluate_model
from MachineUnlearningLib.model.adapters import DEFAULT_ADAPTER
from MachineUnlearningLib.model.adapters.overrides import is_model_key
from MachineUnlearningLib.model.bundle import Bundle, read_bundle
from MachineUnlearningLib.model.bundle_writer import write_bundle
from MachineUnlearningLib.model.checkpoint import load_pretrained_backbone, save_checkpoint
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json
from MachineUnlearningLib.runtime.jobs import JobSpec
from MachineUnlearningLib.training import distributed
from MachineUnlearningLib.training.loop import train
from MachineUnlearningLib.training.recipes import Recipe, resolve_recipe
from MachineUnlearningLib.training.steps import Step


def build_model(
    recipe: Recipe, job: JobSpec, sink: EventSink, seed: int, bundle: Bundle | None = None
) -> torch.nn.Module:
    """A fresh, seeded model for ``recipe``; with ``job.checkpoint``, a MedicalNet backbone
    loaded in; ``train --bundle`` starts from the bundle's weights."""
    torch.manual_seed(seed)
    if bundle is not None and job.command == "train":
        sink.emit("phase", name="load", detail=f"fine-tuning {bundle.describe()}")
        return bundle.load_network().train()
    model = recipe.model.build(seed)
    if job.checkpoint:
        if recipe.model.adapter != DEFAULT_ADAPTER:
            raise InvalidInputError(
                f"checkpoint: a pretrained MedicalNet backbone cannot start a "
                f"{recipe.model.adapter} network.",
                hint="Drop --checkpoint, or start from a MONAI bundle with --bundle DIR.",
            )
        report = load_pretrained_backbone(
            model, job.checkpoint, adapt_input_channels=len(recipe.modalities) > 1
        )
        sink.emit("phase", name="load", detail=f"pretrained backbone: {report.summary()}")
    return model


def job_recipe(job: JobSpec, bundle: Bundle | None, sink: EventSink) -> Recipe:
    """The job's recipe; for a bundle, its network and preprocessing replace the recipe's."""
    settings = {k: v for k, v in job.config.items() if k != "recipe"}
    if bundle is not None:
        preprocessing_keys = {f.name for f in dataclasses.fields(Preprocessing)}
        bundle_fixed = preprocessing_keys | set(BUNDLE_SAMPLING_FIXED)
        fixed = sorted(k for k in settings if is_model_key(k) or k in bundle_fixed)
        if fixed:
            raise InvalidInputError(
                f"config: {fixed} do not apply with --bundle: the network and preprocessing "
                "are the bundle's.",
                hint="Remove these settings (optimiser settings may stay).",
            )
        settings = {k: v for k, v in settings.items() if k not in BUNDLE_SETTINGS}
    recipe = resolve_recipe(job.config.get("recipe", "cpu-demo"), settings)
    if bundle is not None:
        policy = bundle_policy(bundle, job.config, sink)
        recipe = dataclasses.replace(
            recipe,
            label_policy=policy.name,
            modalities=bundle.modalities(job.config.get("modalities")),
            model=bundle.spec,
            preprocessing=bundle.chain,
            sampling=bundle_sampling(bundle, job.config),
        )
    return recipe


def train_baseline(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``train``: every training subject; ``retrain``: the retain subjects only (exact reference).

    Both start from the same initialisation (same seed, same pretrained backbone), so a retrain
    differs from the baseline only by the subjects it never saw.
    """
    bundle = read_bundle(job.bundle) if job.bundle else None
    recipe = job_recipe(job, bundle, sink)
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
    source = sample_source(
        select_subjects(subjects, list(eval_roles), "cohort"),
        recipe.modalities,
        policy,
        recipe.preprocessing,
        recipe.model,
        recipe.sampling,
    )
    model = build_model(recipe, job, sink, job.seed, bundle)
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
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    history = train(
        model,
        source,
        plan,
        recipe.training,
        device,
        sink,
        job.cancel_path,
        head_prefixes=recipe.model.decoder_prefixes,
    )
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
                "bundle": _bundle_start(bundle, job.command),
            }
        ],
    }
    if recipe.sampling.patches:
        metadata["sampling"] = recipe.sampling.to_dict()
    if bundle is not None:
        metadata["bundle"] = bundle_metadata(bundle)
    model_path = output / MODEL_FILE
    save_checkpoint(model_path, model.cpu(), recipe.model, metadata)
    sink.emit("artifact", kind="checkpoint", path=str(model_path))
    outputs = {"checkpoint": str(model_path)}
    if bundle is not None:
        written, stale = write_bundle(
            bundle,
            output / BUNDLE_FOLDER,
            model.state_dict(),
            f"machine-unlearning {job.command}: weights trained on {len(train_ids)} subject(s) "
            f"({started_at})",
            kind="trained",
        )
        _warn_stale(stale, sink)
        sink.emit("artifact", kind="bundle", path=str(written))
        outputs["bundle"] = str(written)
    metrics_path = write_json(
        output / "metrics.json", metrics_document(policy, eval_roles, [evaluation])
    )
    sink.emit("artifact", kind="metrics", path=str(metrics_path))
    return {**outputs, "metrics": str(metrics_path)}


def _bundle_start(bundle: Bundle | None, command: str) -> str | None:
    if bundle is None:
        return None
    start = "its weights" if command == "train" else "a seeded initialisation of its network"
    return f"{bundle.name} {bundle.version} ({start})".strip()


def _warn_stale(stale: list[str], sink: EventSink) -> None:
    """Say which weights files of the input bundle were left out of the written one."""
    if stale:
        sink.emit(
            "warning",
            message=f"left out of the written bundle (they hold the old weights): "
            f"{', '.join(stale)}; export them again from models/model.pt if needed.",
        )
