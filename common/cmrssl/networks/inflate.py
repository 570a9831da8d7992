"""2D -> 2D+t networks and weights: kernel inflation and first-conv channel adaptation.

Gessert & Schlaefer (LVQuan19) feed ``N_S`` consecutive frames to a 3D CNN
whose 2D ImageNet kernels are "inflated": repeated ``d`` times along time and
divided by ``d`` (Carreira & Zisserman's I3D), so on a temporally constant
input the 3D network computes exactly what its 2D source computes. Time is
never pooled or strided, so ``N_S`` input frames give ``N_S`` predictions.

Two small parts, in the manner of timm's pretrained-weight adapters
(``timm.models._manipulate.adapt_input_conv``):

- :func:`convert_2d_to_3d` turns a 2D network (e.g. MONAI ``DenseNet121`` /
  ``ResNet`` built with ``spatial_dims=2``) into its 2D+t twin, module by
  module: ``Conv2d`` k x k stride s -> :class:`TemporalConv3d` (d, k, k)
  stride (1, s, s); norms and pools -> 3D with a time extent of 1;
  ``AdaptiveAvgPool2d(1)`` -> ``AdaptiveAvgPool3d((None, 1, 1))`` (per-frame
  global pool); optionally ``Linear`` -> 1x1x1 ``Conv3d`` and ``Flatten`` ->
  ``Identity`` (the per-frame output head). Parameter names do not change.
- :func:`inflate_state_dict` maps 2D weights (that network's own
  ``state_dict``, or a pretrained one) onto the 3D model: conv kernels
  inflated, linear weights reshaped to 1x1x1 convs, first-conv input channels
  adapted (:func:`adapt_input_channels`). Mismatches are errors naming keys.

Time padding of inflated convolutions is circular by default: a cine is one
cardiac cycle, frame 0 follows the last frame, and (unlike zero padding) it
keeps the constant-input equivalence at the first and last frames.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Dict, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer

__all__ = [
    "TemporalConv3d",
    "convert_2d_to_3d",
    "inflate_conv_weight",
    "adapt_input_channels",
    "inflate_state_dict",
]

_TIME_PADDING = ("circular", "replicate", "zeros")


class TemporalConv3d(nn.Conv3d):
    """``Conv3d`` over ``[B, C, T, H, W]`` whose time padding is circular/replicate/zeros.

    Spatial padding stays zeros (as in the 2D source); time padding is applied with
    ``F.pad`` first. Parameters are those of ``nn.Conv3d`` (same ``state_dict`` keys).
    """

    def __init__(self, *args, time_padding: str = "circular", **kwargs):
        if time_padding not in _TIME_PADDING:
            raise ValueError(f"time_padding must be one of {_TIME_PADDING}, got {time_padding!r}")
        super().__init__(*args, **kwargs)
        self.time_padding = time_padding
        self.time_pad = self.padding[0]
        if time_padding != "zeros":
            self.padding = (0, self.padding[1], self.padding[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_padding != "zeros" and self.time_pad:
            if self.time_padding == "circular" and x.shape[2] < self.time_pad:
                raise ValueError(f"circular time padding {self.time_pad} needs >= {self.time_pad} frames, got {x.shape[2]}")
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, self.time_pad), mode=self.time_padding)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", time_padding={self.time_padding}"


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _convert_module(module: nn.Module, time_kernel: int, time_padding: str, linear_to_conv: bool):
    """3D twin of one leaf module, or None when the module works on 5D tensors as is."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(f"{module}: only numeric zero padding converts to 2D+t")
        k, s, p, d = (_pair(v) for v in (module.kernel_size, module.stride, module.padding, module.dilation))
        # A 1x1 (pointwise) conv stays pointwise in time: inflating it would only blur frames.
        kt = 1 if k == (1, 1) else time_kernel
        return TemporalConv3d(
            module.in_channels, module.out_channels, (kt, *k), stride=(1, *s), padding=(kt // 2, *p),
            dilation=(1, *d), groups=module.groups, bias=module.bias is not None, time_padding=time_padding,
        )
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm3d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
    if isinstance(module, nn.InstanceNorm2d):
        return nn.InstanceNorm3d(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
    if isinstance(module, nn.MaxPool2d):
        k, s, p, d = (_pair(v) for v in (module.kernel_size, module.stride, module.padding, module.dilation))
        return nn.MaxPool3d((1, *k), (1, *s), (0, *p), (1, *d), ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        k, s, p = (_pair(v) for v in (module.kernel_size, module.stride, module.padding))
        return nn.AvgPool3d((1, *k), (1, *s), (0, *p), ceil_mode=module.ceil_mode,
                            count_include_pad=module.count_include_pad)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = _pair(module.output_size)
        cls = nn.AdaptiveAvgPool3d if isinstance(module, nn.AdaptiveAvgPool2d) else nn.AdaptiveMaxPool3d
        return cls((None, *size))
    if isinstance(module, nn.Dropout2d):
        return nn.Dropout3d(module.p, module.inplace)
    if isinstance(module, nn.Linear) and linear_to_conv:
        return nn.Conv3d(module.in_features, module.out_features, 1, bias=module.bias is not None)
    if isinstance(module, nn.Flatten) and linear_to_conv:
        return nn.Identity()
    return None


def convert_2d_to_3d(network: nn.Module, *, time_kernel: int = 3, time_padding: str = "circular",
                     linear_to_conv: bool = True) -> nn.Module:
    """A 2D+t copy of ``network``: input ``[B, C, T, H, W]``, time never pooled or strided.

    Args:
        network: a 2D network (left untouched; a deep copy is converted).
        time_kernel: temporal extent ``d`` of converted k x k convolutions (odd; 1x1 convs stay 1).
        time_padding: ``"circular"`` (cardiac cycle), ``"replicate"`` or ``"zeros"``.
        linear_to_conv: ``Linear`` -> 1x1x1 ``Conv3d`` and ``Flatten`` -> ``Identity``, so a
            classifier ``pool -> flatten -> linear`` gives per-frame outputs ``[B, n, T, 1, 1]``.

    Raises:
        ValueError: even ``time_kernel``, or a convolution with non-numeric/non-zero padding.

    Squeeze-excitation blocks (MONAI ``ChannelSELayer``) squeeze the whole clip (time
    included) and keep their Linear layers. Networks whose ``forward`` flattens with
    ``view``/``torch.flatten`` (MONAI ``ResNet``, ``SENet``) are converted module-wise but
    their full forward needs the per-frame head of :mod:`cmrssl.networks.lvquan`; their
    feature extractor (``cmrssl.networks.heads.backbone_features``) runs as is.
    """
    if time_kernel < 1 or time_kernel % 2 == 0:
        raise ValueError(f"time_kernel must be odd and positive (centred, no time shift), got {time_kernel}")
    converted = copy.deepcopy(network)

    def visit(parent: nn.Module):
        for name, child in list(parent.named_children()):
            if isinstance(child, ChannelSELayer):
                # Squeeze-excitation squeezes to [B, C] and runs Linear layers on it: the squeeze
                # pools the whole clip (time too) and its Linear layers stay. On a constant clip
                # this equals the per-frame squeeze, so the 2D equivalence holds.
                child.avg_pool = nn.AdaptiveAvgPool3d(1)
                continue
            twin = _convert_module(child, time_kernel, time_padding, linear_to_conv)
            if twin is None:
                visit(child)
            else:
                twin.train(child.training)
                setattr(parent, name, twin)

    visit(converted)
    converted.load_state_dict(inflate_state_dict(network.state_dict(), converted))
    return converted


def inflate_conv_weight(weight_2d: torch.Tensor, time_kernel: int) -> torch.Tensor:
    """``[O, I, k, k]`` -> ``[O, I, d, k, k]``: repeated ``d`` times along time, divided by ``d``."""
    if weight_2d.ndim != 4:
        raise ValueError(f"expected a 2D conv weight [O, I, kH, kW], got shape {tuple(weight_2d.shape)}")
    return weight_2d.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-conv weight ``[O, I, ...]`` adapted to ``in_channels`` (timm's ``adapt_input_conv`` rule).

    One channel: the sum over the source channels (a grey image equals the RGB image with
    that value in every channel). More channels: source channels cycled and scaled by
    ``I / in_channels`` so the response to a constant image is unchanged.
    """
    source_channels = weight.shape[1]
    if in_channels == source_channels:
        return weight
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / source_channels)
    tiled = weight.repeat(1, repeats, *([1] * (weight.ndim - 2)))[:, :in_channels]
    return tiled * (source_channels / in_channels)


def inflate_state_dict(state_2d: Mapping[str, torch.Tensor], model_3d: nn.Module) -> Dict[str, torch.Tensor]:
    """Weights of a 2D network mapped onto ``model_3d`` (same parameter names).

    Per key: equal shapes are copied; 4D conv kernels become 5D by :func:`inflate_conv_weight`
    (``d`` from the 3D shape); 2D linear weights become 1x1x1 conv weights; an input-channel
    mismatch (first conv) is fixed by :func:`adapt_input_channels`.

    Returns:
        an ``OrderedDict`` for ``model_3d.load_state_dict(..., strict=True)``.

    Raises:
        KeyError: keys missing from ``state_2d`` or not in ``model_3d`` (all listed).
        ValueError: a tensor that no rule maps (names the key and both shapes).
    """
    target = model_3d.state_dict()
    missing = sorted(set(target) - set(state_2d))
    unexpected = sorted(set(state_2d) - set(target))
    if missing or unexpected:
        raise KeyError(f"2D state dict does not match the 3D model: missing {missing[:10]}"
                       f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
                       f"{' ...' if len(unexpected) > 10 else ''}")
    result: Dict[str, torch.Tensor] = OrderedDict()
    for key, want in target.items():
        have = state_2d[key].detach().to(dtype=want.dtype) if want.is_floating_point() else state_2d[key].detach()
        if have.ndim == 4 and want.ndim == 5:
            have = inflate_conv_weight(have, want.shape[2])
        elif have.ndim == 2 and want.ndim == 5 and want.shape[2:] == (1, 1, 1):
            have = have[:, :, None, None, None]
        if have.ndim == want.ndim and have.ndim >= 3 and have.shape[1] != want.shape[1] \
                and have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]:
            have = adapt_input_channels(have, want.shape[1])
        if have.shape != want.shape:
            raise ValueError(f"{key}: 2D weight {tuple(state_2d[key].shape)} does not map to 3D {tuple(want.shape)}")
        result[key] = have.clone()
    return result
