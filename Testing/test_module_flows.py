"""The Slicer module's flows as a clinician meets them, on the presenter against slicer-core.

Each test drives ``MachineUnlearningLib.app.presenter.Presenter`` the way the widget does (the
widget only forwards Qt signals to these methods) over a real MRML scene, real cohort folders
and real worker subprocesses (the real worker, or a stand-in speaking its event protocol where
the test must control the pace). Only what needs Slicer's Qt application is a stand-in
(module_doubles.py): the parameter node wrapper, the widget's drawing, dialogs, pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import slicer
from module_doubles import (
    MrmlParameters,
    RecordingDesktop,
    RecordingInstaller,
    RecordingView,
    write_metrics,
    write_stand_in_worker,
)

from MachineUnlearningLib.app.presenter import Presenter, WorkerSettings

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "MachineUnlearning" / "Resources" / "requirements.txt"
TIMEOUT_S = 300.0
OPEN_MODULES: list[Module] = []


@pytest.fixture(autouse=True)
def _close_the_modules():
    yield
    while OPEN_MODULES:
        OPEN_MODULES.pop().close()


class Module:
    """The module as the widget assembles it, over one scene (see MachineUnlearning.py)."""

    def __init__(self, tmp_path: Path, *, stand_in: bool, answers=None, installer=None):
        self.tmp_path = tmp_path
        self.scene = slicer.vtkMRMLScene()
        self.view = RecordingView()
        self.desktop = RecordingDesktop(answers)
        self.installer = installer or RecordingInstaller()
        self.release = tmp_path / "release"
        env = dict(os.environ)
        if stand_in:
            env["STAND_IN_RELEASE"] = str(self.release)
            env["STAND_IN_METRICS"] = str(write_metrics(tmp_path))
            entry = (str(write_stand_in_worker(tmp_path)),)
        else:
            entry = ("-m", "MachineUnlearningLib")
        worker = WorkerSettings(python_executable=sys.executable, entry=entry, base_env=env)
        self.presenter = Presenter(
            self.scene, self.view, self.desktop, self.installer, REQUIREMENTS, worker
        )
        # the widget's scene-close handling: detach on StartClose, re-attach on EndClose
        self._observers = [
            self.scene.AddObserver(
                slicer.vtkMRMLScene.StartCloseEvent, lambda c, e: self.presenter.attach(None)
            ),
            self.scene.AddObserver(
                slicer.vtkMRMLScene.EndCloseEvent, lambda c, e: self.presenter.attach(self.new_pn())
            ),
        ]
        self.pn = self.new_pn()
        self.presenter.attach(self.pn)
        OPEN_MODULES.append(self)

    def close(self) -> None:
        """What the widget's cleanup does; also stops any worker still running."""
        for tag in self._observers:
            self.scene.RemoveObserver(tag)
        self.presenter.shutdown()

    def new_pn(self) -> MrmlParameters:
        self.pn = MrmlParameters(self.scene)
        return self.pn

    @property
    def state(self):
        return self.view.state

    def poll_until(self, condition, timeout_s: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"not reached in {timeout_s:g} s: {self.state}"
            self.presenter.poll()
            time.sleep(0.02)

    def finish_run(self) -> None:
        self.release.touch()
        self.poll_until(lambda: not self.presenter.running)

    def nodes(self, class_name: str) -> list:
        collection = self.scene.GetNodesByClass(class_name)
        return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def shown_rows(table, column: str = "subject") -> list[str]:
    """What qMRMLTableView shows in ``column``, view row by view row.

    Mirrors ``qMRMLTableModel::updateModelFromMRML`` (Slicer v5.8.1 .. v5.12.0,
    Libs/MRML/Widgets/qMRMLTableModel.cxx): without ``UseColumnTitleAsColumnHeader`` the
    column names fill an editable first row (``tableRowOffset`` -1), so view row k is table
    row k - 1.
    """
    index = table.GetColumnIndex(column)
    offset = 0 if table.GetUseColumnTitleAsColumnHeader() else -1
    return [
        table.GetColumnName(index) if row < 0 else table.GetCellText(row, index)
        for row in range(offset, table.GetNumberOfRows())
    ]


def a_checkpoint_file(tmp_path: Path) -> Path:
    """A file where the trained model goes (Apply checks that it exists; the worker reads it)."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"not read by the stand-in worker")
    return path


def a_module_on(cohort: Path, tmp_path: Path, *, stand_in: bool = True, **kwargs) -> Module:
    module = Module(tmp_path, stand_in=stand_in, **kwargs)
    module.pn.output = tmp_path / "runs"
    module.pn.device = "cpu"
    module.pn.cohort = cohort
    return module


def view_row_of(module: Module, subject_id: str) -> int:
    return shown_rows(module.pn.subjectRoles).index(subject_id)


# -- Cases: the table shows what the module acts on (defect 1) ---------------------------------


def test_selecting_view_row_k_selects_the_subject_shown_in_row_k(a_tiny_cohort, tmp_path):
    module = a_module_on(a_tiny_cohort, tmp_path)
    table = module.pn.subjectRoles
    shown = shown_rows(table)
    ids = sorted(p.name for p in (a_tiny_cohort / "training").iterdir())
    ids += sorted(p.name for p in (a_tiny_cohort / "held-out").iterdir())
    assert sorted(shown) == sorted(ids), "the view shows a row that is no subject"
    assert shown_rows(table, "role")[0] in ("retain", "forget", "held-out")
    for row, subject_id in enumerate(shown):
        module.presenter.select_view_rows([row])
        assert module.state.selected_subjects == (subject_id,), f"view row {row}"


def test_forget_toggles_the_selected_subject_even_in_the_last_row(a_tiny_cohort, tmp_path):
    module = a_module_on(a_tiny_cohort, tmp_path)
    shown = shown_rows(module.pn.subjectRoles)
    training = [s for s in shown if (a_tiny_cohort / "training" / s).is_dir()]
    last = training[-1]
    module.presenter.select_view_rows([view_row_of(module, last)])
    module.presenter.toggle_forget()
    roles = module.presenter.subject_roles()
    assert roles[last] == "forget"
    assert [s for s, r in roles.items() if r == "forget"] == [last]


def test_load_mri_loads_the_selected_subjects_scan(a_tiny_cohort, tmp_path):
    module = a_module_on(a_tiny_cohort, tmp_path)
    module.presenter.select_view_rows([view_row_of(module, "070")])
    volume = module.presenter.load_mri()
    assert volume.GetName() == "070 reg_T1"
    assert module.desktop.calls[-1] == ("show_volume", volume)


def test_roles_are_read_case_insensitively_and_only_the_three_roles_count(a_tiny_cohort, tmp_path):
    module = a_module_on(a_tiny_cohort, tmp_path)
    table = module.pn.subjectRoles
    role = table.GetColumnIndex("role")
    row = shown_rows(table).index("070") - (0 if table.GetUseColumnTitleAsColumnHeader() else 1)
    table.SetCellText(row, role, " Forget ")
    assert module.presenter.subject_roles()["070"] == "forget"
    table.SetCellText(row, role, "train")
    assert "070" in module.state.apply_tooltip and "held-out" in module.state.apply_tooltip
    assert not module.state.apply_enabled


# -- Apply follows the roles with no further action (defect 2) ---------------------------------


def test_marking_one_subject_forget_enables_apply(a_tiny_cohort, tmp_path):
    module = a_module_on(a_tiny_cohort, tmp_path)
    module.pn.checkpoint = a_checkpoint_file(tmp_path)
    assert not module.state.apply_enabled
    assert "forget" in module.state.apply_tooltip
    module.presenter.select_view_rows([view_row_of(module, "070")])
    module.presenter.toggle_forget()
    assert module.state.apply_enabled, module.state.apply_tooltip


def test_editing_a_role_cell_in_the_table_enables_apply(a_tiny_cohort, tmp_path):
    module = a_module_on(a_tiny_cohort, tmp_path)
    module.pn.checkpoint = a_checkpoint_file(tmp_path)
    table = module.pn.subjectRoles
    row = shown_rows(table).index("148") - (0 if table.GetUseColumnTitleAsColumnHeader() else 1)
    table.SetCellText(row, table.GetColumnIndex("role"), "forget")  # what the table view does
    assert module.state.apply_enabled, module.state.apply_tooltip


# -- Run: start -> progress -> cancel ----------------------------------------------------------


def a_module_ready_to_apply(cohort: Path, tmp_path: Path, **kwargs) -> Module:
    module = a_module_on(cohort, tmp_path, **kwargs)
    if not module.pn.checkpoint or str(module.pn.checkpoint) in ("", "."):
        module.pn.checkpoint = a_checkpoint_file(tmp_path)
    module.presenter.select_view_rows([view_row_of(module, "070")])
    module.presenter.toggle_forget()
    return module


def test_apply_runs_in_the_background_shows_progress_and_cancel_stops_it(a_tiny_cohort, tmp_path):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path)
    module.presenter.apply()
    assert module.state.apply_text == "Cancel" and module.state.apply_enabled
    assert ("start_polling", None) in module.desktop.calls
    module.poll_until(lambda: (module.state.progress or 0) > 0)
    assert "epoch 1/3" in module.state.status
    module.presenter.apply()  # the button now says Cancel
    assert module.state.apply_text.startswith("Cancelling")
    module.poll_until(lambda: not module.presenter.running)
    assert module.presenter.last_status == "cancelled"
    assert module.state.apply_text == "Apply" and module.state.apply_enabled
    assert module.pn.resultsTable is None


# -- Results: finish -> metrics table, chart, compare views ------------------------------------


def test_a_finished_run_shows_metrics_chart_and_compare_views(
    a_tiny_cohort, a_tiny_trained_model, tmp_path
):
    module = a_module_on(a_tiny_cohort, tmp_path, stand_in=False)
    module.pn.checkpoint = a_tiny_trained_model
    module.pn.epochs = 1
    module.presenter.select_view_rows([view_row_of(module, "070")])
    module.presenter.toggle_forget()
    module.presenter.apply()
    module.poll_until(lambda: not module.presenter.running)
    assert module.presenter.last_status == "ok", module.view.log[-20:]
    table = module.pn.resultsTable
    assert table is not None and table.GetNumberOfRows() > 0
    assert module.state.results_table is table
    charts = [c for kind, c in module.desktop.calls if kind == "show_chart"]
    assert len(charts) == 1 and charts[0].GetNumberOfPlotSeriesNodes() >= 2
    assert module.state.compare_subjects[0] == "070"
    assert module.state.has_results and "forget Dice" in module.state.results_summary
    # the verdict against retrained models is shown, or why there is none
    assert "Forgetting audit" in module.state.results_summary
    module.presenter.compare("070")
    assert ("show_comparison", None) in module.desktop.calls
    segmentations = module.nodes("vtkMRMLSegmentationNode")
    assert sorted(s.GetName() for s in segmentations) == ["070 original", "070 unlearned"]


def test_a_second_run_replaces_the_first_runs_result_nodes(a_tiny_cohort, tmp_path):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path)
    for _ in range(2):
        module.release.unlink(missing_ok=True)
        module.presenter.apply()
        module.finish_run()
        assert module.presenter.last_status == "ok", module.view.log[-10:]
        time.sleep(1.1)  # run folders are named by the second
    assert len(module.nodes("vtkMRMLPlotChartNode")) == 1
    metrics_tables = [
        t for t in module.nodes("vtkMRMLTableNode") if t.GetName().startswith("Metrics")
    ]
    assert metrics_tables == [module.pn.resultsTable]


# -- Scene close / load during a run (defect 7) ------------------------------------------------


def test_closing_the_scene_during_a_run_asks_and_cancels_it(a_tiny_cohort, tmp_path):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path, answers=[True])
    module.presenter.apply()
    module.poll_until(lambda: (module.state.progress or 0) > 0)
    module.scene.Clear(0)
    assert module.desktop.questions and "cancel" in module.desktop.questions[-1].lower()
    module.poll_until(lambda: not module.presenter.running, timeout_s=60)
    assert module.presenter.last_status == "cancelled"
    assert module.nodes("vtkMRMLPlotChartNode") == []


def test_a_run_that_outlives_its_scene_never_imports_into_the_next_one(a_tiny_cohort, tmp_path):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path, answers=[False])  # keep running
    module.presenter.apply()
    module.poll_until(lambda: (module.state.progress or 0) > 0)
    run_folder = Path(module.presenter.session.folder)
    module.scene.Clear(0)
    module.pn.cohort = a_tiny_cohort  # the clinician starts over in the new scene
    module.finish_run()
    assert (run_folder / "metrics.json").is_file()  # the run itself finished
    assert module.nodes("vtkMRMLPlotChartNode") == []
    assert [t for t in module.nodes("vtkMRMLTableNode") if t.GetName().startswith("Metrics")] == []
    assert module.pn.resultsTable is None and str(module.pn.lastRun) in ("", ".")
    assert str(run_folder) in module.state.status


# -- Opening the module imports neither torch nor monai (defect 5) -----------------------------

OPEN_THE_MODULE = textwrap.dedent(
    """
    import ast, sys, time
    from pathlib import Path
    sys.path.insert(0, {testing!r})
    module_file = Path({module_file!r})
    for node in ast.walk(ast.parse(module_file.read_text())):
        name = getattr(node, "module", None) or ""
        if isinstance(node, ast.ImportFrom) and name.startswith("MachineUnlearningLib"):
            __import__(name)
    import slicer
    from module_doubles import MrmlParameters, RecordingDesktop, RecordingInstaller, RecordingView
    from MachineUnlearningLib.app.presenter import Presenter, WorkerSettings
    scene = slicer.vtkMRMLScene()
    view = RecordingView()
    worker = WorkerSettings(python_executable=sys.executable)
    requirements = Path({requirements!r})
    installer, desktop = RecordingInstaller(), RecordingDesktop()
    presenter = Presenter(scene, view, desktop, installer, requirements, worker)
    pn = MrmlParameters(scene)
    pn.cohort = Path({cohort!r})
    pn.checkpoint = Path({checkpoint!r})
    presenter.attach(pn)
    deadline = time.monotonic() + 300
    while "ResNet-10" not in view.state.model_summary and time.monotonic() < deadline:
        presenter.poll()
        time.sleep(0.05)
    print("SUMMARY", view.state.model_summary)
    print("HEAVY", sorted(m for m in ("torch", "monai") if m in sys.modules))
    """
)


def test_opening_the_module_imports_neither_torch_nor_monai(
    a_tiny_cohort, a_tiny_trained_model, tmp_path
):
    script = OPEN_THE_MODULE.format(
        testing=str(Path(__file__).parent),
        module_file=str(REPO / "MachineUnlearning" / "MachineUnlearning.py"),
        requirements=str(REQUIREMENTS),
        cohort=str(a_tiny_cohort),
        checkpoint=str(a_tiny_trained_model),
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["HEAVY"] == "[]", result.stdout
    assert "ResNet-10" in lines["SUMMARY"]  # the summary came from the worker
    assert "trained on 7 subject(s)" in lines["SUMMARY"]


def test_a_file_that_is_no_model_is_reported_by_the_worker(tmp_path):
    module = Module(tmp_path, stand_in=False)
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a checkpoint", encoding="utf-8")
    module.presenter.set_path("checkpoint", str(not_a_model))
    assert "background" in module.state.model_summary  # asked, not read here
    module.poll_until(lambda: "Cannot read" in module.state.model_summary, timeout_s=120)
    assert str(not_a_model) in module.state.model_summary
    assert "torch.save" in module.state.model_summary  # the engine's hint comes along


# -- The Model section's MONAI bundle folder (issue 13, item 2) -------------------------------


def test_a_bundle_folder_is_the_model_described_by_the_worker_and_apply_says_why(
    a_tiny_cohort, tmp_path
):
    from conftest import TINY_NETWORKS, write_zoo_bundle
    from MachineUnlearningLib.app.parameters import unlearning_job

    network = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 3, "out_channels": 4}
    bundle = write_zoo_bundle(tmp_path / "bundle", {**network, **TINY_NETWORKS["monai-unet"]})
    module = a_module_on(a_tiny_cohort, tmp_path, stand_in=False)
    module.presenter.select_view_rows([view_row_of(module, "070")])
    module.presenter.toggle_forget()
    assert not module.state.apply_enabled and "MONAI bundle" in module.state.apply_tooltip
    module.presenter.set_path("bundle", str(bundle))
    assert module.pn.bundle == str(bundle) and module.state.bundle_text == str(bundle)
    assert "background" in module.state.model_summary  # asked of the worker, not read here
    module.poll_until(lambda: "MONAI bundle" in module.state.model_summary, timeout_s=120)
    summary = module.state.model_summary
    assert summary.startswith("MONAI bundle 'Tiny brain tissue segmentation' 0.1.0 (monai-unet")
    assert "outputs: background, gray matter, white matter, cerebrospinal fluid" in summary
    assert module.state.apply_enabled, module.state.apply_tooltip
    job = unlearning_job(module.pn, module.presenter.subject_roles(), tmp_path / "run")
    assert (job.bundle, job.checkpoint) == (str(bundle), None)

    module.presenter.set_path("checkpoint", str(a_checkpoint_file(tmp_path)))
    assert not module.state.apply_enabled and "not both" in module.state.apply_tooltip
    module.presenter.set_path("checkpoint", "")
    (tmp_path / "plain-folder").mkdir()
    module.presenter.set_path("bundle", str(tmp_path / "plain-folder"))
    assert not module.state.apply_enabled
    assert "is not a MONAI bundle: it has no configs/ folder" in module.state.apply_tooltip
    module.presenter.set_path("bundle", str(tmp_path / "gone"))
    assert "does not exist" in module.state.apply_tooltip
    assert "does not exist" in module.state.model_summary
    module.presenter.set_path("bundle", str(bundle))
    assert module.state.apply_enabled, module.state.apply_tooltip


# -- Refresh devices never blocks (defect 6) ---------------------------------------------------


def test_refreshing_the_device_list_returns_at_once_and_fills_it_later(tmp_path):
    module = Module(tmp_path, stand_in=True)
    module.presenter.refresh_devices()  # the stand-in lists GPUs only once released
    assert module.state.devices_pending, "refresh_devices waited for the GPU listing"
    assert "cuda:0" not in dict(module.state.devices)
    module.release.touch()
    module.poll_until(lambda: not module.state.devices_pending, timeout_s=60)
    devices = dict(module.state.devices)
    assert list(devices)[0] == "auto" and list(devices)[-1] == "cpu"
    assert "Stand-in GPU" in devices["cuda:0"] and "3.0 of 8.0 GiB free" in devices["cuda:0"]


# -- Outputs are personal data (defect 8) and path boxes (defect 9) -----------------------------


def test_the_default_output_folder_is_local_and_shown(tmp_path):
    from MachineUnlearningLib.app.output_folders import default_output_root

    module = Module(tmp_path, stand_in=True)
    assert module.state.output_text == str(default_output_root())
    assert "Documents" not in module.state.output_text
    module.presenter.set_path("output", module.state.output_text)  # the box echoes it back
    assert module.pn.output == "", "opening the module changed the scene"
    module.presenter.set_path("output", str(tmp_path / "elsewhere"))  # changeable
    assert module.pn.output == str(tmp_path / "elsewhere")
    assert module.state.output_text == str(tmp_path / "elsewhere")


def test_unset_path_boxes_are_empty(tmp_path):
    module = Module(tmp_path, stand_in=True)
    assert module.state.checkpoint_text == ""
    assert module.state.cohort_text == ""
    assert "No model selected" in module.state.model_summary


def test_delete_this_runs_outputs_says_what_goes_and_keeps_the_deletion_record(
    a_tiny_cohort, tmp_path
):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path, answers=[True])
    module.presenter.apply()
    module.finish_run()
    run = Path(module.pn.lastRun)
    assert module.state.can_delete_outputs
    module.presenter.delete_outputs()
    question = module.desktop.questions[-1]
    for word in ("predictions", "report.html", "unlearned.pt", "figures", str(run)):
        assert word in question, word
    assert "deletion-record.json" in question and "keep" in question.lower()
    assert sorted(p.name for p in run.iterdir()) == ["deletion-record.json"]
    assert module.pn.resultsTable is None and module.nodes("vtkMRMLPlotChartNode") == []
    assert not module.state.has_results and str(run) in module.state.status


def test_deleting_outputs_does_nothing_unless_confirmed(a_tiny_cohort, tmp_path):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path, answers=[False])
    module.presenter.apply()
    module.finish_run()
    run = Path(module.pn.lastRun)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    module.presenter.delete_outputs()
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert module.pn.resultsTable is not None


def test_buttons_that_start_runs_are_disabled_while_a_run_is_active(a_tiny_cohort, tmp_path):
    module = a_module_ready_to_apply(a_tiny_cohort, tmp_path)
    module.presenter.apply()
    assert not module.state.can_generate_demo_cohort and not module.state.can_train_baseline
    module.finish_run()
    assert module.state.can_generate_demo_cohort and module.state.can_train_baseline


# -- The budget box follows the preset's unit (issue 11: step budgets) -------------------------


@pytest.mark.parametrize(
    "strategy, expected",
    [("noisy-label", ({"epochs": 7}, {})), ("salun", ({"epochs": None}, {"steps": 7}))],
)
def test_the_budget_box_is_epochs_for_paper_presets_and_steps_for_literature_methods(
    a_tiny_cohort, tmp_path, strategy, expected
):
    """A clinician who sets the budget to 7 for salun gets 7 optimiser steps, not an exit-2
    refusal of ``--epochs`` (literature presets count steps)."""
    from MachineUnlearningLib.app.parameters import unlearning_job
    from MachineUnlearningLib.strategies import get_strategy

    module = a_module_on(a_tiny_cohort, tmp_path)
    module.pn.checkpoint = str(a_checkpoint_file(tmp_path))
    module.pn.strategy = strategy
    module.pn.epochs = 7
    job = unlearning_job(module.pn, {"070": "forget", "1": "retain"}, tmp_path / "run")
    assert {"epochs": job.epochs} == expected[0]
    assert job.strategy_params == expected[1]
    given = {**job.strategy_params, **({"epochs": job.epochs} if job.epochs else {})}
    resolved = get_strategy(strategy).resolve(given)  # what the unlearn job does; no refusal
    assert resolved[get_strategy(strategy).budget] == 7
