"""What the module needs in Slicer's Python, and how it gets it without touching torch.

Decisions live here (plain Python, tested): which requirements are missing, the pip
constraints that keep torch (and numpy, SimpleITK) exactly as installed, whether the installed
torch is recent enough, what to tell the user. The Slicer and PyTorchUtils calls are made by an
:class:`Installer` the module file passes in. torch itself comes only from the PyTorch extension
(PyTorchUtils, which picks the CUDA build for the GPU driver); pip never changes it, because
MONAI 1.6 requires torch >= 2.8 and an unconstrained ``pip install monai`` would replace a
GPU build with a CPU one from PyPI.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

TORCH_REQUIREMENT = ">=2.2"
"""The engine's own need (pyproject.toml ``torch>=2.2``)."""
PINNED: tuple[str, ...] = ("torch", "numpy", "SimpleITK")
"""Kept at their installed version: torch (PyTorch extension), numpy and SimpleITK (Slicer)."""
ENGINE = "this module"
REQUESTER = "MachineUnlearning"
UPDATE_TORCH = (
    "Update PyTorch from the PyTorch module (PyTorch Utils, from the PyTorch extension: it "
    "picks the build for your GPU), restart Slicer and try again."
)

Versions = Callable[[str], "str | None"]


class DependencyError(RuntimeError):
    """A dependency is missing and was not installed; the message says what to do."""


class Installer(Protocol):
    """The Slicer calls (thin; MachineUnlearning.py implements them)."""

    def install_torch(self, requirement: str, ask: bool) -> str | None:
        """PyTorchUtils' ``installTorch``; the installed torch version, None if declined."""

    def has_pip_ensure(self) -> bool:
        """``slicer.packaging.pip_ensure`` exists (Slicer >= 5.12)."""

    def pip_ensure(self, requirements: list[str], constraints: str, ask: bool) -> None:
        """``slicer.packaging.pip_ensure(..., constraints=, prompt_install=ask)``."""

    def pip_install(self, arguments: list[str]) -> None:
        """``slicer.util.pip_install(arguments)`` (a list: pip command-line arguments)."""

    def confirm(self, text: str, title: str) -> bool: ...

    def testing(self) -> bool:
        """Slicer's testing mode (``slicer.app.testingEnabled()``)."""


def installed_version(name: str) -> str | None:
    """The installed distribution's version, from its metadata (nothing is imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_requirements(path: Path | str) -> list[Requirement]:
    """Requirement lines of a requirements.txt (comments, blank lines and options skipped)."""
    requirements = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            requirements.append(Requirement(text))
    return requirements


def satisfied(requirement: Requirement, versions: Versions = installed_version) -> bool:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    version = versions(requirement.name)
    return version is not None and requirement.specifier.contains(version, prereleases=True)


def torch_needs(
    versions: Versions = installed_version,
    requires: Callable[[str], Iterable[str] | None] = importlib.metadata.requires,
    packages: Iterable[str] = ("monai",),
) -> dict[str, str]:
    """{"<package> <version>": torch specifier} for installed packages that require torch."""
    needs = {}
    for package in packages:
        version = versions(package)
        if version is None:
            continue
        for text in requires(package) or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if canonicalize_name(requirement.name) == "torch" and requirement.marker is None:
                needs[f"{package} {version}"] = str(requirement.specifier)
    return needs


def torch_problem(torch: str, needs: Mapping[str, str]) -> str:
    """Why the installed ``torch`` version cannot serve (the engine's need + ``needs``); ""."""
    try:
        version = Version(torch)
    except InvalidVersion:
        return f"The installed PyTorch reports an unreadable version {torch!r}. {UPDATE_TORCH}"
    wanted = {ENGINE: TORCH_REQUIREMENT, **needs}
    unmet = [f"{who} needs torch{spec}" for who, spec in wanted.items()
             if spec and not SpecifierSet(spec).contains(version, prereleases=True)]  # fmt: skip
    if not unmet:
        return ""
    return f"PyTorch {torch} is installed, but {'; '.join(unmet)}. {UPDATE_TORCH}"


def constraints_text(versions: Versions = installed_version) -> str:
    """pip constraints that keep every installed package of :data:`PINNED` as it is."""
    lines = [f"{name}=={versions(name)}" for name in PINNED if versions(name)]
    return "".join(line + "\n" for line in lines)


def ensure_dependencies(
    installer: Installer,
    requirements: Path | str,
    ask: bool = True,
    versions: Versions = installed_version,
) -> None:
    """torch through PyTorchUtils, then the missing requirements through pip, torch pinned.

    Raises DependencyError with what to do when something is still missing (declined,
    Slicer's testing mode, a torch too old, a failed install).
    """
    torch = versions("torch")
    if torch is None:
        if installer.testing():  # PyTorchUtils would install without asking in testing mode
            raise DependencyError("Not installed in Slicer's testing mode: torch (PyTorch).")
        torch = installer.install_torch(TORCH_REQUIREMENT, ask)
        if torch is None:
            raise DependencyError(
                "PyTorch is required and was not installed. Install it from the PyTorch module "
                "(PyTorch extension), restart Slicer and try again."
            )
    problem = torch_problem(torch, torch_needs(versions))
    if problem:
        raise DependencyError(problem)
    missing = [r for r in read_requirements(requirements) if not satisfied(r, versions)]
    if not missing:
        return
    names = ", ".join(str(r) for r in missing)
    if installer.testing():  # Slicer's dialogs answer "OK" by themselves in testing mode
        raise DependencyError(f"Not installed in Slicer's testing mode: {names}.")
    _install([str(r) for r in missing], torch, installer, ask, versions)
    importlib.invalidate_caches()
    still = [r for r in missing if not satisfied(r, versions)]
    if still:
        raise DependencyError(
            f"Python packages still missing: {', '.join(map(str, still))}. "
            "Restart Slicer and try again."
        )


def _install(
    missing: list[str], torch: str, installer: Installer, ask: bool, versions: Versions
) -> None:
    names = ", ".join(missing)
    handle, constraints = tempfile.mkstemp(prefix="MachineUnlearning-", suffix="-constraints.txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(constraints_text(versions))
        if installer.has_pip_ensure():
            installer.pip_ensure(missing, constraints, ask)  # asks the user itself
        else:
            question = (
                "Machine Unlearning needs these Python packages in Slicer's Python:\n\n"
                + "".join(f"- {r}\n" for r in missing)
                + f"\npip installs them with torch kept at {torch} (from the PyTorch "
                "extension) and numpy and SimpleITK as they are. Install them now?"
            )
            if ask and not installer.confirm(question, "Install Python packages"):
                raise DependencyError(
                    f"The packages were not installed (declined): {', '.join(missing)}."
                )
            installer.pip_install(["-c", constraints, *missing])
    except DependencyError:
        raise
    except Exception as error:  # pip failed, or the user declined pip_ensure's dialog
        if "declined" in str(error):  # pip_ensure: RuntimeError("User declined ...")
            raise DependencyError(f"The packages were not installed (declined): {names}.") from None
        raise DependencyError(
            f"Installing {names} did not succeed with torch {torch}, numpy and SimpleITK kept "
            f"as installed ({error}). If a package needs a newer torch: {UPDATE_TORCH}"
        ) from error
    finally:
        Path(constraints).unlink(missing_ok=True)
