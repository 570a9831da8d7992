"""Exceptions raised by the cine readers and writers.

Every message names the offending file (or folder) and what is wrong with it,
so a user pointing the package at a folder of scans can fix the input.
"""

from __future__ import annotations

__all__ = ["CineReadError", "CineWriteError"]


class CineReadError(ValueError):
    """An input cine (DICOM series or NIfTI) cannot be read into a consistent study."""


class CineWriteError(ValueError):
    """A cine study cannot be written (bad study content or unsupported request)."""
