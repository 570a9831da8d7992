"""CMR cine I/O and geometry: DICOM series, NIfTI 3D/4D, long-axis images.

Readers return :class:`CineStudy` (pixels ``[T, Z, H, W]``, per-slice LPS
affines, slices base to apex); writers take one. See :mod:`.dicom` and
:mod:`.nifti` for the on-disk conventions and :mod:`.geometry` for planes.
"""

from .cine import CineStudy
from .dicom import read_dicom_cine, read_long_axis_dicom, write_dicom_series
from .errors import CineReadError, CineWriteError
from .geometry import (
    Line,
    Plane,
    intersect_planes,
    pixel_to_world,
    plane_from_affine,
    plane_from_orientation_position,
    project_line_to_pixels,
    slice_order_and_spacing,
    world_to_pixel,
)
from .nifti import (
    read_long_axis_nifti,
    read_nifti_cine,
    read_nifti_frames,
    write_cine_nifti,
    write_frames_nifti,
    write_long_axis_nifti,
)
from .reader import read_cine


def __getattr__(name: str):
    # Lazy: CineImageReader needs MONAI (and torch), seconds to import.
    if name == "CineImageReader":
        from .monai_reader import CineImageReader

        return CineImageReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CineStudy",
    "CineReadError",
    "CineWriteError",
    "read_cine",
    "read_dicom_cine",
    "read_long_axis_dicom",
    "read_nifti_cine",
    "read_nifti_frames",
    "read_long_axis_nifti",
    "write_dicom_series",
    "write_cine_nifti",
    "write_frames_nifti",
    "write_long_axis_nifti",
    "CineImageReader",
    "Plane",
    "Line",
    "plane_from_affine",
    "plane_from_orientation_position",
    "intersect_planes",
    "pixel_to_world",
    "world_to_pixel",
    "project_line_to_pixels",
    "slice_order_and_spacing",
]
