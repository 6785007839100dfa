"""``audit``: membership-inference audit of one model (audit.json + audit.md)."""

from __future__ import annotations

from MachineUnlearningLib.commands.common import prepare_output
from MachineUnlearningLib.commands.evaluate import evaluate_for_job
from MachineUnlearningLib.evaluation.audit import audit
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json, write_text
from MachineUnlearningLib.runtime.jobs import JobSpec


def audit_checkpoint(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """``audit``: membership-inference audit of one model (audit.json + audit.md)."""
    output = prepare_output(job)
    evaluation, _, _, _, label = evaluate_for_job(job, sink, keep_predictions=False)
    report = audit(evaluation.signals, feature="loss", model_label=label)
    path = write_json(output / "audit.json", report.to_dict())
    write_text(output / "audit.md", report.to_markdown())
    sink.emit("phase", name="audit", detail=f"verdict: {report.overall}")
    sink.emit("artifact", kind="audit", path=str(path))
    return {"audit": str(path), "audit_md": str(output / "audit.md")}
