"""The shared 2D cardiac U-Net: one definition for every U-Net bundle.

nnU-Net style (Isensee et al. 2021; the architecture de Mooij et al. 2024
pretrain and fine-tune): per resolution two 3x3 conv -> instance norm ->
leaky ReLU blocks, stride-2 convolutions for down-sampling, transposed
convolutions for up-sampling, skip connections by concatenation, and
optional deep supervision. Built from MONAI's DynUNet blocks.

Its parameters live under three named parts, the contract every bundle
relies on (a checkpoint of any pretraining bundle loads into the
segmentation bundle by parameter name):

- ``encoder.*``: the contracting path, ``encoder.stages.{0..L-1}``; the last
  stage is the bottleneck (``feature_dim`` channels) that the SimCLR / PCL /
  DINO heads pool;
- ``decoder.*``: the expanding path, ``decoder.stages.{0..L-2}`` (deepest first);
- ``head.*``: the task's 1x1 convolution (4 classes for segmentation, 1
  channel for masked image modelling, 10 position classes), and with deep
  supervision ``aux_heads.*`` on the coarser decoder outputs. Heads are task
  specific and never part of a pretrained checkpoint.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock

from cmrssl.flags import as_bool

__all__ = ["CMRUNet", "CMRUNetEncoder", "CMRUNetDecoder", "unet_parts"]

_LEAKY_RELU = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


def unet_parts() -> Tuple[str, ...]:
    """Names of the U-Net's parameter groups: ``("encoder", "decoder", "head")``."""
    return ("encoder", "decoder", "head")


class CMRUNetEncoder(nn.Module):
    """Contracting path: stage 0 at full resolution, every later stage halves it.

    Shapes: ``[B, C_in, H, W] -> [features of stage 0 .. L-1]``, stage ``i`` is
    ``[B, channels[i], H / 2**i, W / 2**i]``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int], norm, act, dropout) -> None:
        super().__init__()
        stages = []
        previous = in_channels
        for level, width in enumerate(channels):
            stages.append(
                UnetBasicBlock(
                    spatial_dims, previous, int(width), kernel_size=3, stride=1 if level == 0 else 2,
                    norm_name=norm, act_name=act, dropout=dropout,
                )
            )
            previous = int(width)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class CMRUNetDecoder(nn.Module):
    """Expanding path: from the bottleneck up, one up-block per encoder stage above it.

    Shapes: encoder features -> decoder outputs, coarsest first, the last at full
    resolution with ``channels[0]`` channels.
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], norm, act, dropout) -> None:
        super().__init__()
        widths = [int(c) for c in channels]
        self.stages = nn.ModuleList(
            UnetUpBlock(
                spatial_dims, widths[level + 1], widths[level], kernel_size=3, stride=1, upsample_kernel_size=2,
                norm_name=norm, act_name=act, dropout=dropout,
            )
            for level in reversed(range(len(widths) - 1))
        )

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        x = features[-1]
        outputs: List[torch.Tensor] = []
        for level, stage in enumerate(self.stages):  # indexed, not zipped: TorchScript
            x = stage(x, features[len(features) - 2 - level])
            outputs.append(x)
        return outputs


class CMRUNet(nn.Module):
    """The shared 2D U-Net (tensor in, tensor out).

    Inputs are ``[B, C, H, W]`` slices, or ``[B, C, H, W, D]`` stacks of ``D``
    slices, segmented slice by slice (same weights, output in the stack's layout).

    Args:
        in_channels: image channels (1 for cine MR).
        out_channels: output channels of the task head (4: background, LV cavity,
            LV myocardium, RV cavity).
        channels: widths per resolution level, full resolution first; the last
            is the bottleneck. The default (32 .. 512, five levels) down-samples
            by 16, so inputs must be divisible by ``2 ** (len(channels) - 1)``.
        spatial_dims: 2 (a 3D variant is possible but unused).
        norm: MONAI norm spec; instance norm with affine parameters as nnU-Net.
        act: MONAI activation spec; leaky ReLU 0.01 as nnU-Net.
        dropout: dropout probability in the conv blocks (None: none).
        deep_supervision: in training mode also predict from the
            ``num_deep_supervision_heads`` coarser decoder outputs (upsampled to
            the input size): the forward then returns ``[B, 1 + heads, C, H, W]``,
            main output first (DynUNet's convention, which keeps the network
            TorchScript-able). In eval mode the output is always ``[B, C, H, W]``.
        num_deep_supervision_heads: coarser outputs supervised (nnU-Net: all but the
            lowest two resolutions).

    Raises:
        ValueError: fewer than two levels, non-positive widths or channel counts.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        spatial_dims: int = 2,
        norm: Union[str, tuple] = ("instance", {"affine": True}),
        act: Union[str, tuple] = _LEAKY_RELU,
        dropout: Optional[float] = None,
        deep_supervision: bool = False,
        num_deep_supervision_heads: int = 2,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels (full resolution and a bottleneck), got {channels}")
        if min(channels) < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"channel counts must be positive: in_channels={in_channels}, out_channels={out_channels}, "
                f"channels={channels}"
            )
        # "false" from a bundle command line (--network_def#deep_supervision false) is a true string
        deep_supervision = as_bool(deep_supervision, "deep_supervision")
        if deep_supervision and not 1 <= num_deep_supervision_heads <= len(channels) - 2:
            raise ValueError(
                f"num_deep_supervision_heads must be in [1, {len(channels) - 2}] for {len(channels)} levels, "
                f"got {num_deep_supervision_heads}"
            )
        norm = tuple(norm) if isinstance(norm, list) else norm
        act = tuple(act) if isinstance(act, list) else act
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.channels = tuple(channels)
        self.spatial_dims = int(spatial_dims)
        self.feature_dim = channels[-1]
        self.divisor = 2 ** (len(channels) - 1)
        self.deep_supervision = deep_supervision
        self.encoder = CMRUNetEncoder(spatial_dims, in_channels, channels, norm, act, dropout)
        self.decoder = CMRUNetDecoder(spatial_dims, channels, norm, act, dropout)
        self.head = UnetOutBlock(spatial_dims, channels[0], out_channels)
        # decoder outputs are coarsest first; the heads sit on the ones just above full resolution
        self.aux_heads = nn.ModuleList(
            UnetOutBlock(spatial_dims, channels[level], out_channels)
            for level in range(1, 1 + (num_deep_supervision_heads if deep_supervision else 0))
        )

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Encoder features, full resolution first; ``[-1]`` is the bottleneck ``[B, feature_dim, ...]``."""
        for size in x.shape[2:]:
            if size % self.divisor != 0:
                raise ValueError(
                    f"input spatial size {list(x.shape[2:])} is not divisible by {self.divisor} "
                    f"(2 ** (levels - 1)); pad it (DivisiblePadd k={self.divisor})"
                )
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.spatial_dims + 3:
            return self._forward_stack(x)
        return self._forward_slices(x)

    def _forward_stack(self, x: torch.Tensor) -> torch.Tensor:
        """A stack of slices along the last axis, ``[B, C, H, W, D]``, segmented slice by slice.

        The output keeps the stack's layout (``[B, C_out, H, W, D]``, or with deep
        supervision ``[B, 1 + heads, C_out, H, W, D]``), so one network serves 2D
        slices and 3D volumes (MONAI Label presents the bundle as a 3D model).
        """
        batch, depth = x.shape[0], x.shape[-1]
        output = self._forward_slices(x.movedim(-1, 1).flatten(0, 1))
        return output.reshape([batch, depth] + list(output.shape[1:])).movedim(1, -1)

    def _forward_slices(self, x: torch.Tensor) -> torch.Tensor:
        decoded = self.decoder(self.encode(x))
        output = self.head(decoded[-1])
        if not (self.training and self.deep_supervision):
            return output
        outputs: List[torch.Tensor] = [output]
        for index, head in enumerate(self.aux_heads):
            coarse = head(decoded[-2 - index])
            outputs.append(F.interpolate(coarse, size=output.shape[2:], mode="nearest"))
        return torch.stack(outputs, dim=1)
