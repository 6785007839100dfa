"""The literature presets change exactly what they claim, on the same mechanics and loop."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY_SOURCE_IDS, a_tiny_model
from MachineUnlearningLib.commands import run_job
from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.model.checkpoint import load_checkpoint, medicalnet_spec
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.runtime.jobs import JobSpec
from MachineUnlearningLib.strategies import STRATEGIES, get_strategy
from MachineUnlearningLib.strategies.base import Strategy
from MachineUnlearningLib.strategies.dampening import dampen_, importances, selective_dampening
from MachineUnlearningLib.strategies.gradients import subject_gradients
from MachineUnlearningLib.strategies.plan import build_plan
from MachineUnlearningLib.strategies.saliency import KeepUnmasked, saliency_mask, top_fraction_mask
from MachineUnlearningLib.strategies.teachers import build_teachers
from MachineUnlearningLib.training.loop import TrainingConfig, train
from MachineUnlearningLib.training.losses import voxel_kl
from MachineUnlearningLib.training.steps import Step

LITERATURE = ["finetune", "neggrad-plus", "salun", "scrub", "bad-teacher", "l1-sparse", "ssd"]
FORGET, RETAIN = ["070"], ["1", "4", "5", "7", "14", "148"]
IDS = list(TINY_SOURCE_IDS)
CPU = torch.device("cpu")


def a_config(**changes):
    base = dict(
        epochs=2, optimizer="sgd", learning_rate=1e-2, head_lr_multiplier=1.0, seed=0, amp=False
    )
    return TrainingConfig(**{**base, **changes})


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def a_plan(name, **params):
    strategy = get_strategy(name)
    return build_plan(strategy, FORGET, RETAIN, strategy.resolve(params))


# --- registry ---------------------------------------------------------------------------------


def test_literature_presets_are_registered_after_the_paper_presets_with_a_tiny_source():
    names = list(STRATEGIES)
    assert names.index("finetune") > names.index("learn-noise")
    assert names[-len(LITERATURE) :] == LITERATURE
    for name in LITERATURE:
        assert "arXiv" in STRATEGIES[name].source or name == "finetune"
        assert STRATEGIES[name].definition


def test_a_method_that_neither_trains_nor_edits_weights_is_refused():
    with pytest.raises(ValueError, match="must edit weights"):
        Strategy("x", "x", "importance", False, False, "x", False, "x", trains=False)


def test_a_custom_forget_target_without_a_plan_is_refused():
    with pytest.raises(ValueError, match="needs a plan"):
        Strategy("x", "x", "random-teacher", True, False, "x", False, "x")


def test_an_unknown_teacher_is_refused_with_the_valid_names():
    with pytest.raises(InvalidInputError, match="Did you mean 'random'"):
        Strategy("x", "x", "none", True, False, "x", False, "x", teachers=("randon",))


def test_ssd_has_no_optimiser_parameters():
    with pytest.raises(InvalidInputError, match="epochs"):
        get_strategy("ssd").resolve({"epochs": 3})
    assert get_strategy("ssd").resolve({}) == {"alpha": 4.0, "lambda": 1.0}


# --- plans ------------------------------------------------------------------------------------


def epochs_of(plan, count):
    rng = np.random.default_rng(0)
    return [plan(epoch, rng) for epoch in range(1, count + 1)]


def test_finetune_plan_cycles_through_the_retain_subjects_one_step_per_epoch():
    batches = epochs_of(a_plan("finetune"), 2 * len(RETAIN))
    assert all(len(batch) == 1 for batch in batches)
    first, second = [[b[0].subject_id for b in batches[i : i + 6]] for i in (0, 6)]
    assert sorted(first) == sorted(second) == sorted(RETAIN) and first != second
    assert all(s.target == "true" and s.weight == 1.0 for b in batches for s in b)


def test_neggrad_plus_pairs_every_retain_step_with_a_forget_ascent_step():
    batches = epochs_of(a_plan("neggrad-plus", alpha=0.75), 6)
    for batch in batches:
        retain, forget = batch
        assert retain.subject_id in RETAIN and (retain.target, retain.weight) == ("true", 1.5)
        assert forget.subject_id in FORGET and (forget.target, forget.weight) == ("true", -0.5)
    # the batch mean is the source's alpha * CE_r - (1 - alpha) * CE_f
    assert sum(s.weight for s in batches[0]) / 2 == pytest.approx(0.75 - 0.25)
    assert sorted(b[0].subject_id for b in batches) == sorted(RETAIN)


def test_neggrad_plus_refuses_an_alpha_outside_zero_one_and_an_odd_batch():
    with pytest.raises(InvalidInputError, match="alpha"):
        a_plan("neggrad-plus", alpha=1.5)
    with pytest.raises(InvalidInputError, match="even"):
        a_plan("neggrad-plus", batch_size=3)


def test_salun_plan_cycles_through_forget_and_retain_with_forget_relabelled():
    batches = epochs_of(a_plan("salun"), 7)
    steps = [b[0] for b in batches]
    assert sorted(s.subject_id for s in steps) == sorted(FORGET + RETAIN)
    assert [s.target for s in steps if s.subject_id in FORGET] == ["wrong-class"]
    assert all(s.target == "true" for s in steps if s.subject_id in RETAIN)
    uniform = epochs_of(a_plan("salun", random_labels="uniform-random"), 7)
    assert [b[0].target for b in uniform if b[0].subject_id in FORGET] == ["uniform-random"]


def test_scrub_follows_rounds_of_max_then_min_passes():
    plan = a_plan("scrub", max_rounds=2, max_steps_per_round=3, min_steps_per_round=6)
    kinds = ["max" if b[0].weight < 0 else "min" for b in epochs_of(plan, 30)]
    assert kinds == (["max"] * 3 + ["min"] * 6) * 2 + ["min"] * 12
    for batch in epochs_of(plan, 30):
        step = batch[0]
        if step.weight < 0:  # -T^2 KL on a forget subject (T = 2)
            assert (step.subject_id, step.loss, step.weight) == ("070", "kl", -4.0)
        else:
            assert step.subject_id in RETAIN and step.loss == "task+kl"
        assert step.teacher == "original"


def test_bad_teacher_draws_its_retain_subset_once_and_cycles_with_the_forget_subjects():
    batches = epochs_of(a_plan("bad-teacher", retain_fraction=0.3), 9)
    steps = [b[0] for b in batches]
    retain = {s.subject_id for s in steps if s.subject_id in RETAIN}
    assert len(retain) == math.ceil(0.3 * len(RETAIN))
    assert [s.subject_id for s in steps].count("070") == 3  # 9 steps over a pool of 3
    assert all(s.teacher == "random" for s in steps if s.subject_id in FORGET)
    assert all(s.teacher == "original" and s.loss == "kl" for s in steps if s in retain)


def test_step_budget_presets_count_steps_and_refuse_epochs():
    for name in LITERATURE[:-1]:
        strategy = get_strategy(name)
        assert strategy.budget == "steps" and "epochs" not in strategy.resolve({})
        with pytest.raises(InvalidInputError, match="steps") as error:
            strategy.resolve({"epochs": 3})
        assert "--param steps=" in error.value.hint
    assert get_strategy("bad-teacher").resolve({})["steps"] == 30
    assert get_strategy("max-loss").budget == "epochs"


# --- KL to a teacher --------------------------------------------------------------------------


def some_logits(seed, shape=(1, 4, 4, 6, 6)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def a_label_map(shape=(1, 4, 6, 6)):
    target = torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(9))
    target[:, 0] = IGNORE_INDEX
    return target


def test_kl_of_identical_predictions_is_zero():
    logits = some_logits(0)
    assert voxel_kl(logits, logits.clone(), a_label_map()).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_of_different_predictions_is_positive_and_matches_the_definition():
    student, teacher, target = some_logits(0), some_logits(1), a_label_map()
    p_t, p_s = torch.softmax(teacher, 1), torch.softmax(student, 1)
    per_voxel = (p_t * (p_t.log() - p_s.log())).sum(1)
    expected = per_voxel[target != IGNORE_INDEX].mean()
    value = voxel_kl(student, teacher, target)
    assert value.item() > 0.01
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_excludes_ignored_voxels():
    student, teacher, target = some_logits(0), some_logits(1), a_label_map()
    changed = student.clone()
    changed[:, :, 0] += 5 * torch.randn(changed[:, :, 0].shape)  # slice 0 is ignored
    assert voxel_kl(changed, teacher, target).item() == pytest.approx(
        voxel_kl(student, teacher, target).item(), rel=1e-6
    )
    assert voxel_kl(student, teacher, torch.full_like(target, IGNORE_INDEX)).item() == 0.0


def test_kl_is_computed_on_a_finer_label_grid_when_the_logits_are_coarser():
    student, teacher = some_logits(0, (1, 4, 2, 3, 3)), some_logits(1, (1, 4, 2, 3, 3))
    assert voxel_kl(student, teacher, a_label_map()).item() > 0


def test_a_higher_temperature_softens_the_kl():
    student, teacher, target = some_logits(0), some_logits(1), a_label_map()
    assert voxel_kl(student, teacher, target, 4.0) < voxel_kl(student, teacher, target, 1.0)


def test_a_kl_step_needs_a_teacher_and_a_task_step_refuses_one():
    with pytest.raises(ValueError, match="teacher"):
        Step("1", loss="kl")
    with pytest.raises(ValueError, match="teacher"):
        Step("1", teacher="original")
    with pytest.raises(InvalidInputError, match="step loss"):
        Step("1", loss="kl-to-teacher", teacher="original")


def test_training_leaves_the_teachers_unchanged_and_pulls_the_student_toward_them(a_tiny_source):
    student = a_tiny_model(seed=1)
    teachers = {"original": a_tiny_model(seed=0).train(), "random": a_tiny_model(seed=2).train()}
    before = {name: snapshot(t) for name, t in teachers.items()}
    reference = copy.deepcopy(teachers["original"]).eval()
    sample = a_tiny_source.sample("1")

    def kl_to_original():
        student.eval()
        with torch.no_grad():
            x = sample.image[None]
            return voxel_kl(student(x), reference(x), sample.target[None]).item()

    start = kl_to_original()

    def plan(epoch, rng):
        return [
            Step("1", loss="kl", teacher="original"),
            Step("070", loss="kl", teacher="random"),
            Step("4", loss="task+kl", teacher="original"),
        ]

    train(
        student, a_tiny_source, plan, a_config(epochs=3), CPU, CollectingSink(), teachers=teachers
    )
    for name, teacher in teachers.items():
        after = teacher.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after), name
        assert not teacher.training
    assert kl_to_original() < start


def test_the_random_teacher_is_seeded_and_differs_from_the_original():
    original = a_tiny_model(seed=0)
    spec = medicalnet_spec(original.config)
    first = build_teachers(("random",), original, seed=3, device=CPU, spec=spec)["random"]
    again = build_teachers(("random",), original, seed=3, device=CPU, spec=spec)["random"]
    assert torch.equal(first.conv1.weight, again.conv1.weight)
    assert not torch.equal(first.conv1.weight, original.conv1.weight)
    assert all(not p.requires_grad for p in first.parameters())


def test_a_plan_naming_an_absent_teacher_is_refused(a_tiny_source):
    def plan(epoch, rng):
        return [Step("1", loss="kl", teacher="original")]

    with pytest.raises(InvalidInputError, match="teacher"):
        train(a_tiny_model(), a_tiny_source, plan, a_config(), CPU, CollectingSink())


# --- SalUn: saliency mask ---------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0], ids=["none", "tenth", "half", "all"])
def test_the_mask_holds_the_top_fraction_of_all_entries(fraction):
    scores = {"a": torch.rand(7, 3), "b": torch.rand(11), "c": torch.rand(2, 2, 2)}
    mask = top_fraction_mask(scores, fraction)
    chosen = torch.cat([mask[n].flatten() for n in scores])
    values = torch.cat([scores[n].flatten() for n in scores])
    assert int(chosen.sum()) == round(fraction * values.numel())
    if 0 < fraction < 1:
        assert values[chosen].min() > values[~chosen].max()  # one global threshold


def test_a_mask_fraction_outside_zero_one_is_refused():
    with pytest.raises(InvalidInputError, match="mask_fraction"):
        top_fraction_mask({"a": torch.rand(3)}, 1.5)


def test_the_saliency_pass_leaves_the_model_unchanged(a_tiny_source):
    model = a_tiny_model()
    model.train()
    before = snapshot(model)
    mask = saliency_mask(model, a_tiny_source, ["070"], CPU, 0.25)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == round(0.25 * total)


def test_salun_training_changes_masked_weights_only(a_tiny_source):
    model = a_tiny_model()
    mask = saliency_mask(model, a_tiny_source, ["070"], CPU, 0.3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def plan(epoch, rng):
        return [Step("070", "true", -1.0), Step("1"), Step("4")]

    train(
        model,
        a_tiny_source,
        plan,
        a_config(),
        CPU,
        CollectingSink(),
        after_step=KeepUnmasked(model, mask),
    )
    changed = 0
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter[~mask[name]], before[name][~mask[name]]), name
        changed += int((parameter[mask[name]] != before[name][mask[name]]).sum())
    assert changed > 0


# --- SSD: selective synaptic dampening --------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "dampening", "factor", "count"),
    [(3.0, 2.0, 0.5, 15), (0.5, 8.0, 1.0, 25)],
    ids=["dampened-by-lambda-ratio", "factor-capped-at-one"],
)
def test_dampening_scales_exactly_the_selected_entries(alpha, dampening, factor, count):
    model = a_tiny_model()
    before = snapshot(model)
    importance_all = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    importance_forget = {n: torch.full_like(p, 0.25) for n, p in model.named_parameters()}
    importance_forget["conv1.weight"].view(-1)[:10] = 4.0  # I_f / I_D = 4: selected
    importance_forget["conv1.weight"].view(-1)[10:20] = 2.5  # selected only when alpha < 2.5
    importance_forget["conv_seg.6.weight"].view(-1)[:5] = 4.0
    counts = dampen_(model, importance_all, importance_forget, alpha, dampening)
    assert counts == {"dampened": count, "entries": sum(p.numel() for p in model.parameters())}
    conv1, head = model.conv1.weight.detach().view(-1), model.conv_seg[6].weight.detach().view(-1)
    old_conv1, old_head = before["conv1.weight"].view(-1), before["conv_seg.6.weight"].view(-1)
    # min(lambda * 1 / 4, 1): 0.5 with lambda 2, capped at 1 with lambda 8 (min(8 / 2.5, 1) = 1)
    assert torch.equal(conv1[:10], old_conv1[:10] * factor)
    assert torch.equal(head[:5], old_head[:5] * factor)
    assert torch.equal(conv1[10:], old_conv1[10:]) and torch.equal(head[5:], old_head[5:])
    if factor != 1.0:
        assert not torch.equal(conv1[:10], old_conv1[:10])
    untouched = {"conv1.weight", "conv_seg.6.weight"}
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items() if k not in untouched
    )


def test_dampening_skips_a_frozen_decoder():
    model = a_tiny_model()
    before = snapshot(model)
    ones = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    fours = {n: torch.full_like(p, 4.0) for n, p in model.named_parameters()}
    dampen_(model, ones, fours, 3.0, 1.0, skip_prefixes=("conv_seg",))
    assert torch.equal(model.conv_seg[6].weight, before["conv_seg.6.weight"])
    assert torch.equal(model.conv1.weight, before["conv1.weight"] * 0.25)


def test_importances_are_mean_squared_subject_gradients(a_tiny_source):
    model = a_tiny_model()
    grads = dict(subject_gradients(model, a_tiny_source, ["1", "4", "070"], CPU))
    all_, forget = importances(model, a_tiny_source, ["070"], ["1", "4"], CPU)
    name = "layer1.0.conv1.weight"
    expected_all = sum(grads[i][name].square() for i in ("1", "4", "070")) / 3
    assert torch.allclose(all_[name], expected_all, rtol=1e-6, atol=0)
    assert torch.equal(forget[name], grads["070"][name].square())
    assert forget[name].abs().sum() > 0


def test_an_alpha_that_can_select_nothing_is_refused(a_tiny_source):
    with pytest.raises(InvalidInputError, match="alpha") as error:
        selective_dampening(a_tiny_model(), a_tiny_source, ["070"], ["1", "4"], CPU, 3.0, 1.0)
    assert "alpha < 3" in error.value.hint


# --- end to end -------------------------------------------------------------------------------


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", LITERATURE, ids=LITERATURE)
def test_an_unlearn_run_finishes_with_finite_metrics(
    name, a_tiny_cohort, a_tiny_trained_model, tmp_path
):
    checkpoint_digest = digest(a_tiny_trained_model)
    job = JobSpec(
        command="unlearn",
        cohort=str(a_tiny_cohort),
        output=str(tmp_path / "out"),
        checkpoint=str(a_tiny_trained_model),
        forget_ids=["070"],
        strategy=name,
        strategy_params={"steps": 2} if get_strategy(name).trains else {},
        eval_epochs=[2],
        device="cpu",
        seed=0,
    )
    outputs = run_job(job, CollectingSink())
    assert digest(a_tiny_trained_model) == checkpoint_digest
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    trains = get_strategy(name).trains
    assert [(e["model"], e["epoch"]) for e in metrics["evaluations"]] == [
        ("original", 0),
        ("unlearned", 2 if trains else 0),
    ]
    assert len(metrics["summary"]) == 1
    for evaluation in metrics["evaluations"]:
        for role in ("forget", "retain"):
            assert math.isfinite(evaluation["sets"][role]["dice"])
    original = load_checkpoint(a_tiny_trained_model).model.state_dict()
    unlearned = load_checkpoint(outputs["checkpoint"])
    assert any(not torch.equal(original[k], v) for k, v in unlearned.model.state_dict().items())
    entry = unlearned.metadata["training_history"][-1]
    assert entry["strategy"] == name
    assert (entry["steps"] > 0) == trains
    if name == "salun":
        assert entry["saliency_mask"]["masked"] == round(0.5 * entry["saliency_mask"]["entries"])
    if name == "bad-teacher":
        assert entry["random_teacher_seed"] == 0
    if name == "ssd":
        assert entry["dampening"]["dampened"] > 0
