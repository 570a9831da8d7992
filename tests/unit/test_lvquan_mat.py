"""LVQuan18/19 .mat readers on tiny synthetic files written by scipy.io.savemat."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from cmrssl.data.lvquan_mat import LVQUAN_SEPTUM_ANGLE_DEG, read_lvquan18, read_lvquan19, read_lvquan19_patient
from cmrssl.metrics.lv_indices import lv_indices

SIDE = 24


def _discs(num, seed=0):
    """endo/epi ``[SIDE, SIDE, num]`` (MATLAB order) with cavity radius 4-7 px, wall 2-3 px."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    endo = np.zeros((SIDE, SIDE, num), np.uint8)
    epi = np.zeros_like(endo)
    for n in range(num):
        d = np.hypot(rows - 11.5, cols - 11.7)
        inner = 4 + 3 * rng.random()
        endo[..., n] = d < inner
        epi[..., n] = d < inner + 2 + rng.random()
    return endo, epi


def _indices_px(endo, epi):
    """Areas (px^2), and made-up but distinct dims/rwt (px) per image."""
    num = endo.shape[-1]
    cavity = endo.reshape(-1, num).sum(0).astype(float)
    myo = (epi & ~endo.astype(bool)).reshape(-1, num).sum(0).astype(float)
    dims = np.stack([np.sqrt(cavity / np.pi) * 2 + k for k in range(3)])
    rwt = np.stack([np.full(num, 2.0 + 0.1 * k) for k in range(6)])
    return np.stack([cavity, myo]), dims, rwt


def write_lvquan18(path, num_subjects=2, per_image_ratio=False):
    num = 20 * num_subjects
    endo, epi = _discs(num)
    areas_px, dims_px, rwt_px = _indices_px(endo, epi)
    pix = np.array([[1.5], [0.8]])[:num_subjects]  # [S, 1] like the challenge file
    ratio = np.array([[2.0], [3.0]])[:num_subjects]
    if per_image_ratio:
        ratio = np.repeat(ratio.ravel(), 20)[None]
    phase = np.tile(np.r_[np.zeros(8), np.ones(12)], num_subjects)[None]
    savemat(path, {
        "images_LV": np.random.default_rng(1).random((SIDE, SIDE, num)), "endo_LV": endo, "epi_LV": epi,
        "areas": areas_px / SIDE**2, "dims": dims_px / SIDE, "rwt": rwt_px / SIDE, "lv_phase": phase,
        "pix_spa": pix, "ratio_resize_inverse": ratio,
    })
    return areas_px, dims_px, rwt_px, np.repeat([1.5 * 2.0, 0.8 * 3.0][:num_subjects], 20)


@pytest.mark.parametrize("per_image_ratio", [False, True])
def test_lvquan18_fractions_to_mm(tmp_path, per_image_ratio):
    path = tmp_path / "cardiac-dig.mat"
    areas_px, dims_px, rwt_px, spacing = write_lvquan18(path, per_image_ratio=per_image_ratio)
    data = read_lvquan18(path)
    assert data.source_units == "fraction"
    assert data.images.shape == (2, 20, SIDE, SIDE) and data.labels.shape == (2, 20, SIDE, SIDE)
    np.testing.assert_allclose(data.pixel_spacing_mm, [3.0, 2.4])
    # value x 80(side) x pix_spa x ratio_resize_inverse, squared for areas
    np.testing.assert_allclose(data.areas_mm2.reshape(-1, 2), areas_px.T * spacing[:, None] ** 2)
    np.testing.assert_allclose(data.dims_mm.reshape(-1, 3), dims_px.T * spacing[:, None])
    np.testing.assert_allclose(data.rwt_mm.reshape(-1, 6), rwt_px.T * spacing[:, None])
    assert data.indices.shape == (2, 20, 11)
    np.testing.assert_array_equal(data.phase[1], np.r_[np.zeros(8), np.ones(12)])
    # masks -> canonical labels: recomputing the areas from them gives the stored areas
    for s in range(2):
        mine = lv_indices(data.labels[s], (data.pixel_spacing_mm[s],) * 2, septum_angle_deg=LVQUAN_SEPTUM_ANGLE_DEG)
        np.testing.assert_allclose(mine["cavity_area_mm2"], data.areas_mm2[s, :, 0])
        np.testing.assert_allclose(mine["myocardium_area_mm2"], data.areas_mm2[s, :, 1])


def test_lvquan18_4d_images_and_errors(tmp_path):
    path = tmp_path / "cardiac-dig.mat"
    write_lvquan18(path)
    mat = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    four_d = dict(mat)
    for key in ("images_LV", "endo_LV", "epi_LV"):
        four_d[key] = mat[key].reshape(SIDE, SIDE, 20, 2, order="F")
    savemat(tmp_path / "four_d.mat", four_d)
    np.testing.assert_array_equal(read_lvquan18(tmp_path / "four_d.mat").labels, read_lvquan18(path).labels)

    missing = {k: v for k, v in mat.items() if k != "rwt"}
    savemat(tmp_path / "missing.mat", missing)
    with pytest.raises(ValueError, match="missing field 'rwt'"):
        read_lvquan18(tmp_path / "missing.mat")
    wrong_units = dict(mat, areas=mat["areas"] * 7.3)
    savemat(tmp_path / "wrong.mat", wrong_units)
    with pytest.raises(ValueError, match="no unit"):
        read_lvquan18(tmp_path / "wrong.mat")
    with pytest.raises(FileNotFoundError):
        read_lvquan18(tmp_path / "absent.mat")


@pytest.mark.parametrize("stored", ["pixels", "mm"])
def test_lvquan19_patient_units(tmp_path, stored):
    endo, epi = _discs(20, seed=4)
    areas_px, dims_px, rwt_px = _indices_px(endo, epi)
    spacing = 1.5625
    scale = 1.0 if stored == "pixels" else spacing
    savemat(tmp_path / "patient7.mat", {
        "image": np.zeros((SIDE, SIDE, 20)), "endo": endo, "epi": epi, "areas": areas_px * scale**2,
        "dims": dims_px * scale, "rwt": rwt_px * scale, "lv_phase": np.r_[np.zeros(5), np.ones(15)],
        "pix_spacing": np.array([[spacing]]),
    })
    data = read_lvquan19_patient(tmp_path / "patient7.mat")
    assert data.source_units == stored and data.subjects == ["patient7"]
    np.testing.assert_allclose(data.areas_mm2[0], areas_px.T * spacing**2)
    np.testing.assert_allclose(data.dims_mm[0], dims_px.T * spacing)
    np.testing.assert_allclose(data.rwt_mm[0], rwt_px.T * spacing)
    np.testing.assert_array_equal(data.phase[0], np.r_[np.zeros(5), np.ones(15)])
    # a folder of patients stacks by patient number
    same = {k: v for k, v in loadmat(str(tmp_path / "patient7.mat")).items() if not k.startswith("__")}
    savemat(tmp_path / "patient10.mat", same)
    cohort = read_lvquan19(tmp_path)
    assert cohort.subjects == ["patient7", "patient10"] and cohort.images.shape[0] == 2


def test_samples_from_a_labelled_cine():
    from cmrssl.data.lvquan import lvquan_samples_from_labels
    from cmrssl.metrics.lv_indices import indices_matrix
    from lv_indices_reference import synthetic_lv_frames

    frames = 8
    # 5 slices; the first (base) and last (apex) lose the cavity in one frame
    labels = np.stack([synthetic_lv_frames(frames, size=48, seed=z) for z in range(5)], axis=1)  # [T, Z, H, W]
    labels[3, 0][labels[3, 0] == 1] = 2
    labels[5, 4][labels[5, 4] == 1] = 2
    data = lvquan_samples_from_labels(labels, (1.5, 1.5), pixels=labels.astype(np.float32), name="cine")
    assert data.subjects == ["cine:slice2"]  # middle third of slices 1..3
    assert data.images.shape == (1, frames, 48, 48) and data.labels.max() == 2  # RV dropped like the challenge
    cavity_px = (labels[:, 2] == 1).sum(axis=(1, 2))
    np.testing.assert_allclose(data.areas_mm2[0, :, 0], cavity_px * 1.5**2)
    assert np.isfinite(data.indices).all()
    if (labels[:, 2] == 3).any(axis=(1, 2)).all():  # every frame shows the RV: plain lv_indices agrees
        np.testing.assert_allclose(data.indices[0], indices_matrix(lv_indices(labels[:, 2], (1.5, 1.5))))
    assert set(np.unique(data.phase)) == {0, 1}
    every = lvquan_samples_from_labels(labels, (1.5, 1.5), slices="all")
    assert [s.split("slice")[1] for s in every.subjects] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="anisotropic"):
        lvquan_samples_from_labels(labels, (1.5, 1.0))
    partly = labels.astype(np.int16)
    partly[2] = -1
    with pytest.raises(ValueError, match="unlabelled"):
        lvquan_samples_from_labels(partly, (1.5, 1.5))


def test_folds_keep_patients_together_and_clip_windows():
    from cmrssl.data.lvquan import fold_subjects, index_scale_of, lvquan_clip_records, lvquan_records

    names = [f"p{p}:slice{z}" for p in range(6) for z in (3, 4)]
    seen = []
    for fold in range(3):
        training, validation = fold_subjects(names, fold, num_folds=3, seed=1)
        assert sorted(training + validation) == list(range(12))
        patients = {names[i].split(":")[0] for i in validation}
        assert not patients & {names[i].split(":")[0] for i in training}
        seen += validation
    assert sorted(seen) == list(range(12))  # every slice validated exactly once
    with pytest.raises(ValueError, match="patients"):
        fold_subjects(names[:4], 0, num_folds=5)

    from cmrssl.data.lvquan import lvquan_samples_from_labels
    from lv_indices_reference import synthetic_lv_frames

    labels = np.stack([synthetic_lv_frames(6, size=40, seed=z) for z in range(3)], axis=1)
    data = lvquan_samples_from_labels(labels, (2.0, 2.0), slices="all")
    scale = index_scale_of(data, [0])
    frames = lvquan_records(data, [0], scale, target_spacing_mm=1.0)
    assert len(frames) == 6 and frames[0]["image"].shape == (1, 80, 80)  # 2 mm -> 1 mm
    assert np.nanmax([f["indices"] for f in frames]) == pytest.approx(1.0)
    clips = lvquan_clip_records(data, [0], scale, clip_frames=3, target_spacing_mm=None)
    assert len(clips) == 6 and clips[5]["image"].shape == (1, 3, 40, 40)
    assert clips[5]["indices"].shape == (11, 3) and clips[5]["phase"].shape == (3,)
    # cyclic: the window starting at the last frame continues with frames 0 and 1
    np.testing.assert_array_equal(clips[5]["label"][0, 1], data.labels[0, 0])


def test_input_modes():
    from cmrssl.data.lvquan import lvquan_clip_records, lvquan_records, lvquan_samples_from_labels
    from lv_indices_reference import synthetic_lv_frames

    labels = np.stack([synthetic_lv_frames(4, size=32, seed=z) for z in range(3)], axis=1)
    data = lvquan_samples_from_labels(labels, (1.0, 1.0), pixels=labels.astype(np.float32) * 10, slices="all")
    scale = np.ones(11)
    single = lvquan_records(data, [0], scale, None)
    neighbours = lvquan_records(data, [0], scale, None, input_mode="neighbours")
    copy3 = lvquan_records(data, [0], scale, None, input_mode="copy3")
    assert single[0]["image"].shape == (1, 32, 32) and neighbours[0]["image"].shape == (3, 32, 32)
    np.testing.assert_array_equal(neighbours[0]["image"][0], single[3]["image"][0])  # cyclic: t-1 of frame 0
    np.testing.assert_array_equal(neighbours[0]["image"][2], single[1]["image"][0])
    np.testing.assert_array_equal(copy3[2]["image"][1], single[2]["image"][0])
    assert lvquan_clip_records(data, [0], scale, 2, None, input_mode="copy3")[0]["image"].shape == (3, 2, 32, 32)
    with pytest.raises(ValueError, match="neighbours"):
        lvquan_clip_records(data, [0], scale, 2, None, input_mode="neighbours")
    with pytest.raises(ValueError, match="input_mode"):
        lvquan_records(data, [0], scale, None, input_mode="rgb")
