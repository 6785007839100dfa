"""Equal-budget hyper-parameter search for the protocol: tune on one (subject, seed), report on
the other subjects (Deep Unlearn's set-up, xcadet/deepunlearn: the same number of trials per
method, the objective is closeness to the retrained models).

Usage:
    .venv/bin/python scripts/tune_protocol.py --cohort /work/lm-cohort --recipe bench \\
        --tune-subject 070 --tune-seed 0 --seeds 0 1 2 [--retrain-seeds 0 1 2] \\
        --work protocol-runs \\
        --method "scrub=scrub" --trial scrub="--param learning_rate=1e-3" ... \\
        [--label ...] --json docs/benchmarks-protocol-tuned.json

1. Every ``--trial NAME=OPTIONS`` (the method NAME's unlearn options, appended to its own) is one
   trial; every method gets the same number of trials (checked: the equal budget), its default
   (no options) among them. Each trial runs the protocol (``benchmark_protocol.run_protocol``)
   on the tuning pair only and is scored by :func:`objective`.
2. Each method's trial with the lowest objective is then run through
   ``benchmark_protocol.py`` on every *other* training subject at ``--seeds`` (the tuning
   subject is left out of what is reported), into ``--json``; the trials and their objectives
   go into that JSON's ``tuning`` entry, which ``scripts/render_benchmarks.py`` shows.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

RETAIN_BAND_PCT = 2.0  # the goal: retain and held-out kept >= 98 %


def objective(pair: dict) -> float:
    """Distance of one (subject, seed) result from a retrain, each term 1 at the goal's edge:
    |forget gap| / tau (the noise floor) + |retain kept - 100 %| / 2 % + |held-out kept -
    100 %| / 2 % + (0 if the audit says "forgotten", else 1). Lower is better; a pair that
    meets every part of the goal scores below 3."""
    forget = abs(pair["forget_gap"]) / pair["tau"]
    retain = abs(pair["retain_kept_pct"] - 100) / RETAIN_BAND_PCT
    held = pair["held_out_kept_pct"]
    held_term = 0.0 if held is None else abs(held - 100) / RETAIN_BAND_PCT
    return forget + retain + held_term + (0.0 if pair["audit"] == "forgotten" else 1.0)


def check_equal_budget(trials: list[tuple[str, list[str]]], methods: list[str]) -> int:
    """The number of trials per method; SystemExit when methods got different numbers."""
    counts = Counter(name for name, _ in trials)
    unknown = sorted(set(counts) - set(methods))
    if unknown:
        raise SystemExit(f"--trial names unknown method(s) {unknown}; --method gives {methods}")
    sizes = {counts.get(m, 0) + 1 for m in methods}  # + the default
    if len(sizes) != 1:
        raise SystemExit(f"unequal budgets: trials per method (default included) {dict(counts)}")
    return sizes.pop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--recipe", default="bench")
    parser.add_argument("--tune-subject", required=True)
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--retrain-seeds", type=int, nargs="+", default=[0, 1, 2],
        help="the references, for the trials and the report (benchmark_protocol.py's default)",
    )  # fmt: skip
    parser.add_argument("--method", action="append", default=[], required=True)
    parser.add_argument("--trial", action="append", default=[], metavar="NAME=OPTIONS")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("protocol-runs"))
    parser.add_argument("--label", default="")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    import benchmark_protocol as protocol  # scripts/ is on sys.path when this runs as a script

    from MachineUnlearningLib.commands.retrains import training_subjects

    methods = protocol.parse_methods(args.method)
    trials = [(n.strip(), shlex.split(o)) for n, _, o in (t.partition("=") for t in args.trial)]
    budget = check_equal_budget(trials, [m[0] for m in methods])
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    config = {"recipe": args.recipe}
    tried = []
    for name, strategy, options in methods:
        for extra in [[], *(o for n, o in trials if n == name)]:
            label = f"{name} {shlex.join(extra)}".strip()
            # the default trial is the method's own protocol run (reused from --work if there)
            tag = "-".join(w.replace("=", "") for w in extra if "=" in w)
            run_name = f"{name}-trial-{tag}" if extra else name
            result = protocol.run_protocol(
                args.cohort, config, [args.tune_subject], [args.tune_seed],
                args.retrain_seeds, [(run_name, strategy, [*options, *extra])],
                args.work, args.threads, "cpu", protocol.QuietSink(log), log,
            )  # fmt: skip
            pair = result["pairs"][run_name][0]
            tried.append(
                {
                    "method": name,
                    "options": [*options, *extra],
                    "label": label,
                    "objective": objective(pair),
                    **{k: pair[k] for k in ("forget_gap", "tau", "retain_kept_pct")},
                    "held_out_kept_pct": pair["held_out_kept_pct"],
                    "audit": pair["audit"],
                }
            )
            log(f"trial {label}: objective {tried[-1]['objective']:.2f}")
    chosen = {}
    for name, strategy, _ in methods:
        best = min((t for t in tried if t["method"] == name), key=lambda t: t["objective"])
        # a default that wins keeps its name, so its protocol runs in --work are reused
        row = name if best["options"] == options else f"{name}-tuned"
        chosen[name] = f"{row}={strategy} {shlex.join(best['options'])}".strip()
    others = [s for s in training_subjects(args.cohort) if s != args.tune_subject]
    report_argv = [
        "--cohort", args.cohort, "--recipe", args.recipe, "--subjects", *others,
        "--seeds", *map(str, args.seeds), "--retrain-seeds", *map(str, args.retrain_seeds),
        "--threads", str(args.threads),
        "--work", str(args.work), "--label", args.label, "--json", str(args.json),
    ]  # fmt: skip
    for spec in chosen.values():
        report_argv += ["--method", spec]
    protocol.main(report_argv)
    document = json.loads(args.json.read_text(encoding="utf-8"))
    document["command"] = shlex.join(["scripts/tune_protocol.py", *(argv or sys.argv[1:])])
    document["tuning"] = {
        "subject": args.tune_subject,
        "seed": args.tune_seed,
        "trials_per_method": budget,
        "objective": objective.__doc__.split("\n\n")[0].replace("\n", " "),
        "trials": tried,
        "chosen": chosen,
    }
    from MachineUnlearningLib.runtime.files import write_json

    write_json(args.json, document)
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
