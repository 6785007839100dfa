"""Every unlearning preset on the demo cohort, in one table shaped like the paper's.

Usage:
    .venv/bin/python scripts/benchmark_strategies.py --cohort demo-output/cohort \\
        --checkpoint demo-output/baseline/model.pt --work benchmark-runs \\
        [--forget 070] [--epochs 50] [--eval-epochs 20 50] [--presets noisy-label ...] \\
        [--variant "NAME=STRATEGY [unlearn options]" ...] \\
        [--retrain | --reference-json EARLIER.json] [--json docs/benchmarks-strategies.json] \\
        [--plot docs/benchmarks-tradeoff.png [--plot-with OTHER.json ...]]

A preset ``NAME+fix-decoder`` adds ``--fix-decoder``; a ``--variant`` row runs STRATEGY with
the given ``machine-unlearning unlearn`` options after the defaults (so ``--epochs`` there
wins), e.g. ``--variant "ngp-tuned=neggrad-plus --param alpha=0.7 --param steps=15"`` (the
literature's presets count steps and refuse ``--epochs``).

Each preset runs as its own ``machine-unlearning unlearn`` subprocess (the real CLI); its wall
time is measured here and its peak resident memory is what the worker reports in its
``finished`` event. With ``--retrain`` the retrain-from-scratch reference (the baseline's
recipe and seed, retain subjects only) runs first and every preset is also compared with it:
absolute Dice gaps on forget, retain and held-out subjects, their mean (SalUn's "Avg. Gap"
without its privacy (MIA) term, which this script does not measure) and
the run-time efficiency RTE = t_retrain / t_unlearn (same machine, same script). The script
prints a Markdown table and, with ``--json``, the raw numbers; docs/benchmarks.md shows the
JSON as scripts/render_benchmarks.py renders it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from MachineUnlearningLib.strategies import get_strategy
from MachineUnlearningLib.strategies.literature import LITERATURE_PRESETS
from MachineUnlearningLib.strategies.presets import PAPER_PRESETS

# the paper's presets from the registry, plus the fix-decoder modifier on noisy-label
PRESETS = (*(p.name for p in PAPER_PRESETS), "noisy-label+fix-decoder")
PAPER_ROW = (
    "| paper: noisy-label (MRBrainS18, published, not ours) | 50 | 0.9226 -> 0.0613 "
    "| ~0.90 -> 0.7576 | n/a | n/a | n/a | 93 | 84 | 0.6963 | 0.091 | | | | |"
)


def final_verdict(run: Path) -> str | None:
    """The run's audit verdict: against the forget subject's own retrains
    (``reference-audit.json``) when its references were cached, else the older comparison with
    never-seen subjects (``audit.json``, marked "vs held-out"); None when neither ran."""
    reference = run / "reference-audit.json"
    if reference.exists():
        verdict = json.loads(reference.read_text()).get("verdict")
        if verdict is not None:
            return verdict
    held_out = run / "audit.json"
    if held_out.exists():
        return f"{json.loads(held_out.read_text())['unlearned']['overall']} (vs held-out)"
    return None


def run_cli(args: list[str]) -> dict:
    """Run the CLI with --events; returns exit code, wall seconds and the finished event."""
    from MachineUnlearningLib.runtime.events import parse_event

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "MachineUnlearningLib", *args, "--events"],
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    events = [e for e in map(parse_event, result.stdout.splitlines()) if e is not None]
    finished = next((e for e in reversed(events) if e.kind == "finished"), None)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{' '.join(args[:2])} failed with exit code {result.returncode}")
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mib": (finished.get("resources") or {}).get("peak_rss_mib"),
    }


def collect_usage(args: list[str]) -> dict:
    """--collect: the loop seconds recorded in the run's checkpoint (no process to time)."""
    import torch

    output = Path(args[args.index("--output") + 1])
    for name in ("unlearned.pt", "model.pt"):
        if (output / name).exists():
            meta = torch.load(output / name, map_location="cpu", weights_only=True)["metadata"]
            return {"seconds": meta["training_history"][-1]["seconds"], "peak_rss_mib": None}
    if (output / "metrics.json").exists():
        return {"seconds": None, "peak_rss_mib": None}
    raise SystemExit(f"--collect: no finished run in {output}")


def set_means(metrics: dict, model: str, epoch: int) -> dict:
    """The set means of the evaluation of ``model`` ("original" or "unlearned") at ``epoch``.

    Selected by model as well as epoch: a preset that does not train (``ssd``) has its edited
    model evaluated as epoch 0, beside the original's epoch-0 evaluation.
    """
    return next(
        e["sets"] for e in metrics["evaluations"] if e["model"] == model and e["epoch"] == epoch
    )


def subject_dice(metrics: dict, epoch: int | None) -> dict[str, float]:
    evaluation = next(e for e in metrics["evaluations"] if epoch is None or e["epoch"] == epoch)
    return {s["subject_id"]: s["mean_dice"] for s in evaluation["subjects"]}


def budget_flags(strategy: str, epochs: int) -> list[str]:
    """``--epochs N`` for an epoch-budget preset; nothing for a step-budget one (the
    literature's refuse epochs; their own ``steps`` apply)."""
    return ["--epochs", str(epochs)] if get_strategy(strategy).budget == "epochs" else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--checkpoint", required=True, help="the baseline (never written)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("benchmark-runs"),
        help="folder for the runs (benchmark-runs)",
    )
    parser.add_argument("--forget", default="070")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--eval-epochs", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=STRATEGY [OPTIONS]",
        help="a tuned row: NAME is its label, OPTIONS are unlearn options (repeatable)",
    )
    parser.add_argument("--retrain", action="store_true", help="also run the retrain reference")
    parser.add_argument(
        "--recipe", default="cpu-demo", help="the retrain reference's recipe (cpu-demo)"
    )
    parser.add_argument(
        "--reference-json",
        type=Path,
        help="reuse the retrain reference of an earlier --json output",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: tabulate the runs already in --work (wall time "
        "then = the training loop's seconds from the checkpoint, peak RSS n/a)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="with a reference: trade-off plot (retain kept vs forget gap) here",
    )
    parser.add_argument(
        "--plot-with",
        type=Path,
        nargs="+",
        default=[],
        help="also plot the rows of these earlier --json outputs",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    common = ["--cohort", args.cohort, "--forget", args.forget, "--device", args.device]

    runner = collect_usage if args.collect else run_cli
    reference = None
    if args.reference_json:
        reference = json.loads(args.reference_json.read_text())["reference"]
    elif args.retrain:
        out = args.work / "retrain"
        usage = runner(["retrain", *common, "--recipe", args.recipe, "--output", str(out)])
        evaluated = args.work / "retrain-evaluated"
        runner(
            [
                "evaluate",
                "--cohort",
                args.cohort,
                "--checkpoint",
                str(out / "model.pt"),
                "--forget",
                args.forget,
                "--device",
                args.device,
                "--output",
                str(evaluated),
            ]
        )
        metrics = json.loads((evaluated / "metrics.json").read_text())
        reference = {**usage, "sets": metrics["evaluations"][0]["sets"]}
        print(f"retrain: {usage['seconds']} s, sets {reference['sets']}", flush=True)

    rows = []
    for preset, strategy, extra in runs_to_make(args.presets, args.variant):
        out = args.work / preset
        usage = runner(
            [
                "unlearn",
                *common,
                "--checkpoint",
                args.checkpoint,
                "--strategy",
                strategy,
                # a step-budget preset (the literature's) refuses epochs: its own steps apply
                *budget_flags(strategy, args.epochs),
                "--eval-epochs",
                *map(str, args.eval_epochs),
                *extra,
                "--output",
                str(out),
            ]
        )
        metrics = json.loads((out / "metrics.json").read_text())
        audit = final_verdict(out)
        before = set_means(metrics, "original", 0)
        last_epoch = max(summary["epoch"] for summary in metrics["summary"])
        for summary in metrics["summary"]:
            after = set_means(metrics, "unlearned", summary["epoch"])
            row = {
                "preset": preset,
                "epoch": summary["epoch"],
                "before": before,
                "after": after,
                **summary,
                **usage,
                # the audit judges the final model only; earlier epochs have no verdict
                "audit": audit if summary["epoch"] == last_epoch else None,
            }
            if reference is not None:
                gaps = {
                    role: abs(after[role]["dice"] - reference["sets"][role]["dice"])
                    for role in ("forget", "retain", "held-out")
                    if role in after
                }
                row["dice_gap_to_retrain"] = gaps
                # SalUn's Avg. Gap averages four gaps (forget, retain, test accuracy and MIA
                # efficacy); this one has the three Dice terms only, no privacy term
                row["avg_gap"] = sum(gaps.values()) / len(gaps)
                row["avg_gap_terms"] = sorted(gaps)
                row["rte"] = (
                    reference["seconds"] / usage["seconds"]
                    if reference["seconds"] and usage["seconds"]
                    else None
                )
            rows.append(row)
        print(f"{preset}: {usage['seconds']} s", flush=True)

    print(markdown(rows, reference, args))
    if args.plot and reference is not None:
        earlier = [row for f in args.plot_with for row in json.loads(f.read_text())["rows"]]
        trade_off_plot(earlier + rows, args.plot, reference["sets"]["forget"]["dice"])
    if args.json:
        args.json.write_text(json.dumps({"reference": reference, "rows": rows}, indent=2) + "\n")


def runs_to_make(presets: list[str], variants: list[str]) -> list[tuple[str, str, list[str]]]:
    """(row label, strategy, extra unlearn options) for every preset and ``--variant``."""
    runs = []
    for preset in presets:
        strategy, _, modifier = preset.partition("+")
        runs.append((preset, strategy, ["--fix-decoder"] if modifier == "fix-decoder" else []))
    for variant in variants:
        label, _, spec = variant.partition("=")
        words = shlex.split(spec)
        if not label or not words:
            raise SystemExit(f"--variant {variant!r}: expected NAME=STRATEGY [OPTIONS]")
        runs.append((label, words[0], words[1:]))
    return runs


ZOOM_X, ZOOM_Y = (92.0, 101.5), (0.0, 0.08)  # the "close to retraining" corner


def trade_off_plot(rows: list[dict], path: Path, reference_forget_dice: float) -> None:
    """Retain preservation (x) against the forget-Dice gap to the retrained model (y), one
    point per row label at its last evaluated epoch; the ideal corner is bottom right. Marker
    by family: the paper's presets, literature methods, tuned ``--variant`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family_of = {p.name: "paper preset" for p in PAPER_PRESETS}
    family_of |= {p.name: "literature method" for p in LITERATURE_PRESETS}
    styles = {
        "paper preset": ("o", "tab:blue"),
        "literature method": ("s", "tab:orange"),
        "tuned (--variant)": ("*", "tab:green"),
    }
    last = {}
    for row in rows:
        if row.get("dice_gap_to_retrain"):
            last[row["preset"]] = row
    points = []
    for preset, row in last.items():
        family = family_of.get(preset.partition("+")[0], "tuned (--variant)")
        x, y = row["retain_preservation_pct"], row["dice_gap_to_retrain"]["forget"]
        points.append((f"{preset} ({row['epoch']} ep)", family, x, y))
    first = next(iter(last.values()), None)
    figure, panels = plt.subplots(1, 2, figsize=(13, 5.5))
    for panel, zoom in zip(panels, (False, True), strict=True):
        seen = set()
        shown = [p for p in points if not zoom or (p[2] >= ZOOM_X[0] and p[3] <= ZOOM_Y[1])]
        for index, (label, family, x, y) in enumerate(sorted(shown, key=lambda p: p[3])):
            marker, colour = styles[family]
            panel.scatter(
                x, y, marker=marker, color=colour, s=60, label=None if family in seen else family
            )
            seen.add(family)
            offset = (4, 4) if not zoom else (6, -10 + 7 * (index % 4))
            panel.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=7)
        if first is not None:
            # the original model itself: nothing unlearned, 100 % retain Dice kept
            original_gap = abs(first["before"]["forget"]["dice"] - reference_forget_dice)
            panel.scatter(100, original_gap, marker="x", color="black", s=60)
            panel.annotate(
                "original model",
                (100, original_gap),
                textcoords="offset points",
                xytext=(-60, -12),
                fontsize=7,
            )
        panel.set_xlabel("retain Dice kept (% of the original model's)")
        panel.set_ylabel("|forget Dice - retrained model's forget Dice|")
        panel.grid(alpha=0.3)
        panel.legend(loc="upper left", fontsize=8)
        if zoom:
            panel.set_xlim(*ZOOM_X)
            panel.set_ylim(*ZOOM_Y)
    panels[0].set_title("Unlearning trade-off (ideal: bottom right)")
    panels[1].set_title("Zoom on the bottom-right corner")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(rows: list[dict], reference: dict | None, args) -> str:
    def f(value, spec=".4f"):
        return "n/a" if value is None else format(value, spec)

    head = (
        "| preset | epoch | Dice forget | Dice retain | Dice held-out | MAE forget | "
        "MAE retain | decrease % | preserved % | Dice gap | MAE gap | audit | "
        "s | peak RSS MiB | Dice Avg. Gap (no privacy term) / RTE |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        b, a = r["before"], r["after"]
        held = (
            f"{f(b['held-out']['dice'])} -> {f(a['held-out']['dice'])}"
            if "held-out" in a
            else "n/a"
        )
        ref = f"{f(r.get('avg_gap'))} / {f(r.get('rte'), '.2f')}" if reference else ""
        lines.append(
            f"| {r['preset']} | {r['epoch']} | {f(b['forget']['dice'])} -> "
            f"{f(a['forget']['dice'])} | {f(b['retain']['dice'])} -> {f(a['retain']['dice'])} "
            f"| {held} | {f(a['forget']['mae'])} | {f(a['retain']['mae'])} | "
            f"{f(r['forget_decrease_pct'], '.1f')} | {f(r['retain_preservation_pct'], '.1f')} | "
            f"{f(r['dice_gap'])} | {f(r['mae_gap'])} | {r['audit'] or 'n/a'} | "
            f"{r['seconds']} | {r['peak_rss_mib']} | {ref} |"
        )
    lines.append(PAPER_ROW)
    if reference:
        s = reference["sets"]
        lines.append(
            f"\nRetrain reference: {reference['seconds']} s; Dice forget "
            f"{f(s['forget']['dice'])}, retain {f(s['retain']['dice'])}, held-out "
            f"{f(s.get('held-out', {}).get('dice'))}."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
