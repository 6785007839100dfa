"""Installing the module's packages into Slicer's Python never changes torch (defect 4).

``MachineUnlearningLib.app.dependencies`` decides (which packages, which constraint, which
message); the Slicer calls it makes are recorded by module_doubles.RecordingInstaller, the one
stand-in here (pip and PyTorchUtils cannot run outside Slicer). Requirement files are real
files; installed versions are read from this environment unless a test says otherwise.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from module_doubles import RecordingInstaller

from MachineUnlearningLib.app import dependencies

ABSENT = "machine-unlearning-absent-package>=1.0"  # not installed anywhere
INSTALLED_TORCH = importlib.metadata.version("torch")


def a_requirements_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("# test requirements\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(installer: RecordingInstaller, requirements: Path, ask: bool = True) -> Exception | None:
    """``ensure_dependencies``; the error it raised, if any (nothing really gets installed)."""
    try:
        dependencies.ensure_dependencies(installer, requirements, ask, installer.versions)
    except Exception as error:  # noqa: BLE001 - the message is what the user sees
        return error
    return None


def test_pip_install_is_constrained_to_the_installed_torch(tmp_path):
    installer = RecordingInstaller(pip_ensure=False)
    run(installer, a_requirements_file(tmp_path, ABSENT, "psutil>=5.9"))
    kinds = [kind for kind, _ in installer.calls]
    assert kinds.index("confirm") < kinds.index("pip_install"), "install without asking"
    (arguments, constraints) = dict(installer.calls)["pip_install"]
    assert f"torch=={INSTALLED_TORCH}" in constraints.splitlines()
    assert "-c" in arguments and ABSENT in arguments
    assert not any(a.startswith("psutil") for a in arguments), "installed packages re-installed"


def test_pip_ensure_gets_the_torch_constraint_and_the_confirmation(tmp_path):
    installer = RecordingInstaller(pip_ensure=True)
    run(installer, a_requirements_file(tmp_path, ABSENT), ask=True)
    requirements, constraints, ask = dict(installer.calls)["pip_ensure"]
    assert [str(r) for r in requirements] == [ABSENT]
    assert f"torch=={INSTALLED_TORCH}" in constraints.splitlines()
    assert ask is True


def test_packages_slicer_ships_are_pinned_too(tmp_path):
    installer = RecordingInstaller(pip_ensure=True)
    run(installer, a_requirements_file(tmp_path, ABSENT))
    _, constraints, _ = dict(installer.calls)["pip_ensure"]
    assert f"numpy=={importlib.metadata.version('numpy')}" in constraints.splitlines()


def test_testing_mode_installs_nothing_and_says_so(tmp_path):
    # Slicer's confirmOkCancelDisplay answers OK in testing mode, so the module must not ask
    installer = RecordingInstaller(pip_ensure=False, testing=True)
    error = run(installer, a_requirements_file(tmp_path, ABSENT))
    assert installer.installs() == []
    assert error is not None and "testing mode" in str(error)
    assert ABSENT.split(">=")[0] in str(error)


def test_testing_mode_never_asks_pytorchutils_to_install_torch(tmp_path):
    # PyTorchUtils' installTorch skips its confirmation in testing mode and installs at once
    installer = RecordingInstaller(torch=None, torch_after_install="2.9.1", testing=True)
    error = run(installer, a_requirements_file(tmp_path, "psutil>=5.9"))
    assert installer.installs() == []
    assert error is not None and "testing mode" in str(error) and "torch" in str(error)


def test_declining_pip_ensures_dialog_says_declined(tmp_path):
    class Declining(RecordingInstaller):
        def pip_ensure(self, requirements, constraints, ask):
            raise RuntimeError("User declined package installation")  # what pip_ensure raises

    error = run(Declining(pip_ensure=True), a_requirements_file(tmp_path, ABSENT))
    assert error is not None and "declined" in str(error) and "torch" not in str(error)


def test_declining_installs_nothing(tmp_path):
    installer = RecordingInstaller(pip_ensure=False, confirm=False)
    error = run(installer, a_requirements_file(tmp_path, ABSENT))
    assert installer.installs() == []
    assert error is not None and "not installed" in str(error)


def test_nothing_is_asked_when_everything_is_installed(tmp_path):
    installer = RecordingInstaller()
    assert run(installer, a_requirements_file(tmp_path, "psutil>=5.9", "scipy>=1.10")) is None
    assert installer.calls == []


def test_a_missing_torch_comes_from_pytorchutils_with_the_engines_requirement(tmp_path):
    installer = RecordingInstaller(torch=None, torch_after_install="2.9.1+cu126")
    error = run(installer, a_requirements_file(tmp_path, "psutil>=5.9"), ask=True)
    assert error is None, error
    assert installer.calls[0] == ("install_torch", (">=2.2", True))


def test_declining_pytorch_stops_with_a_clear_message(tmp_path):
    installer = RecordingInstaller(torch=None, torch_after_install=None)
    error = run(installer, a_requirements_file(tmp_path, ABSENT))
    assert error is not None and "PyTorch" in str(error)
    assert [c for c in installer.installs() if c[0] != "install_torch"] == []


@pytest.mark.parametrize(
    ("torch", "needs", "words"),
    [
        ("2.1.0", {}, ["2.1.0", ">=2.2", "PyTorch"]),
        ("2.4.1+cu121", {"monai 1.6.0": ">=2.8"}, ["2.4.1+cu121", "monai 1.6.0", ">=2.8"]),
    ],
    ids=["older-than-the-engine", "older-than-installed-monai"],
)
def test_a_torch_too_old_is_reported_never_replaced(torch, needs, words):
    problem = dependencies.torch_problem(torch, needs)
    for word in words:
        assert word in problem
    assert "PyTorch module" in problem  # where to update it: the PyTorch extension


def test_a_torch_recent_enough_is_no_problem():
    assert dependencies.torch_problem("2.8.0+cu128", {"monai 1.6.0": ">=2.8"}) == ""
    assert dependencies.torch_problem(INSTALLED_TORCH, dependencies.torch_needs()) == ""
