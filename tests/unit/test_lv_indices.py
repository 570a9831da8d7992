"""LVQuan indices on analytic shapes: annulus, ellipse, per-sector walls, phase, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrssl.metrics.lv_indices import INDEX_NAMES, RWT_SECTORS, cardiac_phase, indices_matrix, lv_indices
from lv_indices_reference import lv_indices_loop_reference, synthetic_lv_frames

SPACING = (1.3, 0.9)  # anisotropic on purpose: rows 1.3 mm, columns 0.9 mm
SECTOR_START = {"AS": 0, "A": 60, "AL": 120, "IL": 180, "I": 240, "IS": 300}


def _grid(h=110, w=150):
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    return rows * SPACING[0], cols * SPACING[1]


def _add_rv(mask, y, x, centre, rv_angle_deg, distance_mm, radius_mm=9.0):
    a = math.radians(rv_angle_deg)
    ry, rx = centre[0] + distance_mm * math.sin(a), centre[1] + distance_mm * math.cos(a)
    mask[(np.hypot(y - ry, x - rx) < radius_mm) & (mask == 0)] = 3
    return mask


def annulus(inner_mm, outer_mm, rv_angle_deg, centre=(70.3, 66.1)):
    y, x = _grid()
    d = np.hypot(y - centre[0], x - centre[1])
    mask = np.zeros(y.shape, np.uint8)
    mask[d < outer_mm] = 2
    mask[d < inner_mm] = 1
    return _add_rv(mask, y, x, centre, rv_angle_deg, outer_mm + 12)


@pytest.mark.parametrize("rv_angle_deg", [0, 37, 90, 145, 180, 260, 333])
def test_annulus_dims_and_rwt_within_0p2_mm(rv_angle_deg):
    result = lv_indices(annulus(21.0, 29.0, rv_angle_deg), SPACING)
    np.testing.assert_allclose(result["dimensions_mm"][0], 42.0, atol=0.2)
    np.testing.assert_allclose(result["wall_thickness_mm"][0], 8.0, atol=0.2)
    assert result["cavity_area_mm2"][0] == pytest.approx(math.pi * 21.0**2, rel=0.01)
    assert result["myocardium_area_mm2"][0] == pytest.approx(math.pi * (29.0**2 - 21.0**2), rel=0.015)
    # septum direction follows the RV blob
    assert (result["septum_angle_deg"][0] - rv_angle_deg + 180) % 360 - 180 == pytest.approx(0, abs=1.0)


def sectored_wall(rv_angle_deg, thickness_by_sector, anterior_clockwise=True, inner_mm=20.0, centre=(70.3, 66.1)):
    """Annulus whose wall thickness is constant per sector, sectors placed relative to the RV."""
    y, x = _grid()
    d = np.hypot(y - centre[0], x - centre[1])
    screen = np.degrees(np.arctan2(y - centre[0], x - centre[1]))
    sense = 1.0 if anterior_clockwise else -1.0
    phi = np.mod(sense * (screen - rv_angle_deg), 360.0)
    outer = np.full(y.shape, np.nan)
    for name, start in SECTOR_START.items():
        outer[(phi >= start) & (phi < start + 60)] = inner_mm + thickness_by_sector[name]
    mask = np.zeros(y.shape, np.uint8)
    mask[d < outer] = 2
    mask[d < inner_mm] = 1
    return _add_rv(mask, y, x, centre, rv_angle_deg, inner_mm + max(thickness_by_sector.values()) + 12)


THICKNESS = {"IS": 4.0, "I": 6.0, "IL": 8.0, "AL": 10.0, "A": 12.0, "AS": 14.0}


@pytest.mark.parametrize("rv_angle_deg", [0, 75, 180, 290])
@pytest.mark.parametrize("anterior_clockwise", [True, False])
def test_sector_assignment_follows_the_rv(rv_angle_deg, anterior_clockwise):
    mask = sectored_wall(rv_angle_deg, THICKNESS, anterior_clockwise)
    result = lv_indices(mask, SPACING, anterior_clockwise=anterior_clockwise)
    expected = [THICKNESS[s] for s in RWT_SECTORS]
    # Sector borders are steps of 2 mm in outer radius: rasterisation blurs a few rays each side.
    np.testing.assert_allclose(result["wall_thickness_mm"][0], expected, atol=0.5)
    # the mirrored convention puts the walls elsewhere: the sense matters and is not a no-op
    other = lv_indices(mask, SPACING, anterior_clockwise=not anterior_clockwise)
    assert np.abs(other["wall_thickness_mm"][0] - expected).max() > 3.0


def test_ellipse_dimensions_along_its_axes():
    centre = (70.3, 66.1)
    y, x = _grid()
    semi_septal, semi_other = 24.0, 15.0  # semi-axes along the septum direction and across
    rv_angle = 30.0
    a = math.radians(rv_angle)
    u = (x - centre[1]) * math.cos(a) + (y - centre[0]) * math.sin(a)  # along septum
    v = -(x - centre[1]) * math.sin(a) + (y - centre[0]) * math.cos(a)
    inside = (u / semi_septal) ** 2 + (v / semi_other) ** 2
    mask = np.zeros(y.shape, np.uint8)
    mask[inside < 1.6] = 2
    mask[inside < 1.0] = 1
    mask = _add_rv(mask, y, x, centre, rv_angle, semi_septal * 1.3 + 14)
    result = lv_indices(mask, SPACING)
    # Mean diameter over a 60 degree sector pair: integrate the ellipse radius over the rays.
    phi = (np.arange(720) + 0.5) / 2.0
    theta = np.radians(phi)
    radius = 1.0 / np.sqrt((np.cos(theta) / semi_septal) ** 2 + (np.sin(theta) / semi_other) ** 2)
    expected = []
    for pair in (("IS", "AL"), ("I", "A"), ("IL", "AS")):
        sel = np.zeros_like(phi, bool)
        for s in pair:
            sel |= (phi >= SECTOR_START[s]) & (phi < SECTOR_START[s] + 60)
        expected.append(2 * radius[sel].mean())
    np.testing.assert_allclose(result["dimensions_mm"][0], expected, atol=0.25)
    # dim1 (IS-AL) and dim3 (IL-AS) flank the septal (long) axis symmetrically; dim2 (I-A) crosses it
    assert result["dimensions_mm"][0, 0] == pytest.approx(result["dimensions_mm"][0, 2], abs=0.3)
    assert result["dimensions_mm"][0, 0] > result["dimensions_mm"][0, 1] + 5
    assert result["cavity_area_mm2"][0] == pytest.approx(math.pi * semi_septal * semi_other, rel=0.01)


def test_vectorised_agrees_with_the_per_ray_loop():
    frames = synthetic_lv_frames(3, size=64, seed=3)
    spacing = (1.4, 1.1)
    fast = lv_indices(frames, spacing, num_rays=60)
    for t in range(frames.shape[0]):
        slow = lv_indices_loop_reference(frames[t], spacing, num_rays=60)
        np.testing.assert_allclose(fast["dimensions_mm"][t], slow["dimensions_mm"], atol=1e-9)
        np.testing.assert_allclose(fast["wall_thickness_mm"][t], slow["wall_thickness_mm"], atol=1e-9)
        assert fast["cavity_area_mm2"][t] == pytest.approx(slow["cavity_area_mm2"])


def test_batch_matches_frame_by_frame_and_matrix_order():
    frames = synthetic_lv_frames(5, size=64, seed=1)
    batch = lv_indices(frames, (1.0, 1.0), max_frames_per_chunk=2)
    matrix = indices_matrix(batch)
    assert matrix.shape == (5, len(INDEX_NAMES))
    for t in range(5):
        single = indices_matrix(lv_indices(frames[t], (1.0, 1.0)))
        np.testing.assert_allclose(matrix[t], single[0])


def test_phase_from_area_curve_with_ed_not_first():
    area = np.array([800, 700, 600, 650, 750, 900, 1000, 1100, 1200, 1000], float)  # ED 8, ES 2
    phase = cardiac_phase(area)
    # systole: frames after ED (9, 0, 1) up to and including ES (2); ED itself is diastole
    np.testing.assert_array_equal(phase, [1, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    assert phase[8] == 0 and phase[2] == 1


def test_errors():
    good = annulus(20, 27, 0)
    with pytest.raises(ValueError, match="empty"):
        lv_indices(np.where(good == 1, 2, good), SPACING)
    no_rv = np.where(good == 3, 0, good)
    with pytest.raises(ValueError, match="no RV"):
        lv_indices(no_rv, SPACING)
    fallback = lv_indices(no_rv, SPACING, septum_angle_deg=0.0)
    np.testing.assert_allclose(fallback["wall_thickness_mm"], lv_indices(good, SPACING)["wall_thickness_mm"], atol=0.05)
    assert not fallback["rv_present"][0]
    with pytest.raises(ValueError, match="unknown labels"):
        lv_indices(np.where(good == 3, 4, good), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        lv_indices(good, (1.0, 0.0))
    with pytest.raises(ValueError, match="N, H, W"):
        lv_indices(good[None, None], SPACING)
    with pytest.raises(ValueError):
        cardiac_phase([1.0])
