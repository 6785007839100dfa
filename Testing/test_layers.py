"""The engine's layers import only downward (DESIGN.md section 2; docs/architecture.md).

Order, top to bottom: app, commands, outputs, evaluation, strategies, training, model, data,
runtime. A module may import its own layer and the layers below it, never one above, so
there is no import circle between layers. Every import counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "MachineUnlearning" / "MachineUnlearningLib"
LAYERS = (
    "app",
    "commands",
    "outputs",
    "evaluation",
    "strategies",
    "training",
    "model",
    "data",
    "runtime",
)
# (importing layer, imported module) pairs allowed for a stated reason (none at present).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def engine_modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if p.parent != ENGINE)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.startswith("MachineUnlearningLib.")}


def layer_of_module(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_engine_folder_is_a_known_layer():
    folders = {p.name for p in ENGINE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS)


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: p.relative_to(ENGINE).as_posix())
def test_a_module_imports_only_its_own_layer_and_those_below(path):
    own = path.relative_to(ENGINE).parts[0]
    upward = []
    for module in sorted(imported_modules(path)):
        target = layer_of_module(module)
        if target is None or (own, module) in KNOWN_EXCEPTIONS:
            continue
        if LAYERS.index(target) < LAYERS.index(own):
            upward.append(module)
    assert not upward, f"{own}/ must not import the higher layer(s) {upward}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "example.py"
    module.write_text("def f():\n    from MachineUnlearningLib.app.cli import main\n")
    assert imported_modules(module) == {"MachineUnlearningLib.app.cli"}
    assert LAYERS.index(layer_of_module("MachineUnlearningLib.app.cli")) < LAYERS.index("data")
