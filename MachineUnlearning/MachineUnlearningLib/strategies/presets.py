"""The paper's presets as compositions of mechanics.

Definitions follow ../shared/reference/unlearning.md section 2: only the paper's abstract and a
third-party summary are public, so every definition here is **our interpretation** of the
strategy names, not the authors' algorithm.
"""

from __future__ import annotations

from MachineUnlearningLib.strategies.base import Parameter, Strategy

WEIGHTS = (
    Parameter("forget_weight", float, 1.0, "loss weight of forget samples"),
    Parameter("retain_weight", float, 1.0, "loss weight of retain samples"),
)
RANDOM_LABELS = Parameter(
    "random_labels",
    str,
    "uniform-random",
    "uniform-random (any class, the definition) or wrong-class (any class but the true one)",
)

PAPER_PRESETS: tuple[Strategy, ...] = (
    Strategy(
        name="noisy-label",
        summary="retain subjects with true labels + forget subjects with uniform random labels",
        forget_target="uniform-random",
        replay_retain=True,
        reinit_encoder=False,
        definition="Each epoch visits every retain subject with its true mask and every forget "
        "subject with a fresh uniform random class per non-ignored voxel (re-drawn each time), "
        "shuffled; cross-entropy is minimised; all parameters train.",
        interpretation=True,
        source="arXiv 2606.16180 (name only); random-label relabelling as in SalUn's RL",
        parameters=(*WEIGHTS, RANDOM_LABELS),
    ),
    Strategy(
        name="retain-label",
        summary="fine-tune on the retain subjects only (forget subjects never shown)",
        forget_target="none",
        replay_retain=True,
        reinit_encoder=False,
        definition="Minimise cross-entropy on the retain subjects with their true masks; the "
        "forget subjects are never shown (catastrophic-forgetting unlearning, = fine-tune).",
        interpretation=True,
        source="arXiv 2606.16180 (name only)",
        parameters=WEIGHTS[1:],
    ),
    Strategy(
        name="max-loss",
        summary="gradient ascent on the forget subjects' true labels (bounded)",
        forget_target="ascent",
        replay_retain=False,
        reinit_encoder=False,
        definition="Minimise -CE on the forget subjects with their true masks (gradient "
        "ascent). Safeguards (ours): each sample's CE is capped at 2 ln C so the ascent stops "
        "once the subject is predicted worse than chance, gradients are clipped, and a "
        "non-finite loss stops the run. Default learning rate 2e-3 (ours; an epoch is one step "
        "per forget subject): the former 1e-4 left the tiny test model's predictions almost "
        "unchanged in 50 epochs (a one-run check; the tests assert that 2e-3 acts).",
        interpretation=True,
        source="arXiv 2606.16180 (name only); gradient ascent / NegGrad",
        parameters=WEIGHTS[:1],
        defaults=(("learning_rate", 2e-3),),
    ),
    Strategy(
        name="random-encoder",
        summary="re-initialise the encoder, keep the decoder, train on the retain subjects",
        forget_target="none",
        replay_retain=True,
        reinit_encoder=True,
        definition="Re-draw every encoder weight (the architecture adapter's encoder scope; "
        "MedicalNet: conv1, bn1, layer1-4) with the family's own initialisation (seeded), "
        "keep the decoder (MedicalNet: conv_seg) from the original model, and minimise "
        "cross-entropy on the retain subjects; encoder and decoder train.",
        interpretation=True,
        source="arXiv 2606.16180 (name only)",
        parameters=WEIGHTS[1:],
    ),
    Strategy(
        name="learn-others",
        summary="forget subjects learn a randomly chosen retain subject's mask",
        forget_target="other-subject",
        replay_retain=False,
        reinit_encoder=False,
        definition="Each epoch, every forget subject's image is paired with the mask of a "
        "retain subject drawn uniformly at random (both on the network grid), and CE is "
        "minimised. Forget-only by default; replay_retain=true interleaves the retain subjects "
        "with their true masks.",
        interpretation=True,
        source="arXiv 2606.16180 (name only; the name appears to be coined by the paper)",
        parameters=(
            *WEIGHTS,
            Parameter("replay_retain", bool, False, "also train on retain subjects"),
        ),
    ),
    Strategy(
        name="learn-noise",
        summary="forget subjects with uniform random labels, no retain replay",
        forget_target="uniform-random",
        replay_retain=False,
        reinit_encoder=False,
        definition="Like noisy-label but without the retain subjects: only forget subjects "
        "with i.i.d. uniform random voxel labels are shown.",
        interpretation=True,
        source="arXiv 2606.16180 (name only; the name appears to be coined by the paper)",
        parameters=(*WEIGHTS[:1], RANDOM_LABELS),
    ),
)

FIX_DECODER_DEFINITION = (
    "Modifier usable with any preset (--fix-decoder): the decoder (the architecture "
    "adapter's decoder scope, docs/bring-your-own-model.md; MedicalNet: conv_seg) is frozen "
    "(requires_grad=False) and its BatchNorm layers stay in eval mode so their running "
    "statistics do not move; only the encoder trains under the preset's objective. Which "
    "pairing the paper used is not available (our interpretation; default pairing in the "
    "docs: noisy-label)."
)
