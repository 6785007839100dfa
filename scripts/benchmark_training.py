"""Cost of a training step: the real loop against pure network compute, against this machine's
measured peak, and (with CUDA) the paper's ResNet-50 at 56 x 448 x 448.

Usage:
    .venv/bin/python scripts/benchmark_training.py --cohort demo-output/cohort \\
        [--rounds 8] [--steps 2] [--out docs/benchmarks-training.json]

Each configuration runs in its own child process (so peak memory is its own) on real cohort
subjects (2 training subjects, after warm-up steps):

- **pipeline**: ``--steps`` optimiser steps of the real loop (``training.loop.train``: cached
  samples, targets, the recipe's loss on its label grid, backward, gradient clip, optimiser);
- **pure compute**: the same model's forward + backward + the same optimiser on a random input
  of the same shape, with ``output.mean()`` as the loss (no data path, no loss);

timed in alternating short rounds (``--rounds`` of ``--steps``) in the same process, so a busy
machine slows both alike; ``pipeline / pure compute`` (total times; the median of the per-round
ratios is reported too, it resists bursts of load) is the ratio to compare across runs (issue
12 target: at most 1.10). The FLOP count of one pure-compute step (forward + backward,
``FlopCounterMode``) over the step times gives the achieved FLOP rate, reported against this
machine's FP32 peak as measured by a matrix-multiply probe in the same child (``torch.mm`` of
2048 x 2048 float32 matrices, best of 5, on the same threads).

With ``--breakdown`` a CPU row also times, in alternating rounds of one step each in the same
child, where the pipeline's extra time goes (``step_parts``): the pure-compute step; the same on
a real prepared sample (still ``output.mean()``); with the recipe's real loss on the sample's
target; and with the gradient clip too. Each is reported over the pure-compute step, so
``pipeline / pure compute`` splits into input values, loss, clip and the rest (data path and
loop bookkeeping: the pipeline over the last variant).

CPU rows: the ``cpu-demo`` recipe, and the same with crop jitter 0.05 (each visit re-crops,
re-resizes and re-normalises: the cost of that augmentation). GPU rows (only when CUDA is
available; otherwise the JSON's ``gpu`` entry says why they are missing): MedicalNet's
ResNet-50 (shortcut B) at 56 x 448 x 448 in fp32 (cuDNN's TF32 default, recorded), bf16
autocast, and bf16 with ``channels_last_3d``; steps/s, peak allocated GPU memory, model-FLOPs
utilisation against the GPU's dense bf16 peak (``PEAK_BF16_TFLOPS``), and the unlearning loop
(the demo's noisy-label + fix-decoder plan) at that scale, extrapolated to the demo protocol's
steps (50 epochs x 7 subjects).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

WARM_UP = 2
PROBE_SIZE = 2048
DEMO_UNLEARN_STEPS = 50 * 7  # the demo: 50 epochs x (1 forget + 6 retain) steps

# Dense (no 2:4 sparsity) bf16 tensor-core peak in TFLOP/s, NVIDIA datasheets; matched against
# torch.cuda.get_device_name() in this order (first match wins; "H100" alone is the SXM part).
PEAK_BF16_TFLOPS = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
    ("A10", 125.0),
)

CPU_CONFIGS = (
    {"name": "cpu-demo", "recipe": "cpu-demo", "device": "cpu"},
    {
        "name": "cpu-demo-jitter",
        "recipe": "cpu-demo",
        "device": "cpu",
        "overrides": {"crop_jitter": 0.05},
    },
)
GPU_CONFIGS = (
    {"name": "r50-fp32", "recipe": "medicalnet", "device": "cuda", "amp": False},
    {"name": "r50-bf16", "recipe": "medicalnet", "device": "cuda", "amp_dtype": "bfloat16"},
    {
        "name": "r50-bf16-channels-last",
        "recipe": "medicalnet",
        "device": "cuda",
        "amp_dtype": "bfloat16",
        "channels_last": True,
    },
    {
        "name": "r50-bf16-unlearn",
        "recipe": "medicalnet",
        "device": "cuda",
        "amp_dtype": "bfloat16",
        "unlearn": True,
    },
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The datasheet dense bf16 peak of a GPU by its name, or None when not in the table."""
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


def matmul_peak_gflops(size: int = PROBE_SIZE, repeats: int = 5) -> float:
    """Best FP32 matrix-multiply rate of this process's threads, GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def measure(config: dict, cohort: str, rounds: int, steps: int) -> dict:
    """One configuration's row (see the module docstring)."""
    import dataclasses

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from MachineUnlearningLib.data.cohort import discover_cohort
    from MachineUnlearningLib.data.labels import get_label_policy
    from MachineUnlearningLib.data.samples import SampleSource
    from MachineUnlearningLib.runtime.events import CollectingSink
    from MachineUnlearningLib.training.loop import build_optimizer, train
    from MachineUnlearningLib.training.recipes import resolve_recipe
    from MachineUnlearningLib.training.steps import Step

    device = torch.device(config["device"])
    cuda = device.type == "cuda"
    recipe = resolve_recipe(config["recipe"], config.get("overrides", {}))
    training = dataclasses.replace(
        recipe.training,
        epochs=1,
        amp=config.get("amp", True),
        **({"amp_dtype": config["amp_dtype"]} if "amp_dtype" in config else {}),
    )
    subjects = [s for s in discover_cohort(cohort) if s.group == "training"][:2]
    source = SampleSource(
        subjects,
        recipe.modalities,
        get_label_policy(recipe.label_policy),
        recipe.preprocessing,
        output_shape=recipe.model.output_shape(recipe.preprocessing.input_size),
    )
    model = recipe.model.build().to(device)
    if config.get("channels_last"):
        model = model.to(memory_format=torch.channels_last_3d)
    ids = [s.subject_id for s in subjects]
    run_kwargs, plan_of = {}, lambda n: lambda e, r: [Step(ids[i % len(ids)]) for i in range(n)]
    if config.get("unlearn"):
        run_kwargs, plan_of, training = _unlearning_run(source, ids, training, recipe.model)

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    def pipeline(n: int) -> float:
        synchronize()
        started = time.perf_counter()
        train(model, source, plan_of(n), training, device, CollectingSink(), **run_kwargs)
        synchronize()
        return time.perf_counter() - started

    x = torch.randn(1, len(recipe.modalities), *recipe.preprocessing.input_size, device=device)
    optimizer = build_optimizer(model, training, recipe.model.decoder_prefixes)
    use_amp = cuda and training.amp
    amp_dtype = getattr(training, "amp_dtype", "float16")  # (older engines: float16 only)
    dtype = torch.bfloat16 if amp_dtype == "bfloat16" else torch.float16

    def compute_step():
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=use_amp):
            out = model(x)
        out.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def compute(n: int) -> float:
        synchronize()
        started = time.perf_counter()
        for _ in range(n):
            compute_step()
        synchronize()
        return time.perf_counter() - started

    peak_gflops = None if cuda else matmul_peak_gflops()
    pipeline(WARM_UP)
    compute(WARM_UP)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    pipeline_s, compute_s = [], []
    for _ in range(rounds):
        pipeline_s.append(pipeline(steps))
        compute_s.append(compute(steps))
    parts = (
        step_parts(model, source, ids[0], training, device, optimizer, x, rounds)
        if config.get("breakdown")
        else None
    )
    with FlopCounterMode(display=False) as counter:
        compute_step()
    flop = counter.get_total_flops()
    total_steps = rounds * steps
    achieved = flop * total_steps / sum(pipeline_s) / 1e9
    peak_memory = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    row = {
        "name": config["name"],
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # how busy the machine was
        "model": recipe.model.describe(),
        "input_size": list(recipe.preprocessing.input_size),
        "target_grid": recipe.preprocessing.target_grid,
        "loss": training.loss,
        "optimizer": training.optimizer,
        "crop_jitter": recipe.preprocessing.crop_jitter,
        "autocast": amp_dtype if use_amp else None,
        "channels_last_3d": bool(config.get("channels_last")),
        "rounds": rounds,
        "steps_per_round": steps,
        "steps_per_s": round(total_steps / sum(pipeline_s), 3),
        "pure_compute_steps_per_s": round(total_steps / sum(compute_s), 3),
        "pipeline_over_pure_compute": round(sum(pipeline_s) / sum(compute_s), 3),
        "median_round_ratio": round(float(np.median(np.array(pipeline_s) / compute_s)), 3),
        "round_ratios": [round(p / c, 3) for p, c in zip(pipeline_s, compute_s, strict=True)],
        "model_gflop_per_step": round(flop / 1e9, 2),
        "achieved_gflops": round(achieved, 1),
        "pure_compute_gflops": round(flop * total_steps / sum(compute_s) / 1e9, 1),
        "peak_memory_mib": round(peak_memory, 1),
        "peak_memory_kind": "CUDA max allocated" if cuda else "process max RSS",
        "input_voxels_per_s": round(
            total_steps * int(np.prod(recipe.preprocessing.input_size)) / sum(pipeline_s)
        ),
    }
    if cuda:
        peak = peak_bf16_tflops(row["device"])
        row["tf32_convolutions"] = torch.backends.cudnn.allow_tf32
        row["peak_bf16_tflops"] = peak
        row["mfu_vs_bf16_peak"] = None if peak is None else round(achieved / (peak * 1e3), 4)
    else:
        row["fp32_peak_gflops_measured"] = round(peak_gflops, 1)
        row["fraction_of_fp32_peak"] = round(achieved / peak_gflops, 3)
    if parts is not None:
        per_pipeline_step = sum(pipeline_s) / total_steps
        row["step_parts"] = {
            **parts,
            "pipeline_over_pure_step": round(per_pipeline_step / parts["seconds"]["pure"], 3),
        }
    if config.get("unlearn"):
        per_step = sum(pipeline_s) / total_steps
        row["unlearn_demo_protocol_loop_s"] = round(per_step * DEMO_UNLEARN_STEPS, 1)
        row["unlearn_demo_protocol_steps"] = DEMO_UNLEARN_STEPS
    return row


STEP_PARTS = ("pure", "real input", "real input and loss", "real input, loss and clip")


def step_parts(model, source, subject_id: str, training, device, optimizer, x, rounds: int):
    """Seconds per step of each ``STEP_PARTS`` variant (median over ``rounds`` alternating
    rounds of one step each) and each over ``pure``.

    ``x``: the pure-compute input, (1, C, d, h, w) random; the real sample is ``subject_id``'s
    prepared image and target (no crop jitter); the loss is ``training.loss`` through
    ``training.loop.sample_loss``, the clip ``training.grad_clip_norm``.
    """
    import statistics

    import torch

    from MachineUnlearningLib.training.loop import sample_loss

    sample = source.sample(subject_id)
    image, target = sample.image[None].to(device), sample.target[None].to(device)
    trained = [p for p in model.parameters() if p.requires_grad]

    def mean_loss(out):
        return out.float().mean()

    def real_loss(out):
        return sample_loss(out, target, training.loss)

    def step(inputs, loss_of, clip: bool) -> float:
        started = time.perf_counter()
        loss_of(model(inputs)).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trained, training.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    variants = dict(
        zip(
            STEP_PARTS,
            (
                lambda: step(x, mean_loss, False),
                lambda: step(image, mean_loss, False),
                lambda: step(image, real_loss, False),
                lambda: step(image, real_loss, True),
            ),
            strict=True,
        )
    )
    times: dict[str, list[float]] = {name: [] for name in STEP_PARTS}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(run())
    seconds = {name: statistics.median(t) for name, t in times.items()}
    return {
        "rounds": rounds,
        "seconds": {name: round(v, 4) for name, v in seconds.items()},
        "over_pure": {name: round(v / seconds["pure"], 3) for name, v in seconds.items()},
    }


def _unlearning_run(source, ids: list[str], training, spec):
    """The demo's unlearning (noisy-label + fix-decoder, the first id forgotten, the others
    replayed): loop arguments, a plan of n steps from its epochs, and its optimiser config.
    ``spec`` (the recipe's ModelSpec) names the decoder that fix-decoder freezes."""
    import dataclasses

    from MachineUnlearningLib.commands.unlearn import unlearning_config
    from MachineUnlearningLib.strategies import get_strategy
    from MachineUnlearningLib.strategies.plan import build_plan
    from MachineUnlearningLib.strategies.targets import TargetMaker

    strategy = get_strategy("noisy-label")
    params = strategy.resolve({})
    epoch_plan = build_plan(strategy, ids[:1], ids[1:], params)
    config = dataclasses.replace(
        unlearning_config({**params, "epochs": 1}, seed=0),
        amp=training.amp,
        amp_dtype=training.amp_dtype,
    )

    def plan_of(n: int):
        def plan(epoch, rng):
            steps = []
            while len(steps) < n:
                steps += epoch_plan(epoch, rng)
            return steps[:n]

        return plan

    kwargs = {
        "target_maker": TargetMaker(source),
        "frozen_prefixes": spec.decoder_prefixes,
        "head_prefixes": spec.decoder_prefixes,
    }
    return kwargs, plan_of, config


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_section(cuda_available: bool) -> dict:
    """What the JSON says about the GPU rows when they are not measured."""
    if cuda_available:
        return {"measured": True}
    return {
        "measured": False,
        "reason": "CUDA is not available here (torch.cuda.is_available() is False); the "
        "ResNet-50 56 x 448 x 448 rows run only on a CUDA GPU.",
    }


def _child(config: dict, cohort: str, rounds: int, steps: int, queue) -> None:
    queue.put(measure(config, cohort, rounds, steps))


def run_isolated(config: dict, cohort: str, rounds: int, steps: int) -> dict:
    """``measure`` in a fresh spawned process (peak memory and thread pools of its own)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(config, cohort, rounds, steps, queue))
    child.start()
    row = queue.get()
    child.join()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True, help="cohort root (e.g. demo-output/cohort)")
    parser.add_argument("--rounds", type=int, default=8, help="alternating timing rounds (8)")
    parser.add_argument("--steps", type=int, default=2, help="steps per round and kind (2)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these configurations (by name)"
    )
    parser.add_argument(
        "--engine",
        default="this checkout",
        help="label of the engine measured (e.g. a commit run through PYTHONPATH)",
    )
    parser.add_argument(
        "--append", action="store_true", help="add the rows to those already in --out"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU rows: also time the step's parts"
    )
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    configs = list(CPU_CONFIGS) + (list(GPU_CONFIGS) if cuda else [])
    if args.only:
        configs = [c for c in configs if c["name"] in args.only]
    if args.breakdown:
        configs = [{**c, "breakdown": c["device"] == "cpu"} for c in configs]
    rows = []
    for config in configs:
        row = {**run_isolated(config, args.cohort, args.rounds, args.steps), "engine": args.engine}
        rows.append(row)
        extra = (
            f"{row['fraction_of_fp32_peak']:.0%} of the measured FP32 peak "
            f"{row['fp32_peak_gflops_measured']:.0f} GFLOP/s"
            if "fraction_of_fp32_peak" in row
            else f"MFU {row['mfu_vs_bf16_peak']} of {row['peak_bf16_tflops']} TFLOP/s bf16"
        )
        print(
            f"{row['name']:>24}: {row['steps_per_s']:.3f} steps/s, pipeline / pure compute "
            f"{row['pipeline_over_pure_compute']:.2f} (median round "
            f"{row['median_round_ratio']:.2f}, rounds {row['round_ratios']}), "
            f"{row['model_gflop_per_step']:.1f} GFLOP/step, {row['achieved_gflops']:.1f} "
            f"GFLOP/s = {extra}, peak {row['peak_memory_mib']:.0f} MiB",
            flush=True,
        )
        if "step_parts" in row:
            parts = row["step_parts"]["over_pure"]
            print(
                "  step parts over the pure-compute step: "
                + ", ".join(f"{name} {ratio:.3f}" for name, ratio in parts.items())
                + f"; pipeline {row['step_parts']['pipeline_over_pure_step']:.3f}",
                flush=True,
            )
    gpu = gpu_section(cuda)
    if not gpu["measured"]:
        print(f"GPU rows skipped: {gpu['reason']}", flush=True)
    if args.out:
        if args.append and args.out.exists():
            rows = json.loads(args.out.read_text())["rows"] + rows
        document = {"command": "scripts/benchmark_training.py", "rows": rows, "gpu": gpu}
        from MachineUnlearningLib.runtime.files import write_json

        write_json(args.out, document)


if __name__ == "__main__":
    main()
