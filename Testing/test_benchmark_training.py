"""scripts/benchmark_training.py at tiny sizes on CPU: every field it reports, the GPU rows'
code path (run here on CPU, where autocast and CUDA memory statistics are off), and the reason
it records when no GPU is there. Wall times are not checked, only that they are measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
TINY = {"input_size": [16, 32, 32], "depth": 10, "base_width": 4, "head_channels": 8}


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_training")


def test_the_cpu_row_reports_ratio_flop_rate_and_fraction_of_the_probed_peak(bench, a_tiny_cohort):
    config = {"name": "tiny", "recipe": "cpu-demo", "device": "cpu", "overrides": TINY}
    row = bench.measure(config, str(a_tiny_cohort), rounds=2, steps=2)
    assert row["input_size"] == TINY["input_size"]
    assert len(row["round_ratios"]) == 2 and row["pipeline_over_pure_compute"] > 0
    assert row["model_gflop_per_step"] > 0 and row["achieved_gflops"] > 0
    assert row["fp32_peak_gflops_measured"] > row["achieved_gflops"] * 0.1
    assert row["fraction_of_fp32_peak"] == pytest.approx(
        row["achieved_gflops"] / row["fp32_peak_gflops_measured"], abs=2e-3
    )
    assert row["loss"] == "dice-ce" and row["target_grid"] == "input"


def test_the_breakdown_times_every_part_of_the_step_against_the_pure_step(bench, a_tiny_cohort):
    config = {"name": "tiny", "recipe": "cpu-demo", "device": "cpu", "overrides": TINY}
    row = bench.measure({**config, "breakdown": True}, str(a_tiny_cohort), rounds=2, steps=1)
    parts = row["step_parts"]
    assert list(parts["seconds"]) == list(bench.STEP_PARTS) == list(parts["over_pure"])
    assert parts["over_pure"]["pure"] == 1.0 and parts["rounds"] == 2
    assert all(v > 0 for v in parts["seconds"].values())
    assert parts["pipeline_over_pure_step"] > 0
    assert "step_parts" not in bench.measure(config, str(a_tiny_cohort), rounds=1, steps=1)


def test_the_gpu_rows_code_path_runs_at_tiny_size_on_cpu(bench, a_tiny_cohort):
    """The ResNet-50 rows' path (bf16 request, channels_last_3d, the unlearning plan) with the
    model shrunk and on CPU: only CUDA-specific calls are left out."""
    for base in bench.GPU_CONFIGS:
        config = {**base, "device": "cpu", "overrides": TINY}
        row = bench.measure(config, str(a_tiny_cohort), rounds=1, steps=2)
        assert row["autocast"] is None  # autocast is CUDA-only in the loop
        assert row["channels_last_3d"] == bool(base.get("channels_last"))
        assert row["steps_per_s"] > 0
        if base.get("unlearn"):
            per_step = 1 / row["steps_per_s"]
            assert row["unlearn_demo_protocol_loop_s"] == pytest.approx(
                per_step * bench.DEMO_UNLEARN_STEPS,
                rel=1e-2,
                abs=0.06,  # rounded to 0.1 s
            )


def test_without_cuda_the_json_states_why_the_gpu_rows_are_missing(bench):
    section = bench.gpu_section(cuda_available=False)
    assert section["measured"] is False and "CUDA is not available" in section["reason"]
    assert bench.gpu_section(cuda_available=True) == {"measured": True}


def test_mfu_peaks_come_from_the_table_by_device_name(bench):
    assert bench.peak_bf16_tflops("NVIDIA H200") == 989.4
    assert bench.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.5
    assert bench.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_bf16_tflops("NVIDIA L40S") == 362.05
    assert bench.peak_bf16_tflops("NVIDIA A10") == 125.0
    assert bench.peak_bf16_tflops("Some Future GPU") is None
