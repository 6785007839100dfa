"""Subject-level membership-inference audit: does the model still recognise a subject?

Pure statistics over per-subject feature values computed elsewhere from a model's behaviour
(``SubjectSignals``); numpy and scipy only. Reference: docs unlearning.md sections 4.4 and 5.

Roles: members = ``retain`` subjects (trained on), non-members = ``held-out`` subjects (never
seen). Each ``forget`` subject is compared with the non-members in both tails:

* ``member``: more member-like than the never-seen subjects (the model still recognises it);
* ``over-forgotten``: the opposite tail, the model fails on it more than on subjects it never
  saw, which itself reveals who was forgotten (a "Streisand" signature);
* ``indistinguishable``: neither.

Decision rule (small cohorts). An empirical p-value from n reference subjects cannot go below
1/(n+1) (0.25 with 3 held-out subjects), so it cannot decide. A subject is flagged in a tail
when both hold:

1. its value lies beyond every non-member value in that tail (empirical guard), and
2. the parametric one-sided p-value is below ``alpha`` (default 0.05). The parametric p-value is
   a Student-t prediction test from the non-member mean and sample SD:
   ``t = (x - mean) / (sd * sqrt(1 + 1/n))`` with ``n - 1`` degrees of freedom, the exact test
   for "does x come from the same Gaussian as the n non-members" when mean and SD are estimated
   from those n values. It is equivalent to a z-score threshold that grows as n shrinks
   (``z_threshold`` in each verdict: 3.37 for n = 3, 2.18 for n = 6, 1.64 for large n).
   If the non-members have no spread (all equal) only the range decides, and the explanation
   says so.

Both the empirical and the parametric p-values are reported, with a caveat in every report.
Length: this file is past 400 lines because it holds the pure statistics (percentiles,
p-values, AUC, bootstrap), the verdict rule with the plain-language texts a data-protection
officer reads, and the report; a natural split is the statistics into their own module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option

ROLES: tuple[str, ...] = ("forget", "retain", "held-out")
VERDICTS: tuple[str, ...] = ("member", "indistinguishable", "over-forgotten")
DIRECTIONS: tuple[str, ...] = ("lower", "higher")

#: Which direction of each feature looks like a training member ("member-like").
#: loss: mean voxel cross-entropy, lower = member-like (the model fits what it trained on).
#: dice: mean foreground Dice, higher = member-like.
#: confidence: mean true-class probability on ground-truth foreground voxels, higher = member-like.
#: entropy: mean predictive entropy, lower = member-like (the model is surer on members).
#: logit_confidence: mean of log p_y - log(1 - p_y) on foreground, higher = member-like.
FEATURE_DIRECTIONS: dict[str, str] = {
    "loss": "lower",
    "dice": "higher",
    "confidence": "higher",
    "entropy": "lower",
    "logit_confidence": "higher",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DIRECTIONS)

CAVEAT = (
    "Caveat: each subject is compared with only {n} never-seen subject(s). An empirical p-value "
    "cannot go below 1/(n+1) = {p_min:.3g}; the parametric p-value assumes the never-seen values "
    "are roughly Gaussian. 'Indistinguishable' means this test, on this feature, found no "
    "evidence of membership; it does not prove that no trace of the subject remains in the "
    "model. The stronger check compares with models retrained without the subject."
)


@dataclass(frozen=True)
class SubjectSignals:
    """Per-subject feature values of one model (computed by the engine over the whole volume).

    Attributes:
        subject_id: the subject id (a string, e.g. "070").
        role: ``forget``, ``retain`` or ``held-out``.
        loss: mean voxel cross-entropy (nats); lower = member-like.
        dice: mean foreground Dice in [0, 1]; higher = member-like.
        confidence: mean true-class probability on ground-truth foreground voxels, in [0, 1];
            higher = member-like.
        entropy: mean predictive entropy (nats); lower = member-like.
        logit_confidence: mean of log p_y - log(1 - p_y) on foreground voxels; higher =
            member-like.

    A feature may be None when it could not be computed; auditing on it then raises.
    """

    subject_id: str
    role: str
    loss: float | None = None
    dice: float | None = None
    confidence: float | None = None
    entropy: float | None = None
    logit_confidence: float | None = None

    def __post_init__(self) -> None:
        look_up_option(self.role, ROLES, f"role of subject {self.subject_id!r}")
        for name in FEATURES:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidInputError(
                    f"{name}: subject {self.subject_id!r} has a non-finite value {value!r}.",
                    hint="Check the model's predictions for this subject (NaN or inf).",
                )

    def value(self, feature: str) -> float:
        """The value of ``feature``; raises InvalidInputError if it is missing."""
        feature = look_up_option(feature, FEATURES, "feature")
        value = getattr(self, feature)
        if value is None:
            raise InvalidInputError(
                f"{feature}: missing for subject {self.subject_id!r}.",
                hint=f"Compute {feature} for every subject or audit another feature.",
            )
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubjectSignals:
        return cls(**data)


@dataclass(frozen=True)
class SubjectVerdict:
    """The audit verdict for one subject on one feature.

    Attributes:
        verdict: ``member``, ``indistinguishable`` or ``over-forgotten``.
        percentile: fraction of non-members strictly below the value plus half the ties.
        p_member_empirical, p_over_forgotten_empirical: one-sided empirical p-values with the
            +1 correction (never below ``min_empirical_p`` = 1/(n+1)).
        p_member, p_over_forgotten: one-sided parametric (Student-t prediction) p-values,
            None when the non-members have no spread.
        z_score: (value - non-member mean) / non-member sample SD, None without spread.
        z_threshold: the |z| beyond which the parametric test flags at ``alpha`` for this n.
        member_mean, member_percentile: context from the member (retain) subjects, None
            without members.
    """

    subject_id: str
    role: str
    feature: str
    member_direction: str
    value: float
    verdict: str
    percentile: float
    p_member_empirical: float
    p_over_forgotten_empirical: float
    min_empirical_p: float
    p_member: float | None
    p_over_forgotten: float | None
    z_score: float | None
    z_threshold: float
    alpha: float
    n_non_members: int
    non_member_mean: float
    non_member_sd: float
    non_member_min: float
    non_member_max: float
    member_mean: float | None
    member_percentile: float | None
    explanation: str
    caveat: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttackSummary:
    """A population threshold attack, members vs non-members, on one feature.

    Attributes:
        auc: Mann-Whitney AUC (ties count 0.5); 0.5 = chance, 1.0 = perfect separation.
        auc_ci_low, auc_ci_high: percentile bootstrap interval at ``ci_level`` (kept for
            continuity; at 6 vs 5 subjects it covers the truth well below 95 % of the time,
            docs/audit-design.json from scripts/simulate_audit.py, so the report shows the
            p-value instead).
        auc_p_value: one-sided permutation p-value of the AUC (``auc_permutation_p``), exact
            when ``auc_p_exact``.
        tpr_at_fpr: the best true-positive rate among thresholds whose false-positive rate is
            at most ``max_fpr``; with fewer than 1/max_fpr non-members that is the fraction of
            members beyond every non-member.
    """

    feature: str
    member_direction: str
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    ci_level: float
    n_resamples: int
    seed: int
    tpr_at_fpr: float
    max_fpr: float
    n_members: int
    n_non_members: int
    auc_p_value: float = 1.0
    auc_p_exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile_in_reference(value: float, reference: Sequence[float]) -> float:
    """Mid-rank percentile: (#reference < value + 0.5 * #reference == value) / n, in [0, 1].

    0 means below every reference value, 1 above every one; a value equal to the only
    reference value gives 0.5.
    """
    ref = _as_array(reference, "reference")
    below = np.count_nonzero(ref < value)
    ties = np.count_nonzero(ref == value)
    return float((below + 0.5 * ties) / ref.size)


def tail_p_values(
    value: float, reference: Sequence[float], member_direction: str
) -> tuple[float, float]:
    """One-sided empirical p-values ``(p_member_tail, p_over_forgotten_tail)``.

    p = (1 + #reference at least as extreme as ``value`` in that tail) / (1 + n). For
    ``member_direction == "lower"`` the member tail counts reference values <= value and the
    over-forgotten tail those >= value (mirrored for "higher"). The smallest attainable p is
    1/(n+1); ties count in both tails.
    """
    ref = _as_array(reference, "reference")
    direction = look_up_option(member_direction, DIRECTIONS, "member_direction")
    n_le = np.count_nonzero(ref <= value)
    n_ge = np.count_nonzero(ref >= value)
    low_p = (1 + n_le) / (1 + ref.size)
    high_p = (1 + n_ge) / (1 + ref.size)
    return (float(low_p), float(high_p)) if direction == "lower" else (float(high_p), float(low_p))


def verdict_for_subject(
    signals: SubjectSignals,
    non_members: Sequence[SubjectSignals],
    members: Sequence[SubjectSignals] = (),
    feature: str = "loss",
    alpha: float = 0.05,
) -> SubjectVerdict:
    """Compare one subject with the non-members on ``feature`` (module docstring: the rule).

    ``members`` (retain subjects) only add context (their mean and the subject's percentile
    among them); the subject itself is left out of both references. Needs at least 2
    non-members; ``alpha`` must lie in (0, 0.5).
    """
    feature = look_up_option(feature, FEATURES, "feature")
    if not 0.0 < alpha < 0.5:
        raise InvalidInputError(f"alpha: must lie in (0, 0.5), got {alpha!r}.", hint="e.g. 0.05")
    direction = FEATURE_DIRECTIONS[feature]
    value = signals.value(feature)
    ref = _values([s for s in non_members if s.subject_id != signals.subject_id], feature)
    if ref.size < 2:
        raise InvalidInputError(
            f"non_members: {ref.size} never-seen subject(s); the audit needs at least 2.",
            hint=_HELD_OUT_HINT,
        )
    n = ref.size
    mean, sd = float(ref.mean()), float(ref.std(ddof=1))
    p_member_emp, p_over_emp = tail_p_values(value, ref, direction)
    z, p_member, p_over = _parametric_tails(value, mean, sd, n, direction)
    beyond_low, beyond_high = value < ref.min(), value > ref.max()
    beyond_member, beyond_over = (
        (beyond_low, beyond_high) if direction == "lower" else (beyond_high, beyond_low)
    )
    verdict = "indistinguishable"
    if beyond_member and (p_member is None or p_member < alpha):
        verdict = "member"
    elif beyond_over and (p_over is None or p_over < alpha):
        verdict = "over-forgotten"
    mem = _values([s for s in members if s.subject_id != signals.subject_id], feature)
    partial = SubjectVerdict(
        subject_id=signals.subject_id,
        role=signals.role,
        feature=feature,
        member_direction=direction,
        value=value,
        verdict=verdict,
        percentile=percentile_in_reference(value, ref),
        p_member_empirical=p_member_emp,
        p_over_forgotten_empirical=p_over_emp,
        min_empirical_p=1.0 / (n + 1),
        p_member=p_member,
        p_over_forgotten=p_over,
        z_score=z,
        z_threshold=float(stats.t.ppf(1.0 - alpha, n - 1) * math.sqrt(1.0 + 1.0 / n)),
        alpha=alpha,
        n_non_members=n,
        non_member_mean=mean,
        non_member_sd=sd,
        non_member_min=float(ref.min()),
        non_member_max=float(ref.max()),
        member_mean=float(mem.mean()) if mem.size else None,
        member_percentile=percentile_in_reference(value, mem) if mem.size else None,
        explanation="",
        caveat=CAVEAT.format(n=n, p_min=1.0 / (n + 1)),
    )
    return _with_explanation(partial)


def population_attack(
    members: Sequence[SubjectSignals],
    non_members: Sequence[SubjectSignals],
    feature: str = "loss",
    *,
    max_fpr: float = 0.01,
    n_resamples: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> AttackSummary:
    """Threshold attack on ``feature``: AUC (Mann-Whitney), TPR at ``max_fpr`` and a bootstrap CI.

    The CI resamples members and non-members separately with replacement (``n_resamples``
    times, numpy Generator seeded with ``seed``) and takes the percentile interval; the same
    seed gives the same interval. Needs at least 2 subjects in each group.
    """
    feature = look_up_option(feature, FEATURES, "feature")
    direction = FEATURE_DIRECTIONS[feature]
    sign = -1.0 if direction == "lower" else 1.0
    m = sign * _values(members, feature)
    h = sign * _values(non_members, feature)
    for name, arr in (("members", m), ("non_members", h)):
        if arr.size < 2:
            raise InvalidInputError(
                f"{name}: {arr.size} subject(s); the population attack needs at least 2.",
                hint=_HELD_OUT_HINT
                if name == "non_members"
                else "Keep at least 2 retain subjects.",
            )
    low, high = bootstrap_auc_ci(m, h, n_resamples=n_resamples, ci_level=ci_level, seed=seed)
    p_value, exact = auc_permutation_p(m, h, seed=seed)
    return AttackSummary(
        feature=feature,
        member_direction=direction,
        auc=auc_mann_whitney(m, h),
        auc_ci_low=low,
        auc_ci_high=high,
        ci_level=ci_level,
        n_resamples=n_resamples,
        seed=seed,
        tpr_at_fpr=tpr_at_fpr(m, h, max_fpr),
        max_fpr=max_fpr,
        n_members=int(m.size),
        n_non_members=int(h.size),
        auc_p_value=p_value,
        auc_p_exact=exact,
    )


def auc_mann_whitney(member_scores: Sequence[float], non_member_scores: Sequence[float]) -> float:
    """P(member score > non-member score) + 0.5 P(equal); scores oriented so higher = member."""
    m = _as_array(member_scores, "member_scores")
    h = _as_array(non_member_scores, "non_member_scores")
    ranks = stats.rankdata(np.concatenate([m, h]))
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2.0
    return float(u / (m.size * h.size))


def tpr_at_fpr(
    member_scores: Sequence[float], non_member_scores: Sequence[float], max_fpr: float = 0.01
) -> float:
    """Best TPR of the rule "member if score >= t" over thresholds t with FPR <= ``max_fpr``.

    Scores are oriented so higher = member. With fewer than 1/max_fpr non-members no false
    positive is allowed: the result is the fraction of members above every non-member.
    """
    m = _as_array(member_scores, "member_scores")
    h = _as_array(non_member_scores, "non_member_scores")
    best = 0.0
    for t in np.unique(np.concatenate([m, h])):
        if np.count_nonzero(h >= t) / h.size <= max_fpr:
            best = max(best, np.count_nonzero(m >= t) / m.size)
    return float(best)


def auc_permutation_p(
    member_scores: Sequence[float],
    non_member_scores: Sequence[float],
    *,
    max_exact: int = 200_000,
    n_resamples: int = 20_000,
    seed: int = 0,
) -> tuple[float, bool]:
    """One-sided permutation p-value of the Mann-Whitney AUC (scores: higher = member).

    The share of relabellings of the pooled scores into groups of the same sizes whose AUC is at
    least the observed one (ties in the AUC count). Exact (every relabelling enumerated) when
    there are at most ``max_exact`` of them (7 vs 9 subjects: 11,440), else ``n_resamples``
    random ones plus the observed labelling (seeded). Returns ``(p, exact)``.
    """
    m = np.asarray(member_scores, dtype=float)
    h = np.asarray(non_member_scores, dtype=float)
    if m.size < 1 or h.size < 1:
        raise InvalidInputError("auc: both groups need at least one subject.")
    pooled = np.concatenate([m, h])
    ranks = stats.rankdata(pooled)
    k, total = m.size, pooled.size

    def u_of(index) -> float:
        return float(ranks[list(index)].sum())  # the rank sum orders the AUC

    observed = u_of(range(k))
    eps = 1e-9
    if math.comb(total, k) <= max_exact:
        sums = np.fromiter((u_of(c) for c in combinations(range(total), k)), dtype=float)
        return float(np.mean(sums >= observed - eps)), True
    rng = np.random.default_rng(seed)
    hits = sum(u_of(rng.permutation(total)[:k]) >= observed - eps for _ in range(n_resamples))
    return float((hits + 1) / (n_resamples + 1)), False


def bootstrap_auc_ci(
    member_scores: Sequence[float],
    non_member_scores: Sequence[float],
    *,
    n_resamples: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling each group separately."""
    if n_resamples < 1 or not 0.0 < ci_level < 1.0:
        raise InvalidInputError(
            f"n_resamples/ci_level: got {n_resamples!r}/{ci_level!r}.",
            hint="n_resamples >= 1 and 0 < ci_level < 1, e.g. 1000 and 0.95.",
        )
    m = _as_array(member_scores, "member_scores")
    h = _as_array(non_member_scores, "non_member_scores")
    # wins[i, j] = 1 if member i beats non-member j, 0.5 on a tie: an AUC is a mean of it.
    wins = (m[:, None] > h[None, :]) + 0.5 * (m[:, None] == h[None, :])
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_resamples)
    for k in range(n_resamples):
        i = rng.integers(0, m.size, m.size)
        j = rng.integers(0, h.size, h.size)
        aucs[k] = wins[np.ix_(i, j)].mean()
    tail = 100.0 * (1.0 - ci_level) / 2.0
    low, high = np.percentile(aucs, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class AuditReport:
    """The audit of one model: a verdict per forget subject, retain exposure and the attack.

    Attributes:
        model_label: free text naming the audited model (e.g. "unlearned, epoch 50").
        forget_verdicts: one verdict per ``forget`` subject.
        retain_verdicts: the same test run on each ``retain`` subject (its exposure: after
            unlearning, retained subjects can become easier to recognise).
        attack: retain (members) vs held-out (non-members) threshold attack.
    """

    feature: str
    member_direction: str
    alpha: float
    model_label: str
    forget_verdicts: tuple[SubjectVerdict, ...]
    retain_verdicts: tuple[SubjectVerdict, ...]
    attack: AttackSummary
    n_held_out: int
    caveat: str

    @property
    def overall(self) -> str:
        """``indistinguishable``, ``member``, ``over-forgotten``, ``mixed`` or ``none``."""
        found = {v.verdict for v in self.forget_verdicts}
        if not found:
            return "none"
        if found == {"indistinguishable"}:
            return "indistinguishable"
        flagged = found - {"indistinguishable"}
        return flagged.pop() if len(flagged) == 1 else "mixed"

    @property
    def retain_flagged(self) -> int:
        """How many retain subjects the test calls ``member``."""
        return sum(v.verdict == "member" for v in self.retain_verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "member_direction": self.member_direction,
            "alpha": self.alpha,
            "model_label": self.model_label,
            "overall": self.overall,
            "forget_verdicts": [v.to_dict() for v in self.forget_verdicts],
            "retain_verdicts": [v.to_dict() for v in self.retain_verdicts],
            "retain_flagged_member": self.retain_flagged,
            "attack": self.attack.to_dict(),
            "n_held_out": self.n_held_out,
            "caveat": self.caveat,
        }

    def to_markdown(self) -> str:
        title = f"Membership audit: {self.feature} ({self.member_direction} = member-like)"
        lines = [f"### {title}" + (f", {self.model_label}" if self.model_label else ""), ""]
        lines.append(
            f"| subject | role | {self.feature} | percentile among never-seen | z "
            "| p (member tail) | p (over-forgotten tail) | verdict |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for v in self.forget_verdicts + self.retain_verdicts:
            z = "n/a" if v.z_score is None else f"{v.z_score:+.2f}"
            pm = "n/a" if v.p_member is None else f"{v.p_member:.3g}"
            po = "n/a" if v.p_over_forgotten is None else f"{v.p_over_forgotten:.3g}"
            lines.append(
                f"| {v.subject_id} | {v.role} | {v.value:.4g} | {100 * v.percentile:.0f} % "
                f"| {z} | {pm} | {po} | **{v.verdict}** |"
            )
        a = self.attack
        lines += [
            "",
            f"Forget set: **{self.overall}**. Retain subjects recognised as members (their "
            f"exposure; compare with the original model's audit): {self.retain_flagged} of "
            f"{len(self.retain_verdicts)}.",
            "",
            f"Population attack (retain vs held-out): AUC {a.auc:.2f} (permutation p = "
            f"{a.auc_p_value:.3g}, {'exact' if a.auc_p_exact else 'Monte Carlo'}; one-sided, "
            f"smallest possible {1 / math.comb(a.n_members + a.n_non_members, a.n_members):.3g})"
            f", TPR at {100 * a.max_fpr:g} % FPR {a.tpr_at_fpr:.2f}; {a.n_members} members, "
            f"{a.n_non_members} non-members.",
            "",
            f"Rule: flagged only beyond every never-seen subject and with parametric p < "
            f"{self.alpha:g} (p-values: Student-t prediction from the never-seen subjects).",
            "",
            self.caveat,
        ]
        return "\n".join(lines) + "\n"


def audit(
    signals: Sequence[SubjectSignals],
    feature: str = "loss",
    *,
    alpha: float = 0.05,
    model_label: str = "",
    n_resamples: int = 1000,
    seed: int = 0,
) -> AuditReport:
    """Audit one model: members = ``retain``, non-members = ``held-out`` subjects.

    Each ``forget`` subject (there may be none, e.g. for a baseline) and each ``retain``
    subject gets a verdict; the population attack runs on retain vs held-out. Raises
    InvalidInputError for duplicate ids, no or fewer than 2 held-out subjects, or fewer than
    2 retain subjects.
    """
    feature = look_up_option(feature, FEATURES, "feature")
    ids = [s.subject_id for s in signals]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidInputError(f"signals: duplicate subject ids {duplicates}.")
    groups = {role: [s for s in signals if s.role == role] for role in ROLES}
    if not groups["held-out"]:
        raise InvalidInputError(
            "held-out: no never-seen subjects; the membership audit needs them as reference.",
            hint=_HELD_OUT_HINT,
        )
    for role, hint in (
        ("held-out", _HELD_OUT_HINT),
        ("retain", "Keep at least 2 retain subjects."),
    ):
        if len(groups[role]) < 2:
            raise InvalidInputError(
                f"{role}: only {len(groups[role])} subject(s); the audit needs at least 2.",
                hint=hint,
            )
    held_out, retain = groups["held-out"], groups["retain"]

    def judge(s: SubjectSignals) -> SubjectVerdict:
        return verdict_for_subject(s, held_out, retain, feature, alpha)

    n = len(held_out)
    return AuditReport(
        feature=feature,
        member_direction=FEATURE_DIRECTIONS[feature],
        alpha=alpha,
        model_label=model_label,
        forget_verdicts=tuple(judge(s) for s in groups["forget"]),
        retain_verdicts=tuple(judge(s) for s in retain),
        attack=population_attack(retain, held_out, feature, n_resamples=n_resamples, seed=seed),
        n_held_out=n,
        caveat=CAVEAT.format(n=n, p_min=1.0 / (n + 1)),
    )


def stopping_rule_satisfied(
    verdicts: Sequence[SubjectVerdict],
    retain_dice_now: float,
    retain_dice_before: float,
    tolerance: float = 0.05,
) -> tuple[bool, str]:
    """unlearning.md section 5 step 2: may unlearning stop at this evaluation?

    True when every forget verdict is ``indistinguishable`` (both tails) and
    ``retain_dice_now >= (1 - tolerance) * retain_dice_before``. Pass the forget subjects'
    verdicts (``AuditReport.forget_verdicts``). The target band on Dice_F and the Dice_T check
    of step 2 are not covered here. Returns ``(satisfied, reason)``.
    """
    if not 0.0 <= tolerance < 1.0:
        raise InvalidInputError(
            f"tolerance: must lie in [0, 1), got {tolerance!r}.", hint="e.g. 0.05"
        )
    if not verdicts:
        return False, "no forget-subject verdicts to judge; keep going."
    flagged = [
        f"{v.subject_id} ({v.verdict})" for v in verdicts if v.verdict != "indistinguishable"
    ]
    floor = (1.0 - tolerance) * retain_dice_before
    problems = []
    if flagged:
        problems.append(f"audit still flags {', '.join(flagged)}")
    if not retain_dice_now >= floor:
        problems.append(
            f"retain Dice {retain_dice_now:.4f} is below {floor:.4f} "
            f"(= (1 - {tolerance:g}) x {retain_dice_before:.4f})"
        )
    if problems:
        return False, "; ".join(problems) + "."
    return True, (
        f"all {len(verdicts)} forget subject(s) indistinguishable in both tails and retain Dice "
        f"{retain_dice_now:.4f} >= {floor:.4f} (tolerance {tolerance:g})."
    )


def _as_array(values: Sequence[float], field: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise InvalidInputError(f"{field}: empty; at least one value is needed.")
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{field}: contains NaN or infinite values.")
    return arr


def _values(signals: Sequence[SubjectSignals], feature: str) -> np.ndarray:
    return np.array([s.value(feature) for s in signals], dtype=float)


def _parametric_tails(
    value: float, mean: float, sd: float, n: int, direction: str
) -> tuple[float | None, float | None, float | None]:
    """``(z, p_member, p_over_forgotten)`` from the Student-t prediction test; Nones if sd == 0.

    ``t = z / sqrt(1 + 1/n)`` follows Student's t with n - 1 degrees of freedom when ``value``
    and the n reference values come from one Gaussian (mean and SD estimated from the n).
    """
    if sd <= 0.0:
        return None, None, None
    z = (value - mean) / sd
    t_stat = z / math.sqrt(1.0 + 1.0 / n)
    p_low, p_high = float(stats.t.cdf(t_stat, n - 1)), float(stats.t.sf(t_stat, n - 1))
    return (z, p_low, p_high) if direction == "lower" else (z, p_high, p_low)


_HELD_OUT_HINT = (
    "The audit needs never-seen subjects: make the cohort with 'make-cohort --held-out K' "
    "(K >= 2) or add subjects under held-out/."
)


def _with_explanation(v: SubjectVerdict) -> SubjectVerdict:
    """Return ``v`` with a plain-language explanation for a data-protection officer."""
    word = "lower" if v.member_direction == "lower" else "higher"
    spread = (
        f"never-seen subjects: n = {v.n_non_members}, range {v.non_member_min:.4g} to "
        f"{v.non_member_max:.4g}, mean {v.non_member_mean:.4g}, SD {v.non_member_sd:.3g}"
    )
    z = "z not defined (no spread)" if v.z_score is None else f"z = {v.z_score:+.2f}"
    head = {
        "member": "MEMBER: the model still recognises this subject; its "
        f"{v.feature} is {word} (more member-like) than for every never-seen subject, by more "
        "than chance allows.",
        "over-forgotten": "OVER-FORGOTTEN: the model now does worse on this subject than on "
        "subjects it never saw; this abnormal failure itself reveals that the subject was "
        "singled out (Streisand effect) and harms the patient's future scans.",
        "indistinguishable": "INDISTINGUISHABLE: on this feature the subject looks like the "
        "subjects the model never saw.",
    }[v.verdict]
    p_par = (
        "parametric p not defined (never-seen values identical; verdict from the range only)"
        if v.p_member is None
        else f"parametric p (Student-t prediction) = {v.p_member:.3g} member tail, "
        f"{v.p_over_forgotten:.3g} over-forgotten tail"
    )
    context = ""
    if v.member_mean is not None:
        context = f" Trained-on (retain) subjects average {v.member_mean:.4g}."
    text = (
        f"Subject {v.subject_id} ({v.role}): {v.feature} = {v.value:.4g} ({spread}; {z}; "
        f"percentile {100 * v.percentile:.0f} %).{context} {head} Rule: flagged only beyond "
        f"every never-seen subject and with p < {v.alpha:g} (|z| > {v.z_threshold:.2f} for "
        f"n = {v.n_non_members}); {p_par}; empirical p = {v.p_member_empirical:.3g} member "
        f"tail, {v.p_over_forgotten_empirical:.3g} over-forgotten tail (smallest possible "
        f"with {v.n_non_members} never-seen subjects: 1/(n+1) = {v.min_empirical_p:.3g})."
    )
    return replace(v, explanation=text)
