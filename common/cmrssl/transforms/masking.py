"""Masked image modelling's input as MONAI transforms: random patches of a slice set to a fill value.

MIM pretraining (``cmr_ssp_pretraining``'s ``mim.json``) masks each slice in the
data pipeline, after the augmentation (:class:`cmrssl.transforms.views.RandCMRAugmentd`):
:class:`RandPatchMaskd` keeps the original image as the reconstruction target
and adds the masked image and the mask, which
:class:`cmrssl.engines.ssl.MaskedImageModellingMethod` feeds to the U-Net and to
:class:`cmrssl.losses.masked.MaskedMSELoss`. The masks are drawn by
:func:`cmrssl.networks.masking.patch_grid_mask`, as multi-task fine-tuning draws
them inside the network.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Optional, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from cmrssl.networks.masking import check_mask_args, patch_grid_mask

__all__ = ["RandPatchMask", "RandPatchMaskd"]


class RandPatchMask(Randomizable, Transform):
    """Mask random patches of a ``[C, H, W]`` image: masked pixels set to ``fill_value``.

    Args:
        patch_size: ``(rows, columns)`` of a patch in pixels (32x32).
        mask_ratio: fraction of patches masked (0.75); the same mask for every channel.
        fill_value: value written into masked pixels (0, the mean of z-scored intensities).

    Returns from ``__call__``: ``(masked_image [C, H, W], mask [1, H, W] float, 1 = masked)``.
    """

    def __init__(self, patch_size: Sequence[int] = (32, 32), mask_ratio: float = 0.75, fill_value: float = 0.0) -> None:
        self.patch_size = check_mask_args(patch_size, mask_ratio)
        self.mask_ratio = float(mask_ratio)
        self.fill_value = float(fill_value)
        self._mask: Optional[np.ndarray] = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self._mask = patch_grid_mask(spatial_shape, self.patch_size, self.mask_ratio, self.R)

    def __call__(self, img: torch.Tensor, randomize: bool = True):
        img_t = torch.as_tensor(img)
        if img_t.ndim != 3:
            raise ValueError(f"RandPatchMask expects a [C, H, W] image, got shape {tuple(img_t.shape)}")
        if randomize or self._mask is None:
            self.randomize(img_t.shape[1:])
        mask = torch.as_tensor(self._mask, device=img_t.device)[None]
        masked = img.clone() if isinstance(img, torch.Tensor) else torch.as_tensor(img).clone()
        masked[mask.expand_as(img_t)] = self.fill_value
        return masked, mask.to(torch.float32)


class RandPatchMaskd(Randomizable, MapTransform):
    """Dictionary twin of :class:`RandPatchMask`.

    For each key writes ``{key}{masked_suffix}`` (the masked image ``[C, H, W]``) and
    ``{key}{mask_suffix}`` (``[1, H, W]`` float, 1 = masked); the original image
    stays under ``key`` as the reconstruction target.
    """

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: Sequence[int] = (32, 32),
        mask_ratio: float = 0.75,
        fill_value: float = 0.0,
        masked_suffix: str = "_masked",
        mask_suffix: str = "_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.masker = RandPatchMask(patch_size, mask_ratio, fill_value)
        self.masked_suffix = masked_suffix
        self.mask_suffix = mask_suffix

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:  # masks are drawn per key in __call__
        pass

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.masked_suffix}"], d[f"{key}{self.mask_suffix}"] = self.masker(d[key])
        return d
