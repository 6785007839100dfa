"""Cached retrains: models trained by a recipe on a chosen set of a cohort's subjects and a seed.

One mechanism serves every "what would a model that never saw X look like" question:

- the retrain-from-scratch reference of an unlearning run (``commands/reference.py``): the
  original's recipe and seed on the retain subjects;
- leave-one-out ensembles (:func:`leave_one_out`): for each training subject, the recipe
  without that subject at several seeds, the yardstick of the memorisation study
  (scripts/benchmark_memorisation.py) and of audits against retrained models;
- "originals" (:func:`originals`): the baseline itself (every training subject) at several
  seeds, the seed spread a member's score has.

A model is trained once and reused. Its key is the recipe (flat ``config``, as
``reference.recipe_overrides`` writes it), the seed, and the ordered ids of the subjects it
was trained on, each with the SHA-256 of its files (``segm`` and every modality): the key
follows the data, not the folder, so a moved cohort keeps its cache and an edited subject
does not reuse a stale model. The left-out ids are recorded too (they name the retrain, they
do not change it). Models live in ``<cache>/retrains/<key hash>/`` (``model.pt``,
``metrics.json``, ``cache-key.json``; cache root ``$MACHINE_UNLEARNING_CACHE``, default
``~/.cache/machine-unlearning``; deleting it only costs retraining). Each is trained in a
``.partial-*`` folder and renamed into place when complete, so a cancelled or crashed run never
leaves a half model under a key.

Per-subject scores (foreground loss and the other membership signals, Dice) of a cached model
are cached beside it in ``scores.json``, keyed by subject id and the subject's file hash
(:func:`score_models`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from MachineUnlearningLib.commands.common import MODEL_FILE
from MachineUnlearningLib.commands.train import train_baseline
from MachineUnlearningLib.data.cohort import (
    MODALITY_FILES,
    TRAINING_GROUP,
    Subject,
    discover_cohort,
    select_subjects,
)
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import EventSink
from MachineUnlearningLib.runtime.files import write_json
from MachineUnlearningLib.runtime.jobs import JobSpec

CACHE_ENV = "MACHINE_UNLEARNING_CACHE"
CACHE_KEY_FILE = "cache-key.json"
TIMING_FILE = "training.json"
SCORES_FILE = "scores.json"
KEY_VERSION = 1
"""Bump when what a key means changes (old entries are then simply not found)."""


def cache_root() -> Path:
    """``$MACHINE_UNLEARNING_CACHE``, default ``~/.cache/machine-unlearning``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "machine-unlearning")


@dataclass(frozen=True)
class RetrainRequest:
    """What to train.

    Attributes:
        cohort: cohort root.
        config: flat recipe config including ``"recipe"`` (JobSpec ``config``).
        trained_on: ids of the training subjects to train on, in training order.
        seed: the run's seed (initialisation and subject order).
        left_out: training subjects deliberately not trained on (empty: an "original").
    """

    cohort: str
    config: dict
    trained_on: tuple[str, ...]
    seed: int
    left_out: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.trained_on:
            raise InvalidInputError("retrain: no subject to train on.")
        clash = set(self.trained_on) & set(self.left_out)
        if clash:
            raise InvalidInputError(f"retrain: {sorted(clash)} are both trained on and left out.")


@dataclass(frozen=True)
class CachedModel:
    """A model in the cache.

    Attributes:
        path: its ``model.pt``.
        request: what it was trained for.
        reused: True when it was found in the cache, False when this call trained it.
        timing: ``training_seconds`` (its training loop, from its checkpoint's history),
            ``wall_seconds`` (the whole training call: loading, loop, evaluation, saving) and
            ``cpu_seconds`` (this process's CPU time in that call, all threads), as recorded
            when it was trained; empty if unknown.
        key: its cache key.
    """

    path: Path
    request: RetrainRequest
    reused: bool
    timing: dict = field(default_factory=dict, compare=False)
    key: dict = field(default_factory=dict, compare=False)

    @property
    def training_seconds(self) -> float | None:
        return self.timing.get("training_seconds")


# --------------------------------------------------------------------------- keys


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def subject_fingerprint(subject: Subject) -> str:
    """SHA-256 over the subject's label and modality files (those that exist), by role."""
    digest = hashlib.sha256()
    files = [("segm", subject.label)] + [(m, subject.images.get(m)) for m in MODALITY_FILES]
    for name, path in files:
        if path is not None and Path(path).exists():
            digest.update(f"{name}:{file_sha256(Path(path))};".encode())
    return digest.hexdigest()


def resolved_recipe(config: dict) -> dict:
    """The recipe a flat ``config`` trains with, as a dict without its seed.

    The key holds this, not the config: ``{"recipe": "bench"}`` must not reuse a model
    trained before the ``bench`` recipe changed.
    """
    from MachineUnlearningLib.training.recipes import resolve_recipe

    overrides = {k: v for k, v in config.items() if k != "recipe"}
    recipe = resolve_recipe(config.get("recipe", "cpu-demo"), overrides).to_dict()
    recipe["training"].pop("seed", None)
    return recipe


def request_key(request: RetrainRequest, subjects: Sequence[Subject]) -> dict:
    """The JSON key of a request (what the model depends on, and its left-out ids)."""
    by_id = {
        s.subject_id: s
        for s in select_subjects(list(subjects), list(request.trained_on), "trained_on")
    }
    return {
        "version": KEY_VERSION,
        "recipe": resolved_recipe(request.config),
        "seed": int(request.seed),
        "trained_on": [[i, subject_fingerprint(by_id[i])] for i in request.trained_on],
        "left_out": sorted(request.left_out),
    }


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- training


def cached_model(
    request: RetrainRequest,
    sink: EventSink,
    device: str = "auto",
    cancel_file: str | None = None,
    subjects: Sequence[Subject] | None = None,
) -> CachedModel:
    """The cached model for ``request``; trains it (through ``train``/``retrain``) when absent.

    ``subjects`` (the cohort's, from ``discover_cohort``) saves a rescan when many models of
    one cohort are asked for.
    """
    subjects = list(subjects) if subjects is not None else discover_cohort(request.cohort)
    label = _describe(request)
    found = find_cached(request, subjects)
    if found is not None:
        sink.emit("phase", name="retrain-cache", detail=f"reusing the {label}: {found.path}")
        return found
    key = request_key(request, subjects)
    folder = cache_root() / "retrains" / _key_hash(key)
    model = folder / MODEL_FILE
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{folder.name}-", dir=folder.parent))
    sink.emit("phase", name="retrain-cache", detail=f"training the {label} (cached in {folder})")
    job = JobSpec(
        command="retrain" if request.left_out else "train",
        cohort=request.cohort,
        output=str(partial),
        forget_ids=list(request.left_out),
        retain_ids=list(request.trained_on),
        held_out_ids=[],  # scores of other subjects are computed on demand (score_models)
        seed=int(request.seed),
        device=device,
        config=dict(request.config),
        cancel_file=cancel_file or str(partial / "CANCEL"),
    )
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        write_json(partial / CACHE_KEY_FILE, key)
        train_baseline(job, sink)
        write_json(
            partial / TIMING_FILE,
            {
                "training_seconds": _loop_seconds(partial / MODEL_FILE),
                "wall_seconds": round(time.monotonic() - started, 2),
                # CPU time of this process, all threads: less sensitive to a busy machine
                "cpu_seconds": round(time.process_time() - cpu_started, 2),
                "device": device,
            },
        )
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same key first: keep theirs
            if not model.exists():
                raise
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return CachedModel(model, request, False, _timing(folder), key)


def find_cached(request: RetrainRequest, subjects: Sequence[Subject]) -> CachedModel | None:
    """The cached model for ``request`` if it is in the cache; never trains."""
    key = request_key(request, subjects)
    folder = cache_root() / "retrains" / _key_hash(key)
    if not (folder / MODEL_FILE).exists():
        return None
    return CachedModel(folder / MODEL_FILE, request, True, _timing(folder), key)


def key_hash(cached: CachedModel) -> str:
    """The short hash naming ``cached``'s cache folder (what a deletion record cites)."""
    return _key_hash(cached.key)


def training_subjects(cohort: str | Path) -> list[str]:
    """Ids of the cohort's training subjects, in cohort order."""
    return [s.subject_id for s in discover_cohort(cohort) if s.group == TRAINING_GROUP]


def originals(
    cohort: str,
    config: dict,
    seeds: Iterable[int],
    sink: EventSink,
    device: str = "auto",
) -> dict[int, CachedModel]:
    """The baseline (every training subject) at each seed."""
    subjects = discover_cohort(cohort)
    ids = tuple(s.subject_id for s in subjects if s.group == TRAINING_GROUP)
    return {
        seed: cached_model(RetrainRequest(cohort, config, ids, seed), sink, device, None, subjects)
        for seed in seeds
    }


def leave_one_out(
    cohort: str,
    config: dict,
    left_out_ids: Iterable[str],
    seeds: Iterable[int],
    sink: EventSink,
    device: str = "auto",
) -> dict[tuple[str, int], CachedModel]:
    """For each id and seed: the recipe on every other training subject."""
    subjects = discover_cohort(cohort)
    ids = [s.subject_id for s in subjects if s.group == TRAINING_GROUP]
    seeds = list(seeds)
    out = {}
    for left_out in left_out_ids:
        if left_out not in ids:
            raise InvalidInputError(
                f"leave-one-out: {left_out!r} is not a training subject of {cohort}.",
                hint=f"Training subjects: {', '.join(ids)}.",
            )
        kept = tuple(i for i in ids if i != left_out)
        for seed in seeds:
            request = RetrainRequest(cohort, config, kept, seed, (left_out,))
            out[(left_out, seed)] = cached_model(request, sink, device, None, subjects)
    return out


def _describe(request: RetrainRequest) -> str:
    what = f"retrain without {', '.join(request.left_out)}" if request.left_out else "original"
    return f"{what} (recipe {request.config.get('recipe', 'cpu-demo')}, seed {request.seed})"


def _loop_seconds(model: Path) -> float | None:
    """Seconds of the training loop, from the checkpoint's history (evaluation excluded)."""
    from MachineUnlearningLib.model.checkpoint import load_checkpoint

    history = load_checkpoint(model).metadata.get("training_history") or [{}]
    return history[0].get("seconds")


def _timing(folder: Path) -> dict:
    try:
        return json.loads((folder / TIMING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- scores


def score_models(
    models: Sequence[CachedModel],
    cohort: str,
    subject_ids: Sequence[str],
    device: str = "auto",
) -> dict[Path, dict[str, dict]]:
    """Per-subject scores of each model: ``{model path: {id: {"role", "loss", "dice", ...}}}``.

    ``loss`` is the mean cross-entropy over ground-truth foreground voxels (nats), ``dice``
    the mean foreground Dice, on the subject's original grid (evaluation/signals.py). A role
    says what the subject was for that model: ``retain`` (trained on), ``forget`` (left out
    of its training set) or ``held-out``. Scores are cached in each model's ``scores.json``.
    """
    from MachineUnlearningLib.data.labels import get_label_policy
    from MachineUnlearningLib.data.patches import Sampling
    from MachineUnlearningLib.data.preprocessing import Preprocessing
    from MachineUnlearningLib.data.samples import SampleSource
    from MachineUnlearningLib.evaluation.predict import evaluate_model
    from MachineUnlearningLib.model.checkpoint import load_checkpoint
    from MachineUnlearningLib.runtime.device import resolve_device

    subjects = {s.subject_id: s for s in discover_cohort(cohort)}
    wanted = select_subjects(list(subjects.values()), list(subject_ids), "subject_ids")
    prints = {s.subject_id: subject_fingerprint(s) for s in wanted}
    torch_device = resolve_device(device)
    sources: dict[str, SampleSource] = {}
    out: dict[Path, dict[str, dict]] = {}
    for cached in models:
        stored = _read_scores(cached.path.parent)
        missing = [i for i in subject_ids if stored.get(i, {}).get("fingerprint") != prints[i]]
        if missing:
            loaded = load_checkpoint(cached.path, device=torch_device)
            meta = loaded.metadata
            signature = json.dumps(
                [meta["label_policy"], meta["modalities"], meta["preprocessing"]]
                + ([meta["sampling"]] if meta.get("sampling") else []),
                sort_keys=True,
            )
            if signature not in sources:
                sources[signature] = SampleSource(
                    wanted,
                    tuple(meta["modalities"]),
                    get_label_policy(meta["label_policy"]),
                    Preprocessing.from_dict(meta["preprocessing"]),
                    sampling=Sampling.from_dict(meta.get("sampling")),
                )
            roles = {i: _role(cached.request, i) for i in missing}
            evaluation = evaluate_model(
                loaded.model, sources[signature], roles, torch_device, "retrained", None,
                with_surface=False,
            )  # fmt: skip
            for signals in evaluation.signals:
                stored[signals.subject_id] = {
                    **signals.to_dict(),
                    "fingerprint": prints[signals.subject_id],
                }
            write_json(cached.path.parent / SCORES_FILE, stored)
        out[cached.path] = {i: stored[i] for i in subject_ids}
    return out


def _role(request: RetrainRequest, subject_id: str) -> str:
    if subject_id in request.trained_on:
        return "retain"
    return "forget" if subject_id in request.left_out else "held-out"


def _read_scores(folder: Path) -> dict:
    path = folder / SCORES_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # a damaged score file is recomputed
        return {}
