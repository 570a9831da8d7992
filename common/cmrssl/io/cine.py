"""The in-memory cine study every reader returns and every writer takes.

Conventions (the data contract of ``DESIGN.md``):

- ``pixels`` is ``[T, Z, H, W]``: frames, slices, rows, columns.
- World coordinates are DICOM patient coordinates (LPS, millimetres). NIfTI
  readers convert from RAS by negating the first two world axes.
- ``slice_affines[z]`` maps homogeneous pixel coordinates ``(column, row, 0, 1)``
  of slice ``z`` to world LPS millimetres; it carries the in-plane spacing
  (columns of the 3x3 part have norms ``dx`` and ``dy``) and the slice position.
  Each slice keeps its own affine because real stacks are not always regular.
- Slices are ordered base to apex (see :func:`cmrssl.io.geometry`);
  ``source_slice_index[z]`` remembers the slice's index in the source, so masks
  can be written back in the input's geometry.
- ``slice_spacing_mm`` comes from slice positions projected on the slice normal
  (never from the SliceLocation tag); for NIfTI files whose affine carries no
  geometry (ACDC) it falls back to the header's third zoom.
- ``labels`` (optional, same shape as ``pixels``) are canonical:
  0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity. Frames without a
  reference carry ``-1`` everywhere when only some frames are labelled
  (``labelled_frames`` lists those that are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["CineStudy", "swap_layout"]


def swap_layout(array: np.ndarray) -> np.ndarray:
    """``[T, Z, H, W]`` <-> ``[x, y, z, t]`` (NIfTI's and MONAI's order): the axes reversed.

    Its own inverse, and the same for fewer axes (``[Z, H, W]`` <-> ``[x, y, z]``,
    ``[T, H, W]`` <-> ``[x, y, t]``). A view, not a copy: wrap it in
    ``np.ascontiguousarray`` where a contiguous array is needed.
    """
    return np.transpose(array, tuple(range(array.ndim - 1, -1, -1)))


@dataclass
class CineStudy:
    """A short-axis (or long-axis) cine: pixels ``[T, Z, H, W]`` with geometry.

    Args:
        pixels: float32 array ``[T, Z, H, W]``.
        slice_affines: float64 array ``[Z, 4, 4]``, pixel ``(col, row, 0, 1)`` -> LPS mm.
        slice_spacing_mm: distance between consecutive slice planes (0 for a single slice).
        trigger_times_ms: ``[T]`` nominal trigger time of each frame, or None.
        labels: optional int16 array ``[T, Z, H, W]`` of canonical labels (-1: not labelled).
        labelled_frames: frame indices whose labels are references.
        source: path the study was read from (a file or a folder); never a patient name.
        source_slice_index: ``[Z]`` index of each slice in the source's order.
        view: ``"sax"``, ``"2ch"`` or ``"4ch"``.
        source_frame_index: ``[T]`` 0-based index of each frame in the full cycle of the
            source (e.g. ACDC keeps only ED and ES: ``[0, 11]``); defaults to ``arange(T)``.
        frame_of_reference_uids: the distinct DICOM FrameOfReferenceUIDs of the files read,
            sorted, ``""`` standing for files without one; ``()`` for a study not read from
            DICOM (NIfTI has no frame of reference). Two series share one world (patient
            coordinate system) only when they share this UID; the anatomical-position labels
            compare it (:func:`cmrssl.data.position.check_one_world`). Internal: never logged
            or written into outputs.
    """

    pixels: np.ndarray
    slice_affines: np.ndarray
    slice_spacing_mm: float
    trigger_times_ms: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    labelled_frames: Sequence[int] = field(default_factory=list)
    source: str = ""
    source_slice_index: Optional[np.ndarray] = None
    view: str = "sax"
    source_frame_index: Optional[np.ndarray] = None
    frame_of_reference_uids: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.pixels = np.asarray(self.pixels)
        if self.pixels.ndim != 4:
            raise ValueError(
                f"{self.source or 'cine'}: pixels must be [T, Z, H, W], got shape {self.pixels.shape}"
            )
        self.slice_affines = np.asarray(self.slice_affines, dtype=np.float64)
        n_slices = self.pixels.shape[1]
        if self.slice_affines.shape != (n_slices, 4, 4):
            raise ValueError(
                f"{self.source or 'cine'}: slice_affines must be [{n_slices}, 4, 4], got {self.slice_affines.shape}"
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != self.pixels.shape:
                raise ValueError(
                    f"{self.source or 'cine'}: labels shape {self.labels.shape} differs from "
                    f"pixels shape {self.pixels.shape}"
                )
            if not self.labelled_frames:
                self.labelled_frames = list(range(self.pixels.shape[0]))
        if self.source_slice_index is None:
            self.source_slice_index = np.arange(n_slices)
        if self.source_frame_index is None:
            self.source_frame_index = np.arange(self.pixels.shape[0])
        self.frame_of_reference_uids = tuple(self.frame_of_reference_uids)

    @property
    def num_frames(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def num_slices(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def pixel_spacing_mm(self) -> tuple:
        """``(row spacing dy, column spacing dx)`` in mm, as DICOM PixelSpacing."""
        a = self.slice_affines[0]
        return (float(np.linalg.norm(a[:3, 1])), float(np.linalg.norm(a[:3, 0])))

    @property
    def spacing_zyx_mm(self) -> tuple:
        """``(dz, dy, dx)`` in mm, matching the ``[Z, H, W]`` axes."""
        dy, dx = self.pixel_spacing_mm
        return (float(self.slice_spacing_mm), dy, dx)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (mm^3 / 1000), from the slice spacing.

        ``dz * dy * dx`` is the voxel volume only on a rectangular pixel grid. The
        readers refuse sheared grids (row and column axes more than
        :data:`cmrssl.io.geometry.IN_PLANE_TOLERANCE` from orthogonal) rather than use
        the determinant here: resampling, lengths and areas downstream all take
        ``(dz, dy, dx)`` as a rectangular grid, and a determinant would fix the volume
        while leaving those silently wrong. ``dz`` is measured along the slice normal,
        so a stack whose slices are offset in-plane (a through-plane shear) is exact.
        """
        dz, dy, dx = self.spacing_zyx_mm
        return dz * dy * dx / 1000.0

    @property
    def slice_normal(self) -> np.ndarray:
        """Unit normal of the slice planes, pointing from the first slice (base) to the last."""
        a = self.slice_affines
        if self.num_slices > 1:
            d = a[-1, :3, 3] - a[0, :3, 3]
            n = np.cross(a[0, :3, 0], a[0, :3, 1])
            n = n / np.linalg.norm(n)
            return n if float(np.dot(n, d)) >= 0 else -n
        n = np.cross(a[0, :3, 0], a[0, :3, 1])
        return n / np.linalg.norm(n)

    @property
    def stack_affine(self) -> np.ndarray:
        """4x4 affine mapping ``(col, row, slice, 1)`` to LPS mm for the regular stack."""
        aff = self.slice_affines[0].copy()
        aff[:3, 2] = self.slice_normal * float(self.slice_spacing_mm or 1.0)
        return aff

    def frame(self, t: int) -> np.ndarray:
        """Pixels of frame ``t`` as ``[Z, H, W]``."""
        return self.pixels[t]
