"""RTE from one script: the retrain-from-scratch reference and each unlearning method, run here
one after another as real ``machine-unlearning`` subprocesses on the same threads.

Usage:
    .venv/bin/python scripts/benchmark_rte.py --cohort demo-output/cohort \\
        --checkpoint demo-output/baseline/model.pt --forget 070 --work rte-runs \\
        [--scale 0.2] [--threads 2] [--json docs/benchmarks-rte.json] \\
        [--method "NAME=UNLEARN ARGS" ...]

``--method`` defaults to the demo's ``noisy-label+fix-decoder=--strategy noisy-label
--fix-decoder``; pass any other (e.g. the fastest method the protocol finds acceptable) the
same way, several times for several methods. ``--scale`` multiplies the epochs of both runs
(the checkpoint recipe's for the retrain, the method's own or its ``--epochs`` for the
unlearning; at least 1), so the ratio of training-loop times is that of the full protocol
while the run fits in minutes; the whole-command ratio is not scale-free (start-up,
evaluations and writing do not shrink with the epochs).

Per run: whole-command wall seconds (measured here around the subprocess), training-loop
seconds (the checkpoint's ``training_history``; for ``unlearn`` the loop includes the
evaluations it runs at its evaluation epochs, whose time the ``metrics`` events give, so the
loop time without them is reported too). RTE = retrain time / unlearn time, for the loop
(without the unlearning run's evaluations) and for the whole command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

DEMO_METHOD = "noisy-label+fix-decoder=--strategy noisy-label --fix-decoder"


def parse_method(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise SystemExit(f"--method: expected NAME=ARGS, got {text!r}")
    return name.strip(), shlex.split(rest)


def scaled_epochs(args: list[str], scale: float) -> tuple[list[str], int]:
    """``args`` with ``--epochs`` set to ``scale`` x (the given or the strategy's default)."""
    from MachineUnlearningLib.strategies import get_strategy

    args = list(args)
    if "--epochs" in args:
        at = args.index("--epochs")
        epochs = int(args[at + 1])
        del args[at : at + 2]
    else:
        strategy = args[args.index("--strategy") + 1] if "--strategy" in args else "noisy-label"
        resolved = get_strategy(strategy).resolve({})
        if "steps" in resolved:  # a step-budget preset: scale its steps, it refuses epochs
            steps = max(1, round(scale * int(resolved["steps"])))
            return [*args, "--param", f"steps={steps}"], steps
        epochs = int(resolved["epochs"])
    epochs = max(1, round(scale * epochs))
    return [*args, "--epochs", str(epochs)], epochs


def run(argv: list[str], threads: int, log: Path) -> tuple[float, list[dict]]:
    """Run the CLI with ``--events``; returns (wall seconds, events)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "MachineUnlearningLib", *argv, "--events"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:1])} failed ({result.returncode}); see {log}")
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return seconds, events


def evaluation_seconds_in_loop(events: list[dict]) -> float:
    """Time of the unlearned-model evaluations run inside the loop: each ``metrics`` event of
    the unlearned model minus the last ``progress`` event before it."""
    total, last_progress = 0.0, None
    for event in events:
        if event["event"] == "progress":
            last_progress = event["time"]
        elif event["event"] == "metrics" and event.get("model") == "unlearned":
            if last_progress is not None:
                total += event["time"] - last_progress
    return total


def history_entry(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint, weights_only=True)["metadata"]["training_history"][-1]


def final_sets(output: Path) -> dict:
    metrics = json.loads((output / "metrics.json").read_text())
    return metrics["evaluations"][-1]["sets"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--checkpoint", required=True, help="the original (baseline) model")
    parser.add_argument("--forget", nargs="+", default=["070"], metavar="ID")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs (new)")
    parser.add_argument("--scale", type=float, default=1.0, help="epoch scale of both runs")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: torch's)")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=ARGS")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    import torch

    from MachineUnlearningLib.commands.reference import recipe_overrides
    from MachineUnlearningLib.runtime.jobs import JobSpec

    threads = args.threads or torch.get_num_threads()
    methods = [parse_method(m) for m in (args.method or [DEMO_METHOD])]
    meta = torch.load(args.checkpoint, weights_only=True)["metadata"]
    recipe = meta["recipe"]
    retrain_epochs = max(1, round(args.scale * recipe["training"]["epochs"]))
    args.work.mkdir(parents=True, exist_ok=False)
    job = JobSpec(
        command="retrain",
        cohort=args.cohort,
        output=str(args.work / "retrain"),
        forget_ids=list(args.forget),
        epochs=retrain_epochs,
        seed=int(meta["training_history"][0].get("seed", 0)),
        device="cpu",
        config=recipe_overrides(recipe),
    )
    job_file = args.work / "retrain-job.json"
    job_file.write_text(json.dumps(job.to_dict(), indent=2))
    print(f"retrain: {retrain_epochs} epochs on {threads} threads ...", flush=True)
    retrain_s, _ = run(["retrain", "--job", str(job_file)], threads, args.work / "retrain.log")
    retrain_entry = history_entry(args.work / "retrain" / "model.pt")
    retrain = {
        "epochs": retrain_epochs,
        "steps": retrain_entry["steps"],
        "loop_s": retrain_entry["seconds"],
        "command_s": round(retrain_s, 2),
        "sets": final_sets(args.work / "retrain"),
    }
    rows = []
    for name, method_args in methods:
        method_args, epochs = scaled_epochs(method_args, args.scale)
        output = args.work / name
        argv = [
            "unlearn",
            "--cohort",
            args.cohort,
            "--checkpoint",
            args.checkpoint,
            "--forget",
            *args.forget,
            "--output",
            str(output),
            "--device",
            "cpu",
            *method_args,
        ]
        print(f"{name}: {epochs} epochs ...", flush=True)
        command_s, events = run(argv, threads, args.work / f"{name}.log")
        entry = history_entry(output / "unlearned.pt")
        evaluations_s = evaluation_seconds_in_loop(events)
        loop_s = entry["seconds"] - evaluations_s
        rows.append(
            {
                "name": name,
                "args": method_args,
                "epochs": epochs,
                "steps": entry["steps"],
                "loop_s_with_evaluations": entry["seconds"],
                "evaluations_in_loop_s": round(evaluations_s, 2),
                "loop_s": round(loop_s, 2),
                "command_s": round(command_s, 2),
                "rte_loop": round(retrain["loop_s"] / loop_s, 2),
                "rte_command": round(retrain["command_s"] / command_s, 2),
                "sets": final_sets(output),
            }
        )
        r = rows[-1]
        print(
            f"{name}: RTE {r['rte_loop']} (loops {retrain['loop_s']:.0f} s / {loop_s:.0f} s), "
            f"{r['rte_command']} (commands {retrain['command_s']:.0f} s / {command_s:.0f} s)",
            flush=True,
        )
    document = {
        "command": "scripts/benchmark_rte.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "scale": args.scale,
        "threads": threads,
        "torch": torch.__version__,
        "forget": list(args.forget),
        "recipe": recipe["name"],
        "retrain": retrain,
        "methods": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
