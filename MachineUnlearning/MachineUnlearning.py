"""MachineUnlearning: the 3D Slicer scripted module (metadata, parameter node, widget, self-test).

The widget only connects Qt signals to ``MachineUnlearningLib.app.presenter.Presenter`` and
draws the presenter's ``ViewState``; everything else (parameters -> JobSpec, the roles table,
what enables Apply, the run state machine, importing results, dependency checks) is plain
Python in ``MachineUnlearningLib/app`` and tested in pytest against slicer-core. Nothing heavy
is imported at file scope.
"""

import os
import sys
from pathlib import Path
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
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
DOCS_URL = "https://github.com/SlicerMachineUnlearning/SlicerMachineUnlearning#readme"
POLL_INTERVAL_MS = 200


def _ensureEngineImportable():
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)


class MachineUnlearning(ScriptedLoadableModule):
    """Module description shown by Slicer (nothing heavy happens here)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Machine Unlearning")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerMachineUnlearning developers"]
        self.parent.helpText = _(
            "Makes a trained 3D brain-MRI segmentation model forget one or more subjects "
            "(subject-level machine unlearning, as the GDPR right to erasure asks) and shows "
            "what changed. See the <a href='{url}'>documentation</a>."
        ).format(url=DOCS_URL)
        self.parent.acknowledgementText = _(
            "Uses the MedicalNet 3D ResNet architecture (Chen et al., 2019) and the MRBrainS18 "
            "data layout (Kuijf et al.). PyTorch is installed through the SlicerPyTorch extension."
        )


@parameterNodeWrapper
class MachineUnlearningParameterNode:
    """Everything the GUI edits, stored in the scene (MachineUnlearningLib/app/parameters.py)."""

    checkpoint: Path
    cohort: Path
    output: Path
    strategy: str = "noisy-label"
    fixDecoder: bool = False
    epochs: Annotated[int, WithinRange(0, 1000)] = 0
    learningRate: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    stopWhenIndistinguishable: bool = False
    device: str = "auto"
    subjectRoles: vtkMRMLTableNode
    resultsTable: vtkMRMLTableNode
    lastRun: Path


class MachineUnlearningLogic(ScriptedLoadableModuleLogic):
    """Only the parameter node; the behaviour is the presenter's."""

    def getParameterNode(self):
        return MachineUnlearningParameterNode(super().getParameterNode())


class SlicerInstaller:
    """The Slicer and PyTorchUtils calls of ``MachineUnlearningLib.app.dependencies``."""

    def torch_logic(self):
        try:
            logic = slicer.util.getModuleLogic("PyTorchUtils")
        except Exception:
            logic = None
        if logic is None:
            import PyTorchUtils

            logic = PyTorchUtils.PyTorchUtilsLogic()
        return logic

    def packaging(self):
        return getattr(slicer, "packaging", None)

    def confirm(self, text, title):
        return slicer.util.confirmOkCancelDisplay(text, windowTitle=title)

    def pip_install(self, requirements):
        slicer.util.pip_install(requirements)


class SlicerDesktop:
    """Layouts, dialogs and the poll timer of ``MachineUnlearningLib.app.presenter.Desktop``."""

    def __init__(self, timer):
        self.timer = timer

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
        self.timer.start()


class MachineUnlearningWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Connects Qt signals to the presenter and draws its ViewState; computes nothing."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.presenter = None
        self._guiTag = None
        self._parameterNode = None
        self._drawing = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MachineUnlearning.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        _ensureEngineImportable()
        from MachineUnlearningLib.app.presenter import Presenter, WorkerSettings

        self.logic = MachineUnlearningLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onTimer)
        worker = WorkerSettings(
            python_executable=_workerPython(),
            base_env=slicer.util.startupEnvironment(),
            pythonpath=(MODULE_DIR,),
        )
        self.presenter = Presenter(
            slicer.mrmlScene,
            self,
            SlicerDesktop(self.timer),
            SlicerInstaller(),
            Path(self.resourcePath("requirements.txt")),
            worker,
            scene_folder=slicer.app.defaultScenePath,
        )
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        p, ui = self.presenter, self.ui
        self._connect(ui.applyButton, "clicked(bool)", p.apply, _("Failed to start the run."))
        self._connect(ui.trainBaselineButton, "clicked(bool)", p.train_baseline, _("Failed."))
        self._connect(ui.generateDemoCohortButton, "clicked(bool)", p.generate_demo_cohort, "")
        self._connect(ui.toggleForgetButton, "clicked(bool)", p.toggle_forget, "")
        self._connect(ui.loadMriButton, "clicked(bool)", p.load_mri, _("Failed to load the MRI."))
        self._connect(ui.refreshDevicesButton, "clicked(bool)", p.refresh_devices, "")
        self._connect(ui.showPlotButton, "clicked(bool)", p.show_plot, "")
        self._connect(ui.openOutputFolderButton, "clicked(bool)", p.open_output_folder, "")
        ui.compareButton.connect("clicked(bool)", self.onCompare)
        ui.saveModelButton.connect("clicked(bool)", self.onSaveModel)
        ui.strategyComboBox.connect("activated(int)", self.onStrategy)
        ui.deviceComboBox.connect("activated(int)", self.onDevice)
        ui.subjectTableView.connect("selectionChanged()", self.onSubjectSelection)
        for name in ("checkpoint", "cohort", "output"):
            edit = getattr(ui, f"{name}PathLineEdit")
            edit.connect("currentPathChanged(QString)", lambda t, n=name: p.set_path(n, t))
        self.initializeParameterNode()

    def _connect(self, widget, signal, action, failure):
        def run(*args):
            with slicer.util.tryWithErrorDisplay(failure or _("Failed."), waitCursor=True):
                action()

        widget.connect(signal, run)

    def cleanup(self) -> None:
        self.removeObservers()
        self.timer.stop()
        if self.presenter is not None:
            self.presenter.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._guiTag = parameterNode.connectGui(self.ui)
        self.presenter.attach(parameterNode)

    def onTimer(self) -> None:
        if not self.presenter.poll():
            self.timer.stop()

    def onStrategy(self, index) -> None:
        self.presenter.set_strategy(self.ui.strategyComboBox.itemText(index))

    def onDevice(self, index) -> None:
        self.presenter.set_device(self.ui.deviceComboBox.itemData(index))

    def onSubjectSelection(self) -> None:
        model = self.ui.subjectTableView.selectionModel()
        rows = sorted({index.row() for index in model.selectedIndexes()}) if model else []
        self.presenter.select_view_rows(rows)

    def onCompare(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the comparison."), waitCursor=True):
            self.presenter.compare(self.ui.compareSubjectComboBox.currentText)

    def onSaveModel(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Save unlearned model"), "unlearned.pt", _("PyTorch model (*.pt)")
        )
        if path:
            with slicer.util.tryWithErrorDisplay(_("Failed to save the model.")):
                self.presenter.save_model(path)

    # -- presenter -> Qt --------------------------------------------------------------------

    def render(self, state) -> None:
        ui = self.ui
        ui.applyButton.text = state.apply_text
        ui.applyButton.enabled = state.apply_enabled
        ui.applyButton.toolTip = state.apply_tooltip
        ui.trainBaselineButton.enabled = state.can_train_baseline
        ui.generateDemoCohortButton.enabled = state.can_generate_demo_cohort
        for button in (ui.compareButton, ui.saveModelButton, ui.showPlotButton):
            button.enabled = state.has_results
        ui.openOutputFolderButton.enabled = state.can_open_output_folder
        ui.modelSummaryLabel.text = state.model_summary
        ui.strategyDescriptionLabel.text = state.strategy_description
        ui.statusLabel.text = state.status
        ui.resultsSummaryLabel.text = state.results_summary
        self._fillCombo(ui.strategyComboBox, [(n, n) for n, _s in state.strategies], state.strategy)
        self._fillCombo(ui.deviceComboBox, [(v, lbl) for v, lbl in state.devices], state.device)
        self._fillCombo(ui.compareSubjectComboBox, [(s, s) for s in state.compare_subjects], "")
        for name in ("checkpoint", "cohort", "output"):
            edit = getattr(ui, f"{name}PathLineEdit")
            if edit.currentPath != getattr(state, f"{name}_text"):
                edit.currentPath = getattr(state, f"{name}_text")
        if ui.subjectTableView.mrmlTableNode() is not state.subject_table:
            ui.subjectTableView.setMRMLTableNode(state.subject_table)
        if ui.resultsTableView.mrmlTableNode() is not state.results_table:
            ui.resultsTableView.setMRMLTableNode(state.results_table)
        if state.progress is None:
            ui.progressBar.setRange(0, 0)
        else:
            ui.progressBar.setRange(0, 1000)
            ui.progressBar.value = int(round(state.progress * 1000))
        if state.show_results:
            ui.resultsCollapsibleButton.collapsed = False

    @staticmethod
    def _fillCombo(combo, items, current) -> None:
        if [(combo.itemData(i), combo.itemText(i)) for i in range(combo.count)] != items:
            combo.clear()
            for value, label in items:
                combo.addItem(label, value)
        index = combo.findData(current)
        if index >= 0 and combo.currentIndex != index:
            combo.currentIndex = index

    def append_log(self, line) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def clear_log(self) -> None:
        self.ui.logTextEdit.clear()


def _workerPython():
    """Slicer's own Python launcher, so the worker sees Slicer's site-packages (and torch)."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


# Overrides of the cpu-demo recipe that make the self-test's model tiny (recipes.OVERRIDE_KEYS).
TINY_TEST_CONFIG = {"base_width": 8, "head_channels": 8, "input_size": [16, 32, 32]}


class MachineUnlearningTest(ScriptedLoadableModuleTest):
    """The widget on a demo cohort, a tiny baseline and a one-epoch unlearning run."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TinyCpuRunEndToEnd()

    def test_TinyCpuRunEndToEnd(self):
        import tempfile
        import time

        widget = slicer.modules.machineunlearning.widgetRepresentation().self()
        presenter = widget.presenter
        pn = widget.logic.getParameterNode()
        root = Path(tempfile.mkdtemp(prefix="MachineUnlearningTest-"))
        pn.output, pn.device, pn.epochs = root, "cpu", 1
        presenter.generate_demo_cohort(root / "cohort", held_out=0)
        while presenter.running:
            slicer.app.processEvents()
            time.sleep(0.05)
        presenter.train_baseline(config=TINY_TEST_CONFIG, epochs=1)
        while presenter.running:
            slicer.app.processEvents()
            time.sleep(0.05)
        widget.ui.subjectTableView.selectRow(1)
        widget.ui.toggleForgetButton.click()
        self.assertTrue(widget.ui.applyButton.enabled)
        presenter.apply()
        while presenter.running:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertEqual(presenter.last_status, "ok")
        self.delayDisplay("Test passed")
