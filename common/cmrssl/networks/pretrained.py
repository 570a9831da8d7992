"""Pretrained backbone weights from a local file (no download at run time).

:func:`load_pretrained_backbone` loads, into a MONAI DenseNet/ResNet/SENet backbone (2D, or
2D+t from :func:`cmrssl.networks.inflate.convert_2d_to_3d`):

- ImageNet weights in torchvision layout (``features.denseblock1.denselayer1.norm1.weight``
  or the older ``...norm.1.weight``; ResNet/SENet names equal MONAI's), classifier dropped;
- a ``cmr_ssp_pretraining`` checkpoint (MONAI parameter names, optionally under
  ``backbone.``/``module.`` prefixes or a ``state_dict``/``model`` entry).

Weights are adapted on load by :func:`cmrssl.networks.inflate.inflate_state_dict`'s rules:
first-conv channels (RGB -> grey: summed), 2D kernels inflated for 2D+t. Every backbone
weight except the classifier must be present; otherwise the error names the missing keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

from cmrssl.cli_errors import one_line
from cmrssl.networks.checkpoint import read_state_dict
from cmrssl.networks.inflate import inflate_state_dict

__all__ = ["torchvision_to_monai_keys", "load_pretrained_backbone"]

_CLASSIFIER_PREFIXES = ("classifier.", "class_layers.out.", "fc.", "last_linear.")
_OLD_DENSE = re.compile(
    r"^(.*denselayer\d+)\.(norm|relu|conv)\.([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_NEW_DENSE = re.compile(r"^(.*denselayer\d+)\.((?:norm|relu|conv)[12]\..*)$")


def torchvision_to_monai_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Torchvision DenseNet names -> MONAI ``DenseNet`` names (other networks unchanged)."""
    out = {}
    for key, value in state.items():
        old = _OLD_DENSE.match(key)
        new = _NEW_DENSE.match(key)
        if old:
            key = f"{old.group(1)}.layers.{old.group(2)}{old.group(3)}.{old.group(4)}"
        elif new and ".layers." not in key:
            key = f"{new.group(1)}.layers.{new.group(2)}"
        out[key] = value
    return out


def load_pretrained_backbone(backbone: nn.Module, path) -> List[str]:
    """Load ``path`` into ``backbone`` (in place); returns the backbone keys left untouched (its classifier).

    Raises:
        FileNotFoundError: no file. ValueError: not a state dict, or backbone weights missing /
        not mappable (the message lists them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained weight file")
    state = torchvision_to_monai_keys(read_state_dict(path))
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    target = backbone.state_dict()
    wanted = [k for k in target if not k.startswith(_CLASSIFIER_PREFIXES)]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{path}: {len(missing)} backbone weight(s) missing, e.g. {missing[:8]}")

    class _Subset(nn.Module):  # inflate_state_dict maps exactly the keys of a module's state_dict
        def state_dict(self, *args, **kwargs):
            return {k: target[k] for k in wanted}

    try:  # a weight of the wrong shape: the messages of inflation and of torch do not name the file
        mapped = inflate_state_dict({k: state[k] for k in wanted}, _Subset())
        result = backbone.load_state_dict(mapped, strict=False)
    except (KeyError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: does not fit the {type(backbone).__name__} backbone "
                         f"(was it saved from another architecture or size?): {one_line(error)}") from error
    untouched = sorted(result.missing_keys)
    if any(not k.startswith(_CLASSIFIER_PREFIXES) for k in untouched):
        raise ValueError(f"{path}: weights not loaded: {[k for k in untouched if not k.startswith(_CLASSIFIER_PREFIXES)]}")
    return untouched
