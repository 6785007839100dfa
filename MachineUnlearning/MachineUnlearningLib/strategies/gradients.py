"""Mechanic: per-subject gradients of the loss at fixed weights.

Used by the saliency mask (SalUn) and by selective synaptic dampening (SSD). Each subject is
what the model sees of it at fixed weights (``SampleSource.windows``): its deterministic,
un-jittered sample or, for a patch-trained model, the inference windows covering it (those
holding a labelled voxel), with its true labels; the loss is voxel-wise cross-entropy
(``training.sample_loss``, ``ce``), the mean over the windows. The model runs in eval mode, so
BatchNorm uses its running statistics and nothing in the model changes; its ``.grad`` fields
are cleared after.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from MachineUnlearningLib.data.samples import SampleSource
from MachineUnlearningLib.runtime.device import translate_out_of_memory
from MachineUnlearningLib.training.loop import sample_loss

Gradients = dict[str, torch.Tensor]  # parameter name -> gradient, the parameter's shape


def subject_gradients(
    model: torch.nn.Module,
    source: SampleSource,
    subject_ids: Sequence[str],
    device: torch.device,
) -> Iterator[tuple[str, Gradients]]:
    """Yield ``(subject id, d CE / d theta)`` for each subject, on ``device``.

    A parameter that does not take part (no gradient, or ``requires_grad=False``) gets zeros.
    The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.to(device).eval()
    named = list(model.named_parameters())
    requires = [p.requires_grad for _, p in named]
    for _, parameter in named:
        parameter.requires_grad_(True)
    try:
        for subject_id in subject_ids:
            windows = [w for w in source.windows(subject_id) if bool((w.target >= 0).any())]
            model.zero_grad(set_to_none=True)
            for window in windows:  # one backward per window: memory of one window
                with translate_out_of_memory("gradients"):
                    logits = model(window.image[None].to(device))
                    loss = sample_loss(logits, window.target[None].to(device), "ce")
                    (loss / len(windows)).backward()
            yield (
                subject_id,
                {
                    name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                    for name, p in named
                },
            )
    finally:
        model.zero_grad(set_to_none=True)
        for (_, parameter), flag in zip(named, requires, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)


def mean_gradient(
    model: torch.nn.Module, source: SampleSource, subject_ids: Sequence[str], device
) -> Gradients:
    """Gradient of the mean loss over ``subject_ids`` (= mean of per-subject gradients)."""
    return _mean(g for _, g in subject_gradients(model, source, subject_ids, device))


def _mean(gradients: Iterator[Gradients]) -> Gradients:
    total: Gradients = {}
    count = 0
    for grads in gradients:
        count += 1
        for name, g in grads.items():
            total[name] = total[name] + g if name in total else g
    if not count:
        raise ValueError("no subject to take gradients over")
    return {name: g / count for name, g in total.items()}
