"""The audit of one forget subject against its own references (the U-LiRA idea, arXiv 2403.01218).

The question is not "does this subject look like other never-seen subjects?" (``audit.py``,
kept as the secondary held-out check) but "does the model treat this subject as models
retrained without it do?". Pure statistics (numpy and scipy) over per-subject scores computed
elsewhere (``commands/references.py`` gathers them from the retrain cache).

For a forget subject x and one feature (default ``logit_confidence``, the NeurIPS-2023
challenge's logit-scaled true-class confidence, here averaged over x's ground-truth foreground
voxels; ``scripts/simulate_audit.py`` measured it as the feature that best separates seen from
unseen on the bench memorisation data), every value is oriented so that larger = more
member-like. Then:

- the *retrained* references: x's scores under the leave-one-out retrains without x (one per
  seed), mean ``mu_out``; the *originals*: x's scores under the baseline recipe on every
  training subject at the same seeds, mean ``mu_in``;
- the seed spread ``sd``: the retrains' within-subject SD pooled over every training subject
  with at least two seeds (``pooled_spread``; degrees of freedom ``sum(n_j - 1)``): three seeds
  alone give an SD with 2 degrees of freedom, too noisy to set a margin with;
- the margin ``delta = margin_sds * sd`` (default 3): how far from the retrains' mean a model
  may score and still behave like a retrain. A fresh retrain lies within 3 seed-SDs of the
  retrains' mean 99.7 % of the time, so the band is the retrains' own noise floor; a smaller
  margin would fail most genuine retrains (``simulate_audit.py`` reports the power);
- the equivalence test (TOST, two one-sided t-tests at ``alpha``) of ``theta = s - mu_out``,
  the gap between this model's score ``s`` and the retrains' mean, estimated with standard
  error ``sd / sqrt(n)`` (``n`` retrained references): *forgotten* when both ``theta <=
  -delta`` and ``theta >= delta`` are rejected, i.e. ``|s - mean| < delta - t * sd/sqrt(n)``
  (``band_half_width``);
- *not auditable* when the originals sit so close to the retrains that a model that unlearned
  nothing would be certified with probability above ``alpha``: the rule needs
  ``mu_in - mu_out >= band_half_width + z_(1-alpha) * sd_in`` (plug-in Gaussian estimate,
  ``sd_in`` the originals' pooled seed SD); except that a model shown to score beyond the
  margin on the non-member side (the one-sided test of ``theta >= -delta`` rejected at
  ``alpha``) is *over-forgotten* whatever the originals do: that claim needs only the retrains;
- otherwise *still remembered* when ``s`` lies on the member side of the retrains' mean,
  *over-forgotten* on the other side (worse on x than models that never saw it: the
  "Streisand" signature).

The likelihood ratio of U-LiRA (Gaussians fitted to the originals and to the retrains, each with
its pooled SD) is reported beside the verdict (log LR > 0 favours "remembered"); the verdict
itself is the equivalence test, whose error rates do not depend on a prior.

Looks: every consultation of a set of references is a look; a certification that is to keep
its ``alpha`` consults its references once (``looks == 1``). The stopping rule
(``commands/unlearn.py``) chooses its epoch with a disjoint part of the references
(``split_seeds``) and certifies once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from MachineUnlearningLib.evaluation.audit import (  # noqa: F401 (auc_permutation_p: re-export)
    FEATURE_DIRECTIONS,
    FEATURES,
    auc_permutation_p,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

VERDICTS: tuple[str, ...] = ("forgotten", "still remembered", "over-forgotten", "not auditable")
DEFAULT_FEATURE = "dice"
"""Measured on the bench memorisation data (scripts/simulate_audit.py, docs/audit-design.json):
the largest smallest seen-vs-unseen separation over the training subjects."""
DEFAULT_MARGIN_SDS = 3.0
"""The retrains' own noise floor (a fresh retrain lies within 3 SDs 99.7 % of the time)."""
DEFAULT_ALPHA = 0.05
SELECTION_SEEDS = 1
"""The stopping rule chooses its epoch with the first reference seed and certifies with the
others (at least two, so that the certification mean has a spread)."""


@dataclass(frozen=True)
class ReferenceScores:
    """One subject's scores on one feature under its references.

    Attributes:
        subject_id: the subject.
        feature: a ``SubjectSignals`` feature (``audit.FEATURES``).
        retrained: its value under each leave-one-out retrain without it (one per seed).
        originals: its value under each original (every training subject) at the same seeds.
        retrained_seeds, original_seeds: the seeds, in the order of the values.
        retrained_keys, original_keys: the retrain cache's key hashes of those models.
    """

    subject_id: str
    feature: str
    retrained: tuple[float, ...]
    originals: tuple[float, ...]
    retrained_seeds: tuple[int, ...] = ()
    original_seeds: tuple[int, ...] = ()
    retrained_keys: tuple[str, ...] = ()
    original_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        look_up_option(self.feature, FEATURES, "feature")
        for name in ("retrained", "originals"):
            values = getattr(self, name)
            if not all(math.isfinite(v) for v in values):
                raise InvalidInputError(
                    f"{name}: subject {self.subject_id!r} has a non-finite score."
                )

    def only_seeds(self, seeds: Sequence[int]) -> ReferenceScores:
        """The same references restricted to the retrains at ``seeds`` (originals kept)."""
        keep = [i for i, s in enumerate(self.retrained_seeds) if s in set(seeds)]
        return ReferenceScores(
            self.subject_id,
            self.feature,
            tuple(self.retrained[i] for i in keep),
            self.originals,
            tuple(self.retrained_seeds[i] for i in keep),
            self.original_seeds,
            tuple(self.retrained_keys[i] for i in keep) if self.retrained_keys else (),
            self.original_keys,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeedSpread:
    """Within-subject seed SDs pooled over subjects (feature units).

    Attributes:
        retrained_sd, retrained_df: the retrains' pooled SD and its degrees of freedom.
        originals_sd, originals_df: the same for the originals.
        subjects: the subjects pooled over.
    """

    feature: str
    retrained_sd: float
    retrained_df: int
    originals_sd: float
    originals_df: int
    subjects: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pooled_spread(references: Sequence[ReferenceScores]) -> SeedSpread:
    """Pool each subject's seed variance (``sum of squares / sum(n_j - 1)``) over ``references``.

    Subjects with fewer than two values in a group add nothing to that group. Raises
    InvalidInputError when no subject has two retrained values, or the features differ.
    """
    if not references:
        raise InvalidInputError("references: none given; the audit needs a reference ensemble.")
    features = {r.feature for r in references}
    if len(features) != 1:
        raise InvalidInputError(f"references: mixed features {sorted(features)}.")

    def pool(groups: list[tuple[float, ...]]) -> tuple[float, int]:
        squares, df = 0.0, 0
        for values in groups:
            if len(values) >= 2:
                arr = np.asarray(values, dtype=float)
                squares += float(((arr - arr.mean()) ** 2).sum())
                df += arr.size - 1
        return (math.sqrt(squares / df) if df else 0.0), df

    sd_out, df_out = pool([r.retrained for r in references])
    sd_in, df_in = pool([r.originals for r in references])
    if df_out == 0 or sd_out <= 0.0:
        raise InvalidInputError(
            "references: no subject has two retrains with different scores, so the seed "
            "spread (and the margin) cannot be estimated.",
            hint="Train the leave-one-out retrains at >= 2 seeds (--references auto does 3).",
        )
    return SeedSpread(
        features.pop(), sd_out, df_out, sd_in, df_in, tuple(r.subject_id for r in references)
    )


@dataclass(frozen=True)
class ReferenceVerdict:
    """The verdict for one subject of one model against its references.

    Attributes (oriented values: larger = more member-like, ``sign`` * raw value):
        value: the audited model's raw feature value on the subject.
        verdict: one of ``VERDICTS``.
        retrained_mean, originals_mean: raw means of the references.
        gap_sds: ``(s - mu_out) / sd`` oriented (+ = member side), in retrain seed-SDs.
        separation_sds: ``(mu_in - mu_out) / sd`` oriented: how far the originals sit.
        margin: ``delta`` in feature units; ``margin_sds`` in seed-SDs.
        band_half_width: ``delta - t * sd / sqrt(n)``: certified when ``|s - mu_out|`` is below.
        min_separation: the separation (feature units) below which the subject is not auditable.
        p_equivalence: the TOST p-value (the larger of the two one-sided ones).
        log_likelihood_ratio: ``log N(s; mu_in, sd_in) - log N(s; mu_out, sd)``; > 0 favours
            "remembered".
        looks: how many times these (certification) references were consulted.
        references: the cache keys of the models used (``retrained`` / ``originals``).
    """

    subject_id: str
    feature: str
    member_direction: str
    value: float
    verdict: str
    auditable: bool
    retrained_mean: float
    originals_mean: float
    n_retrained: int
    n_originals: int
    seed_sd: float
    seed_sd_df: int
    originals_sd: float
    gap_sds: float
    separation_sds: float
    margin: float
    margin_sds: float
    band_half_width: float
    min_separation: float
    p_equivalence: float
    log_likelihood_ratio: float
    alpha: float
    looks: int
    retrained_seeds: tuple[int, ...]
    references: dict[str, list[str]] = field(default_factory=dict)
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_verdict(
    value: float,
    reference: ReferenceScores,
    spread: SeedSpread,
    *,
    alpha: float = DEFAULT_ALPHA,
    margin_sds: float = DEFAULT_MARGIN_SDS,
    looks: int = 1,
) -> ReferenceVerdict:
    """Judge ``value`` (the audited model's raw score on the subject) against ``reference``.

    The module docstring states the rule. Needs at least one retrained and one original value;
    ``alpha`` in (0, 0.5), ``margin_sds`` > 0, ``looks`` >= 1.
    """
    feature = look_up_option(reference.feature, FEATURES, "feature")
    if spread.feature != feature:
        raise InvalidInputError(
            f"spread: is for {spread.feature!r}, the references for {feature!r}."
        )
    if not 0.0 < alpha < 0.5:
        raise InvalidInputError(f"alpha: must lie in (0, 0.5), got {alpha!r}.", hint="e.g. 0.05")
    if not margin_sds > 0.0:
        raise InvalidInputError(f"margin_sds: must be > 0, got {margin_sds!r}.", hint="e.g. 3")
    if not reference.retrained or not reference.originals:
        raise InvalidInputError(
            f"references: subject {reference.subject_id!r} needs at least one retrain without "
            "it and one original.",
            hint="Train them with --references auto.",
        )
    if not math.isfinite(value):
        raise InvalidInputError(f"value: subject {reference.subject_id!r} scored {value!r}.")
    direction = FEATURE_DIRECTIONS[feature]
    sign = 1.0 if direction == "higher" else -1.0
    s = sign * value
    mu_out = sign * float(np.mean(reference.retrained))
    mu_in = sign * float(np.mean(reference.originals))
    n = len(reference.retrained)
    sd, df = spread.retrained_sd, spread.retrained_df
    sd_in = spread.originals_sd if spread.originals_df and spread.originals_sd > 0 else sd
    delta = margin_sds * sd
    se = sd / math.sqrt(n)
    t_crit = float(stats.t.ppf(1.0 - alpha, df))
    theta = s - mu_out
    p_above_low = float(stats.t.sf((theta + delta) / se, df))  # H0: theta <= -delta
    p_below_high = float(stats.t.cdf((theta - delta) / se, df))  # H0: theta >= delta
    p_equivalence = max(p_above_low, p_below_high)
    band = delta - t_crit * se
    min_separation = max(band, 0.0) + float(stats.norm.ppf(1.0 - alpha)) * sd_in
    auditable = (mu_in - mu_out) >= min_separation
    p_below_low = float(stats.t.cdf((theta + delta) / se, df))  # H0: theta >= -delta
    if not auditable:
        verdict = "over-forgotten" if p_below_low < alpha else "not auditable"
    elif p_equivalence < alpha:
        verdict = "forgotten"
    else:
        verdict = "still remembered" if theta > 0 else "over-forgotten"
    log_lr = float(stats.norm.logpdf(s, mu_in, sd_in) - stats.norm.logpdf(s, mu_out, sd))
    result = ReferenceVerdict(
        subject_id=reference.subject_id,
        feature=feature,
        member_direction=direction,
        value=float(value),
        verdict=verdict,
        auditable=bool(auditable),
        retrained_mean=sign * mu_out,
        originals_mean=sign * mu_in,
        n_retrained=n,
        n_originals=len(reference.originals),
        seed_sd=sd,
        seed_sd_df=df,
        originals_sd=sd_in,
        gap_sds=theta / sd,
        separation_sds=(mu_in - mu_out) / sd,
        margin=delta,
        margin_sds=margin_sds,
        band_half_width=band,
        min_separation=min_separation,
        p_equivalence=p_equivalence,
        log_likelihood_ratio=log_lr,
        alpha=alpha,
        looks=int(looks),
        retrained_seeds=tuple(reference.retrained_seeds),
        references={
            "retrained": list(reference.retrained_keys),
            "originals": list(reference.original_keys),
        },
    )
    return _explained(result)


def split_seeds(
    seeds: Sequence[int], selection: int = SELECTION_SEEDS
) -> tuple[list[int], list[int]]:
    """``(selection seeds, certification seeds)``: disjoint, the first ``selection`` seeds choose.

    Raises InvalidInputError unless at least two seeds remain to certify with.
    """
    seeds = list(seeds)
    if len(seeds) - selection < 2 or selection < 1:
        raise InvalidInputError(
            f"reference seeds: {seeds} cannot be split into {selection} seed(s) to choose the "
            "epoch with and >= 2 disjoint seeds to certify with.",
            hint="Use at least 3 reference seeds (the default 0 1 2).",
        )
    return seeds[:selection], seeds[selection:]


def closeness(value: float, reference: ReferenceScores, spread: SeedSpread) -> float:
    """``|value - mean of the retrained references| / sd``: the stopping rule's epoch score."""
    return abs(value - float(np.mean(reference.retrained))) / spread.retrained_sd


def in_target_band(
    value: float, reference: ReferenceScores, spread: SeedSpread, margin_sds: float
) -> bool:
    """unlearning.md section 5 step 1: within ``margin_sds`` seed-SDs of the retrains' mean."""
    return closeness(value, reference, spread) <= margin_sds


def _explained(v: ReferenceVerdict) -> ReferenceVerdict:
    from dataclasses import replace

    head = {
        "forgotten": "FORGOTTEN: the model scores this subject as the models retrained without "
        "it do (equivalent within the margin).",
        "still remembered": "STILL REMEMBERED: the model is not shown to behave like a retrain "
        "on this subject; it scores it on the trained-on side of the retrains.",
        "over-forgotten": "OVER-FORGOTTEN: the model does worse on this subject than models "
        "that never saw it; the failure itself singles the subject out.",
        "not auditable": "NOT AUDITABLE: for this subject the original models and the retrains "
        "cannot be told apart well enough; no verdict on forgetting is possible from them.",
    }[v.verdict]
    if not v.auditable and v.verdict == "over-forgotten":
        head += (
            " Decided from the retrains alone: the originals cannot be told apart from them "
            "for this subject, but this model scores more than the margin below the retrains' "
            "mean (one-sided test at alpha)."
        )
    text = (
        f"Subject {v.subject_id}: {v.feature} = {v.value:.4g}; retrains without it "
        f"(n = {v.n_retrained}) average {v.retrained_mean:.4g}, the originals "
        f"(n = {v.n_originals}) {v.originals_mean:.4g}; seed SD {v.seed_sd:.3g} (pooled, "
        f"{v.seed_sd_df} df). Gap to the retrains {v.gap_sds:+.2f} SD, originals at "
        f"{v.separation_sds:+.2f} SD (auditable from "
        f"{v.min_separation / v.seed_sd:.2f} SD). {head} Rule: equivalence test (TOST, "
        f"alpha {v.alpha:g}) with margin {v.margin_sds:g} seed-SDs ({v.margin:.3g}); p = "
        f"{v.p_equivalence:.3g}; certified when within {v.band_half_width:.3g} of the retrains' "
        f"mean. Log likelihood ratio (originals vs retrains) {v.log_likelihood_ratio:+.2f}. "
        f"These references were consulted {v.looks} time(s)."
    )
    return replace(v, explanation=text)
