"""Loss of the LV-index regression with segmentation regularisation (Gessert & Schlaefer, LVQuan19).

``total = MSE(indices scaled to 0-1) + phase_weight * CE(phase) + segmentation_weight * CE(masks)``
with the paper's weights 0.05 (phase) and 0.1 (segmentation regularisation).
Terms the task lacks are skipped; the segmentation term only when the network
returned segmentation logits (training mode with a decoder).
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from cmrssl.lvquan_layout import split_outputs

__all__ = ["LVQuanLoss"]


class LVQuanLoss(nn.Module):
    """Args:
        task: ``"indices"``, ``"phase"`` or ``"both"`` (as :class:`cmrssl.networks.lvquan.LVQuanNet`).
        phase_weight, segmentation_weight: term weights (paper: 0.05 and 0.1).

    Call with ``prediction`` (``[B, n(, T)]`` or ``(prediction, segmentation_logits [B, 3, (T,) H, W])``)
    and ``target`` a dict: ``indices`` ``[B, 11(, T)]`` (0-1), ``phase`` ``[B(, T)]`` int,
    ``label`` ``[B, 1, (T,) H, W]`` (0 bg, 1 cavity, 2 myocardium).
    """

    def __init__(self, task: str = "both", phase_weight: float = 0.05, segmentation_weight: float = 0.1):
        super().__init__()
        self.task = task
        self.phase_weight = float(phase_weight)
        self.segmentation_weight = float(segmentation_weight)

    def forward(self, prediction: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
                target: Dict[str, torch.Tensor]) -> torch.Tensor:
        segmentation = None
        if isinstance(prediction, (tuple, list)):
            prediction, segmentation = prediction
        parts = split_outputs(prediction, self.task)
        total = prediction.new_zeros(())
        if "indices" in parts:
            total = total + F.mse_loss(parts["indices"], target["indices"].to(prediction.dtype))
        if "phase_logits" in parts:
            total = total + self.phase_weight * F.cross_entropy(parts["phase_logits"], target["phase"].long())
        if segmentation is not None and self.segmentation_weight:
            label = target["label"]
            label = label[:, 0] if label.ndim == segmentation.ndim else label
            total = total + self.segmentation_weight * F.cross_entropy(segmentation, label.long())
        return total
