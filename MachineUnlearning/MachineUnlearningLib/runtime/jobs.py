"""JobSpec: what one worker run does, as validated data that round-trips through JSON.

A JobSpec is written by the Slicer module (or built by the CLI from flags), validated here once,
and executed by ``worker.py``. Validation errors name the field and say how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

COMMANDS = ("train", "evaluate", "unlearn", "retrain", "audit")
DEVICE_HINT = "Use 'auto', 'cpu', 'cuda' or 'cuda:N'."
JOB_FORMAT_VERSION = 1
REFERENCE_MODES = ("cached", "auto", "none")
"""``references``: ``cached`` uses the reference ensemble the retrain cache holds and never
trains; ``auto`` also trains what the forget subject lacks (its leave-one-out retrains and the
originals, one per reference seed); ``none`` skips the reference audit."""
DEFAULT_REFERENCE_SEEDS = (0, 1, 2)
"""Issue 11 item 2: at least 3 seeds per training subject (the bench cache holds 0, 1, 2)."""


@dataclass
class JobSpec:
    """One run of the worker.

    Attributes:
        command: ``train`` (baseline), ``evaluate``, ``unlearn``, ``retrain`` (train on the
            retain subjects only, from the original initialisation: the exact reference) or
            ``audit`` (membership-inference audit of a model).
        cohort: root folder of an MRBrainS18-layout cohort (``training/`` and ``held-out/``).
        output: folder the run writes into (created; must not hold another run's results).
        checkpoint: input model (evaluate/unlearn/audit need it or ``bundle``; a MedicalNet
            pretrained backbone for train/retrain, optional). Never written to.
        forget_ids: subject ids to forget (strings, e.g. "070").
        retain_ids: retain subject ids; None = every training subject not forgotten.
        held_out_ids: held-out ids; None = every subject under ``held-out/``.
        strategy: unlearning preset name (``machine-unlearning strategies`` lists them).
        fix_decoder: freeze the decoder (the architecture adapter's decoder scope; MedicalNet's
            ``conv_seg``) and its BatchNorm statistics.
        strategy_params: the preset's own parameters, overriding its defaults.
        epochs: training / unlearning epochs; None = the command's default.
        eval_epochs: epochs after which the model is evaluated; None = command default.
        learning_rate: None = the recipe's default.
        seed: seeds every random choice of the run (recorded in the outputs).
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        config: training-recipe overrides (see ``training.TrainingConfig`` field names).
        cancel_file: the run stops cleanly within one step once this file exists;
            None = ``<output>/CANCEL``.
        requested_by: free text for the deletion record (who asked; never read from data).
        stop_when_indistinguishable: unlearn only: evaluate after every epoch and stop by the
            stopping rule: with the forget subject's references, at the first epoch within the
            target band of the first reference seed's retrain (else rewound to the closest),
            certified once with the other seeds; without them, at the first epoch where every
            forget subject is indistinguishable from held-out subjects (needs >= 2 held-out).
            Either way retain Dice must keep >= (1 - stop_retain_tolerance) of the original's.
        stop_retain_tolerance: the fraction of the original's retain Dice the stopping rule
            lets unlearning give up (0.05 = stop only while retain Dice keeps >= 95 %).
        reference: unlearn only: compare with the retrain-from-scratch reference, ``auto``
            (retrain with the original's recipe and seed, cached) or a checkpoint path.
        bundle: a MONAI bundle folder as the model (instead of ``checkpoint``): its network,
            weights, labels and preprocessing (``model/bundle.py``); ``train`` fine-tunes it,
            ``retrain`` starts its network afresh. Never written to; unlearned and trained
            models are written back as a bundle under ``<output>/bundle``.
        references: unlearn / audit: the per-subject audit against the forget subject's
            reference ensemble (``REFERENCE_MODES``; default ``cached``). With
            ``stop_when_indistinguishable`` the stopping rule chooses its epoch with the first
            reference seed and certifies once with the others.
        reference_seeds: the seeds of the reference ensemble (default 0 1 2; >= 3 for the
            stopping rule).
    """

    command: str
    cohort: str
    output: str
    checkpoint: str | None = None
    forget_ids: list[str] = field(default_factory=list)
    retain_ids: list[str] | None = None
    held_out_ids: list[str] | None = None
    strategy: str = "noisy-label"
    fix_decoder: bool = False
    strategy_params: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    eval_epochs: list[int] | None = None
    learning_rate: float | None = None
    seed: int = 0
    device: str = "auto"
    config: dict[str, Any] = field(default_factory=dict)
    cancel_file: str | None = None
    requested_by: str = ""
    stop_when_indistinguishable: bool = False
    stop_retain_tolerance: float = 0.05
    reference: str | None = None
    bundle: str | None = None
    references: str = "cached"
    reference_seeds: list[int] = field(default_factory=lambda: list(DEFAULT_REFERENCE_SEEDS))

    def __post_init__(self) -> None:
        self.command = look_up_option(self.command, COMMANDS, "command")
        self.references = look_up_option(self.references, REFERENCE_MODES, "references")
        seeds = self.reference_seeds
        if (
            not isinstance(seeds, (list, tuple))
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise InvalidInputError(
                f"reference_seeds: must be distinct integers, got {seeds!r}.", hint="e.g. [0, 1, 2]"
            )
        self.reference_seeds = list(seeds)
        self.forget_ids = _id_list(self.forget_ids, "forget_ids") or []
        self.retain_ids = _id_list(self.retain_ids, "retain_ids")
        self.held_out_ids = _id_list(self.held_out_ids, "held_out_ids")
        if self.command == "unlearn" and not self.forget_ids:
            raise InvalidInputError(
                "forget_ids: an unlearn job needs at least one subject to forget.",
                hint="Pass --forget 070 (several: --forget 070 148).",
            )
        if self.bundle is not None and (not isinstance(self.bundle, str) or not self.bundle):
            raise InvalidInputError(
                f"bundle: must be the path of a MONAI bundle folder, got {self.bundle!r}."
            )
        if self.bundle and self.checkpoint:
            raise InvalidInputError(
                "bundle: give either a checkpoint or a bundle, not both.",
                hint="--bundle DIR replaces --checkpoint FILE (the bundle holds the weights).",
            )
        if self.command in ("evaluate", "unlearn", "audit") and not (
            self.checkpoint or self.bundle
        ):
            raise InvalidInputError(
                f"checkpoint: a {self.command} job needs the trained model to start from.",
                hint="Pass --checkpoint model.pt (train one with 'machine-unlearning train') "
                "or --bundle DIR (a MONAI bundle).",
            )
        overlap = set(self.forget_ids) & set(self.retain_ids or [])
        if overlap:
            raise InvalidInputError(
                f"retain_ids: subject(s) {sorted(overlap)} are also in forget_ids.",
                hint="A subject is either forgotten or retained, not both.",
            )
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise InvalidInputError(
                f"epochs: must be a positive integer, got {self.epochs!r}.", hint="e.g. 50"
            )
        if self.eval_epochs is not None:
            bad = [e for e in self.eval_epochs if not isinstance(e, int) or e < 1]
            if bad:
                raise InvalidInputError(
                    f"eval_epochs: must be positive integers, got {bad}.", hint="e.g. [20, 50]"
                )
        if self.learning_rate is not None and not (self.learning_rate > 0):
            raise InvalidInputError(
                f"learning_rate: must be > 0, got {self.learning_rate!r}.", hint="e.g. 0.001"
            )
        if not (
            isinstance(self.stop_retain_tolerance, (int, float))
            and 0.0 <= self.stop_retain_tolerance < 1.0
        ):
            raise InvalidInputError(
                f"stop_retain_tolerance: must lie in [0, 1), got {self.stop_retain_tolerance!r}.",
                hint="e.g. 0.02 (stop only while retain Dice keeps >= 98 % of the original's)",
            )
        if not _valid_device(self.device):
            raise InvalidInputError(f"device: unknown device {self.device!r}.", hint=DEVICE_HINT)

    @property
    def cancel_path(self) -> Path:
        return Path(self.cancel_file) if self.cancel_file else Path(self.output) / "CANCEL"

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": JOB_FORMAT_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        if not isinstance(data, dict):
            raise InvalidInputError("job: the job file must hold a JSON object.")
        payload = dict(data)
        payload.pop("format_version", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise InvalidInputError(
                f"job: unknown field(s) {unknown}.",
                hint=f"Valid fields: {', '.join(sorted(known))}.",
            )
        for name in ("command", "cohort", "output"):
            if name not in payload:
                raise InvalidInputError(f"{name}: missing from the job.", hint=f'Add "{name}".')
        return cls(**payload)

    @classmethod
    def from_file(cls, path: Path) -> JobSpec:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInputError(f"job: {path} does not exist.") from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"job: {path} is not valid JSON ({exc.msg} at line {exc.lineno})."
            ) from None
        return cls.from_dict(data)


def _id_list(values: Any, name: str) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise InvalidInputError(
            f"{name}: must be a list of subject ids (strings), got {values!r}.",
            hint='e.g. ["070", "148"]',
        )
    ids = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidInputError(
                f'{name}: subject id {value!r} must be a string (ids like "070" keep their '
                "leading zero).",
                hint='Quote the id: "070".',
            )
        ids.append(value)
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{name}: duplicate subject ids in {ids}.")
    return ids


def _valid_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    return device.startswith("cuda:") and device[5:].isdigit()
