"""Per-structure segmentation scores of one 3D frame: Dice, HD95 and volumes, in the frame's real geometry.

Structures are the canonical labels (:data:`cmrssl.labels.STRUCTURES`: 1 LV cavity, 2 LV myocardium, 3 RV
cavity). Dice and the 95th-percentile Hausdorff distance are MONAI's
(``compute_dice``, ``compute_hausdorff_distance`` with the voxel spacing, so
HD95 is in mm across anisotropic short-axis stacks); volumes are voxel counts
times the voxel volume.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot

from cmrssl.labels import STRUCTURES

__all__ = ["structure_scores"]


def structure_scores(prediction, reference, spacing_mm: Sequence[float]) -> Dict[str, float]:
    """Dice, HD95 (mm) and volumes (ml) of each structure of one frame.

    Args:
        prediction, reference: canonical label volumes of one shape (any 3D
            axis order, e.g. ``[W, H, Z]`` as MONAI loads them).
        spacing_mm: voxel size along the arrays' axes, in the same order.

    Returns:
        ``{"dice_<s>", "hd95_mm_<s>", "volume_ml_<s>", "reference_volume_ml_<s>"}``
        for each structure ``s``; Dice and HD95 are NaN where the reference and the
        prediction are both empty (nothing to score), HD95 is NaN where only one is.

    Raises:
        ValueError: shapes or spacing do not match, or spacing is not positive.
    """
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape or prediction.ndim != 3:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} must be 3D of one shape")
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive numbers, got {spacing_mm}")
    num_classes = 1 + max(STRUCTURES.values())
    pred = one_hot(torch.as_tensor(prediction.astype(np.int64))[None, None], num_classes)
    ref = one_hot(torch.as_tensor(reference.astype(np.int64))[None, None], num_classes)
    dice = compute_dice(pred, ref, include_background=False, ignore_empty=True)[0]
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    scores: Dict[str, float] = {}
    for name, value in STRUCTURES.items():
        present_pred, present_ref = bool(pred[0, value].any()), bool(ref[0, value].any())
        if present_pred and present_ref:
            hd95 = float(
                compute_hausdorff_distance(
                    pred[:, [0, value]], ref[:, [0, value]], include_background=False, percentile=95, spacing=spacing
                )[0, 0]
            )
        else:
            hd95 = float("nan")
        scores[f"dice_{name}"] = float(dice[value - 1]) if (present_pred or present_ref) else float("nan")
        scores[f"hd95_mm_{name}"] = hd95
        scores[f"volume_ml_{name}"] = float(pred[0, value].sum()) * voxel_ml
        scores[f"reference_volume_ml_{name}"] = float(ref[0, value].sum()) * voxel_ml
    return scores
