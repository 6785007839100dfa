"""The module's runs: one at a time, bound to the scene it started in, and its results there.

:class:`RunSession` wraps ``runner.RunController`` (the worker process and its state machine)
with what only the module needs: a run belongs to the scene *generation* it started in (Slicer
keeps one ``vtkMRMLScene`` object and clears it on close, resetting the parameter node), so a
run that outlives its scene never writes into the next one; the last run's nodes (metrics
table, Dice chart with its series and table, comparison volume and segmentations) are removed
when a new run is imported, when the scene closes and when its outputs are deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MachineUnlearningLib.app import output_folders, results
from MachineUnlearningLib.app.parameters import Parameters, is_set
from MachineUnlearningLib.app.queries import WorkerSettings
from MachineUnlearningLib.app.runner import Progress, RunController, RunState
from MachineUnlearningLib.app.view_state import Desktop
from MachineUnlearningLib.runtime.jobs import JobSpec

DEFAULT_MODALITY = "reg_T1"
CANCELLABLE = (RunState.STARTING, RunState.RUNNING, RunState.CANCELLING)


@dataclass
class _Run:
    """The run in flight: its kind, the scene generation and parameters it belongs to."""

    kind: str = ""
    generation: int = 0
    parameters: Any = None
    pending_cohort: str = ""


@dataclass
class Results:
    """The last imported run: its metrics.json and every node its import added."""

    metrics: dict = field(default_factory=dict)
    chart: Any = None
    nodes: list = field(default_factory=list)
    comparison: list = field(default_factory=list)
    forgetting: dict | None = None


class RunSession:
    """Runs one job or command at a time and keeps the last run's results in the scene.

    Args:
        scene: the MRML scene the results go into.
        desktop: dialogs and layouts (``view_state.Desktop``).
        worker: how the worker process starts.
        on_progress: ``RunController`` progress (state, fraction, text).
        on_log: every log line.
        on_finished: ``(kind, status, text)`` once per run; ``text`` says what happened and,
            for a run whose scene was closed, where its outputs are.
    """

    def __init__(
        self,
        scene: Any,
        desktop: Desktop,
        worker: WorkerSettings,
        on_progress: Callable[[Progress], None],
        on_log: Callable[[str], None],
        on_finished: Callable[[str, str, str], None],
    ) -> None:
        self.scene = scene
        self.desktop = desktop
        self.on_finished = on_finished
        self.results = Results()
        self.generation = 0
        self._run = _Run()
        self.controller = RunController(
            on_progress=on_progress,
            on_log=on_log,
            on_finished=self._finished,
            import_results=self._import_results,
            python_executable=worker.python_executable,
            entry=worker.entry,
            base_env=worker.base_env,
            pythonpath=worker.pythonpath,
        )

    @property
    def active(self) -> bool:
        return self.controller.active

    @property
    def cancellable(self) -> bool:
        return self.controller.state in CANCELLABLE

    @property
    def folder(self) -> str:
        """Where the run in flight writes."""
        job = self.controller.job
        return job.output if job is not None else self._run.pending_cohort

    def start(self, kind: str, job: JobSpec, parameters: Parameters) -> None:
        """Start a job run (``unlearn`` or ``train``) for ``parameters``."""
        self._run = _Run(kind, self.generation, parameters)
        self.controller.start(job)
        self.desktop.start_polling()

    def start_demo_cohort(self, folder: Path, held_out: int, parameters: Parameters) -> None:
        """``make-cohort`` in the background; its folder becomes the cohort when it is done."""
        self._run = _Run("make-cohort", self.generation, parameters, str(folder))
        arguments = ["--out", str(folder), "--held-out", str(held_out)]
        self.controller.start_command("make-cohort", arguments, device="cpu", events=False)
        self.desktop.start_polling()

    def cancel(self) -> None:
        """First call: the worker stops after its current step; second: its tree is killed."""
        self.controller.cancel()

    def poll(self) -> bool:
        return self.controller.poll()

    def kill(self) -> None:
        if self.controller.active and self.controller.worker is not None:
            self.controller.worker.kill_tree()

    def scene_closing(self) -> str:
        """The scene is about to close (StartCloseEvent; it cannot be vetoed).

        Its result nodes go with it. A run in flight is cancelled if the user says so, else it
        goes on and its results stay in its folder, never loaded into the next scene. Returns
        the status line to show ("" when no run was in flight).
        """
        self.generation += 1
        self.results = Results()
        if not self.active or self.controller.state == RunState.CANCELLING:
            return ""
        folder = self.folder
        if self.desktop.confirm(
            f"A {self._run.kind} run is still running (it writes to {folder}). Cancel it?\n\n"
            "If it goes on, its results stay in that folder and are not loaded into the next "
            "scene.",
            "Closing the scene",
        ):
            self.cancel()
            return f"Cancelling the {self._run.kind} run: the scene was closed."
        return f"The {self._run.kind} run goes on; its results will stay in {folder}."

    # -- the end of a run ------------------------------------------------------------------

    def _belongs_here(self) -> bool:
        return self._run.generation == self.generation

    def _finished(self, status: str, outputs: dict) -> None:
        kind, pn = self._run.kind, self._run.parameters
        text = f"{kind}: {self.controller.message}"
        if not self._belongs_here():
            text += (
                f" — not loaded: the scene was closed during the run. Its outputs: {self.folder}"
            )
        elif status == "ok" and kind == "make-cohort":
            pn.cohort = self._run.pending_cohort
        self.on_finished(kind, status, text)

    def _import_results(self, job: JobSpec, outputs: dict) -> None:
        """RunController's IMPORTING step (GUI thread)."""
        if not self._belongs_here():
            return
        pn, output = self._run.parameters, Path(job.output)
        if job.command in ("train", "retrain"):
            pn.checkpoint = str(outputs.get("checkpoint") or output / "model.pt")
            pn.bundle = ""  # the new baseline is the model now, not a bundle chosen before
            return
        self.clear_results(pn)
        metrics = outputs.get("metrics") or output / "metrics.json"
        imported = results.import_metrics(self.scene, metrics)
        self.results = Results(imported.metrics, imported.chart, imported.nodes())
        self.results.forgetting = results.read_forgetting(output)
        pn.resultsTable = imported.table
        pn.lastRun = str(output)
        self.show_plot()

    # -- results ---------------------------------------------------------------------------

    def clear_results(self, parameters: Parameters | None) -> None:
        """Remove the last run's nodes (table, chart, comparison) from the scene."""
        old = self.results
        results.remove_nodes(self.scene, [*old.nodes, *old.comparison])
        self.results = Results()
        if parameters is not None and parameters.resultsTable is not None:
            parameters.resultsTable = None

    def show_plot(self) -> None:
        if self.results.chart is not None:
            self.desktop.show_chart(self.results.chart)

    def compare(self, parameters: Parameters, subject_id: str, image: Path) -> Sequence[Any]:
        """The subject's MRI and both predictions in linked views (replacing the last ones)."""
        if not subject_id or not self.results.metrics:
            raise ValueError("Choose a subject of the last run to compare.")
        results.remove_nodes(self.scene, self.results.comparison)
        self.desktop.show_comparison()
        run = Path(parameters.lastRun)
        nodes = results.load_comparison(
            self.scene, run, self.results.metrics, image, subject_id, DEFAULT_MODALITY
        )
        self.results.comparison = list(nodes)
        return nodes

    def save_model(self, parameters: Parameters, destination: Path | str) -> None:
        """Copy the last run's unlearned model (the copy is not deleted with the run)."""
        source = Path(parameters.lastRun) / "unlearned.pt"
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist.")
        shutil.copy2(source, destination)

    def delete_outputs(self, parameters: Parameters) -> str:
        """ "Delete this run's outputs", after a confirmation that says what goes and stays.

        Returns the status line ("" when nothing was deleted).
        """
        if not is_set(parameters.lastRun):
            return ""
        plan = output_folders.plan_deletion(parameters.lastRun)
        if not self.desktop.confirm(plan.confirmation_text(), "Delete this run's outputs"):
            return ""
        output_folders.delete_outputs(plan)
        self.clear_results(parameters)
        parameters.lastRun = ""
        kept = ", ".join(p.name for p in plan.keep) or "nothing"
        return f"Deleted the outputs of {plan.folder}; kept {kept}."
