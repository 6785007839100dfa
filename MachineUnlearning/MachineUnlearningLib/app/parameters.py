"""The module's parameters (the parameter node's fields) and what they turn into.

One translation: :func:`unlearning_job` / :func:`baseline_job` turn the parameters into a
``JobSpec`` (validated by the engine), and :func:`unlearning_problem` says why Apply is not
possible yet. Nothing here imports ``slicer`` or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from MachineUnlearningLib.runtime.jobs import JobSpec


class Parameters(Protocol):
    """The fields of ``MachineUnlearningParameterNode`` (MachineUnlearning.py) the presenter uses.

    Inside Slicer this is the ``parameterNodeWrapper`` instance; ``AddObserver`` /
    ``RemoveObserver`` reach its ``vtkMRMLScriptedModuleNode``. Paths are strings, "" when
    unset: the wrapper's ``Path`` type would store and show an unset path as ".".
    """

    checkpoint: str
    bundle: str
    cohort: str
    output: str
    strategy: str
    fixDecoder: bool
    epochs: int
    learningRate: float
    stopWhenIndistinguishable: bool
    device: str
    subjectRoles: Any
    resultsTable: Any
    lastRun: str

    def AddObserver(self, event: Any, callback: Any, priority: float = 0.0) -> int: ...

    def RemoveObserver(self, tag: int) -> None: ...


def is_set(path: Any) -> bool:
    """A path the user has filled in ("." is how scenes saved by older versions store unset)."""
    return path is not None and str(path).strip() not in ("", ".")


def path_text(path: Any) -> str:
    """What a path box shows: the path, or nothing when it is unset."""
    return str(path).strip() if is_set(path) else ""


def unlearning_problem(parameters: Parameters, roles: Mapping[str, str]) -> str:
    """Why Apply is not possible yet ("" when it is); cheap, for the button's tooltip.

    ``roles`` is the Cases table read by ``scene.table_to_subject_roles``.
    """
    problem = model_problem(parameters)
    if problem:
        return problem
    if not is_set(parameters.cohort) or not Path(parameters.cohort).is_dir():
        return "Choose the cohort folder first, or generate the demo cohort."
    if parameters.subjectRoles is None or not roles:
        return "The cohort has no subjects."
    if "forget" not in roles.values():
        return "Mark at least one subject as 'forget' in the Cases table."
    if parameters.stopWhenIndistinguishable and list(roles.values()).count("held-out") < 2:
        return (
            "The stopping rule compares with never-seen subjects: mark at least two "
            "subjects as 'held-out', or switch the rule off."
        )
    return ""


def model_problem(parameters: Parameters) -> str:
    """Why the Model section does not give one usable model yet ("" when it does): a project
    checkpoint (a file) or a MONAI bundle folder, never both (the engine takes one)."""
    checkpoint, bundle = is_set(parameters.checkpoint), is_set(parameters.bundle)
    if checkpoint and bundle:
        return "Choose either a trained model (checkpoint) or a MONAI bundle folder, not both."
    if bundle:
        folder = Path(parameters.bundle)
        if not folder.is_dir():
            return f"The bundle folder {folder} does not exist."
        if not (folder / "configs").is_dir():
            return f"{folder} is not a MONAI bundle: it has no configs/ folder."
        return ""
    if not checkpoint or not Path(parameters.checkpoint).is_file():
        return "Choose the trained model (checkpoint) or a MONAI bundle first, or train a baseline."
    return ""


def model_path(parameters: Parameters) -> str:
    """The model the Model section describes: the bundle folder if set, else the checkpoint."""
    return path_text(parameters.bundle) or path_text(parameters.checkpoint)


def unlearning_job(
    parameters: Parameters,
    roles: Mapping[str, str],
    output: Path,
    config: Mapping[str, Any] | None = None,
) -> JobSpec:
    """The JobSpec of an unlearning run (``epochs`` / ``learningRate`` 0 = the preset's).

    The module's one budget box (``epochs``) is in the preset's own unit: epochs for the
    paper's presets, optimiser steps for the literature methods (``Strategy.budget``)."""
    from MachineUnlearningLib.strategies import get_strategy  # the torch-free registry

    held_out = [s for s, r in roles.items() if r == "held-out"]
    budget = parameters.epochs or None
    in_steps = budget is not None and get_strategy(parameters.strategy).budget == "steps"
    return JobSpec(
        command="unlearn",
        cohort=str(parameters.cohort),
        output=str(output),
        checkpoint=path_text(parameters.checkpoint) or None,
        bundle=path_text(parameters.bundle) or None,
        forget_ids=[s for s, r in roles.items() if r == "forget"],
        retain_ids=[s for s, r in roles.items() if r == "retain"],
        held_out_ids=held_out or None,
        strategy=parameters.strategy,
        fix_decoder=parameters.fixDecoder,
        epochs=None if in_steps else budget,
        strategy_params={"steps": budget} if in_steps else {},
        learning_rate=parameters.learningRate or None,
        stop_when_indistinguishable=parameters.stopWhenIndistinguishable,
        device=parameters.device,
        config=dict(config or {}),
    )


def baseline_job(
    parameters: Parameters,
    output: Path,
    config: Mapping[str, Any] | None = None,
    epochs: int | None = None,
) -> JobSpec:
    """The JobSpec of a baseline training run on every training subject of the cohort."""
    return JobSpec(
        command="train",
        cohort=str(parameters.cohort),
        output=str(output),
        epochs=epochs,
        device=parameters.device,
        config=dict(config or {}),
    )
