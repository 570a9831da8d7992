"""LV-index regression network of the ``cmr_lvquan_ensemble`` bundle (Gessert & Schlaefer, LVQuan19).

A MONAI classification backbone (DenseNet / ResNet / SE-ResNet(X), 2D, or
2D+t from :func:`cmrssl.networks.inflate.convert_2d_to_3d`) gives a feature
map; its classifier is replaced by:

- :class:`LVQuanHead`: global average pooling over space only (per frame for
  2D+t) and a 1x1(x1) convolution to the outputs of the task:
  ``"indices"`` 11 regression outputs (LVQuan order, targets scaled to 0-1),
  ``"phase"`` 2 phase logits (0 diastole, 1 systole), or ``"both"`` (11 + 2).
- :class:`SegmentationDecoder`: the segmentation regularisation of the paper,
  attached to the feature map *before* global pooling: 5 stages of (1x1 conv
  halving the channels, nearest upsampling x2 in space, residual block), then
  a 1x1 conv to the mask classes (background, LV cavity, LV myocardium). The
  cross-entropy on it (weight 0.1 in the paper) only shapes the features; it
  is dropped at inference.

:class:`LVQuanNet` composes them: ``forward(x)`` returns the prediction tensor
``[B, n]`` (2D) or ``[B, n, T]`` (2D+t: one prediction per input frame); in
training mode with a decoder it returns ``(prediction, segmentation_logits)``
where the logits are ``[B, classes, H, W]`` (``[B, classes, T, H, W]``) at the
input size. :func:`cmrssl.lvquan_layout.split_outputs` names the columns (re-exported here).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import DenseNet, SENet

from cmrssl.lvquan_layout import TASK_OUTPUTS, check_task, split_outputs
from cmrssl.networks.heads import backbone_feature_dim, backbone_features

__all__ = ["TASK_OUTPUTS", "LVQuanHead", "ResidualBlock", "SegmentationDecoder", "LVQuanNet", "split_outputs"]

def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (slice) or 3 (2D+t: [T, H, W]), got {spatial_dims}")
    return spatial_dims


class LVQuanHead(nn.Module):
    """Global average pool over space, then a 1x1(x1) conv: ``[B, F, (T,) h, w] -> [B, n(, T)]``.

    Args:
        in_channels: feature channels ``F``.
        task: ``"indices"`` (11), ``"phase"`` (2) or ``"both"`` (13, indices first).
        spatial_dims: 2, or 3 for 2D+t features ``[B, F, T, h, w]`` (time kept).
        dropout: dropout probability before the output conv.
    """

    def __init__(self, in_channels: int, task: str = "both", spatial_dims: int = 2, dropout: float = 0.0):
        super().__init__()
        self.task = check_task(task)
        self.spatial_dims = _check_dims(spatial_dims)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.dropout = nn.Dropout(dropout)
        self.num_outputs = TASK_OUTPUTS[self.task]  # a plain int: TorchScript cannot read a global dict
        self.out = conv(in_channels, self.num_outputs, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(-2, -1), keepdim=True)  # space only: 2D+t keeps every frame
        out = self.out(self.dropout(pooled))
        return out.flatten(2).squeeze(-1) if self.spatial_dims == 2 else out[..., 0, 0]


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity, ReLU (2D; in 2D+t the kernels are 1x3x3, per frame)."""

    def __init__(self, channels: int, spatial_dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        kernel, padding = (3, 1) if spatial_dims == 2 else ((1, 3, 3), (0, 1, 1))
        self.conv1 = conv(channels, channels, kernel, padding=padding, bias=False)
        self.norm1 = norm(channels)
        self.conv2 = conv(channels, channels, kernel, padding=padding, bias=False)
        self.norm2 = norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(x + self.norm2(self.conv2(y)))


class SegmentationDecoder(nn.Module):
    """Segmentation regularisation decoder: ``num_stages`` x (1x1 conv /2 channels, nearest x2, residual block).

    Args:
        in_channels: channels of the backbone feature map (before global pooling).
        num_classes: mask classes (3: background, LV cavity, LV myocardium).
        num_stages: upsampling stages (5 brings a stride-32 feature map back to the input size).
        spatial_dims: 2, or 3 for 2D+t (upsampling and kernels in space only).

    Input ``[B, F, (T,) h, w]``; output logits ``[B, classes, (T,) h * 2**stages, w * 2**stages]``.
    """

    def __init__(self, in_channels: int, num_classes: int = 3, num_stages: int = 5, spatial_dims: int = 2):
        super().__init__()
        self.spatial_dims = _check_dims(spatial_dims)
        if in_channels < 2**num_stages:
            raise ValueError(f"in_channels {in_channels} cannot be halved {num_stages} times")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        scale = 2.0 if spatial_dims == 2 else (1.0, 2.0, 2.0)
        stages = []
        channels = in_channels
        for _ in range(num_stages):
            stages.append(nn.Sequential(
                conv(channels, channels // 2, 1),
                nn.Upsample(scale_factor=scale, mode="nearest"),
                ResidualBlock(channels // 2, spatial_dims),
            ))
            channels //= 2
        self.stages = nn.Sequential(*stages)
        self.out = conv(channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.stages(features))


def _feature_channels(backbone: nn.Module) -> int:
    """Feature channels, also for 2D+t backbones whose classifier became a 1x1x1 conv."""
    if isinstance(backbone, DenseNet) and isinstance(backbone.class_layers.out, nn.Conv3d):
        return int(backbone.class_layers.out.in_channels)
    if isinstance(backbone, SENet) and isinstance(backbone.last_linear, nn.Conv3d):
        return int(backbone.last_linear.in_channels)
    fc = getattr(backbone, "fc", None)
    if isinstance(fc, nn.Conv3d):
        return int(fc.in_channels)
    return backbone_feature_dim(backbone)


class LVQuanNet(nn.Module):
    """Backbone features -> :class:`LVQuanHead` (+ :class:`SegmentationDecoder` in training).

    Args:
        backbone: MONAI DenseNet / ResNet / SENet (2D, or converted to 2D+t) or the shared U-Net;
            its own classifier is not used.
        task: ``"indices"``, ``"phase"`` or ``"both"``.
        spatial_dims: 2 (input ``[B, C, H, W]``) or 3 (2D+t input ``[B, C, T, H, W]``).
        segmentation_classes: classes of the regularisation decoder; 0 for none.
        decoder_stages: upsampling stages of the decoder.
        dropout: before the output conv.
    """

    def __init__(self, backbone: nn.Module, task: str = "both", spatial_dims: int = 2,
                 segmentation_classes: int = 3, decoder_stages: int = 5, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        channels = _feature_channels(backbone)
        self.head = LVQuanHead(channels, task, spatial_dims, dropout)
        self.decoder: Optional[SegmentationDecoder] = (
            SegmentationDecoder(channels, segmentation_classes, decoder_stages, spatial_dims)
            if segmentation_classes else None
        )

    @property
    def task(self) -> str:
        return self.head.task

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        features = backbone_features(self.backbone, x)
        prediction = self.head(features)
        if self.decoder is None or not self.training:
            return prediction
        segmentation = self.decoder(features)
        if segmentation.shape[-2:] != x.shape[-2:]:
            # Backbones of stride other than 2**stages: logits resampled to the mask size.
            size = x.shape[2:] if x.ndim == 5 else x.shape[-2:]
            segmentation = F.interpolate(segmentation, size=tuple(size), mode="nearest")
        return prediction, segmentation

