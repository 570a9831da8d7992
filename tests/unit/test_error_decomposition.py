"""The evaluation's error decomposition: where a frame's volume error goes (cmrssl.metrics.segmentation)."""

import numpy as np
import pytest

from cmrssl.labels import LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY
from cmrssl.metrics.segmentation import CONFUSION_KEYS, confusion_volumes_ml, structure_dice, structure_scores


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _heart(epicardial_radius, shape=(64, 64), slices=4):
    """[W, H, Z] labels, slices last as MONAI loads them: a cavity in a myocardial ring, an RV beside it."""
    frame = np.zeros(shape, dtype=np.int64)
    frame[_disc(shape, (32, 44), 8)] = RV_CAVITY
    frame[_disc(shape, (32, 28), epicardial_radius)] = LV_MYOCARDIUM
    frame[_disc(shape, (32, 28), 7)] = LV_CAVITY
    return np.repeat(frame[..., None], slices, axis=-1)


def test_an_epicardium_one_voxel_out_is_the_border_ring_and_a_blob_is_further_out():
    reference = _heart(11)
    prediction = _heart(12)  # the epicardium one voxel too far out (where it does not meet the RV)
    prediction[2:6, 2:6, 1] = LV_MYOCARDIUM  # a stray blob in one slice
    spacing = (1.5, 1.5, 8.0)
    voxel_ml = 1.5 * 1.5 * 8.0 / 1000
    volumes = confusion_volumes_ml(prediction, reference, spacing, slice_axis=-1)
    assert tuple(volumes) == CONFUSION_KEYS
    grown = (reference == 0) & (prediction == LV_MYOCARDIUM)
    assert volumes["ml_background_as_lv_myocardium"] == pytest.approx(grown.sum() * voxel_ml)
    assert volumes["ml_background_as_lv_myocardium_further_out"] == pytest.approx(16 * voxel_ml)
    assert volumes["ml_background_as_lv_myocardium_within_one_voxel"] == pytest.approx((grown.sum() - 16) * voxel_ml)
    assert volumes["ml_lv_myocardium_as_background"] == 0.0
    # the decomposition accounts for the whole myocardial volume error
    added = sum(volumes[f"ml_{ref}_as_lv_myocardium"] for ref in ("background", "lv_cavity", "rv_cavity"))
    removed = sum(volumes[f"ml_lv_myocardium_as_{pred}"] for pred in ("background", "lv_cavity", "rv_cavity"))
    error = ((prediction == LV_MYOCARDIUM).sum() - (reference == LV_MYOCARDIUM).sum()) * voxel_ml
    assert added - removed == pytest.approx(error)


def test_the_border_ring_does_not_reach_across_slices():
    reference = _heart(11)
    reference[..., 2:] = 0  # the myocardium ends after two slices
    prediction = reference.copy()
    prediction[..., 2] = _heart(11)[..., 2]  # an extra basal slice of myocardium: not a border error
    volumes = confusion_volumes_ml(prediction, reference, (1.0, 1.0, 10.0), slice_axis=-1)
    assert volumes["ml_background_as_lv_myocardium_within_one_voxel"] == 0.0
    assert volumes["ml_background_as_lv_myocardium_further_out"] > 0.0


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        confusion_volumes_ml(np.zeros((4, 4, 2)), np.zeros((4, 4, 3)), (1, 1, 1))


def test_structure_dice_counts_overlap_and_leaves_an_absent_structure_unscored():
    reference = _heart(11)
    reference[reference == RV_CAVITY] = 0  # no RV in either volume: nothing to score
    prediction = reference.copy()
    moved = np.roll(reference == LV_CAVITY, 2, axis=0)
    prediction[prediction == LV_CAVITY] = LV_MYOCARDIUM
    prediction[moved] = LV_CAVITY
    dice = structure_dice(prediction, reference)
    truth, guess = reference == LV_CAVITY, prediction == LV_CAVITY
    assert dice["dice_lv_cavity"] == pytest.approx(2 * (truth & guess).sum() / (truth.sum() + guess.sum()))
    assert dice["dice_lv_cavity"] < 1.0
    assert np.isnan(dice["dice_rv_cavity"])
    assert dice == pytest.approx({k: v for k, v in structure_scores(prediction, reference, (1.5, 1.5, 8.0)).items()
                                  if k.startswith("dice_")}, nan_ok=True)
