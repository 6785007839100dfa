"""What every job command shares: roles, the output folder, the job's model, metrics output.

The job's model is a project checkpoint (``--checkpoint``) or a MONAI bundle (``--bundle``);
either way the commands see a :class:`JobModel`: the network, its adapter spec, the metadata a
checkpoint would carry (label policy, modalities, preprocessing) and, for a bundle, the bundle.

The command modules (``train``, ``evaluate``, ``audit``, ``unlearn``, ``reference``, ``demo``)
use only this module and the layers below ``commands/``; no command imports another's module
except through the function it documents (``retrains`` trains through ``train``, ``reference``
through ``retrains``, ``references`` through ``retrains`` and ``reference.original_recipe``;
``unlearn`` and ``audit`` use ``references``), so there is no import circle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from MachineUnlearningLib.data.cohort import (
    HELD_OUT_GROUP,
    TRAINING_GROUP,
    Subject,
    select_subjects,
)
from MachineUnlearningLib.data.labels import LabelPolicy
from MachineUnlearningLib.data.patches import FIELDS as SAMPLING_KEYS
from MachineUnlearningLib.data.patches import Sampling
from MachineUnlearningLib.data.preprocessing import Preprocessing
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.data.transform_chain import TransformChain, preprocessing_from_dict
from MachineUnlearningLib.data.volumes import write_label_map
from MachineUnlearningLib.evaluation.metrics import paper_summary
from MachineUnlearningLib.evaluation.predict import Evaluation
from MachineUnlearningLib.model.adapters import ModelSpec
from MachineUnlearningLib.model.bundle import Bundle, read_bundle
from MachineUnlearningLib.model.checkpoint import load_checkpoint
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import folder_hashes, write_json
from MachineUnlearningLib.runtime.jobs import JobSpec

METRICS_SCHEMA_VERSION = 1
MODEL_FILE = "model.pt"
UNLEARNED_FILE = "unlearned.pt"
BUNDLE_FOLDER = "bundle"
FINAL_OUTPUTS = (MODEL_FILE, UNLEARNED_FILE, "metrics.json", BUNDLE_FOLDER)
# The settings a --bundle job reads from ``config``: which cohort data feed the network, and
# how often a training patch is centred on foreground (a bundle's inference config, the one
# the engine reads, does not say).
BUNDLE_SETTINGS = ("label_policy", "modalities", "positive_fraction")
# The sampling settings a bundle's own inferer fixes (``model/bundle.py``).
BUNDLE_SAMPLING_FIXED = tuple(k for k in SAMPLING_KEYS if k not in BUNDLE_SETTINGS)


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


@dataclass(frozen=True)
class JobModel:
    """The model a job starts from, however it was given.

    Attributes:
        model: the network on the job's device, eval mode.
        spec: its adapter and constructor arguments.
        metadata: label_policy, modalities, preprocessing (a dict), subject_ids,
            training_history and, for a bundle, ``bundle`` (what it is and its file hashes).
        preprocessing: the engine's :class:`Preprocessing` or a bundle's transform chain.
        bundle: the MONAI bundle, for ``--bundle`` jobs; else None.
        sampling: whole volumes, or patches with sliding-window inference (how it was
            trained; a checkpoint's ``sampling`` metadata or a bundle's inferer).
        input_file: the weights file read (the checkpoint, or the bundle's models/model.pt).
        label: a short name for reports ("model.pt", "bundle 'spleen' 0.2.0").
    """

    model: torch.nn.Module
    spec: ModelSpec
    metadata: dict
    preprocessing: Preprocessing | TransformChain
    bundle: Bundle | None
    input_file: Path
    label: str
    sampling: Sampling = Sampling()


def load_model_for_job(job: JobSpec, device: torch.device, sink: EventSink) -> JobModel:
    """The job's checkpoint or bundle, with the preprocessing it was trained with."""
    if job.bundle:
        return _bundle_model(job, device, sink)
    loaded = load_checkpoint(job.checkpoint, device=device)
    meta = loaded.metadata or {}
    missing = [k for k in ("label_policy", "modalities", "preprocessing") if k not in meta]
    if missing:
        raise InvalidInputError(
            f"checkpoint: {job.checkpoint} lacks {missing} (it is not a model this project "
            "trained, so its preprocessing is unknown).",
            hint="Fine-tune it first with 'machine-unlearning train --checkpoint FILE'.",
        )
    return JobModel(
        model=loaded.model,
        spec=loaded.spec,
        metadata=meta,
        preprocessing=preprocessing_from_dict(meta["preprocessing"]),
        bundle=None,
        input_file=Path(job.checkpoint),
        label=Path(job.checkpoint).name,
        sampling=Sampling.from_dict(meta.get("sampling")),
    )


def _bundle_model(job: JobSpec, device: torch.device, sink: EventSink) -> JobModel:
    unused = sorted(set(job.config) - set(BUNDLE_SETTINGS))
    if unused:
        raise InvalidInputError(
            f"config: {unused} do not apply to a bundle's model (its network and "
            "preprocessing are the bundle's).",
            hint=f"With --bundle only {', '.join(BUNDLE_SETTINGS)} may be set.",
        )
    bundle = read_bundle(job.bundle)
    policy = bundle_policy(bundle, job.config, sink)
    modalities = bundle.modalities(job.config.get("modalities"))
    model = bundle.load_network(device)
    sampling = bundle_sampling(bundle, job.config)
    metadata = {
        "label_policy": policy.name,
        "modalities": list(modalities),
        "preprocessing": bundle.chain.to_dict(),
        "bundle": bundle_metadata(bundle),
        "subject_ids": {},
        "training_history": [],
    }
    if sampling.patches:
        metadata["sampling"] = sampling.to_dict()
    sink.emit(
        "phase",
        name="load",
        detail=f"{bundle.describe()}; {bundle.chain.describe()}; {sampling.describe()}",
    )
    return JobModel(
        model, bundle.spec, metadata, bundle.chain, bundle, bundle.weights, bundle.name, sampling
    )


def bundle_sampling(bundle: Bundle, config: dict[str, Any]) -> Sampling:
    """The bundle's sampling (its inferer's), with the job's ``positive_fraction`` if given."""
    if "positive_fraction" not in config:
        return bundle.sampling
    return dataclasses.replace(bundle.sampling, positive_fraction=config["positive_fraction"])


def bundle_policy(bundle: Bundle, config: dict[str, Any], sink: EventSink) -> LabelPolicy:
    """The label policy scoring the bundle's outputs; a warning when its names differ."""
    policy = bundle.label_policy(config.get("label_policy"))
    for note in bundle.notes:
        sink.emit("warning", message=note)
    named = [n for n in bundle.label_names if n]
    if named and [n.lower() for n in bundle.label_names] != [n.lower() for n in policy.class_names]:
        sink.emit(
            "warning",
            message=f"the bundle's output channels {list(bundle.label_names)} are scored as the "
            f"cohort's {policy.name} classes {list(policy.class_names)}, channel by channel.",
        )
    return policy


def bundle_metadata(bundle: Bundle) -> dict[str, Any]:
    """What a checkpoint records about the bundle it came from (its files' hashes included)."""
    return {**bundle.record(), "files": folder_hashes(bundle.root)}


def sample_source(
    subjects: list[Subject],
    modalities: tuple[str, ...],
    policy: LabelPolicy,
    preprocessing: Preprocessing | TransformChain,
    spec: ModelSpec,
    sampling: Sampling | None = None,
) -> SampleSource:
    """The samples of ``subjects`` as the network ``spec`` needs them (its logit grid), whole
    or as patches / windows (``sampling``; None = whole volumes)."""
    output_shape = (
        spec.output_shape(preprocessing.input_size)
        if isinstance(preprocessing, Preprocessing)
        else None
    )
    return SampleSource(
        subjects, modalities, policy, preprocessing, output_shape=output_shape, sampling=sampling
    )


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
