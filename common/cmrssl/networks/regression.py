"""Slice-area networks of the ranking bundle: ``[N, 1, H, W]`` image -> ``[N, 1]`` LV cavity area (mm^2).

Two kinds, one interface (``forward`` gives areas), chosen by :func:`area_network`:

- :class:`SegmentationAreas` (the default, ``backbone="unet"``): the shared U-Net
  (:class:`cmrssl.networks.unet.CMRUNet`, the segmentation bundle's architecture and parameter
  names) whose area is its soft segmentation: the summed LV cavity probability times the pixel
  area. ``segment`` gives the logits, so labelled frames supervise every pixel and the ranking
  terms act on the same soft areas; its weights load into the segmentation bundle and back.
- :class:`AreaRegressor`: a direct regressor (below).

:class:`AreaRegressor` is a MONAI classification network (``DenseNet121`` by default; ``resnet10`` /
``resnet18`` / ``resnet34``, ``densenet169`` and the CPU-sized ``resnet10_small`` by name) with one output,
made non-negative by a softplus and scaled to mm^2: an untrained network
predicts about ``0.69 * scale_mm2`` on every slice, the size of a
mid-ventricular cavity, so early ranking steps start near the right range.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks import nets

from cmrssl.flags import square_pixdim_mm
from cmrssl.labels import LV_CAVITY, NUM_LABELS
from cmrssl.networks.unet import CMRUNet

__all__ = ["AreaRegressor", "BACKBONES", "SegmentationAreas", "UNET", "area_network"]

#: the backbone name of :class:`SegmentationAreas`
UNET = "unet"

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


class SegmentationAreas(CMRUNet):
    """The shared U-Net as a slice-area network: area = summed soft LV cavity probability x pixel area.

    Args:
        pixdim_mm: in-plane pixel size of its inputs (mm), ``[dy, dx]`` of two equal values or one number.
        lv_class: the output channel of the LV cavity (:data:`cmrssl.labels.LV_CAVITY`).
        unet: the :class:`cmrssl.networks.unet.CMRUNet` arguments (``channels``,
            ``deep_supervision``, ...; ``out_channels`` defaults to the 4 labels).

    ``segment(x)`` is the U-Net's own forward (logits ``[N, C, H, W]``, with deep supervision in
    training ``[N, 1 + heads, C, H, W]``); ``forward(x)`` the areas ``[N, 1]`` in mm^2 of the
    full-resolution output. The parameters are the U-Net's, under its names.
    """

    def __init__(self, pixdim_mm: Union[float, Sequence[float]] = (2.0, 2.0), lv_class: int = LV_CAVITY, **unet) -> None:
        unet.setdefault("out_channels", NUM_LABELS)
        super().__init__(**unet)
        if not 0 < int(lv_class) < self.out_channels:
            raise ValueError(f"lv_class {lv_class} is not a foreground channel of {self.out_channels} outputs")
        self.lv_class = int(lv_class)
        self.pixel_area_mm2 = square_pixdim_mm(pixdim_mm) ** 2

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, C, H, W]`` of the full-resolution output (with deep supervision in training,
        its first level)."""
        logits = self.segment(x)
        if logits.ndim == x.ndim + 1:
            logits = logits[:, 0]
        return torch.softmax(logits.float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probability = self.probabilities(x)[:, self.lv_class]
        return probability.flatten(1).sum(dim=1, keepdim=True) * self.pixel_area_mm2


def area_network(backbone: str = UNET, in_channels: int = 1, pixdim_mm: Union[float, Sequence[float]] = (2.0, 2.0),
                 channels: Sequence[int] = (16, 32, 64, 128, 256), deep_supervision: bool = True) -> nn.Module:
    """The ranking bundle's network by its ``backbone`` option: ``"unet"`` -> :class:`SegmentationAreas`
    (``channels``, ``deep_supervision``, areas at ``pixdim_mm``), a name of :data:`BACKBONES` ->
    :class:`AreaRegressor`."""
    if str(backbone).strip().lower() == UNET:
        return SegmentationAreas(pixdim_mm=pixdim_mm, in_channels=int(in_channels), channels=channels,
                                 deep_supervision=deep_supervision)
    return AreaRegressor(backbone=backbone, in_channels=in_channels)
