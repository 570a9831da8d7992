"""Scaling augmentation for LV-index regression: images zoomed, index targets scaled with them.

Gessert & Schlaefer scale images by 0.8-1.2 and the targets accordingly: lengths (dimensions,
wall thicknesses) by the factor and areas by its square. Works on 2D samples (``[C, H, W]``,
indices ``[11]``) and 2D+t clips (``[C, T, H, W]``, indices ``[11, T]``; time never zoomed).
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Zoom

__all__ = ["scale_lvquan_targets", "RandZoomLVQuand"]

NUM_AREAS = 2  # cavity and myocardium areas lead the 11 indices (LVQuan order)


def scale_lvquan_targets(indices, factor: float):
    """Indices ``[11]`` or ``[11, T]`` after zooming the image by ``factor``: areas x f^2, lengths x f."""
    scale = np.full(11, float(factor))
    scale[:NUM_AREAS] = float(factor) ** 2
    if isinstance(indices, torch.Tensor):
        s = torch.as_tensor(scale, dtype=indices.dtype, device=indices.device)
        return indices * (s if indices.ndim == 1 else s[:, None])
    indices = np.asarray(indices)
    return (indices * (scale if indices.ndim == 1 else scale[:, None])).astype(indices.dtype)


class RandZoomLVQuand(RandomizableTransform, MapTransform):
    """Zoom ``keys`` in-plane by one random factor in ``[min_zoom, max_zoom]`` (size kept) and scale
    ``indices_key`` with it.

    Args:
        keys: image-like keys (``[C, H, W]`` or ``[C, T, H, W]``).
        indices_key: key of the 11 index targets.
        prob: probability of zooming.
        min_zoom, max_zoom: factor range (paper: 0.8-1.2).
        mode: interpolation per key (e.g. ``["bilinear", "nearest"]`` for image and label).
    """

    def __init__(self, keys: KeysCollection, indices_key: str = "indices", prob: float = 1.0,
                 min_zoom: float = 0.8, max_zoom: float = 1.2, mode: Union[str, Sequence[str]] = "bilinear",
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.indices_key = indices_key
        self.min_zoom, self.max_zoom = float(min_zoom), float(max_zoom)
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(self.mode) != len(self.keys):
            raise ValueError(f"mode needs one entry per key ({len(self.keys)}), got {self.mode}")
        self.factor = 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.factor = float(self.R.uniform(self.min_zoom, self.max_zoom)) if self._do_transform else 1.0

    def __call__(self, data: Mapping[Hashable, object]):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, mode in self.key_iterator(d, self.mode):
            image = d[key]
            spatial = image.ndim - 1
            zoom = (1.0,) * (spatial - 2) + (self.factor, self.factor)  # time (if any) untouched
            d[key] = Zoom(zoom=zoom, mode=mode, keep_size=True, padding_mode="constant")(image)
        d[self.indices_key] = scale_lvquan_targets(d[self.indices_key], self.factor)
        return d
