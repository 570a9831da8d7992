"""Image-plane geometry in DICOM patient coordinates (LPS, millimetres).

A slice is described by its 4x4 *slice affine* mapping homogeneous pixel
coordinates ``(column, row, 0, 1)`` to world LPS millimetres (the convention of
:class:`cmrssl.io.cine.CineStudy`). From DICOM it is built from
ImageOrientationPatient (row cosine = direction of increasing column index,
then column cosine = direction of increasing row index), ImagePositionPatient
(centre of the first transmitted pixel) and PixelSpacing (row spacing, column
spacing).

These helpers serve two clients: the readers (slice order and spacing from
positions) and the anatomical-position bundle (view lines: the intersection of
a long-axis plane with a short-axis plane drawn in the short-axis pixel grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Plane",
    "Line",
    "LPS_TO_RAS",
    "APEX_DIRECTION_LPS",
    "IN_PLANE_TOLERANCE",
    "MAX_SHORT_AXIS_TILT_DEG",
    "in_plane_axes_problem",
    "GRID_TOLERANCE_VOXELS",
    "grid_mismatch",
    "short_axis_tilt_deg",
    "slice_affine_from_dicom",
    "plane_from_affine",
    "plane_from_orientation_position",
    "intersect_planes",
    "pixel_to_world",
    "world_to_pixel",
    "project_line_to_pixels",
    "orient_normal_base_to_apex",
    "slice_order_and_spacing",
    "lps_affine_to_ras",
    "ras_affine_to_lps",
]

#: DICOM LPS <-> NIfTI RAS: negate the first two world axes (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Heuristic direction of the LV long axis from base to apex in LPS: the apex
#: points to the patient's left (+x), anterior (-y) and inferior (-z). Real
#: hearts deviate by tens of degrees, but the sign of the projection of a
#: short-axis normal on this direction is reliable for short-axis stacks.
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)

#: Largest accepted |cosine| between the row and column axes of an image grid,
#: and largest accepted deviation of a DICOM direction cosine from unit length.
#: 1e-2 (about 0.6 degrees of shear) is far above the rounding of DS strings or
#: float32 affines (1e-7 on real scans, 1e-3 for cosines written with 3 decimals)
#: and changes a pixel area by at most 5e-5, so an accepted grid can be treated
#: as rectangular; anything beyond is a damaged header, not an acquisition.
IN_PLANE_TOLERANCE = 1e-2


#: Largest angle (degrees) between a short-axis slice normal and :data:`APEX_DIRECTION_LPS`.
#: Short-axis normals follow the patient's LV axis, which deviates from the heuristic by
#: tens of degrees (Sunnybrook SCD0000101: 16, phantom: 5-14); long-axis planes contain the
#: LV axis, so their normals are 90 degrees from it, 70-90 from the heuristic (phantom
#: 2Ch/4Ch: 76-90). A plane aligned with the scanner axes sits at 54.7 degrees and carries
#: no orientation anyway (see :func:`short_axis_tilt_deg`).
MAX_SHORT_AXIS_TILT_DEG = 60.0


@dataclass(frozen=True)
class Plane:
    """An oriented plane: ``point`` on it (mm) and unit ``normal``."""

    point: np.ndarray
    normal: np.ndarray

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of ``points`` ``[..., 3]`` from the plane along ``normal``."""
        return (np.asarray(points, dtype=np.float64) - self.point) @ self.normal


@dataclass(frozen=True)
class Line:
    """A world line: ``point`` on it (mm) and unit ``direction``."""

    point: np.ndarray
    direction: np.ndarray


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"{what} has zero or invalid length: {v}")
    return v / n


def in_plane_axes_problem(
    row_axis: Sequence[float], column_axis: Sequence[float], *, unit: bool = False,
    tolerance: float = IN_PLANE_TOLERANCE,
) -> Optional[str]:
    """Why two in-plane axes cannot span a rectangular pixel grid, or None when they can.

    Everything downstream (voxel volumes as ``dz * dy * dx``, resampling to a target
    spacing, lengths and wall thicknesses in mm) treats the pixel grid as rectangular,
    and MR pixel grids are rectangular by construction (DICOM requires orthogonal row
    and column cosines), so a sheared or degenerate pair is a damaged header.

    Args:
        row_axis: direction of increasing column index (any length unless ``unit``).
        column_axis: direction of increasing row index.
        unit: the axes are direction cosines and must have unit length (ImageOrientationPatient).
        tolerance: see :data:`IN_PLANE_TOLERANCE`.

    Returns:
        A short reason (``"the row and column cosines are parallel"``) or None.
    """
    axes = [np.asarray(row_axis, dtype=np.float64).reshape(3), np.asarray(column_axis, dtype=np.float64).reshape(3)]
    kind, kinds = ("cosine", "cosines") if unit else ("axis", "axes")
    for name, v in zip(("row", "column"), axes):
        if not np.all(np.isfinite(v)):
            return f"the {name} {kind} holds NaN or infinite values"
        n = float(np.linalg.norm(v))
        if n < 1e-9:
            return f"the {name} {kind} has zero length"
        if unit and abs(n - 1.0) > tolerance:
            return f"the {name} cosine is not a unit vector (length {n:.4g})"
    cosine = float(axes[0] @ axes[1]) / float(np.linalg.norm(axes[0]) * np.linalg.norm(axes[1]))
    if abs(cosine) > 1.0 - 1e-9:
        return f"the row and column {kinds} are parallel"
    if abs(cosine) > tolerance:
        angle = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
        return (f"the row and column {kinds} are not orthogonal (angle {angle:.1f} degrees, |cos| {abs(cosine):.3g} "
                f"> {tolerance:g}): a sheared pixel grid")
    return None


#: Largest distance, in voxels of the finer grid, by which a corner of one voxel grid may
#: miss the same corner of another and still be the same grid. 0.1 voxel is far above the
#: float32 rounding of real headers (about 1e-5 mm) and far below any misplacement that
#: moves a contour (a label 30 mm away is 20 voxels off).
GRID_TOLERANCE_VOXELS = 0.1


def grid_mismatch(
    affine_a: np.ndarray, shape_a: Sequence[int], affine_b: np.ndarray, shape_b: Sequence[int],
    *, tolerance_voxels: float = GRID_TOLERANCE_VOXELS,
) -> Optional[str]:
    """How two voxel grids differ, or None when they are one grid.

    An image and its label must share one grid: same shape, and every voxel at the same
    world position. Comparing the world positions of the grid's corners covers origin,
    spacing and orientation at once, in millimetres a reader can judge.

    Args:
        affine_a, affine_b: 4x4 voxel -> world (mm) affines, in the same world convention.
        shape_a, shape_b: the spatial shapes, in the affines' voxel axis order.
        tolerance_voxels: see :data:`GRID_TOLERANCE_VOXELS`.

    Returns:
        A short reason (``"shape (10, 8) vs (10, 9)"``, ``"voxel corners up to 30.0 mm apart
        (origin 30.0 mm apart)"``) or None.
    """
    shape_a, shape_b = tuple(int(s) for s in shape_a), tuple(int(s) for s in shape_b)
    if shape_a != shape_b:
        return f"shape {shape_a} vs {shape_b}"
    a, b = np.asarray(affine_a, dtype=np.float64), np.asarray(affine_b, dtype=np.float64)
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in shape_a], indexing="ij")).reshape(len(shape_a), -1)
    homogeneous = np.zeros((4, corners.shape[1]))
    homogeneous[: len(shape_a)] = corners
    homogeneous[3] = 1.0
    distance = np.linalg.norm((a @ homogeneous - b @ homogeneous)[:3], axis=0)
    spacing = np.linalg.norm(a[:3, : len(shape_a)], axis=0)
    voxel = float(np.min(spacing[spacing > 1e-9])) if np.any(spacing > 1e-9) else 1.0
    if float(distance.max()) <= tolerance_voxels * voxel:
        return None
    return (f"voxel corners up to {float(distance.max()):.1f} mm apart (origin {float(distance[0]):.1f} mm apart; "
            f"tolerance {tolerance_voxels * voxel:.2g} mm)")


def short_axis_tilt_deg(slice_affine: np.ndarray) -> Optional[float]:
    """Angle (degrees, 0-90) between a slice's normal and the heuristic LV long axis, or None.

    A short-axis slice is below :data:`MAX_SHORT_AXIS_TILT_DEG`, a long-axis (2Ch/4Ch)
    plane above it. None when the in-plane axes are aligned with the scanner axes
    (ACDC's ``diag(-1, -1, 1)``, a NIfTI without geometry): such a header tells no view.

    Args:
        slice_affine: 4x4 pixel ``(col, row, 0, 1)`` -> LPS mm (:class:`~cmrssl.io.cine.CineStudy`).
    """
    axes = np.asarray(slice_affine, dtype=np.float64)[:3, :2]
    axes = axes / np.linalg.norm(axes, axis=0)
    if np.all(np.minimum(np.abs(axes), np.abs(np.abs(axes) - 1.0)) < 1e-3):
        return None
    normal = _unit(np.cross(axes[:, 0], axes[:, 1]), "slice normal")
    return float(np.degrees(np.arccos(min(1.0, abs(float(normal @ APEX_DIRECTION_LPS))))))


def slice_affine_from_dicom(
    orientation: Sequence[float], position: Sequence[float], pixel_spacing: Sequence[float]
) -> np.ndarray:
    """Slice affine ``(col, row, 0, 1) -> LPS mm`` from DICOM tags.

    Args:
        orientation: ImageOrientationPatient, 6 direction cosines (row cosine, column cosine).
        position: ImagePositionPatient (mm), centre of the first pixel.
        pixel_spacing: PixelSpacing ``(row spacing dy, column spacing dx)`` in mm.

    Returns:
        4x4 float64; column 2 is the unit slice normal (row cosine x column cosine),
        so the matrix is invertible and the third pixel coordinate is a distance in mm.
    """
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    row_cos = _unit(iop[:3], "ImageOrientationPatient row cosine")
    col_cos = _unit(iop[3:], "ImageOrientationPatient column cosine")
    dy, dx = (float(s) for s in pixel_spacing)
    aff = np.eye(4)
    aff[:3, 0] = row_cos * dx
    aff[:3, 1] = col_cos * dy
    aff[:3, 2] = _unit(np.cross(row_cos, col_cos), "slice normal")
    aff[:3, 3] = np.asarray(position, dtype=np.float64).reshape(3)
    return aff


def plane_from_affine(slice_affine: np.ndarray) -> Plane:
    """Plane of a slice from its affine (normal = column axis x row axis, normalised)."""
    a = np.asarray(slice_affine, dtype=np.float64)
    normal = _unit(np.cross(a[:3, 0], a[:3, 1]), "slice normal")
    return Plane(point=a[:3, 3].copy(), normal=normal)


def plane_from_orientation_position(orientation: Sequence[float], position: Sequence[float]) -> Plane:
    """Plane from ImageOrientationPatient and ImagePositionPatient."""
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    normal = _unit(np.cross(iop[:3], iop[3:]), "slice normal")
    return Plane(point=np.asarray(position, dtype=np.float64).reshape(3), normal=normal)


def intersect_planes(a: Plane, b: Plane, *, parallel_tolerance: float = 1e-6) -> Optional[Line]:
    """Line where two planes meet, or None when they are parallel.

    The returned point is the point of the line closest to the world origin.
    """
    direction = np.cross(a.normal, b.normal)
    norm = float(np.linalg.norm(direction))
    if norm < parallel_tolerance:
        return None
    direction = direction / norm
    # Solve n_a.x = d_a, n_b.x = d_b, u.x = 0 (closest point to the origin along u).
    m = np.stack([a.normal, b.normal, direction])
    rhs = np.array([a.normal @ a.point, b.normal @ b.point, 0.0])
    point = np.linalg.solve(m, rhs)
    return Line(point=point, direction=direction)


def pixel_to_world(slice_affine: np.ndarray, col_row: np.ndarray) -> np.ndarray:
    """Pixel ``(col, row)`` ``[..., 2]`` (or ``(col, row, k)`` ``[..., 3]``) -> LPS mm ``[..., 3]``."""
    p = np.asarray(col_row, dtype=np.float64)
    if p.shape[-1] == 2:
        p = np.concatenate([p, np.zeros(p.shape[:-1] + (1,))], axis=-1)
    a = np.asarray(slice_affine, dtype=np.float64)
    return p @ a[:3, :3].T + a[:3, 3]


def world_to_pixel(slice_affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """LPS mm ``[..., 3]`` -> ``(col, row, k)`` ``[..., 3]``; ``k`` is the out-of-plane
    coordinate (mm when column 2 of the affine is the unit normal)."""
    a = np.asarray(slice_affine, dtype=np.float64)
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        a = a.copy()
        a[:3, 2] = plane_from_affine(a).normal
    p = np.asarray(points, dtype=np.float64) - a[:3, 3]
    return p @ np.linalg.inv(a[:3, :3]).T


def project_line_to_pixels(
    line: Line, slice_affine: np.ndarray, image_shape: Tuple[int, int]
) -> Optional[np.ndarray]:
    """Segment of a world line inside a slice image, in pixel coordinates.

    The line is projected orthogonally onto the slice plane (a view line lies in
    the plane already; for others the projection is the natural drawing), then
    clipped to the image rectangle ``[-0.5, W-0.5] x [-0.5, H-0.5]`` (pixel
    edges, pixel centres at integers).

    Args:
        line: world line (LPS mm).
        slice_affine: 4x4 ``(col, row, 0, 1) -> LPS``.
        image_shape: ``(H, W)`` rows and columns.

    Returns:
        ``[[col0, row0], [col1, row1]]`` float64 endpoints, or None when the
        projected line misses the image or projects to a point.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    p0 = world_to_pixel(slice_affine, line.point)[:2]
    p1 = world_to_pixel(slice_affine, line.point + line.direction)[:2]
    d = p1 - p0
    if float(np.linalg.norm(d)) < 1e-9:
        return None
    # Liang-Barsky clipping of the infinite line p0 + s d to the image box.
    lo = np.array([-0.5, -0.5])
    hi = np.array([width - 0.5, height - 0.5])
    s_min, s_max = -np.inf, np.inf
    for axis in range(2):
        if abs(d[axis]) < 1e-12:
            if p0[axis] < lo[axis] or p0[axis] > hi[axis]:
                return None
            continue
        s0 = (lo[axis] - p0[axis]) / d[axis]
        s1 = (hi[axis] - p0[axis]) / d[axis]
        s_min = max(s_min, min(s0, s1))
        s_max = min(s_max, max(s0, s1))
    if s_min > s_max:
        return None
    return np.stack([p0 + s_min * d, p0 + s_max * d])


def orient_normal_base_to_apex(normal: np.ndarray) -> Tuple[np.ndarray, float]:
    """Flip a short-axis normal to point from base to apex (heuristic).

    Uses :data:`APEX_DIRECTION_LPS`. Returns the oriented unit normal and the
    cosine between it and the heuristic direction; a cosine near 0 (below ~0.2)
    means the heuristic is unreliable for this pose.
    """
    n = _unit(normal, "slice normal")
    c = float(n @ APEX_DIRECTION_LPS)
    return (n, c) if c >= 0 else (-n, -c)


def slice_order_and_spacing(positions: np.ndarray, normal: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order slices along ``normal`` and measure the gaps between them.

    Args:
        positions: ``[Z, 3]`` slice positions (ImagePositionPatient, mm).
        normal: slice normal; slices are sorted by increasing projection on it.

    Returns:
        ``(order, projections, gaps)``: ``order[i]`` is the input index of the
        i-th slice, ``projections`` ``[Z]`` the sorted signed positions (mm) along
        ``normal``, ``gaps`` ``[Z-1]`` the distances between consecutive slices (mm).
    """
    n = _unit(normal, "slice normal")
    proj = np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ n
    order = np.argsort(proj, kind="stable")
    sorted_proj = proj[order]
    return order, sorted_proj, np.diff(sorted_proj)


def lps_affine_to_ras(affine: np.ndarray) -> np.ndarray:
    """Affine into LPS -> affine into RAS (NIfTI / MONAI convention)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def ras_affine_to_lps(affine: np.ndarray) -> np.ndarray:
    """Affine into RAS -> affine into LPS (DICOM convention)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
