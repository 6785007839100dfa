"""The reference ensemble of a cohort and recipe, and the per-subject audit against it.

For every training subject x and seed: the leave-one-out retrain without x and the original
(the recipe on every training subject), both from the retrain cache (``commands/retrains.py``,
keyed by cohort content, recipe, left-out subject and seed; trained once, reused by every
later audit). x's scores under its retrains are the "never seen" distribution, under the
originals the "seen" one (``evaluation/reference_audit.py`` holds the statistics).

:func:`load_references` gathers what the cache holds (and, with ``train``, trains what is
missing for the asked subjects); :meth:`ReferenceBank.verdict` audits one model's score on
one subject. A protocol script builds the bank once and calls ``verdict`` per (forget subject,
seed) without retraining anything.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from MachineUnlearningLib.commands.reference import original_recipe
from MachineUnlearningLib.commands.retrains import (
    CachedModel,
    RetrainRequest,
    cache_root,
    cached_model,
    find_cached,
    key_hash,
    score_models,
)
from MachineUnlearningLib.data.cohort import TRAINING_GROUP, Subject, discover_cohort
from MachineUnlearningLib.evaluation.reference_audit import (
    DEFAULT_ALPHA,
    DEFAULT_FEATURE,
    DEFAULT_MARGIN_SDS,
    ReferenceScores,
    ReferenceVerdict,
    SeedSpread,
    pooled_spread,
    reference_verdict,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.jobs import DEFAULT_REFERENCE_SEEDS, JobSpec

REFERENCE_SEEDS = DEFAULT_REFERENCE_SEEDS


@dataclass
class ReferenceBank:
    """What the cache holds for one cohort, recipe and set of seeds.

    Attributes:
        originals: seed -> the original (every training subject).
        retrains: (left-out id, seed) -> the leave-one-out retrain.
        scores: model path -> {subject id -> signals dict} (``retrains.score_models``).
        missing: one line per reference model not in the cache.
    """

    cohort: str
    config: dict
    seeds: tuple[int, ...]
    training_ids: tuple[str, ...]
    originals: dict[int, CachedModel] = field(default_factory=dict)
    retrains: dict[tuple[str, int], CachedModel] = field(default_factory=dict)
    scores: dict[Path, dict[str, dict]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def complete(self, subject_id: str) -> bool:
        """True when ``subject_id`` has a retrain and an original at every seed."""
        return all((subject_id, s) in self.retrains and s in self.originals for s in self.seeds)

    def subjects(self) -> list[str]:
        """Training subjects with complete references."""
        return [i for i in self.training_ids if self.complete(i)]

    def references(
        self, subject_id: str, feature: str = DEFAULT_FEATURE, seeds: Sequence[int] | None = None
    ) -> ReferenceScores:
        """``subject_id``'s scores under its retrains (at ``seeds``, default all) and originals."""
        if not self.complete(subject_id):
            raise InvalidInputError(
                f"references: subject {subject_id!r} has no complete reference ensemble "
                f"(seeds {list(self.seeds)}).",
                hint="Train it with '--references auto' (or scripts/benchmark_memorisation.py).",
            )
        chosen = list(self.seeds if seeds is None else seeds)
        retrains = [self.retrains[(subject_id, s)] for s in chosen]
        originals = [self.originals[s] for s in self.seeds]
        return ReferenceScores(
            subject_id=subject_id,
            feature=feature,
            retrained=tuple(self._score(m, subject_id, feature) for m in retrains),
            originals=tuple(self._score(m, subject_id, feature) for m in originals),
            retrained_seeds=tuple(chosen),
            original_seeds=tuple(self.seeds),
            retrained_keys=tuple(key_hash(m) for m in retrains),
            original_keys=tuple(key_hash(m) for m in originals),
        )

    def spread(self, feature: str = DEFAULT_FEATURE) -> SeedSpread:
        """Seed SDs pooled over every subject with complete references."""
        return pooled_spread([self.references(i, feature) for i in self.subjects()])

    def verdict(
        self,
        subject_id: str,
        value: float,
        *,
        feature: str = DEFAULT_FEATURE,
        seeds: Sequence[int] | None = None,
        looks: int = 1,
        alpha: float = DEFAULT_ALPHA,
        margin_sds: float = DEFAULT_MARGIN_SDS,
    ) -> ReferenceVerdict:
        """Audit a model whose ``feature`` on ``subject_id`` is ``value`` (raw units).

        ``seeds``: the retrain seeds to certify with (default all; the stopping rule passes
        the part it did not choose its epoch with). ``looks``: how often these references have
        been consulted for this model (1 for a single certification).
        """
        return reference_verdict(
            value,
            self.references(subject_id, feature, seeds),
            self.spread(feature),
            alpha=alpha,
            margin_sds=margin_sds,
            looks=looks,
        )

    def _score(self, model: CachedModel, subject_id: str, feature: str) -> float:
        value = self.scores[model.path][subject_id].get(feature)
        if value is None:
            raise InvalidInputError(f"references: {feature} missing for {subject_id!r}.")
        return float(value)

    def describe(self) -> dict:
        """JSON for outputs: seeds, subjects with references and the cache keys used."""
        return {
            "seeds": list(self.seeds),
            "subjects": self.subjects(),
            "originals": {str(s): key_hash(m) for s, m in self.originals.items()},
            "retrains": {f"{i}@{s}": key_hash(m) for (i, s), m in self.retrains.items()},
            "missing": list(self.missing),
        }


def load_references(
    cohort: str,
    config: dict,
    sink: EventSink,
    *,
    seeds: Iterable[int] = REFERENCE_SEEDS,
    train: Iterable[str] = (),
    device: str = "auto",
    cancel_file: str | None = None,
    subjects: Sequence[Subject] | None = None,
) -> ReferenceBank:
    """The reference ensemble the cache holds; trains the originals and the retrains of the
    subjects in ``train`` when they are missing (nothing else is ever trained).

    Every model found is scored (cached in its ``scores.json``): the originals on every
    training subject, each retrain on its left-out subject.
    """
    subjects = list(subjects) if subjects is not None else discover_cohort(cohort)
    ids = tuple(s.subject_id for s in subjects if s.group == TRAINING_GROUP)
    to_train = set(train)
    unknown = sorted(to_train - set(ids))
    if unknown:
        raise InvalidInputError(f"references: {unknown} are not training subjects of {cohort}.")
    bank = ReferenceBank(cohort, dict(config), tuple(int(s) for s in seeds), ids)

    def get(request: RetrainRequest, may_train: bool) -> CachedModel | None:
        found = find_cached(request, subjects)
        if found is None and may_train:
            found = cached_model(request, sink, device, cancel_file, subjects)
        return found

    for seed in bank.seeds:
        found = get(RetrainRequest(cohort, config, ids, seed), bool(to_train))
        if found is None:
            bank.missing.append(f"original, seed {seed}")
        else:
            bank.originals[seed] = found
        for left_out in ids:
            kept = tuple(i for i in ids if i != left_out)
            request = RetrainRequest(cohort, config, kept, seed, (left_out,))
            found = get(request, left_out in to_train)
            if found is None:
                bank.missing.append(f"retrain without {left_out}, seed {seed}")
            else:
                bank.retrains[(left_out, seed)] = found
    if bank.originals:
        bank.scores |= score_models(list(bank.originals.values()), cohort, list(ids), device)
    for (left_out, _), model in bank.retrains.items():
        bank.scores |= score_models([model], cohort, [left_out], device)
    return bank


def missing_for(bank: ReferenceBank, subject_id: str) -> list[str]:
    """The reference models ``subject_id`` lacks (originals and its own retrains)."""
    need = [f"original, seed {s}" for s in bank.seeds if s not in bank.originals]
    need += [
        f"retrain without {subject_id}, seed {s}"
        for s in bank.seeds
        if (subject_id, s) not in bank.retrains
    ]
    return need


def training_cost(bank: ReferenceBank, count: int) -> str:
    """Plain words for what training ``count`` more reference models costs, from the timings
    the cache recorded for this recipe's models (wall seconds of each training call)."""
    seen = [
        m.timing.get("wall_seconds")
        for m in [*bank.originals.values(), *bank.retrains.values()]
        if m.timing.get("wall_seconds")
    ]
    if not seen:
        return f"{count} model(s) to train with the original's recipe (no timing recorded yet)"
    each = statistics.median(seen)
    return (
        f"{count} model(s) to train, about {each:.0f} s each on this machine "
        f"(median of {len(seen)} cached models of this recipe), ~{count * each / 60:.0f} min"
    )


def references_for_job(
    job: JobSpec, metadata: dict, sink: EventSink, subjects: Sequence[Subject] | None = None
) -> tuple[ReferenceBank | None, str]:
    """The reference ensemble for ``job``'s single forget subject, or ``(None, why not)``.

    ``job.references``: ``cached`` reads the cache only; ``auto`` first says what is missing
    and what training it costs, then trains it (the originals and the forget subject's
    retrains, one per reference seed); ``none`` skips. The original must have been trained
    with a recipe the engine knows on every training subject of the cohort (that is what the
    ensemble's originals are).
    """
    if job.references == "none":
        return None, "not asked for (--references none)"
    if len(job.forget_ids) != 1:
        return None, (
            f"the reference ensemble is leave-one-out, so it audits one forget subject at a "
            f"time; this run forgets {len(job.forget_ids)}"
        )
    subjects = list(subjects) if subjects is not None else discover_cohort(job.cohort)
    try:
        config, _ = original_recipe(job, metadata)
    except InvalidInputError as exc:
        return None, f"the original's recipe is unknown ({exc.message})"
    training = sorted(s.subject_id for s in subjects if s.group == TRAINING_GROUP)
    trained_on = sorted(metadata.get("subject_ids", {}).get("trained_on", []))
    if trained_on != training:
        return None, (
            f"the original was trained on {', '.join(trained_on) or 'unknown subjects'}, not on "
            f"every training subject of the cohort ({', '.join(training)}) as the ensemble's "
            "originals are"
        )
    subject = job.forget_ids[0]
    seeds = list(job.reference_seeds)
    bank = load_references(job.cohort, config, sink, seeds=seeds, device=job.device,
                           subjects=subjects)  # fmt: skip
    missing = missing_for(bank, subject)
    if missing and job.references == "auto":
        sink.emit(
            "phase",
            name="references",
            detail=f"training the reference ensemble for {subject}: "
            f"{training_cost(bank, len(missing))}; cached in {cache_root()}",
        )
        bank = load_references(
            job.cohort, config, sink, seeds=seeds, train=[subject], device=job.device,
            cancel_file=str(job.cancel_path), subjects=subjects,
        )  # fmt: skip
        missing = missing_for(bank, subject)
    if missing:
        return None, (
            f"the retrain cache ({cache_root()}) lacks {len(missing)} reference model(s) for "
            f"{subject} ({'; '.join(missing)}); '--references auto' trains them "
            f"({training_cost(bank, len(missing))})"
        )
    sink.emit(
        "phase",
        name="references",
        detail=f"reference ensemble for {subject}: {len(seeds)} retrains without it and "
        f"{len(seeds)} originals (seeds {', '.join(map(str, seeds))}); seed spread pooled over "
        f"{len(bank.subjects())} subject(s)",
    )
    return bank, ""
