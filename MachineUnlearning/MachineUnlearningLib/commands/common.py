"""What every job command shares: roles, the output folder, the job's model, metrics output.

The command modules (``train``, ``evaluate``, ``audit``, ``unlearn``, ``reference``, ``demo``)
use only this module and the layers below ``commands/``; no command imports another's module
except through the function it documents (``retrains`` trains through ``train``, ``reference``
through ``retrains``), so there is no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from MachineUnlearningLib.data.cohort import (
    HELD_OUT_GROUP,
    TRAINING_GROUP,
    Subject,
    select_subjects,
)
from MachineUnlearningLib.data.preprocessing import Preprocessing
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.data.volumes import write_label_map
from MachineUnlearningLib.evaluation.metrics import paper_summary
from MachineUnlearningLib.evaluation.predict import Evaluation
from MachineUnlearningLib.model.checkpoint import LoadedModel, load_checkpoint
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json
from MachineUnlearningLib.runtime.jobs import JobSpec

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
