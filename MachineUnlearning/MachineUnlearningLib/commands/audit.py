"""``audit``: does a model still remember the forget subject? (reference-audit.json, audit.json)

The audit that decides compares the model's score on the (single) forget subject with that
subject's own reference ensemble from the retrain cache (``commands/references.py``:
``--references cached`` reads it, ``auto`` trains what is missing, ``none`` skips), written to
``reference-audit.json``. The comparison with never-seen subjects (``evaluation/audit.py``) is
kept as a secondary check in ``audit.json`` / ``audit.md``; without references it is the only
one, and the run says so.
"""

from __future__ import annotations

from MachineUnlearningLib.commands.common import prepare_output
from MachineUnlearningLib.commands.evaluate import evaluate_for_job
from MachineUnlearningLib.commands.references import references_for_job
from MachineUnlearningLib.evaluation.audit import audit
from MachineUnlearningLib.evaluation.reference_audit import DEFAULT_FEATURE
from MachineUnlearningLib.model.checkpoint import load_checkpoint
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json, write_text
from MachineUnlearningLib.runtime.jobs import JobSpec

REFERENCE_AUDIT_FILE = "reference-audit.json"


def audit_checkpoint(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``audit``: the audit against references (when they exist) and the held-out check."""
    output = prepare_output(job)
    evaluation, _, _, roles, label = evaluate_for_job(job, sink, keep_predictions=False)
    metadata = load_checkpoint(job.checkpoint).metadata if job.checkpoint else {"bundle": True}
    outputs: dict[str, str] = {}
    bank, reason = (
        references_for_job(job, metadata, sink)
        if job.forget_ids
        else (None, "no forget subject given (--forget ID)")
    )
    if bank is not None:
        subject = job.forget_ids[0]
        value = next(s for s in evaluation.signals if s.subject_id == subject).value(
            DEFAULT_FEATURE
        )
        verdict = bank.verdict(subject, value, looks=1)
        document = {
            "method": "reference ensemble (leave-one-out retrains and originals, U-LiRA)",
            "subject": subject,
            "verdict": verdict.verdict,
            "model": label,
            "unlearned": verdict.to_dict(),
            "spread": bank.spread(DEFAULT_FEATURE).to_dict(),
            "references": bank.describe(),
        }
        outputs["reference_audit"] = str(write_json(output / REFERENCE_AUDIT_FILE, document))
        sink.emit("phase", name="audit", detail=f"{subject}: {verdict.verdict} (against its "
                  "own references)")  # fmt: skip
        sink.emit("artifact", kind="audit", path=outputs["reference_audit"])
    else:
        sink.emit(
            "warning",
            message=f"no audit against retrained models: {reason}. Only the held-out "
            "comparison (a weaker check) is reported.",
        )
    held_out = [i for i, r in roles.items() if r == "held-out"]
    retain = [i for i, r in roles.items() if r == "retain"]
    if bank is None or (len(held_out) >= 2 and len(retain) >= 2):
        report = audit(evaluation.signals, feature="loss", model_label=label)
        path = write_json(output / "audit.json", report.to_dict())
        write_text(output / "audit.md", report.to_markdown())
        sink.emit("phase", name="audit", detail=f"held-out comparison: {report.overall}")
        sink.emit("artifact", kind="audit", path=str(path))
        outputs |= {"audit": str(path), "audit_md": str(output / "audit.md")}
    return outputs
