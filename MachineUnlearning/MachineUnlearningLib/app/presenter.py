"""The Slicer module's presenter: everything the widget shows and does, as plain Python.

The widget (MachineUnlearning.py) only connects Qt signals to the methods here and draws
:class:`ViewState` in :meth:`View.render`. The presenter turns the parameters into jobs, runs
them through :class:`~MachineUnlearningLib.app.runner.RunController`, imports the results with
``scene.py`` and decides what is enabled and why. Tested in pytest against slicer-core.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vtkmodules.vtkCommonCore import vtkCommand

from MachineUnlearningLib.app import dependencies, results, roles
from MachineUnlearningLib.app import scene as mrml
from MachineUnlearningLib.app.parameters import (
    Parameters,
    baseline_job,
    is_set,
    unlearning_job,
    unlearning_problem,
)
from MachineUnlearningLib.app.runner import WORKER_MODULE_ENTRY, Progress, RunController

logger = logging.getLogger(__name__)

DEFAULT_MODALITY = "reg_T1"
IDLE_STATES = ("idle", "done", "failed", "cancelled")
CANCEL_STATES = ("starting", "running")


@dataclass
class ViewState:
    """Everything the widget draws (``progress`` None = a busy bar)."""

    apply_text: str = "Apply"
    apply_enabled: bool = False
    apply_tooltip: str = ""
    can_train_baseline: bool = False
    can_generate_demo_cohort: bool = True
    has_results: bool = False
    can_open_output_folder: bool = False
    checkpoint_text: str = ""
    cohort_text: str = ""
    output_text: str = ""
    model_summary: str = ""
    strategies: tuple[tuple[str, str], ...] = ()
    strategy: str = ""
    strategy_description: str = ""
    devices: tuple[tuple[str, str], ...] = ()
    device: str = "auto"
    subject_table: Any = None
    results_table: Any = None
    selected_subjects: tuple[str, ...] = ()
    progress: float | None = 0.0
    status: str = ""
    results_summary: str = "No results yet."
    compare_subjects: tuple[str, ...] = ()
    show_results: bool = False


class View(Protocol):
    """The widget, as the presenter sees it."""

    def render(self, state: ViewState) -> None: ...

    def append_log(self, line: str) -> None: ...

    def clear_log(self) -> None: ...


class Desktop(Protocol):
    """Slicer application calls that are not MRML (layouts, dialogs, the poll timer)."""

    def confirm(self, text: str, title: str) -> bool: ...

    def show_chart(self, chart: Any) -> None: ...

    def show_volume(self, volume: Any) -> None: ...

    def show_comparison(self) -> None: ...

    def open_folder(self, path: Path) -> None: ...

    def start_polling(self) -> None: ...


@dataclass(frozen=True)
class WorkerSettings:
    """How worker processes start (see ``WorkerProcess``)."""

    python_executable: str | None = None
    entry: tuple[str, ...] = WORKER_MODULE_ENTRY
    base_env: Mapping[str, str] | None = None
    pythonpath: tuple[str, ...] = ()


@dataclass
class _Run:
    kind: str = ""
    pending_cohort: Path | None = None


class Presenter:
    """The module's behaviour, over a scene, a view, the desktop and an installer.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        view, desktop: see :class:`View`, :class:`Desktop`.
        installer: the Slicer/PyTorchUtils calls (``dependencies.Installer``).
        requirements: Resources/requirements.txt.
        worker: how worker processes start.
        scene_folder: Slicer's default scene folder (the default output root is below it).
    """

    def __init__(
        self,
        scene: Any,
        view: View,
        desktop: Desktop,
        installer: dependencies.Installer,
        requirements: Path,
        worker: WorkerSettings = WorkerSettings(),
        scene_folder: Path | str = ".",
    ) -> None:
        self.scene = scene
        self.view = view
        self.desktop = desktop
        self.installer = installer
        self.requirements = Path(requirements)
        self.worker = worker
        self.scene_folder = Path(scene_folder)
        self.state = ViewState()
        self.parameters: Parameters | None = None
        self.last_status: str | None = None
        self._observer: int | None = None
        self._listed_cohort: str | None = None
        self._described_checkpoint: str | None = None
        self._run = _Run()
        self._metrics: dict | None = None
        self._chart: Any = None
        self.controller = RunController(
            on_progress=self._on_progress,
            on_log=self.view.append_log,
            on_finished=self._on_finished,
            import_results=self._import_results,
            python_executable=worker.python_executable,
            entry=worker.entry,
            base_env=worker.base_env,
            pythonpath=worker.pythonpath,
        )
        self.state.strategies = tuple(self._strategy_presets())
        self.state.devices = tuple(self.available_devices(query_gpus=False))

    # -- parameters -------------------------------------------------------------------------

    def attach(self, parameters: Parameters | None) -> None:
        """Follow ``parameters`` (None: follow nothing)."""
        self.detach()
        self.parameters = parameters
        if parameters is not None:
            self._observer = parameters.AddObserver(
                vtkCommand.ModifiedEvent, lambda caller, event: self.refresh()
            )
            self.refresh()

    def detach(self) -> None:
        if self.parameters is not None and self._observer is not None:
            self.parameters.RemoveObserver(self._observer)
        self._observer = None
        self.parameters = None

    def set_strategy(self, name: str) -> None:
        if self.parameters is not None and name:
            self.parameters.strategy = name

    def set_device(self, value: str) -> None:
        if self.parameters is not None and value:
            self.parameters.device = value

    def set_path(self, name: str, text: str) -> None:
        """``name`` is checkpoint, cohort or output; ``text`` what the path box holds."""
        if self.parameters is not None:
            setattr(self.parameters, name, Path(text))

    # -- what the view shows ----------------------------------------------------------------

    def refresh(self) -> None:
        pn = self.parameters
        if pn is None:
            return
        state = self.state
        state.strategy = pn.strategy
        state.device = pn.device
        state.subject_table = pn.subjectRoles
        state.results_table = pn.resultsTable
        state.checkpoint_text = str(pn.checkpoint)
        state.cohort_text = str(pn.cohort)
        state.output_text = str(pn.output)
        state.strategy_description = dict(state.strategies).get(pn.strategy, "")
        if str(pn.cohort) != self._listed_cohort:
            self._listed_cohort = str(pn.cohort)
            try:
                self.update_subject_roles()
            except Exception as error:
                state.status = str(error)
        if str(pn.checkpoint) != self._described_checkpoint:
            self._described_checkpoint = str(pn.checkpoint)
            state.model_summary = self.describe_checkpoint(pn.checkpoint)
        self._update_buttons()
        self.view.render(state)

    def _update_buttons(self) -> None:
        pn, state = self.parameters, self.state
        active = self.controller.state.value not in IDLE_STATES
        try:
            problem = unlearning_problem(pn, self.subject_roles()) if pn else "No parameters."
        except Exception as error:
            problem = str(error)
        if not active:
            state.apply_text = "Apply"
            state.apply_enabled = not problem
            state.apply_tooltip = problem or "Run the unlearning in the background."
        state.can_train_baseline = not active and pn is not None and is_set(pn.cohort)
        state.can_generate_demo_cohort = not active
        has_run = pn is not None and is_set(pn.lastRun)
        state.has_results = has_run and not active
        state.can_open_output_folder = has_run

    # -- cases ------------------------------------------------------------------------------

    def update_subject_roles(self) -> None:
        """Fill the subject table from the cohort; keeps 'forget' marks of subjects still there."""
        pn = self.parameters
        if pn is None or not is_set(pn.cohort) or not Path(pn.cohort).is_dir():
            return
        from MachineUnlearningLib.data.cohort import discover_cohort
        from MachineUnlearningLib.runtime.errors import InvalidInputError

        try:
            subjects = [(s.subject_id, s.group) for s in discover_cohort(pn.cohort)]
        except InvalidInputError as error:
            logger.info("No subjects listed: %s %s", error, error.hint)
            return
        new_roles, groups = roles.roles_for_cohort(subjects, self.subject_roles())
        pn.subjectRoles = mrml.subject_roles_to_table(
            self.scene, new_roles, table=pn.subjectRoles, groups=groups
        )

    def subject_roles(self) -> dict[str, str]:
        if self.parameters is None or self.parameters.subjectRoles is None:
            return {}
        return mrml.table_to_subject_roles(self.parameters.subjectRoles)

    def set_subject_roles(self, new_roles: Mapping[str, str]) -> None:
        pn = self.parameters
        groups = {s: ("held-out" if r == "held-out" else "training") for s, r in new_roles.items()}
        pn.subjectRoles = mrml.subject_roles_to_table(
            self.scene, new_roles, table=pn.subjectRoles, groups=groups
        )

    def select_view_rows(self, rows: list[int]) -> None:
        """The rows selected in the Cases table view."""
        table = self.parameters.subjectRoles if self.parameters else None
        self._selected_rows = sorted(set(rows))
        self.state.selected_subjects = tuple(roles.subject_at_row(table, r) for r in rows)
        self.view.render(self.state)

    def toggle_forget(self) -> None:
        """Selected training subjects: retain <-> forget (held-out subjects stay held out)."""
        self.set_subject_roles(roles.toggled(self.subject_roles(), self.state.selected_subjects))

    def load_mri(self, modality: str = DEFAULT_MODALITY) -> Any:
        """Load the selected subject's MRI (default reg_T1) and show it in the slice views."""
        if not self.state.selected_subjects:
            self._say("Select a subject in the table first.")
            return None
        subject_id = self.state.selected_subjects[0]
        volume = mrml.load_volume(
            self.scene, self.subject_image(subject_id, modality), f"{subject_id} {modality}"
        )
        self.desktop.show_volume(volume)
        return volume

    def subject_image(self, subject_id: str, modality: str = DEFAULT_MODALITY) -> Path:
        from MachineUnlearningLib.data.cohort import discover_cohort

        for subject in discover_cohort(self.parameters.cohort):
            if subject.subject_id == subject_id:
                return Path(subject.images[modality])
        raise ValueError(f"Subject {subject_id} is not in the cohort {self.parameters.cohort}.")

    # -- model and devices ------------------------------------------------------------------

    def describe_checkpoint(self, path: Any) -> str:
        """Architecture, labels and trained-on subjects of a checkpoint, as one short text."""
        if not is_set(path):
            return "No model selected: choose a checkpoint or train a baseline."
        if not Path(path).is_file():
            return f"{path} does not exist."
        if not dependencies.torch_installed(self.installer) or dependencies.missing_requirements(
            self.requirements
        ):
            return "Install the dependencies (Apply does it) to read the model."
        try:
            from MachineUnlearningLib.model.checkpoint import load_checkpoint

            loaded = load_checkpoint(path)
        except Exception as error:
            return f"Cannot read this model: {error}"
        config, metadata = loaded.config, loaded.metadata
        text = (
            f"MedicalNet ResNet-{config.depth} (shortcut {config.shortcut_type}, width "
            f"{config.base_width}), {config.in_channels} input(s), {config.num_classes} classes"
        )
        if metadata.get("label_policy"):
            text += f"; labels: {metadata['label_policy']}"
        trained_on = (metadata.get("subject_ids") or {}).get("trained_on")
        if trained_on:
            text += f"; trained on {len(trained_on)} subject(s): {', '.join(trained_on)}"
        return text

    @staticmethod
    def _strategy_presets() -> list[tuple[str, str]]:
        from MachineUnlearningLib.strategies import STRATEGIES

        return [(name, strategy.summary) for name, strategy in STRATEGIES.items()]

    def available_devices(self, query_gpus: bool = True) -> list[tuple[str, str]]:
        """(value, label): auto, each CUDA GPU with its free memory, cpu."""
        devices = [("auto", "auto (GPU if available)")]
        if query_gpus:
            dependencies.ensure_torch(self.installer)
            for index, name, free, total in self._query_gpus():
                label = f"GPU {index}: {name} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
                devices.append((f"cuda:{index}", label))
        devices.append(("cpu", "CPU"))
        return devices

    def _query_gpus(self) -> list:
        script = (
            "import json, torch\n"
            "gpus = []\n"
            "if torch.cuda.is_available():\n"
            "    for i in range(torch.cuda.device_count()):\n"
            "        free, total = torch.cuda.mem_get_info(i)\n"
            "        gpus.append([i, torch.cuda.get_device_name(i), free, total])\n"
            "print(json.dumps(gpus))\n"
        )
        result = subprocess.run(
            [self.worker.python_executable or sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(self.worker.base_env) if self.worker.base_env else None,
        )
        if result.returncode != 0:
            raise RuntimeError(f"Listing GPUs failed:\n{result.stderr[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def refresh_devices(self) -> None:
        self.state.devices = tuple(self.available_devices(query_gpus=True))
        self.view.render(self.state)

    # -- runs -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.controller.active

    def new_run_folder(self, label: str) -> Path:
        pn = self.parameters
        base = Path(pn.output) if is_set(pn.output) else self.scene_folder / "MachineUnlearning"
        return base / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}"

    def apply(self, config: Mapping[str, Any] | None = None) -> None:
        """Apply starts the unlearning run; while one runs it cancels it."""
        if self.controller.state.value in (*CANCEL_STATES, "cancelling"):
            self.controller.cancel()
            return
        self.view.clear_log()
        self.start_unlearning(config)

    def start_unlearning(self, config: Mapping[str, Any] | None = None) -> None:
        dependencies.ensure_dependencies(self.installer, self.requirements)
        pn = self.parameters
        problem = unlearning_problem(pn, self.subject_roles())
        if problem:
            raise ValueError(problem)
        from MachineUnlearningLib.strategies import get_strategy

        get_strategy(pn.strategy)
        job = unlearning_job(pn, self.subject_roles(), self.new_run_folder(pn.strategy), config)
        self._start("unlearn", job)

    def train_baseline(
        self, config: Mapping[str, Any] | None = None, epochs: int | None = None
    ) -> None:
        dependencies.ensure_dependencies(self.installer, self.requirements)
        if not is_set(self.parameters.cohort):
            raise ValueError("Choose the cohort folder first, or generate the demo cohort.")
        self.view.clear_log()
        self._start(
            "train", baseline_job(self.parameters, self.new_run_folder("baseline"), config, epochs)
        )

    def generate_demo_cohort(self, folder: Path | None = None, held_out: int = 3) -> None:
        """Write the synthetic demo cohort in the background; sets the cohort when done."""
        dependencies.ensure_dependencies(self.installer, self.requirements)
        folder = Path(folder) if folder is not None else self.new_run_folder("demo-cohort")
        self._run = _Run(kind="make-cohort", pending_cohort=folder)
        arguments = ["--out", str(folder), "--held-out", str(held_out)]
        self.controller.start_command("make-cohort", arguments, device="cpu", events=False)
        self.desktop.start_polling()

    def _start(self, kind: str, job: Any) -> None:
        self._run = _Run(kind=kind)
        self.controller.start(job)
        self.desktop.start_polling()

    def cancel(self) -> None:
        self.controller.cancel()

    def poll(self) -> bool:
        """Called by the widget's timer; True while it must keep calling."""
        try:
            return self.controller.poll()
        except Exception:
            logger.exception("Following the background run failed")
            return False

    def shutdown(self) -> None:
        """Module cleanup / application exit: no worker outlives Slicer."""
        self.detach()
        if self.controller.active and self.controller.worker is not None:
            self.controller.worker.kill_tree()

    def _on_progress(self, progress: Progress) -> None:
        state = self.state
        value = progress.state.value
        if value in CANCEL_STATES:
            state.apply_text, state.apply_enabled = "Cancel", True
            state.apply_tooltip = "Stop the run after its current step."
        elif value == "cancelling":
            state.apply_text, state.apply_enabled = "Cancelling… (click to stop now)", True
            state.apply_tooltip = "Kill the background process at once."
        elif value == "importing":
            state.apply_enabled = False
        if progress.fraction is None and value in ("starting", "running", "importing"):
            state.progress = None
        else:
            state.progress = progress.fraction or 0.0
        phase = f"{progress.phase}: " if progress.phase and value == "running" else ""
        state.status = phase + progress.text
        self._update_buttons()
        self.view.render(state)

    def _on_finished(self, status: str, outputs: dict) -> None:
        self.last_status = status
        kind = self._run.kind
        if status == "ok" and kind == "make-cohort" and self._run.pending_cohort is not None:
            self.parameters.cohort = self._run.pending_cohort
        if status == "ok" and kind == "unlearn":
            self.state.results_summary = results.results_summary(self._last_metrics())
            self.state.compare_subjects = tuple(results.comparable_subjects(self._last_metrics()))
            self.state.show_results = True
        self.state.status = f"{kind}: {self.controller.message}"
        self._update_buttons()
        self.view.render(self.state)

    # -- results ----------------------------------------------------------------------------

    def _import_results(self, job: Any, outputs: dict) -> None:
        pn = self.parameters
        output = Path(job.output)
        if job.command in ("train", "retrain"):
            pn.checkpoint = Path(outputs.get("checkpoint") or output / "model.pt")
            return
        imported = results.import_metrics(
            self.scene, outputs.get("metrics") or output / "metrics.json"
        )
        self._metrics = imported.metrics
        self._chart = imported.chart
        pn.resultsTable = imported.table
        self.show_plot()
        pn.lastRun = output

    def show_plot(self) -> None:
        if self._chart is not None:
            self.desktop.show_chart(self._chart)

    def _last_metrics(self) -> dict:
        pn = self.parameters
        if self._metrics is None and pn is not None and is_set(pn.lastRun):
            path = Path(pn.lastRun) / "metrics.json"
            if path.is_file():
                self._metrics = results.read_metrics(path)
        return self._metrics or {}

    def compare(self, subject_id: str) -> None:
        """The subject's MRI with the original and the unlearned prediction in linked views."""
        if not subject_id:
            raise ValueError("Choose a subject to compare.")
        self.desktop.show_comparison()
        results.load_comparison(
            self.scene,
            Path(self.parameters.lastRun),
            self._last_metrics(),
            self.subject_image(subject_id),
            subject_id,
            DEFAULT_MODALITY,
        )

    def output_folder(self) -> Path | None:
        pn = self.parameters
        if pn is not None and is_set(pn.lastRun):
            return Path(pn.lastRun)
        return Path(pn.output) if pn is not None and is_set(pn.output) else None

    def open_output_folder(self) -> None:
        folder = self.output_folder()
        if folder is not None:
            self.desktop.open_folder(folder)

    def save_model(self, destination: Path | str) -> None:
        import shutil

        source = Path(self.parameters.lastRun) / "unlearned.pt"
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist.")
        shutil.copy2(source, destination)
        self._say(f"Saved the unlearned model to {destination}")

    def _say(self, text: str) -> None:
        self.state.status = text
        self.view.render(self.state)
