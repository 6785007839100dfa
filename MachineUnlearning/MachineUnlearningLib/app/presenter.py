"""The Slicer module's presenter: everything the widget shows and does, as plain Python.

The widget (MachineUnlearning.py) connects Qt signals to the methods here and draws
:class:`ViewState` in :meth:`View.render`; it decides nothing. The presenter follows the
parameter node and the Cases table (ModifiedEvent observers), turns the parameters into jobs,
runs them through ``session.RunSession`` (the worker, bound to its scene, and the results),
asks the worker in the background for what needs torch (``queries.py``), and decides what is
enabled and why. Its ``poll`` is called by the widget's timer; nothing here waits on a process.
Tested in pytest against slicer-core (Testing/test_module_flows.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vtkmodules.vtkCommonCore import vtkCommand

from MachineUnlearningLib.app import dependencies, output_folders, queries, results
from MachineUnlearningLib.app import scene as mrml
from MachineUnlearningLib.app.cases import Cases, weak_observer
from MachineUnlearningLib.app.parameters import (
    Parameters,
    baseline_job,
    is_set,
    model_path,
    path_text,
    unlearning_job,
    unlearning_problem,
)
from MachineUnlearningLib.app.queries import QueryBoard, WorkerSettings, slicer_python
from MachineUnlearningLib.app.runner import Progress
from MachineUnlearningLib.app.session import DEFAULT_MODALITY, RunSession
from MachineUnlearningLib.app.view_state import Desktop, View, ViewState, show_progress
from MachineUnlearningLib.runtime.errors import MachineUnlearningError

logger = logging.getLogger(__name__)

__all__ = ["Desktop", "Presenter", "View", "ViewState", "WorkerSettings", "slicer_python"]

DEMO_HELD_OUT = 3  # held-out subjects of the demo cohort; the privacy audit needs >= 2


class Presenter:
    """The module's behaviour over a scene, a view, the desktop and an installer.

    Args:
        scene: the MRML scene (``slicer.mrmlScene``); its StartCloseEvent is observed.
        view, desktop: see :class:`View`, :class:`Desktop`.
        installer: the Slicer / PyTorchUtils calls (``dependencies.Installer``).
        requirements: Resources/requirements.txt.
        worker: how worker processes start.
        output_root: default folder for runs; None = ``output_folders.default_output_root()``.
    """

    def __init__(
        self,
        scene: Any,
        view: View,
        desktop: Desktop,
        installer: dependencies.Installer,
        requirements: Path,
        worker: WorkerSettings | None = None,
        output_root: Path | None = None,
    ) -> None:
        self.scene = scene
        self.view = view
        self.desktop = desktop
        self.installer = installer
        self.requirements = Path(requirements)
        self.worker = worker or WorkerSettings()
        self.output_root = Path(output_root or output_folders.default_output_root())
        self.state = ViewState()
        self.parameters: Parameters | None = None
        self._observer: int | None = None
        self._refreshing = False
        self._listed_cohort: str | None = None
        self._described: str | None = None
        self.cases = Cases(scene, self.refresh)
        self.queries = QueryBoard(self.worker, desktop.start_polling)
        self.session = RunSession(
            scene, desktop, self.worker, self._on_progress, view.append_log, self._on_finished
        )
        self._scene_observer = scene.AddObserver(
            scene.StartCloseEvent, weak_observer(self, "scene_closing")
        )
        from MachineUnlearningLib.strategies import STRATEGIES  # torch-free registry

        self.state.strategies = tuple((n, s.summary) for n, s in STRATEGIES.items())
        self.state.devices = tuple(queries.device_choices([]))

    # -- parameters -------------------------------------------------------------------------

    def attach(self, parameters: Parameters | None) -> None:
        """Follow ``parameters`` (the scene's parameter node; None: follow nothing)."""
        self.detach()
        self.parameters = parameters
        if parameters is None:
            return
        self._observer = parameters.AddObserver(
            vtkCommand.ModifiedEvent, weak_observer(self, "refresh")
        )
        self.refresh()

    def detach(self) -> None:
        if self.parameters is not None and self._observer is not None:
            self.parameters.RemoveObserver(self._observer)
        self._observer = None
        self.parameters = None
        self.cases.follow(None)

    def set_strategy(self, name: str) -> None:
        if self.parameters is not None and name:
            self.parameters.strategy = name

    def set_device(self, value: str) -> None:
        if self.parameters is not None and value:
            self.parameters.device = value

    def set_path(self, name: str, text: str) -> None:
        """What the ``checkpoint``, ``bundle``, ``cohort`` or ``output`` path box now holds.

        The text the box was given by :meth:`refresh` (e.g. the default output folder) is no
        edit: opening the module must not change the scene.
        """
        if self.parameters is not None and text != getattr(self.state, f"{name}_text"):
            setattr(self.parameters, name, text)

    # -- what the view shows ----------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the state from the parameters and the Cases table, and draw it."""
        pn = self.parameters
        if pn is None or self._refreshing:
            return
        self._refreshing = True
        try:
            self._refresh(pn)
        finally:
            self._refreshing = False
        self.view.render(self.state)

    def _refresh(self, pn: Parameters) -> None:
        state = self.state
        state.strategy, state.device = pn.strategy, pn.device
        if pn.device not in dict(state.devices):  # e.g. a GPU chosen in an earlier session
            state.devices += ((pn.device, f"{pn.device} (not listed yet: Refresh)"),)
        state.strategy_description = dict(state.strategies).get(pn.strategy, "")
        state.checkpoint_text = path_text(pn.checkpoint)
        state.bundle_text = path_text(pn.bundle)
        state.cohort_text = path_text(pn.cohort)
        state.output_text = path_text(pn.output) or str(self.output_root)  # default stated
        if state.cohort_text != self._listed_cohort:
            self._listed_cohort = state.cohort_text
            if state.cohort_text:
                pn.subjectRoles, problem = self.cases.fill(state.cohort_text, pn.subjectRoles)
                state.status = problem or state.status
        self.cases.follow(pn.subjectRoles)
        state.subject_table, state.results_table = pn.subjectRoles, pn.resultsTable
        present = set(self.cases.roles_or_empty(pn.subjectRoles))
        state.selected_subjects = tuple(s for s in state.selected_subjects if s in present)
        state.selection_text = self._selection_text()
        described = model_path(pn)
        if described != self._described:
            self._described = described
            self._describe(described)
        self._update_buttons()

    def _update_buttons(self) -> None:
        pn, state = self.parameters, self.state
        active = self.session.active
        if not active:
            problem = self.apply_problem()
            state.apply_text, state.apply_enabled = "Apply", not problem
            state.apply_tooltip = problem or "Run the unlearning in the background."
        state.can_train_baseline = not active and pn is not None and is_set(pn.cohort)
        state.can_generate_demo_cohort = not active
        state.can_edit_roles = not active and bool(state.selected_subjects)
        run = Path(pn.lastRun) if pn is not None and is_set(pn.lastRun) else None
        state.has_results = bool(run) and not active and bool(self.session.results.nodes)
        state.can_open_output_folder = (run or Path(state.output_text or ".")).is_dir()
        state.can_delete_outputs = bool(run) and not active and run.is_dir()

    def apply_problem(self) -> str:
        """Why Apply is not possible yet ("" when it is)."""
        if self.parameters is None:
            return "No parameter node."
        try:
            current = self.subject_roles()
        except MachineUnlearningError as error:
            return f"{error.message} {error.hint}".strip()
        return unlearning_problem(self.parameters, current)

    def _say(self, text: str) -> None:
        self.state.status = text
        self.view.render(self.state)

    # -- cases ------------------------------------------------------------------------------

    def subject_roles(self) -> dict[str, str]:
        """subject id -> role, read from the Cases table (raises for an unknown role)."""
        return self.cases.roles(self.parameters.subjectRoles if self.parameters else None)

    def select_view_rows(self, rows: list[int]) -> None:
        """The rows selected in the Cases view (view rows, as the Qt selection gives them)."""
        table = self.parameters.subjectRoles if self.parameters is not None else None
        self.state.selected_subjects = self.cases.subjects_at(table, rows)
        self.state.selection_text = self._selection_text()
        self._update_buttons()
        self.view.render(self.state)

    def _selection_text(self) -> str:
        table = self.parameters.subjectRoles if self.parameters is not None else None
        current = self.cases.roles_or_empty(table)
        chosen = [f"{s} ({current.get(s, '?')})" for s in self.state.selected_subjects]
        return "Selected: " + ", ".join(chosen) if chosen else ""

    def toggle_forget(self) -> None:
        """Selected training subjects: retain <-> forget (held-out subjects stay held out)."""
        table = self.parameters.subjectRoles if self.parameters is not None else None
        if table is None or not self.state.selected_subjects:
            self._say("Select a subject in the Cases table first.")
            return
        self.cases.toggle(table, self.state.selected_subjects)  # the table's event refreshes

    def load_mri(self, modality: str = DEFAULT_MODALITY) -> Any:
        """Load the selected subject's MRI (default reg_T1) and show it in the slice views."""
        if not self.state.selected_subjects:
            self._say("Select a subject in the Cases table first.")
            return None
        subject_id = self.state.selected_subjects[0]
        image = self.cases.image(self.parameters.cohort, subject_id, modality)
        volume = mrml.load_volume(self.scene, image, f"{subject_id} {modality}")
        self.desktop.show_volume(volume)
        return volume

    # -- background questions: the model summary and the GPUs ------------------------------

    def _describe(self, path: str) -> None:
        """The model summary, read by the worker (Slicer's process never imports torch)."""

        def show(text: str) -> None:
            if path == self._described:  # not an answer about a model chosen before
                self.state.model_summary = text
                self.view.render(self.state)

        self.state.model_summary = queries.describe_checkpoint(self.queries, path, show)

    def refresh_devices(self) -> None:
        """List the GPUs with their free memory, in the background."""

        def done(devices: list | None, text: str) -> None:
            self.state.devices = tuple(devices or self.state.devices)
            self.state.devices_pending = False
            self._say(text)

        self.state.status = queries.list_devices(self.queries, done)
        self.state.devices_pending = self.queries.running("devices")
        self.view.render(self.state)

    # -- runs -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.session.active

    @property
    def last_status(self) -> str | None:
        return self.session.controller.status

    def ensure_dependencies(self) -> None:
        had_torch = dependencies.installed_version("torch") is not None
        dependencies.ensure_dependencies(self.installer, self.requirements)
        if not had_torch:  # describe the model now that the worker can read it
            self._described = None
            self.refresh()

    def _new_run_folder(self, label: str) -> Path:
        pn = self.parameters
        root = Path(pn.output) if is_set(pn.output) else self.output_root
        return output_folders.new_run_folder(root, label)

    def apply(self, config: Mapping[str, Any] | None = None) -> None:
        """Apply starts the unlearning run; while one runs, it cancels it (twice: kills it)."""
        if self.session.cancellable:
            self.session.cancel()
            return
        problem = self.apply_problem()
        if problem:
            raise ValueError(problem)
        self.ensure_dependencies()
        from MachineUnlearningLib.strategies import get_strategy

        pn = self.parameters
        get_strategy(pn.strategy)  # an unknown name lists the valid ones
        job = unlearning_job(pn, self.subject_roles(), self._new_run_folder(pn.strategy), config)
        self.view.clear_log()
        self.session.start("unlearn", job, pn)

    def train_baseline(
        self, config: Mapping[str, Any] | None = None, epochs: int | None = None
    ) -> None:
        """Train a baseline on every training subject; it becomes the trained model."""
        if self.parameters is None or not is_set(self.parameters.cohort):
            raise ValueError("Choose the cohort folder first, or generate the demo cohort.")
        self.ensure_dependencies()
        job = baseline_job(self.parameters, self._new_run_folder("baseline"), config, epochs)
        self.view.clear_log()
        self.session.start("train", job, self.parameters)

    def generate_demo_cohort(
        self, folder: Path | None = None, held_out: int = DEMO_HELD_OUT
    ) -> None:
        """Write the synthetic demo cohort in the background; it becomes the cohort."""
        self.ensure_dependencies()
        folder = Path(folder) if folder is not None else self._new_run_folder("demo-cohort")
        self.view.clear_log()
        self.session.start_demo_cohort(folder, held_out, self.parameters)

    def cancel(self) -> None:
        self.session.cancel()

    def poll(self) -> bool:
        """Called by the widget's timer on the GUI thread; True while it must keep calling."""
        try:
            active = self.session.poll()
        except Exception:  # following the run must never break the GUI
            logger.exception("Following the background run failed")
            active = False
        return self.queries.poll() or active

    def shutdown(self) -> None:
        """Module cleanup / application exit: no worker outlives Slicer."""
        self.detach()
        self.scene.RemoveObserver(self._scene_observer)
        self.queries.cancel()
        self.session.kill()

    def scene_closing(self) -> None:
        """StartCloseEvent: the scene's nodes go; a run in flight never imports afterwards."""
        self.cases.follow(None)
        self._listed_cohort = None
        self.state.selected_subjects = ()
        self._show_no_results()
        text = self.session.scene_closing()
        if text:
            self._say(text)

    def _on_progress(self, progress: Progress) -> None:
        show_progress(self.state, progress)
        self._update_buttons()
        self.view.render(self.state)

    def _on_finished(self, kind: str, status: str, text: str) -> None:
        state, metrics = self.state, self.session.results.metrics
        state.status = text
        if status == "ok" and kind == "unlearn" and metrics:
            state.results_summary = (
                results.results_summary(metrics)
                + "\n"
                + results.verdict_text(self.session.results.forgetting)
            )
            state.compare_subjects = tuple(results.comparable_subjects(metrics))
            state.show_results = True
        self._update_buttons()
        self.view.render(state)

    # -- results ----------------------------------------------------------------------------

    def _show_no_results(self) -> None:
        self.state.results_summary, self.state.compare_subjects = "No results yet.", ()
        self.state.show_results = False

    def show_plot(self) -> None:
        self.session.show_plot()

    def compare(self, subject_id: str) -> None:
        """The subject's MRI with the original and the unlearned prediction in linked views."""
        image = self.cases.image(self.parameters.cohort, subject_id, DEFAULT_MODALITY)
        self.session.compare(self.parameters, subject_id, image)

    def open_output_folder(self) -> None:
        pn = self.parameters
        folder = pn.lastRun if is_set(pn.lastRun) else pn.output
        if is_set(folder):
            self.desktop.open_folder(Path(folder))

    def save_model(self, destination: Path | str) -> None:
        self.session.save_model(self.parameters, destination)
        self._say(f"Saved the unlearned model to {destination}")

    def delete_outputs(self) -> None:
        """ "Delete this run's outputs": asks (saying what goes and what stays), then deletes."""
        if self.parameters is None:
            return
        text = self.session.delete_outputs(self.parameters)
        if text:
            self._show_no_results()
            self._update_buttons()
            self._say(text)
