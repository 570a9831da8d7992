"""The phantom model: determinism, cardiac cycle, labels vs analytic volumes, view geometry."""

from __future__ import annotations

import numpy as np
import pytest

from cmrssl.data import phantom
from cmrssl.data.phantom import generate_subject

# Small images keep these tests in seconds; the volume agreement must hold at coarse pixels too.
SIZE = 64


@pytest.fixture(scope="module")
def subjects():
    return {seed: generate_subject(seed, num_frames=12, image_size=SIZE) for seed in (0, 1, 2, 3)}


def _label_volumes(study, frame):
    voxel_ml = study.voxel_volume_ml
    lab = study.labels[frame]
    return {k: float((lab == v).sum() * voxel_ml) for k, v in (("lv", 1), ("myo", 2), ("rv", 3))}


def test_same_seed_same_arrays_different_seed_differs():
    a = generate_subject(7, num_frames=6, image_size=32)
    b = generate_subject(7, num_frames=6, image_size=32)
    c = generate_subject(8, num_frames=6, image_size=32)
    for view in ("sax", "lax_2ch", "lax_4ch"):
        sa, sb = getattr(a, view), getattr(b, view)
        np.testing.assert_array_equal(sa.pixels, sb.pixels)
        np.testing.assert_array_equal(sa.labels, sb.labels)
        np.testing.assert_array_equal(sa.slice_affines, sb.slice_affines)
    assert a.analytic == b.analytic
    assert a.analytic["edv_ml"] != c.analytic["edv_ml"]
    assert a.sax.pixels.shape != c.sax.pixels.shape or not np.array_equal(a.sax.pixels, c.sax.pixels)


def test_ed_and_es_frames_vary_and_ed_is_not_always_first():
    eds, ess = [], []
    for seed in range(8):
        s = generate_subject(seed, image_size=24)  # default (random) frame count
        t = s.analytic["num_frames"]
        assert 16 <= t <= 25
        curve = np.asarray(s.analytic["lv_volume_curve_ml"])
        assert s.analytic["ed_frame"] == int(np.argmax(curve))
        assert s.analytic["es_frame"] == int(np.argmin(curve))
        # end-systole falls 30-40 % of the cycle after end-diastole
        delay = ((s.analytic["es_frame"] - s.analytic["ed_frame"]) % t) / t
        assert 0.25 <= delay <= 0.45, delay
        eds.append(s.analytic["ed_frame"])
        ess.append(s.analytic["es_frame"])
    assert any(e != 0 for e in eds)
    assert len(set(eds)) >= 3 and len(set(ess)) >= 3


def test_volume_curve_has_fast_ejection_early_filling_and_atrial_kick():
    cycle = {"end_systole": 0.35, "early_filling_fraction": 0.7, "early_filling_end": 0.53,
             "atrial_start": 0.82, "diastasis_fraction": 0.75}
    phase = np.linspace(0.0, 1.0, 1001)[:-1]
    f = phantom._filling_fraction(phase, cycle)
    assert f[0] == pytest.approx(1.0) and f.argmax() == 0
    assert phase[f.argmin()] == pytest.approx(0.35, abs=1e-3) and f.min() == pytest.approx(0.0, abs=1e-9)
    # ejection front-loaded: more than half the stroke volume gone in the first 40 % of systole
    assert f[np.searchsorted(phase, 0.4 * 0.35)] < 0.5
    # early filling: 70 % back within 0.18 of the cycle; diastasis nearly flat; atrial kick last
    assert f[np.searchsorted(phase, 0.53)] == pytest.approx(0.7, abs=1e-6)
    assert f[np.searchsorted(phase, 0.82)] - f[np.searchsorted(phase, 0.53)] < 0.1
    assert 1.0 - f[np.searchsorted(phase, 0.82)] > 0.2
    # monotone decrease in systole, increase in diastole
    assert np.all(np.diff(f[phase < 0.35]) <= 1e-12)
    assert np.all(np.diff(f[phase >= 0.35]) >= -1e-12)


def test_myocardial_volume_conserved_and_wall_thickens(subjects):
    for s in subjects.values():
        myo = np.asarray(s.analytic["lv_myocardial_volume_curve_ml"])
        assert np.ptp(myo) / myo.mean() < 1e-9
        assert s.analytic["lv_mass_g"] == pytest.approx(1.05 * myo[s.analytic["ed_frame"]])
        wall = s.analytic["lv_wall_thickness_mm"]
        assert wall["es"] > 1.25 * wall["ed"]
        a = s.analytic
        assert a["sv_ml"] == pytest.approx(a["edv_ml"] - a["esv_ml"])
        assert a["ef_percent"] == pytest.approx(100 * a["sv_ml"] / a["edv_ml"])
        assert 40 <= a["ef_percent"] <= 75
        assert a["rv_esv_ml"] < a["rv_edv_ml"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_label_volumes_match_analytic_within_3_percent(subjects, seed):
    s = subjects[seed]
    a = s.analytic
    ed = _label_volumes(s.sax, a["ed_frame"])
    es = _label_volumes(s.sax, a["es_frame"])
    assert ed["lv"] == pytest.approx(a["edv_ml"], rel=0.03)
    assert es["lv"] == pytest.approx(a["esv_ml"], rel=0.03)
    assert 1.05 * ed["myo"] == pytest.approx(a["lv_mass_g"], rel=0.03)
    # not required by the contract, but a regression guard for the RV crescent
    assert ed["rv"] == pytest.approx(a["rv_edv_ml"], rel=0.05)
    # and the whole LV curve, not just ED/ES
    curve = [(s.sax.labels[t] == 1).sum() * s.sax.voxel_volume_ml for t in range(s.sax.num_frames)]
    np.testing.assert_allclose(curve, a["lv_volume_curve_ml"], rtol=0.03)


def test_analytic_volumes_agree_with_voxelising_the_model():
    """Closed-form LV volumes, the RV quadrature and the point classifier describe the same model."""
    rng = np.random.default_rng(11)
    model, acq, _ = phantom._build_subject(rng, 10, 32)
    analytic = phantom._analytic(model, acq)
    step = 0.6
    box = model.heart_box
    axes = [np.arange(lo + step / 2, hi, step) for lo, hi in box]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    for key, t in (("ed", analytic["ed_frame"]), ("es", analytic["es_frame"])):
        tissue = model.heart_tissue(grid, t)
        vox_ml = step**3 / 1000.0
        lv = np.isin(tissue, [phantom.LV_BLOOD, phantom.PAPILLARY]).sum() * vox_ml  # papillary: cavity
        rv = (tissue == phantom.RV_BLOOD).sum() * vox_ml
        assert lv == pytest.approx(analytic["edv_ml" if key == "ed" else "esv_ml"], rel=0.01)
        assert rv == pytest.approx(analytic["rv_edv_ml" if key == "ed" else "rv_esv_ml"], rel=0.02)
        if key == "ed":
            myo = (tissue == phantom.LV_MYO).sum() * vox_ml
            assert 1.05 * myo == pytest.approx(analytic["lv_mass_g"], rel=0.01)


def test_every_frame_has_all_labels_and_views_have_their_structures(subjects):
    s = subjects[0]
    for study, expected in ((s.sax, {0, 1, 2, 3}), (s.lax_4ch, {0, 1, 2, 3}), (s.lax_2ch, {0, 1, 2})):
        assert study.labels.dtype == np.int16
        assert study.labels.shape == study.pixels.shape
        assert study.pixels.dtype == np.float32
        assert list(study.labelled_frames) == list(range(study.num_frames))
        for t in range(study.num_frames):
            assert set(np.unique(study.labels[t]).tolist()) == expected, (study.view, t)
    assert s.lax_2ch.num_slices == 1 and s.lax_4ch.num_slices == 1


def test_sax_stack_geometry(subjects):
    s = subjects[1]
    sax = s.sax
    a = s.analytic
    assert sax.num_slices == a["num_slices"] and sax.num_frames == a["num_frames"]
    assert list(sax.spacing_zyx_mm) == pytest.approx(a["spacing_zyx_mm"])
    assert 7.5 <= a["spacing_zyx_mm"][0] <= 10.0
    # slices are evenly spaced along the LV long axis, base first
    centres = sax.slice_affines[:, :3, 3]
    long_axis = np.asarray(a["lv_long_axis_lps"])
    steps = np.diff(centres @ long_axis)
    np.testing.assert_allclose(steps, a["spacing_zyx_mm"][0], atol=1e-9)
    np.testing.assert_allclose(np.abs(sax.slice_normal @ long_axis), 1.0, atol=1e-9)
    # the LV appears below the base: first slice has no LV, some slice past the apex has no LV either
    ed = a["ed_frame"]
    lv_per_slice = (sax.labels[ed] == 1).sum(axis=(1, 2))
    assert lv_per_slice[0] == 0 and lv_per_slice.max() > 0
    assert lv_per_slice[-1] == 0


def test_papillary_muscles_are_dark_but_labelled_cavity():
    rng = np.random.default_rng(5)
    model, acq, _ = phantom._build_subject(rng, 8, 32)
    t = acq.ed_frame
    angle = model.papillary_angles[0]
    r = 0.65 * model.a_endo[t]
    point = np.array([[r * np.cos(angle), r * np.sin(angle), model.base_s[t] + 0.5 * model.c_endo[t]]])
    tissue = model.heart_tissue(point, t)
    assert tissue[0] == phantom.PAPILLARY
    assert phantom._LABEL_OF_TISSUE[phantom.PAPILLARY] == 1
    assert model.signal[phantom.PAPILLARY] < 0.5 * model.signal[phantom.LV_BLOOD]


def test_contrast_blood_bright_myocardium_dark_tissue_between(subjects):
    s = subjects[2]
    ed = s.analytic["ed_frame"]
    px, lab = s.sax.pixels[ed], s.sax.labels[ed]
    blood = np.median(px[lab == 1])
    myo = np.median(px[lab == 2])
    assert blood > 2.5 * myo
    # noise is Rician: never negative, and background air is not exactly zero
    assert px.min() >= 0
    assert np.mean(px[0] == 0) < 0.01


def _plane(affine):
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    return affine[:3, 3], normal / np.linalg.norm(normal)


def _world_to_pixel(affine, points):
    m = affine[:3, :3].copy()
    m[:, 2] = _plane(affine)[1]
    return np.linalg.solve(m, (points - affine[:3, 3]).T).T  # (col, row, out-of-plane mm)


@pytest.mark.parametrize("view", ["lax_4ch", "lax_2ch"])
def test_sax_plane_meets_long_axis_plane_on_a_line_through_the_lv_cavity(subjects, view):
    """The SAX/LAX intersection line crosses the LV cavity in both images (position-prediction contract)."""
    s = subjects[3]
    lax = getattr(s, view)
    ed = s.analytic["ed_frame"]
    p_lax, n_lax = _plane(lax.slice_affines[0])
    lv_slices = np.flatnonzero((s.sax.labels[ed] == 1).sum(axis=(1, 2)) > 50)
    assert lv_slices.size >= 3
    for z in lv_slices[1:-1]:  # mid-ventricular slices (the basal one is partial)
        p_sax, n_sax = _plane(s.sax.slice_affines[z])
        direction = np.cross(n_sax, n_lax)
        direction /= np.linalg.norm(direction)
        # a point on both planes: least-norm solution of the two plane equations
        m = np.stack([n_sax, n_lax])
        point = np.linalg.lstsq(m, np.array([n_sax @ p_sax, n_lax @ p_lax]), rcond=None)[0]
        samples = point + np.arange(-150.0, 150.0, 0.5)[:, None] * direction
        hits = []
        for study, zz in ((s.sax, z), (lax, 0)):
            pix = _world_to_pixel(study.slice_affines[zz], samples)
            assert np.allclose(pix[:, 2], 0.0, atol=1e-6)  # the line lies in both planes
            col, row = np.rint(pix[:, 0]).astype(int), np.rint(pix[:, 1]).astype(int)
            inside = (col >= 0) & (col < study.pixels.shape[3]) & (row >= 0) & (row < study.pixels.shape[2])
            lab = np.full(len(samples), -1)
            lab[inside] = study.labels[ed, zz][row[inside], col[inside]]
            hits.append(lab == 1)
        both = hits[0] & hits[1]
        # a chord of the cavity several millimetres long is cavity in both images
        assert both.sum() * 0.5 >= 10.0, (view, z, hits[0].sum(), hits[1].sum())


def test_four_chamber_contains_rv_and_two_chamber_does_not(subjects):
    s = subjects[0]
    ed = s.analytic["ed_frame"]
    assert (s.lax_4ch.labels[ed] == 3).sum() > 20
    assert (s.lax_2ch.labels[ed] == 3).sum() == 0
    # both long-axis planes contain the LV long axis
    axis = np.asarray(s.analytic["lv_long_axis_lps"])
    for lax in (s.lax_2ch, s.lax_4ch):
        assert abs(_plane(lax.slice_affines[0])[1] @ axis) < 1e-9


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_frames"):
        generate_subject(0, num_frames=2)
    with pytest.raises(ValueError, match="image_size"):
        generate_subject(0, image_size=(8, 8))
