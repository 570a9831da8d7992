"""Geometry helpers on analytic planes: intersections, projections, round trips, slice order."""

import numpy as np
import pytest

from cmrssl.io.geometry import (
    APEX_DIRECTION_LPS,
    Line,
    Plane,
    intersect_planes,
    lps_affine_to_ras,
    orient_normal_base_to_apex,
    pixel_to_world,
    plane_from_affine,
    plane_from_orientation_position,
    project_line_to_pixels,
    ras_affine_to_lps,
    slice_affine_from_dicom,
    slice_order_and_spacing,
    world_to_pixel,
)
from io_cine_cases import rotation_about


def test_slice_affine_from_dicom_axes_and_spacing():
    # Axial-like slice: rows run along +x (L), columns along +y (P).
    a = slice_affine_from_dicom([1, 0, 0, 0, 1, 0], [10, 20, 30], [0.5, 0.75])
    np.testing.assert_allclose(a[:3, 0], [0.75, 0, 0])  # column index step = column spacing
    np.testing.assert_allclose(a[:3, 1], [0, 0.5, 0])  # row index step = row spacing
    np.testing.assert_allclose(a[:3, 2], [0, 0, 1])
    np.testing.assert_allclose(pixel_to_world(a, [2, 4]), [11.5, 22.0, 30.0])


def test_plane_from_iop_ipp_matches_plane_from_affine():
    iop = [0.6, 0.8, 0.0, 0.0, 0.0, -1.0]
    ipp = [5.0, -3.0, 7.0]
    p1 = plane_from_orientation_position(iop, ipp)
    p2 = plane_from_affine(slice_affine_from_dicom(iop, ipp, [1.2, 1.2]))
    np.testing.assert_allclose(p1.normal, p2.normal)
    np.testing.assert_allclose(p1.point, p2.point)
    np.testing.assert_allclose(p1.normal, np.cross([0.6, 0.8, 0], [0, 0, -1]))


def test_orthogonal_planes_meet_on_the_shared_axis():
    z0 = Plane(point=np.array([0.0, 0.0, 5.0]), normal=np.array([0.0, 0.0, 1.0]))
    x0 = Plane(point=np.array([-2.0, 9.0, 1.0]), normal=np.array([1.0, 0.0, 0.0]))
    line = intersect_planes(z0, x0)
    assert line is not None
    np.testing.assert_allclose(np.abs(line.direction), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(line.point, [-2.0, 0.0, 5.0], atol=1e-12)


def test_parallel_planes_do_not_meet():
    a = Plane(point=np.zeros(3), normal=np.array([0.0, 0.0, 1.0]))
    b = Plane(point=np.array([0.0, 0.0, 4.0]), normal=np.array([0.0, 0.0, -1.0]))
    assert intersect_planes(a, b) is None


def test_intersection_of_rotated_planes_lies_in_both():
    rot = rotation_about([0.3, -0.7, 0.2], 1.1)
    a = Plane(point=rot @ [1.0, 2.0, 3.0], normal=rot @ [0.0, 0.0, 1.0])
    n_b = np.array([0.5, 0.5, 0.7071])
    b = Plane(point=rot @ [-4.0, 0.0, 2.0], normal=rot @ (n_b / np.linalg.norm(n_b)))
    line = intersect_planes(a, b)
    for s in (-50.0, 0.0, 37.5):
        point = line.point + s * line.direction
        assert abs(float(a.signed_distance(point))) < 1e-9
        assert abs(float(b.signed_distance(point))) < 1e-9
    assert abs(float(line.direction @ a.normal)) < 1e-12
    assert abs(float(line.direction @ b.normal)) < 1e-12


def test_pixel_world_pixel_round_trip_on_a_rotated_pose():
    rot = rotation_about([1.0, 2.0, -0.5], 0.8)
    iop = np.concatenate([rot[:, 0], rot[:, 1]])
    a = slice_affine_from_dicom(iop, [-30.0, 12.0, 80.0], [1.1, 1.7])
    pixels = np.array([[0.0, 0.0], [3.5, 7.25], [255.0, 127.0]])
    world = pixel_to_world(a, pixels)
    back = world_to_pixel(a, world)
    np.testing.assert_allclose(back[:, :2], pixels, atol=1e-9)
    np.testing.assert_allclose(back[:, 2], 0.0, atol=1e-9)
    # a point 3 mm off the plane has out-of-plane coordinate 3 (column 2 is the unit normal)
    off = world[1] + 3.0 * plane_from_affine(a).normal
    assert world_to_pixel(a, off)[2] == pytest.approx(3.0)


def test_view_line_of_two_orthogonal_slices_crosses_the_image():
    # Slice A: 20 x 10 pixels of 1 mm in the z = 0 plane, first pixel at the origin.
    a = slice_affine_from_dicom([1, 0, 0, 0, 1, 0], [0, 0, 0], [1.0, 1.0])
    # Plane B: x = 7 (a long-axis plane through column 7).
    b = plane_from_orientation_position([0, 1, 0, 0, 0, 1], [7, 0, 0])
    line = intersect_planes(plane_from_affine(a), b)
    seg = project_line_to_pixels(line, a, (10, 20))
    assert seg is not None
    seg = seg[np.argsort(seg[:, 1])]
    np.testing.assert_allclose(seg, [[7.0, -0.5], [7.0, 9.5]], atol=1e-9)


def test_projection_clips_diagonal_and_misses_outside():
    a = slice_affine_from_dicom([1, 0, 0, 0, 1, 0], [0, 0, 0], [2.0, 2.0])  # 2 mm pixels
    diagonal = Line(point=np.zeros(3), direction=np.array([1.0, 1.0, 0.0]) / np.sqrt(2))
    seg = project_line_to_pixels(diagonal, a, (8, 8))
    np.testing.assert_allclose(sorted(seg[:, 0]), [-0.5, 7.5], atol=1e-9)
    np.testing.assert_allclose(seg[:, 0], seg[:, 1], atol=1e-9)
    outside = Line(point=np.array([100.0, 0.0, 0.0]), direction=np.array([0.0, 1.0, 0.0]))
    assert project_line_to_pixels(outside, a, (8, 8)) is None
    # a line along the normal projects to a point: nothing to draw
    normal_line = Line(point=np.array([3.0, 3.0, 0.0]), direction=np.array([0.0, 0.0, 1.0]))
    assert project_line_to_pixels(normal_line, a, (8, 8)) is None


def test_slice_order_and_spacing_from_shuffled_positions():
    normal = np.array([0.0, 0.6, 0.8])
    positions = np.array([normal * d + [5.0, 0.0, 0.0] for d in (20.0, -10.0, 0.0, 10.0)])
    order, proj, gaps = slice_order_and_spacing(positions, normal)
    assert order.tolist() == [1, 2, 3, 0]
    np.testing.assert_allclose(proj, [-10, 0, 10, 20], atol=1e-12)
    np.testing.assert_allclose(gaps, [10, 10, 10], atol=1e-12)


def test_base_to_apex_normal_is_flipped_towards_left_anterior_inferior():
    n, cos = orient_normal_base_to_apex(-APEX_DIRECTION_LPS)
    np.testing.assert_allclose(n, APEX_DIRECTION_LPS)
    assert cos == pytest.approx(1.0)


def test_lps_ras_conversion_negates_first_two_rows_and_is_an_involution():
    a = np.arange(16.0).reshape(4, 4)
    r = lps_affine_to_ras(a)
    np.testing.assert_allclose(r[:2], -a[:2])
    np.testing.assert_allclose(r[2:], a[2:])
    np.testing.assert_allclose(ras_affine_to_lps(r), a)
