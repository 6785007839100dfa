"""Render the memorisation section of docs/benchmarks.md from docs/benchmarks-memorisation.json.

Usage:
    .venv/bin/python scripts/render_memorisation_docs.py [--check]

Replaces the text between the ``BEGIN memorisation`` and ``END memorisation`` markers of
docs/benchmarks.md with tables made from every study in the JSON (written by
scripts/benchmark_memorisation.py), in the JSON's order. ``--check`` changes nothing and exits
with 1 when the section is not what the JSON renders to (Testing/test_benchmark_docs.py runs
it), so no number in that section can drift from its data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
DATA = ROOT / "docs" / "benchmarks-memorisation.json"
BEGIN = (
    "<!-- BEGIN memorisation: rendered by scripts/render_memorisation_docs.py from "
    "docs/benchmarks-memorisation.json; edit the JSON or the script, not this text -->"
)
END = "<!-- END memorisation -->"


def render(document: dict) -> str:
    """The section's Markdown (between the markers) for a JSON document."""
    parts = []
    for study in document["studies"].values():
        parts.append(render_study(study))
    return "\n\n".join(parts)


def render_study(study: dict) -> str:
    scale = study["scale"]
    timing = study["retrain_timing"]
    machine = study["machine"]
    members, never = study["members"], study["never_seen"]
    lines = [
        f"#### {study['title']}",
        "",
        f"Command: `{study['command']}` (cohort: `{study['cohort']['command']}`; "
        f"{study['cohort']['training']} training, {study['cohort']['held_out']} held-out "
        f"subjects; measured {study['date']}).",
        "",
        f"Scale: recipe `{study['recipe']['name']}`, input {_size(scale['input_size'])}, "
        f"ResNet-{scale['depth']} base width {scale['base_width']}, head "
        f"{scale['head_channels']}, {scale['epochs']} epochs = {scale['steps_baseline']} steps "
        f"for the baseline, {scale['steps_retrain']} per leave-one-out retrain; retrain seeds "
        f"{_list(study['seeds'])}. {_timing(study, timing)} {machine['cpu_count']} CPU cores, "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']}; 1-minute load "
        f"average {machine['load_average_1min'][0]} at the start, "
        f"{machine['load_average_1min'][1]} at the end (other work shared the machine); a "
        f"pure forward + backward step of this model on a random input took "
        f"{machine['reference_step_seconds'][0]:.2f} s at the start, "
        f"{machine['reference_step_seconds'][1]:.2f} s at the end.",
        "",
        "| subject | role | foreground loss (nats) | retrains' loss, mean +- SD | "
        "gap (SDs) | Dice | retrains' Dice, mean +- SD | gap (SDs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    loo = {row["id"]: row for row in study["leave_one_out"]}
    for subject in study["subjects"]:
        row = loo.get(subject["id"])
        role = "member" if subject["group"] == "training" else "never seen"
        if row:
            cells = [
                _mean_sd(row["retrain_losses"]),
                _gap(row["gap_loss"]),
                f"{subject['dice']:.4f}",
                _mean_sd(row["retrain_dices"]),
                _gap(row["gap_dice"]),
            ]
        else:
            cells = ["", "", f"{subject['dice']:.4f}", "", ""]
        lines.append(
            f"| {subject['id']} | {role} | {subject['loss']:.4f} | " + " | ".join(cells) + " |"
        )
    gaps = [row["gap_loss"] for row in study["leave_one_out"] if row["gap_loss"] is not None]
    dice_gaps = [row["gap_dice"] for row in study["leave_one_out"] if row["gap_dice"] is not None]
    lines += [
        "",
        f"Members: mean Dice {members['dice_mean']:.4f} (range {members['dice_min']:.4f} - "
        f"{members['dice_max']:.4f}), mean loss {members['loss_mean']:.4f}. Never seen: mean "
        f"Dice {never['dice_mean']:.4f} ({never['dice_min']:.4f} - {never['dice_max']:.4f}), "
        f"mean loss {never['loss_mean']:.4f}. Member-vs-never-seen AUC: "
        f"{study['auc_loss']:.2f} on the loss, {study['auc_dice']:.2f} on Dice. "
        f"Memorisation gap (loss) of the {len(gaps)} members with retrains: "
        f"{_range(gaps)}; {sum(g >= 3 for g in gaps)} of {len(gaps)} at 3 SDs or more. "
        f"Gap (Dice): {_range(dice_gaps)}; {sum(g >= 3 for g in dice_gaps)} of "
        f"{len(dice_gaps)} at 3 SDs or more.",
    ]
    vs_originals = [
        row["gap_loss_originals"]
        for row in study["leave_one_out"]
        if row.get("gap_loss_originals") is not None
    ]
    if len(study.get("original_seeds", [])) > 1 and vs_originals:
        lines += [
            "",
            f"Against the baseline's mean over its seeds {_list(study['original_seeds'])} "
            f"instead of seed 0 alone, the loss gaps are {_range(vs_originals)} "
            f"({sum(g >= 3 for g in vs_originals)} of {len(vs_originals)} at 3 SDs or more).",
        ]
    if len(study.get("original_seeds", [])) > 1:
        spread = [
            statistics.stdev([v["loss"] for v in s["original_seeds"].values()])
            for s in study["subjects"]
            if s["group"] == "training"
        ]
        lines += [
            "",
            f"The baseline itself at seeds {_list(study['original_seeds'])}: a member's loss "
            f"varies by an SD of {min(spread):.4f} - {max(spread):.4f} nats across seeds.",
        ]
    return "\n".join(lines)


def _timing(study: dict, timing: dict) -> str:
    baseline = study["baseline"]
    text = []
    if baseline.get("training_seconds") is not None:
        text.append(
            f"Baseline: training loop {baseline['training_seconds']:.0f} s, "
            f"{baseline['cpu_seconds']:.0f} CPU s."
        )
    if timing["retrains"]:
        text.append(
            f"One leave-one-out retrain ({timing['retrains']} retrains): wall median "
            f"{timing['wall_seconds_median']:.0f} s, at most {timing['wall_seconds_max']:.0f} s "
            f"(training loop median {timing['training_seconds_median']:.0f} s, at most "
            f"{timing['training_seconds_max']:.0f} s; the rest is loading the cohort and the "
            f"evaluation `train` does); CPU time median {timing['cpu_seconds_median']:.0f} s, "
            f"at most {timing['cpu_seconds_max']:.0f} s."
        )
    one = study.get("one_thread_retrain")
    if one:
        text.append(
            f"One more leave-one-out retrain on a single torch thread: {one['cpu_seconds']:.0f} "
            f"CPU s ({one['wall_seconds']:.0f} s wall at a load average of "
            f"{one['load_average_1min'][0]}; training loop {one['training_seconds']:.0f} s), "
            "i.e. about that many seconds on one idle core."
        )
    return " ".join(text)


def _size(size: list[int]) -> str:
    return " x ".join(str(v) for v in size)


def _list(values: list) -> str:
    return ", ".join(str(v) for v in values)


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {spread:.4f}"


def _gap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _range(values: list[float]) -> str:
    return f"{min(values):.1f} to {max(values):.1f}" if values else "n/a"


def splice(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced by ``section``."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC}: the memorisation markers are missing.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{section}\n\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is stale")
    args = parser.parse_args()
    document = json.loads(DATA.read_text(encoding="utf-8"))
    current = DOC.read_text(encoding="utf-8")
    wanted = splice(current, render(document))
    if args.check:
        if wanted != current:
            print(f"{DOC} is stale: run scripts/render_memorisation_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
