"""scripts/benchmark_demo.py: how a timed demo run is split into phases and read back."""

from __future__ import annotations

import pytest

from conftest import load_script

demo = load_script("benchmark_demo")


def test_phases_tile_the_wall_time_from_set_up_to_the_end():
    events = [
        {"event": "started", "time": 100.0},
        {"event": "phase", "name": "train", "time": 101.0},
        {"event": "progress", "time": 150.0},
        {"event": "phase", "name": "unlearn", "time": 401.0},
        {"event": "phase", "name": "write", "time": 700.0},
        {"event": "finished", "time": 710.0},
    ]
    phases = demo.phase_seconds(10.0, events, 712.0)
    assert [p["phase"] for p in phases] == [
        demo.SETUP,
        "start",
        "train",
        "unlearn",
        "write",
    ]
    assert [p["seconds"] for p in phases] == [90.0, 1.0, 300.0, 299.0, 12.0]
    assert sum(p["seconds"] for p in phases) == pytest.approx(712.0 - 10.0)


def test_a_run_without_events_is_all_set_up():
    assert demo.phase_seconds(0.0, [], 5.0) == [{"phase": demo.SETUP, "seconds": 5.0}]


def test_results_give_each_evaluated_epoch_s_dice_per_role():
    metrics = {
        "evaluations": [
            {"epoch": 0, "sets": {"forget": {"dice": 0.8, "mae": 0.1}, "retain": {"dice": 0.7}}},
            {"epoch": 50, "sets": {"forget": {"dice": 0.6}, "retain": {"dice": 0.69}}},
        ]
    }
    assert demo.results(metrics) == [
        {"epoch": 0, "forget": 0.8, "retain": 0.7},
        {"epoch": 50, "forget": 0.6, "retain": 0.69},
    ]
