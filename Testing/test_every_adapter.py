"""Every strategy on every architecture adapter: the mechanics change exactly the declared
groups (parameter by parameter), every preset runs on every family, and unlearning moves the
forget and retain Dice the expected way on the tiny phantom cohort (fixed seeds, tiny nets)."""

from __future__ import annotations

import copy
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import TINY_INPUT_SIZES, TINY_NETWORKS, a_tiny_spec
from MachineUnlearningLib.commands.unlearn import unlearning_config
from MachineUnlearningLib.data.cohort import DEFAULT_MODALITIES, discover_cohort
from MachineUnlearningLib.data.labels import get_label_policy
from MachineUnlearningLib.data.preprocessing import Preprocessing
from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.data.transform_chain import TransformChain, TransformStep
from MachineUnlearningLib.evaluation.predict import evaluate_model
from MachineUnlearningLib.model.adapters import ADAPTERS, in_scope
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.strategies import STRATEGIES, get_strategy
from MachineUnlearningLib.strategies.plan import build_plan
from MachineUnlearningLib.strategies.preparation import prepare
from MachineUnlearningLib.strategies.saliency import saliency_mask
from MachineUnlearningLib.strategies.targets import TargetMaker
from MachineUnlearningLib.training.loop import TrainingConfig, train
from MachineUnlearningLib.training.steps import Step

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
FAMILIES = list(TINY_NETWORKS)
STRATEGY_NAMES = list(STRATEGIES)
FORGET = ["070"]


@dataclass(frozen=True)
class Setup:
    """How a family's tiny baseline is trained and unlearned here (fixed seeds, CPU).

    Attributes:
        subjects: the phantom subjects trained on ("070" is the one forgotten).
        baseline: (epochs, Adam learning rate, schedule) of the baseline.
        noisy_label: the noisy-label parameters whose effect the direction test checks (found
            by trying a few on this cohort; they differ per family: strategies need tuning
            per architecture).
        expected: (least forget Dice drop, least ratio of forget to retain Dice drop).
    """

    subjects: tuple[str, ...]
    baseline: tuple[int, float, str]
    noisy_label: dict
    expected: tuple[float, float] = (0.1, 3.0)


ALL_SEVEN = ("1", "4", "5", "7", "14", "148", "070")
SGD_RUN = {"learning_rate": 0.02, "epochs": 30, "forget_weight": 4.0}
SETUPS = {
    "medicalnet": Setup(ALL_SEVEN, (40, 1e-2, "constant"), SGD_RUN),
    "monai-unet": Setup(ALL_SEVEN, (20, 3e-3, "exponential"), SGD_RUN),
    # SegResNet sits on a threshold at 30 epochs: the fused loss (training/losses.py), equal
    # to F.cross_entropy + MaskedDiceLoss to float32 rounding, gave a forget drop of 0.076
    # where the autograd loss gave 0.110; at 50 epochs they give 0.66 and 0.63 (retain <= 0.016).
    "monai-segresnet": Setup(ALL_SEVEN, (50, 1e-2, "exponential"), {**SGD_RUN, "epochs": 50}),
    "monai-dynunet": Setup(ALL_SEVEN, (50, 1e-2, "exponential"), SGD_RUN),
    # SwinUNETR forgets least selectively here: SGD at 0.02 hurt the retain subjects more than
    # the forget one, at <= 0.01 (and Adam at 3e-3) it moved neither; Adam at 1e-3 does both
    # a little, the forget subject about twice as much.
    "monai-swinunetr": Setup(
        ("1", "4", "5", "070"),
        (10, 3e-3, "exponential"),
        {"learning_rate": 1e-3, "epochs": 15, "forget_weight": 4.0, "optimizer": "adam"},
        expected=(0.02, 2.0),
    ),
}
SLOW = {"monai-swinunetr"}  # ~0.8 s per optimiser step on one CPU thread


def family_params(families=FAMILIES):
    return [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in families]


def natural_preprocessing(family: str, spec):
    """MedicalNet: the engine's crop-and-resize (16 x 32 x 32); MONAI families: a bundle-style
    MONAI chain (RAS, 1.9 x 1.9 x 3 mm, z-score over the head), padded to their divisor."""
    if family == "medicalnet":
        return Preprocessing(input_size=TINY_INPUT_SIZES[family], target_grid="input")
    steps = (
        TransformStep("Orientationd", {"axcodes": "RAS"}),
        TransformStep("Spacingd", {"pixdim": [1.9, 1.9, 3.0], "mode": "bilinear"}),
        TransformStep("NormalizeIntensityd", {"nonzero": True, "channel_wise": True}),
    )
    return TransformChain(steps, spec.size_divisor)


@pytest.fixture(scope="module", params=family_params(), ids=FAMILIES)
def a_trained_family(request, a_tiny_cohort):
    """(spec, source, model, retain ids): each family's tiny network trained, seeded."""
    family = request.param
    setup = SETUPS[family]
    spec = a_tiny_spec(family)
    preprocessing = natural_preprocessing(family, spec)
    subjects = [s for s in discover_cohort(a_tiny_cohort) if s.subject_id in setup.subjects]
    source = SampleSource(
        subjects,
        DEFAULT_MODALITIES,
        get_label_policy("mrbrains3"),
        preprocessing,
        output_shape=spec.output_shape(TINY_INPUT_SIZES[family]),
    )
    epochs, learning_rate, schedule = setup.baseline
    config = TrainingConfig(
        epochs=epochs,
        optimizer="adam",
        learning_rate=learning_rate,
        head_lr_multiplier=1.0,
        weight_decay=0.0,
        loss="dice-ce",
        schedule=schedule,
        gamma=0.97,
        amp=False,
        seed=0,
    )
    ids = setup.subjects

    def every_subject(epoch, rng):
        return [Step(ids[i]) for i in rng.permutation(len(ids))]

    model = spec.build(seed=0)
    train(model, source, every_subject, config, CPU, CollectingSink())
    retain = [i for i in ids if i not in FORGET]
    return spec, source, model.eval(), retain


def parameters_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def prepared(family, name, frozen=(), retain=None, **given):
    """A copy of the family's model after preset ``name``'s mechanics (before training)."""
    spec, source, model, all_retain = family
    retain = all_retain if retain is None else retain
    strategy = get_strategy(name)
    params = strategy.resolve(given)
    student = copy.deepcopy(model)
    ready = prepare(strategy, student, model, spec, source, FORGET, retain, params, 0, CPU, frozen)
    return strategy, params, student, ready


def unlearn(family, name, frozen=(), retain=None, **given):
    """A copy of the family's model unlearned with preset ``name`` (the unlearn job's
    mechanics; ``retain``: the retain subjects, default all)."""
    spec, source, _, all_retain = family
    retain = all_retain if retain is None else retain
    strategy, params, student, ready = prepared(family, name, frozen, retain, **given)
    history = None
    if strategy.trains:
        history = train(
            student,
            source,
            build_plan(strategy, FORGET, retain, params),
            unlearning_config(params, 0),
            CPU,
            CollectingSink(),
            target_maker=TargetMaker(source),
            frozen_prefixes=frozen,
            teachers=ready.teachers,
            after_step=ready.after_step,
            head_prefixes=spec.decoder_prefixes,
        )
    return student, ready, history


def dice(model, source, retain):
    roles = {**{r: "retain" for r in retain}, **{f: "forget" for f in FORGET}}
    sets = evaluate_model(model, source, roles, CPU, "m", 0, with_surface=False).sets()
    return sets["forget"]["dice"], sets["retain"]["dice"]


# --- the groups each mechanic touches ---------------------------------------------------------

# The mechanics tests use two retain subjects: what they check does not depend on how many.
TWO = ["1", "4"]


def test_the_random_encoder_surgery_redraws_exactly_the_encoder(a_trained_family):
    spec, _, model, _ = a_trained_family
    before = parameters_of(model)
    _, _, student, _ = prepared(a_trained_family, "random-encoder", retain=TWO)
    for name, value in student.named_parameters():
        if in_scope(name, spec.decoder_prefixes):
            assert torch.equal(value, before[name]), name
        else:
            assert not torch.equal(value, before[name]), name


def test_fix_decoder_keeps_the_decoder_bit_identical_while_the_encoder_trains(a_trained_family):
    spec, _, model, _ = a_trained_family
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student, _, _ = unlearn(
        a_trained_family, "noisy-label", frozen=spec.decoder_prefixes, retain=TWO, epochs=1
    )
    after = student.state_dict()
    for name, _ in model.named_parameters():
        if in_scope(name, spec.decoder_prefixes):
            assert torch.equal(after[name], before[name]), name
        else:
            assert not torch.equal(after[name], before[name]), name
    buffers = [n for n, _ in model.named_buffers() if in_scope(n, spec.decoder_prefixes)]
    assert all(torch.equal(after[n], before[n]) for n in buffers)


def test_ssd_with_a_frozen_decoder_dampens_only_encoder_entries(a_trained_family):
    spec, _, model, _ = a_trained_family
    before = parameters_of(model)
    student, ready, _ = unlearn(
        a_trained_family, "ssd", frozen=spec.decoder_prefixes, retain=TWO, alpha=1.5
    )
    changed = 0
    for name, value in student.named_parameters():
        if in_scope(name, spec.decoder_prefixes):
            assert torch.equal(value, before[name]), name
        else:
            changed += int((value != before[name]).sum())
    assert changed == ready.record["dampening"]["dampened"] > 0


def test_salun_changes_masked_entries_only(a_trained_family):
    _, source, model, _ = a_trained_family
    before = parameters_of(model)
    mask = saliency_mask(copy.deepcopy(model), source, FORGET, CPU, 0.3)
    student, ready, _ = unlearn(a_trained_family, "salun", retain=TWO, steps=3, mask_fraction=0.3)
    changed = 0
    for name, value in student.named_parameters():
        assert torch.equal(value[~mask[name]], before[name][~mask[name]]), name
        changed += int((value[mask[name]] != before[name][mask[name]]).sum())
    assert changed > 0
    assert ready.record["saliency_mask"]["masked"] == sum(int(m.sum()) for m in mask.values())


def test_the_random_teacher_is_the_same_network_reseeded(a_trained_family):
    spec, _, model, _ = a_trained_family
    _, _, _, ready = prepared(a_trained_family, "bad-teacher", retain=TWO)
    teacher = ready.teachers["random"]
    assert type(teacher) is type(model)
    fresh = spec.build(seed=0).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in teacher.state_dict().items())
    assert all(not p.requires_grad for p in teacher.parameters())


# --- every preset runs on every family --------------------------------------------------------


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_preset_runs_on_every_family(a_trained_family, name):
    _, _, model, _ = a_trained_family
    strategy = STRATEGIES[name]
    given = {"alpha": 1.5} if name == "ssd" else {strategy.budget: 2}
    student, _, history = unlearn(a_trained_family, name, retain=TWO, **given)
    if history is not None:
        assert history.steps > 0
        assert all(math.isfinite(e["loss"]) for e in history.epochs)
    state, original = student.state_dict(), model.state_dict()
    assert any(not torch.equal(v, original[k]) for k, v in state.items())
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_the_tests_run_every_registered_preset_on_every_adapter():
    assert FAMILIES == list(ADAPTERS) == list(SETUPS)
    assert STRATEGY_NAMES == list(STRATEGIES)


def test_the_committed_adapter_docs_match_the_registry():
    spec = importlib.util.spec_from_file_location(
        "generate_model_docs", REPO / "scripts" / "generate_model_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (REPO / "docs" / "bring-your-own-model.md").read_text(encoding="utf-8")
    assert module.render(text) == text, (
        "docs/bring-your-own-model.md is stale: run scripts/generate_model_docs.py"
    )


# --- forget and retain Dice move the expected way ---------------------------------------------


def test_noisy_label_lowers_forget_dice_clearly_more_than_retain_dice(a_trained_family):
    spec, source, model, retain = a_trained_family
    setup = SETUPS[spec.adapter]
    forget_before, retain_before = dice(model, source, retain)
    student, _, _ = unlearn(
        a_trained_family, "noisy-label", random_labels="wrong-class", **setup.noisy_label
    )
    forget_after, retain_after = dice(student, source, retain)
    forget_drop, retain_drop = forget_before - forget_after, retain_before - retain_after
    least_drop, least_ratio = setup.expected
    assert forget_before > 0.5 and retain_before > 0.5
    assert forget_drop > least_drop, (forget_before, forget_after)
    assert forget_drop > least_ratio * retain_drop, (forget_drop, retain_drop)
