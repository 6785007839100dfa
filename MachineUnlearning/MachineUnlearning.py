"""MachineUnlearning: the 3D Slicer scripted module (module, parameter node, widget, logic, test).

Slicer's convention puts the four classes of a scripted module in one file; each stays thin.
The widget only wires GUI <-> parameter node, buttons -> logic and logic callbacks -> GUI. The
logic is a facade over ``MachineUnlearningLib.runner.RunController``: it turns the parameter
node into a ``JobSpec``, runs the engine in a separate ``PythonSlicer`` process and imports the
results through ``MachineUnlearningLib.app.scene``. Nothing heavy (torch, monai, nibabel, numpy) is
imported at file scope: engine modules are imported inside the functions that need them, after
the dependency check.
"""

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
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
# The paper's presets; the list shown is read from MachineUnlearningLib.strategies when it imports.
FALLBACK_STRATEGIES = (
    "noisy-label",
    "retain-label",
    "max-loss",
    "random-encoder",
    "learn-others",
    "learn-noise",
)
DEFAULT_MODALITY = "reg_T1"
TORCH_VERSION_REQUIREMENT = ">=2.2"
RUN_STATES_WITH_CANCEL = ("starting", "running")


def _ensureEngineImportable():
    """Make ``import MachineUnlearningLib`` work (Slicer usually has the module folder on path)."""
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)


def _isSet(path) -> bool:
    """A Path parameter that the user has filled in (the wrapper's default is ``Path()`` == ".")."""
    return path is not None and str(path) not in ("", ".")


#
# MachineUnlearning
#


class MachineUnlearning(ScriptedLoadableModule):
    """Module description shown by Slicer (nothing heavy happens here)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Machine Unlearning")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []  # PyTorch comes from the PyTorch extension, checked on use
        self.parent.contributors = ["SlicerMachineUnlearning developers"]
        self.parent.helpText = _(
            "Makes a trained 3D brain-MRI segmentation model forget one or more subjects "
            "(subject-level machine unlearning, as the GDPR right to erasure asks) and shows "
            "what changed: metrics before and after, Dice per epoch, and the original and "
            "unlearned predictions side by side. The work runs in a background process, on CPU "
            "or GPU. See the <a href='{url}'>documentation</a>."
        ).format(url=DOCS_URL)
        self.parent.acknowledgementText = _(
            "Uses the MedicalNet 3D ResNet architecture (Chen et al., 2019) and the MRBrainS18 "
            "data layout (Kuijf et al.). PyTorch is installed through the SlicerPyTorch "
            "extension. The module template follows 3D Slicer's scripted module template."
        )


#
# MachineUnlearningParameterNode
#


@parameterNodeWrapper
class MachineUnlearningParameterNode:
    """Everything the GUI edits, stored in the scene.

    checkpoint - the trained model to start from (never written to).
    cohort - root of an MRBrainS18-layout cohort (training/, held-out/).
    output - folder under which each run gets its own subfolder.
    strategy - unlearning preset; validated against the engine's registry when a run starts
        (the list can grow, so it is not a fixed Choice here).
    fixDecoder - freeze the decoder during unlearning.
    epochs, learningRate - unlearning schedule; 0 = the preset's own default (shown as
        "preset default"; e.g. 50 epochs and lr 1e-2 for noisy-label, 1 epoch for bad-teacher).
    stopWhenIndistinguishable - audit after every epoch and stop once the forget subjects are
        indistinguishable from the held-out subjects (needs >= 2 held-out subjects).
    device - "auto", "cpu" or "cuda:N".
    subjectRoles - table of subject / group / role (forget, retain, held-out).
    resultsTable - metrics of the last unlearning run.
    lastRun - output folder of the last finished unlearning run.
    """

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


#
# MachineUnlearningWidget
#


class MachineUnlearningWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the GUI to the parameter node and the logic; computes nothing itself."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._describedCheckpoint = None
        self._listedCohort = None
        self._runState = "idle"

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MachineUnlearning.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MachineUnlearningLogic()
        self.logic.progressCallback = self.onRunProgress
        self.logic.logCallback = self.onRunLog
        self.logic.finishedCallback = self.onRunFinished

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for name, description in self.logic.strategyPresets():
            self.ui.strategyComboBox.addItem(name)
            self.ui.strategyComboBox.setItemData(
                self.ui.strategyComboBox.count - 1, description, qt.Qt.ToolTipRole
            )
        self.fillDeviceComboBox(self.logic.availableDevices(queryGpus=False))

        self.ui.trainBaselineButton.connect("clicked(bool)", self.onTrainBaseline)
        self.ui.generateDemoCohortButton.connect("clicked(bool)", self.onGenerateDemoCohort)
        self.ui.toggleForgetButton.connect("clicked(bool)", self.onToggleForget)
        self.ui.loadMriButton.connect("clicked(bool)", self.onLoadMri)
        self.ui.refreshDevicesButton.connect("clicked(bool)", self.onRefreshDevices)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.saveModelButton.connect("clicked(bool)", self.onSaveModel)
        self.ui.openOutputFolderButton.connect("clicked(bool)", self.onOpenOutputFolder)
        self.ui.strategyComboBox.connect("currentIndexChanged(int)", self.onStrategySelected)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceSelected)

        self.initializeParameterNode()
        self.onRunProgress(None)

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.logic.stopAll()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    # -- parameter node -> GUI (the parts the wrapper does not bind) -----------------------

    def updateGui(self, caller=None, event=None) -> None:
        pn = self._parameterNode
        if pn is None or self._updatingGui:
            return
        self._updatingGui = True
        try:
            self._selectComboData(self.ui.strategyComboBox, pn.strategy, byText=True)
            self._selectComboData(self.ui.deviceComboBox, pn.device)
            self.ui.subjectTableView.setMRMLTableNode(pn.subjectRoles)
            self.ui.resultsTableView.setMRMLTableNode(pn.resultsTable)
        finally:
            self._updatingGui = False
        self.showStrategyDescription()
        if str(pn.cohort) != self._listedCohort:
            self._listedCohort = str(pn.cohort)
            try:
                self.logic.updateSubjectRoles(pn)
            except Exception as error:  # e.g. a role edited into an unknown value
                self.ui.statusLabel.text = str(error)
        if str(pn.checkpoint) != self._describedCheckpoint:
            self._describedCheckpoint = str(pn.checkpoint)
            self.ui.modelSummaryLabel.text = self.logic.describeCheckpoint(pn.checkpoint)
        self.updateButtons()

    def updateButtons(self) -> None:
        pn = self._parameterNode
        active = self._runState not in ("idle", "done", "failed", "cancelled")
        problem = self.logic.unlearningProblem(pn) if pn is not None else _("No parameter node.")
        if not active:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.enabled = not problem
            self.ui.applyButton.toolTip = problem or _("Run the unlearning in the background.")
        self.ui.trainBaselineButton.enabled = not active and pn is not None and _isSet(pn.cohort)
        self.ui.generateDemoCohortButton.enabled = not active
        hasRun = pn is not None and _isSet(pn.lastRun)
        for button in (self.ui.compareButton, self.ui.saveModelButton, self.ui.showPlotButton):
            button.enabled = hasRun and not active
        self.ui.openOutputFolderButton.enabled = hasRun

    def fillDeviceComboBox(self, devices) -> None:
        self._updatingGui = True
        try:
            self.ui.deviceComboBox.clear()
            for value, label in devices:
                self.ui.deviceComboBox.addItem(label, value)
        finally:
            self._updatingGui = False
        if self._parameterNode is not None:
            self._selectComboData(self.ui.deviceComboBox, self._parameterNode.device)

    @staticmethod
    def _selectComboData(combo, value, byText=False) -> None:
        index = combo.findText(value) if byText else combo.findData(value)
        if index >= 0 and combo.currentIndex != index:
            combo.currentIndex = index

    # -- GUI -> parameter node --------------------------------------------------------------

    def onStrategySelected(self, index) -> None:
        if self._parameterNode is not None and not self._updatingGui and index >= 0:
            self._parameterNode.strategy = self.ui.strategyComboBox.itemText(index)
        self.showStrategyDescription()

    def showStrategyDescription(self) -> None:
        combo = self.ui.strategyComboBox
        description = combo.itemData(combo.currentIndex, qt.Qt.ToolTipRole)
        self.ui.strategyDescriptionLabel.text = description or ""

    def onDeviceSelected(self, index) -> None:
        if self._parameterNode is not None and not self._updatingGui and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    # -- buttons -> logic -------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self._runState in RUN_STATES_WITH_CANCEL or self._runState == "cancelling":
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(
            _("Failed to start the unlearning run."), waitCursor=True
        ):
            self.ui.logTextEdit.clear()
            self.logic.startUnlearning(self._parameterNode)

    def onTrainBaseline(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.logic.trainBaseline(self._parameterNode)

    def onGenerateDemoCohort(self) -> None:
        with slicer.util.tryWithErrorDisplay(
            _("Failed to generate the demo cohort."), waitCursor=True
        ):
            self.ui.logTextEdit.clear()
            self.logic.generateDemoCohort(self._parameterNode)

    def onToggleForget(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to change the subject's role.")):
            self.logic.toggleForget(self._parameterNode, self.selectedSubjectRows())

    def onLoadMri(self) -> None:
        rows = self.selectedSubjectRows()
        if not rows:
            self.ui.statusLabel.text = _("Select a subject in the table first.")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to load the MRI."), waitCursor=True):
            self.logic.loadSubjectMri(self._parameterNode, rows[0])

    def onRefreshDevices(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to list the GPUs."), waitCursor=True):
            self.fillDeviceComboBox(self.logic.availableDevices(queryGpus=True))

    def onCompare(self) -> None:
        subjectId = self.ui.compareSubjectComboBox.currentText
        with slicer.util.tryWithErrorDisplay(_("Failed to show the comparison."), waitCursor=True):
            self.logic.showComparison(self._parameterNode, subjectId)

    def onShowPlot(self) -> None:
        self.logic.showDicePlot()

    def onSaveModel(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Save unlearned model"), "unlearned.pt", _("PyTorch model (*.pt)")
        )
        if path:
            with slicer.util.tryWithErrorDisplay(_("Failed to save the model.")):
                self.logic.saveUnlearnedModel(self._parameterNode, path)
                self.ui.statusLabel.text = _("Saved the unlearned model to {path}").format(
                    path=path
                )

    def onOpenOutputFolder(self) -> None:
        folder = self.logic.outputFolder(self._parameterNode)
        if folder is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def selectedSubjectRows(self) -> list:
        model = self.ui.subjectTableView.selectionModel()
        if model is None:
            return []
        return sorted({index.row() for index in model.selectedIndexes()})

    # -- logic callbacks -> GUI -------------------------------------------------------------

    def onRunProgress(self, progress) -> None:
        state = progress.state.value if progress is not None else "idle"
        self._runState = state
        if state in RUN_STATES_WITH_CANCEL:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = _("Stop the run after its current step.")
        elif state == "cancelling":
            self.ui.applyButton.text = _("Cancelling… (click to stop now)")
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = _("Kill the background process at once.")
        elif state == "importing":
            self.ui.applyButton.enabled = False
        fraction = progress.fraction if progress is not None else 0.0
        if fraction is None and state in ("starting", "running", "importing"):
            self.ui.progressBar.setRange(0, 0)  # busy indicator
        else:
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = int(round((fraction or 0.0) * 1000))
        if progress is not None:
            phase = f"{progress.phase}: " if progress.phase and state == "running" else ""
            self.ui.statusLabel.text = phase + progress.text
        self.updateButtons()

    def onRunLog(self, line) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onRunFinished(self, kind, status, message) -> None:
        if status == "ok" and kind == "unlearn":
            self.ui.resultsSummaryLabel.text = self.logic.resultsSummary()
            self.ui.compareSubjectComboBox.clear()
            for subjectId in self.logic.comparableSubjects():
                self.ui.compareSubjectComboBox.addItem(subjectId)
            self.ui.resultsCollapsibleButton.collapsed = False
        self.ui.statusLabel.text = f"{kind}: {message}"
        self.updateButtons()


#
# MachineUnlearningLogic
#


class MachineUnlearningLogic(ScriptedLoadableModuleLogic):
    """Facade over ``RunController``: parameter node -> JobSpec -> background worker -> scene.

    Usable without the widget (tests, the Python console). Callbacks the widget sets:
    ``progressCallback(Progress)``, ``logCallback(str)``, ``finishedCallback(kind, status,
    message)`` where kind is ``make-cohort``, ``train`` or ``unlearn``.
    """

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.progressCallback = None
        self.logCallback = None
        self.finishedCallback = None
        self.lastStatus = None
        self._controller = None
        self._runKind = None
        self._pendingCohort = None
        self._metrics = None
        self._diceChart = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)

    def getParameterNode(self):
        return MachineUnlearningParameterNode(super().getParameterNode())

    # -- dependencies -----------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """PyTorch through the PyTorch extension, the rest from Resources/requirements.txt."""
        self.ensureTorch(askConfirmation)
        self.ensurePythonPackages(askConfirmation)

    @staticmethod
    def _torchUtilsLogic():
        torchLogic = None
        try:
            torchLogic = slicer.util.getModuleLogic("PyTorchUtils")
        except Exception:
            torchLogic = None
        if torchLogic is None:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError(
                    _(
                        "This module needs the PyTorch extension. Install 'PyTorch' from the "
                        "Extensions Manager, restart Slicer and try again."
                    )
                ) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        return torchLogic

    def torchInstalled(self) -> bool:
        try:
            return bool(self._torchUtilsLogic().torchInstalled())
        except Exception:
            return False

    def ensureTorch(self, askConfirmation: bool = True) -> None:
        torchLogic = self._torchUtilsLogic()
        if torchLogic.torchInstalled():
            return
        torch = torchLogic.installTorch(
            askConfirmation=askConfirmation, torchVersionRequirement=TORCH_VERSION_REQUIREMENT
        )
        if torch is None:
            raise RuntimeError(_("PyTorch is required; it was not installed."))

    @staticmethod
    def requirementsPath() -> str:
        return os.path.join(MODULE_DIR, "Resources", "requirements.txt")

    def ensurePythonPackages(self, askConfirmation: bool = True) -> None:
        packaging = getattr(slicer, "packaging", None)
        if packaging is None:
            import importlib

            try:  # Slicer >= 5.12 / Preview; older releases only have slicer.util.pip_install
                packaging = importlib.import_module("slicer.packaging")
            except ImportError:
                packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            requirements = packaging.load_requirements(self.requirementsPath())
            packaging.pip_ensure(requirements, requester="MachineUnlearning")
        else:
            missing = self.missingRequirements()
            if missing:
                text = _(
                    "Machine Unlearning needs these Python packages:\n\n{packages}\n\n"
                    "Install them now?"
                )
                if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    text.format(packages="\n".join(missing)),
                    windowTitle=_("Install Python packages"),
                ):
                    raise RuntimeError(_("The required Python packages were not installed."))
                slicer.util.pip_install(missing)
        still = self.missingRequirements()
        if still:
            raise RuntimeError(
                _(
                    "Python packages still missing: {packages}. Restart Slicer and try again."
                ).format(packages=", ".join(still))
            )

    def missingRequirements(self) -> list:
        """Requirement lines of requirements.txt that are not installed (by distribution name)."""
        import importlib.metadata
        import re

        missing = []
        with open(self.requirementsPath(), encoding="utf-8") as stream:
            for line in stream:
                requirement = line.split("#", 1)[0].strip()
                if not requirement:
                    continue
                name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
                try:
                    importlib.metadata.version(name)
                except importlib.metadata.PackageNotFoundError:
                    missing.append(requirement)
        return missing

    # -- choices ----------------------------------------------------------------------------

    def strategyPresets(self) -> list:
        """(name, one-line summary) of every registered preset; the paper's six as fallback."""
        try:
            _ensureEngineImportable()
            from MachineUnlearningLib.strategies import STRATEGIES

            presets = [(name, strategy.summary) for name, strategy in STRATEGIES.items()]
            if presets:
                return presets
        except Exception:
            logging.warning("Could not read the strategy registry", exc_info=True)
        return [(name, "") for name in FALLBACK_STRATEGIES]

    def availableDevices(self, queryGpus: bool = True) -> list:
        """(value, label): auto, each CUDA GPU with its free memory, cpu.

        GPUs are listed by a short child process with torch (after the dependency check), so
        that Slicer itself never imports torch or holds a CUDA context for listing them.
        """
        devices = [("auto", _("auto (GPU if available)"))]
        if queryGpus:
            self.ensureTorch()
            for index, name, free, total in self._queryGpus():
                label = _("GPU {index}: {name} ({free:.1f} of {total:.1f} GiB free)").format(
                    index=index, name=name, free=free / 2**30, total=total / 2**30
                )
                devices.append((f"cuda:{index}", label))
        devices.append(("cpu", _("CPU")))
        return devices

    def _queryGpus(self) -> list:
        import subprocess

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
            [workerPythonExecutable(), "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env=self._childBaseEnvironment(),
        )
        if result.returncode != 0:
            raise RuntimeError(
                _("Listing GPUs failed:\n{error}").format(error=result.stderr[-2000:])
            )
        return json.loads(result.stdout.strip().splitlines()[-1])

    # -- cases ------------------------------------------------------------------------------

    def discoverSubjects(self, cohort) -> list:
        """[(subject id, group)] of a cohort folder (folder names only; no image is read)."""
        _ensureEngineImportable()
        from MachineUnlearningLib.data.cohort import discover_cohort

        return [(s.subject_id, s.group) for s in discover_cohort(cohort)]

    def updateSubjectRoles(self, pn) -> None:
        """Fill the subject table from the cohort; keeps 'forget' marks of subjects still there."""
        if not _isSet(pn.cohort) or not Path(pn.cohort).is_dir():
            return
        from MachineUnlearningLib.app import scene as mscene
        from MachineUnlearningLib.runtime.errors import InvalidInputError

        try:
            subjects = self.discoverSubjects(pn.cohort)
        except InvalidInputError as error:
            logging.info(f"No subjects listed: {error} {error.hint}")
            return
        previous = self.subjectRoles(pn)
        roles, groups = {}, {}
        for subjectId, group in subjects:
            groups[subjectId] = group
            if group == "held-out":
                roles[subjectId] = "held-out"
            else:
                roles[subjectId] = "forget" if previous.get(subjectId) == "forget" else "retain"
        pn.subjectRoles = mscene.subject_roles_to_table(
            slicer.mrmlScene, roles, table=pn.subjectRoles, groups=groups
        )

    def subjectRoles(self, pn) -> dict:
        if pn.subjectRoles is None:
            return {}
        from MachineUnlearningLib.app import scene as mscene

        return mscene.table_to_subject_roles(pn.subjectRoles)

    def setSubjectRoles(self, pn, roles: dict) -> None:
        from MachineUnlearningLib.app import scene as mscene

        groups = {s: ("held-out" if r == "held-out" else "training") for s, r in roles.items()}
        pn.subjectRoles = mscene.subject_roles_to_table(
            slicer.mrmlScene, roles, table=pn.subjectRoles, groups=groups
        )

    def subjectIdAtRow(self, pn, row: int) -> str:
        table = pn.subjectRoles
        column = table.GetColumnIndex("subject") if table is not None else -1
        if column < 0 or not 0 <= row < table.GetNumberOfRows():
            raise ValueError(_("No subject in row {row}.").format(row=row))
        return table.GetCellText(row, column)

    def toggleForget(self, pn, rows) -> None:
        """Selected training subjects: retain <-> forget (held-out subjects stay held out)."""
        roles = self.subjectRoles(pn)
        for row in rows:
            subjectId = self.subjectIdAtRow(pn, row)
            if roles.get(subjectId) == "forget":
                roles[subjectId] = "retain"
            elif roles.get(subjectId) in ("retain", "train"):
                roles[subjectId] = "forget"
        self.setSubjectRoles(pn, roles)

    def loadSubjectMri(self, pn, row: int, modality: str = DEFAULT_MODALITY):
        """Load the subject's MRI (default reg_T1) and show it in the slice views."""
        from MachineUnlearningLib.app import scene as mscene

        subjectId = self.subjectIdAtRow(pn, row)
        volume = mscene.load_volume(
            slicer.mrmlScene,
            self.subjectImagePath(pn, subjectId, modality),
            f"{subjectId} {modality}",
        )
        slicer.util.setSliceViewerLayers(background=volume, fit=True)
        return volume

    def subjectImagePath(self, pn, subjectId: str, modality: str = DEFAULT_MODALITY) -> Path:
        _ensureEngineImportable()
        from MachineUnlearningLib.data.cohort import discover_cohort

        for subject in discover_cohort(pn.cohort):
            if subject.subject_id == subjectId:
                return Path(subject.images[modality])
        raise ValueError(
            _("Subject {id} is not in the cohort {cohort}.").format(id=subjectId, cohort=pn.cohort)
        )

    # -- model ------------------------------------------------------------------------------

    def describeCheckpoint(self, path) -> str:
        """Architecture, labels and trained-on subjects of a checkpoint, as one short text."""
        if not _isSet(path):
            return _("No model selected: choose a checkpoint or train a baseline.")
        if not Path(path).is_file():
            return _("{path} does not exist.").format(path=path)
        if not self.torchInstalled() or self.missingRequirements():
            return _("Install the dependencies (Apply does it) to read the model.")
        try:
            _ensureEngineImportable()
            from MachineUnlearningLib.model.checkpoint import load_checkpoint

            loaded = load_checkpoint(path)
        except Exception as error:
            return _("Cannot read this model: {error}").format(error=error)
        return self.checkpointSummary(loaded.config, loaded.metadata)

    @staticmethod
    def checkpointSummary(config, metadata: dict) -> str:
        text = _(
            "MedicalNet ResNet-{depth} (shortcut {shortcut}, width {width}), "
            "{inputs} input(s), {classes} classes"
        ).format(
            depth=config.depth,
            shortcut=config.shortcut_type,
            width=config.base_width,
            inputs=config.in_channels,
            classes=config.num_classes,
        )
        if metadata.get("label_policy"):
            text += _("; labels: {policy}").format(policy=metadata["label_policy"])
        trainedOn = (metadata.get("subject_ids") or {}).get("trained_on")
        if trainedOn:
            text += _("; trained on {n} subject(s): {ids}").format(
                n=len(trainedOn), ids=", ".join(trainedOn)
            )
        return text

    # -- runs -------------------------------------------------------------------------------

    def isRunning(self) -> bool:
        return self._controller is not None and self._controller.active

    def unlearningProblem(self, pn) -> str:
        """Why Apply is not possible yet ("" when it is); cheap, for the button's tooltip."""
        if not _isSet(pn.checkpoint) or not Path(pn.checkpoint).is_file():
            return _("Choose the trained model (checkpoint) first, or train a baseline.")
        if not _isSet(pn.cohort) or not Path(pn.cohort).is_dir():
            return _("Choose the cohort folder first, or generate the demo cohort.")
        if pn.subjectRoles is None:
            return _("The cohort has no subjects.")
        try:
            roles = self.subjectRoles(pn)
        except Exception as error:
            return str(error)
        if "forget" not in roles.values():
            return _("Mark at least one subject as 'forget' in the Cases table.")
        if pn.stopWhenIndistinguishable and list(roles.values()).count("held-out") < 2:
            return _(
                "The stopping rule compares with never-seen subjects: mark at least two "
                "subjects as 'held-out', or switch the rule off."
            )
        return ""

    def newRunFolder(self, pn, label: str) -> Path:
        import time

        base = (
            Path(pn.output)
            if _isSet(pn.output)
            else Path(slicer.app.defaultScenePath) / "MachineUnlearning"
        )
        return base / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}"

    def unlearningJob(self, pn, config=None):
        """The JobSpec of an unlearning run, from the parameter node (validated by JobSpec)."""
        _ensureEngineImportable()
        from MachineUnlearningLib.runtime.jobs import JobSpec
        from MachineUnlearningLib.strategies import get_strategy

        problem = self.unlearningProblem(pn)
        if problem:
            raise ValueError(problem)
        get_strategy(pn.strategy)  # unknown names list the valid ones
        roles = self.subjectRoles(pn)
        heldOut = [s for s, r in roles.items() if r == "held-out"]
        return JobSpec(
            command="unlearn",
            cohort=str(pn.cohort),
            output=str(self.newRunFolder(pn, pn.strategy)),
            checkpoint=str(pn.checkpoint),
            forget_ids=[s for s, r in roles.items() if r == "forget"],
            retain_ids=[s for s, r in roles.items() if r in ("retain", "train")],
            held_out_ids=heldOut or None,
            strategy=pn.strategy,
            fix_decoder=pn.fixDecoder,
            epochs=pn.epochs or None,  # 0 = the preset's default
            learning_rate=pn.learningRate or None,
            stop_when_indistinguishable=pn.stopWhenIndistinguishable,
            device=pn.device,
            config=dict(config or {}),
        )

    def baselineJob(self, pn, config=None, epochs=None):
        _ensureEngineImportable()
        from MachineUnlearningLib.runtime.jobs import JobSpec

        if not _isSet(pn.cohort):
            raise ValueError(_("Choose the cohort folder first, or generate the demo cohort."))
        return JobSpec(
            command="train",
            cohort=str(pn.cohort),
            output=str(self.newRunFolder(pn, "baseline")),
            epochs=epochs,
            device=pn.device,
            config=dict(config or {}),
        )

    def startUnlearning(self, pn, config=None) -> None:
        self.ensureDependencies()
        self._startJob("unlearn", self.unlearningJob(pn, config))

    def trainBaseline(self, pn, config=None, epochs=None) -> None:
        self.ensureDependencies()
        self._startJob("train", self.baselineJob(pn, config, epochs))

    def generateDemoCohort(self, pn, folder=None, heldOut: int = 3) -> None:
        """Write the synthetic demo cohort in the background; sets the cohort when done.

        ``heldOut`` subjects go to held-out/ (the privacy audit needs at least two).
        """
        self.ensureDependencies()
        if folder is None:
            folder = self.newRunFolder(pn, "demo-cohort")
        self._pendingCohort = Path(folder)
        self._runKind = "make-cohort"
        # make-cohort takes flags, not a job, and prints plain text (no --events).
        arguments = ["--out", str(folder), "--held-out", str(heldOut)]
        self._runController().start_command("make-cohort", arguments, device="cpu", events=False)
        self._timer.start()

    def _startJob(self, kind: str, job) -> None:
        self._runKind = kind
        self._runController().start(job)
        self._timer.start()

    def cancel(self) -> None:
        """First call: ask the worker to stop; second call: kill its process tree."""
        if self._controller is not None:
            self._controller.cancel()

    def stopAll(self) -> None:
        """Module cleanup / application exit: no worker outlives Slicer."""
        self._timer.stop()
        if self.isRunning() and self._controller.worker is not None:
            self._controller.worker.kill_tree()

    def _runController(self):
        if self._controller is None:
            _ensureEngineImportable()
            from MachineUnlearningLib.app.runner import RunController

            self._controller = RunController(
                on_progress=self._onProgress,
                on_log=self._onLog,
                on_finished=self._onFinished,
                import_results=self._importResults,
                python_executable=workerPythonExecutable(),
                base_env=self._childBaseEnvironment(),
                pythonpath=[MODULE_DIR],
            )
        return self._controller

    @staticmethod
    def _childBaseEnvironment():
        try:
            return slicer.util.startupEnvironment()
        except Exception:
            return None  # WorkerProcess then copies os.environ

    def _onTimer(self) -> None:
        try:
            active = self._controller is not None and self._controller.poll()
        except Exception:
            logging.exception("Following the background run failed")
            active = False
        if not active:
            self._timer.stop()

    def _onProgress(self, progress) -> None:
        if self.progressCallback is not None:
            self.progressCallback(progress)

    def _onLog(self, line: str) -> None:
        if self.logCallback is not None:
            self.logCallback(line)

    def _onFinished(self, status: str, outputs: dict) -> None:
        self.lastStatus = status
        if status == "ok" and self._runKind == "make-cohort" and self._pendingCohort is not None:
            self.getParameterNode().cohort = self._pendingCohort
        if self.finishedCallback is not None:
            self.finishedCallback(self._runKind, status, self._controller.message)

    # -- results ----------------------------------------------------------------------------

    def _importResults(self, job, outputs: dict) -> None:
        """Called by the RunController once a job run ended well (GUI thread)."""
        pn = self.getParameterNode()
        output = Path(job.output)
        if job.command in ("train", "retrain"):
            pn.checkpoint = Path(outputs.get("checkpoint") or output / "model.pt")
            return
        self.importMetrics(pn, Path(outputs.get("metrics") or output / "metrics.json"))
        pn.lastRun = output

    def importMetrics(self, pn, metricsPath: Path) -> None:
        from MachineUnlearningLib.app import scene as mscene

        metrics = json.loads(Path(metricsPath).read_text(encoding="utf-8"))
        runName = Path(metricsPath).parent.name
        self._metrics = metrics
        pn.resultsTable = mscene.metrics_to_table(
            slicer.mrmlScene, metrics, name=f"Metrics {runName}"
        )
        self._diceChart = mscene.dice_curves_to_plot(
            slicer.mrmlScene, metrics, name=f"Dice {runName}"
        )
        self.showDicePlot()

    def showDicePlot(self) -> None:
        if self._diceChart is not None and hasattr(slicer.modules, "plots"):
            slicer.modules.plots.logic().ShowChartInLayout(self._diceChart)

    def _lastMetrics(self) -> dict:
        if self._metrics is None:
            pn = self.getParameterNode()
            if _isSet(pn.lastRun) and (Path(pn.lastRun) / "metrics.json").is_file():
                self._metrics = json.loads(
                    (Path(pn.lastRun) / "metrics.json").read_text(encoding="utf-8")
                )
        return self._metrics or {}

    def resultsSummary(self) -> str:
        """One line from metrics.json ``summary`` (the last evaluated epoch)."""
        summary = (self._lastMetrics().get("summary") or [None])[-1]
        if not summary:
            return _("No summary in metrics.json.")

        def number(key, fmt):
            value = summary.get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

        return _(
            "Epoch {epoch}: forget Dice decreased {forget} %, retain Dice preserved {retain} %, "
            "Dice gap {dice}, MAE gap {mae}"
        ).format(
            epoch=summary.get("epoch"),
            forget=number("forget_decrease_pct", ".1f"),
            retain=number("retain_preservation_pct", ".1f"),
            dice=number("dice_gap", ".3f"),
            mae=number("mae_gap", ".3f"),
        )

    def comparableSubjects(self) -> list:
        """Subjects of the last run with predictions, forget subjects first."""
        roles = self._lastMetrics().get("roles") or {}
        order = {"forget": 0, "retain": 1, "held-out": 2}
        return sorted(roles, key=lambda s: (order.get(roles[s], 3), s))

    def showComparison(self, pn, subjectId: str) -> None:
        """The subject's MRI with the original and the unlearned prediction in linked views."""
        from MachineUnlearningLib.app import scene as mscene

        if not subjectId:
            raise ValueError(_("Choose a subject to compare."))
        run = Path(pn.lastRun)
        metrics = self._lastMetrics()
        names, colours = metrics.get("class_names") or [], metrics.get("class_colours") or []
        scene = slicer.mrmlScene
        volume = mscene.load_volume(
            scene, self.subjectImagePath(pn, subjectId), f"{subjectId} {DEFAULT_MODALITY}"
        )
        segmentations = [
            mscene.import_label_map_as_segmentation(
                scene,
                run / "predictions" / model / f"{subjectId}.nii.gz",
                volume,
                names,
                colours,
                f"{subjectId} {model}",
            )
            for model in ("original", "unlearned")
        ]
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        mscene.setup_compare_views(scene, volume, *segmentations)
        slicer.util.resetSliceViews()

    def outputFolder(self, pn):
        if _isSet(pn.lastRun):
            return Path(pn.lastRun)
        return Path(pn.output) if _isSet(pn.output) else None

    def saveUnlearnedModel(self, pn, destination) -> None:
        import shutil

        source = Path(pn.lastRun) / "unlearned.pt"
        if not source.is_file():
            raise FileNotFoundError(_("{path} does not exist.").format(path=source))
        shutil.copy2(source, destination)


def workerPythonExecutable() -> str:
    """Slicer's own Python launcher, so the worker sees Slicer's site-packages (and torch)."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


#
# MachineUnlearningTest
#


# Overrides of the cpu-demo recipe that make the self-test's model tiny (recipes.OVERRIDE_KEYS).
TINY_TEST_CONFIG = {"base_width": 8, "head_channels": 8, "input_size": [16, 32, 32]}


class MachineUnlearningTest(ScriptedLoadableModuleTest):
    """A tiny CPU run end to end: demo cohort, 1-epoch baseline, 1-epoch unlearning, import."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TinyCpuRunEndToEnd()

    def test_TinyCpuRunEndToEnd(self):
        import tempfile

        logic = MachineUnlearningLogic()
        logic.ensureDependencies(askConfirmation=False)
        pn = logic.getParameterNode()
        root = Path(tempfile.mkdtemp(prefix="MachineUnlearningTest-"))
        pn.output = root
        pn.device = "cpu"
        pn.epochs = 1

        self.delayDisplay("Generating the demo cohort")
        logic.generateDemoCohort(pn, root / "cohort", heldOut=0)
        self.assertEqual(self._waitForRun(logic), "ok")
        self.assertEqual(Path(pn.cohort), root / "cohort")

        self.delayDisplay("Training a tiny baseline for one epoch")
        logic.trainBaseline(pn, config=TINY_TEST_CONFIG, epochs=1)
        self.assertEqual(self._waitForRun(logic), "ok")
        self.assertTrue(Path(pn.checkpoint).is_file())

        self.delayDisplay("Unlearning one subject for one epoch")
        logic.updateSubjectRoles(pn)
        roles = logic.subjectRoles(pn)
        forget = next(s for s, r in roles.items() if r == "retain")
        roles[forget] = "forget"
        logic.setSubjectRoles(pn, roles)
        logic.startUnlearning(pn)  # the model and its preprocessing come from the checkpoint
        self.assertEqual(self._waitForRun(logic), "ok")

        self.assertIsNotNone(pn.resultsTable)
        self.assertGreater(pn.resultsTable.GetNumberOfRows(), 0)
        self.assertIn(forget, logic.comparableSubjects())
        logic.showComparison(pn, forget)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")), 2)
        self.delayDisplay("Test passed")

    def _waitForRun(self, logic, timeoutS: float = 900.0) -> str:
        import time

        deadline = time.monotonic() + timeoutS
        while logic.isRunning():
            if time.monotonic() > deadline:
                logic.stopAll()
                self.fail(f"the run did not finish within {timeoutS:g} s")
            slicer.app.processEvents()
            time.sleep(0.05)
        return logic.lastStatus
