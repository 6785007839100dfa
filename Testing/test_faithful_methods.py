"""The literature methods follow their sources' mechanics (issue 11, item 1).

Teacher and student share the BatchNorm mode (KL is 0 at the first step); SalUn masks the
gradient before it is clipped; step budgets; every default measurably changes the forget
subject's predictions on the tiny cohort.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import a_tiny_model
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.strategies.saliency import KeepUnmasked, saliency_mask
from MachineUnlearningLib.training.loop import TrainingConfig, train
from MachineUnlearningLib.training.steps import Step

CPU = torch.device("cpu")


def a_config(**changes):
    base = dict(
        epochs=1, optimizer="sgd", learning_rate=1e-2, head_lr_multiplier=1.0, seed=0, amp=False
    )
    return TrainingConfig(**{**base, **changes})


# --- BatchNorm mode shared by teacher and student --------------------------------------------


@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_the_kl_to_an_identical_teacher_is_zero_at_the_first_step(batchnorm, a_tiny_source):
    student = a_tiny_model(seed=0)
    teacher = copy.deepcopy(student)

    def plan(epoch, rng):
        return [Step("070", loss="kl", teacher="original")]

    history = train(
        student,
        a_tiny_source,
        plan,
        a_config(batchnorm=batchnorm),
        CPU,
        CollectingSink(),
        teachers={"original": teacher},
    )
    assert history.epochs[0]["loss"] == pytest.approx(0.0, abs=1e-6)


def test_the_teacher_follows_a_frozen_decoder_and_keeps_its_statistics(a_tiny_source):
    student = a_tiny_model(seed=0)
    teacher = copy.deepcopy(student)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    def plan(epoch, rng):
        return [Step("1", loss="kl", teacher="original"), Step("4", loss="kl", teacher="original")]

    history = train(
        student,
        a_tiny_source,
        plan,
        a_config(learning_rate=1e-6),
        CPU,
        CollectingSink(),
        teachers={"original": teacher},
        frozen_prefixes=("conv_seg",),
    )
    assert history.epochs[0]["loss"] < 1e-4
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


# --- SalUn: the mask applies to the gradient before clipping ---------------------------------


def test_salun_clips_the_masked_gradient_not_the_whole_one(a_tiny_source):
    model = a_tiny_model(seed=0)
    mask = saliency_mask(model, a_tiny_source, ["070"], CPU, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clip = 1e-3  # far below both gradient norms, so the clip always acts

    def plan(epoch, rng):
        return [Step("070", "true", -1.0)]

    config = a_config(learning_rate=1.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=clip)
    train(
        model,
        a_tiny_source,
        plan,
        config,
        CPU,
        CollectingSink(),
        after_step=KeepUnmasked(model, mask),
    )
    moved = torch.cat(
        [(p.detach() - before[n])[mask[n]].flatten() for n, p in model.named_parameters()]
    )
    # SGD without momentum: the update is -lr x the clipped masked gradient, of norm lr x clip
    assert moved.norm().item() == pytest.approx(clip, rel=1e-3)
