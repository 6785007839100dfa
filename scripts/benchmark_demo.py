"""The README's first command, timed from a fresh clone: ``time scripts/demo.sh``, phase by phase.

Usage:
    python3 scripts/benchmark_demo.py [--clone-into /tmp/demo-clone] \\
        [--json docs/benchmarks-demo.json]

1. ``git clone`` this repository's committed HEAD into a new folder (a fresh clone: no .venv,
   no demo-output; the uncommitted changes of this checkout are not in it);
2. run ``scripts/demo.sh --events`` there exactly as a user does (it sets up .venv, makes the
   cohort, trains the baseline, unlearns, reports) and time the whole command;
3. split the wall time into phases from the JSON events' ``time`` stamps (``phase_seconds``):
   set-up (before the first event: venv and installs), then each ``phase`` event up to the next;
4. read the run's ``metrics.json``: forget / retain / held-out Dice at every evaluated epoch,
   and the reference audit's verdict when one ran.

The JSON holds the clone's commit, the machine, the wall time, the phases and the results; the
README and docs/benchmarks.md render it (``scripts/render_benchmarks.py``). Run on an otherwise
idle machine: the time is the issue's "demo in under 10 minutes" measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = "set-up (.venv, installs)"


def phase_seconds(started: float, events: list[dict], ended: float) -> list[dict]:
    """Wall seconds per phase, in order: set-up from ``started`` to the first event, then one
    entry per ``phase`` event lasting until the next phase event or ``ended`` (the time from
    the first event to the first phase event, if any, is ``start``).

    Args:
        started, ended: wall-clock seconds (``time.time()``) around the whole command.
        events: the demo's parsed JSON events in order, each with ``event`` and ``time``.
    """
    if not events:
        return [{"phase": SETUP, "seconds": round(ended - started, 1)}]
    first = events[0]["time"]
    marks = [(e["name"], e["time"]) for e in events if e["event"] == "phase"]
    if not marks or marks[0][1] > first:
        marks.insert(0, ("start", first))
    ends = [at for _, at in marks[1:]] + [ended]
    return [{"phase": SETUP, "seconds": round(first - started, 1)}] + [
        {"phase": name, "seconds": round(until - at, 1)}
        for (name, at), until in zip(marks, ends, strict=True)
    ]


def results(metrics: dict) -> list[dict]:
    """One row per evaluated epoch (0 = the original): mean Dice per role."""
    return [
        {"epoch": e["epoch"], **{role: s["dice"] for role, s in e["sets"].items()}}
        for e in metrics["evaluations"]
    ]


def run_demo(clone: Path) -> tuple[float, float, list[dict]]:
    """Run ``scripts/demo.sh --events`` in ``clone``; (started, ended, its events)."""
    sys.path.insert(0, str(ROOT / "MachineUnlearning"))
    from MachineUnlearningLib.runtime.events import parse_event

    started = time.time()
    process = subprocess.run(
        ["bash", "scripts/demo.sh", "--events"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=False,
    )
    ended = time.time()
    if process.returncode != 0:
        tail = process.stderr[-3000:]
        raise SystemExit(f"scripts/demo.sh failed ({process.returncode}):\n{tail}")
    events = []
    for line in process.stdout.splitlines():
        event = parse_event(line)
        if event is not None:
            events.append({"event": event.kind, **event.fields})
    return started, ended, events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone-into", type=Path, default=None, help="(a new temporary folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks-demo.json")
    args = parser.parse_args(argv)
    from benchmark_training import cpu_name  # scripts/ is on sys.path when run as a script

    clone = args.clone_into or Path(tempfile.mkdtemp(prefix="demo-clone-")) / "repo"
    if clone.exists():
        raise SystemExit(f"--clone-into: {clone} exists; give a new folder (a fresh clone).")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    started, ended, events = run_demo(clone)
    finished = [e for e in events if e["event"] == "finished"][-1]
    outputs = {k: clone / v for k, v in finished["outputs"].items()}  # relative to the clone
    metrics = json.loads(outputs["metrics"].read_text(encoding="utf-8"))
    audit_path = outputs.get("reference_audit")
    audit = json.loads(audit_path.read_text(encoding="utf-8")) if audit_path else None
    document = {
        "command": "python3 scripts/benchmark_demo.py",
        "measures": "time scripts/demo.sh in a fresh clone",
        "date": date.today().isoformat(),
        "commit": commit,
        "machine": {"cpu_count": os.cpu_count(), "cpu": cpu_name()},
        "wall_seconds": round(ended - started, 1),
        "phases": phase_seconds(started, events, ended),
        "forget": sorted(i for i, role in metrics["roles"].items() if role == "forget"),
        "results": results(metrics),
        "summary": metrics.get("summary"),
        "audit": None if audit is None else (audit.get("verdict") or audit.get("reason")),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    partial = args.json.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    partial.replace(args.json)
    print(f"demo from a fresh clone: {document['wall_seconds'] / 60:.1f} min -> {args.json}")
    for phase in document["phases"]:
        print(f"  {phase['seconds']:7.1f} s  {phase['phase']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
