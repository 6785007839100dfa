"""Runs one JobSpec: load -> (train | unlearn) -> evaluate -> write outputs.

The worker knows nothing about Slicer or the terminal: it reports through an EventSink and
raises MachineUnlearningError subclasses, which the CLI turns into events and exit codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from MachineUnlearningLib.data.cohort import (
    HELD_OUT_GROUP,
    TRAINING_GROUP,
    Subject,
    discover_cohort,
    select_subjects,
)
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.preprocessing import Preprocessing
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.device import resolve_device
from MachineUnlearningLib.errors import InvalidInputError
from MachineUnlearningLib.evaluation import Evaluation, evaluate_model
from MachineUnlearningLib.events import EventSink
from MachineUnlearningLib.files import write_json, write_label_map, write_text
from MachineUnlearningLib.jobs import JobSpec
from MachineUnlearningLib.metrics import paper_summary
from MachineUnlearningLib.model.checkpoint import (
    LoadedModel,
    load_checkpoint,
    load_pretrained_backbone,
    save_checkpoint,
)
from MachineUnlearningLib.model.resnet import MedicalNetSegmentation
from MachineUnlearningLib.recipes import Recipe, resolve_recipe
from MachineUnlearningLib.training import Step, train

METRICS_SCHEMA_VERSION = 1
MODEL_FILE = "model.pt"
UNLEARNED_FILE = "unlearned.pt"
FINAL_OUTPUTS = (MODEL_FILE, UNLEARNED_FILE, "metrics.json")


@dataclass(frozen=True)
class CohortRoles:
    """Which subject plays which role in a run (ids in cohort order)."""

    forget: list[str]
    retain: list[str]
    held_out: list[str]

    def as_mapping(self) -> dict[str, str]:
        roles = {i: "forget" for i in self.forget}
        roles |= {i: "retain" for i in self.retain}
        roles |= {i: "held-out" for i in self.held_out}
        return roles


def resolve_roles(subjects: list[Subject], job: JobSpec) -> CohortRoles:
    """Forget / retain / held-out ids from the job, checked against the cohort."""
    training = [s.subject_id for s in subjects if s.group == TRAINING_GROUP]
    held = [s.subject_id for s in subjects if s.group == HELD_OUT_GROUP]
    select_subjects(subjects, job.forget_ids, "forget_ids")
    if job.retain_ids is None:
        retain = [i for i in training if i not in job.forget_ids]
    else:
        retain = [s.subject_id for s in select_subjects(subjects, job.retain_ids, "retain_ids")]
    if job.held_out_ids is None:
        held_out = [i for i in held if i not in job.forget_ids and i not in retain]
    else:
        held_out = [
            s.subject_id for s in select_subjects(subjects, job.held_out_ids, "held_out_ids")
        ]
        clash = set(held_out) & (set(retain) | set(job.forget_ids))
        if clash:
            raise InvalidInputError(
                f"held_out_ids: {sorted(clash)} are also forget or retain subjects."
            )
    if job.command != "train" and not retain:
        raise InvalidInputError(
            "retain_ids: no retain subject is left once the forget subjects are removed.",
            hint="Keep at least one training subject.",
        )
    return CohortRoles(forget=list(job.forget_ids), retain=retain, held_out=held_out)


def prepare_output(job: JobSpec, overwrite: bool = False) -> Path:
    """Create the output folder; refuse one that already holds a run's final results."""
    output = Path(job.output)
    output.mkdir(parents=True, exist_ok=True)
    taken = [name for name in FINAL_OUTPUTS if (output / name).exists()]
    if taken and not overwrite:
        raise InvalidInputError(
            f"output: {output} already holds results of another run ({', '.join(taken)}).",
            hint="Choose a new --output folder (results are never overwritten).",
        )
    if job.cancel_path.exists():
        job.cancel_path.unlink()
    write_json(output / "job.json", job.to_dict())
    return output


def run_job(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """Execute ``job``; returns the output files by name."""
    if job.command in ("train", "retrain"):
        return train_baseline(job, sink)
    if job.command == "evaluate":
        return evaluate_checkpoint(job, sink)
    if job.command == "audit":
        return audit_checkpoint(job, sink)
    from MachineUnlearningLib.unlearn import unlearn

    return unlearn(job, sink)


# --- train / retrain --------------------------------------------------------------------------


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
    import dataclasses

    recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, **overrides))
    output = prepare_output(job)
    device = resolve_device(job.device)
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
                "device": str(device),
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


# --- evaluate ---------------------------------------------------------------------------------


def load_model_for_job(job: JobSpec, device: torch.device) -> tuple[LoadedModel, Preprocessing]:
    """The job's checkpoint and the preprocessing it was trained with."""
    loaded = load_checkpoint(job.checkpoint, device=device)
    meta = loaded.metadata or {}
    missing = [k for k in ("label_policy", "modalities", "preprocessing") if k not in meta]
    if missing:
        raise InvalidInputError(
            f"checkpoint: {job.checkpoint} lacks {missing} (it is not a model this project "
            "trained, so its preprocessing is unknown).",
            hint="Fine-tune it first with 'machine-unlearning train --checkpoint FILE'.",
        )
    return loaded, Preprocessing.from_dict(meta["preprocessing"])


def _evaluate_for_job(job: JobSpec, sink: EventSink, keep_predictions: bool):
    """Load the job's model and score it on every labelled subject of the cohort.

    Roles: the job's forget ids are ``forget``; subjects the checkpoint was trained on (its
    metadata) are ``retain``; every other labelled subject is ``held-out``.
    """
    device = resolve_device(job.device)
    loaded, preprocessing = load_model_for_job(job, device)
    meta = loaded.metadata
    policy = get_label_policy(meta["label_policy"])
    subjects = discover_cohort(job.cohort)
    trained_on = set(meta.get("subject_ids", {}).get("trained_on", []))
    roles = {
        s.subject_id: (
            "forget"
            if s.subject_id in job.forget_ids
            else "retain"
            if s.subject_id in trained_on
            else "held-out"
        )
        for s in subjects
        if s.label is not None
    }
    source = SampleSource(
        select_subjects(subjects, list(roles), "cohort"),
        tuple(meta["modalities"]),
        policy,
        preprocessing,
    )
    sink.emit("phase", name="evaluate", detail=f"{len(roles)} subjects")
    kept = tuple(roles) if keep_predictions else ()
    evaluation = evaluate_model(
        loaded.model, source, roles, device, "evaluated", None, keep_predictions=kept
    )
    emit_metrics(sink, evaluation)
    return evaluation, source, policy, roles


def evaluate_checkpoint(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``evaluate``: metrics.json and predictions of one model on the cohort."""
    output = prepare_output(job)
    evaluation, source, policy, roles = _evaluate_for_job(job, sink, keep_predictions=True)
    outputs = write_predictions(output, "evaluated", evaluation, source, sink)
    metrics_path = write_json(
        output / "metrics.json", metrics_document(policy, roles, [evaluation])
    )
    sink.emit("artifact", kind="metrics", path=str(metrics_path))
    return {"metrics": str(metrics_path), **outputs}


def audit_checkpoint(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``audit``: membership-inference audit of one model (audit.json + audit.md)."""
    from MachineUnlearningLib.audit import audit

    output = prepare_output(job)
    evaluation, _, _, _ = _evaluate_for_job(job, sink, keep_predictions=False)
    report = audit(evaluation.signals, feature="loss", model_label=Path(job.checkpoint).name)
    path = write_json(output / "audit.json", report.to_dict())
    write_text(output / "audit.md", report.to_markdown())
    sink.emit("phase", name="audit", detail=f"verdict: {report.overall}")
    sink.emit("artifact", kind="audit", path=str(path))
    return {"audit": str(path), "audit_md": str(output / "audit.md")}


# --- shared output helpers --------------------------------------------------------------------


def emit_metrics(sink: EventSink, evaluation: Evaluation) -> None:
    sets = {
        role: {"dice": v["dice"], "mae": v["mae"], "n": v["n"]}
        for role, v in evaluation.sets().items()
    }
    sink.emit("metrics", model=evaluation.model, epoch=evaluation.epoch, sets=sets)


def write_predictions(
    output: Path, model_name: str, evaluation: Evaluation, source: SampleSource, sink: EventSink
) -> dict[str, str]:
    """``predictions/<model_name>/<id>.nii.gz`` for every kept prediction."""
    written = {}
    for subject_id, labels in evaluation.predictions.items():
        path = output / "predictions" / model_name / f"{subject_id}.nii.gz"
        write_label_map(path, labels, source.volumes[subject_id].affine)
        written[f"prediction:{model_name}:{subject_id}"] = str(path)
    if written:
        sink.emit("artifact", kind="predictions", path=str(output / "predictions" / model_name))
    return written


def metrics_document(
    policy, roles: dict[str, str], evaluations: list[Evaluation], summary: list[dict] | None = None
) -> dict:
    """metrics.json (schema in docs/contracts.md)."""
    names = list(policy.class_names)
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "label_policy": policy.name,
        "class_names": names,
        "class_colours": [list(c) for c in policy.class_colours],
        "mae_definition": "probabilistic",
        "dice_grid": "original",
        "roles": dict(roles),
        "evaluations": [e.to_dict(names) for e in evaluations],
        "summary": summary or [],
    }


def summary_rows(original: Evaluation, later: list[Evaluation]) -> list[dict]:
    before = original.sets()
    return [{"epoch": e.epoch, **paper_summary(before, e.sets())} for e in later]
