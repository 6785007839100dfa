"""The measured numbers in docs/benchmarks.md are rendered from the committed JSON: the doc and
the JSON agree (scripts/render_benchmarks.py --check)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_renderer():
    path = REPO / "scripts" / "render_benchmarks.py"
    spec = importlib.util.spec_from_file_location("render_benchmarks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rendered_blocks_of_docs_benchmarks_match_their_json():
    renderer = load_renderer()
    current = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert renderer.rendered_document(current) == current, (
        "docs/benchmarks.md is stale: run scripts/render_benchmarks.py"
    )


def test_a_changed_number_in_the_json_changes_the_doc(tmp_path):
    """The check is not vacuous: the blocks really come from the JSON."""
    import json

    renderer = load_renderer()
    for name in renderer.BLOCKS.values():
        (tmp_path / name).write_text((REPO / "docs" / name).read_text(encoding="utf-8"))
    training = json.loads((tmp_path / "benchmarks-training.json").read_text())
    training["rows"][0]["pipeline_over_pure_compute"] = 9.87
    (tmp_path / "benchmarks-training.json").write_text(json.dumps(training))
    current = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    changed = renderer.rendered_document(current, docs=tmp_path)
    assert changed != current and "**9.87**" in changed
