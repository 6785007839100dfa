"""What a clinician reads before and around the module: supported Slicer versions (defect 3),
where outputs go (defect 8), how the README's picture was made (defect 9); and the module
file's own shape (thin, no blocking call, torch only from PyTorchUtils).
"""

from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_FILE = REPO / "MachineUnlearning" / "MachineUnlearning.py"
ENGINE = REPO / "MachineUnlearning" / "MachineUnlearningLib"
README = (REPO / "README.md").read_text(encoding="utf-8")
MODULE_SOURCE = MODULE_FILE.read_text(encoding="utf-8")
MAX_MODULE_LINES = 350
# Files Slicer 5.8 (Python 3.9) runs before the version check says it is too old.
GATE_FILES = (
    MODULE_FILE,
    ENGINE / "__init__.py",
    ENGINE / "app" / "__init__.py",
    ENGINE / "app" / "support.py",
)


def python39() -> str | None:
    """A Python 3.9 interpreter (Slicer 5.8's), if this machine has one that runs."""
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{pyenv}/versions/3.9*/bin/python3.9"))
    candidates.append(shutil.which("python3.9") or "")
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 9)":
            return candidate
    return None


# -- supported Slicer versions (defect 3) ------------------------------------------------------


def test_an_older_slicer_gets_one_clear_message():
    from MachineUnlearningLib.app import support

    message = support.unsupported_message((3, 9, 10), "5.8.1")
    assert "5.10" in message and "5.8.1" in message and "3.9" in message
    assert "\n" not in message and "Traceback" not in message
    assert support.unsupported_message((3, 12, 10), "5.10.0") == ""


@pytest.mark.parametrize("path", GATE_FILES, ids=lambda p: p.name)
def test_what_runs_before_the_version_check_parses_as_python_3_9(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_the_version_check_runs_on_python_3_9():
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 interpreter on this machine (the grammar check above ran)")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from MachineUnlearningLib.app.support import unsupported_message;"
        "print(unsupported_message());"
        "compile(open(sys.argv[2]).read(), sys.argv[2], 'exec')"
    )
    result = subprocess.run(
        [interpreter, "-c", code, str(ENGINE.parent), str(MODULE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "5.10" in result.stdout


def test_the_widget_checks_the_version_before_importing_the_engine():
    setup = next(
        n
        for n in ast.walk(ast.parse(MODULE_SOURCE))
        if isinstance(n, ast.FunctionDef) and n.name == "setup"
    )
    source = ast.get_source_segment(MODULE_SOURCE, setup)
    assert "unsupported_message" in source
    assert source.index("unsupported_message") < source.index("app.presenter")


def test_readme_help_and_catalog_state_the_supported_versions():
    description = re.search(
        r'set\(EXTENSION_DESCRIPTION "([^"]*)"', (REPO / "CMakeLists.txt").read_text()
    )
    for where, text in (
        ("README", README),
        ("module help", MODULE_SOURCE[MODULE_SOURCE.index("helpText") :][:1500]),
        ("EXTENSION_DESCRIPTION", description.group(1)),
    ):
        assert re.search(r"5\.10 (or|and) later", text), (
            f"{where} does not say 'Slicer 5.10 or later'"
        )


# -- outputs (defect 8) and the screenshot (defect 9) ------------------------------------------


def test_readme_says_where_module_outputs_go_and_how_to_delete_them():
    section = README[README.index("## Outputs and where they live") :].split("\n## ")[0]
    assert "Delete this run's outputs" in section
    assert "LOCALAPPDATA" in section and ".local/share" in section
    assert "Documents" in section  # why not there


def test_the_screenshot_caption_says_how_the_picture_was_made():
    caption = README[README.index("![") :].split("\n\n", 2)[1]
    assert "real Slicer" not in caption
    assert "slicer-core" in caption and "trame-slicer" in caption


# -- the module file's shape -------------------------------------------------------------------


def test_the_module_file_is_thin():
    lines = MODULE_SOURCE.count("\n")
    assert lines < MAX_MODULE_LINES, f"MachineUnlearning.py has {lines} lines"


def test_torch_comes_only_from_pytorchutils_reached_without_its_gui():
    calls = {
        ast.unparse(n.func) for n in ast.walk(ast.parse(MODULE_SOURCE)) if isinstance(n, ast.Call)
    }
    assert "PyTorchUtils.PyTorchUtilsLogic" in calls
    assert not any("getModuleLogic" in c for c in calls), "getModuleLogic builds the module GUI"


def without_the_self_test(source: str) -> str:
    tree = ast.parse(source)
    kept = [n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name.endswith("Test"))]
    return "\n".join(ast.unparse(n) for n in kept)


def test_nothing_in_the_module_or_the_presenter_waits_on_a_process():
    for path in (MODULE_FILE, *sorted((ENGINE / "app").glob("*.py"))):
        if path.name in ("cli.py", "runner.py"):
            continue  # the CLI runs in the worker; runner.wait() is for scripts and tests
        text = without_the_self_test(path.read_text(encoding="utf-8"))
        for blocking in ("subprocess.run", "check_output", ".communicate(", "time.sleep"):
            assert blocking not in text, f"{path.name} calls {blocking}"
