"""Multi-task fine-tuning: segmentation and the pixel-wise pretext task trained together.

Bai et al. 2019 fine-tune with the self-supervised task kept as a second
output, which regularises the shared features when labels are few.
:class:`MultiTaskUNet` does this for a pixel-wise pretext head pretrained with
the U-Net (``pretext_head.*`` in the checkpoint), of one of two kinds:

- ``reconstruction`` (a 1-channel head, ``cmr_ssp_pretraining``'s MIM): the
  pretext input is the image with 75 % of its 32 x 32 patches set to zero,
  drawn afresh every iteration, as in pretraining; no labels needed, so it
  can run on the labelled batch (schedule ``sum``) or on an unlabelled one;
- ``classes`` (a multi-channel head, ``cmr_position_ssl``'s nine anatomical
  position boxes + background): the pretext is a segmentation whose labels
  come from the view planes of the unlabelled pool, so it runs on its own
  batches (schedule ``alternate``, :mod:`cmrssl.engines.multitask`).

Two schedules (``--multitask_schedule``): ``sum``, one loss
``segmentation + beta * pretext`` per iteration on the labelled batch;
``alternate``, Bai 2019's: one pretext sub-iteration on an unlabelled batch,
then beta segmentation sub-iterations (:class:`cmrssl.engines.multitask.AlternatingPretextSteps`).

State-dict names stay those of :class:`cmrssl.networks.unet.CMRUNet`
(``encoder.*``, ``decoder.*``, ``head.*``, ``aux_heads.*``) plus
``pretext_head.*``, so the trained ``model.pt`` loads into the plain U-Net of
the inference config (which ignores the pretext head).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from cmrssl.networks.heads import backbone_state_dict
from cmrssl.networks.masking import random_patch_mask
from cmrssl.networks.unet import CMRUNet

__all__ = ["PRETEXT_HEAD", "PRETEXT_TASKS", "MULTITASK_SCHEDULES", "MultiTaskUNet", "pretext_state_dict"]

#: Name of the pixel-wise pretext head in checkpoints.
PRETEXT_HEAD = "pretext_head"

#: Kinds of pixel-wise pretext head: image reconstruction (MIM) or a class map (position prediction).
PRETEXT_TASKS = ("reconstruction", "classes")

#: How the pretext joins fine-tuning: one summed loss, or Bai 2019's alternating sub-iterations.
MULTITASK_SCHEDULES = ("sum", "alternate")


def pretext_state_dict(unet: nn.Module, parts: Sequence[str] = ("encoder", "decoder")) -> "OrderedDict[str, torch.Tensor]":
    """What a pixel-wise pretraining saves: the U-Net ``parts`` under their names and its
    task head as ``pretext_head.*`` (on CPU), so the checkpoint loads into the segmentation
    U-Net by name and multi-task fine-tuning can keep the head.

    Args:
        unet: the shared U-Net trained on the pretext (a DDP wrapper is unwrapped).
        parts: parts saved under their own names.
    """
    unet = getattr(unet, "module", unet)
    state = backbone_state_dict(unet, parts=parts)
    head = getattr(unet, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(f"{type(unet).__name__} has no 'head' to save as {PRETEXT_HEAD}")
    state.update((f"{PRETEXT_HEAD}.{k}", v.detach().cpu()) for k, v in head.state_dict().items())
    return state


class MultiTaskUNet(nn.Module):
    """The shared U-Net with a second, pixel-wise pretext head on its last decoder output.

    Args:
        unet: the segmentation U-Net (its modules are shared, not copied).
        pretext_head: maps the full-resolution decoder features (``unet.channels[0]``)
            to the pretext output: 1 channel (image reconstruction) or one per class.
        mask_patch_size: patch of the random masks, pixels at the training spacing (reconstruction).
        mask_ratio: fraction of patches masked (reconstruction).
        pretext_task: ``"reconstruction"`` or ``"classes"`` (:data:`PRETEXT_TASKS`); by
            default from the head's output channels (1: reconstruction).
        schedule: ``"sum"`` or ``"alternate"`` (:data:`MULTITASK_SCHEDULES`). A class-map
            pretext has no labels on the segmentation batch, so it needs ``alternate``.

    Forward:
        with ``pretext_pass`` set: :meth:`pretext_forward`.
        eval mode, or training with ``schedule="alternate"``: ``[B, 1, H, W] -> [B, C, H, W]``
        (deep supervision stacked in training), the segmentation only, as the U-Net.
        training with ``schedule="sum"``: a dict with ``pred`` (the U-Net's output) and the
        entries of :meth:`pretext_forward` on the same images;
        :class:`cmrssl.losses.segmentation.MultiTaskLoss` reads it.
    """

    def __init__(
        self,
        unet: CMRUNet,
        pretext_head: nn.Module,
        mask_patch_size: Sequence[int] = (32, 32),
        mask_ratio: float = 0.75,
        pretext_task: Union[str, None] = None,
        schedule: str = "sum",
    ) -> None:
        super().__init__()
        if not isinstance(unet, CMRUNet):
            raise TypeError(f"multi-task fine-tuning needs the shared CMRUNet, got {type(unet).__name__}")
        self.encoder, self.decoder, self.head, self.aux_heads = unet.encoder, unet.decoder, unet.head, unet.aux_heads
        setattr(self, PRETEXT_HEAD, pretext_head)
        self._unet = [unet]  # in a list: its modules are registered above under their own names
        if pretext_task is None:
            channels = [m.out_channels for m in pretext_head.modules() if isinstance(m, nn.Conv2d)]
            pretext_task = "reconstruction" if channels and channels[-1] == 1 else "classes"
        if pretext_task not in PRETEXT_TASKS:
            raise ValueError(f"pretext_task must be one of {list(PRETEXT_TASKS)}, got {pretext_task!r}")
        schedule = str(schedule).strip().lower()
        if schedule not in MULTITASK_SCHEDULES:
            raise ValueError(f"multitask_schedule must be one of {list(MULTITASK_SCHEDULES)}, got {schedule!r}")
        if pretext_task == "classes" and schedule == "sum":
            raise ValueError(
                "a class-map pretext head (anatomical position prediction) has no labels on the segmentation "
                "images: fine-tune it with --multitask_schedule alternate and --pretext_datalist (the "
                "position_labels tool's datalist.json)"
            )
        self.pretext_task, self.schedule = pretext_task, schedule
        #: set by :class:`cmrssl.engines.multitask.AlternatingPretextSteps` around its pretext step, so
        #: the step goes through a DDP wrapper's forward (gradients synchronised) yet runs the pretext
        self.pretext_pass = False
        self.mask_patch_size = tuple(int(p) for p in mask_patch_size)
        self.mask_ratio = float(mask_ratio)
        random_patch_mask((1, 1) + self.mask_patch_size, self.mask_patch_size, self.mask_ratio)  # validates

    @property
    def unet(self) -> CMRUNet:
        return self._unet[0]

    def pretext_forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The pretext head's output for images ``x [B, 1, H, W]``.

        Returns:
            ``{"pretext": [B, K, H, W]}``; for reconstruction also ``pretext_target`` (``x``) and
            ``pretext_mask`` (``[B, 1, H, W]``, True where masked: the input there was set to 0).
        """
        unet = self.unet
        unet.train(self.training)
        if self.pretext_task == "classes":
            return {"pretext": getattr(self, PRETEXT_HEAD)(unet.decoder(unet.encode(x))[-1])}
        # masks from torch's generator, so MONAI's set_determinism makes runs repeatable
        rng = np.random.RandomState(int(torch.randint(0, 2**31 - 1, ())))
        mask = random_patch_mask(x.shape, self.mask_patch_size, self.mask_ratio, generator=rng, device=x.device)
        masked = torch.where(mask, torch.zeros((), dtype=x.dtype, device=x.device), x)
        pretext = getattr(self, PRETEXT_HEAD)(unet.decoder(unet.encode(masked))[-1])
        return {"pretext": pretext, "pretext_target": x, "pretext_mask": mask}

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        if self.pretext_pass:
            return self.pretext_forward(x)
        unet = self.unet
        unet.train(self.training)
        segmentation = unet(x)
        if not self.training or self.schedule == "alternate":
            return segmentation
        return {"pred": segmentation, **self.pretext_forward(x)}
