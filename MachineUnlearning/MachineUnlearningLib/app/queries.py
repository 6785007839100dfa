"""Short questions to the worker (which GPUs, what is in this model), never waited on.

Anything that needs torch runs in a worker process, so that Slicer's own process never imports
torch or holds a CUDA context: ``machine-unlearning devices`` and ``describe-checkpoint`` print
one JSON document; :class:`BackgroundQuery` starts them and hands the answer over from
:meth:`BackgroundQuery.poll`, which the widget's timer calls on the GUI thread.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MachineUnlearningLib.app.runner import (
    EXIT,
    LOG,
    WORKER_MODULE_ENTRY,
    WorkerProcess,
    explain_exit,
)

GIB = 2**30


@dataclass(frozen=True)
class WorkerSettings:
    """How worker processes start (see ``runner.WorkerProcess``).

    Attributes:
        python_executable: ``PythonSlicer`` inside Slicer (it sees Slicer's site-packages).
        entry: how that interpreter finds the worker (tests pass a stand-in script).
        base_env: the child's starting environment (``slicer.util.startupEnvironment()``).
        pythonpath: folders put in front of PYTHONPATH (the folder holding the engine).
    """

    python_executable: str | None = None
    entry: tuple[str, ...] = WORKER_MODULE_ENTRY
    base_env: Mapping[str, str] | None = None
    pythonpath: tuple[str, ...] = ()

    def worker(self, command: str, arguments: Sequence[str] = (), **kwargs: Any) -> WorkerProcess:
        return WorkerProcess(
            command,
            extra_args=tuple(arguments),
            python_executable=self.python_executable,
            entry=self.entry,
            base_env=self.base_env,
            pythonpath=self.pythonpath,
            **kwargs,
        )


def slicer_python() -> str:
    """Slicer's own Python launcher, so the worker sees Slicer's site-packages (and torch)."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundQuery:
    """One worker command whose last printed JSON object is the answer.

    Args:
        command, arguments: the CLI command (``devices``, ``describe-checkpoint PATH``).
        on_answer: called with the JSON object when the command exits with code 0.
        on_failure: called with a one-line reason otherwise.
        settings: how the worker starts.
    """

    def __init__(
        self,
        command: str,
        arguments: Sequence[str],
        on_answer: Callable[[dict], None],
        on_failure: Callable[[str], None],
        settings: WorkerSettings,
    ) -> None:
        self.on_answer = on_answer
        self.on_failure = on_failure
        self._worker = settings.worker(command, arguments, events=False, device="auto")
        self._answer: dict | None = None
        self._lines: list[str] = []
        self.done = False

    def start(self) -> BackgroundQuery:
        self._worker.start()
        return self

    def poll(self) -> bool:
        """Deliver the answer once the command has exited; True while it still runs."""
        if self.done:
            return False
        for event in self._worker.poll():
            if event.kind == LOG:
                self._read(str(event.get("message", "")))
            elif event.kind == EXIT:
                self.done = True
                code = event.get("exit_code")
                if code == 0 and self._answer is not None:
                    self.on_answer(self._answer)
                else:
                    self.on_failure(self._reason(code))
        return not self.done

    def cancel(self) -> None:
        """Stop it; no callback is called afterwards."""
        self.done = True
        if self._worker.running:
            self._worker.kill_tree()

    def _read(self, line: str) -> None:
        text = line.strip()
        if text.startswith("{"):
            try:
                document = json.loads(text)
            except json.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                self._answer = document
                return
        if text and not text.startswith("$ "):  # the runner logs the command line first
            self._lines.append(text)

    def _reason(self, code: Any) -> str:
        """The worker's ``error:`` line (and its ``hint:``), else its last line."""
        lines = self._lines
        errors = [i for i, line in enumerate(lines) if line.lower().startswith("error")]
        if not errors:
            return (lines or [explain_exit(code)])[-1]
        i = errors[-1]
        reason = lines[i].removeprefix("error:").strip()
        if i + 1 < len(lines) and lines[i + 1].startswith("hint:"):
            reason += " " + lines[i + 1].removeprefix("hint:").strip()
        return reason


class QueryBoard:
    """The background queries in flight, at most one per key (a new one replaces it)."""

    def __init__(self, settings: WorkerSettings, start_polling: Callable[[], None]) -> None:
        self.settings = settings
        self.start_polling = start_polling
        self._queries: dict[str, BackgroundQuery] = {}

    def ask(self, key: str, command: str, arguments: Sequence[str], on_answer, on_failure) -> None:
        """Start ``command``; ``on_answer`` / ``on_failure`` are called from :meth:`poll`."""
        self.cancel(key)
        query = BackgroundQuery(command, arguments, on_answer, on_failure, self.settings)
        try:
            query.start()
        except OSError as error:
            on_failure(f"could not start the worker: {error}")
            return
        self._queries[key] = query
        self.start_polling()

    def cancel(self, key: str | None = None) -> None:
        """Stop the query of ``key`` (None: every query)."""
        for name in [key] if key is not None else list(self._queries):
            query = self._queries.pop(name, None)
            if query is not None:
                query.cancel()

    def running(self, key: str) -> bool:
        return key in self._queries

    def poll(self) -> bool:
        """Deliver what arrived; True while a query still runs."""
        active = False
        for key, query in list(self._queries.items()):
            if query.poll():
                active = True
            elif self._queries.get(key) is query:
                del self._queries[key]
        return active


NO_TORCH = "PyTorch is not installed yet: Apply installs it (PyTorch extension)."


def _torch_installed() -> bool:
    from MachineUnlearningLib.app.dependencies import installed_version

    return installed_version("torch") is not None


def describe_checkpoint(board: QueryBoard, path: str, show: Callable[[str], None]) -> str:
    """What the model summary says now; the worker's answer comes later through ``show``.

    ``path`` is a checkpoint file or a MONAI bundle folder (``describe-checkpoint`` reads both).
    """
    board.cancel("describe")
    if not path:
        return "No model selected: choose a checkpoint or a MONAI bundle, or train a baseline."
    if not Path(path).exists():
        return f"{path} does not exist."
    if not _torch_installed():
        return f"{NO_TORCH} The model is described after that."

    def answer(document: dict) -> None:
        show(checkpoint_summary(document["checkpoint"]))

    def failure(reason: str) -> None:
        show(f"Cannot read this model: {reason}")

    board.ask("describe", "describe-checkpoint", [path], answer, failure)
    return "Reading the model (in the background)…"


def list_devices(board: QueryBoard, done: Callable[[list | None, str], None]) -> str:
    """What the status line says now; ``done(device choices or None, text)`` comes later."""
    if not _torch_installed():
        return NO_TORCH

    def answer(document: dict) -> None:
        gpus = document.get("gpus") or []
        done(device_choices(gpus), f"{len(gpus)} GPU(s) found." if gpus else "No CUDA GPU: CPU.")

    board.ask("devices", "devices", [], answer, lambda why: done(None, f"Listing failed: {why}"))
    return "Listing the GPUs (in the background)…"


def device_choices(gpus: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(value, label) for the device list: auto, each GPU with its free memory, cpu."""
    choices = [("auto", "auto (GPU if available)")]
    for gpu in gpus:
        free, total = gpu.get("free_bytes", 0) / GIB, gpu.get("total_bytes", 0) / GIB
        label = f"GPU {gpu['index']}: {gpu.get('name', '')} ({free:.1f} of {total:.1f} GiB free)"
        choices.append((f"cuda:{gpu['index']}", label))
    choices.append(("cpu", "CPU"))
    return choices


def checkpoint_summary(description: Mapping[str, Any]) -> str:
    """One line from ``describe-checkpoint``: architecture, labels, trained-on subjects.

    A MedicalNet ResNet is named by its depth, shortcut and width; any other adapter (and a
    MONAI bundle) by ``architecture``, the worker's ``ModelSpec.describe()`` /
    ``Bundle.describe()`` (``model/summary.py``).
    """
    if description.get("adapter", "medicalnet") == "medicalnet" and description.get("depth"):
        architecture = (
            f"MedicalNet ResNet-{description.get('depth')} (shortcut "
            f"{description.get('shortcut_type')}, width {description.get('base_width')})"
        )
    else:
        architecture = str(description.get("architecture") or description.get("adapter"))
    text = (
        f"{architecture}, {description.get('in_channels')} input(s), "
        f"{description.get('num_classes')} classes"
    )
    bundle = description.get("bundle") or {}
    named = [n for n in bundle.get("label_names") or [] if n]
    if named:
        text += f"; outputs: {', '.join(named)}"
    if description.get("label_policy"):
        text += f"; labels: {description['label_policy']}"
    if description.get("sampling") not in (None, "whole volumes"):
        text += f"; {description['sampling']}"
    trained_on = description.get("trained_on") or []
    if trained_on:
        text += f"; trained on {len(trained_on)} subject(s): {', '.join(trained_on)}"
    return text
