"""Every measured number in docs/benchmarks.md and the README's measured table is rendered from
the committed JSON: the documents and the JSON agree (scripts/render_benchmarks.py --check)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- rendered: ([\w-]+) \(.*?-->\n.*?<!-- end rendered: \1 -->", re.S)


renderer = load_script("render_benchmarks")


@pytest.mark.parametrize("document", ["docs/benchmarks.md", "README.md"])
def test_each_document_is_what_its_json_renders_to(document):
    current = (REPO / document).read_text(encoding="utf-8")
    assert renderer.rendered_document(current, document) == current, (
        f"{document} is stale: run scripts/render_benchmarks.py"
    )


def test_the_check_command_passes_on_the_committed_documents():
    result = subprocess.run(
        [sys.executable, "scripts/render_benchmarks.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_every_block_of_the_renderer_is_in_its_document():
    for name, (document, _, _) in renderer.BLOCKS.items():
        text = (REPO / document).read_text(encoding="utf-8")
        assert f"<!-- rendered: {name} (" in text and f"<!-- end rendered: {name} -->" in text


def test_no_measured_table_lies_outside_a_rendered_block():
    """A table row with a number outside the blocks would be a number without JSON."""
    for document in renderer.DOCUMENTS:
        outside = BLOCK.sub("", (REPO / document).read_text(encoding="utf-8"))
        rows = [
            line
            for line in outside.splitlines()
            if line.startswith("|") and re.search(r"\d\.\d|\d %", line)
        ]
        assert rows == [], f"{document}: table rows outside a rendered block: {rows}"


@pytest.fixture
def docs_copy(tmp_path) -> Path:
    for pattern in ("benchmarks-*.json", "audit-design.json"):
        for path in (REPO / "docs").glob(pattern):
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_a_changed_number_in_the_json_changes_the_documents(docs_copy):
    """The check is not vacuous: the blocks really come from the JSON."""
    training = json.loads((docs_copy / "benchmarks-training.json").read_text())
    training["rows"][0]["pipeline_over_pure_compute"] = 9.87
    (docs_copy / "benchmarks-training.json").write_text(json.dumps(training))
    strategies = json.loads((docs_copy / "benchmarks-strategies.json").read_text())
    last = [r for r in strategies["rows"] if r["preset"] == "noisy-label+fix-decoder"][-1]
    last["forget_decrease_pct"] = 12.345
    (docs_copy / "benchmarks-strategies.json").write_text(json.dumps(strategies))
    demo = json.loads((docs_copy / "benchmarks-demo.json").read_text())
    demo["wall_seconds"] = 1234.0
    (docs_copy / "benchmarks-demo.json").write_text(json.dumps(demo))
    audit = json.loads((docs_copy / "audit-design.json").read_text())
    audit["new_audit"]["verdict_rates"]["retrain"]["070"]["forgotten"] = 0.4321
    (docs_copy / "audit-design.json").write_text(json.dumps(audit))
    for document, wanted in (
        ("docs/benchmarks.md", "**9.87**"),
        ("docs/benchmarks.md", "| 0.432 |"),
        ("README.md", "-12.3 %"),
        ("README.md", "| 20.6; "),
        ("docs/benchmarks.md", "**20.6 minutes** in all, over the 10-minute target"),
    ):
        current = (REPO / document).read_text(encoding="utf-8")
        changed = renderer.rendered_document(current, document, docs=docs_copy)
        assert changed != current and wanted in changed


def test_the_demo_names_its_cpu_when_its_json_records_one(docs_copy):
    """Demo numbers differ across CPUs (docs/benchmarks.md section 1), so a run that records
    its CPU says which one; an older JSON without it still renders."""
    demo = json.loads((docs_copy / "benchmarks-demo.json").read_text())
    demo["machine"].pop("cpu", None)
    assert "CPU cores):" in renderer.render_demo_from(demo)
    demo["machine"]["cpu"] = "Some CPU 9000"
    assert "CPU cores, Some CPU 9000):" in renderer.render_demo_from(demo)


def test_a_document_without_a_block_is_refused():
    with pytest.raises(SystemExit):
        renderer.rendered_document("no markers here", "README.md")


def test_rendering_replaces_only_the_marked_block(docs_copy):
    text = (
        "before\n<!-- rendered: readme (old sources) -->\nold text\n"
        "<!-- end rendered: readme -->\nafter\n"
    )
    out = renderer.rendered_document(text, "README.md", docs=docs_copy)
    assert out.startswith("before\n<!-- rendered: readme (scripts/render_benchmarks.py")
    assert out.endswith("<!-- end rendered: readme -->\nafter\n") and "old text" not in out


def test_the_ssd_row_is_the_edited_model_not_the_original():
    """The SSD row used to report the original model (both are evaluated at epoch 0)."""
    literature = json.loads((REPO / "docs" / "benchmarks-literature.json").read_text())
    ssd = next(r for r in literature["rows"] if r["preset"] == "ssd")
    assert ssd["after"]["forget"]["dice"] != ssd["before"]["forget"]["dice"]
    rendered = renderer.render_literature(REPO / "docs")
    assert "| ssd (corrected, see below) | 0 | 0.7902 -> 0.7901 |" in rendered


def test_benchmark_strategies_takes_the_unlearned_evaluation_at_epoch_0():
    """A preset that does not train has two epoch-0 evaluations; the unlearned one is 'after'."""
    strategies = load_script("benchmark_strategies")
    metrics = {
        "evaluations": [
            {"model": "original", "epoch": 0, "sets": {"forget": {"dice": 0.8}}},
            {"model": "unlearned", "epoch": 0, "sets": {"forget": {"dice": 0.6}}},
        ]
    }
    assert strategies.set_means(metrics, "original", 0)["forget"]["dice"] == 0.8
    assert strategies.set_means(metrics, "unlearned", 0)["forget"]["dice"] == 0.6


def test_avg_gap_is_labelled_as_the_dice_terms_only():
    rendered = renderer.render_strategies(REPO / "docs")
    assert "Dice Avg. Gap / RTE" in rendered and "| Avg. Gap" not in rendered
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "without its fourth, privacy (MIA-efficacy) term" in text


def a_study(**changes) -> dict:
    subjects = [
        {"id": "1", "group": "training", "loss": 0.5, "dice": 0.8,
         "original_seeds": {"0": {"loss": 0.5, "dice": 0.8}, "1": {"loss": 0.52, "dice": 0.79}}},
        {"id": "H01", "group": "held-out", "loss": 0.9, "dice": 0.6,
         "original_seeds": {"0": {"loss": 0.9, "dice": 0.6}, "1": {"loss": 0.88, "dice": 0.61}}},
    ]  # fmt: skip
    study = {
        "title": "Toy",
        "command": "scripts/benchmark_memorisation.py --cohort c",
        "cohort": {"command": "machine-unlearning make-cohort --out c", "training": 1,
                   "held_out": 1},
        "date": "2026-12-01",
        "recipe": {"name": "bench"},
        "scale": {"input_size": [32, 80, 80], "depth": 10, "base_width": 8,
                  "head_channels": 16, "epochs": 40, "steps_baseline": 280,
                  "steps_retrain": 240},
        "seeds": [0, 1, 2],
        "original_seeds": [0, 1],
        "baseline": {"training_seconds": 100.0, "cpu_seconds": 150.0},
        "retrain_timing": {"retrains": 3, "wall_seconds_median": 50.0, "wall_seconds_max": 55.0,
                           "training_seconds_median": 40.0, "training_seconds_max": 44.0,
                           "cpu_seconds_median": 70.0, "cpu_seconds_max": 75.0},
        "machine": {"cpu_count": 2, "torch_threads": 2, "torch": "2.13.0",
                    "load_average_1min": [1.0, 2.0], "reference_step_seconds": [0.1, 0.12]},
        "subjects": subjects,
        "members": {"dice_mean": 0.8, "dice_min": 0.8, "dice_max": 0.8, "loss_mean": 0.5},
        "never_seen": {"dice_mean": 0.6, "dice_min": 0.6, "dice_max": 0.6, "loss_mean": 0.9},
        "auc_loss": 1.0,
        "auc_dice": 1.0,
        "leave_one_out": [
            {"id": "1", "retrain_losses": [0.8, 0.9, 1.0], "retrain_dices": [0.7, 0.7, 0.7],
             "gap_loss": 4.0, "gap_dice": None},
        ],
    }  # fmt: skip
    return study | changes


def test_a_memorisation_study_renders_its_rows_gaps_and_scale():
    text = renderer.render_study(a_study())
    assert "#### Toy" in text
    assert "input 32 x 80 x 80, ResNet-10 base width 8, head 16, 40 epochs" in text
    assert (
        "| 1 | member | 0.5000 | 0.9000 +- 0.1000 | 4.0 | 0.8000 | 0.7000 +- 0.0000 | n/a |" in text
    )
    assert "| H01 | never seen | 0.9000 |  |  | 0.6000 |  |  |" in text
    assert "1 of 1 at 3 SDs or more" in text
    assert "median 50 s, at most 55 s" in text


def test_the_memorisation_gap_is_the_difference_in_seed_sds():
    benchmark = load_script("benchmark_memorisation")
    assert benchmark.gap(0.3, [1.0, 1.1, 1.2]) == pytest.approx(3.0)
    assert benchmark.gap(0.3, [1.0]) is None
