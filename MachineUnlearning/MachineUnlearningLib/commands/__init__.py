"""One module per job command, dispatched by name (imported only when that command runs).

Commands: ``train`` / ``retrain`` (``train.py``), ``evaluate``, ``audit``, ``unlearn``; the
retrain-from-scratch reference (``reference.py``) and the README's ``demo`` build on them. The
flag-only commands (``make-cohort``, ``verify-record``, ``strategies``) live in ``app/cli.py``.
"""

from __future__ import annotations

import importlib

from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.jobs import JobSpec

#: job command -> "module:function" (lazy, so that importing this package imports no torch)
JOB_COMMANDS: dict[str, str] = {
    "train": "train:train_baseline",
    "retrain": "train:train_baseline",
    "evaluate": "evaluate:evaluate_checkpoint",
    "audit": "audit:audit_checkpoint",
    "unlearn": "unlearn:unlearn",
}


def run_job(job: JobSpec, sink: EventSink) -> dict[str, str]:
    """Execute ``job`` with its command's module; returns the output files by name."""
    module_name, function_name = JOB_COMMANDS[job.command].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, function_name)(job, sink)
