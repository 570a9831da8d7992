"""CMR cine I/O and geometry: DICOM series, NIfTI 3D/4D, long-axis images."""

from .cine import CineStudy

__all__ = ["CineStudy"]
