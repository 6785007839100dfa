"""The lean input-grid loss equals the plain PyTorch/MONAI formulation it replaces.

Reference: ``F.interpolate(trilinear, align_corners=False)`` to the label grid, then
``F.cross_entropy(ignore_index=-1)`` (+ MONAI's ``MaskedDiceLoss(softmax=True,
to_onehot_y=True, include_background=False)`` for ``dice-ce``), autograd through all of it.
Tolerances: 1e-6 relative on the value (float32 summation order; a float64 evaluation of the
reference agrees with ours to ~2e-8 at 96 x 160 x 160) and 2e-6 relative on the gradient
(the interpolation weights are float32-rounded in a different order).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MachineUnlearningLib.training.losses import task_loss, upsample_trilinear


def reference_loss(logits: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    from monai.losses import MaskedDiceLoss

    if logits.shape[2:] != target.shape[1:]:
        logits = F.interpolate(
            logits.float(), size=target.shape[1:], mode="trilinear", align_corners=False
        )
    ce = F.cross_entropy(logits, target, ignore_index=-1)
    if loss == "ce":
        return ce
    mask = (target != -1)[:, None].float()
    dice = MaskedDiceLoss(softmax=True, to_onehot_y=True, include_background=False)
    return ce + dice(logits, target.clamp_min(0)[:, None], mask=mask)


@pytest.mark.parametrize(
    ("coarse", "fine"),
    [((6, 10, 10), (24, 40, 40)), ((5, 7, 9), (12, 7, 20)), ((4, 6, 6), (4, 6, 6))],
)
def test_separable_upsampling_equals_interpolate(coarse, fine):
    volume = torch.randn(2, 3, *coarse, generator=torch.Generator().manual_seed(0)) * 5
    expected = F.interpolate(volume, size=fine, mode="trilinear", align_corners=False)
    assert torch.allclose(upsample_trilinear(volume, fine), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss", ["ce", "dice-ce"])
@pytest.mark.parametrize("ignored", [False, True])
@pytest.mark.parametrize(("coarse", "fine"), [((6, 10, 10), (24, 40, 40)), ((6, 8, 8), None)])
def test_task_loss_value_and_gradient_equal_the_reference(loss, ignored, coarse, fine):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, *coarse, generator=generator) * 3
    target = torch.randint(0, 4, (2, *(fine or coarse)), generator=generator)
    if ignored:
        target[:, :2] = -1
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    value = task_loss(ours, target, loss)
    expected = reference_loss(theirs, target, loss)
    value.backward()
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    error = (ours.grad - theirs.grad).norm() / theirs.grad.norm()
    assert error.item() < 2e-6


def test_task_loss_scales_its_gradient_by_the_upstream_gradient():
    logits = torch.randn(1, 4, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    target = torch.randint(0, 4, (1, 8, 12, 12), generator=torch.Generator().manual_seed(3))
    once, thrice = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    task_loss(once, target, "dice-ce").backward()
    (-3 * task_loss(thrice, target, "dice-ce")).backward()
    assert torch.allclose(thrice.grad, -3 * once.grad, rtol=1e-5, atol=1e-9)


def test_task_loss_is_zero_without_gradient_when_every_voxel_is_ignored():
    logits = torch.randn(1, 4, 4, 6, 6).requires_grad_()
    target = torch.full((1, 4, 6, 6), -1)
    value = task_loss(logits, target, "dice-ce")
    value.backward()
    assert value.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_task_loss_rejects_an_unknown_loss():
    with pytest.raises(ValueError, match="loss must be one of"):
        task_loss(torch.zeros(1, 4, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long), "dice")
