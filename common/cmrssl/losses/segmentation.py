"""Segmentation loss with deep supervision for the shared U-Net's stacked outputs.

:class:`cmrssl.networks.unet.CMRUNet` with deep supervision returns, in
training, ``[B, 1 + heads, C, H, W]`` (DynUNet's convention: one tensor keeps
the network TorchScript-able). MONAI's ``DeepSupervisionLoss`` takes a list,
so the stacked levels are split here; everything else is MONAI's.
"""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss

__all__ = ["StackedDeepSupervisionLoss"]


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI ``DeepSupervisionLoss`` that also accepts levels stacked on dim 1.

    Args:
        loss: the per-level loss, e.g. ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        weight_mode: ``"exp"`` (1, 0.5, 0.25, ...; nnU-Net's halving per level), ``"same"``, ``"two"``.
        weights: explicit per-level weights.

    Call: ``input`` ``[B, C, H, W]`` (one level, eval mode) or ``[B, L, C, H, W]``
    (``L`` levels, full resolution first), ``target`` ``[B, 1, H, W]``.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)
