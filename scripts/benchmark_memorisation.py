"""How much a baseline remembers each training subject: members vs never-seen, and leave-one-out.

Usage:
    .venv/bin/python scripts/benchmark_memorisation.py --cohort COHORT --name NAME --title T \\
        [--cohort-command "machine-unlearning make-cohort ..."] [--recipe bench] \\
        [--set KEY=VALUE ...] [--seeds 0 1 2] [--original-seeds 0 1 2] [--subjects 1 070] \\
        [--device cpu] [--json docs/benchmarks-memorisation.json]
    .venv/bin/python scripts/benchmark_memorisation.py --cohort COHORT --name NAME --title T \\
        --time-one-thread [--recipe bench] [--json ...]

For the cohort (7 training subjects, the rest held out) and a recipe, through the engine's
retrain cache (``commands/retrains.py``, so every model is trained once and reused):

1. the baseline (every training subject) at each ``--original-seeds`` seed; the first seed's
   model is "the baseline";
2. per subject, under the baseline: foreground loss (mean cross-entropy over ground-truth
   foreground voxels, nats) and mean foreground Dice, for the members and the never-seen
   (held-out) subjects; the member-vs-never-seen AUC of each (lower loss / higher Dice =
   member);
3. per training subject (``--subjects``, default all), leave-one-out retrains: the recipe on
   the other six at each ``--seeds`` seed, scored on the left-out subject. Its memorisation
   gap is ``(mean retrain loss - baseline loss) / SD of the retrain losses`` (and the same
   for Dice, baseline minus retrains): how many seed-SDs better the model that saw the
   subject does on it than models that did not.

Timing, recorded when each model was trained (so also for models reused from the cache): its
training-loop seconds, the wall time of its training call (cohort loading, loop, the
evaluation ``train`` does, saving) and that call's CPU seconds (all threads; on a busy shared
machine the wall time grows with the load, the CPU time much less). The 1-minute load
average before and after shows how busy the machine was. The study is stored under ``--name``
in the JSON (other studies in the file are kept); scripts/render_benchmarks.py turns
the JSON into the section of docs/benchmarks.md. ``--time-one-thread`` adds to an existing
study the timing of one more retrain on a single torch thread: on a shared machine two
OpenMP threads spend much of their CPU time waiting for each other, so one thread's CPU
seconds are the cleaner measure of what a retrain costs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path


def parse_set(items: list[str]) -> dict:
    from MachineUnlearningLib.app.cli import _key_values

    return _key_values(items, "--set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True, help="cohort root (training/, held-out/)")
    parser.add_argument("--name", required=True, help="study name (key in the JSON)")
    parser.add_argument("--title", help="heading of its table in the docs (required to run)")
    parser.add_argument("--cohort-command", default="", help="how the cohort was made (docs)")
    parser.add_argument("--recipe", default="bench")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--original-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--subjects", nargs="*", help="left-out subjects (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks-memorisation.json"))
    parser.add_argument(
        "--time-one-thread",
        action="store_true",
        help="only add to study NAME of the JSON the timing of one extra leave-one-out "
        "retrain on one torch thread (a fresh cache, a child process)",
    )
    args = parser.parse_args()
    if args.time_one_thread:
        add_one_thread_timing(args)
        return
    if not args.title:
        parser.error("--title is required")

    import torch

    from MachineUnlearningLib.commands.retrains import (
        leave_one_out,
        originals,
        score_models,
        training_subjects,
    )
    from MachineUnlearningLib.data.cohort import HELD_OUT_GROUP, discover_cohort
    from MachineUnlearningLib.evaluation.audit import auc_mann_whitney
    from MachineUnlearningLib.runtime.events import HumanSink
    from MachineUnlearningLib.runtime.files import write_json
    from MachineUnlearningLib.training.recipes import resolve_recipe

    config = {"recipe": args.recipe, **parse_set(args.set)}
    recipe = resolve_recipe(args.recipe, parse_set(args.set))
    sink = QuietSink(HumanSink(sys.stderr))
    load_before = os.getloadavg()[0]
    reference_before = reference_step_seconds(recipe)
    started = time.monotonic()
    training = training_subjects(args.cohort)
    held_out = [s.subject_id for s in discover_cohort(args.cohort) if s.group == HELD_OUT_GROUP]
    left_out_ids = args.subjects or training

    print(f"originals at seeds {args.original_seeds}", file=sys.stderr)
    models = originals(args.cohort, config, args.original_seeds, sink, args.device)
    baseline = models[args.original_seeds[0]]
    scores = score_models(list(models.values()), args.cohort, training + held_out, args.device)
    base = scores[baseline.path]
    subjects = [
        {
            "id": i,
            "group": "training" if i in training else "held-out",
            "loss": base[i]["loss"],
            "dice": base[i]["dice"],
            "original_seeds": {
                str(seed): {"loss": scores[m.path][i]["loss"], "dice": scores[m.path][i]["dice"]}
                for seed, m in models.items()
            },
        }
        for i in training + held_out
    ]
    members = [s for s in subjects if s["group"] == "training"]
    never = [s for s in subjects if s["group"] == "held-out"]

    print(f"leave-one-out for {left_out_ids} at seeds {args.seeds}", file=sys.stderr)
    retrains = leave_one_out(args.cohort, config, left_out_ids, args.seeds, sink, args.device)
    rows = []
    for subject_id in left_out_ids:
        runs = [retrains[(subject_id, seed)] for seed in args.seeds]
        got = score_models(runs, args.cohort, [subject_id], args.device)
        losses = [got[r.path][subject_id]["loss"] for r in runs]
        dices = [got[r.path][subject_id]["dice"] for r in runs]
        seeds_loss = [scores[m.path][subject_id]["loss"] for m in models.values()]
        rows.append(
            {
                "id": subject_id,
                "baseline_loss": base[subject_id]["loss"],
                "baseline_dice": base[subject_id]["dice"],
                "retrain_losses": losses,
                "retrain_dices": dices,
                "gap_loss": gap(statistics.mean(losses) - base[subject_id]["loss"], losses),
                "gap_dice": gap(base[subject_id]["dice"] - statistics.mean(dices), dices),
                # the same with the mean of the baseline over its seeds instead of seed 0
                "originals_loss_mean": statistics.mean(seeds_loss),
                "gap_loss_originals": gap(
                    statistics.mean(losses) - statistics.mean(seeds_loss), losses
                ),
                "training_seconds": [r.timing.get("training_seconds") for r in runs],
                "wall_seconds": [r.timing.get("wall_seconds") for r in runs],
                "cpu_seconds": [r.timing.get("cpu_seconds") for r in runs],
                "reused": [r.reused for r in runs],
            }
        )
        print(f"  {subject_id}: gap loss {rows[-1]['gap_loss']:.1f} SD", file=sys.stderr)

    timing = {
        key: [v for row in rows for v in row[key] if v is not None]
        for key in ("wall_seconds", "training_seconds", "cpu_seconds")
    }
    study = {
        "name": args.name,
        "title": args.title,
        "date": date.today().isoformat(),
        "cohort": {
            "command": args.cohort_command,
            "training": len(training),
            "held_out": len(held_out),
        },
        "recipe": recipe.to_dict(),
        "command": shlex.join(["scripts/benchmark_memorisation.py", *sys.argv[1:]]),
        "scale": {
            "input_size": list(recipe.preprocessing.input_size),
            "base_width": recipe.model.arguments["base_width"],
            "head_channels": recipe.model.arguments["head_channels"],
            "depth": recipe.model.arguments["depth"],
            "epochs": recipe.training.epochs,
            "steps_baseline": recipe.training.epochs * len(training),
            "steps_retrain": recipe.training.epochs * (len(training) - 1),
        },
        "seeds": args.seeds,
        "original_seeds": args.original_seeds,
        "baseline": {**baseline.timing, "reused": baseline.reused},
        "subjects": subjects,
        "members": summary(members),
        "never_seen": summary(never),
        "auc_loss": auc_mann_whitney([-s["loss"] for s in members], [-s["loss"] for s in never]),
        "auc_dice": auc_mann_whitney([s["dice"] for s in members], [s["dice"] for s in never]),
        "leave_one_out": rows,
        "retrain_timing": {
            "retrains": len(timing["wall_seconds"]),
            **{
                f"{key}_{stat}": (fn(values) if values else None)
                for key, values in timing.items()
                for stat, fn in (("median", statistics.median), ("max", max))
            },
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": args.device,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "reference_step_seconds": [reference_before, reference_step_seconds(recipe)],
            "study_wall_seconds": round(time.monotonic() - started, 1),
        },
    }
    document = {"studies": {}}
    if args.json.exists():
        import json

        document = json.loads(args.json.read_text(encoding="utf-8"))
    document.setdefault("studies", {})[args.name] = study
    write_json(args.json, document)
    print(f"wrote {args.json} ({args.name})", file=sys.stderr)


def add_one_thread_timing(args) -> None:
    """Train one leave-one-out retrain (first training subject, seed 0) with one torch thread
    in a child process and a fresh cache, and store its timing in the study.

    With one thread the CPU seconds are the compute the retrain needs (no OpenMP thread
    waits for the other), so they are what its wall time is on one idle core.
    """
    import json
    import subprocess
    import tempfile

    from MachineUnlearningLib.commands.retrains import training_subjects
    from MachineUnlearningLib.runtime.files import write_json

    document = json.loads(args.json.read_text(encoding="utf-8"))
    study = document["studies"][args.name]
    config = {"recipe": args.recipe, **parse_set(args.set)}
    subject = training_subjects(args.cohort)[0]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "MACHINE_UNLEARNING_CACHE": cache, "OMP_NUM_THREADS": "1"}
        child = subprocess.run(
            [sys.executable, "-c", ONE_THREAD_CHILD, args.cohort, json.dumps(config), subject],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    timing = json.loads(child.stdout.strip().splitlines()[-1])
    study["one_thread_retrain"] = {"left_out": subject, **timing}
    write_json(args.json, document)
    print(f"one-thread retrain: {timing}", file=sys.stderr)


ONE_THREAD_CHILD = """
import json, os, sys
import torch
torch.set_num_threads(1)
from MachineUnlearningLib.commands.retrains import leave_one_out
from MachineUnlearningLib.runtime.events import CollectingSink
cohort, config, subject = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
load = os.getloadavg()[0]
model = leave_one_out(cohort, config, [subject], [0], CollectingSink(), "cpu")[(subject, 0)]
print(json.dumps({**model.timing, "load_average_1min": [round(load, 2),
                  round(os.getloadavg()[0], 2)], "torch_threads": torch.get_num_threads()}))
"""


def reference_step_seconds(recipe, steps: int = 5) -> float:
    """Median wall seconds of one forward + backward + Adam step of the recipe's model on a
    random input (no data pipeline, no loss): how fast this machine is right now."""
    import torch

    from MachineUnlearningLib.model.resnet import MedicalNetSegmentation

    model = MedicalNetSegmentation(recipe.model, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(1, len(recipe.modalities), *recipe.preprocessing.input_size)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        model(x).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times[1:]), 4)


def gap(difference: float, values: list[float]) -> float | None:
    """``difference`` in units of the sample SD of ``values`` (None with fewer than 2)."""
    if len(values) < 2:
        return None
    spread = statistics.stdev(values)
    return difference / spread if spread > 0 else float("inf")


def summary(rows: list[dict]) -> dict:
    losses, dices = [r["loss"] for r in rows], [r["dice"] for r in rows]
    return {
        "n": len(rows),
        "loss_mean": statistics.mean(losses),
        "loss_min": min(losses),
        "loss_max": max(losses),
        "dice_mean": statistics.mean(dices),
        "dice_min": min(dices),
        "dice_max": max(dices),
    }


class QuietSink:
    """Passes phases and errors on, drops per-step progress (a log file stays readable)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def emit(self, event: str, **fields) -> None:
        if event != "progress":
            self.inner.emit(event, **fields)


if __name__ == "__main__":
    main()
