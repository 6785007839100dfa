"""What the module needs installed in Slicer's Python, and how it gets it.

The decisions live here (plain Python, tested); the calls into Slicer and PyTorchUtils are made
by an :class:`Installer` the module file passes in.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any, Protocol

TORCH_VERSION_REQUIREMENT = ">=2.2"
REQUESTER = "MachineUnlearning"


class Installer(Protocol):
    """The Slicer calls (thin; implemented in MachineUnlearning.py)."""

    def torch_logic(self) -> Any: ...

    def packaging(self) -> Any: ...

    def confirm(self, text: str, title: str) -> bool: ...

    def pip_install(self, requirements: list[str]) -> None: ...


def missing_requirements(path: Path | str) -> list[str]:
    """Requirement lines of requirements.txt that are not installed (by distribution name)."""
    missing = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def torch_installed(installer: Installer) -> bool:
    try:
        return bool(installer.torch_logic().torchInstalled())
    except Exception:
        return False


def ensure_torch(installer: Installer, ask: bool = True) -> None:
    logic = installer.torch_logic()
    if logic.torchInstalled():
        return
    torch = logic.installTorch(
        askConfirmation=ask, torchVersionRequirement=TORCH_VERSION_REQUIREMENT
    )
    if torch is None:
        raise RuntimeError("PyTorch is required; it was not installed.")


def ensure_python_packages(installer: Installer, requirements: Path, ask: bool = True) -> None:
    packaging = installer.packaging()
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(packaging.load_requirements(str(requirements)), requester=REQUESTER)
    else:
        missing = missing_requirements(requirements)
        if missing:
            text = (
                "Machine Unlearning needs these Python packages:\n\n"
                + "\n".join(missing)
                + "\n\nInstall them now?"
            )
            if ask and not installer.confirm(text, "Install Python packages"):
                raise RuntimeError("The required Python packages were not installed.")
            installer.pip_install(missing)
    still = missing_requirements(requirements)
    if still:
        raise RuntimeError(
            f"Python packages still missing: {', '.join(still)}. Restart Slicer and try again."
        )


def ensure_dependencies(installer: Installer, requirements: Path, ask: bool = True) -> None:
    """PyTorch through the PyTorch extension, the rest from Resources/requirements.txt."""
    ensure_torch(installer, ask)
    ensure_python_packages(installer, requirements, ask)
