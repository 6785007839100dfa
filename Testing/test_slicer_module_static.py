"""Static checks of the Slicer side, without Slicer: .ui, CMake lists, catalog entry, imports.

A file missing from MODULE_PYTHON_SCRIPTS is silently left out of the extension package, a
widget name missing from the .ui fails only when a user opens the module, and a heavy import at
file scope slows or breaks Slicer's start-up: these tests catch each before a Slicer build.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import jsonschema
import pytest

from conftest import require_shared

REPO = Path(__file__).resolve().parents[1]
CATALOG_SCHEMA_NAME = "slicer-extension-catalog-entry-schema.json"
MODULE_NAME = "MachineUnlearning"
MODULE_DIR = REPO / MODULE_NAME
MODULE_FILE = MODULE_DIR / f"{MODULE_NAME}.py"
ENGINE_DIR = MODULE_DIR / "MachineUnlearningLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE_NAME}.ui"
CATALOG_ENTRY = REPO / "Resources" / f"{MODULE_NAME}.json"

# Module-level imports MachineUnlearning.py may make (anything else is imported in a function).
ALLOWED_MODULE_IMPORTS = {
    "slicer",
    "qt",
    "ctk",
    "vtk",
    "os",
    "sys",
    "json",
    "pathlib",
    "typing",
    "enum",
    "logging",
    "importlib",
    "time",
}
# Folders under MachineUnlearning/ whose .py files are not module scripts (in-Slicer tests are
# registered by their own CMakeLists.txt).
NOT_MODULE_SCRIPTS = ("Testing",)


# -- helpers ----------------------------------------------------------------------------------


def cmake_list(text: str, variable: str) -> list[str]:
    """Entries of ``set(VARIABLE ...)`` in a CMakeLists.txt, ``${MODULE_NAME}`` expanded."""
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.DOTALL)
    assert match, f"no set({variable} ...) in the CMakeLists.txt"
    entries = []
    for line in match.group(1).splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(entry.replace("${MODULE_NAME}", MODULE_NAME))
    return entries


def cmake_variable(text: str, variable: str) -> str:
    match = re.search(rf'set\(\s*{variable}\s+"([^"]*)"', text)
    assert match, f'no set({variable} "...") in the top-level CMakeLists.txt'
    return match.group(1)


def module_cmake() -> str:
    return (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")


def top_cmake() -> str:
    return (REPO / "CMakeLists.txt").read_text(encoding="utf-8")


def python_files_of_the_module() -> list[str]:
    files = []
    for path in MODULE_DIR.rglob("*.py"):
        relative = path.relative_to(MODULE_DIR)
        if "__pycache__" in relative.parts or relative.parts[0] in NOT_MODULE_SCRIPTS:
            continue
        if any(part.endswith(".egg-info") for part in relative.parts):
            continue
        files.append(relative.as_posix())
    return sorted(files)


def ui_widget_names() -> dict[str, str]:
    root = ElementTree.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def ui_widget(name: str) -> ElementTree.Element:
    root = ElementTree.parse(UI_FILE).getroot()
    found = [w for w in root.iter("widget") if w.get("name") == name]
    assert len(found) == 1, f"{name}: {len(found)} widgets in the .ui"
    return found[0]


def parameter_node_defaults() -> dict[str, object]:
    """Field name -> literal default of the parameter node (fields without one are left out)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{MODULE_NAME}ParameterNode":
            return {
                s.target.id: ast.literal_eval(s.value)
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.value
            }
    pytest.fail(f"no class {MODULE_NAME}ParameterNode in {MODULE_FILE.name}")


def ui_names_used_in_code() -> set[str]:
    """Every ``self.ui.<name>`` and ``ui.<name>`` (``ui = self.ui``) in MachineUnlearning.py,
    and every ``<name>PathLineEdit`` the code builds from its PATHS names."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if (
            isinstance(owner, ast.Attribute)
            and owner.attr == "ui"
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "self"
        ):
            names.add(node.attr)
        elif isinstance(owner, ast.Name) and owner.id == "ui":
            names.add(node.attr)  # fmt: skip
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PATHS":
            names |= {f"{name}PathLineEdit" for name in ast.literal_eval(node.value)}
    return names


def module_level_imports(path: Path) -> list[str]:
    """Top-level module names imported outside any function or class (``a.b`` -> ``a``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, (ast.If, ast.Try)):
            pytest.fail(f"{path.name}: imports under a module-level if/try are not checked")
    return names


def all_imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def parameter_node_fields() -> set[str]:
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{MODULE_NAME}ParameterNode":
            return {
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
    pytest.fail(f"no class {MODULE_NAME}ParameterNode in {MODULE_FILE.name}")


# -- the .ui file -----------------------------------------------------------------------------


def test_the_ui_file_parses_and_holds_every_widget_the_code_names():
    widgets = ui_widget_names()
    used = ui_names_used_in_code()
    assert {"applyButton", "deleteOutputsButton", "checkpointPathLineEdit"} <= used
    missing = sorted(used - set(widgets))
    assert not missing, f"{UI_FILE.name} lacks widgets used as self.ui.<name>: {missing}"


def test_the_ui_file_has_the_five_sections():
    widgets = ui_widget_names()
    for section in ("model", "cases", "strategy", "run", "results"):
        assert widgets.get(f"{section}CollapsibleButton") == "ctkCollapsibleButton", section


def test_bound_widgets_name_real_parameters():
    root = ElementTree.parse(UI_FILE).getroot()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.findtext("string")
    assert bound, "no widget is bound with the SlicerParameterName dynamic property"
    unknown = {w: p for w, p in bound.items() if p not in parameter_node_fields()}
    assert not unknown, f"SlicerParameterName values that are no parameter: {unknown}"


def test_custom_widgets_used_in_the_ui_are_declared():
    root = ElementTree.parse(UI_FILE).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"


# -- CMake lists ------------------------------------------------------------------------------


def test_every_python_file_of_the_module_is_listed_in_cmake():
    listed = cmake_list(module_cmake(), "MODULE_PYTHON_SCRIPTS")
    present = python_files_of_the_module()
    missing = sorted(set(present) - set(listed))
    stale = sorted(set(listed) - set(present))
    wanted = "\n".join(
        "  " + ("${MODULE_NAME}.py" if f == f"{MODULE_NAME}.py" else f) for f in present
    )
    assert not missing and not stale, (
        f"MODULE_PYTHON_SCRIPTS in {MODULE_NAME}/CMakeLists.txt is out of date: "
        f"missing {missing}, no longer present {stale}. The list should read:\n{wanted}"
    )
    assert listed == sorted(listed), "keep MODULE_PYTHON_SCRIPTS sorted, one file per line"


def test_every_resource_file_is_listed_in_cmake():
    listed = cmake_list(module_cmake(), "MODULE_PYTHON_RESOURCES")
    resources = MODULE_DIR / "Resources"
    present = sorted(
        p.relative_to(MODULE_DIR).as_posix() for p in resources.rglob("*") if p.is_file()
    )
    missing = sorted(set(present) - set(listed))
    stale = sorted(set(listed) - set(present))
    assert not missing and not stale, f"resources missing {missing}, listed but absent {stale}"


def test_the_module_cmake_builds_the_module_with_its_tests():
    text = module_cmake()
    assert re.search(r"slicerMacroBuildScriptedModule\([^)]*WITH_GENERIC_TESTS", text, re.DOTALL)
    assert re.search(
        r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)",
        text,
        re.DOTALL,
    )


def test_the_top_level_cmake_follows_the_extension_template():
    text = top_cmake()
    for variable in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert cmake_variable(text, variable), f"{variable} is empty"
    order = [
        "project(",
        "EXTENSION_HOMEPAGE",
        "EXTENSION_DEPENDS",
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        f"add_subdirectory({MODULE_NAME})",
        "## NEXT_MODULE",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions), "the top-level CMakeLists.txt is out of template order"
    for url_variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_variable(text, url_variable).split():
            assert url.startswith("https://raw.githubusercontent.com/"), url
            assert url.endswith((".png", ".jpg", ".jpeg", ".gif")), url


def test_the_extension_icon_is_in_the_repository():
    text = top_cmake()
    icon = cmake_variable(text, "EXTENSION_ICONURL").split("/main/", 1)[1]
    assert (REPO / icon).is_file()
    assert (MODULE_DIR / "Resources" / "Icons" / f"{MODULE_NAME}.png").is_file()


# -- catalog entry ----------------------------------------------------------------------------


def test_the_catalog_entry_validates_against_the_schema():
    schema_path = require_shared(CATALOG_SCHEMA_NAME, "the Extensions Index schema check")
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    jsonschema.validate(entry, schema)
    assert entry["$schema"] == schema["$id"]
    assert entry["category"] == cmake_variable(top_cmake(), "EXTENSION_CATEGORY")
    assert entry["scm_url"] == cmake_variable(top_cmake(), "EXTENSION_HOMEPAGE")
    assert entry["scm_url"].startswith("https://")


def test_the_catalog_entry_has_lf_line_endings_only():
    assert b"\r" not in CATALOG_ENTRY.read_bytes()


def test_the_catalog_entry_agrees_with_cmake():
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    text = top_cmake()
    project = re.search(r"project\((\w+)", text).group(1)
    assert project == CATALOG_ENTRY.stem == MODULE_NAME
    assert not project.startswith("Slicer")
    assert entry.get("build_dependencies", []) == cmake_variable(text, "EXTENSION_DEPENDS").split()
    repository = entry["scm_url"].rstrip("/").rsplit("/", 1)[1]
    assert repository.startswith(("Slicer", "SlicerExtension-", "SlicerExtension_"))


def test_a_license_file_is_in_the_repository_root():
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")


def test_requirements_never_list_packages_slicer_ships_or_torch():
    path = MODULE_DIR / "Resources" / "requirements.txt"
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            assert "==" not in requirement, f"pin with >= or ~=, not ==: {requirement}"
            names.append(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower())
    assert names
    assert not {"torch", "numpy", "simpleitk", "requests", "vtk"} & set(names)


# -- imports ----------------------------------------------------------------------------------


def test_the_module_file_imports_nothing_heavy_at_file_scope():
    roots = {name.split(".")[0] for name in module_level_imports(MODULE_FILE)}
    forbidden = sorted(roots - ALLOWED_MODULE_IMPORTS)
    assert not forbidden, f"{MODULE_FILE.name} imports {forbidden} at file scope"


def engine_files() -> list[Path]:
    return sorted(p for p in ENGINE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", engine_files(), ids=lambda p: p.relative_to(ENGINE_DIR).as_posix())
def test_only_scene_py_imports_slicer_and_no_engine_file_imports_qt(path):
    roots = {name.split(".")[0] for name in all_imports(path)}
    assert not roots & {"qt", "ctk", "PythonQt"}, f"{path.name} imports a UI framework"
    if path.relative_to(ENGINE_DIR).as_posix() != "app/scene.py":
        assert "slicer" not in roots, f"{path.name} imports slicer; only scene.py may"


def test_the_parameter_node_has_the_fields_the_module_needs():
    fields = parameter_node_fields()
    expected = {"checkpoint", "cohort", "output", "strategy", "fixDecoder", "epochs"}
    expected |= {"learningRate", "device", "subjectRoles", "resultsTable"}
    expected |= {"stopWhenIndistinguishable"}
    assert expected <= fields, f"missing: {sorted(expected - fields)}"


@pytest.mark.parametrize(
    ("widget", "parameter"), [("epochsSpinBox", "epochs"), ("learningRateSpinBox", "learningRate")]
)
def test_schedule_spin_boxes_default_to_the_presets_own_values(widget, parameter):
    # a fixed GUI value would override per-preset defaults (bad-teacher's 1 epoch, max-loss's
    # lr 1e-4); 0 is shown as "preset default" and sent as None
    element = ui_widget(widget)
    properties = {p.get("name"): p for p in element.findall("property")}
    assert properties["specialValueText"].find("string").text == "preset default"
    minimum = properties["minimum"][0].text
    value = properties["value"][0].text
    assert float(minimum) == 0.0 and float(value) == 0.0
    assert parameter_node_defaults()[parameter] == 0
