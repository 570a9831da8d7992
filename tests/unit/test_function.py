"""Cardiac function from labels: exact voxel counts on synthetic shapes, ED/ES
detection, every bad-input error, and the report plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cmrssl.io.cine import CineStudy
from cmrssl.labels import MYOCARDIAL_DENSITY_G_PER_ML
from cmrssl.metrics.function import (
    CardiacFunction,
    cardiac_function,
    cardiac_function_from_ed_es,
    cardiac_function_from_study,
    label_volumes_ml,
    volume_curve_ml,
)

SPACING = (8.0, 1.5, 1.25)  # dz, dy, dx (mm): anisotropic so a swapped axis shows
VOXEL_ML = 8.0 * 1.5 * 1.25 / 1000.0
SHAPE = (6, 40, 48)  # Z, H, W
RV_CENTRE = (20, 3)  # clear of the LV cavity for every radius used here


def _disc(radius_px: float, shape=SHAPE[1:], centre=(20, 24)) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius_px**2


def _heart_frame(cavity_radius: float, myo_width: float = 3.0, rv_radius: float = 0.0, slices=(1, 2, 3, 4)) -> np.ndarray:
    """[Z, H, W] frame: a cylinder of LV cavity inside a myocardial ring, an optional RV disc."""
    frame = np.zeros(SHAPE, dtype=np.uint8)
    for z in slices:
        frame[z][_disc(cavity_radius + myo_width)] = 2
        frame[z][_disc(cavity_radius)] = 1
        if rv_radius:
            frame[z][_disc(rv_radius, centre=RV_CENTRE)] = 3
    return frame


def _cine(radii, rv_radii=None) -> np.ndarray:
    rv_radii = rv_radii if rv_radii is not None else [0.0] * len(radii)
    return np.stack([_heart_frame(r, rv_radius=q) for r, q in zip(radii, rv_radii)])


def test_volume_curve_counts_voxels_exactly():
    labels = _cine([9.0, 6.0, 7.5])
    curve = volume_curve_ml(labels, VOXEL_ML, 1)
    expected = [4 * _disc(r).sum() * VOXEL_ML for r in (9.0, 6.0, 7.5)]
    np.testing.assert_allclose(curve, expected, rtol=1e-12)
    myo = volume_curve_ml(labels, VOXEL_ML, 2)
    np.testing.assert_allclose(myo[0], 4 * (_disc(12.0).sum() - _disc(9.0).sum()) * VOXEL_ML, rtol=1e-12)
    assert np.all(volume_curve_ml(labels, VOXEL_ML, 3) == 0)


def test_label_volumes_all_labels_sum_to_the_frame_volume():
    labels = _cine([9.0, 6.0], rv_radii=[5.0, 4.0])
    volumes = label_volumes_ml(labels, VOXEL_ML)
    assert volumes.shape == (2, 4)
    np.testing.assert_allclose(volumes.sum(axis=1), np.prod(SHAPE) * VOXEL_ML)


def test_cylinder_function_matches_hand_count():
    # Box-shaped cavity: volume known without any rounding question.
    ed = np.zeros(SHAPE, np.uint8)
    es = np.zeros(SHAPE, np.uint8)
    ed[1:5, 10:30, 10:30] = 2
    ed[1:5, 12:28, 12:28] = 1  # 4 * 16 * 16 = 1024 voxels
    es[1:5, 14:26, 14:26] = 1  # 4 * 12 * 12 = 576 voxels
    ed[1:5, 5:9, 5:9] = 3  # 64 voxels
    es[1:5, 5:7, 5:9] = 3  # 32 voxels
    fn = cardiac_function_from_ed_es(ed, es, SPACING, ed_frame=3, es_frame=11)
    assert fn.lv_edv_ml == pytest.approx(1024 * VOXEL_ML)
    assert fn.lv_esv_ml == pytest.approx(576 * VOXEL_ML)
    assert fn.lv_sv_ml == pytest.approx((1024 - 576) * VOXEL_ML)
    assert fn.lv_ef_percent == pytest.approx(100 * 448 / 1024)
    assert fn.lv_mass_g == pytest.approx(MYOCARDIAL_DENSITY_G_PER_ML * 4 * (400 - 256) * VOXEL_ML)
    assert fn.rv_edv_ml == pytest.approx(64 * VOXEL_ML)
    assert fn.rv_esv_ml == pytest.approx(32 * VOXEL_ML)
    assert fn.rv_ef_percent == pytest.approx(50.0)
    assert (fn.ed_frame, fn.es_frame) == (3, 11)


def test_ed_es_found_when_ed_is_not_frame_zero():
    # A cycle starting in systole: ED on frame 5, ES on frame 1.
    radii = [7.0, 5.0, 6.0, 7.5, 8.5, 10.0, 9.0, 8.0]
    fn = cardiac_function(_cine(radii, rv_radii=[6, 4, 5, 6, 7, 8, 7, 6]), SPACING)
    assert (fn.ed_frame, fn.es_frame) == (5, 1)
    assert fn.lv_edv_ml == pytest.approx(4 * _disc(10.0).sum() * VOXEL_ML)
    assert fn.lv_esv_ml == pytest.approx(4 * _disc(5.0).sum() * VOXEL_ML)
    assert fn.rv_edv_ml == pytest.approx(4 * _disc(8.0, centre=RV_CENTRE).sum() * VOXEL_ML)
    assert fn.lv_volume_curve_ml.shape == (8,)
    assert np.argmax(fn.lv_volume_curve_ml) == 5


def test_only_some_frames_labelled():
    labels = _cine([7.0, 5.0, 6.0, 10.0, 8.0]).astype(np.int16)
    labels[[0, 2, 4]] = -1  # only frames 1 and 3 carry references
    fn = cardiac_function(labels, SPACING)
    assert (fn.ed_frame, fn.es_frame) == (3, 1)
    assert fn.labelled_frames == [1, 3]
    assert np.isnan(fn.lv_volume_curve_ml[[0, 2, 4]]).all()
    d = fn.to_dict()
    assert d["lv_volume_curve_ml"][0] is None and d["lv_volume_curve_ml"][3] > 0
    json.dumps(d)  # JSON-ready, no NaN


def test_explicit_labelled_frames_ignore_the_others():
    labels = _cine([7.0, 5.0, 12.0, 9.0]).astype(np.int16)
    labels[2] = 7  # garbage in a frame that is not a reference
    fn = cardiac_function(labels, SPACING, labelled_frames=[0, 1, 3])
    assert (fn.ed_frame, fn.es_frame) == (3, 1)


def test_rv_and_mass_absent_give_none():
    labels = _cine([9.0, 6.0])
    labels[labels == 2] = 0
    fn = cardiac_function(labels, SPACING)
    assert fn.rv_edv_ml is None and fn.rv_ef_percent is None and fn.lv_mass_g is None
    d = fn.to_dict()
    assert d["rv_edv_ml"] is None and d["lv_mass_g"] is None


def test_from_study_uses_the_study_voxel_volume_and_source_frames():
    labels = _cine([9.0, 6.0]).astype(np.int16)
    affines = np.repeat(np.diag([SPACING[2], SPACING[1], 1.0, 1.0])[None], SHAPE[0], axis=0)
    affines[:, 2, 3] = np.arange(SHAPE[0]) * SPACING[0]
    study = CineStudy(
        pixels=np.zeros(labels.shape, np.float32), slice_affines=affines, slice_spacing_mm=SPACING[0],
        labels=labels, source="toy/patient001", source_frame_index=np.array([0, 11]),
    )
    fn = cardiac_function_from_study(study)
    assert fn.spacing_zyx_mm == pytest.approx(SPACING)
    assert (fn.ed_frame, fn.es_frame) == (0, 11)
    assert fn.lv_edv_ml == pytest.approx(4 * _disc(9.0).sum() * VOXEL_ML)
    assert fn.source == "toy/patient001"


def test_from_study_without_labels_is_an_error():
    study = CineStudy(pixels=np.zeros((2, 2, 4, 4), np.float32), slice_affines=np.repeat(np.eye(4)[None], 2, 0),
                      slice_spacing_mm=5.0, source="toy/nolabels")
    with pytest.raises(ValueError, match="toy/nolabels.*no labels"):
        cardiac_function_from_study(study)


# ------------------------------------------------------------------ bad input


def test_empty_lv_cavity_on_es_frame_is_an_error():
    labels = _cine([9.0, 6.0, 7.0])
    labels[1][labels[1] == 1] = 0
    with pytest.raises(ValueError, match=r"study7: LV cavity \(label 1\) is empty on frame 1 used for ES"):
        cardiac_function(labels, SPACING, source="study7")


def test_empty_lv_cavity_in_ed_es_masks_is_an_error():
    ed = _heart_frame(9.0)
    with pytest.raises(ValueError, match="empty on frame"):
        cardiac_function_from_ed_es(ed, np.zeros_like(ed), SPACING, source="s")


def test_labels_outside_canonical_set_are_an_error():
    labels = _cine([9.0, 6.0])
    labels[0, 0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"caseA: labels of frame 0 hold values \[4\] outside"):
        cardiac_function(labels, SPACING, source="caseA")
    neg = _cine([9.0, 6.0]).astype(np.int16)
    neg[1, 2, 3, 3] = -1  # a partially -1 frame is not an "unlabelled" frame
    with pytest.raises(ValueError, match=r"frame 1 hold values \[-1\]"):
        cardiac_function(neg, SPACING)


def test_nan_labels_are_an_error():
    labels = _cine([9.0, 6.0]).astype(np.float32)
    labels[1, 3, 5, 5] = np.nan
    with pytest.raises(ValueError, match="caseB: labels of frame 1 contain NaN"):
        cardiac_function(labels, SPACING, source="caseB")


def test_fractional_labels_are_an_error():
    labels = _cine([9.0, 6.0]).astype(np.float32)
    labels[0, 3, 5, 5] = 0.5
    with pytest.raises(ValueError, match="not integers"):
        cardiac_function(labels, SPACING)


@pytest.mark.parametrize("spacing", [(0.0, 1.5, 1.5), (10.0, -1.0, 1.0), (10.0, 1.0, float("nan")), (10.0, 1.0)])
def test_bad_spacing_is_an_error(spacing):
    with pytest.raises(ValueError, match="caseC: spacing"):
        cardiac_function(_cine([9.0, 6.0]), spacing, source="caseC")


def test_wrong_dimensionality_is_an_error():
    with pytest.raises(ValueError, match=r"caseD: labels must be a cine \[T, Z, H, W\], got 3D"):
        cardiac_function(_heart_frame(9.0), SPACING, source="caseD")
    with pytest.raises(ValueError, match=r"ED labels must be a volume \[Z, H, W\], got 4D"):
        cardiac_function_from_ed_es(_cine([9.0]), _heart_frame(6.0), SPACING)
    with pytest.raises(ValueError, match="differs from ES labels shape"):
        cardiac_function_from_ed_es(_heart_frame(9.0), _heart_frame(6.0)[:3], SPACING)


def test_single_labelled_frame_is_an_error():
    labels = _cine([9.0, 6.0]).astype(np.int16)
    labels[1] = -1
    with pytest.raises(ValueError, match="at least two labelled frames"):
        cardiac_function(labels, SPACING)


def test_to_dict_round_trips_through_json():
    fn = cardiac_function(_cine([9.0, 6.0], rv_radii=[6.0, 4.0]), SPACING, source="x")
    d = json.loads(json.dumps(fn.to_dict()))
    assert set(name for name, _ in CardiacFunction.SCALARS) <= set(d)
    assert d["spacing_zyx_mm"] == list(SPACING)
    assert d["voxel_volume_ml"] == pytest.approx(VOXEL_ML)
    assert d["lv_ef_percent"] == pytest.approx(fn.lv_ef_percent)
    assert math.isclose(d["lv_sv_ml"], d["lv_edv_ml"] - d["lv_esv_ml"])


# ------------------------------------------------------------------ plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_valid_pngs_and_refuse_to_overwrite(tmp_path):
    pytest.importorskip("matplotlib")
    from cmrssl.metrics.plots import plot_bland_altman, plot_contour_overlays, plot_volume_curve

    labels = _cine([7.0, 5.0, 9.0, 8.0], rv_radii=[5, 4, 6, 5])
    fn = cardiac_function(labels, SPACING, source="toy")
    curve = plot_volume_curve(fn, tmp_path / "curve.png")
    assert curve.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(FileExistsError):
        plot_volume_curve(fn, curve)
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    overlay = plot_contour_overlays(image, labels[2], tmp_path / "overlay.png", title="toy ED")
    assert overlay.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="same shape|one shape"):
        plot_contour_overlays(image, labels[2][:2], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    stats = plot_bland_altman([100, 150, 200, 120], [104, 149, 210, 121], tmp_path / "ba.png", label="LV EDV")
    assert (tmp_path / "ba.png").read_bytes()[:8] == PNG_MAGIC
    assert stats["n"] == 4 and stats["bias"] == pytest.approx(3.5)
    assert stats["loa_high"] - stats["loa_low"] == pytest.approx(2 * 1.96 * stats["sd"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ba.png", "curve.png", "overlay.png"]
