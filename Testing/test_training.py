"""The one training loop: determinism, learning, cancel, divergence and freezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_SOURCE_IDS, a_tiny_model
from MachineUnlearningLib.runtime.errors import CancelledError, TrainingDivergedError
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.training.loop import TrainingConfig, train
from MachineUnlearningLib.training.steps import Step

IDS = list(TINY_SOURCE_IDS)
CPU = torch.device("cpu")


def every_subject(epoch, rng):
    return [Step(i) for i in IDS]


def config(**changes):
    base = dict(
        epochs=3,
        optimizer="adam",
        learning_rate=3e-3,
        head_lr_multiplier=1.0,
        weight_decay=0.0,
        seed=0,
    )
    return TrainingConfig(**{**base, **changes})


def test_same_seed_gives_bit_identical_weights(a_tiny_source):
    first, second = a_tiny_model(), a_tiny_model()
    train(first, a_tiny_source, every_subject, config(), CPU, CollectingSink())
    train(second, a_tiny_source, every_subject, config(), CPU, CollectingSink())
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_loss_falls_over_training(a_tiny_source):
    history = train(
        a_tiny_model(), a_tiny_source, every_subject, config(epochs=8), CPU, CollectingSink()
    )
    losses = [e["loss"] for e in history.epochs]
    assert losses[-1] < 0.7 * losses[0]


def test_every_step_reports_progress_with_eta(a_tiny_source):
    sink = CollectingSink()
    train(a_tiny_model(), a_tiny_source, every_subject, config(epochs=2), CPU, sink)
    progress = sink.of_kind("progress")
    assert [e["step"] for e in progress] == list(range(1, 7))
    assert all(e["steps"] == 6 and e["eta_s"] >= 0 for e in progress)
    assert progress[-1]["eta_s"] == 0


def test_time_in_the_epoch_hook_is_counted_apart_from_the_loop(a_tiny_source):
    """Evaluations run in ``on_epoch_end``; RTE divides by the loop time without them."""
    import time

    def evaluate(epoch):
        time.sleep(0.2)
        return False

    history = train(
        a_tiny_model(), a_tiny_source, every_subject, config(epochs=2), CPU, CollectingSink(),
        on_epoch_end=evaluate,
    )  # fmt: skip
    assert history.hook_seconds >= 2 * 0.2
    assert history.seconds >= history.hook_seconds
    plain = train(
        a_tiny_model(), a_tiny_source, every_subject, config(epochs=2), CPU, CollectingSink()
    )
    assert plain.hook_seconds == 0.0


def test_cancel_file_stops_before_the_next_step(a_tiny_source, tmp_path):
    cancel = tmp_path / "CANCEL"
    sink = CollectingSink()

    def hook(epoch):
        cancel.touch()
        return False

    with pytest.raises(CancelledError, match="epoch 2, step 1"):
        train(
            a_tiny_model(),
            a_tiny_source,
            every_subject,
            config(),
            CPU,
            sink,
            cancel_path=cancel,
            on_epoch_end=hook,
        )
    assert len(sink.of_kind("progress")) == 3


def test_non_finite_loss_stops_with_a_clear_error(a_tiny_source):
    model = a_tiny_model()
    with torch.no_grad():
        model.conv_seg[6].weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        train(model, a_tiny_source, every_subject, config(), CPU, CollectingSink())


def test_frozen_parameters_and_their_batchnorm_statistics_stay_bit_identical(a_tiny_source):
    model = a_tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(
        model,
        a_tiny_source,
        every_subject,
        config(),
        CPU,
        CollectingSink(),
        frozen_prefixes=("conv_seg",),
    )
    after = model.state_dict()
    decoder = [k for k in before if k.startswith("conv_seg")]
    encoder = [k for k in before if k.startswith("layer1") and "weight" in k]
    assert decoder and all(torch.equal(before[k], after[k]) for k in decoder)
    assert any(not torch.equal(before[k], after[k]) for k in encoder)


@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_frozen_batchnorm_keeps_every_running_statistic_while_weights_train(
    a_tiny_source, batchnorm
):
    model = a_tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, a_tiny_source, every_subject, config(batchnorm=batchnorm), CPU, CollectingSink())
    after = model.state_dict()
    statistics = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith("conv1.weight")]
    assert statistics and weights
    unchanged = [k for k in statistics if torch.equal(before[k], after[k])]
    assert unchanged == (statistics if batchnorm == "frozen" else [])
    assert all(not torch.equal(before[k], after[k]) for k in weights)


def test_gradient_ascent_stays_finite_and_bounded(a_tiny_source):
    ascent = lambda epoch, rng: [Step("070", weight=-1.0)]  # noqa: E731
    history = train(
        a_tiny_model(),
        a_tiny_source,
        ascent,
        config(epochs=6, learning_rate=0.5, optimizer="sgd", grad_clip_norm=1.0),
        CPU,
        CollectingSink(),
    )
    losses = np.array([e["loss"] for e in history.epochs])
    assert np.isfinite(losses).all()
    assert (-losses <= 2 * np.log(4) + 1e-6).all()  # capped at 2 ln C


def test_a_batch_of_mixed_steps_takes_the_mean_of_their_own_losses(a_tiny_source):
    """Batch size 2 with a capped KL-ascent step and a task+KL step in one forward pass: the
    update equals the mean of each step's own gradient (its loss kind, teacher, weight and
    cap), computed here one sample at a time. BatchNorm is frozen so samples are independent."""
    import copy

    from MachineUnlearningLib.training.loop import step_loss

    teacher = a_tiny_model(seed=1).eval()
    steps = [
        Step("070", weight=-1.0, loss="kl", teacher="t"),
        Step("1", weight=0.5, loss="task+kl", teacher="t"),
    ]
    cap = 0.5 * _kl_of(a_tiny_model(), teacher, a_tiny_source, "070")  # the ascent step is capped
    settings = config(
        epochs=1,
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.0,
        grad_clip_norm=None,
        batch_size=2,
        batchnorm="frozen",
        ascent_cap=cap,
        loss="dice-ce",
    )
    reference = a_tiny_model().eval()
    gradients = []
    for step in steps:
        sample = a_tiny_source.sample(step.subject_id)
        x, y = sample.image[None], sample.target[None]
        model = copy.deepcopy(reference)
        with torch.no_grad():
            teacher_logits = teacher(x)
        loss = step_loss(step, model(x), y, teacher_logits, settings)
        if step.weight < 0:
            loss = loss.clamp(max=cap)
        (step.weight * loss).backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()})
    trained = a_tiny_model()
    train(
        trained,
        a_tiny_source,
        lambda epoch, rng: list(steps),
        settings,
        CPU,
        CollectingSink(),
        teachers={"t": teacher},
    )
    before = dict(reference.named_parameters())
    for name, parameter in trained.named_parameters():
        mean = (gradients[0][name] + gradients[1][name]) / 2
        expected = before[name] - 0.1 * mean
        assert torch.allclose(parameter, expected, rtol=1e-5, atol=1e-7), name
    assert any(torch.count_nonzero(g) for g in gradients[1].values())
    assert not any(torch.count_nonzero(g) for g in gradients[0].values())  # capped: no gradient


def _kl_of(model, teacher, source, subject_id):
    from MachineUnlearningLib.training.losses import voxel_kl

    sample = source.sample(subject_id)
    model.eval()
    with torch.no_grad():
        x = sample.image[None]
        return voxel_kl(model(x), teacher(x), sample.target[None]).item()


def test_batches_of_two_train_with_batchnorm_in_training_mode(a_tiny_source):
    history = train(
        a_tiny_model(),
        a_tiny_source,
        every_subject,
        config(epochs=8, batch_size=2),
        CPU,
        CollectingSink(),
    )
    assert [e["steps"] for e in history.epochs] == [2] * 8  # 3 subjects -> batches of 2 and 1
    assert history.epochs[-1]["loss"] < 0.7 * history.epochs[0]["loss"]
