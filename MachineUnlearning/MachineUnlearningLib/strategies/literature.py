"""Established unlearning methods as presets on the same mechanics and the same loop.

Each is the voxel-wise segmentation form of ../shared/reference/unlearning.md section 3: the
loss is voxel-wise cross-entropy over non-ignored voxels, KL terms are KL_vox (the mean over
non-ignored voxels of sum_c p_t log(p_t / p_s)), and a "sample" is one subject's volume.
``interpretation=True`` marks a preset where we adapted the published algorithm; its
definition says what.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.strategies.base import Parameter, Strategy
from MachineUnlearningLib.strategies.plan import composed_plan
from MachineUnlearningLib.training.steps import TARGETS_TRUE, Plan, Step

SCRUB = "arXiv 2302.09880 (Kurmanji et al. 2023, SCRUB)"
RANDOM_LABELS = ("wrong-class", "uniform-random")


def _unit_interval(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"strategy_params.{name}: must be in [0, 1], got {value}.")
    return value


def neggrad_plus_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """Retain steps with weight alpha, forget ascent steps with weight -(1 - alpha), shuffled."""
    alpha = _unit_interval("alpha", params["alpha"])
    weights = {**params, "retain_weight": alpha, "forget_weight": 1.0 - alpha}
    return composed_plan(strategy, forget_ids, retain_ids, weights)


def salun_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """Random-label unlearning (forget subjects relabelled, retain replay), shuffled."""
    labels = look_up_option(params["random_labels"], RANDOM_LABELS, "random_labels")
    _unit_interval("mask_fraction", params["mask_fraction"])
    relabelled = dataclasses.replace(strategy, forget_target=labels, plan_builder=None)
    return composed_plan(relabelled, forget_ids, retain_ids, params)


def scrub_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """Epochs <= max_steps_epochs: a max pass over the forget subjects; every epoch: a min
    pass over the retain subjects. Each pass is shuffled; the max pass comes first."""
    max_epochs = params["max_steps_epochs"]

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        steps: list[Step] = []
        if epoch <= max_epochs:
            steps += [
                Step(forget_ids[i], TARGETS_TRUE, -1.0, loss="kl", teacher="original")
                for i in rng.permutation(len(forget_ids))
            ]
        steps += [
            Step(retain_ids[i], TARGETS_TRUE, 1.0, loss="task+kl", teacher="original")
            for i in rng.permutation(len(retain_ids))
        ]
        return steps

    return plan


def bad_teacher_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """Forget subjects toward the random teacher, ceil(retain_fraction * |retain|) retain
    subjects (drawn afresh each epoch) toward the original; shuffled together."""
    fraction = _unit_interval("retain_fraction", params["retain_fraction"])
    count = math.ceil(fraction * len(retain_ids))

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        chosen = rng.choice(len(retain_ids), size=count, replace=False)
        steps = [Step(f, TARGETS_TRUE, 1.0, loss="kl", teacher="random") for f in forget_ids]
        steps += [
            Step(retain_ids[i], TARGETS_TRUE, 1.0, loss="kl", teacher="original")
            for i in sorted(chosen)
        ]
        return [steps[i] for i in rng.permutation(len(steps))]

    return plan


LITERATURE_PRESETS: tuple[Strategy, ...] = (
    Strategy(
        name="finetune",
        summary="fine-tune (FT) on the retain subjects with their true labels",
        forget_target="none",
        replay_retain=True,
        reinit_encoder=False,
        definition="Minimise voxel-wise cross-entropy on the retain subjects with their true "
        "masks, starting from the original weights; the forget subjects are never shown, so "
        "forgetting relies on catastrophic forgetting. Same mechanics as retain-label, under "
        "the literature's name.",
        interpretation=False,
        source="common baseline (fine-tuning, FT; e.g. the baselines of arXiv 2302.09880)",
    ),
    Strategy(
        name="neggrad-plus",
        summary="retain descent (weight alpha) + forget gradient ascent (weight 1 - alpha)",
        forget_target="ascent",
        replay_retain=True,
        reinit_encoder=False,
        definition="Minimise alpha * CE on the retain subjects and -(1 - alpha) * CE on the "
        "forget subjects (true labels). Adapted (ours): every subject is its own step, "
        "shuffled within the epoch, instead of each step pairing a retain and a forget batch, "
        "so the per-epoch balance is alpha * |retain| against (1 - alpha) * |forget| (with one "
        "forget and six retain subjects and alpha 0.9: 5.4 against 0.1); the forget "
        "subjects' CE is capped at 2 ln C and gradients are clipped, as for max-loss. Default "
        "alpha 0.9 with learning rate 1e-3 (its own default): a forget step then moves the "
        "weights as far as a max-loss step (learning rate 1e-4, weight 1), while retain steps "
        "stay close to fine-tuning.",
        interpretation=True,
        source=f"{SCRUB}, the NegGrad+ baseline",
        parameters=(Parameter("alpha", float, 0.9, "retain weight; forget weight is 1 - alpha"),),
        defaults=(("learning_rate", 1e-3),),
        plan_builder=neggrad_plus_plan,
    ),
    Strategy(
        name="salun",
        summary="random labels + retain replay, updating only the most forget-salient weights",
        forget_target="wrong-class",
        replay_retain=True,
        reinit_encoder=False,
        definition="Before training, the saliency of every parameter entry is |gradient of "
        "the forget subjects' mean CE (true labels)| at the original weights (BatchNorm in "
        "eval mode); the mask keeps the top mask_fraction of all entries (one global "
        "threshold). Then random-label unlearning: each epoch visits the retain subjects with "
        "their true masks and the forget subjects with random voxel labels (random_labels: "
        "wrong-class, i.e. uniform over the other classes, or uniform-random), re-drawn every "
        "visit, shuffled; CE is minimised. After every optimiser step, entries outside the "
        "mask are restored to their original values (theta = m * theta' + (1 - m) * theta_o, "
        "the paper's update; this also undoes weight decay and momentum on them). BatchNorm "
        "running statistics are not weights and update as usual.",
        interpretation=False,
        source="arXiv 2310.12508 (Fan et al. 2023, SalUn)",
        parameters=(
            Parameter("mask_fraction", float, 0.5, "fraction of weights allowed to change"),
            Parameter("random_labels", str, "wrong-class", "wrong-class or uniform-random"),
        ),
        update_mask="saliency",
        plan_builder=salun_plan,
    ),
    Strategy(
        name="scrub",
        summary="student-teacher: move away from the original on forget, stay close on retain",
        forget_target="teacher-divergence",
        replay_retain=True,
        reinit_encoder=False,
        definition="Student = copy of the original model, teacher = the frozen original. "
        "In each epoch up to max_steps_epochs, a max pass over the forget subjects minimises "
        "-KL_vox(p_teacher || p_student); then, every epoch, a min pass over the retain "
        "subjects minimises CE + kl_weight * KL_vox(p_teacher || p_student) (true labels). "
        "Adapted (ours): temperature 1 and CE weight 1 (SCRUB's gamma); the max-step KL is "
        "capped at 2 ln C nats and gradients are clipped, like every ascent in this loop.",
        interpretation=True,
        source=SCRUB,
        parameters=(
            Parameter("max_steps_epochs", int, 2, "epochs that start with a forget max pass"),
            Parameter("kl_weight", float, 1.0, "weight of the KL term of retain steps"),
        ),
        teachers=("original",),
        plan_builder=scrub_plan,
    ),
    Strategy(
        name="bad-teacher",
        summary="distil a random teacher on forget, the original on retain",
        forget_target="random-teacher",
        replay_retain=True,
        reinit_encoder=False,
        definition="Student = copy of the original model; competent teacher = the frozen "
        "original; incompetent teacher = a randomly initialised model of the same "
        "architecture (its family's own initialisation, seeded by the run's seed, recorded). "
        "Minimise KL_vox(p_T || p_student) at temperature `temperature` (softmax of logits / "
        "temperature, no temperature^2 factor), with p_T from the incompetent teacher on "
        "forget subjects and from the competent teacher on retain subjects. An epoch visits "
        "the forget subjects and ceil(retain_fraction * |retain|) retain subjects drawn at "
        "random (re-drawn each epoch), shuffled; the default is one epoch, as in the paper.",
        interpretation=False,
        source="arXiv 2205.08096 (Chundawat et al. 2023, Bad Teacher)",
        parameters=(
            Parameter("temperature", float, 1.0, "softmax temperature of the KL"),
            Parameter("retain_fraction", float, 0.3, "fraction of retain subjects per epoch"),
        ),
        defaults=(("epochs", 1),),
        teachers=("original", "random"),
        plan_builder=bad_teacher_plan,
    ),
    Strategy(
        name="ssd",
        summary="selective synaptic dampening: shrink forget-specific weights, no training",
        forget_target="importance",
        replay_retain=False,
        reinit_encoder=False,
        definition="No training. Importances are diagonal Fisher estimates at the original "
        "weights: I_D = mean over D = retain + forget subjects of the squared gradient of "
        "each subject's CE (true labels, BatchNorm in eval mode, one subject per gradient), "
        "I_f = the same over the forget subjects. Every parameter entry with I_f > alpha * "
        "I_D is multiplied by min(lambda * I_D / I_f, 1); every other entry stays "
        "bit-identical (with --fix-decoder the decoder is not touched). The dampened model is "
        "evaluated once, as the unlearned model at epoch 0; the optimiser parameters, epochs "
        "and evaluation epochs do not apply. Adapted (ours): default alpha 5, not the paper's "
        "10. With one subject per gradient, I_D >= (|forget| / |D|) * I_f for every entry, so "
        "nothing can be selected unless alpha < |D| / |forget| (7 with MRBrainS18's 7 "
        "subjects and one forget subject); a run with a larger alpha stops with an error. "
        "alpha needs tuning per architecture and cohort (on the tiny test model, alpha 5 "
        "dampens under 1 % of the entries).",
        interpretation=True,
        source="arXiv 2308.07707 (Foster et al. 2023, SSD)",
        parameters=(
            Parameter("alpha", float, 5.0, "selection threshold: I_f > alpha * I_D"),
            Parameter("lambda", float, 1.0, "dampening constant"),
        ),
        trains=False,
        surgery="selective-dampening",
    ),
)
