"""The checks an ``unlearn`` run makes, and their text for the report and the record.

- the stopping rules (``ReferenceStop``: choose the epoch with the first reference seed, certify
  once with the others, unlearning.md section 5 without peeking; ``HeldOutStop``: the older
  rule against never-seen subjects, used only where no references exist);
- ``certify``: the audit of the written model (and, for context, of the original) against the
  forget subject's own references, one look (``evaluation/reference_audit.py``);
- ``privacy_audit``: the secondary comparison with never-seen subjects (``evaluation/audit.py``);
- ``record_entry`` / ``reference_audit_markdown``: what the deletion record and the report keep.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from scipy import stats

from MachineUnlearningLib.evaluation.audit import AuditReport, audit, stopping_rule_satisfied
from MachineUnlearningLib.evaluation.predict import Evaluation
from MachineUnlearningLib.evaluation.reference_audit import (
    DEFAULT_ALPHA,
    DEFAULT_FEATURE,
    DEFAULT_MARGIN_SDS,
    closeness,
    split_seeds,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink

if TYPE_CHECKING:  # the stages' types; unlearn.py imports this module
    from MachineUnlearningLib.commands.unlearn import Before, Trained, UnlearnRun


class HeldOutStop:
    """The secondary stopping rule (no reference ensemble): every epoch the forget subject is
    compared with the held-out subjects, and the run stops at the first non-rejection. It
    chooses and certifies with the same subjects (it peeks); kept only where no references
    exist, with that said in a warning."""

    def __init__(self, run: UnlearnRun, before: Before) -> None:
        self.tolerance = run.job.stop_retain_tolerance
        self.retain_before = before.original.sets()["retain"]["dice"]
        self.looks = 0

    def check(self, evaluation: Evaluation, model: torch.nn.Module) -> tuple[bool, str]:
        self.looks += 1
        report = privacy_audit(evaluation, f"unlearned, epoch {evaluation.epoch}")
        return stopping_rule_satisfied(
            report.forget_verdicts,
            evaluation.sets()["retain"]["dice"],
            self.retain_before,
            tolerance=self.tolerance,
        )

    def finish(self, trained: Trained, sink: EventSink) -> None:
        if not trained.notes:
            sink.emit(
                "warning",
                message="the stopping rule was never met; the model of the last "
                "epoch is written (never the lowest forget Dice).",
            )
        sink.emit(
            "warning",
            message=f"the held-out stopping rule looked {self.looks} time(s) and certifies "
            "with the same subjects it chose the epoch with; its verdict is optimistic.",
        )


class ReferenceStop:
    """unlearning.md section 5 without peeking: the epoch is chosen with the first reference
    seed(s) (``split_seeds``), the model is certified once with the others (``certify``).

    Each evaluated epoch is one look at the selection references: the run stops at the first
    epoch whose forget score lies within the target band of the selection retrains' mean (the
    half-width the certification will need: ``margin - t * sd / sqrt(n_certify)``) while retain
    Dice keeps ``>= (1 - tolerance)`` of the original's. If no epoch gets there, the model is
    rewound to the epoch closest to the band among those that kept retain Dice (step 3); if
    none kept it, the last epoch is written and the failure reported (step 4).
    """

    def __init__(self, run: UnlearnRun, before: Before) -> None:
        self.bank = before.bank
        self.subject = run.roles.forget[0]
        self.selection, self.certification = split_seeds(run.job.reference_seeds)
        self.tolerance = run.job.stop_retain_tolerance
        self.floor = (1.0 - self.tolerance) * before.original.sets()["retain"]["dice"]
        spread = self.bank.spread(DEFAULT_FEATURE)
        t_crit = float(stats.t.ppf(1.0 - DEFAULT_ALPHA, spread.retrained_df))
        self.band_sds = DEFAULT_MARGIN_SDS - t_crit / math.sqrt(len(self.certification))
        self.looks = 0
        self.best: tuple[float, int, dict] | None = None  # (closeness, evaluation index, state)
        self.stopped = False

    def check(self, evaluation: Evaluation, model: torch.nn.Module) -> tuple[bool, str]:
        self.looks += 1
        value = subject_value(evaluation, self.subject, DEFAULT_FEATURE)
        refs = self.bank.references(self.subject, DEFAULT_FEATURE, self.selection)
        distance = closeness(value, refs, self.bank.spread(DEFAULT_FEATURE))
        retain = evaluation.sets()["retain"]["dice"]
        if retain >= self.floor and (self.best is None or distance < self.best[0]):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = (distance, self.looks - 1, state)
        if retain >= self.floor and distance <= self.band_sds:
            self.stopped = True
            return True, (
                f"forget {DEFAULT_FEATURE} {value:.4f} is {distance:.2f} seed-SDs from the "
                f"selection retrains' mean (seed(s) {', '.join(map(str, self.selection))}; target "
                f"band {self.band_sds:.2f} SD) and retain Dice {retain:.4f} >= {self.floor:.4f} "
                f"(tolerance {self.tolerance:g})"
            )
        return False, ""

    def finish(self, trained: Trained, sink: EventSink) -> None:
        chosen = len(trained.evaluations) - 1
        if not self.stopped and self.best is not None:
            chosen = self.best[1]
            trained.model.load_state_dict(self.best[2])
            trained.final = trained.evaluations[chosen]
            trained.notes.append(
                f"target band never reached; rewound to epoch {trained.final.epoch}, the "
                f"closest to it ({self.best[0]:.2f} seed-SDs) among epochs that kept retain Dice"
            )
            sink.emit("phase", name="stop", detail=trained.notes[-1])
        elif not self.stopped:
            trained.notes.append(
                "stopping rule failed: no epoch kept retain Dice within the tolerance; the "
                "last epoch is written (never the lowest forget Dice)"
            )
            sink.emit("warning", message=trained.notes[-1])
        trained.selection = {
            "rule": "choose with the selection seeds, certify once with the others",
            "feature": DEFAULT_FEATURE,
            "selection_seeds": self.selection,
            "certification_seeds": self.certification,
            "selection_looks": self.looks,
            "target_band_sds": self.band_sds,
            "retain_dice_floor": self.floor,
            "chosen_epoch": trained.final.epoch,
            "met": self.stopped,
        }


def subject_value(evaluation: Evaluation, subject_id: str, feature: str) -> float:
    """One subject's ``feature`` in an evaluation (its membership signals)."""
    for signals in evaluation.signals:
        if signals.subject_id == subject_id:
            return signals.value(feature)
    raise InvalidInputError(f"evaluation: no signals for subject {subject_id!r}.")


# ---------------------------------------------------------------- certification


def certify(run: UnlearnRun, before: Before, trained: Trained, sink: EventSink) -> dict:
    """The audit against the forget subject's own references, once (one look): the verdict of
    the written model and, for context, of the original (what doing nothing would get)."""
    if before.bank is None:
        return {"method": "none", "reason": before.no_bank}
    subject = run.roles.forget[0]
    seeds = (
        trained.selection["certification_seeds"]
        if trained.selection
        else list(run.job.reference_seeds)
    )
    verdicts = {
        name: before.bank.verdict(
            subject, subject_value(evaluation, subject, DEFAULT_FEATURE), seeds=seeds, looks=1
        )
        for name, evaluation in (("unlearned", trained.final), ("original", before.original))
    }
    forgetting = {
        "method": "reference ensemble (leave-one-out retrains and originals, U-LiRA)",
        "subject": subject,
        "feature": DEFAULT_FEATURE,
        "verdict": verdicts["unlearned"].verdict,
        "margin": verdicts["unlearned"].margin,
        "margin_sds": verdicts["unlearned"].margin_sds,
        "looks": {
            "certification": 1,
            "selection": trained.selection["selection_looks"] if trained.selection else 0,
        },
        "certification_seeds": seeds,
        "selection": trained.selection,
        "unlearned": verdicts["unlearned"].to_dict(),
        "original": verdicts["original"].to_dict(),
        "spread": before.bank.spread(DEFAULT_FEATURE).to_dict(),
        "references": before.bank.describe(),
    }
    sink.emit(
        "phase",
        name="audit",
        detail=f"{subject}: {forgetting['verdict']} against its own references "
        f"(doing nothing: {verdicts['original'].verdict})",
    )
    return forgetting


def record_entry(forgetting: dict) -> dict:
    """What the deletion record keeps of the reference audit."""
    if forgetting.get("method") == "none":
        return {"verdict": None, "reason": forgetting["reason"]}
    unlearned = forgetting["unlearned"]
    return {
        "method": forgetting["method"],
        "subject": forgetting["subject"],
        "verdict": forgetting["verdict"],
        "feature": forgetting["feature"],
        "margin": forgetting["margin"],
        "margin_sds": forgetting["margin_sds"],
        "alpha": unlearned["alpha"],
        "p_equivalence": unlearned["p_equivalence"],
        "log_likelihood_ratio": unlearned["log_likelihood_ratio"],
        "looks": forgetting["looks"],
        "references": unlearned["references"],
        "certification_seeds": forgetting["certification_seeds"],
        "original_verdict": forgetting["original"]["verdict"],
        "explanation": unlearned["explanation"],
    }


def reference_audit_markdown(forgetting: dict) -> str:
    """The report's section on the audit against the forget subject's own references."""
    if forgetting.get("method") == "none":
        return (
            f"Not run: {forgetting['reason']}. Without models retrained without the subject "
            "the report can only compare it with never-seen subjects (the secondary check), "
            "which does not show that the model treats it as a retrain would.\n"
        )
    rows = []
    for name in ("unlearned", "original"):
        v = forgetting[name]
        rows.append(
            f"| {name} | {v['value']:.4f} | {v['gap_sds']:+.2f} | {v['p_equivalence']:.3g} "
            f"| {v['log_likelihood_ratio']:+.2f} | **{v['verdict']}** |"
        )
    u = forgetting["unlearned"]
    looks = forgetting["looks"]
    return "\n".join(
        [
            f"Subject {forgetting['subject']}, feature {forgetting['feature']}: "
            f"{u['n_retrained']} retrains without it average {u['retrained_mean']:.4f}, "
            f"{u['n_originals']} originals {u['originals_mean']:.4f} (seed SD {u['seed_sd']:.4f}, "
            f"pooled, {u['seed_sd_df']} df).",
            "",
            "| model | score | gap to the retrains (SD) | TOST p | log LR | verdict |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Margin {u['margin_sds']:g} seed-SDs ({u['margin']:.4f}); alpha {u['alpha']:g}; "
            f"certified once (looks: certification {looks['certification']}, epoch selection "
            f"{looks['selection']} with disjoint seeds). {u['explanation']}",
            "",
        ]
    )


def privacy_audit(evaluation: Evaluation, label: str) -> AuditReport:
    """Membership audit of one evaluation (members = retain, non-members = held-out)."""
    return audit(evaluation.signals, feature="loss", model_label=label)
