"""The unlearning protocol: every forget subject, several seeds, against its own retrains.

Usage:
    .venv/bin/python scripts/benchmark_protocol.py --cohort /work/lm-cohort --recipe bench \\
        [--set KEY=VALUE ...] [--subjects 1 4 ...] [--seeds 0 1 2] [--retrain-seeds 0 1 2] \\
        [--method "NAME=STRATEGY [unlearn options]" ...] [--threads 2] [--work protocol-runs] \\
        [--label "slice: ..."] [--json docs/benchmarks-protocol.json]

For every forget subject s (default: every training subject) and every seed k, through the
engine's retrain cache (``commands/retrains.py``: nothing is retrained that is already there):

- the original O_k: the recipe on every training subject at seed k;
- the subject's leave-one-out retrains R_{s,j}, one per ``--retrain-seeds`` seed j;
- the reference of seed k: the retrains at the *other* seeds, {R_{s,j} : j != k};
- one candidate model per row: "do nothing" is O_k itself; "another retrain" is R_{s,k} (a
  model that never saw s, compared with retrains at other seeds: the noise floor); each
  ``--method NAME=STRATEGY [OPTIONS]`` row is ``machine-unlearning unlearn`` (a real CLI
  subprocess, ``OMP_NUM_THREADS`` = ``--threads``) from O_k forgetting s with ``--seed k``
  and OPTIONS appended (so a budget such as ``--epochs 5`` given there wins; every row's
  method, options and the strategy's resolved parameters are recorded in the JSON).

Every candidate and reference model is scored on every subject (``score_models``: mean
foreground Dice, and the mean logit-scaled true-class confidence over foreground voxels).
Per (s, k) pair and row:

- forget gap: Dice_s(candidate) - mean_j Dice_s(R_{s,j}), reference seeds only (signed:
  negative = forgot more than a retrain does);
- retain kept %: the candidate's mean Dice over the other training subjects / the same mean
  under the reference retrains x 100; held-out kept %: the same over the held-out subjects;
- success: |forget gap| <= the noise floor tau_k (:func:`noise_floor`), a 95 % prediction
  band of one more retrain around the mean of m reference retrains: tau_k = t(0.975, df) x
  sigma_k x sqrt(1 + 1/m), where sigma_k^2 pools, over *every* training subject u, the
  variance of u's forget Dice across its retrains at the seeds != k (df = the pooled degrees
  of freedom). Under exchangeable seeds a new retrain falls inside with probability 0.95, so
  "another retrain" should succeed about 95 % of the time; sigma_k never uses R_{s,k}, so that
  row is not inside by construction;
- RTE: the training-loop seconds of the retrains R_{s,j} (mean, from the cache's
  ``training.json``; a retrain evaluates nothing inside its loop) / the unlearning run's
  training-loop seconds without the evaluations inside it (its checkpoint's
  ``training_history``: ``seconds`` - ``evaluation_seconds``); the unlearning runs use
  ``--threads`` torch threads, the thread count the cache's retrains were trained with.

Per row over all pairs: mean and 95 % percentile bootstrap interval of the forget gap, retain
kept and held-out kept (:func:`bootstrap_interval`: subjects resampled with replacement, then
seeds within each drawn subject); success rate with its Clopper-Pearson interval
(:func:`clopper_pearson`); RTE; and the NeurIPS-2023 forgetting score (:func:`forget_score`,
google-deepmind/unlearning_evaluation ``metric.py``) with the candidates over the seeds as the
"unlearned" models and the subject's retrains as the "retrained" ones, one forget example per
subject; its resolution at the N models available is stated in the JSON.

The audit column comes from :func:`audit_verdict`: the engine's per-subject audit against the
subject's own references (``evaluation/reference_audit.py``: its default feature, margin and
alpha), with the retrains at the seeds other than the candidate's and the originals at every
protocol seed (so a "do nothing" candidate is one of its own originals), the seed spread pooled
over every training subject.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

DO_NOTHING = "do nothing"
ANOTHER_RETRAIN = "another retrain"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

# The NeurIPS 2023 metric's constants (google-deepmind/unlearning_evaluation, metric.py)
NEURIPS_DELTA = 1e-5
NEURIPS_EPSILON_CAP = 50.0
NEURIPS_BUCKET = 0.5


# --------------------------------------------------------------------------- statistics


def bootstrap_interval(
    values: dict[str, dict[int, float]],
    level: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval of per-(subject, seed) values.

    Args:
        values: ``{subject: {seed: value}}``.
    Returns:
        (mean over every pair, low, high). One draw resamples the subjects with replacement,
        then, within each drawn subject, its seeds with replacement, and averages the pairs.
        With a single pair the interval is that value.
    """
    pairs = [v for by_seed in values.values() for v in by_seed.values()]
    if not pairs:
        raise ValueError("bootstrap_interval: no values")
    mean = statistics.fmean(pairs)
    subjects = [list(by_seed.values()) for by_seed in values.values() if by_seed]
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        drawn = []
        for subject in rng.choices(subjects, k=len(subjects)):
            drawn += rng.choices(subject, k=len(subject))
        draws.append(statistics.fmean(drawn))
    draws.sort()
    tail = (1 - level) / 2
    return mean, _quantile(draws, tail), _quantile(draws, 1 - tail)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def clopper_pearson(successes: int, trials: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion."""
    from scipy.stats import beta

    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"clopper_pearson: {successes} of {trials}")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    )
    return low, high


def noise_floor(
    retrain_dice: dict[str, dict[int, float]], seed: int, level: float = CONFIDENCE
) -> dict:
    """The success band tau for candidates at ``seed`` (see the module docstring).

    Args:
        retrain_dice: ``{subject: {retrain seed: that retrain's Dice on the subject}}`` for
            every training subject.
        seed: the candidate's seed; retrains at this seed are left out.
    Returns:
        ``{"tau", "sigma", "df", "m", "t"}``; tau is None when there are no degrees of freedom.
    """
    from scipy.stats import t as student_t

    squares, df, sizes = 0.0, 0, []
    for by_seed in retrain_dice.values():
        kept = [v for s, v in by_seed.items() if s != seed]
        if len(kept) >= 2:
            squares += statistics.variance(kept) * (len(kept) - 1)
            df += len(kept) - 1
        sizes.append(len(kept))
    m = min(sizes) if sizes else 0
    if df == 0 or m == 0:
        return {"tau": None, "sigma": None, "df": df, "m": m, "t": None}
    sigma = math.sqrt(squares / df)
    t = float(student_t.ppf(1 - (1 - level) / 2, df))
    return {"tau": t * sigma * math.sqrt(1 + 1 / m), "sigma": sigma, "df": df, "m": m, "t": t}


def is_success(forget_gap: float, floor: dict) -> bool | None:
    """Forget Dice within the noise floor: ``|forget gap| <= tau``; None without a tau."""
    return None if floor["tau"] is None else abs(forget_gap) <= floor["tau"]


def retrain_time_efficiency(retrain_loop_seconds: Sequence[float], unlearn_loop_seconds: float):
    """RTE = mean retrain training-loop seconds / unlearning training-loop seconds."""
    if not retrain_loop_seconds or not unlearn_loop_seconds:
        return None
    return statistics.fmean(retrain_loop_seconds) / unlearn_loop_seconds


def neurips_epsilon(positive: Sequence[float], negative: Sequence[float]) -> float:
    """The per-example epsilon of the NeurIPS 2023 metric for two sets of model confidences.

    As in ``_get_epsilons`` of google-deepmind/unlearning_evaluation/metric.py: epsilon is the
    largest ``max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))`` (clipped
    at 0) over a single-threshold rule (predict "positive" at or above it; positive = the set
    with the larger median) and a two-threshold rule (predict the peakier set inside an
    interval); a rule with FPR = FNR = 0 gives infinity, a rule with only one of them 0 is
    discarded; a set whose spread is under 1 % of the other's gives the cap. Difference: the
    source scans a grid of 100 thresholds per unit of confidence with intervals of one width;
    with N <= a few models per set we take every threshold between distinct values and every
    interval between them, which can only find a larger epsilon (a stricter score).
    """
    pos, neg = [float(v) for v in positive], [float(v) for v in negative]
    pos_spread, neg_spread = max(pos) - min(pos), max(neg) - min(neg)
    largest, smallest = max(pos_spread, neg_spread), min(pos_spread, neg_spread)
    if largest == 0:
        return 0.0 if statistics.median(pos) == statistics.median(neg) else NEURIPS_EPSILON_CAP
    if smallest / largest < 0.01:
        return NEURIPS_EPSILON_CAP
    cuts = sorted(set(pos + neg))
    edges = (
        [cuts[0] - 1.0]
        + [(a + b) / 2 for a, b in zip(cuts, cuts[1:], strict=False)]
        + [cuts[-1] + 1.0]
    )
    rules = [lambda c, e=e: c >= e for e in edges]
    peaky, other = (pos, neg) if pos_spread <= neg_spread else (neg, pos)
    rules_peaky = [lambda c, lo=lo, hi=hi: lo <= c <= hi for lo in cuts for hi in cuts if lo <= hi]
    best = None
    for family, (p_set, n_set) in ((rules, (pos, neg)), (rules_peaky, (peaky, other))):
        for rule in family:
            tpr = sum(map(rule, p_set)) / len(p_set)
            fpr = sum(map(rule, n_set)) / len(n_set)
            fnr, tnr = 1 - tpr, 1 - fpr
            if fpr + fnr == 0 and tpr + tnr == 2:
                return min(math.inf, NEURIPS_EPSILON_CAP)
            if fpr * fnr == 0:
                continue
            terms = [
                math.log(x) - math.log(y)
                for x, y in ((1 - NEURIPS_DELTA - fpr, fnr), (1 - NEURIPS_DELTA - fnr, fpr))
                if x > 0
            ]
            if terms:
                value = max(0.0, max(terms))
                best = value if best is None else max(best, value)
    return min(best or 0.0, NEURIPS_EPSILON_CAP)


def neurips_points(epsilon: float, models: int) -> float:
    """Points for one example: 1 below epsilon 0.5, halved per further 0.5, 0 beyond the
    largest epsilon ``models`` models can resolve, ``ceil(ln(models - 1))`` (metric.py)."""
    top = math.ceil(math.log(models - 1)) if models > 1 else 0
    start, points = 0.0, 1.0
    while start + NEURIPS_BUCKET <= top:
        if epsilon < start + NEURIPS_BUCKET:
            return points
        start, points = start + NEURIPS_BUCKET, points / 2
    return 0.0


def forget_score(unlearned: dict[str, list[float]], retrained: dict[str, list[float]]) -> dict:
    """The NeurIPS 2023 forgetting score over subjects (one forget example per subject).

    Args:
        unlearned, retrained: ``{subject: [confidence under each model]}``.
    Returns:
        ``{"score", "models", "epsilons", "resolution"}``; score None when fewer than 3
        models per side (the metric's bucket formula then has no bucket).
    """
    models = min(min(map(len, unlearned.values())), min(map(len, retrained.values())))
    top = math.ceil(math.log(models - 1)) if models > 1 else 0
    levels = [1.0 / 2**i for i in range(int(top / NEURIPS_BUCKET))] + [0.0]
    resolution = (
        f"N = {models} models per side: largest resolvable epsilon ceil(ln(N-1)) = {top}; "
        f"points per subject in {{{', '.join(f'{v:g}' for v in levels)}}}"
    )
    if top == 0:
        return {"score": None, "models": models, "epsilons": {}, "resolution": resolution}
    epsilons = {}
    for subject, confs in unlearned.items():
        ref = retrained[subject]
        retrain_is_positive = statistics.median(ref) > statistics.median(confs)
        pos, neg = (ref, confs) if retrain_is_positive else (confs, ref)
        epsilons[subject] = neurips_epsilon(pos, neg)
    score = statistics.fmean(neurips_points(e, models) for e in epsilons.values())
    return {"score": score, "models": models, "epsilons": epsilons, "resolution": resolution}


def audit_verdict(value: float, reference, spread) -> str:
    """The audit hook: the engine's per-subject audit against the subject's own references.

    ``evaluation/reference_audit.reference_verdict`` (issue 11): ``value`` is the candidate's
    score on the forget subject, ``reference`` its ``ReferenceScores`` (the retrains at the
    seeds other than the candidate's, the originals at every protocol seed), ``spread`` the
    ``SeedSpread`` pooled over every training subject on the same seeds; the engine's default
    feature, margin and alpha.
    """
    from MachineUnlearningLib.evaluation.reference_audit import reference_verdict

    return reference_verdict(value, reference, spread).verdict


def audit_references(
    feature: str,
    retrained: dict[str, dict[int, float]],
    originals: dict[str, dict[int, float]],
    seed: int,
):
    """Per subject ``ReferenceScores`` leaving out the retrain at ``seed``, and their spread.

    Args:
        retrained: ``{subject: {retrain seed: the subject's own retrain's value}}``.
        originals: ``{subject: {seed: the original's value on the subject}}``.
    """
    from MachineUnlearningLib.evaluation.reference_audit import ReferenceScores, pooled_spread

    references = {}
    for subject, by_seed in retrained.items():
        kept = sorted(j for j in by_seed if j != seed)
        seeds = sorted(originals[subject])
        references[subject] = ReferenceScores(
            subject,
            feature,
            tuple(by_seed[j] for j in kept),
            tuple(originals[subject][i] for i in seeds),
            tuple(kept),
            tuple(seeds),
        )
    return references, pooled_spread(list(references.values()))


def rescore_audit(document: dict) -> dict:
    """``document`` (a protocol JSON) with every pair's audit verdict and every row's counts
    recomputed by today's ``reference_verdict`` from the scores the document records.

    The audit's inputs are all in the document when its feature is Dice: the subjects' own
    retrains (``retrain_dice``), the originals (the "do nothing" row's forget Dice, one per
    training subject and seed) and each candidate's forget Dice. Raises ValueError (naming what
    is missing) when the document does not record them all, e.g. a slice over some subjects.
    """
    if document.get("audit_feature") != "dice":
        raise ValueError(f"audit_feature is {document.get('audit_feature')!r}; only 'dice' "
                         "is recorded per pair")  # fmt: skip
    seeds, training = document["seeds"], document["training_subjects"]
    nothing = {(p["subject"], p["seed"]): p["forget_dice"] for p in document["pairs"][DO_NOTHING]}
    missing = [f"{u} at seed {k}" for u in training for k in seeds if (u, k) not in nothing]
    if missing or set(document["retrain_dice"]) != set(training):
        raise ValueError(
            "the originals' or the retrains' scores are not recorded for every training "
            f"subject (missing originals: {', '.join(missing) or 'none'})"
        )
    retrained = {u: {int(j): v for j, v in d.items()} for u, d in document["retrain_dice"].items()}
    originals = {u: {k: nothing[(u, k)] for k in seeds} for u in training}
    audits = {k: audit_references("dice", retrained, originals, k) for k in seeds}
    out = copy.deepcopy(document)
    for pairs in out["pairs"].values():
        for pair in pairs:
            references, spread = audits[pair["seed"]]
            pair["audit"] = audit_verdict(pair["forget_dice"], references[pair["subject"]], spread)
    for row in out["rows"]:
        row["audit"] = audit_counts(out["pairs"][row["name"]])
    return out


# --------------------------------------------------------------------------- runs


def parse_methods(items: list[str]) -> list[tuple[str, str, list[str]]]:
    """``NAME=STRATEGY [OPTIONS]`` -> (name, strategy, options)."""
    methods = []
    for item in items:
        name, _, spec = item.partition("=")
        words = shlex.split(spec)
        if not name or not words or name in (DO_NOTHING, ANOTHER_RETRAIN):
            raise SystemExit(f"--method {item!r}: expected NAME=STRATEGY [OPTIONS]")
        methods.append((name.strip(), words[0], words[1:]))
    return methods


def run_unlearning(
    cohort: str,
    checkpoint: Path,
    subject: str,
    seed: int,
    strategy: str,
    options: list[str],
    output: Path,
    threads: int,
    device: str,
) -> dict:
    """One ``machine-unlearning unlearn`` subprocess (reused when its output is complete)."""
    import torch

    model = output / "unlearned.pt"
    reused = model.exists()
    if not reused:
        command = [
            sys.executable, "-m", "MachineUnlearningLib", "unlearn", "--cohort", cohort,
            "--checkpoint", str(checkpoint), "--forget", subject, "--strategy", strategy,
            "--seed", str(seed), "--device", device, *options, "--output", str(output),
        ]  # fmt: skip
        started = time.monotonic()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"unlearn {strategy} for {subject} seed {seed} failed")
        print(f"    {strategy}: {time.monotonic() - started:.0f} s wall", file=sys.stderr)
    entry = torch.load(model, map_location="cpu", weights_only=True)["metadata"][
        "training_history"
    ][-1]
    epochs = entry.get("epochs")
    seconds, evaluating = entry.get("seconds"), entry.get("evaluation_seconds")
    return {
        "path": model,
        # the loop without its evaluations (checkpoints written before the engine recorded
        # evaluation_seconds give the loop with them)
        "loop_seconds": seconds if evaluating is None else round(seconds - evaluating, 2),
        "evaluation_seconds": evaluating,
        "steps": entry.get("steps"),
        "epochs": len(epochs) if isinstance(epochs, list) else epochs,
        "params": entry.get("params"),
        "reused": reused,
    }


def pair_metrics(
    candidate: dict[str, dict],
    references: list[dict[str, dict]],
    subject: str,
    retain: list[str],
    held_out: list[str],
) -> dict:
    """Forget gap, retain kept % and held-out kept % of one candidate against its references.

    Args:
        candidate, references: ``{subject id: {"dice", "logit_confidence", ...}}`` scores.
    """

    def mean_dice(scores: dict[str, dict], ids: list[str]) -> float:
        return statistics.fmean(scores[i]["dice"] for i in ids)

    ref_forget = statistics.fmean(r[subject]["dice"] for r in references)
    ref_retain = statistics.fmean(mean_dice(r, retain) for r in references)
    ref_held = statistics.fmean(mean_dice(r, held_out) for r in references) if held_out else None
    return {
        "forget_dice": candidate[subject]["dice"],
        "reference_forget_dice": ref_forget,
        "forget_gap": candidate[subject]["dice"] - ref_forget,
        "retain_kept_pct": 100 * mean_dice(candidate, retain) / ref_retain,
        "held_out_kept_pct": (
            100 * mean_dice(candidate, held_out) / ref_held if held_out else None
        ),
        "logit_confidence": candidate[subject].get("logit_confidence"),
    }


def summarise_row(pairs: list[dict], floors: dict[int, dict]) -> dict:
    """Per-row statistics over its (subject, seed) pairs (the rendered table's cells)."""

    def by_subject(key: str) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for p in pairs:
            if p[key] is not None:
                out.setdefault(p["subject"], {})[p["seed"]] = p[key]
        return out

    summary = {}
    for key in ("forget_gap", "retain_kept_pct", "held_out_kept_pct"):
        values = by_subject(key)
        summary[key] = list(bootstrap_interval(values)) if values else None
    judged = [p for p in pairs if p["success"] is not None]
    wins = sum(p["success"] for p in judged)
    summary["success"] = {
        "successes": wins,
        "trials": len(judged),
        "rate": wins / len(judged) if judged else None,
        "interval": list(clopper_pearson(wins, len(judged))) if judged else None,
    }
    loops = [p["loop_seconds"] for p in pairs if p.get("loop_seconds")]
    retrains = [s for p in pairs if p.get("loop_seconds") for s in p["retrain_loop_seconds"]]
    summary["loop_seconds_mean"] = statistics.fmean(loops) if loops else None
    summary["rte"] = retrain_time_efficiency(retrains, statistics.fmean(loops)) if loops else None
    summary["audit"] = audit_counts(pairs)
    return summary


def audit_counts(pairs: list[dict]) -> dict[str, int]:
    """``{verdict: number of pairs}`` over a row's pairs."""
    verdicts = [p["audit"] for p in pairs]
    return {v: verdicts.count(v) for v in sorted(set(verdicts))}


def run_protocol(
    cohort: str,
    config: dict,
    subjects: list[str],
    seeds: list[int],
    retrain_seeds: list[int],
    methods: list[tuple[str, str, list[str]]],
    work: Path,
    threads: int,
    device: str,
    sink,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict:
    """Every row for every (subject, seed); the JSON document's ``rows`` and ``pairs``."""
    from MachineUnlearningLib.commands.retrains import (
        CachedModel,
        RetrainRequest,
        leave_one_out,
        originals,
        score_models,
        training_subjects,
    )
    from MachineUnlearningLib.data.cohort import HELD_OUT_GROUP, discover_cohort

    training = training_subjects(cohort)
    held_out = [s.subject_id for s in discover_cohort(cohort) if s.group == HELD_OUT_GROUP]
    everyone = training + held_out
    log(f"originals at seeds {seeds}; leave-one-out retrains at seeds {retrain_seeds}")
    origin = originals(cohort, config, seeds, sink, device)
    retrains = leave_one_out(cohort, config, training, retrain_seeds, sink, device)
    # every subject's own retrains on that subject: the noise floor's spread
    own = {
        u: score_models([retrains[(u, j)] for j in retrain_seeds], cohort, [u], device)
        for u in training
    }
    retrain_dice = {
        u: {j: own[u][retrains[(u, j)].path][u]["dice"] for j in retrain_seeds} for u in training
    }
    floors = {k: noise_floor(retrain_dice, k) for k in seeds}
    from MachineUnlearningLib.evaluation.reference_audit import DEFAULT_FEATURE

    original_scores = score_models(list(origin.values()), cohort, training, device)
    audits = {
        k: audit_references(
            DEFAULT_FEATURE,
            {
                u: {j: own[u][retrains[(u, j)].path][u][DEFAULT_FEATURE] for j in retrain_seeds}
                for u in training
            },
            {u: {i: original_scores[m.path][u][DEFAULT_FEATURE] for i, m in origin.items()}
             for u in training},
            k,
        )
        for k in seeds
    }  # fmt: skip
    names = [DO_NOTHING, ANOTHER_RETRAIN, *(m[0] for m in methods)]
    pairs: dict[str, list[dict]] = {name: [] for name in names}
    confidences: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    retrain_conf: dict[str, list[float]] = {}
    for subject in subjects:
        mine = [retrains[(subject, j)] for j in retrain_seeds]
        scores = score_models([*mine, *origin.values()], cohort, everyone, device)
        retrain_conf[subject] = [scores[m.path][subject]["logit_confidence"] for m in mine]
        retain = [i for i in training if i != subject]
        loop_seconds = [m.training_seconds for m in mine if m.training_seconds]
        for seed in seeds:
            log(f"subject {subject}, seed {seed}")
            references = [scores[retrains[(subject, j)].path] for j in retrain_seeds if j != seed]
            candidates: dict[str, tuple[dict, dict]] = {
                DO_NOTHING: (scores[origin[seed].path], {}),
            }
            if seed in retrain_seeds:
                candidates[ANOTHER_RETRAIN] = (scores[retrains[(subject, seed)].path], {})
            for name, strategy, options in methods:
                run = run_unlearning(
                    cohort, origin[seed].path, subject, seed, strategy, options,
                    work / f"{name}-{subject}-seed{seed}", threads, device,
                )  # fmt: skip
                request = RetrainRequest(cohort, config, tuple(retain), seed, (subject,))
                got = score_models(
                    [CachedModel(run["path"], request, True)], cohort, everyone, device
                )[run["path"]]
                candidates[name] = (got, run)
            for name, (candidate, run) in candidates.items():
                metrics = pair_metrics(candidate, references, subject, retain, held_out)
                pairs[name].append(
                    {
                        "subject": subject,
                        "seed": seed,
                        **metrics,
                        "success": is_success(metrics["forget_gap"], floors[seed]),
                        "tau": floors[seed]["tau"],
                        "loop_seconds": run.get("loop_seconds"),
                        "steps": run.get("steps"),
                        "reused_run": run.get("reused"),
                        "params": run.get("params"),
                        "retrain_loop_seconds": loop_seconds,
                        "rte": retrain_time_efficiency(loop_seconds, run.get("loop_seconds")),
                        "audit": audit_verdict(
                            candidate[subject][DEFAULT_FEATURE],
                            audits[seed][0][subject],
                            audits[seed][1],
                        ),
                    }
                )
                confidences[name].setdefault(subject, []).append(metrics["logit_confidence"])
    rows = []
    for name in names:
        if not pairs[name]:
            continue
        method = next((m for m in methods if m[0] == name), None)
        summary = summarise_row(pairs[name], floors)
        if name == ANOTHER_RETRAIN:
            score = {
                "score": None,
                "reason": "its models are the reference retrains themselves; a score needs a "
                "second, disjoint set of retrains per subject",
            }
        else:
            score = forget_score(confidences[name], retrain_conf)
            held = [p["held_out_kept_pct"] for p in pairs[name] if p["held_out_kept_pct"]]
            kept = [p["retain_kept_pct"] for p in pairs[name]]
            if score["score"] is not None and held:
                # the metric's utility adjustment, accuracies -> mean Dice ratios
                score["final"] = (
                    score["score"] * statistics.fmean(kept) / 100 * statistics.fmean(held) / 100
                )
        rows.append(
            {
                "name": name,
                "strategy": method[1] if method else None,
                "options": method[2] if method else [],
                **summary,
                "neurips": score,
            }
        )
    return {
        "audit_feature": DEFAULT_FEATURE,
        "training_subjects": training,
        "held_out_subjects": held_out,
        "retrain_dice": {u: {str(j): v for j, v in d.items()} for u, d in retrain_dice.items()},
        "noise_floor": {str(k): v for k, v in floors.items()},
        "rows": rows,
        "pairs": {name: p for name, p in pairs.items() if p},
    }


class QuietSink:
    """Only phases and warnings from the engine (not every step)."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def emit(self, event: str, **fields) -> None:
        if event in ("phase", "warning"):
            kind = event
            self.log(f"  [{kind}] {fields.get('name', '')} {fields.get('detail', '')}"
                     f"{fields.get('message', '')}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--recipe", default="bench")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--subjects", nargs="+", help="forget subjects (default: all training)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME=STRATEGY [OPTIONS]",
        help="a method row: unlearn options after the strategy's defaults (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads per unlearn run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("protocol-runs"))
    parser.add_argument("--label", default="", help="what this run is (e.g. a slice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from MachineUnlearningLib.app.cli import _key_values
    from MachineUnlearningLib.commands.retrains import training_subjects
    from MachineUnlearningLib.runtime.files import write_json

    config = {"recipe": args.recipe, **_key_values(args.set, "--set")}
    subjects = args.subjects or training_subjects(args.cohort)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before, started = os.getloadavg()[0], time.monotonic()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result = run_protocol(
        args.cohort, config, subjects, args.seeds, args.retrain_seeds, parse_methods(args.method),
        args.work, args.threads, args.device, QuietSink(log), log,
    )  # fmt: skip
    import torch

    document = {
        "label": args.label,
        "command": shlex.join(["scripts/benchmark_protocol.py", *(argv or sys.argv[1:])]),
        "date": date.today().isoformat(),
        "config": config,
        "subjects": subjects,
        "seeds": args.seeds,
        "retrain_seeds": args.retrain_seeds,
        "methods": args.method,
        "threads": args.threads,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "wall_seconds": round(time.monotonic() - started, 1),
        },
        "definitions": DEFINITIONS,
        **result,
    }
    if args.json:
        write_json(args.json, document)
        log(f"wrote {args.json}")


DEFINITIONS = {
    "reference": "for a candidate at seed k: the subject's leave-one-out retrains at the "
    "other retrain seeds",
    "forget_gap": "candidate's forget Dice minus the reference retrains' mean forget Dice",
    "kept": "candidate's mean Dice over the retain (other training) or held-out subjects / "
    "the reference retrains' mean of the same, in %",
    "success": "|forget gap| <= tau_k = t(0.975, df) x sigma_k x sqrt(1 + 1/m): sigma_k pools "
    "every training subject's retrain forget-Dice variance over the seeds != k, m reference "
    "retrains; a 95 % prediction band for one more retrain",
    "interval": "95 % percentile bootstrap, subjects then seeds resampled with replacement, "
    f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; success: Clopper-Pearson",
    "rte": "mean training-loop seconds of the subject's retrains (cache) / the unlearning "
    "run's training-loop seconds without the evaluations it runs inside the loop (its "
    "checkpoint's evaluation_seconds; runs whose checkpoint lacks it count them)",
    "audit": "evaluation/reference_audit.reference_verdict with its defaults on the engine's "
    "default feature: the retrains at the seeds != k and the originals at every protocol seed "
    "(a do-nothing candidate is among them), the seed spread pooled over every training "
    "subject on the same seeds",
    "neurips": "google-deepmind/unlearning_evaluation metric.py on the mean logit-scaled "
    "true-class confidence over foreground voxels, one example per forget subject, the "
    "candidates at the seeds vs the subject's retrains; final = score x retain kept x "
    "held-out kept (Dice ratios in place of accuracies)",
}


if __name__ == "__main__":
    main()
