"""MachineUnlearning: the 3D Slicer scripted module (metadata, parameter node, widget, self-test).

The widget connects Qt signals to ``MachineUnlearningLib.app.presenter.Presenter`` and draws
its ViewState; the rest is plain Python in MachineUnlearningLib/app, tested against slicer-core.
This file must run on Python 3.9 (Slicer 5.8) far enough to say that it is unsupported.
"""

import importlib.util
import os
import sys
import time
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
DOCS_URL = "https://github.com/SlicerMachineUnlearning/SlicerMachineUnlearning#readme"
POLL_INTERVAL_MS = 200
PATHS = ("checkpoint", "bundle", "cohort", "output")


class MachineUnlearning(ScriptedLoadableModule):
    """Module description shown by Slicer (nothing heavy happens here)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Machine Unlearning")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []  # PyTorch: EXTENSION_DEPENDS, checked on first use
        self.parent.contributors = ["SlicerMachineUnlearning developers"]
        self.parent.helpText = _(
            "Makes a trained 3D brain-MRI segmentation model forget one or more subjects "
            "(subject-level machine unlearning, as the GDPR right to erasure asks) and shows "
            "what changed. Needs 3D Slicer 5.10 or later. Runs write to a local folder (not "
            "Documents, which is often synced to a cloud), changeable under Run; 'Delete this "
            "run's outputs' removes a run's predictions, report, model and figures. See the "
            "<a href='{url}'>documentation</a>."
        ).format(url=DOCS_URL)
        self.parent.acknowledgementText = _(
            "Uses the MedicalNet 3D ResNet architecture (Chen et al., 2019) and the MRBrainS18 "
            "data layout (Kuijf et al.). PyTorch comes from the SlicerPyTorch extension."
        )


@parameterNodeWrapper
class MachineUnlearningParameterNode:
    """What the GUI edits (app/parameters.py); paths are str, "" when unset (Path shows ".")."""

    checkpoint: str = ""
    bundle: str = ""
    cohort: str = ""
    output: str = ""
    strategy: str = "noisy-label"
    fixDecoder: bool = False
    epochs: Annotated[int, WithinRange(0, 1000)] = 0
    learningRate: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    stopWhenIndistinguishable: bool = False
    device: str = "auto"
    subjectRoles: vtkMRMLTableNode
    resultsTable: vtkMRMLTableNode
    lastRun: str = ""


class MachineUnlearningLogic(ScriptedLoadableModuleLogic):
    """Only the parameter node; the behaviour is the presenter's."""

    def getParameterNode(self):
        return MachineUnlearningParameterNode(super().getParameterNode())


class MachineUnlearningWidget(ScriptedLoadableModuleWidget):
    """Connects Qt signals to the presenter and is the Slicer side of its Protocols: View
    (draws its ViewState), Desktop and Installer (thin Slicer calls); decides nothing."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.presenter, self._pn, self._guiTag = None, None, None
        self.logic = MachineUnlearningLogic()
        if MODULE_DIR not in sys.path:  # Slicer usually has it there already
            sys.path.insert(0, MODULE_DIR)
        from MachineUnlearningLib.app.support import unsupported_message

        problem = unsupported_message(sys.version_info[:3], slicer.app.applicationVersion)
        if problem:  # Slicer 5.8 and older: one clear message, not tracebacks
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            return
        from MachineUnlearningLib.app.presenter import Presenter, WorkerSettings, slicer_python

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MachineUnlearning.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onTimer)
        env = slicer.util.startupEnvironment()  # the worker: PythonSlicer -m MachineUnlearningLib
        worker = WorkerSettings(slicer_python(), base_env=env, pythonpath=(MODULE_DIR,))
        p = Presenter(
            slicer.mrmlScene, self, self, self, self.resourcePath("requirements.txt"), worker
        )
        self.presenter = p
        ui = self.ui
        for button, action in (
            (ui.applyButton, p.apply),
            (ui.trainBaselineButton, p.train_baseline),
            (ui.generateDemoCohortButton, p.generate_demo_cohort),
            (ui.toggleForgetButton, p.toggle_forget),
            (ui.loadMriButton, p.load_mri),
            (ui.refreshDevicesButton, p.refresh_devices),
            (ui.showPlotButton, p.show_plot),
            (ui.openOutputFolderButton, p.open_output_folder),
            (ui.deleteOutputsButton, p.delete_outputs),
            (ui.compareButton, lambda: p.compare(ui.compareSubjectComboBox.currentText)),
            (ui.saveModelButton, self.onSaveModel),
        ):
            button.connect("clicked(bool)", lambda checked, b=button, a=action: self._run(b, a))
        strategy, device = ui.strategyComboBox, ui.deviceComboBox
        strategy.connect("activated(int)", lambda i: p.set_strategy(strategy.itemData(i)))
        device.connect("activated(int)", lambda i: p.set_device(device.itemData(i)))
        ui.subjectTableView.connect("selectionChanged()", self.onSubjectSelection)
        for name in PATHS:
            edit = getattr(ui, f"{name}PathLineEdit")
            edit.connect("currentPathChanged(QString)", lambda text, n=name: p.set_path(n, text))
        scene = slicer.mrmlScene
        self._observers = [
            scene.AddObserver(scene.StartCloseEvent, lambda c, e: self.setParameterNode(None)),
            scene.AddObserver(scene.EndCloseEvent, self.onSceneEndClose),
        ]
        self.initializeParameterNode()

    def _run(self, button, action):
        failed = _("'{button}' failed.").format(button=button.text)
        with slicer.util.tryWithErrorDisplay(failed, waitCursor=True):
            action()

    def cleanup(self):
        if self.presenter is not None:
            for tag in self._observers:
                slicer.mrmlScene.RemoveObserver(tag)
            self.timer.stop()
            self.presenter.shutdown()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self.presenter is not None:
            self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        if self.presenter is not None:  # None on Slicer < 5.10
            self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode):
        if self._pn is not None:
            self._pn.disconnectGui(self._guiTag)
        self._pn = parameterNode
        if parameterNode is not None:
            self._guiTag = parameterNode.connectGui(self.ui)  # check boxes and spin boxes
        self.presenter.attach(parameterNode)

    def onTimer(self):
        if not self.presenter.poll():
            self.timer.stop()

    def onSubjectSelection(self):
        selection = self.ui.subjectTableView.selectionModel()
        rows = [index.row() for index in selection.selectedIndexes()] if selection else []
        self.presenter.select_view_rows(rows)  # view rows; the presenter maps them

    def onSaveModel(self):
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Save unlearned model"), "unlearned.pt", _("PyTorch model (*.pt)")
        )
        if path:
            self.presenter.save_model(path)

    # -- the presenter's View, Desktop and Installer (app/view_state.py, app/dependencies.py) --

    def render(self, state):
        ui = self.ui
        ui.applyButton.text, ui.applyButton.toolTip = state.apply_text, state.apply_tooltip
        ui.applyButton.enabled = state.apply_enabled
        ui.trainBaselineButton.enabled = state.can_train_baseline
        ui.generateDemoCohortButton.enabled = state.can_generate_demo_cohort
        ui.toggleForgetButton.enabled = ui.loadMriButton.enabled = state.can_edit_roles
        for button in (ui.compareButton, ui.saveModelButton, ui.showPlotButton):
            button.enabled = state.has_results
        ui.openOutputFolderButton.enabled = state.can_open_output_folder
        ui.deleteOutputsButton.enabled = state.can_delete_outputs
        ui.refreshDevicesButton.enabled = not state.devices_pending
        ui.modelSummaryLabel.text = state.model_summary
        ui.strategyDescriptionLabel.text = state.strategy_description
        ui.selectedSubjectsLabel.text = state.selection_text
        ui.statusLabel.text = state.status
        ui.resultsSummaryLabel.text = state.results_summary
        _fill(ui.strategyComboBox, [(n, n) for n, _s in state.strategies], state.strategy)
        _fill(ui.deviceComboBox, list(state.devices), state.device)
        _fill(ui.compareSubjectComboBox, [(s, s) for s in state.compare_subjects], None)
        for name in PATHS:
            edit, text = getattr(ui, f"{name}PathLineEdit"), getattr(state, f"{name}_text")
            if edit.currentPath != text:
                edit.currentPath = text
        views = (ui.subjectTableView, ui.resultsTableView)
        for view, table in zip(views, (state.subject_table, state.results_table), strict=True):
            if view.mrmlTableNode() is not table:  # setMRMLTableNode resets the view
                view.setMRMLTableNode(table)
        busy = state.progress is None
        ui.progressBar.setRange(0, 0 if busy else 1000)
        ui.progressBar.value = 0 if busy else int(round(state.progress * 1000))
        if state.show_results:
            ui.resultsCollapsibleButton.collapsed = False

    def append_log(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def clear_log(self):
        self.ui.logTextEdit.clear()

    def confirm(self, text, title):
        return slicer.util.confirmYesNoDisplay(text, windowTitle=title)

    def show_chart(self, chart):
        slicer.modules.plots.logic().ShowChartInLayout(chart)

    def show_volume(self, volume):
        slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def show_comparison(self):
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        slicer.util.resetSliceViews()

    def open_folder(self, path):
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))

    def start_polling(self):
        if not self.timer.isActive():
            self.timer.start()

    def install_torch(self, requirement, ask):
        try:  # the logic only: getModuleLogic("PyTorchUtils") would build the module's GUI
            import PyTorchUtils
        except ImportError:  # no PyTorch extension: the message says to install it
            return None
        logic = PyTorchUtils.PyTorchUtilsLogic()
        torch = logic.installTorch(askConfirmation=ask, torchVersionRequirement=requirement)
        return None if torch is None else torch.__version__

    def has_pip_ensure(self):
        return importlib.util.find_spec("slicer.packaging") is not None  # Slicer >= 5.12

    def pip_ensure(self, requirements, constraints, ask):
        ensure = importlib.import_module("slicer.packaging").pip_ensure
        ensure(requirements, constraints=constraints, prompt_install=ask, requester=self.moduleName)

    def pip_install(self, arguments):
        slicer.util.pip_install(arguments)

    def testing(self):
        return bool(slicer.app.testingEnabled())


def _fill(combo, items, current):
    """Fill ``combo`` with (data, text) items when they changed; select ``current``."""
    if [(combo.itemData(i), combo.itemText(i)) for i in range(combo.count)] != items:
        combo.clear()
        for data, text in items:
            combo.addItem(text, data)
    index = combo.findData(current) if current is not None else -1
    if index >= 0 and combo.currentIndex != index:
        combo.currentIndex = index


# Overrides of the cpu-demo recipe that make the self-test's model tiny (recipes.OVERRIDE_KEYS).
TINY_CONFIG = {"base_width": 8, "head_channels": 8, "input_size": [16, 32, 32]}


class MachineUnlearningTest(ScriptedLoadableModuleTest):
    """What only Qt can check: the widget on a tiny cohort, a row, Apply; then a tiny run."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_WidgetOnATinyCohort()

    def test_WidgetOnATinyCohort(self):
        import tempfile
        from pathlib import Path

        from MachineUnlearningLib.app.dependencies import DependencyError

        slicer.util.selectModule("MachineUnlearning")
        widget = slicer.modules.machineunlearning.widgetRepresentation().self()
        self.assertIsNotNone(widget.presenter, "Slicer < 5.10: the module only says it is too old")
        root = Path(tempfile.mkdtemp(prefix="MachineUnlearningTest-"))
        for subject_id in ("1", "070", "148"):  # the Cases table lists folders, reads no image
            (root / "cohort" / "training" / subject_id).mkdir(parents=True)
        (root / "model.pt").write_bytes(b"")
        pn = widget.logic.getParameterNode()
        pn.output, pn.device, pn.epochs = str(root / "runs"), "cpu", 1
        pn.checkpoint, pn.cohort = str(root / "model.pt"), str(root / "cohort")
        view = widget.ui.subjectTableView
        for row in range(3):
            view.selectRow(row)
            shown = view.model().index(row, 0).data()  # what the clinician sees in that row
            self.assertEqual(widget.presenter.state.selected_subjects, (shown,))
        self.assertFalse(widget.ui.applyButton.enabled)
        widget.ui.toggleForgetButton.click()
        self.assertTrue(widget.ui.applyButton.enabled, widget.ui.applyButton.toolTip)
        presenter = widget.presenter
        try:  # installs nothing in testing mode; the tiny run needs the packages present
            presenter.ensure_dependencies()
        except DependencyError as error:
            self.delayDisplay(f"Tiny run skipped: {error}")
            return
        presenter.generate_demo_cohort(root / "demo", held_out=0)
        self.assertEqual(self._wait(presenter), "ok")
        presenter.train_baseline(config=TINY_CONFIG, epochs=1)
        self.assertEqual(self._wait(presenter), "ok")
        view.selectRow(0)
        widget.ui.toggleForgetButton.click()
        widget.ui.applyButton.click()
        self.assertEqual(self._wait(presenter), "ok", presenter.state.status)
        self.assertGreater(pn.resultsTable.GetNumberOfRows(), 0)

    def _wait(self, presenter):
        while presenter.running:  # ctest's own timeout bounds it
            slicer.app.processEvents()
            time.sleep(0.05)
        return presenter.last_status
