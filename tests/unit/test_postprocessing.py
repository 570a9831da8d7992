"""Anatomical postprocessing (keep the heart, not each label's largest blob) and the quality flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent

from cmrssl.flags import check_options
from cmrssl.metrics.quality import frame_quality_flags, function_quality_flags, study_quality_flags
from cmrssl.transforms.labels import KeepHeartd, keep_heart, refuse_retired_keep_largest_component


def _es_frame() -> np.ndarray:
    """An end-systolic prediction [x, y, z]: a small true cavity inside its myocardial ring, the RV against
    the septum, and the two kinds of stray blob few-label models leave: an LV-cavity blob larger than the
    true cavity, far from the heart, and a small RV blob."""
    labels = np.zeros((64, 64, 3), np.int16)
    labels[20:34, 20:34, :] = 2  # myocardium
    labels[24:30, 24:30, :] = 1  # true cavity: 36 voxels per slice
    labels[10:20, 22:32, :] = 3  # RV, touching the septum at x = 20
    labels[45:60, 45:60, 1] = 1  # stray cavity blob: 225 voxels, larger than the true cavity (108)
    labels[0:4, 55:64, 0] = 3  # stray RV blob
    return labels


def test_per_label_largest_component_deletes_the_true_es_cavity_and_keep_heart_does_not():
    labels = _es_frame()
    old = KeepLargestConnectedComponent(applied_labels=[1, 2, 3], independent=True)(torch.as_tensor(labels[None].copy()))
    assert int((old[0, 24:30, 24:30] == 1).sum()) == 0, "the failure the issue describes"
    cleaned, removed = keep_heart(labels)
    np.testing.assert_array_equal(cleaned[20:34, 20:34], labels[20:34, 20:34])  # cavity and ring intact
    assert (cleaned[45:60, 45:60] == 0).all() and (cleaned[0:4, 55:64] == 0).all()
    np.testing.assert_array_equal(cleaned[10:20, 22:32], labels[10:20, 22:32])  # RV beside the septum kept
    assert removed == {"lv_cavity": 225, "lv_myocardium": 0, "rv_cavity": 36}


def test_rv_away_from_the_septum_falls_back_to_its_largest_component():
    labels = np.zeros((40, 40, 2), np.int16)
    labels[10:20, 10:20] = 2
    labels[13:17, 13:17] = 1
    labels[25:35, 25:35] = 3  # a gap of background between RV and septum
    labels[0:2, 30:32] = 3
    cleaned, _ = keep_heart(labels)
    assert (cleaned[25:35, 25:35] == 3).all() and (cleaned[0:2, 30:32] == 0).all()


def test_over_time_the_heart_of_every_frame_is_kept():
    """A cine [T, Z, H, W] with time as a fourth axis: on frame 1 a stray LV complex outgrows the heart's own
    (its cavity and ring), yet the heart is the component that persists over the cycle."""
    cine = np.zeros((3, 2, 48, 48), np.int16)
    for t in range(3):
        cine[t, :, 10:20, 10:20] = 2
        cine[t, :, 13:17, 13:17] = 1
    cine[1, :, 30:46, 30:46] = 1  # larger than the heart's LV on frame 1 alone
    per_frame, _ = keep_heart(cine[1])
    assert (per_frame[:, 13:17, 13:17] == 0).all(), "frame 1 alone would keep the stray blob"
    cleaned, removed = keep_heart(cine)
    assert (cleaned[:, :, 13:17, 13:17] == 1).all() and (cleaned[1, :, 30:46, 30:46] == 0).all()
    assert removed["lv_cavity"] == 2 * 16 * 16


def test_dictionary_transform_reports_structures_lost():
    labels = torch.zeros(1, 32, 32, 2)
    labels[0, 5:15, 5:15] = 2
    labels[0, 25:30, 25:30] = 1  # a cavity nowhere near the myocardium: the LV complex is the ring alone
    out = KeepHeartd("pred")({"pred": labels.clone()})
    assert out["pred_postprocessing"] == {"removed_voxels": {"lv_cavity": 50, "lv_myocardium": 0, "rv_cavity": 0},
                                          "lost": ["lv_cavity"]}
    assert (out["pred"] == 1).sum() == 0 and out["pred"].shape == labels.shape


def test_frame_flags():
    labels = _es_frame()
    frame = np.moveaxis(keep_heart(labels)[0], -1, 0).swapaxes(1, 2)  # [x, y, z] -> [Z, H, W]
    assert frame_quality_flags(frame) == []
    no_cavity = np.where(frame == 1, 2, frame)
    assert frame_quality_flags(no_cavity) == ["no LV cavity"]
    gap = frame.copy()
    gap[1][gap[1] == 1] = 2  # cavity missing on the middle slice
    assert frame_quality_flags(gap) == ["LV cavity missing on slice(s) 1 between slices holding it"]
    open_cavity = frame.copy()
    open_cavity[2][open_cavity[2] == 2] = 0  # no ring on slice 2
    assert frame_quality_flags(open_cavity) == ["LV cavity not enclosed by myocardium on slice(s) 2"]
    open_base = frame.copy()
    open_base[0][open_base[0] == 2] = 0  # the basal-most cavity slice opens to the atrium: not flagged
    assert frame_quality_flags(open_base) == []
    cine = np.stack([frame, no_cavity, no_cavity])
    assert study_quality_flags(cine, frames=[0, 4, 5]) == ["no LV cavity (frames 4-5)"]


def test_function_flags():
    assert function_quality_flags({"lv_edv_ml": 120.0, "lv_esv_ml": 50.0, "lv_ef_percent": 58.3}) == []
    assert function_quality_flags({"lv_edv_ml": 100.0, "lv_esv_ml": 98.0, "lv_ef_percent": 2.0}) == [
        "LV EF 2.0 % outside 5-90 %"]
    assert function_quality_flags({"lv_edv_ml": 50.0, "lv_esv_ml": 60.0, "lv_ef_percent": 95.0}) == [
        "LV EF 95.0 % outside 5-90 %", "LV ESV 60.0 ml above EDV 50.0 ml"]


def test_label_cleanup_option_and_the_retired_flag():
    check_options({"label_cleanup": ["heart", "str:heart,largest_per_label,none"]})
    with pytest.raises(ValueError, match="must be one of heart, largest_per_label, none"):
        check_options({"label_cleanup": ["largest", "str:heart,largest_per_label,none"]})
    refuse_retired_keep_largest_component(None)
    with pytest.raises(ValueError, match="replaced by --label_cleanup"):
        refuse_retired_keep_largest_component(False)


def test_cavity_spilt_through_the_septum_is_dropped_below_the_base():
    """An LV-cavity blob in the RV, touching the septum, joins the LV complex; on slices below the basal-most
    cavity slice it is less than half enclosed by myocardium and becomes background (slices on the last axis)."""
    labels = np.zeros((40, 40, 3), np.int16)
    labels[10:22, 10:22] = 2
    labels[13:19, 13:19] = 1
    labels[4:10, 12:20] = 1  # spilt cavity against the septum (x = 10), on every slice
    cleaned, removed = keep_heart(labels, slice_axis=-1)
    assert (cleaned[4:10, 12:20, 0] == 1).all(), "the basal-most cavity slice may be open: kept"
    assert (cleaned[4:10, 12:20, 1:] == 0).all() and (cleaned[13:19, 13:19] == 1).all()
    assert removed["lv_cavity"] == 2 * 6 * 8
    assert (keep_heart(labels)[0] == labels).all(), "without a slice axis the step is skipped"
