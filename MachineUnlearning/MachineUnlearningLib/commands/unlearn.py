"""The ``unlearn`` job: original model -> strategy -> unlearned model, metrics, report.

Order of work: evaluate the original model (epoch 0), apply the preset's declared mechanics
(``strategies.preparation``: saliency mask, surgery, teachers), train with the preset's plan
and targets through ``training.train`` (evaluating at the asked epochs), then write every
output atomically. A preset that does not train (``Strategy.trains`` False, e.g. ``ssd``) is
evaluated once after its surgery, as the ``unlearned`` model at epoch 0 (epochs count training
epochs). Nothing is written under its final name before training has finished, so a cancelled
run leaves only ``job.json``. A run from a MONAI bundle (``--bundle``) also writes the unlearned
model back as a bundle (``OUTPUT/bundle``; the input bundle is only read), and its deletion
record names and hashes both bundles.

Under torchrun every process prepares the strategy and trains (``training/distributed.py``);
rank 0 alone evaluates (the original, the asked epochs, the stopping rule) and writes.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

from MachineUnlearningLib.commands.common import (
    BUNDLE_FOLDER,
    UNLEARNED_FILE,
    JobModel,
    emit_metrics,
    load_model_for_job,
    metrics_document,
    prepare_output,
    resolve_roles,
    sample_source,
    summary_rows,
    write_predictions,
)
from MachineUnlearningLib.commands.reference import evaluate_reference, reference_section
from MachineUnlearningLib.data.cohort import discover_cohort, select_subjects
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.evaluation.audit import AuditReport, audit, stopping_rule_satisfied
from MachineUnlearningLib.evaluation.gaps import reference_gaps
from MachineUnlearningLib.evaluation.predict import Evaluation, evaluate_model
from MachineUnlearningLib.model.bundle_writer import write_bundle
from MachineUnlearningLib.model.checkpoint import save_checkpoint
from MachineUnlearningLib.outputs.record import (
    build_deletion_record,
    record_to_markdown,
    write_record,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json
from MachineUnlearningLib.runtime.jobs import JobSpec
from MachineUnlearningLib.strategies import get_strategy
from MachineUnlearningLib.strategies.plan import build_plan
from MachineUnlearningLib.strategies.preparation import prepare
from MachineUnlearningLib.strategies.targets import TargetMaker
from MachineUnlearningLib.training import distributed
from MachineUnlearningLib.training.loop import TrainingConfig, TrainingHistory, train

PAPER_EVAL_EPOCHS = (20, 50)


def evaluation_epochs(job: JobSpec, epochs: int) -> list[int]:
    """The epochs to evaluate at: the job's (default the paper's 20 and 50) up to ``epochs``,
    always including the last one."""
    asked = job.eval_epochs if job.eval_epochs is not None else list(PAPER_EVAL_EPOCHS)
    return sorted({e for e in asked if e <= epochs} | {epochs})


def unlearning_config(params: dict, seed: int) -> TrainingConfig:
    """The strategy's optimiser: constant learning rate, same for head and body.

    A step-budget preset (a ``steps`` parameter, ``Strategy.budget``) gives one batch per loop
    epoch, so its ``steps`` become the loop's epochs; the paper's presets keep ``epochs``.
    """
    return TrainingConfig(
        epochs=params["steps"] if "steps" in params else params["epochs"],
        optimizer=params["optimizer"],
        learning_rate=params["learning_rate"],
        head_lr_multiplier=1.0,
        momentum=params["momentum"],
        weight_decay=params["weight_decay"],
        schedule="constant",
        batch_size=params["batch_size"],
        loss="ce",
        grad_clip_norm=params["grad_clip_norm"],
        seed=seed,
        kl_weight=params.get("kl_weight", 1.0),
        kl_temperature=params.get("temperature", 1.0),
        batchnorm=params["batchnorm"],
    )


def unlearn(job: JobSpec, sink: EventSink) -> dict[str, str]:
    started_at = datetime.now(timezone.utc)
    strategy = get_strategy(job.strategy)
    given = dict(job.strategy_params)
    if job.epochs is not None and strategy.trains:
        given["epochs"] = job.epochs
    if job.learning_rate is not None and strategy.trains:
        given["learning_rate"] = job.learning_rate
    params = strategy.resolve(given)
    group = distributed.current()
    if group.active and job.reference == "auto":
        raise InvalidInputError(
            "reference: 'auto' would retrain inside a multi-process run.",
            hint="Retrain first (torchrun ... retrain --forget ...) and pass --reference PATH.",
        )
    if strategy.trains:
        group.check_batch_size(params["batch_size"])
    output = prepare_output(job) if group.is_main else Path(job.output)
    device = group.device(job.device)
    job_model = load_model_for_job(job, device, sink)
    spec = job_model.spec
    meta = job_model.metadata
    policy = get_label_policy(meta["label_policy"])
    subjects = discover_cohort(job.cohort)
    roles = resolve_roles(subjects, job)
    role_of = roles.as_mapping()
    sink.emit(
        "phase",
        name="load",
        detail=f"{len(role_of)} subjects: forget "
        f"{', '.join(roles.forget)}; {len(roles.retain)} retain; "
        f"{len(roles.held_out)} held-out",
    )
    source = sample_source(
        select_subjects(subjects, list(role_of), "cohort"),
        tuple(meta["modalities"]),
        policy,
        job_model.preprocessing,
        spec,
    )
    all_ids = tuple(role_of)

    original = None  # rank 0 alone evaluates
    if group.is_main:
        sink.emit("phase", name="evaluate", detail="original model")
        original = evaluate_model(
            job_model.model, source, role_of, device, "original", 0, keep_predictions=all_ids
        )
        emit_metrics(sink, original)
    reference = None  # (evaluation, checkpoint path) of the retrain-from-scratch reference
    if job.reference and group.is_main:
        reference = evaluate_reference(job, meta, source, role_of, device, sink)
        emit_metrics(sink, reference[0])

    model = copy.deepcopy(job_model.model)
    frozen_prefixes = spec.decoder_prefixes if job.fix_decoder else ()
    prepared = prepare(
        strategy,
        model,
        job_model.model,
        spec,
        source,
        roles.forget,
        roles.retain,
        params,
        job.seed,
        device,
        frozen_prefixes,
    )
    config = unlearning_config(params, job.seed) if strategy.trains else None
    eval_at = evaluation_epochs(job, config.epochs) if config is not None else [0]
    evaluations: list[Evaluation] = []

    stop_rule = job.stop_when_indistinguishable
    if stop_rule and group.is_main:
        privacy_audit(original, "original")  # fails early (exit 2) without >= 2 held-out
    stop_reason: list[str] = []

    def on_epoch_end(epoch: int) -> bool:
        if epoch not in eval_at and not stop_rule:
            return False
        last = epoch == eval_at[-1]
        evaluation = evaluate_model(
            model,
            source,
            role_of,
            device,
            "unlearned",
            epoch,
            with_surface=last,
            keep_predictions=all_ids if (last or stop_rule) else (),
        )
        evaluations.append(evaluation)
        emit_metrics(sink, evaluation)
        if not stop_rule:
            return False
        report = privacy_audit(evaluation, f"unlearned, epoch {epoch}")
        done, reason = stopping_rule_satisfied(
            report.forget_verdicts,
            evaluation.sets()["retain"]["dice"],
            original.sets()["retain"]["dice"],
            tolerance=job.stop_retain_tolerance,
        )
        if done:
            stop_reason.append(f"stopped at epoch {epoch}: {reason}")
            sink.emit("phase", name="stop", detail=stop_reason[-1])
        return done

    sink.emit(
        "phase",
        name="unlearn",
        detail=f"{strategy.name}{' + fix-decoder' if job.fix_decoder else ''}, "
        + (
            f"{config.epochs} epochs"
            if config is not None
            else "no training (epochs and optimiser settings do not apply); "
            "the edited model is evaluated as epoch 0"
        ),
    )
    if config is not None:
        history = train(
            model,
            source,
            build_plan(strategy, roles.forget, roles.retain, params),
            config,
            device,
            sink,
            job.cancel_path,
            target_maker=TargetMaker(source),
            frozen_prefixes=frozen_prefixes,
            on_epoch_end=on_epoch_end,
            phase="unlearn",
            teachers=prepared.teachers,
            after_step=prepared.after_step,
            head_prefixes=spec.decoder_prefixes,
        )
    else:
        history = TrainingHistory()
        if group.is_main:
            on_epoch_end(0)
    if not group.is_main:
        return {}

    sink.emit("phase", name="write", detail=str(output))
    outputs: dict[str, str] = {}
    model_path = output / UNLEARNED_FILE
    if stop_rule and not stop_reason:
        sink.emit(
            "warning",
            message="the stopping rule was never met; the model of the last "
            "epoch is written (never the lowest forget Dice).",
        )
    unlearning_entry = {
        "kind": "unlearn",
        "strategy": strategy.name,
        "fix_decoder": job.fix_decoder,
        "params": params,
        "forgot": roles.forget,
        "epochs": history.epochs,
        "steps": history.steps,
        "seconds": round(history.seconds, 2),
        "device": distributed.device_label(device),
        "world_size": group.world_size,
        "seed": job.seed,
        "encoder_reinitialised_with_seed": job.seed if strategy.reinit_encoder else None,
        "stopped_early_at": history.stopped_early_at,
        **prepared.record,
    }
    subject_ids = dict(meta.get("subject_ids", {}))
    subject_ids["forgotten"] = sorted(set(subject_ids.get("forgotten", [])) | set(roles.forget))
    metadata = {
        **meta,
        "subject_ids": subject_ids,
        "training_history": [*meta.get("training_history", []), unlearning_entry],
    }
    save_checkpoint(model_path, model.cpu(), spec, metadata)
    outputs["checkpoint"] = str(model_path)
    sink.emit("artifact", kind="checkpoint", path=str(model_path))
    bundles = _write_bundle(job_model, model, output, strategy.name, roles.forget, sink)
    if "output" in bundles:
        outputs["bundle"] = bundles["output"]["root"]
    outputs |= write_predictions(output, "original", original, source, sink)
    outputs |= write_predictions(output, "unlearned", evaluations[-1], source, sink)
    metrics = metrics_document(
        policy, role_of, [original, *evaluations], summary_rows(original, evaluations)
    )
    if reference is not None:
        gaps = reference_gaps(evaluations[-1], reference[0])
        metrics["reference"] = {
            "checkpoint": str(reference[1]),
            **reference[0].to_dict(list(policy.class_names)),
            "gaps": gaps,
        }
    outputs["metrics"] = str(write_json(output / "metrics.json", metrics))
    sink.emit("artifact", kind="metrics", path=outputs["metrics"])
    audits = {}
    if len(roles.held_out) >= 2 and len(roles.retain) >= 2:
        audits = {
            "original": privacy_audit(original, "original").to_dict(),
            "unlearned": privacy_audit(evaluations[-1], "unlearned").to_dict(),
        }
        if reference is not None:
            audits["retrained"] = privacy_audit(reference[0], "retrained").to_dict()
        outputs["audit"] = str(write_json(output / "audit.json", audits))
    else:
        sink.emit(
            "warning",
            message="no privacy audit: it needs >= 2 held-out and >= 2 "
            "retain subjects (make the cohort with --held-out 3).",
        )
    record = build_deletion_record(
        job=job.to_dict(),
        requested_by=job.requested_by,
        subject_ids=roles.forget,
        input_checkpoint=job_model.input_file,
        output_checkpoint=model_path,
        cohort_files=cohort_files(source),
        cohort_root=Path(job.cohort),
        strategy=strategy.name,
        strategy_params={**params, "fix_decoder": job.fix_decoder},
        metrics_before=original.to_dict(list(policy.class_names))["sets"],
        metrics_after=evaluations[-1].to_dict(list(policy.class_names))["sets"],
        audit=audits.get("unlearned"),
        guarantee="approximate",
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        notes="; ".join(stop_reason),
        bundles=bundles or None,
    )
    outputs["deletion_record"] = str(write_record(record, output / "deletion-record.json"))
    sink.emit("artifact", kind="deletion-record", path=outputs["deletion_record"])
    extra = [("Deletion record", record_to_markdown(record))]
    if reference is not None:
        extra.insert(
            0,
            (
                "Retrain-from-scratch reference",
                reference_section(metrics["reference"]["gaps"], *reference),
            ),
        )
    if audits:
        extra.insert(
            0,
            (
                "Privacy audit (membership inference)",
                privacy_audit(evaluations[-1], "unlearned").to_markdown(),
            ),
        )
    outputs |= _write_report(
        job, output, metrics, source, roles, strategy.name, params, sink, extra, job_model
    )
    return outputs


def _write_bundle(
    job_model: JobModel, model, output: Path, strategy: str, forgot: list[str], sink: EventSink
) -> dict[str, dict]:
    """For a --bundle run: the unlearned bundle beside the checkpoint; the record's entries."""
    bundle = job_model.bundle
    if bundle is None:
        return {}
    change = (
        f"machine-unlearning: {len(forgot)} subject(s) unlearned with {strategy} "
        f"({datetime.now(timezone.utc).isoformat(timespec='seconds')}); network and "
        "preprocessing unchanged, see the run's deletion record"
    )
    written, stale = write_bundle(bundle, output / BUNDLE_FOLDER, model.state_dict(), change)
    if stale:
        sink.emit(
            "warning",
            message=f"left out of the unlearned bundle (they hold the original weights): "
            f"{', '.join(stale)}; export them again from its models/model.pt if needed.",
        )
    sink.emit("artifact", kind="bundle", path=str(written))
    version = json.loads((written / "configs" / "metadata.json").read_text()).get("version", "")
    return {
        "input": {"name": bundle.name, "version": bundle.version, "root": str(bundle.root)},
        "output": {
            "name": bundle.name,
            "version": str(version),
            "root": str(written.resolve()),
            "left_out": stale,
        },
    }


def privacy_audit(evaluation: Evaluation, label: str) -> AuditReport:
    """Membership audit of one evaluation (members = retain, non-members = held-out)."""
    return audit(evaluation.signals, feature="loss", model_label=label)


def cohort_files(source: SampleSource) -> list[Path]:
    """Every data file the run read (images of the used modalities and label maps)."""
    files = []
    for subject in source.subjects.values():
        files += [subject.images[m] for m in source.modalities]
        if subject.label is not None:
            files.append(subject.label)
    return files


def _write_report(
    job,
    output: Path,
    metrics: dict,
    source: SampleSource,
    roles,
    strategy_name,
    params,
    sink: EventSink,
    extra_sections,
    job_model: JobModel,
) -> dict[str, str]:
    from MachineUnlearningLib.outputs.report import OverlayCase, write_report

    shown = roles.forget[:1] + roles.retain[:1]
    modality = "reg_T1" if "reg_T1" in source.subjects[shown[0]].images else "FLAIR"
    cases = [
        OverlayCase(
            subject_id=i,
            role="forget" if i in roles.forget else "retain",
            image_path=source.subjects[i].images[modality],
            truth_path=source.subjects[i].label,
            original_prediction=output / "predictions" / "original" / f"{i}.nii.gz",
            unlearned_prediction=output / "predictions" / "unlearned" / f"{i}.nii.gz",
        )
        for i in shown
    ]
    settings = {
        "strategy": strategy_name,
        "fix_decoder": job.fix_decoder,
        **params,
        "seed": job.seed,
        "device": job.device,
        "checkpoint": job.checkpoint,
        **({"bundle": job_model.bundle.describe()} if job_model.bundle is not None else {}),
        "cohort": job.cohort,
        "forget_ids": roles.forget,
        "label_policy": metrics["label_policy"],
    }
    written = write_report(
        output, metrics, settings, cases, metrics["label_policy"], extra_sections=extra_sections
    )
    sink.emit("artifact", kind="report", path=str(written["html"]))
    return {"report": str(written["html"]), "report_md": str(written["markdown"])}
