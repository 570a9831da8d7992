"""Masked image modelling (MIM): patch masks and the masked-pixel reconstruction loss.

de Mooij et al. 2024 mask 75 % of the 32x32 patches of each slice (masked
pixels set to 0), let the full U-Net predict the image, and score the mean
squared error over the masked pixels only: unmasked pixels are visible to the
network, so reconstructing them would teach nothing.

- :func:`random_patch_mask`: the mask generator on batched tensors.
- :class:`RandPatchMask` / :class:`RandPatchMaskd`: the same as MONAI transforms
  (``[C, H, W]`` images), so masking can run in the data pipeline.
- :class:`MaskedMSELoss`: MSE over masked pixels.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from torch.nn.modules.loss import _Loss

__all__ = ["random_patch_mask", "MaskedMSELoss", "RandPatchMask", "RandPatchMaskd"]


def _check_mask_args(patch_size: Sequence[int], mask_ratio: float) -> tuple:
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 2 or min(patch) < 1:
        raise ValueError(f"patch_size must be two positive ints (rows, columns), got {patch_size}")
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    return patch


def _patch_grid_mask(
    spatial_shape: Sequence[int], patch: tuple, mask_ratio: float, rng: np.random.RandomState
) -> np.ndarray:
    """One ``[H, W]`` bool mask: ``round(ratio * n_patches)`` whole patches chosen without replacement."""
    rows, cols = int(spatial_shape[0]), int(spatial_shape[1])
    grid_rows, grid_cols = math.ceil(rows / patch[0]), math.ceil(cols / patch[1])
    num_patches = grid_rows * grid_cols
    num_masked = int(round(mask_ratio * num_patches))
    grid = np.zeros(num_patches, dtype=bool)
    grid[rng.permutation(num_patches)[:num_masked]] = True
    grid = grid.reshape(grid_rows, grid_cols)
    # patches at the border are cut to the image when its size is not a multiple of the patch
    return np.kron(grid, np.ones(patch, dtype=bool))[:rows, :cols]


def random_patch_mask(
    shape: Sequence[int],
    patch_size: Sequence[int] = (32, 32),
    mask_ratio: float = 0.75,
    generator: Optional[np.random.RandomState] = None,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """Random patch masks for a batch of 2D images.

    Args:
        shape: ``(B, C, H, W)`` of the images.
        patch_size: ``(rows, columns)`` of a patch in pixels (32x32).
        mask_ratio: fraction of patches masked per image (0.75); exactly
            ``round(ratio * number_of_patches)`` patches, so the pixel ratio is exact
            when ``H`` and ``W`` are multiples of the patch size.
        generator: numpy random state (a fresh unseeded one if None).
        device: device of the returned mask.

    Returns:
        bool tensor ``[B, 1, H, W]``, ``True`` on masked pixels (the same mask for every channel).
    """
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W), got {tuple(shape)}")
    patch = _check_mask_args(patch_size, mask_ratio)
    rng = generator if generator is not None else np.random.RandomState()
    masks = np.stack([_patch_grid_mask(shape[2:], patch, mask_ratio, rng) for _ in range(shape[0])])
    return torch.as_tensor(masks[:, None], device=device)


class MaskedMSELoss(_Loss):
    """Mean squared error over masked pixels only.

    ``sum(mask * (pred - target)^2) / (sum(mask) * C)``; unmasked pixels do not
    contribute (their values and gradients are ignored).

    Example:
        >>> MaskedMSELoss()(prediction, image, mask)  # [B, C, H, W], [B, C, H, W], [B, 1 or C, H, W]
    """

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            prediction: ``[B, C, H, W]`` reconstructed image.
            target: ``[B, C, H, W]`` original (unmasked) image.
            mask: ``[B, 1, H, W]`` or ``[B, C, H, W]``, nonzero on masked pixels.

        Raises:
            ValueError: shapes differ, or no pixel is masked.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        mask = mask.to(device=prediction.device, dtype=torch.bool)
        if mask.ndim != prediction.ndim or mask.shape[2:] != prediction.shape[2:] or mask.shape[0] != prediction.shape[0]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match prediction {tuple(prediction.shape)}")
        mask = mask.expand_as(prediction)
        num_masked = mask.sum()
        if int(num_masked) == 0:
            raise ValueError("the mask selects no pixel; the masked MSE is undefined")
        # select before squaring (not multiply by the mask): a nan/inf in a visible pixel
        # then reaches neither the loss nor the gradient
        error = torch.where(mask, prediction.float() - target.float(), torch.zeros((), device=prediction.device))
        return (error**2).sum() / num_masked


class RandPatchMask(Randomizable, Transform):
    """Mask random patches of a ``[C, H, W]`` image: masked pixels set to ``fill_value``.

    Args:
        patch_size: ``(rows, columns)`` of a patch (32x32).
        mask_ratio: fraction of patches masked (0.75).
        fill_value: value written into masked pixels (0).

    Returns from ``__call__``: ``(masked_image [C, H, W], mask [1, H, W] float, 1 = masked)``.
    """

    def __init__(self, patch_size: Sequence[int] = (32, 32), mask_ratio: float = 0.75, fill_value: float = 0.0) -> None:
        self.patch_size = _check_mask_args(patch_size, mask_ratio)
        self.mask_ratio = float(mask_ratio)
        self.fill_value = float(fill_value)
        self._mask: Optional[np.ndarray] = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self._mask = _patch_grid_mask(spatial_shape, self.patch_size, self.mask_ratio, self.R)

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

    For each key writes ``{key}{masked_suffix}`` (the masked image) and
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
