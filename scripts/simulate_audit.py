"""The audit design, measured: which score, the spreads, and both audits' error rates.

Usage:
    MACHINE_UNLEARNING_CACHE=/work/cache .venv/bin/python scripts/simulate_audit.py \\
        --cohort /work/lm-cohort [--recipe bench] [--seeds 0 1 2] [--extra-seeds 3] \\
        [--reps 2000] [--json docs/audit-design.json]

1. From the retrain cache (never trains): every training subject's scores under its
   leave-one-out retrains and under the originals at ``--seeds``; per feature the pooled seed
   SDs and each subject's separation ``(mean originals - mean retrains) / retrain SD``
   (oriented: + = member side). The audit's feature is the one whose smallest separation is
   largest (``evaluation/reference_audit.DEFAULT_FEATURE`` must agree; the script says so).
2. On real references: the verdict of the originals (seed 0: in the reference set) and of every
   cached model at ``--extra-seeds`` (an original there is an out-of-sample "do nothing", a
   leave-one-out retrain an out-of-sample "another retrain").
3. The old held-out audit (``evaluation/audit.py``), simulated from standard Gaussians as the
   issue describes it: the power of a "member" call at a true 3-SD shift with 5 never-seen
   subjects; the stopping rule (20 looks, first non-rejection) passing a model that stays at
   z = -4, for several epoch-to-epoch correlations; the coverage of the bootstrap AUC interval
   at 6 vs 5 subjects; the size of the exact permutation p-value that replaces it.
4. The new audit (``evaluation/reference_audit.py``), simulated from Gaussians with the measured
   spreads and separations: per subject the rate of each verdict for a do-nothing model and for
   a fresh retrain; the non-peeking stopping rule against a peeking one for a model whose
   every epoch sits just outside the margin (a valid certification says "forgotten" at most
   alpha of the time).

Every simulation is seeded (``--seed``); the JSON records the seeds and repetitions.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from datetime import date
from pathlib import Path

import numpy as np

FEATURES = ("dice", "loss", "logit_confidence", "confidence", "entropy")


def measured_references(cohort: str, config: dict, seeds: list[int]) -> dict:
    """Per feature: the references of every subject, the pooled spread, the separations."""
    from MachineUnlearningLib.commands.references import load_references
    from MachineUnlearningLib.evaluation.audit import FEATURE_DIRECTIONS
    from MachineUnlearningLib.runtime.events import CollectingSink

    bank = load_references(cohort, config, CollectingSink(), seeds=seeds, device="cpu")
    out = {"subjects": bank.subjects(), "missing": bank.missing, "features": {}}
    for feature in FEATURES:
        sign = 1.0 if FEATURE_DIRECTIONS[feature] == "higher" else -1.0
        spread = bank.spread(feature)
        rows = {}
        for subject in bank.subjects():
            refs = bank.references(subject, feature)
            gap = sign * (np.mean(refs.originals) - np.mean(refs.retrained))
            rows[subject] = {
                "retrained": list(refs.retrained),
                "originals": list(refs.originals),
                "separation_sds": float(gap / spread.retrained_sd),
            }
        separations = [r["separation_sds"] for r in rows.values()]
        out["features"][feature] = {
            "spread": spread.to_dict(),
            "subjects": rows,
            "min_separation_sds": min(separations),
            "median_separation_sds": float(np.median(separations)),
        }
    out["best_feature"] = max(
        out["features"], key=lambda f: out["features"][f]["min_separation_sds"]
    )
    return out, bank


def real_verdicts(cohort: str, config: dict, bank, extra_seeds: list[int]) -> dict:
    """Verdicts of real models: the seed-0 originals and any cached model at ``extra_seeds``."""
    from MachineUnlearningLib.commands.references import load_references
    from MachineUnlearningLib.evaluation.reference_audit import DEFAULT_FEATURE
    from MachineUnlearningLib.runtime.events import CollectingSink

    feature = DEFAULT_FEATURE
    rows = []
    seed0 = bank.originals[bank.seeds[0]]
    for subject in bank.subjects():
        v = bank.verdict(subject, bank.scores[seed0.path][subject][feature])
        rows.append(_row("do nothing (original, seed 0: in the reference set)", subject, 0, v))
    if extra_seeds:
        extra = load_references(cohort, config, CollectingSink(), seeds=extra_seeds, device="cpu")
        for seed, model in extra.originals.items():
            for subject in bank.subjects():
                value = extra.scores[model.path][subject][feature]
                what = f"do nothing (original, seed {seed}: not in the reference set)"
                rows.append(_row(what, subject, seed, bank.verdict(subject, value)))
        for (subject, seed), model in extra.retrains.items():
            if subject in bank.subjects():
                value = extra.scores[model.path][subject][feature]
                what = f"another retrain (seed {seed})"
                rows.append(_row(what, subject, seed, bank.verdict(subject, value)))
    return {"feature": feature, "rows": rows}


def _row(what: str, subject: str, seed: int, v) -> dict:
    return {
        "model": what,
        "subject": subject,
        "seed": seed,
        "value": v.value,
        "verdict": v.verdict,
        "gap_sds": v.gap_sds,
        "p_equivalence": v.p_equivalence,
        "log_likelihood_ratio": v.log_likelihood_ratio,
    }


# --------------------------------------------------------------------------- the old audit


def old_audit(reps: int, seed: int) -> dict:
    from MachineUnlearningLib.evaluation.audit import (
        SubjectSignals,
        bootstrap_auc_ci,
        verdict_for_subject,
    )
    from MachineUnlearningLib.evaluation.reference_audit import auc_permutation_p

    rng = np.random.default_rng(seed)

    def member_called(value: float, held: np.ndarray) -> bool:
        subject = SubjectSignals("x", "forget", loss=float(value))
        others = [SubjectSignals(f"h{i}", "held-out", loss=float(v)) for i, v in enumerate(held)]
        return verdict_for_subject(subject, others).verdict == "member"

    # power at a true 3-SD shift (loss lower = member), 5 never-seen subjects; the forget
    # subject's value is one draw from the shifted Gaussian
    power = np.mean([member_called(rng.normal(-3.0), rng.normal(size=5)) for _ in range(reps)])
    # the stopping rule: a model that stays at z = -4 is audited every epoch (20 looks) and
    # passes at the first non-rejection; epoch-to-epoch correlation rho of every value
    looks = 20
    stopping = {}
    for rho in (0.0, 0.5, 0.8, 0.95, 1.0):
        passed = 0
        for _ in range(reps // 4):
            common_h, common_x = rng.normal(size=5), rng.normal()
            for _ in range(looks):
                h = math.sqrt(rho) * common_h + math.sqrt(1 - rho) * rng.normal(size=5)
                x = -4.0 + math.sqrt(rho) * common_x + math.sqrt(1 - rho) * rng.normal()
                if not member_called(x, h):
                    passed += 1
                    break
        stopping[str(rho)] = passed / (reps // 4)
    one_look = np.mean(
        [not member_called(-4.0 + rng.normal(), rng.normal(size=5)) for _ in range(reps)]
    )
    # the bootstrap AUC interval at 6 members vs 5 non-members: how often it covers the truth
    coverage, size = {}, {}
    for shift in (0.0, 1.0, 2.0):
        truth = float(_phi(shift / math.sqrt(2.0)))
        hits = 0
        for k in range(reps // 4):
            m, h = rng.normal(shift, size=6), rng.normal(size=5)
            low, high = bootstrap_auc_ci(m, h, n_resamples=500, seed=k)
            hits += low <= truth <= high
        coverage[str(shift)] = hits / (reps // 4)
    null = [auc_permutation_p(rng.normal(size=6), rng.normal(size=5))[0] for _ in range(reps // 2)]
    size["rejections_at_0.05"] = float(np.mean(np.asarray(null) <= 0.05))
    return {
        "power_member_call_3sd_5_never_seen": float(power),
        "stopping_rule_do_nothing_z_minus_4_passes_within_20_looks": stopping,
        "stopping_rule_do_nothing_one_look_passes": float(one_look),
        "bootstrap_auc_ci_coverage_6_vs_5_nominal_0.95": coverage,
        "permutation_p_size_6_vs_5_null": size,
    }


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# --------------------------------------------------------------------------- the new audit


def new_audit(measured: dict, reps: int, seed: int) -> dict:
    """Verdict rates from Gaussians with the measured spreads (the audit's feature)."""
    from MachineUnlearningLib.evaluation.reference_audit import (
        DEFAULT_FEATURE,
        DEFAULT_MARGIN_SDS,
        ReferenceScores,
        closeness,
        pooled_spread,
        reference_verdict,
        split_seeds,
    )

    rng = np.random.default_rng(seed)
    info = measured["features"][DEFAULT_FEATURE]
    sd_out, sd_in = info["spread"]["retrained_sd"], info["spread"]["originals_sd"]
    separations = {s: r["separation_sds"] for s, r in info["subjects"].items()}
    subjects = list(separations)
    n_seeds = 3

    def draw_bank():
        """References for every subject (oriented, retrains' mean 0 in SD units)."""
        refs = {
            s: ReferenceScores(
                s,
                DEFAULT_FEATURE,
                tuple(rng.normal(0.0, sd_out, n_seeds)),
                tuple(rng.normal(g * sd_out, sd_in, n_seeds)),
                tuple(range(n_seeds)),
                tuple(range(n_seeds)),
            )
            for s, g in separations.items()
        }
        return refs, pooled_spread(list(refs.values()))

    verdicts = ("forgotten", "still remembered", "over-forgotten", "not auditable")
    counts = {
        what: {s: dict.fromkeys(verdicts, 0) for s in subjects}
        for what in ("do_nothing", "retrain")
    }
    for _ in range(reps):
        refs, spread = draw_bank()
        for s, g in separations.items():
            nothing = rng.normal(g * sd_out, sd_in)
            retrain = rng.normal(0.0, sd_out)
            counts["do_nothing"][s][reference_verdict(nothing, refs[s], spread).verdict] += 1
            counts["retrain"][s][reference_verdict(retrain, refs[s], spread).verdict] += 1
    rates = {
        what: {s: {v: c / reps for v, c in per.items()} for s, per in table.items()}
        for what, table in counts.items()
    }

    # the stopping rule at the null boundary: every epoch's model sits at or just beyond the
    # margin (so none is truly equivalent); 20 looks; choose the epoch closest to the
    # selection references, then certify
    selection, certification = split_seeds(range(n_seeds))
    looks = 20
    forgotten = {"choose_and_certify_with_the_same_seeds": 0, "disjoint_seeds": 0}
    for _ in range(reps):
        refs, spread = draw_bank()
        s = subjects[0]
        scores = DEFAULT_MARGIN_SDS * sd_out + np.abs(rng.normal(0.0, 0.5 * sd_out, looks))
        same = min(scores, key=lambda x: closeness(x, refs[s], spread))
        if reference_verdict(same, refs[s], spread).verdict == "forgotten":
            forgotten["choose_and_certify_with_the_same_seeds"] += 1
        chosen_refs = refs[s].only_seeds(selection)
        disjoint = min(scores, key=lambda x: closeness(x, chosen_refs, spread))
        verdict = reference_verdict(disjoint, refs[s].only_seeds(certification), spread)
        if verdict.verdict == "forgotten":
            forgotten["disjoint_seeds"] += 1
    return {
        "feature": DEFAULT_FEATURE,
        "seed_sd_retrained": sd_out,
        "seed_sd_originals": sd_in,
        "separations_sds": separations,
        "margin_sds": DEFAULT_MARGIN_SDS,
        "reference_seeds": n_seeds,
        "verdict_rates": rates,
        "false_forgotten_do_nothing_max": max(r["forgotten"] for r in rates["do_nothing"].values()),
        "power_retrain_min": min(r["forgotten"] for r in rates["retrain"].values()),
        "stopping_rule_null_boundary_forgotten_rate": {k: v / reps for k, v in forgotten.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--recipe", default="bench")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[3])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("docs/audit-design.json"))
    args = parser.parse_args()

    from MachineUnlearningLib.evaluation.reference_audit import DEFAULT_FEATURE
    from MachineUnlearningLib.runtime.files import write_json

    config = {"recipe": args.recipe}
    measured, bank = measured_references(args.cohort, config, args.seeds)
    if measured["best_feature"] != DEFAULT_FEATURE:
        print(
            f"note: the best-separating feature here is {measured['best_feature']}, the audit's "
            f"default is {DEFAULT_FEATURE}",
            file=sys.stderr,
        )
    document = {
        "date": date.today().isoformat(),
        "command": shlex.join(["scripts/simulate_audit.py", *sys.argv[1:]]),
        "recipe": args.recipe,
        "seeds": args.seeds,
        "reps": args.reps,
        "simulation_seed": args.seed,
        "measured": measured,
        "real_verdicts": real_verdicts(args.cohort, config, bank, args.extra_seeds),
        "old_audit": old_audit(args.reps, args.seed),
        "new_audit": new_audit(measured, args.reps, args.seed + 1),
    }
    write_json(args.json, document)
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
