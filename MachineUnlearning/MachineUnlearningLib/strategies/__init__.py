"""Unlearning strategies: one registry of named presets composed from mechanics.

``get_strategy(name)`` returns a frozen :class:`Strategy`; ``describe_strategies()`` is what
``machine-unlearning strategies`` prints and ``strategies_markdown()`` generates
docs/strategies.md, so the CLI, the docs and the Slicer module list the same presets.
"""

from __future__ import annotations

from MachineUnlearningLib.runtime.options import look_up_option
from MachineUnlearningLib.strategies.base import COMMON_PARAMETERS, Parameter, Strategy
from MachineUnlearningLib.strategies.literature import LITERATURE_PRESETS
from MachineUnlearningLib.strategies.presets import FIX_DECODER_DEFINITION, PAPER_PRESETS

STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the registry; a duplicate name is an error."""
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy
    return strategy


for _preset in (*PAPER_PRESETS, *LITERATURE_PRESETS):
    register(_preset)


def get_strategy(name: str) -> Strategy:
    """The preset ``name``; an unknown name lists the valid ones."""
    return STRATEGIES[look_up_option(name, STRATEGIES, "strategy")]


def describe_strategies() -> str:
    """Plain-text listing for the CLI: one line per preset, then its parameters."""
    lines = []
    for strategy in STRATEGIES.values():
        lines.append(f"{strategy.name:16s} {strategy.summary}")
        own = ", ".join(f"{p.name}={p.default}" for p in strategy.parameters)
        common = dict(strategy.defaults)
        changed = ", ".join(f"{k}={v}" for k, v in common.items())
        if own or changed:
            lines.append(f"{'':16s}   parameters: {', '.join(x for x in (own, changed) if x)}")
    lines.append("")
    lines.append("--fix-decoder    freeze the decoder (the adapter's; MedicalNet: conv_seg)")
    lines.append(
        "common parameters (--param KEY=VALUE): "
        + ", ".join(f"{p.name}={p.default}" for p in COMMON_PARAMETERS)
    )
    lines.append("step-budget presets (the literature's) take steps=N instead of epochs")
    return "\n".join(lines)


def strategies_markdown() -> str:
    """docs/strategies.md, generated from the registry."""
    out = [
        "# Unlearning strategies",
        "",
        "Generated from the registry (`MachineUnlearningLib/strategies`) by "
        "`python scripts/generate_strategy_docs.py`; do not edit by hand.",
        "",
        "Only the abstract and a third-party summary of the paper (arXiv 2606.16180) are "
        "public. Where a definition says **our interpretation**, it is our reading of the "
        "strategy's name (../shared/reference/unlearning.md section 2), not the authors' "
        "algorithm.",
        "",
        "The presets from `finetune` on are established methods from the literature, adapted "
        "to voxel-wise segmentation (../shared/reference/unlearning.md section 3); there the "
        "italic mark means we adapted the published algorithm, as its definition states. "
        "Each states the source file its defaults come from and what we changed.",
        "",
        "Budgets: the paper's presets count epochs (the paper's unit; its protocol evaluates "
        "at epochs 20 and 50). The literature's presets count optimiser steps (`steps`, which "
        "replaces `epochs` for them; giving them epochs is refused): an epoch of a 7-subject "
        "cohort is a few volumes, where their sources' epochs are hundreds of batches. Their "
        "plans give one batch per loop epoch, so for them evaluation epochs (`--eval-epochs`) "
        "and the run's history count optimiser steps. Every run's history records the "
        "optimiser steps of each epoch and in all.",
        "",
        "Common set-up: every run starts from a copy of the original model; the loss is "
        "voxel-wise cross-entropy with ignored voxels (-1) excluded, on the label grid the "
        "model was trained with (the logit grid in MedicalNet's recipe; the input grid, with "
        "the logits upsampled, in cpu-demo); an epoch is one pass over the strategy's list of "
        "subjects; the learning rate is constant so one run evaluated at epochs 20 and 50 "
        "serves both horizons. BatchNorm trains as usual by default (`batchnorm=train`: at "
        "batch 1 each volume is normalised by its own statistics and the running averages "
        "move); `batchnorm=frozen` keeps the original model's running statistics (eval mode), "
        "so the loss acts on the same function that is evaluated. Which one the paper used is "
        "not available; docs/benchmarks.md section 3 measures both. Teachers of the KL "
        "methods run in the student's BatchNorm mode (the batch's statistics under `train`, "
        "the running ones under `frozen`), so a student equal to its teacher has KL 0.",
        "",
        "## Common parameters",
        "",
        "| parameter | default | meaning |",
        "|---|---|---|",
    ]
    out += [f"| `{p.name}` | {p.default} | {p.help} |" for p in COMMON_PARAMETERS]
    for strategy in STRATEGIES.values():
        out += [
            "",
            f"## `{strategy.name}`",
            "",
            strategy.summary + ".",
            "",
            strategy.definition + (" *Our interpretation.*" if strategy.interpretation else ""),
            "",
            f"Source: {strategy.source}.",
            "",
        ]
        table = [
            f"| `{p.name}` | {p.default} | {p.help} |"
            for p in strategy.all_parameters()
            if p in strategy.parameters or p.name in dict(strategy.defaults)
        ]
        if table:
            out += ["| parameter | default | meaning |", "|---|---|---|", *table]
    out += ["", "## `--fix-decoder`", "", FIX_DECODER_DEFINITION, ""]
    return "\n".join(out)


__all__ = [
    "STRATEGIES",
    "Parameter",
    "Strategy",
    "describe_strategies",
    "get_strategy",
    "register",
    "strategies_markdown",
]
