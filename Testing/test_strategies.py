"""Each mechanic changes exactly what it claims; the registry behaves like a registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MachineUnlearningLib.data.labels import IGNORE_INDEX
from MachineUnlearningLib.model.checkpoint import medicalnet_spec
from MachineUnlearningLib.model.resnet import MedicalNetSegmentation, ModelConfig
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.strategies import (
    STRATEGIES,
    describe_strategies,
    get_strategy,
    register,
    strategies_markdown,
)
from MachineUnlearningLib.strategies.plan import build_plan
from MachineUnlearningLib.strategies.surgery import reinitialise_encoder
from MachineUnlearningLib.strategies.targets import uniform_random_labels, wrong_class_labels

FORGET, RETAIN = ["070"], ["1", "4", "5"]
PAPER = ["noisy-label", "retain-label", "max-loss", "random-encoder", "learn-others", "learn-noise"]


def a_target(seed=0):
    target = torch.from_numpy(np.random.default_rng(seed).integers(0, 4, (4, 8, 8)))
    target[0] = IGNORE_INDEX
    return target


def test_every_paper_preset_is_registered_with_a_description():
    assert set(PAPER) <= set(STRATEGIES)
    listing = describe_strategies()
    assert all(name in listing for name in PAPER) and "--fix-decoder" in listing


def test_a_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(STRATEGIES["noisy-label"])


def test_an_unknown_name_suggests_the_closest():
    with pytest.raises(InvalidInputError, match="Did you mean 'noisy-label'"):
        get_strategy("noisy-labels")


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(InvalidInputError, match="retian_weight") as error:
        get_strategy("noisy-label").resolve({"retian_weight": 2})
    assert "retain_weight" in error.value.hint


def test_uniform_random_targets_keep_ignored_voxels_and_cover_every_class():
    target = a_target()
    noisy = uniform_random_labels(target, 4, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[0], target[0])
    assert set(noisy[1:].unique().tolist()) == {0, 1, 2, 3}
    agreement = (noisy[1:] == target[1:]).float().mean().item()
    assert 0.15 < agreement < 0.35  # about 1/C by chance


def test_wrong_class_targets_never_equal_the_truth():
    target = a_target()
    wrong = wrong_class_labels(target, 4, torch.Generator().manual_seed(0))
    assert torch.equal(wrong[0], target[0])
    assert not (wrong[1:] == target[1:]).any()


@pytest.mark.parametrize(
    ("name", "forget_target", "retain_in_plan"),
    [
        ("noisy-label", "uniform-random", True),
        ("retain-label", None, True),
        ("max-loss", "true", False),
        ("random-encoder", None, True),
        ("learn-others", "subject:", False),
        ("learn-noise", "uniform-random", False),
    ],
    ids=PAPER,
)
def test_plans_carry_what_the_preset_says(name, forget_target, retain_in_plan):
    strategy = get_strategy(name)
    plan = build_plan(strategy, FORGET, RETAIN, strategy.resolve({}))
    steps = plan(1, np.random.default_rng(0))
    forget_steps = [s for s in steps if s.subject_id in FORGET]
    retain_steps = [s for s in steps if s.subject_id in RETAIN]
    assert all(s.target == "true" and s.weight > 0 for s in retain_steps)
    assert bool(retain_steps) == retain_in_plan
    if forget_target is None:
        assert not forget_steps
    else:
        assert len(forget_steps) == 1 and forget_steps[0].target.startswith(forget_target)
    if name == "max-loss":
        assert forget_steps[0].weight < 0
    if name == "learn-others":
        assert forget_steps[0].target.removeprefix("subject:") in RETAIN


def test_learn_others_redraws_the_partner_across_epochs():
    strategy = get_strategy("learn-others")
    plan = build_plan(strategy, FORGET, RETAIN, strategy.resolve({}))
    rng = np.random.default_rng(0)
    partners = {plan(e, rng)[0].target for e in range(20)}
    assert len(partners) > 1


def test_reinitialise_encoder_changes_encoder_only_and_is_seeded():
    config = ModelConfig(
        depth=10, shortcut_type="B", num_classes=4, in_channels=3, base_width=4, head_channels=8
    )
    model = MedicalNetSegmentation(config, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reinitialise_encoder(model, medicalnet_spec(config), seed=7)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("conv_seg"))
    assert not torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])
    again = MedicalNetSegmentation(config, generator=torch.Generator().manual_seed(0))
    reinitialise_encoder(again, medicalnet_spec(config), seed=7)
    assert torch.equal(again.state_dict()["conv1.weight"], after["conv1.weight"])


def test_generated_docs_define_every_preset_and_say_our_interpretation():
    text = strategies_markdown()
    for name in PAPER:
        assert f"## `{name}`" in text
    assert text.count("*Our interpretation.*") >= len(PAPER)
    assert "## `--fix-decoder`" in text


def test_committed_strategy_docs_match_the_registry():
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"
    assert committed.read_text(encoding="utf-8") == strategies_markdown(), (
        "docs/strategies.md is stale: run scripts/generate_strategy_docs.py"
    )
