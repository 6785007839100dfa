"""docs/benchmarks.md's memorisation section is rendered from its committed JSON."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_section_is_what_the_json_renders_to():
    result = subprocess.run(
        [sys.executable, "scripts/render_memorisation_docs.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


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


def test_a_study_renders_its_rows_gaps_and_scale():
    renderer = load_script("render_memorisation_docs")
    text = renderer.render({"studies": {"toy": a_study()}})
    assert "#### Toy" in text
    assert "input 32 x 80 x 80, ResNet-10 base width 8, head 16, 40 epochs" in text
    assert (
        "| 1 | member | 0.5000 | 0.9000 +- 0.1000 | 4.0 | 0.8000 | 0.7000 +- 0.0000 | n/a |" in text
    )
    assert "| H01 | never seen | 0.9000 |  |  | 0.6000 |  |  |" in text
    assert "1 of 1 at 3 SDs or more" in text
    assert "median 50 s, at most 55 s" in text


def test_splicing_replaces_only_the_marked_section():
    renderer = load_script("render_memorisation_docs")
    text = f"before\n{renderer.BEGIN}\nold\n{renderer.END}\nafter\n"
    assert (
        renderer.splice(text, "new")
        == f"before\n{renderer.BEGIN}\n\nnew\n\n{renderer.END}\nafter\n"
    )
    with pytest.raises(SystemExit):
        renderer.splice("no markers", "new")


def test_the_gap_is_the_difference_in_seed_sds():
    benchmark = load_script("benchmark_memorisation")
    assert benchmark.gap(0.3, [1.0, 1.1, 1.2]) == pytest.approx(3.0)
    assert benchmark.gap(0.3, [1.0]) is None
