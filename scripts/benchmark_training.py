"""Training throughput and peak memory of the baseline recipe, against a reference in the same run.

Usage:
    .venv/bin/python scripts/benchmark_training.py --cohort demo-output/cohort [--steps 20]
        [--out docs/benchmarks-training.json]

For each configuration a child process (so peak memory is its own) times ``--steps`` optimiser
steps of the real training loop on real cohort subjects (after 3 warm-up steps) and reports
steps/s, input voxels/s and peak resident memory (CPU) or peak allocated memory (CUDA). The
reference is the same model's forward + backward + optimiser step on a random tensor of the same
shape (pure compute, no data pipeline, no loss), timed in the same child; the ratio
``pipeline / reference`` is what these noisy machines can compare across runs.

Configurations: the ``cpu-demo`` recipe on CPU; with CUDA, also MedicalNet's ResNet-50 at
56 x 448 x 448 with and without automatic mixed precision.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

WARM_UP = 3


def _measure(config: dict, cohort: str, steps: int, queue) -> None:
    import dataclasses

    import numpy as np
    import torch

    from MachineUnlearningLib.data.cohort import discover_cohort
    from MachineUnlearningLib.data.labels import get_label_policy
    from MachineUnlearningLib.data.samples import SampleSource
    from MachineUnlearningLib.runtime.events import CollectingSink
    from MachineUnlearningLib.training.loop import train
    from MachineUnlearningLib.training.recipes import resolve_recipe
    from MachineUnlearningLib.training.steps import Step

    device = torch.device(config["device"])
    recipe = resolve_recipe(config["recipe"], config.get("overrides", {}))
    training = dataclasses.replace(recipe.training, epochs=1, amp=config.get("amp", True))
    subjects = [s for s in discover_cohort(cohort) if s.group == "training"][:2]
    source = SampleSource(
        subjects,
        recipe.modalities,
        get_label_policy(recipe.label_policy),
        recipe.preprocessing,
        output_shape=recipe.model.output_shape(recipe.preprocessing.input_size),
    )
    model = recipe.model.build().to(device)
    ids = [s.subject_id for s in subjects]

    def plan(epoch, rng, n):
        return [Step(ids[i % len(ids)]) for i in range(n)]

    def run(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train(model, source, lambda e, r: plan(e, r, n), training, device, CollectingSink())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    run(WARM_UP)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    pipeline_s = run(steps)
    x = torch.randn(1, len(recipe.modalities), *recipe.preprocessing.input_size, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    use_amp = device.type == "cuda" and config.get("amp", True)
    for i in range(WARM_UP + steps):
        if i == WARM_UP:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device_type=device.type, enabled=use_amp):
            out = model(x)
        out.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    reference_s = time.perf_counter() - started
    voxels = int(np.prod(recipe.preprocessing.input_size))
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    queue.put(
        {
            "name": config["name"],
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "model": recipe.model.describe(),
            "input_size": list(recipe.preprocessing.input_size),
            "amp": use_amp,
            "steps": steps,
            "steps_per_s": round(steps / pipeline_s, 3),
            "input_voxels_per_s": round(steps * voxels / pipeline_s),
            "reference_steps_per_s": round(steps / reference_s, 3),
            "pipeline_over_reference_time": round(pipeline_s / reference_s, 3),
            "peak_memory_mib": round(peak, 1),
            "peak_memory_kind": "CUDA max allocated"
            if device.type == "cuda"
            else "process max RSS",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True, help="cohort root (e.g. demo-output/cohort)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    import torch

    configs = [{"name": "cpu-demo", "recipe": "cpu-demo", "device": "cpu"}]
    if torch.cuda.is_available():
        configs += [
            {"name": "medicalnet-r50-amp", "recipe": "medicalnet", "device": "cuda", "amp": True},
            {"name": "medicalnet-r50-fp32", "recipe": "medicalnet", "device": "cuda", "amp": False},
        ]
    context = mp.get_context("spawn")
    results = []
    for config in configs:
        queue = context.Queue()
        child = context.Process(target=_measure, args=(config, args.cohort, args.steps, queue))
        child.start()
        results.append(queue.get())
        child.join()
        r = results[-1]
        print(
            f"{r['name']:>22}: {r['steps_per_s']:.3f} steps/s, "
            f"{r['input_voxels_per_s'] / 1e6:.2f} M input voxels/s, "
            f"pipeline/reference time {r['pipeline_over_reference_time']:.2f}, "
            f"peak {r['peak_memory_mib']:.0f} MiB ({r['peak_memory_kind']})",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
