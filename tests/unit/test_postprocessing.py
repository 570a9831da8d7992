"""Anatomical postprocessing (keep the heart, not each label's largest blob) and the quality flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent

from cmrssl.flags import check_options
from cmrssl.metrics.quality import (
    frame_quality_flags,
    function_quality_flags,
    heart_shift_flags,
    study_quality_flags,
    verdict,
    volume_curve_flags,
)
from cmrssl.transforms.labels import (
    CheckLabels, KeepHeartd, keep_heart, keep_study_heart, myocardial_border_share, refuse_retired_keep_largest_component,
)


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
    speck = np.concatenate([frame] * 4 + [np.zeros_like(frame[:2])], axis=0)  # 12 slices, then 2 empty
    speck[-1, 26, 26] = 3  # one RV pixel beyond an empty apical slice: a gap worth 4 % of the RV
    assert frame_quality_flags(speck) == []
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
    assert function_quality_flags({"lv_edv_ml": 620.0, "lv_esv_ml": 300.0, "lv_ef_percent": 51.6,
                                   "lv_mass_g": 12.0, "rv_edv_ml": None}) == [
        "LV EDV 620.0 ml outside the plausible 30-550 ml", "LV mass 12.0 g outside the plausible 20-400 g"]


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


def _heart(shape, corner, size=10, cavity=4):
    """A frame [Z, H, W] holding one LV complex (a myocardial square ring around its cavity) at ``corner``."""
    frame = np.zeros(shape, np.int16)
    y, x = corner
    frame[:, y:y + size, x:x + size] = 2
    inset = (size - cavity) // 2
    frame[:, y + inset:y + inset + cavity, x + inset:x + inset + cavity] = 1
    return frame


def test_study_heart_keeps_on_each_frame_the_heart_the_other_frames_agree_on():
    """ED right; on ES a false LV complex far away outgrows the true (small) heart: the study keeps the true one."""
    ed = _heart((2, 64, 64), (10, 10), size=12, cavity=6)
    es = _heart((2, 64, 64), (11, 11), size=10, cavity=2)
    es[_heart((2, 64, 64), (40, 40), size=16, cavity=8) > 0] = _heart((2, 64, 64), (40, 40), size=16, cavity=8)[
        _heart((2, 64, 64), (40, 40), size=16, cavity=8) > 0]
    assert (keep_heart(es)[0][:, 12:20, 12:20] == 0).all(), "the frame alone keeps the false heart"
    cleaned, removed = keep_study_heart(np.stack([ed, es]), slice_axis=0)
    np.testing.assert_array_equal(cleaned[0], ed)  # nothing lost where the frame was right
    np.testing.assert_array_equal(cleaned[1], _heart((2, 64, 64), (11, 11), size=10, cavity=2))
    assert removed["lv_cavity"] == 2 * 64 and removed["lv_myocardium"] == 2 * (256 - 64)
    single, _ = keep_study_heart(es[None], slice_axis=0)  # one frame: the largest, as keep_heart
    np.testing.assert_array_equal(single[0], keep_heart(es, slice_axis=0)[0])


def test_dictionary_transform_keeps_the_raw_labels_when_asked():
    labels = torch.zeros(1, 32, 32, 2)
    labels[0, 5:15, 5:15] = 2
    labels[0, 25:30, 25:30] = 1
    out = KeepHeartd("pred", raw_suffix="_raw")({"pred": labels.clone()})
    assert torch.equal(torch.as_tensor(out["pred_raw"]), labels) and (out["pred"] == 1).sum() == 0


def test_study_flags_heart_shift_septum_and_verdict():
    spacing = (10.0, 1.5, 1.5)
    ed = _heart((3, 80, 80), (20, 20))
    ed[:, 20:30, 10:20] = 3  # RV against the septum
    near = _heart((3, 80, 80), (22, 21))
    near[:, 22:32, 12:21] = 3
    assert study_quality_flags(np.stack([ed, near]), spacing_zyx_mm=spacing, frames=["ED", "ES"]) == []
    far = _heart((3, 80, 80), (60, 60))  # 40 px down and across: 85 mm from the ED heart
    far[:, 60:70, 40:50] = 3  # an RV 11 px = 16.5 mm from its myocardium
    flags = study_quality_flags(np.stack([ed, far]), spacing_zyx_mm=spacing, frames=[0, 9])
    assert flags == ["RV cavity not beside the LV (over 10 mm from its myocardium) (frame 9)",
                     "heart 85 mm from where the other frames place it (frames 0, 9; over 20 mm)"]
    assert heart_shift_flags(np.stack([ed, far]), spacing, ["ED", "ES"])[0].endswith("(frames ED, ES; over 20 mm)")
    assert frame_quality_flags(far, spacing)[-1] == "RV cavity not beside the LV (nearest LV myocardium 16 mm away)"
    assert frame_quality_flags(far) == []  # without the spacing no distance is judged
    twin = ed.copy()
    twin[1:, 30:40, 10:20] = 2
    twin[1:, 33:37, 13:17] = 1  # a second, false LV touching the first on slices 1-2
    assert frame_quality_flags(twin) == ["LV outline not round on slice(s) 1-2"]
    assert study_quality_flags(np.stack([ed, twin]), spacing_zyx_mm=spacing) == [
        "LV outline not round on slice(s) 1-2 (frame 1)"]
    assert verdict([]) == {"verdict": "ok", "review_reasons": []}
    assert verdict(flags, "no function: x") == {"verdict": "review", "review_reasons": ["no function: x", *flags]}


def test_volume_curve_flags():
    t = np.arange(20)
    normal = 105 + 45 * np.cos(2 * np.pi * t / 20)  # one trough at frame 10
    assert volume_curve_flags(normal) == []
    assert volume_curve_flags(np.roll(normal, 7)) == []  # a recording that starts mid-cycle
    spiky = normal.copy()
    spiky[4] += 70  # a false blob on one frame
    assert volume_curve_flags(spiky) == ["LV volume spike (frame 4: more than 20% of the EDV off both neighbours)"]
    double = 105 + 45 * np.cos(4 * np.pi * t / 20)
    assert volume_curve_flags(double, frames=list(range(1, 21))) == ["LV volume curve with 2 troughs (frames 6, 16)"]
    assert volume_curve_flags(double[:5]) == []  # too few frames to judge a shape


def test_the_cavity_inside_the_myocardial_ring_is_the_lv_and_a_swapped_file_is_refused():
    yy, xx = np.mgrid[:48, :48]
    ring = np.zeros((48, 48), np.int64)
    ring[(yy - 24) ** 2 + (xx - 30) ** 2 <= 81] = 2  # myocardium
    ring[(yy - 24) ** 2 + (xx - 30) ** 2 <= 25] = 1  # LV cavity inside it
    ring[(yy - 24) ** 2 + (xx - 12) ** 2 <= 49] = 3  # RV beside it, meeting it at the septum
    canonical = np.repeat(ring[..., None], 3, axis=-1)
    assert myocardial_border_share(canonical, 1) == 1.0
    assert myocardial_border_share(canonical, 3) < 0.5
    assert myocardial_border_share(canonical, 9) is None
    check = CheckLabels()
    check(torch.as_tensor(canonical)[None])  # passes
    swapped = torch.as_tensor(np.choose(canonical, [0, 3, 2, 1]))[None]
    with pytest.raises(ValueError, match="cavities are swapped"):
        check(swapped)
    # an LV without its ring (a label file of the cavities only) is not judged
    check(torch.as_tensor(np.where(canonical == 2, 0, np.choose(canonical, [0, 3, 2, 1])))[None])
