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

The stages of :func:`unlearn`, in order: 1. ``load_run``, 2. ``evaluate_before`` (the
original, the retrain-from-scratch reference, the forget subject's reference ensemble),
3. ``prepare_unlearning``, 4. ``train_with_hooks`` (evaluation hooks and the stopping rule,
which chooses the epoch), 5. ``certify`` (the audit against the subject's own references,
once), 6. ``write_outputs``, 7. ``write_deletion_record``, 8. ``write_run_report``.

The audit that decides is the one against the forget subject's own references
(``commands/references.py``, ``evaluation/reference_audit.py``; ``reference-audit.json``);
the comparison with never-seen subjects (``audit.json``) is kept as a secondary check, and
the only one when no references exist (a warning says so).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from MachineUnlearningLib.commands.common import (
    BUNDLE_FOLDER,
    UNLEARNED_FILE,
    CohortRoles,
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
from MachineUnlearningLib.commands.references import ReferenceBank, references_for_job
from MachineUnlearningLib.commands.unlearn_checks import (
    HeldOutStop,
    ReferenceStop,
    certify,
    privacy_audit,
    record_entry,
    reference_audit_markdown,
)
from MachineUnlearningLib.data.cohort import discover_cohort, select_subjects
from MachineUnlearningLib.data.labels import LabelPolicy, get_label_policy
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.evaluation.gaps import reference_gaps
from MachineUnlearningLib.evaluation.predict import Evaluation, evaluate_model
from MachineUnlearningLib.evaluation.reference_audit import split_seeds
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
from MachineUnlearningLib.strategies.base import Strategy
from MachineUnlearningLib.strategies.plan import build_plan
from MachineUnlearningLib.strategies.preparation import Prepared, prepare
from MachineUnlearningLib.strategies.targets import TargetMaker
from MachineUnlearningLib.training import distributed
from MachineUnlearningLib.training.loop import TrainingConfig, TrainingHistory, train

PAPER_EVAL_EPOCHS = (20, 50)
REFERENCE_AUDIT_FILE = "reference-audit.json"


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


@dataclass
class UnlearnRun:
    """Stage 1's result: what was asked and what was loaded, shared by every later stage."""

    job: JobSpec
    strategy: Strategy
    params: dict
    group: distributed.Distributed
    output: Path
    device: torch.device
    job_model: JobModel
    policy: LabelPolicy
    roles: CohortRoles
    subjects: list
    source: SampleSource
    started_at: datetime

    @property
    def role_of(self) -> dict[str, str]:
        return self.roles.as_mapping()

    @property
    def all_ids(self) -> tuple[str, ...]:
        return tuple(self.role_of)


@dataclass
class Before:
    """Stage 2's result: the original's evaluation and what the run compares with.

    Attributes:
        original: the original model scored on every role (rank 0 only; None elsewhere).
        reference: ``(evaluation, checkpoint)`` of the retrain-from-scratch reference, if asked.
        bank: the forget subject's reference ensemble, or None (``no_bank`` says why).
    """

    original: Evaluation | None
    reference: tuple[Evaluation, Path] | None
    bank: ReferenceBank | None
    no_bank: str


@dataclass
class Trained:
    """Stage 4's result: the model of the chosen epoch and the run's evaluations.

    Attributes:
        model: the unlearned network (rewound to the chosen epoch when the rule says so).
        history: the training loop's history.
        evaluations: every evaluation after training began, in order.
        final: the evaluation of the model that is written (the chosen epoch's).
        notes: what the stopping rule did, in plain words (the record's notes).
        selection: the reference stopping rule's choice (seeds, looks, band), or None.
    """

    model: torch.nn.Module
    history: TrainingHistory
    prepared: Prepared
    config: TrainingConfig | None
    evaluations: list[Evaluation]
    final: Evaluation | None = None
    notes: list[str] = field(default_factory=list)
    selection: dict | None = None
    bundles: dict = field(default_factory=dict)


def unlearn(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """The stages, in order (each documented below)."""
    run = load_run(job, sink)
    before = evaluate_before(run, sink)
    model, prepared, config = prepare_unlearning(run)
    trained = train_with_hooks(run, before, model, prepared, config, sink)
    if not run.group.is_main:
        return {}
    forgetting = certify(run, before, trained, sink)
    outputs, metrics, audits = write_outputs(run, before, trained, forgetting, sink)
    record = write_deletion_record(run, before, trained, forgetting, audits, sink)
    outputs["deletion_record"] = record[0]
    outputs |= write_run_report(run, before, trained, forgetting, audits, metrics, record[1], sink)
    return outputs


# --------------------------------------------------------------------------- 1. load


def load_run(job: JobSpec, sink: EventSink) -> UnlearnRun:
    """Resolve the strategy's parameters, load the model and the cohort's roles and samples."""
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
    if group.active and job.references == "auto":
        raise InvalidInputError(
            "references: 'auto' would train the reference ensemble inside a multi-process run.",
            hint="Train it first (a single-process run with --references auto) and pass "
            "--references cached.",
        )
    if job.stop_when_indistinguishable and job.references != "none":
        split_seeds(job.reference_seeds)  # fails early (exit 2) with fewer than 3 seeds
    if strategy.trains:
        group.check_batch_size(params["batch_size"])
    output = prepare_output(job) if group.is_main else Path(job.output)
    device = group.device(job.device)
    job_model = load_model_for_job(job, device, sink)
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
        job_model.spec,
        job_model.sampling,
    )
    return UnlearnRun(
        job, strategy, params, group, output, device, job_model, policy, roles, subjects,
        source, started_at,
    )  # fmt: skip


# --------------------------------------------------------------------------- 2. evaluate


def evaluate_before(run: UnlearnRun, sink: EventSink) -> Before:
    """Rank 0: score the original (epoch 0), the retrain-from-scratch reference if asked, and
    find the forget subject's reference ensemble (``--references``)."""
    if not run.group.is_main:
        return Before(None, None, None, "not rank 0")
    job = run.job
    sink.emit("phase", name="evaluate", detail="original model")
    original = evaluate_model(
        run.job_model.model, run.source, run.role_of, run.device, "original", 0,
        keep_predictions=run.all_ids,
    )  # fmt: skip
    emit_metrics(sink, original)
    reference = None
    if job.reference:
        reference = evaluate_reference(
            job, run.job_model.metadata, run.source, run.role_of, run.device, sink
        )
        emit_metrics(sink, reference[0])
    bank, no_bank = references_for_job(job, run.job_model.metadata, sink, run.subjects)
    if bank is None:
        sink.emit(
            "warning",
            message=f"no audit against retrained models: {no_bank}. Only the held-out "
            "comparison (a weaker check: does the subject look like never-seen subjects?) "
            "is reported.",
        )
    if job.stop_when_indistinguishable and bank is None:
        privacy_audit(original, "original")  # fails early (exit 2) without >= 2 held-out
    return Before(original, reference, bank, no_bank)


# --------------------------------------------------------------------------- 3. prepare


def prepare_unlearning(run: UnlearnRun) -> tuple[torch.nn.Module, Prepared, TrainingConfig | None]:
    """A copy of the original with the preset's mechanics applied, and its optimiser config."""
    model = copy.deepcopy(run.job_model.model)
    prepared = prepare(
        run.strategy,
        model,
        run.job_model.model,
        run.job_model.spec,
        run.source,
        run.roles.forget,
        run.roles.retain,
        run.params,
        run.job.seed,
        run.device,
        _frozen_prefixes(run),
    )
    config = unlearning_config(run.params, run.job.seed) if run.strategy.trains else None
    return model, prepared, config


def _frozen_prefixes(run: UnlearnRun) -> tuple[str, ...]:
    return run.job_model.spec.decoder_prefixes if run.job.fix_decoder else ()


# --------------------------------------------------------------------------- 4. train


def train_with_hooks(
    run: UnlearnRun,
    before: Before,
    model: torch.nn.Module,
    prepared: Prepared,
    config: TrainingConfig | None,
    sink: EventSink,
) -> Trained:
    """Train through ``training.train``, evaluating at the asked epochs (every epoch under the
    stopping rule) and letting the rule stop the loop; a preset that does not train is
    evaluated once as epoch 0."""
    job = run.job
    eval_at = evaluation_epochs(job, config.epochs) if config is not None else [0]
    trained = Trained(model, TrainingHistory(), prepared, config, [])
    rule = _stopping_rule(run, before, trained)

    def on_epoch_end(epoch: int) -> bool:
        if epoch not in eval_at and rule is None:
            return False
        last = epoch == eval_at[-1]
        evaluation = evaluate_model(
            model, run.source, run.role_of, run.device, "unlearned", epoch,
            with_surface=last, keep_predictions=run.all_ids if (last or rule) else (),
        )  # fmt: skip
        trained.evaluations.append(evaluation)
        emit_metrics(sink, evaluation)
        if rule is None:
            return False
        done, reason = rule.check(evaluation, model)
        if done:
            trained.notes.append(f"stopped at epoch {epoch}: {reason}")
            sink.emit("phase", name="stop", detail=trained.notes[-1])
        return done

    sink.emit(
        "phase",
        name="unlearn",
        detail=f"{run.strategy.name}{' + fix-decoder' if job.fix_decoder else ''}, "
        + (
            f"{config.epochs} epochs"
            if config is not None
            else "no training (epochs and optimiser settings do not apply); "
            "the edited model is evaluated as epoch 0"
        ),
    )
    if config is not None:
        trained.history = train(
            model,
            run.source,
            build_plan(run.strategy, run.roles.forget, run.roles.retain, run.params),
            config,
            run.device,
            sink,
            job.cancel_path,
            target_maker=TargetMaker(run.source),
            frozen_prefixes=_frozen_prefixes(run),
            on_epoch_end=on_epoch_end,
            phase="unlearn",
            teachers=prepared.teachers,
            after_step=prepared.after_step,
            head_prefixes=run.job_model.spec.decoder_prefixes,
        )
    elif run.group.is_main:
        on_epoch_end(0)
    if run.group.is_main:
        trained.final = trained.evaluations[-1]
        if rule is not None:
            rule.finish(trained, sink)
    return trained


def _stopping_rule(run: UnlearnRun, before: Before, trained: Trained):
    if not run.job.stop_when_indistinguishable or not run.group.is_main:
        return None
    return ReferenceStop(run, before) if before.bank is not None else HeldOutStop(run, before)


# --------------------------------------------------------------------------- 5. certify
# ``unlearn_checks.certify``: the audit against the forget subject's references, once.


# --------------------------------------------------------------------------- 6. write


def write_outputs(
    run: UnlearnRun, before: Before, trained: Trained, forgetting: dict, sink: EventSink
) -> tuple[dict[str, str], dict, dict]:
    """The unlearned checkpoint (and bundle), predictions, metrics.json and the audits."""
    output, policy, roles = run.output, run.policy, run.roles
    sink.emit("phase", name="write", detail=str(output))
    outputs: dict[str, str] = {}
    model_path = output / UNLEARNED_FILE
    history = trained.history
    unlearning_entry = {
        "kind": "unlearn",
        "strategy": run.strategy.name,
        "fix_decoder": run.job.fix_decoder,
        "params": run.params,
        "forgot": roles.forget,
        "epochs": history.epochs,
        "steps": history.steps,
        "seconds": round(history.seconds, 2),
        "evaluation_seconds": round(history.hook_seconds, 2),
        "device": distributed.device_label(run.device),
        "world_size": run.group.world_size,
        "seed": run.job.seed,
        "encoder_reinitialised_with_seed": run.job.seed if run.strategy.reinit_encoder else None,
        "stopped_early_at": history.stopped_early_at,
        **({"chosen_epoch": trained.final.epoch} if trained.selection else {}),
        **trained.prepared.record,
    }
    meta = run.job_model.metadata
    subject_ids = dict(meta.get("subject_ids", {}))
    subject_ids["forgotten"] = sorted(set(subject_ids.get("forgotten", [])) | set(roles.forget))
    metadata = {
        **meta,
        "subject_ids": subject_ids,
        "training_history": [*meta.get("training_history", []), unlearning_entry],
    }
    save_checkpoint(model_path, trained.model.cpu(), run.job_model.spec, metadata)
    outputs["checkpoint"] = str(model_path)
    sink.emit("artifact", kind="checkpoint", path=str(model_path))
    bundles = _write_bundle(
        run.job_model, trained.model, output, run.strategy.name, roles.forget, sink
    )
    trained.bundles = bundles
    if "output" in bundles:
        outputs["bundle"] = bundles["output"]["root"]
    outputs |= write_predictions(output, "original", before.original, run.source, sink)
    outputs |= write_predictions(output, "unlearned", trained.final, run.source, sink)
    metrics = metrics_document(
        policy,
        run.role_of,
        [before.original, *trained.evaluations],
        summary_rows(before.original, trained.evaluations),
    )
    if before.reference is not None:
        gaps = reference_gaps(trained.final, before.reference[0])
        metrics["reference"] = {
            "checkpoint": str(before.reference[1]),
            **before.reference[0].to_dict(list(policy.class_names)),
            "gaps": gaps,
        }
    outputs["metrics"] = str(write_json(output / "metrics.json", metrics))
    sink.emit("artifact", kind="metrics", path=outputs["metrics"])
    outputs["reference_audit"] = str(write_json(output / REFERENCE_AUDIT_FILE, forgetting))
    sink.emit("artifact", kind="audit", path=outputs["reference_audit"])
    audits = {}
    if len(roles.held_out) >= 2 and len(roles.retain) >= 2:
        audits = {
            "original": privacy_audit(before.original, "original").to_dict(),
            "unlearned": privacy_audit(trained.final, "unlearned").to_dict(),
        }
        if before.reference is not None:
            audits["retrained"] = privacy_audit(before.reference[0], "retrained").to_dict()
        outputs["audit"] = str(write_json(output / "audit.json", audits))
    else:
        sink.emit(
            "warning",
            message="no held-out comparison: it needs >= 2 held-out and >= 2 "
            "retain subjects (make the cohort with --held-out 3).",
        )
    return outputs, metrics, audits


# --------------------------------------------------------------------------- 7. record


def write_deletion_record(
    run: UnlearnRun,
    before: Before,
    trained: Trained,
    forgetting: dict,
    audits: dict,
    sink: EventSink,
) -> tuple[str, dict]:
    """deletion-record.json: the verdict, the references used, the margin and the looks."""
    names = list(run.policy.class_names)
    record = build_deletion_record(
        job=run.job.to_dict(),
        requested_by=run.job.requested_by,
        subject_ids=run.roles.forget,
        input_checkpoint=run.job_model.input_file,
        output_checkpoint=run.output / UNLEARNED_FILE,
        cohort_files=cohort_files(run.source),
        cohort_root=Path(run.job.cohort),
        strategy=run.strategy.name,
        strategy_params={**run.params, "fix_decoder": run.job.fix_decoder},
        metrics_before=before.original.to_dict(names)["sets"],
        metrics_after=trained.final.to_dict(names)["sets"],
        audit=audits.get("unlearned"),
        forgetting_audit=record_entry(forgetting),
        guarantee="approximate",
        started_at=run.started_at,
        finished_at=datetime.now(timezone.utc),
        notes="; ".join(trained.notes),
        bundles=trained.bundles or None,
    )
    path = str(write_record(record, run.output / "deletion-record.json"))
    sink.emit("artifact", kind="deletion-record", path=path)
    return path, record


# --------------------------------------------------------------------------- 8. report


def write_run_report(
    run: UnlearnRun,
    before: Before,
    trained: Trained,
    forgetting: dict,
    audits: dict,
    metrics: dict,
    record: dict,
    sink: EventSink,
) -> dict[str, str]:
    """report.html / report.md with the audit sections and the deletion record."""
    extra = [("Audit against retrained models", reference_audit_markdown(forgetting))]
    if audits:
        extra.append(
            (
                "Secondary check: comparison with never-seen subjects",
                privacy_audit(trained.final, "unlearned").to_markdown(),
            )
        )
    if before.reference is not None:
        extra.append(
            (
                "Retrain-from-scratch reference",
                reference_section(metrics["reference"]["gaps"], *before.reference),
            )
        )
    extra.append(("Deletion record", record_to_markdown(record)))
    return _write_report(
        run.job, run.output, metrics, run.source, run.roles, run.strategy.name, run.params,
        sink, extra, run.job_model,
    )  # fmt: skip


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
