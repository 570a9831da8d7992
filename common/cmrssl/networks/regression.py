"""Slice-area regressor of the ranking bundle: ``[N, 1, H, W]`` image -> ``[N, 1]`` LV cavity area (mm^2).

A MONAI classification network (``DenseNet121`` by default; ``resnet10`` /
``resnet18`` / ``resnet34``, ``densenet169`` and the CPU-sized ``resnet10_small`` by name) with one output,
made non-negative by a softplus and scaled to mm^2: an untrained network
predicts about ``0.69 * scale_mm2`` on every slice, the size of a
mid-ventricular cavity, so early ranking steps start near the right range.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks import nets

__all__ = ["AreaRegressor", "BACKBONES"]

#: backbone names -> builders of a 2D, one-output network on ``in_channels`` channels
BACKBONES = {
    "densenet121": lambda c: nets.DenseNet121(spatial_dims=2, in_channels=c, out_channels=1),
    "densenet169": lambda c: nets.DenseNet169(spatial_dims=2, in_channels=c, out_channels=1),
    "resnet10": lambda c: nets.resnet10(spatial_dims=2, n_input_channels=c, num_classes=1),
    "resnet18": lambda c: nets.resnet18(spatial_dims=2, n_input_channels=c, num_classes=1),
    "resnet34": lambda c: nets.resnet34(spatial_dims=2, n_input_channels=c, num_classes=1),
    # the CPU size: resnet10's layout at a quarter of its widths (0.3 M parameters instead of 4.9 M)
    "resnet10_small": lambda c: nets.ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128],
                                            spatial_dims=2, n_input_channels=c, num_classes=1),
}


class AreaRegressor(nn.Module):
    """LV cavity area of each 2D slice (module docstring).

    Args:
        backbone: a name of :data:`BACKBONES`.
        in_channels: image channels (1 for cine MR).
        scale_mm2: area of one output unit after the softplus (mm^2).
    """

    def __init__(self, backbone: str = "densenet121", in_channels: int = 1, scale_mm2: float = 1000.0) -> None:
        super().__init__()
        name = str(backbone).strip().lower()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        if not float(scale_mm2) > 0:
            raise ValueError(f"scale_mm2 must be > 0, got {scale_mm2}")
        self.backbone_name = name
        # not "backbone": checkpoint readers drop a "backbone." prefix shared by every key
        self.net = BACKBONES[name](int(in_channels))
        self.scale_mm2 = float(scale_mm2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.net(x).float()) * self.scale_mm2
