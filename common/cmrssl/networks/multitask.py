"""Multi-task fine-tuning: segmentation and the pretext task trained together on the labelled images.

Bai et al. 2019 fine-tune with the self-supervised task kept as a second
output (``loss = segmentation + beta * pretext``), which regularises the
shared features when labels are few. :class:`MultiTaskUNet` does this for a
pixel-wise pretext head pretrained with the U-Net: masked image modelling's
reconstruction head (``pretext_head.*`` in a ``cmr_ssp_pretraining`` MIM
checkpoint). The pretext input is the training image with 75 % of its
32 x 32 patches set to zero, drawn afresh every iteration, as in pretraining.

State-dict names stay those of :class:`cmrssl.networks.unet.CMRUNet`
(``encoder.*``, ``decoder.*``, ``head.*``, ``aux_heads.*``) plus
``pretext_head.*``, so the trained ``model.pt`` loads into the plain U-Net of
the inference config (which ignores the pretext head).
"""

from __future__ import annotations

from typing import Dict, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from cmrssl.networks.masking import random_patch_mask
from cmrssl.networks.unet import CMRUNet

__all__ = ["PRETEXT_HEAD", "MultiTaskUNet"]

#: Name of the pixel-wise pretext head in checkpoints.
PRETEXT_HEAD = "pretext_head"


class MultiTaskUNet(nn.Module):
    """The shared U-Net with a second, pixel-wise pretext head on its last decoder output.

    Args:
        unet: the segmentation U-Net (its modules are shared, not copied).
        pretext_head: maps the full-resolution decoder features (``unet.channels[0]``)
            to the pretext output (1 channel for image reconstruction).
        mask_patch_size: patch of the random masks, pixels at the training spacing.
        mask_ratio: fraction of patches masked.

    Forward:
        eval mode: ``[B, 1, H, W] -> [B, C, H, W]``, the segmentation only (as the U-Net).
        training mode: a dict with ``pred`` (the U-Net's output, deep supervision
        stacked), ``pretext`` (reconstruction of the masked image), ``pretext_target``
        (the unmasked image) and ``pretext_mask`` (``[B, 1, H, W]``, True where masked);
        :class:`cmrssl.losses.segmentation.MultiTaskLoss` reads it.
    """

    def __init__(
        self,
        unet: CMRUNet,
        pretext_head: nn.Module,
        mask_patch_size: Sequence[int] = (32, 32),
        mask_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if not isinstance(unet, CMRUNet):
            raise TypeError(f"multi-task fine-tuning needs the shared CMRUNet, got {type(unet).__name__}")
        self.encoder, self.decoder, self.head, self.aux_heads = unet.encoder, unet.decoder, unet.head, unet.aux_heads
        setattr(self, PRETEXT_HEAD, pretext_head)
        self._unet = [unet]  # in a list: its modules are registered above under their own names
        self.mask_patch_size = tuple(int(p) for p in mask_patch_size)
        self.mask_ratio = float(mask_ratio)
        random_patch_mask((1, 1) + self.mask_patch_size, self.mask_patch_size, self.mask_ratio)  # validates

    @property
    def unet(self) -> CMRUNet:
        return self._unet[0]

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        unet = self.unet
        unet.train(self.training)
        segmentation = unet(x)
        if not self.training:
            return segmentation
        # masks from torch's generator, so MONAI's set_determinism makes runs repeatable
        rng = np.random.RandomState(int(torch.randint(0, 2**31 - 1, ())))
        mask = random_patch_mask(x.shape, self.mask_patch_size, self.mask_ratio, generator=rng, device=x.device)
        masked = torch.where(mask, torch.zeros((), dtype=x.dtype, device=x.device), x)
        pretext = getattr(self, PRETEXT_HEAD)(unet.decoder(unet.encode(masked))[-1])
        return {"pred": segmentation, "pretext": pretext, "pretext_target": x, "pretext_mask": mask}
