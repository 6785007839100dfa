"""Stand-ins for what only Slicer's Qt application provides, for the presenter's flow tests.

- :class:`MrmlParameters`: the ``parameterNodeWrapper`` instance of MachineUnlearning.py over a
  real ``vtkMRMLScriptedModuleNode`` (slicer-core): the fields, types and defaults are read from
  the module file's ``MachineUnlearningParameterNode`` class, values are stored the way the
  wrapper's serializers store them (strings via ``SetParameter``, nodes via
  ``SetNodeReferenceID``), so a change fires the node's ModifiedEvent as in Slicer.
- :class:`RecordingView`: the widget (what it was told to draw and log).
- :class:`RecordingDesktop`: dialogs, layouts and the poll timer; answers are scripted.
- :class:`RecordingInstaller`: Slicer's pip functions and PyTorchUtils; records every call.
- :func:`write_stand_in_worker`: a small worker speaking the real event protocol, whose pace the
  test controls with a release file (as in test_runner.py).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import json
import textwrap
from pathlib import Path
from typing import Any

import slicer

MODULE_FILE = Path(__file__).resolve().parents[1] / "MachineUnlearning" / "MachineUnlearning.py"
SINGLETON_TAG = "MachineUnlearning"


def parameter_declarations() -> dict[str, tuple[str, Any]]:
    """Field -> (type name, default) of MachineUnlearningParameterNode in the module file."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "MachineUnlearningParameterNode":
            fields = {}
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    annotation = statement.annotation
                    if isinstance(annotation, ast.Subscript):  # Annotated[int, ...]
                        annotation = annotation.slice.elts[0]
                    type_name = ast.unparse(annotation)
                    default = ast.literal_eval(statement.value) if statement.value else None
                    fields[statement.target.id] = (type_name, default)
            return fields
    raise AssertionError("no MachineUnlearningParameterNode in the module file")


_DEFAULTS = {"str": "", "bool": False, "int": 0, "float": 0.0, "Path": Path()}


class MrmlParameters:
    """The parameter node wrapper's behaviour over a real scripted module node."""

    def __init__(self, scene) -> None:
        node = scene.GetSingletonNode(SINGLETON_TAG, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(SINGLETON_TAG)
            node.SetName(SINGLETON_TAG)
            scene.AddNode(node)
        object.__setattr__(self, "parameterNode", node)
        object.__setattr__(self, "_fields", parameter_declarations())
        for name in self._fields:
            if not self._is_node(name) and not node.GetParameter(name):
                setattr(self, name, self._default(name))

    def _is_node(self, name: str) -> bool:
        return self._fields[name][0].startswith("vtkMRML")

    def _default(self, name: str) -> Any:
        type_name, default = self._fields[name]
        return _DEFAULTS[type_name] if default is None else default

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name not in fields:
            raise AttributeError(name)
        node = self.parameterNode
        if self._is_node(name):
            return node.GetNodeReference(name)
        if not node.GetParameterNames() or name not in node.GetParameterNames():
            setattr(self, name, self._default(name))
        text, type_name = node.GetParameter(name), fields[name][0]
        if type_name == "bool":
            return text == "True"
        if type_name in ("int", "float"):
            return {"int": int, "float": float}[type_name](text)
        return Path(text) if type_name == "Path" else text

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._fields:
            raise AttributeError(f"no parameter {name!r}")
        if self._is_node(name):
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value else None)
        else:
            self.parameterNode.SetParameter(name, str(value))

    def AddObserver(self, event, callback, priority: float = 0.0) -> int:  # noqa: N802
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag: int) -> None:  # noqa: N802
        self.parameterNode.RemoveObserver(tag)


class RecordingView:
    """The widget: keeps a copy of every state it was told to draw, and the log."""

    def __init__(self) -> None:
        self.states: list[Any] = []
        self.log: list[str] = []

    @property
    def state(self) -> Any:
        return self.states[-1]

    def render(self, state) -> None:
        self.states.append(dataclasses.replace(state))

    def append_log(self, line: str) -> None:
        self.log.append(line)

    def clear_log(self) -> None:
        self.log.clear()


class RecordingDesktop:
    """Dialogs answer from ``answers`` (default: yes); every call is recorded."""

    def __init__(self, answers: list[bool] | None = None) -> None:
        self.answers = list(answers or [])
        self.questions: list[str] = []
        self.calls: list[tuple[str, Any]] = []

    def confirm(self, text: str, title: str) -> bool:
        self.questions.append(text)
        return self.answers.pop(0) if self.answers else True

    def show_chart(self, chart) -> None:
        self.calls.append(("show_chart", chart))

    def show_volume(self, volume) -> None:
        self.calls.append(("show_volume", volume))

    def show_comparison(self) -> None:
        self.calls.append(("show_comparison", None))

    def open_folder(self, path) -> None:
        self.calls.append(("open_folder", path))

    def start_polling(self) -> None:
        self.calls.append(("start_polling", None))


class _TorchUtilsLogic:
    """The parts of PyTorchUtils.PyTorchUtilsLogic the module calls."""

    def __init__(self, installer: RecordingInstaller) -> None:
        self.installer = installer

    def torchInstalled(self) -> bool:  # noqa: N802
        return self.installer.torch is not None

    def installTorch(self, askConfirmation=False, torchVersionRequirement=None, **kwargs):  # noqa: N802
        return self.installer.install_torch(torchVersionRequirement or "", askConfirmation)


class RecordingInstaller:
    """Slicer's pip functions and PyTorchUtils, recorded; nothing is installed.

    Args:
        torch: the torch version "installed" (None: not installed).
        torch_after_install: what PyTorchUtils' installTorch "installs" (None: user declined).
        pip_ensure: whether ``slicer.packaging.pip_ensure`` exists (Slicer >= 5.12).
        testing: Slicer's testing mode (``slicer.app.testingEnabled()``).
    """

    def __init__(
        self,
        torch: str | None = importlib.metadata.version("torch"),
        torch_after_install: str | None = None,
        pip_ensure: bool = False,
        testing: bool = False,
        confirm: bool = True,
    ) -> None:
        self.torch = torch
        self.torch_after_install = torch_after_install
        self.with_pip_ensure = pip_ensure
        self.testing_mode = testing
        self.answer = confirm
        self.calls: list[tuple[str, Any]] = []

    def versions(self, name: str) -> str | None:
        """Installed versions as this stand-in environment has them (torch as given)."""
        if name == "torch":
            return self.torch
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    # the module's Installer protocol
    def install_torch(self, requirement: str, ask: bool) -> str | None:
        self.calls.append(("install_torch", (requirement, ask)))
        self.torch = self.torch_after_install
        return self.torch

    def has_pip_ensure(self) -> bool:
        return self.with_pip_ensure

    def pip_ensure(self, requirements: list[str], constraints: str, ask: bool) -> None:
        self.calls.append(("pip_ensure", (list(requirements), Path(constraints).read_text(), ask)))

    def pip_install(self, arguments: list[str]) -> None:
        arguments = list(arguments)
        constraints = ""
        if "-c" in arguments:
            constraints = Path(arguments[arguments.index("-c") + 1]).read_text()
        self.calls.append(("pip_install", (arguments, constraints)))

    def confirm(self, text: str, title: str) -> bool:
        self.calls.append(("confirm", text))
        return self.answer

    def testing(self) -> bool:
        return self.testing_mode

    # what the extracted code called before (kept so that old code fails on behaviour)
    def torch_logic(self) -> _TorchUtilsLogic:
        return _TorchUtilsLogic(self)

    def packaging(self):
        if not self.with_pip_ensure:
            return None
        installer = self

        class _Packaging:
            @staticmethod
            def load_requirements(path):
                lines = Path(path).read_text().splitlines()
                return [x.split("#")[0].strip() for x in lines if x.split("#")[0].strip()]

            @staticmethod
            def pip_ensure(requirements, constraints=None, prompt_install=True, **kwargs):
                text = Path(constraints).read_text() if constraints else ""
                installer.calls.append(("pip_ensure", (list(requirements), text, prompt_install)))

        return _Packaging()

    def installs(self) -> list[tuple[str, Any]]:
        return [c for c in self.calls if c[0] in ("pip_install", "pip_ensure", "install_torch")]


STAND_IN_WORKER = textwrap.dedent(
    '''
    """Stand-in worker: the real event protocol, paced by the test through a release file."""
    import json, os, shutil, sys, time
    from pathlib import Path

    def emit(kind, **fields):
        print(json.dumps({"event": kind, "time": time.time(), **fields}), flush=True)

    def released(cancel=None):
        release = os.environ.get("STAND_IN_RELEASE")
        deadline = time.monotonic() + 120
        while release and not Path(release).exists():
            if cancel is not None and cancel.exists():
                return False
            if time.monotonic() > deadline:
                sys.exit(1)
            time.sleep(0.02)
        return True

    args = sys.argv[1:]
    command = args[0]
    if command == "devices":
        released()
        gpu = {"index": 0, "name": "Stand-in GPU", "free_bytes": 3 * 2**30,
               "total_bytes": 8 * 2**30}
        print(json.dumps({"gpus": [gpu]}), flush=True)
        sys.exit(0)
    if command == "describe-checkpoint":
        print(json.dumps({"checkpoint": {"depth": 10, "num_classes": 4}}), flush=True)
        sys.exit(0)
    job = json.loads(Path(args[args.index("--job") + 1]).read_text())
    out = Path(job["output"])
    cancel = Path(job.get("cancel_file") or out / "CANCEL")
    emit("started", command=command, job=job)
    epochs = job.get("epochs") or 3
    for epoch in range(1, epochs + 1):
        emit("progress", phase="unlearn", epoch=epoch, epochs=epochs, step=1, steps=1, eta_s=1.0)
        if epoch == 1 and not released(cancel) or cancel.exists():
            emit("finished", status="cancelled", exit_code=3, outputs={})
            sys.exit(3)
    shutil.copy(os.environ["STAND_IN_METRICS"], out / "metrics.json")
    for model in ("original", "unlearned"):
        (out / "predictions" / model).mkdir(parents=True, exist_ok=True)
        (out / "predictions" / model / "070.nii.gz").write_bytes(b"label map")
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "dice.png").write_bytes(b"png")
    for name in ("report.html", "report.md", "audit.json", "deletion-record.json"):
        (out / name).write_text("{}")
    (out / "unlearned.pt").write_bytes(b"weights")
    emit("finished", status="ok", exit_code=0, outputs={"metrics": str(out / "metrics.json")})
    '''
)


def write_stand_in_worker(folder: Path) -> Path:
    path = folder / "stand_in_worker.py"
    path.write_text(STAND_IN_WORKER, encoding="utf-8")
    return path


def a_metrics_document(forget: str = "070", retain: str = "1") -> dict:
    """A small metrics.json (schema_version 1) for the stand-in worker's runs."""

    def subject(subject_id: str, role: str, dice: float) -> dict:
        return {"subject_id": subject_id, "role": role, "dice": {"gray matter": dice},
                "mean_dice": dice, "mae": 1 - dice}  # fmt: skip

    def evaluation(model: str, epoch: int, forget_dice: float) -> dict:
        return {
            "model": model,
            "epoch": epoch,
            "subjects": [subject(forget, "forget", forget_dice), subject(retain, "retain", 0.9)],
            "sets": {"forget": {"dice": forget_dice}, "retain": {"dice": 0.9}},
        }

    return {
        "schema_version": 1,
        "class_names": ["background", "gray matter"],
        "class_colours": [[0, 0, 0], [70, 130, 230]],
        "roles": {forget: "forget", retain: "retain"},
        "evaluations": [evaluation("original", 0, 0.9), evaluation("unlearned", 3, 0.4)],
        "summary": [
            {
                "epoch": 3,
                "forget_decrease_pct": 55.6,
                "retain_preservation_pct": 100.0,
                "dice_gap": 0.1,
                "mae_gap": 0.1,
            }
        ],  # fmt: skip
    }


def write_metrics(folder: Path) -> Path:
    path = folder / "stand-in-metrics.json"
    path.write_text(json.dumps(a_metrics_document()), encoding="utf-8")
    return path
