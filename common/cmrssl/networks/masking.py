"""Patch masks of masked image modelling (MIM): which pixels of a 2D slice the network may not see.

de Mooij et al. 2024 mask 75 % of the 32x32 patches of each slice (masked
pixels set to 0) and let the full U-Net reconstruct the image. The mask is
drawn in two places, both from the functions here so they draw alike:

- in the data pipeline of pretraining, by the MONAI transforms
  :class:`cmrssl.transforms.masking.RandPatchMask` / ``RandPatchMaskd`` (``[C, H, W]`` images);
- inside the network during multi-task fine-tuning, by
  :class:`cmrssl.networks.multitask.MultiTaskUNet` (``[B, C, H, W]`` batches, fresh masks every iteration).

Plain numpy/torch and no MONAI, so networks and transforms (a layer above) can
both import it. The masked-pixel loss is :class:`cmrssl.losses.masked.MaskedMSELoss`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["check_mask_args", "patch_grid_mask", "random_patch_mask"]


def check_mask_args(patch_size: Sequence[int], mask_ratio: float) -> Tuple[int, int]:
    """``patch_size`` as ``(rows, columns)`` ints, once both arguments are checked.

    Raises:
        ValueError: ``patch_size`` is not two positive ints, or ``mask_ratio`` is outside ``[0, 1]``.
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 2 or min(patch) < 1:
        raise ValueError(f"patch_size must be two positive ints (rows, columns), got {patch_size}")
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    return patch


def patch_grid_mask(
    spatial_shape: Sequence[int], patch: Tuple[int, int], mask_ratio: float, rng: np.random.RandomState
) -> np.ndarray:
    """One ``[H, W]`` bool mask (True = masked): ``round(ratio * n_patches)`` whole patches chosen without replacement.

    Args:
        spatial_shape: ``(H, W)`` of the image in pixels.
        patch: ``(rows, columns)`` of a patch in pixels (checked by :func:`check_mask_args`).
        mask_ratio: fraction of patches masked.
        rng: numpy random state; one ``permutation`` is drawn from it per call.
    """
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
    patch = check_mask_args(patch_size, mask_ratio)
    rng = generator if generator is not None else np.random.RandomState()
    masks = np.stack([patch_grid_mask(shape[2:], patch, mask_ratio, rng) for _ in range(shape[0])])
    return torch.as_tensor(masks[:, None], device=device)
