"""The retrain-from-scratch reference: the exact-unlearning gold standard every run compares with.

The gaps to it are computed by ``evaluation.gaps``.

``retrained_reference`` returns a model trained with the original model's recipe and seed on the
retain subjects only, from the retrain cache (``commands/retrains.py``: keyed by the recipe,
the seed and the content of the subjects trained on; ``MACHINE_UNLEARNING_CACHE``, default
``~/.cache/machine-unlearning``; delete it to free the space). ``reference_gaps`` compares an
unlearned model's evaluation with the reference's: per-subject and per-set absolute Dice and
MAE gaps and their mean over the sets (SalUn's "Avg. Gap", arXiv 2310.12508).
"""

from __future__ import annotations

from pathlib import Path

from MachineUnlearningLib.commands.common import resolve_roles
from MachineUnlearningLib.commands.retrains import (
    CACHE_ENV,
    RetrainRequest,
    cache_root,
    cached_model,
)
from MachineUnlearningLib.data.cohort import discover_cohort
from MachineUnlearningLib.evaluation.predict import Evaluation, evaluate_model
from MachineUnlearningLib.model.adapters.overrides import model_overrides
from MachineUnlearningLib.model.checkpoint import load_checkpoint
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.jobs import JobSpec

__all__ = [
    "CACHE_ENV",
    "cache_root",
    "evaluate_reference",
    "original_recipe",
    "recipe_overrides",
    "reference_section",
    "retrained_reference",
]


def recipe_overrides(recipe: dict) -> dict:
    """Flat ``config`` overrides that rebuild a recipe stored in a checkpoint's metadata."""
    flat = {
        "recipe": recipe["name"],
        "label_policy": recipe["label_policy"],
        "modalities": list(recipe["modalities"]),
    }
    flat |= model_overrides(recipe["model"])
    flat |= recipe["preprocessing"]
    flat |= recipe.get("sampling") or {}  # absent: whole volumes
    flat |= {k: v for k, v in recipe["training"].items() if k != "seed"}
    return flat


def retrained_reference(job: JobSpec, metadata: dict, sink: EventSink) -> Path:
    """Path of the cached retrained model for ``job``'s forget set; trains it when absent."""
    config, seed = original_recipe(job, metadata)
    subjects = discover_cohort(job.cohort)
    roles = resolve_roles(subjects, job)
    request = RetrainRequest(
        cohort=job.cohort,
        config=config,
        trained_on=tuple(roles.retain),
        seed=seed,
        left_out=tuple(job.forget_ids),
    )
    cached = cached_model(request, sink, job.device, str(job.cancel_path), subjects)
    if cached.reused:
        sink.emit(
            "phase", name="reference", detail=f"reusing the retrained reference {cached.path}"
        )
    return cached.path


def original_recipe(job: JobSpec, metadata: dict) -> tuple[dict, int]:
    """``(flat config, seed)`` the original model was trained with, from its metadata.

    Raises InvalidInputError (naming the fix) for a bundle, a checkpoint without its recipe
    or one that started from a pretrained backbone file (which it does not contain).
    """
    if metadata.get("bundle"):
        raise InvalidInputError(
            "reference: the model came from a MONAI bundle, whose training recipe the engine "
            "does not know.",
            hint="Run 'machine-unlearning retrain --bundle DIR --forget ...' and pass its model.",
        )
    history = metadata.get("training_history") or [{}]
    baseline = history[0]
    if "recipe" not in metadata or baseline.get("kind") != "train":
        raise InvalidInputError(
            f"reference: {job.checkpoint} does not record the recipe it was trained with.",
            hint="Train the reference yourself ('machine-unlearning retrain') and pass its path.",
        )
    if baseline.get("pretrained_backbone"):
        raise InvalidInputError(
            "reference: the original model started from a pretrained backbone file, which the "
            "checkpoint names but does not contain.",
            hint="Run 'machine-unlearning retrain --checkpoint BACKBONE ...' and pass the result.",
        )
    return recipe_overrides(metadata["recipe"]), int(baseline.get("seed", 0))


def evaluate_reference(
    job: JobSpec, metadata: dict, source, roles: dict, device, sink: EventSink
) -> tuple[Evaluation, Path]:
    """Score the reference (``job.reference``: ``auto`` or a checkpoint path) on ``roles``.

    The reference must share the original model's label policy, modalities and preprocessing,
    so that both are scored on identical inputs.
    """
    path = (
        retrained_reference(job, metadata, sink) if job.reference == "auto" else Path(job.reference)
    )
    loaded = load_checkpoint(path, device=device)
    for key in ("label_policy", "modalities", "preprocessing", "sampling"):
        if loaded.metadata.get(key) != metadata.get(key):
            raise InvalidInputError(
                f"reference: {path} differs from the original model in {key}.",
                hint="Retrain the reference with the original model's recipe "
                "('--reference auto' does this).",
            )
    sink.emit("phase", name="evaluate", detail=f"retrained reference {path.name}")
    return evaluate_model(loaded.model, source, roles, device, "retrained", None), path


def reference_section(gaps: dict, reference: Evaluation, path: Path) -> str:
    """Markdown for the report: the reference's set Dice and the gaps to it."""
    lines = [
        f"Reference model: `{path}` (trained on the retain subjects only, same recipe "
        "and seed as the original: the exact-unlearning gold standard).",
        "",
        "| set | Dice of the reference | Dice gap (abs) | MAE gap (abs) |",
        "|---|---|---|---|",
    ]
    ref_sets = reference.sets()
    for role, values in gaps["sets"].items():
        dice = ref_sets.get(role, {}).get("dice")
        lines.append(
            f"| {role} | {_fmt(dice)} | {_fmt(values['dice_gap'])} | {_fmt(values['mae_gap'])} |"
        )
    lines += ["", f"Avg. Gap (mean of the set Dice gaps): {_fmt(gaps['avg_gap'])}."]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
