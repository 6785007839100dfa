"""``evaluate``: score one model on every labelled subject of a cohort."""

from __future__ import annotations

from MachineUnlearningLib.commands.common import (
    emit_metrics,
    load_model_for_job,
    metrics_document,
    prepare_output,
    sample_source,
    write_predictions,
)
from MachineUnlearningLib.data.cohort import TRAINING_GROUP, discover_cohort, select_subjects
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.evaluation.predict import evaluate_model
from MachineUnlearningLib.runtime.device import resolve_device
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json
from MachineUnlearningLib.runtime.jobs import JobSpec


def evaluate_for_job(job: JobSpec, sink: EventSink, keep_predictions: bool):
    """Load the job's model and score it on every labelled subject of the cohort.

    Roles: the job's forget ids are ``forget``; subjects the checkpoint was trained on (its
    metadata) are ``retain``; every other labelled subject is ``held-out``. A bundle does not
    say which subjects it was trained on: the cohort's ``training/`` subjects are taken as its
    training set.
    """
    device = resolve_device(job.device)
    job_model = load_model_for_job(job, device, sink)
    meta = job_model.metadata
    policy = get_label_policy(meta["label_policy"])
    subjects = discover_cohort(job.cohort)
    trained_on = set(meta.get("subject_ids", {}).get("trained_on", []))
    if job_model.bundle is not None:
        trained_on = {s.subject_id for s in subjects if s.group == TRAINING_GROUP}
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
    source = sample_source(
        select_subjects(subjects, list(roles), "cohort"),
        tuple(meta["modalities"]),
        policy,
        job_model.preprocessing,
        job_model.spec,
        job_model.sampling,
    )
    sink.emit("phase", name="evaluate", detail=f"{len(roles)} subjects")
    kept = tuple(roles) if keep_predictions else ()
    evaluation = evaluate_model(
        job_model.model, source, roles, device, "evaluated", None, keep_predictions=kept
    )
    emit_metrics(sink, evaluation)
    return evaluation, source, policy, roles, job_model.label


def evaluate_checkpoint(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``evaluate``: metrics.json and predictions of one model on the cohort."""
    output = prepare_output(job)
    evaluation, source, policy, roles, _ = evaluate_for_job(job, sink, keep_predictions=True)
    outputs = write_predictions(output, "evaluated", evaluation, source, sink)
    metrics_path = write_json(
        output / "metrics.json", metrics_document(policy, roles, [evaluation])
    )
    sink.emit("artifact", kind="metrics", path=str(metrics_path))
    return {"metrics": str(metrics_path), **outputs}
