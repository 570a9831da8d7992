"""Projection heads for self-supervised pretraining and the backbone wrapper that feeds them.

- :class:`ProjectionHead`: SimCLR/PCL MLP, 512-512-512-512 (de Mooij et al. 2024).
- :class:`DINOHead`: DINO MLP 512-2048-2048-256, L2-normalised bottleneck and a
  weight-normalised prototype layer (8192 prototypes), Caron et al. 2021.
- :class:`SSLEncoder`: backbone features -> global average pool -> head. The
  backbone is the shared U-Net (:class:`cmrssl.networks.unet.CMRUNet`, its
  bottleneck features) or a MONAI classification network of the LV-index
  ensemble (DenseNet, ResNet, SENet/SE-ResNet/SE-ResNeXt; the features before
  their classifier), 2D or 3D.
- :func:`backbone_feature_dim`, :func:`backbone_state_dict`: what a head needs to
  know about a backbone, and the backbone weights a pretraining run saves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import DenseNet, ResNet, SENet

__all__ = [
    "ProjectionHead",
    "DINOHead",
    "SSLEncoder",
    "backbone_feature_dim",
    "backbone_features",
    "backbone_state_dict",
]


def _is_unet(backbone: nn.Module) -> bool:
    # CMRUNet contract (cmrssl.networks.unet): encode(x) -> list of feature maps, last = bottleneck.
    return callable(getattr(backbone, "encode", None)) and hasattr(backbone, "feature_dim")


def backbone_feature_dim(backbone: nn.Module) -> int:
    """Channels of the feature map the head pools: U-Net bottleneck, or the classifier's input size.

    Raises:
        TypeError: the backbone is none of the supported kinds.
    """
    if _is_unet(backbone):
        return int(backbone.feature_dim)
    if isinstance(backbone, DenseNet):
        return int(backbone.class_layers.out.in_features)
    if isinstance(backbone, ResNet):
        return int(backbone.fc.in_features) if backbone.fc is not None else _resnet_width(backbone)
    if isinstance(backbone, SENet):
        return int(backbone.last_linear.in_features)
    raise TypeError(
        f"unsupported backbone {type(backbone).__name__}: expected the shared U-Net (with encode() and "
        "feature_dim) or a MONAI DenseNet / ResNet / SENet"
    )


def _resnet_width(backbone: ResNet) -> int:
    # without fc, the width is the output channels of the last block's last conv or norm
    last_block = backbone.layer4[-1]
    channels = [m.num_features for m in last_block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return int(channels[-1])


def backbone_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Feature map ``[B, F, *spatial']`` of ``backbone`` for ``x [B, C, *spatial]``.

    The U-Net gives its bottleneck; DenseNet its ``features`` followed by the
    ReLU its classifier applies first; ResNet its ``layer4`` output; SENet its
    ``features``. (A function of the backbone rather than a stored closure, so a
    deep copy of a wrapper, e.g. the DINO teacher, uses its own weights.)
    """
    if _is_unet(backbone):
        return backbone.encode(x)[-1]
    if isinstance(backbone, DenseNet):
        return F.relu(backbone.features(x))
    if isinstance(backbone, ResNet):
        x = backbone.act(backbone.bn1(backbone.conv1(x)))
        if not backbone.no_max_pool:
            x = backbone.maxpool(x)
        return backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(x))))
    if isinstance(backbone, SENet):
        return backbone.features(x)
    backbone_feature_dim(backbone)  # raises the TypeError naming the class
    raise AssertionError("unreachable")


def _classifier_prefixes(backbone: nn.Module) -> tuple:
    if isinstance(backbone, DenseNet):
        return ("class_layers.out.",)
    if isinstance(backbone, ResNet):
        return ("fc.",)
    if isinstance(backbone, SENet):
        return ("last_linear.",)
    return ()


def backbone_state_dict(backbone: nn.Module, parts: Sequence[str] = ("encoder",)) -> "OrderedDict[str, torch.Tensor]":
    """The pretrained weights of ``backbone`` under its own parameter names, on CPU.

    Args:
        backbone: the shared U-Net or a MONAI classification network.
        parts: for the U-Net, the named parts to keep (``("encoder",)`` for the
            contrastive and DINO methods whose decoder never trains,
            ``("encoder", "decoder")`` for MIM; the output ``head`` is task specific and never saved).
            Ignored for classification networks, which keep everything but the classifier layer.

    Returns:
        ordered dict name -> tensor (parameters and buffers, e.g. BatchNorm statistics).
    """
    state = backbone.state_dict()
    if _is_unet(backbone):
        prefixes = tuple(f"{p}." for p in parts)
        selected = OrderedDict((k, v.detach().cpu()) for k, v in state.items() if k.startswith(prefixes))
        if not selected:
            raise ValueError(f"backbone {type(backbone).__name__} has no parameters under parts {list(parts)}")
        return selected
    backbone_feature_dim(backbone)  # TypeError for unsupported kinds
    drop = _classifier_prefixes(backbone)
    return OrderedDict((k, v.detach().cpu()) for k, v in state.items() if not k.startswith(drop))


class ProjectionHead(nn.Module):
    """SimCLR-style MLP projection: ``in -> hidden... -> out``, BatchNorm + ReLU between layers.

    Args:
        in_dim: input features (the backbone's pooled width, 512 for the U-Net bottleneck).
        hidden_dims: widths of the hidden layers, ``(512, 512)``.
        out_dim: projection size, 512.
        batch_norm: BatchNorm1d after each hidden linear layer.

    Shapes: ``[B, in_dim] -> [B, out_dim]``.
    """

    def __init__(
        self, in_dim: int = 512, hidden_dims: Sequence[int] = (512, 512), out_dim: int = 512, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden_dims):
            raise ValueError(f"layer widths must be positive, got in_dim={in_dim} hidden_dims={hidden_dims} out_dim={out_dim}")
        layers: list = []
        width = int(in_dim)
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, int(hidden), bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(hidden)))
            layers.append(nn.ReLU(inplace=True))
            width = int(hidden)
        layers.append(nn.Linear(width, int(out_dim)))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DINOHead(nn.Module):
    """DINO projection head with a weight-normalised prototype layer.

    ``in -> hidden -> hidden -> bottleneck`` (GELU, optional BatchNorm), the
    bottleneck L2-normalised, then a bias-free linear layer onto ``output_dim``
    prototypes whose weight is weight-normalised with its norm fixed at 1
    (``norm_last_layer``, Caron et al. 2021), which stabilises training.

    Args:
        in_dim: 512 (U-Net bottleneck).
        hidden_dim: 2048.
        bottleneck_dim: 256.
        output_dim: number of prototypes, 8192 (the reference's choice, 65536 in DINO).
        batch_norm: BatchNorm1d in the MLP (the reference uses it).
        norm_last_layer: freeze the weight-norm magnitude at 1.

    Shapes: ``[B, in_dim] -> [B, output_dim]``.
    """

    def __init__(
        self,
        in_dim: int = 512,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 8192,
        batch_norm: bool = True,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        dims = (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim),
                ("output_dim", output_dim))
        for name, value in dims:
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        layers: list = [nn.Linear(in_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim)]
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        last = nn.Linear(bottleneck_dim, output_dim, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last)
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad = not norm_last_layer
        self.in_dim, self.output_dim = int(in_dim), int(output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)


class SSLEncoder(nn.Module):
    """Backbone features -> global average pool -> head: the network a contrastive or DINO method trains.

    Args:
        backbone: the shared U-Net (``CMRUNet``; its bottleneck is pooled) or a
            MONAI DenseNet / ResNet / SENet (its features before the classifier).
        head: a projection head taking ``backbone_feature_dim(backbone)`` inputs
            (``None``: return the pooled features).
        freeze_unused: for the U-Net, switch off gradients of the parts the pooled
            features never reach (``decoder``, ``head``), so the optimiser and DDP
            see only trained weights (DDP would otherwise fail on unused parameters).

    Shapes: ``[B, C, H, W(, D)] -> [B, head output]``.
    """

    def __init__(self, backbone: nn.Module, head: Optional[nn.Module] = None, freeze_unused: bool = True) -> None:
        super().__init__()
        self.feature_dim = backbone_feature_dim(backbone)
        head_in = getattr(head, "in_dim", None)
        if head_in is not None and int(head_in) != self.feature_dim:
            raise ValueError(
                f"head expects {head_in} input features but the backbone {type(backbone).__name__} "
                f"gives {self.feature_dim}"
            )
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        if freeze_unused and _is_unet(backbone):
            for part in ("decoder", "head"):
                module = getattr(backbone, part, None)
                if isinstance(module, nn.Module):
                    module.requires_grad_(False)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, *spatial] -> [B, feature_dim]`` global-average-pooled backbone features."""
        return backbone_features(self.backbone, x).flatten(2).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled_features(x))

    def backbone_state_dict(self) -> Dict[str, torch.Tensor]:
        """The backbone's pretrained weights under its own names (encoder only for the U-Net)."""
        return backbone_state_dict(self.backbone, parts=("encoder",))
