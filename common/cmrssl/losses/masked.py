"""Masked image modelling (MIM): the masked-pixel reconstruction loss.

de Mooij et al. 2024 mask 75 % of the 32x32 patches of each slice (masked
pixels set to 0), let the full U-Net predict the image, and score the mean
squared error over the masked pixels only: unmasked pixels are visible to the
network, so reconstructing them would teach nothing.

- :class:`MaskedMSELoss`: MSE over masked pixels.

The masks come from :mod:`cmrssl.networks.masking` (:func:`random_patch_mask`
on batches) and the MONAI transforms :class:`cmrssl.transforms.masking.RandPatchMaskd`
(in the data pipeline).
"""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["MaskedMSELoss"]


class MaskedMSELoss(_Loss):
    """Mean squared error over masked pixels only.

    ``sum(mask * (pred - target)^2) / (sum(mask) * C)``; unmasked pixels do not
    contribute (their values and gradients are ignored).

    Example:
        >>> MaskedMSELoss()(prediction, image, mask)  # [B, C, H, W], [B, C, H, W], [B, 1 or C, H, W]
    """

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            prediction: ``[B, C, H, W]`` reconstructed image.
            target: ``[B, C, H, W]`` original (unmasked) image.
            mask: ``[B, 1, H, W]`` or ``[B, C, H, W]``, nonzero on masked pixels.

        Raises:
            ValueError: shapes differ, or no pixel is masked.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        mask = mask.to(device=prediction.device, dtype=torch.bool)
        if mask.ndim != prediction.ndim or mask.shape[2:] != prediction.shape[2:] or mask.shape[0] != prediction.shape[0]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match prediction {tuple(prediction.shape)}")
        mask = mask.expand_as(prediction)
        num_masked = mask.sum()
        if int(num_masked) == 0:
            raise ValueError("the mask selects no pixel; the masked MSE is undefined")
        # select before squaring (not multiply by the mask): a nan/inf in a visible pixel
        # then reaches neither the loss nor the gradient
        error = torch.where(mask, prediction.float() - target.float(), torch.zeros((), device=prediction.device))
        return (error**2).sum() / num_masked
