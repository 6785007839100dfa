"""Render the measured numbers of docs/benchmarks.md from the committed JSON.

Usage:
    .venv/bin/python scripts/render_benchmarks.py           # rewrite the rendered blocks
    .venv/bin/python scripts/render_benchmarks.py --check   # exit 1 if the doc is stale

Each block sits between ``<!-- rendered: NAME ... -->`` and ``<!-- end rendered: NAME -->`` in
docs/benchmarks.md and is produced from its JSON only (never edit it by hand):

- ``training``: docs/benchmarks-training.json (scripts/benchmark_training.py);
- ``rte``: docs/benchmarks-rte.json (scripts/benchmark_rte.py).

Testing/test_benchmark_docs.py checks that the doc and the JSON agree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCKS = {"training": "benchmarks-training.json", "rte": "benchmarks-rte.json"}


def _f(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def render_training(data: dict) -> str:
    lines = [
        "| configuration | engine | threads | steps/s | pure-compute steps/s | pipeline / pure "
        "compute | median of rounds (rounds) | GFLOP / step | achieved GFLOP/s | measured FP32 "
        "peak GFLOP/s | fraction of peak | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        rounds = ", ".join(_f(r, ".2f") for r in row["round_ratios"])
        peak = row.get("fp32_peak_gflops_measured")
        fraction = row.get("fraction_of_fp32_peak")
        if fraction is None and row.get("mfu_vs_bf16_peak") is not None:
            fraction = row["mfu_vs_bf16_peak"]
            peak = row["peak_bf16_tflops"] * 1e3
        lines.append(
            f"| {row['name']} ({row['model']}, {' x '.join(map(str, row['input_size']))}, "
            f"{row['loss']} on the {row['target_grid']} grid"
            + (f", crop jitter {row['crop_jitter']}" if row["crop_jitter"] else "")
            + (f", autocast {row['autocast']}" if row.get("autocast") else "")
            + (", channels_last_3d" if row.get("channels_last_3d") else "")
            + f") | {row.get('engine', 'this checkout')} | {row['torch_threads']} | "
            f"{_f(row['steps_per_s'])} | {_f(row['pure_compute_steps_per_s'])} | "
            f"**{_f(row['pipeline_over_pure_compute'], '.2f')}** | "
            f"{_f(row['median_round_ratio'], '.2f')} ({rounds}) | "
            f"{_f(row['model_gflop_per_step'], '.1f')} | {_f(row['achieved_gflops'], '.1f')} | "
            f"{_f(peak, '.0f')} | {_f(fraction, '.1%')} | "
            f"{row['peak_memory_mib']:.0f} MiB ({row['peak_memory_kind']}) |"
        )
    gpu = data.get("gpu", {})
    if not gpu.get("measured", False):
        lines += ["", f"GPU rows: not measured. {gpu.get('reason', '')}".rstrip()]
    unlearn = [r for r in data["rows"] if "unlearn_demo_protocol_loop_s" in r]
    for row in unlearn:
        lines += [
            "",
            f"Unlearning loop at this scale ({row['name']}): "
            f"{row['unlearn_demo_protocol_loop_s']:.0f} s for the demo protocol's "
            f"{row['unlearn_demo_protocol_steps']} steps (extrapolated from "
            f"{row['rounds'] * row['steps_per_round']} measured steps).",
        ]
    return "\n".join(lines)


def render_rte(data: dict) -> str:
    retrain = data["retrain"]
    lines = [
        f"Scale: {data['scale']:g} x the protocol's epochs (retrain {retrain['epochs']} epochs, "
        f"{retrain['steps']} steps), {data['threads']} threads, torch {data['torch']}, forget "
        f"{', '.join(data['forget'])}, recipe `{data['recipe']}`.",
        "",
        "| run | epochs | steps | training loop s | whole command s | RTE (loops) | "
        "RTE (commands) | Dice forget / retain |",
        "|---|---|---|---|---|---|---|---|",
        f"| retrain from scratch (reference) | {retrain['epochs']} | {retrain['steps']} | "
        f"{retrain['loop_s']:.1f} | {retrain['command_s']:.1f} | | | "
        f"{_sets(retrain['sets'])} |",
    ]
    for row in data["methods"]:
        lines.append(
            f"| `{row['name']}` (`{' '.join(row['args'])}`) | {row['epochs']} | {row['steps']} | "
            f"{row['loop_s']:.1f} (+ {row['evaluations_in_loop_s']:.1f} evaluating) | "
            f"{row['command_s']:.1f} | **{row['rte_loop']:.2f}** | {row['rte_command']:.2f} | "
            f"{_sets(row['sets'])} |"
        )
    return "\n".join(lines)


def _sets(sets: dict) -> str:
    forget = sets.get("forget", {}).get("dice")
    return f"{_f(forget, '.4f')} / {_f(sets.get('retain', {}).get('dice'), '.4f')}"


RENDERERS = {"training": render_training, "rte": render_rte}


def rendered_document(text: str, docs: Path = DOCS) -> str:
    """``text`` (docs/benchmarks.md) with every rendered block regenerated from its JSON."""
    for name, json_name in BLOCKS.items():
        pattern = re.compile(
            rf"(<!-- rendered: {name}\b[^>]*-->\n)(.*?)(<!-- end rendered: {name} -->)", re.S
        )
        if not pattern.search(text):
            raise SystemExit(f"docs/benchmarks.md has no rendered block {name!r}")
        data = json.loads((docs / json_name).read_text(encoding="utf-8"))
        body = RENDERERS[name](data)
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(3), text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args()
    path = DOCS / "benchmarks.md"
    current = path.read_text(encoding="utf-8")
    wanted = rendered_document(current)
    if args.check:
        if wanted != current:
            print(f"{path} is stale: run scripts/render_benchmarks.py", file=sys.stderr)
            sys.exit(1)
        return
    path.write_text(wanted, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
