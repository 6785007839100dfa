"""Established unlearning methods as presets on the same mechanics and the same loop.

Each is the voxel-wise segmentation form of ../shared/reference/unlearning.md section 3: the
loss is voxel-wise cross-entropy over non-ignored voxels, KL terms are KL_vox (the mean over
non-ignored voxels of sum_c p_t log(p_t / p_s)), and a "sample" is one subject's volume.
``interpretation=True`` marks a preset where we adapted the published algorithm; its
definition says what.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.strategies.base import Parameter, Strategy
from MachineUnlearningLib.strategies.plan import Cycle
from MachineUnlearningLib.training.steps import TARGETS_TRUE, Plan, Step

SCRUB = "arXiv 2302.09880 (Kurmanji et al. 2023, SCRUB)"
SCRUB_NOTEBOOK = "meghdadk/SCRUB small_scale_unlearning.ipynb"
RANDOM_LABELS = ("wrong-class", "uniform-random")
STEP_BUDGET = (
    "The budget is `steps` optimiser steps (one batch of `batch_size` volumes each), not "
    "epochs: an epoch of this cohort is a few volumes where the source's is hundreds of "
    "batches. Default budgets stay under a fifth of a bench retrain (240 volume-steps; "
    "xcadet/deepunlearn munl/hpsearch/suggestor.py `get_num_epochs_suggestion` caps every "
    "method at 20 % of the original training's epochs)."
)


def _unit_interval(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"strategy_params.{name}: must be in [0, 1], got {value}.")
    return value


def _at_least(name: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise InvalidInputError(f"strategy_params.{name}: must be >= {minimum}, got {value}.")
    return value


def retain_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """One batch per epoch: ``batch_size`` retain subjects from a shuffled cycle, true labels."""
    retain = Cycle(retain_ids)

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        return [Step(retain.next(rng)) for _ in range(params["batch_size"])]

    return plan


def neggrad_plus_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """One batch per epoch of ``batch_size / 2`` pairs (a retain subject with weight 2 alpha,
    a forget subject ascended with weight 2 (1 - alpha)): the loop's batch mean is then
    alpha * CE_r - (1 - alpha) * CE_f per pair, the source's loss."""
    alpha = _unit_interval("alpha", params["alpha"])
    if params["batch_size"] % 2:
        raise InvalidInputError(
            f"strategy_params.batch_size: neggrad-plus pairs each retain volume with a forget "
            f"volume, so the batch size must be even, got {params['batch_size']}."
        )
    retain, forget = Cycle(retain_ids), Cycle(forget_ids)

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        steps: list[Step] = []
        for _ in range(params["batch_size"] // 2):
            steps.append(Step(retain.next(rng), TARGETS_TRUE, 2 * alpha))
            steps.append(Step(forget.next(rng), TARGETS_TRUE, -2 * (1 - alpha)))
        return steps

    return plan


def salun_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """One batch per epoch from a shuffled cycle over forget + retain subjects (the source's
    ConcatDataset of relabelled forget and retain data): forget subjects get random labels."""
    labels = look_up_option(params["random_labels"], RANDOM_LABELS, "random_labels")
    _unit_interval("mask_fraction", params["mask_fraction"])
    forget = set(forget_ids)
    pool = Cycle([*forget_ids, *(r for r in retain_ids if r not in forget)])

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        chosen = [pool.next(rng) for _ in range(params["batch_size"])]
        return [Step(i, labels if i in forget else TARGETS_TRUE) for i in chosen]

    return plan


def scrub_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """SCRUB's schedule in rounds: round k (from 1) is ``max_steps_per_round`` max steps
    (forget subjects, -T^2 KL) when k <= ``max_rounds``, then ``min_steps_per_round`` min steps
    (retain subjects, CE + kl_weight KL); rounds repeat until the budget is spent. One batch per
    loop epoch; the subjects of each kind come from their own shuffled cycle."""
    max_rounds = _at_least("max_rounds", params["max_rounds"], 0)
    max_per = _at_least("max_steps_per_round", params["max_steps_per_round"], 0)
    min_per = _at_least("min_steps_per_round", params["min_steps_per_round"], 1)
    ascent = -(params["temperature"] ** 2)  # DistillKL's T^2 factor (the loop's KL has none)
    retain, forget = Cycle(retain_ids), Cycle(forget_ids)

    def kind(epoch: int) -> str:
        index = epoch - 1
        for round_ in range(1, index + 2):
            size = (max_per if round_ <= max_rounds else 0) + min_per
            if index < size:
                return "max" if index < size - min_per else "min"
            index -= size
        raise AssertionError("unreachable")

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        if kind(epoch) == "max":
            return [
                Step(forget.next(rng), TARGETS_TRUE, ascent, loss="kl", teacher="original")
                for _ in range(params["batch_size"])
            ]
        return [
            Step(retain.next(rng), TARGETS_TRUE, 1.0, loss="task+kl", teacher="original")
            for _ in range(params["batch_size"])
        ]

    return plan


def bad_teacher_plan(
    strategy: Strategy, forget_ids: Sequence[str], retain_ids: Sequence[str], params: dict
) -> Plan:
    """ceil(retain_fraction * |retain|) retain subjects are drawn once (the source's
    ``random.sample`` of 30 % of the retain set); each loop epoch is one batch from a shuffled
    cycle over the forget subjects (toward the random teacher) and that subset (toward the
    original)."""
    fraction = _unit_interval("retain_fraction", params["retain_fraction"])
    count = math.ceil(fraction * len(retain_ids))
    forget = set(forget_ids)
    state: dict[str, Cycle] = {}

    def plan(epoch: int, rng: np.random.Generator) -> list[Step]:
        if "pool" not in state:
            chosen = sorted(rng.choice(len(retain_ids), size=count, replace=False))
            state["pool"] = Cycle([*forget_ids, *(retain_ids[i] for i in chosen)])
        steps = []
        for _ in range(params["batch_size"]):
            subject = state["pool"].next(rng)
            teacher = "random" if subject in forget else "original"
            steps.append(Step(subject, TARGETS_TRUE, 1.0, loss="kl", teacher=teacher))
        return steps

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
        "forgetting relies on catastrophic forgetting. Each step takes `batch_size` retain "
        "subjects from a shuffled cycle. Source settings (OPTML-Group/Unlearn-Sparse "
        "README.MD, FT: `--unlearn_lr 0.01 --unlearn_epochs 10`; arg_parser.py: SGD momentum "
        "0.9, weight decay 5e-4): SGD with momentum 0.9 kept; weight decay stays the common "
        "1e-3. Changed (ours): learning rate 0.03, as 30 steps at 0.01 barely moved a bench "
        "model's forget Dice (a one-run check, not the protocol; the protocol tunes it). "
        + STEP_BUDGET,
        interpretation=False,
        source="common baseline (fine-tuning, FT; e.g. the baselines of arXiv 2302.09880); "
        "settings from OPTML-Group/Unlearn-Sparse",
        defaults=(("steps", 30), ("learning_rate", 3e-2)),
        budget="steps",
        plan_builder=retain_plan,
    ),
    Strategy(
        name="neggrad-plus",
        summary="each step pairs a retain batch (weight alpha) with an ascended forget batch",
        forget_target="ascent",
        replay_retain=True,
        reinit_encoder=False,
        definition="Each optimiser step pairs one retain volume with one forget volume "
        "(each from its own shuffled cycle; `batch_size` 2 = one pair) and minimises "
        "alpha * CE_retain - (1 - alpha) * CE_forget (true labels), as the source's "
        "`run_neggrad_epoch` does with `zip(retain_loader, cycle(forget_loader))` "
        f"({SCRUB_NOTEBOOK}; the same in xcadet/deepunlearn munl/unlearning/neggradplus.py). "
        "Source settings (the notebook's `args.ng_alpha = 0.95`, `ng_lr = 0.01`, "
        "`torch.optim.SGD(..., weight_decay=0.0)` without momentum, `model.eval()`, i.e. "
        "BatchNorm on its running statistics): alpha and frozen BatchNorm kept. Changed "
        "(ours): momentum 0.9 (the common one) and learning rate 0.03: in 20 steps the "
        "source's lr 0.01 (with or without momentum) barely moved the tiny test model or a "
        "bench model, and 0.1 wiped out every subject (one-run checks, not the protocol; the "
        "protocol tunes it). Also ours: the forget CE is capped at 2 ln C and gradients are "
        "clipped, like every ascent in this loop; the source's L2 pull toward the original "
        "weights is left out. " + STEP_BUDGET,
        interpretation=True,
        source=f"{SCRUB}, the NegGrad+ baseline; {SCRUB_NOTEBOOK}",
        parameters=(Parameter("alpha", float, 0.95, "retain weight; forget weight is 1 - alpha"),),
        defaults=(
            ("steps", 20),
            ("batch_size", 2),
            ("learning_rate", 3e-2),
            ("weight_decay", 0.0),
            ("batchnorm", "frozen"),
        ),
        budget="steps",
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
        "threshold). Then random-label unlearning: each step takes `batch_size` subjects "
        "from a shuffled cycle over the forget and retain subjects (the source's "
        "ConcatDataset), the forget subjects with random voxel labels (random_labels: "
        "wrong-class, i.e. uniform over the other classes, or uniform-random), re-drawn every "
        "visit; CE is minimised. As in OPTML-Group/Unlearn-Saliency Classification/unlearn/"
        "RL.py, the gradient is multiplied by the mask after the backward pass (before the "
        "loop's clip, so the clip bounds the masked update), and after every optimiser step "
        "entries outside the mask are restored to their original values (theta = m * theta' "
        "+ (1 - m) * theta_o; this also undoes weight decay and momentum on them). BatchNorm "
        "running statistics are not weights and update as usual. Source settings "
        "(Classification/README.md, RL: `--unlearn_lr 0.013 --unlearn_epochs 10`, mask 0.5; "
        "arg_parser.py: SGD momentum 0.9): kept. " + STEP_BUDGET,
        interpretation=False,
        source="arXiv 2310.12508 (Fan et al. 2023, SalUn); OPTML-Group/Unlearn-Saliency",
        parameters=(
            Parameter("mask_fraction", float, 0.5, "fraction of weights allowed to change"),
            Parameter("random_labels", str, "wrong-class", "wrong-class or uniform-random"),
        ),
        defaults=(("steps", 30), ("learning_rate", 0.013)),
        update_mask="saliency",
        budget="steps",
        plan_builder=salun_plan,
    ),
    Strategy(
        name="scrub",
        summary="student-teacher: move away from the original on forget, stay close on retain",
        forget_target="teacher-divergence",
        replay_retain=True,
        reinit_encoder=False,
        definition="Student = copy of the original model, teacher = the frozen original "
        "(run in the student's BatchNorm mode, so their KL is 0 at the first step). The "
        "schedule is the source's in rounds: rounds 1..max_rounds begin with a max pass of "
        "max_steps_per_round steps on forget subjects minimising -T^2 KL_T(p_teacher || "
        "p_student); every round then has a min pass of min_steps_per_round steps on retain "
        "subjects minimising CE + kl_weight * KL_T (true labels); rounds repeat until the "
        "`steps` budget is spent. KL_T is KL_vox at temperature T (softmax of logits / T); "
        "T^2 is the source's DistillKL factor (thirdparty/repdistiller/distiller_zoo/KD.py). "
        f"Source settings ({SCRUB_NOTEBOOK}, the SCRUB cell: `optim adam`, "
        "`sgda_learning_rate 0.0005`, `gamma 1` (CE weight), `alpha 0.5` (KL weight), "
        "`kd_T 2`, `msteps 3` of `sgda_epochs 10`; loop in thirdparty/repdistiller/helper/"
        "loops.py `train_distill`): Adam, T 2, CE weight 1 and KL weight 0.5 x T^2 kept. "
        "Changed (ours): the source's epochs (a max pass over the forget set, then a min pass "
        "over the retain set) become rounds counted in steps; a max pass of 3 steps and a "
        "min pass of one visit per retain subject (6 here); the learning-rate decay at epochs "
        "5, 8, 9 and the weight decay 0.1 are left out (constant rate, common weight decay); "
        "the max-step KL is capped at 2 ln C nats and gradients are clipped, like every "
        "ascent in this loop. The first max step has zero gradient (the student equals the "
        "teacher, where KL is at its minimum); later ones act once min steps have moved the "
        "student. " + STEP_BUDGET,
        interpretation=True,
        source=f"{SCRUB}; {SCRUB_NOTEBOOK}",
        parameters=(
            Parameter("max_rounds", int, 2, "rounds that begin with a max pass (msteps)"),
            Parameter("max_steps_per_round", int, 3, "forget (max) steps per max pass"),
            Parameter("min_steps_per_round", int, 6, "retain (min) steps per round"),
            Parameter("temperature", float, 2.0, "KL temperature T (source kd_T 2)"),
            Parameter(
                "kl_weight",
                float,
                2.0,
                "weight of the KL term of retain steps: the source's alpha 0.5 x T^2",
            ),
        ),
        defaults=(("steps", 30), ("optimizer", "adam"), ("learning_rate", 5e-4)),
        teachers=("original",),
        budget="steps",
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
        "architecture (its family's own initialisation, seeded by the run's seed, recorded); "
        "both run in the student's BatchNorm mode. Minimise KL_vox(p_T || p_student) at "
        "temperature `temperature` (softmax of logits / temperature, no temperature^2 "
        "factor, as the source's `UnlearnerLoss`), with p_T from the incompetent teacher on "
        "forget subjects and from the competent teacher on retain subjects. "
        "ceil(retain_fraction * |retain|) retain subjects are drawn once; each step takes "
        "`batch_size` subjects from a shuffled cycle over them and the forget subjects. "
        "Source settings (vikram2000b/bad-teaching-unlearning CIFARSuper20_Rocket_Unlearn."
        "ipynb: `torch.optim.Adam(..., lr = 0.0001)`, `epochs = 1`, a 30 % retain subset; "
        "unlearn.py `blindspot_unlearner`, KL_temperature 1): Adam at 1e-4, temperature 1 and "
        "the 30 % subset kept. Changed (ours): the source's one epoch is about 60 batches of "
        "256 images; here the budget is `steps` (30 steps at the source's rate already move a "
        "bench model's forget subject, and 1e-3 wiped it out, in a one-run check). " + STEP_BUDGET,
        interpretation=True,
        source="arXiv 2205.08096 (Chundawat et al. 2023, Bad Teacher); "
        "vikram2000b/bad-teaching-unlearning",
        parameters=(
            Parameter("temperature", float, 1.0, "softmax temperature of the KL"),
            Parameter("retain_fraction", float, 0.3, "fraction of retain subjects used"),
        ),
        defaults=(("steps", 30), ("optimizer", "adam"), ("learning_rate", 1e-4)),
        teachers=("original", "random"),
        budget="steps",
        plan_builder=bad_teacher_plan,
    ),
    Strategy(
        name="l1-sparse",
        summary="fine-tune on the retain subjects with a decaying L1 penalty on every weight",
        forget_target="none",
        replay_retain=True,
        reinit_encoder=False,
        definition="Minimise CE on the retain subjects (true labels; `batch_size` from a "
        "shuffled cycle per step) + gamma_t * ||theta||_1 over every trainable entry, with "
        "gamma_t = gamma * (1 - t / steps) at step t (from 0), decaying linearly to 0 over "
        "the budget, as OPTML-Group/Unlearn-Sparse unlearn/FT.py `FT_iter` (with_l1) does "
        "over its epochs. The penalty's gradient gamma_t * sign(theta) is added to the "
        "gradient before the loop's clip; the loss the loop reports is the CE alone. Source "
        "settings (FT: `--unlearn_lr 0.01`, SGD momentum 0.9): kept. Changed (ours): gamma "
        "(see its default); the optional pruning before fine-tuning is left out. " + STEP_BUDGET,
        interpretation=True,
        source="arXiv 2304.04934 (Jia et al. 2023, l1-sparse unlearning); "
        "OPTML-Group/Unlearn-Sparse",
        parameters=(
            Parameter(
                "gamma",
                float,
                5e-3,
                "initial L1 weight per entry (the source's `--alpha`, a sum over every "
                "weight, is tuned per model; ours: chosen so the penalty measurably moves the "
                "tiny test model and the bench model within the budget)",
            ),
        ),
        defaults=(("steps", 30),),
        regulariser="l1",
        budget="steps",
        plan_builder=retain_plan,
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
        "and evaluation epochs do not apply. Source settings (if-loops/selective-synaptic-"
        "dampening src/forget_random_main.py and the other *_main.py: `dampening_constant` "
        "1, `selection_weighting` 10 x `model_size_scaler`; importances from batches of the "
        "full training set and of the forget set): lambda 1 kept. Adapted (ours): default "
        "alpha 4, not 10. With one subject per gradient, I_D >= (|forget| / |D|) * I_f for "
        "every entry, so nothing can be selected unless alpha < |D| / |forget| (7 with "
        "MRBrainS18's 7 subjects and one forget subject); a run with a larger alpha stops "
        "with an error. alpha needs tuning per architecture and cohort: on the tiny test "
        "model alpha 5 left the predictions almost unchanged and alpha 3 wiped out every "
        "subject (a one-run check; the tests assert that alpha 4 acts).",
        interpretation=True,
        source="arXiv 2308.07707 (Foster et al. 2023, SSD)",
        parameters=(
            Parameter("alpha", float, 4.0, "selection threshold: I_f > alpha * I_D"),
            Parameter("lambda", float, 1.0, "dampening constant"),
        ),
        trains=False,
        surgery="selective-dampening",
    ),
)
