"""Segmentation loss with deep supervision for the shared U-Net's stacked outputs.

:class:`cmrssl.networks.unet.CMRUNet` with deep supervision returns, in
training, ``[B, 1 + heads, C, H, W]`` (DynUNet's convention: one tensor keeps
the network TorchScript-able). MONAI's ``DeepSupervisionLoss`` takes a list,
so the stacked levels are split here; everything else is MONAI's.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from monai.losses import DeepSupervisionLoss

from cmrssl.losses.masked import MaskedMSELoss

__all__ = ["StackedDeepSupervisionLoss", "PretextLoss", "MultiTaskLoss"]


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


class PretextLoss(torch.nn.Module):
    """The loss of a pixel-wise pretext output (:meth:`cmrssl.networks.multitask.MultiTaskUNet.pretext_forward`).

    - reconstruction (the output carries ``pretext_mask``): ``reconstruction_loss(pretext,
      pretext_target, pretext_mask)``, :class:`cmrssl.losses.masked.MaskedMSELoss` by default;
    - class map (no mask): cross-entropy of ``pretext [B, K, H, W]`` logits against
      ``target [B, 1, H, W]`` class indices (Bai 2019's position boxes, 0 background).

    Args:
        reconstruction_loss: loss for the reconstruction pretext.
    """

    def __init__(self, reconstruction_loss: Optional[torch.nn.Module] = None) -> None:
        super().__init__()
        self.reconstruction_loss = reconstruction_loss if reconstruction_loss is not None else MaskedMSELoss()
        self.class_loss = torch.nn.CrossEntropyLoss()

    def forward(self, output: Mapping[str, torch.Tensor], target: Optional[torch.Tensor] = None) -> torch.Tensor:
        if "pretext_mask" in output:
            return self.reconstruction_loss(output["pretext"], output["pretext_target"], output["pretext_mask"])
        if target is None:
            raise ValueError("a class-map pretext needs its label map (target) for the loss")
        logits = output["pretext"]
        if target.ndim == logits.ndim:
            target = target[:, 0]
        return self.class_loss(logits.float(), target.to(device=logits.device, dtype=torch.long))


class MultiTaskLoss(torch.nn.Module):
    """``segmentation_loss + beta * pretext_loss`` (Bai et al. 2019), or the segmentation loss alone.

    Args:
        segmentation_loss: e.g. :class:`StackedDeepSupervisionLoss`.
        pretext_loss: ``loss(output)`` of the pretext entries of the network's output dict,
            e.g. :class:`PretextLoss`.
        beta: weight of the pretext term.

    Call: ``input`` is the network output; a dict from
    :class:`cmrssl.networks.multitask.MultiTaskUNet` in multi-task training with the
    ``sum`` schedule (keys ``pred``, ``pretext``, ``pretext_target``, ``pretext_mask``), a
    tensor otherwise (then only the segmentation loss is computed, so one config serves every mode).
    """

    def __init__(self, segmentation_loss: torch.nn.Module, pretext_loss: torch.nn.Module, beta: float = 1.0) -> None:
        super().__init__()
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.segmentation_loss = segmentation_loss
        self.pretext_loss = pretext_loss
        self.beta = float(beta)

    def forward(self, input, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, dict):
            return self.segmentation_loss(input, target)
        segmentation = self.segmentation_loss(input["pred"], target)
        return segmentation + self.beta * self.pretext_loss({k: v for k, v in input.items() if k != "pred"})
