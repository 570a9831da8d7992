"""Per-structure segmentation scores of one 3D frame: Dice, HD95 and volumes, in the frame's real geometry.

Structures are the canonical labels (:data:`cmrssl.labels.STRUCTURES`: 1 LV cavity, 2 LV myocardium, 3 RV
cavity). Dice and the 95th-percentile Hausdorff distance are MONAI's
(``compute_dice``, ``compute_hausdorff_distance`` with the voxel spacing, so
HD95 is in mm across anisotropic short-axis stacks); volumes are voxel counts
times the voxel volume. :func:`confusion_volumes_ml` splits a frame's error
into where it goes: the volume of each reference label predicted as each other
label (e.g. reference background called myocardium, the LV mass bias), with
the myocardium added outside the reference's epicardium split into the one-voxel
border ring and what lies further out.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot
from scipy import ndimage

from cmrssl.labels import BACKGROUND, LABELS, LV_MYOCARDIUM, STRUCTURES

__all__ = ["structure_dice", "structure_scores", "confusion_volumes_ml", "CONFUSION_KEYS"]

#: Keys of :func:`confusion_volumes_ml`, in table order: ``ml_<reference>_as_<predicted>`` for every
#: pair of different labels, then the outward myocardium split by distance from the reference.
CONFUSION_KEYS = tuple(
    f"ml_{ref}_as_{pred}" for ref in LABELS for pred in LABELS if ref != pred
) + ("ml_background_as_lv_myocardium_within_one_voxel", "ml_background_as_lv_myocardium_further_out")


def _frame_pair(prediction, reference):
    """Both label volumes as arrays, refused unless 3D and of one shape."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape or prediction.ndim != 3:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} must be 3D of one shape")
    return prediction, reference


def _one_hot_pair(prediction, reference):
    """Both label volumes one-hot ``[1, C, *spatial]`` over the canonical labels."""
    num_classes = 1 + max(STRUCTURES.values())
    return tuple(one_hot(torch.as_tensor(v.astype(np.int64))[None, None], num_classes) for v in (prediction, reference))


def _dice_of(pred: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    dice = compute_dice(pred, ref, include_background=False, ignore_empty=True)[0]
    return {
        f"dice_{name}": float(dice[value - 1]) if bool(pred[0, value].any() or ref[0, value].any()) else float("nan")
        for name, value in STRUCTURES.items()
    }


def structure_dice(prediction, reference) -> Dict[str, float]:
    """Dice of each structure of one frame, ``{"dice_<s>"}``: NaN where both are empty.

    Args:
        prediction, reference: canonical label volumes of one shape (3D).
    """
    return _dice_of(*_one_hot_pair(*_frame_pair(prediction, reference)))


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
    prediction, reference = _frame_pair(prediction, reference)
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive numbers, got {spacing_mm}")
    pred, ref = _one_hot_pair(prediction, reference)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    dice = _dice_of(pred, ref)
    scores: Dict[str, float] = {}
    for name, value in STRUCTURES.items():
        scores[f"dice_{name}"] = dice[f"dice_{name}"]
        present_pred, present_ref = bool(pred[0, value].any()), bool(ref[0, value].any())
        if present_pred and present_ref:
            hd95 = float(
                compute_hausdorff_distance(
                    pred[:, [0, value]], ref[:, [0, value]], include_background=False, percentile=95, spacing=spacing
                )[0, 0]
            )
        else:
            hd95 = float("nan")
        scores[f"hd95_mm_{name}"] = hd95
        scores[f"volume_ml_{name}"] = float(pred[0, value].sum()) * voxel_ml
        scores[f"reference_volume_ml_{name}"] = float(ref[0, value].sum()) * voxel_ml
    return scores


def confusion_volumes_ml(prediction, reference, spacing_mm: Sequence[float], slice_axis: int = -1) -> Dict[str, float]:
    """Where a frame's error goes: the volume (ml) of each reference label predicted as each other label.

    ``ml_background_as_lv_myocardium`` (myocardium predicted outside the reference's
    epicardium, the usual source of an LV mass bias) is also split into the part
    within one voxel of the reference myocardium in its slice (a border placed one
    voxel too far out) and the part further out (blobs, extra basal slices).

    Args:
        prediction, reference: canonical label volumes of one shape (3D).
        spacing_mm: voxel size along the arrays' axes.
        slice_axis: the axis across slices (``-1`` for MONAI's ``[W, H, Z]``); the border
            ring grows in-plane only.

    Returns:
        ``{key: ml}`` for every key of :data:`CONFUSION_KEYS`.
    """
    prediction, reference = _frame_pair(prediction, reference)
    voxel_ml = float(np.prod([float(s) for s in spacing_mm])) / 1000.0
    volumes = {
        f"ml_{ref}_as_{pred}": float(np.count_nonzero((reference == ref_value) & (prediction == pred_value))) * voxel_ml
        for ref, ref_value in LABELS.items() for pred, pred_value in LABELS.items() if ref != pred
    }
    in_plane = np.expand_dims(ndimage.generate_binary_structure(2, 2), slice_axis % 3)  # 3 x 3, one slice thick
    ring = ndimage.binary_dilation(reference == LV_MYOCARDIUM, structure=in_plane)
    outward = (reference == BACKGROUND) & (prediction == LV_MYOCARDIUM)
    volumes["ml_background_as_lv_myocardium_within_one_voxel"] = float(np.count_nonzero(outward & ring)) * voxel_ml
    volumes["ml_background_as_lv_myocardium_further_out"] = float(np.count_nonzero(outward & ~ring)) * voxel_ml
    return volumes
