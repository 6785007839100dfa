"""What the widget draws and the calls it makes for the presenter: its whole contract.

:class:`ViewState` is everything MachineUnlearning.py shows; :class:`View` is the widget and
:class:`Desktop` the Slicer application calls that are not MRML (dialogs, layouts, the poll
timer). Both are Protocols so that tests stand in for what needs Slicer's Qt application.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from MachineUnlearningLib.app.runner import Progress, RunState


@dataclass
class ViewState:
    """Everything the widget draws. ``progress`` None means a busy (indeterminate) bar."""

    apply_text: str = "Apply"
    apply_enabled: bool = False
    apply_tooltip: str = ""
    can_train_baseline: bool = False
    can_generate_demo_cohort: bool = True
    can_edit_roles: bool = False
    has_results: bool = False
    can_open_output_folder: bool = False
    can_delete_outputs: bool = False
    checkpoint_text: str = ""
    bundle_text: str = ""
    cohort_text: str = ""
    output_text: str = ""
    model_summary: str = ""
    strategies: tuple[tuple[str, str], ...] = ()
    strategy: str = ""
    strategy_description: str = ""
    devices: tuple[tuple[str, str], ...] = ()
    device: str = "auto"
    devices_pending: bool = False
    subject_table: Any = None
    results_table: Any = None
    selected_subjects: tuple[str, ...] = ()
    selection_text: str = ""
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
    """Slicer application calls that are not MRML: dialogs, layouts, the poll timer."""

    def confirm(self, text: str, title: str) -> bool: ...

    def show_chart(self, chart: Any) -> None: ...

    def show_volume(self, volume: Any) -> None: ...

    def show_comparison(self) -> None: ...

    def open_folder(self, path: Path) -> None: ...

    def start_polling(self) -> None:
        """Call :meth:`Presenter.poll` every ~200 ms until it returns False."""


def show_progress(state: ViewState, progress: Progress) -> None:
    """Apply, the progress bar and the status line for a run's ``progress``.

    While a run starts or runs, Apply reads Cancel; once cancelling, a second click kills the
    worker; while importing it is disabled (slicer-extension.md section 8).
    """
    value = progress.state
    if value in (RunState.STARTING, RunState.RUNNING):
        state.apply_text, state.apply_enabled = "Cancel", True
        state.apply_tooltip = "Stop the run after its current step."
    elif value == RunState.CANCELLING:
        state.apply_text, state.apply_enabled = "Cancelling… (click to stop now)", True
        state.apply_tooltip = "Kill the background process at once."
    elif value == RunState.IMPORTING:
        state.apply_enabled = False
    busy = value in (RunState.STARTING, RunState.RUNNING, RunState.IMPORTING)
    state.progress = None if progress.fraction is None and busy else progress.fraction or 0.0
    phase = f"{progress.phase}: " if progress.phase and value == RunState.RUNNING else ""
    state.status = phase + progress.text
