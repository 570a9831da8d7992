"""Damage a NIfTI header the way real files come damaged: raw fields nibabel would make agree on save.

One helper for the bad-input tests (``tests/integration/test_bad_input_{readers,geometry}.py``,
``tests/bundle/test_bad_input_geometry_bundles.py``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["patch_nifti_header"]

# NIfTI-1 header offsets (bytes): pixdim float32[8], sform_code int16, qoffset_x/y/z float32[3],
# srow_x/y/z float32[4] each.
_PIXDIM_OFFSET = 76
_SFORM_CODE_OFFSET = 254
_QOFFSET_OFFSET = 268
_SROW_OFFSET = 280


def patch_nifti_header(src: Path, dst: Path, *, pixdim_xyz=None, sform_code=None, sform_columns=None,
                       translate_mm=None) -> None:
    """Copy a ``.nii.gz`` with raw header fields overwritten.

    Args:
        pixdim_xyz: new ``pixdim[1..3]`` (a number or three).
        sform_code: new ``sform_code``.
        sform_columns: 3x3 voxel -> RAS columns of the sform.
        translate_mm: added to the sform's and the qform's origin (x, y, z mm).
    """
    raw = bytearray(gzip.decompress(Path(src).read_bytes()))
    if pixdim_xyz is not None:
        pixdim = np.frombuffer(bytes(raw[_PIXDIM_OFFSET:_PIXDIM_OFFSET + 32]), dtype="<f4").copy()
        pixdim[1:4] = pixdim_xyz
        raw[_PIXDIM_OFFSET:_PIXDIM_OFFSET + 32] = pixdim.astype("<f4").tobytes()
    if sform_code is not None:
        raw[_SFORM_CODE_OFFSET:_SFORM_CODE_OFFSET + 2] = np.int16(sform_code).astype("<i2").tobytes()
    srow = np.frombuffer(bytes(raw[_SROW_OFFSET:_SROW_OFFSET + 48]), dtype="<f4").reshape(3, 4).copy()
    if sform_columns is not None:
        srow[:, :3] = sform_columns
    if translate_mm is not None:
        srow[:, 3] += translate_mm
        qoffset = np.frombuffer(bytes(raw[_QOFFSET_OFFSET:_QOFFSET_OFFSET + 12]), dtype="<f4").copy()
        raw[_QOFFSET_OFFSET:_QOFFSET_OFFSET + 12] = (qoffset + np.asarray(translate_mm, dtype=np.float32)).astype(
            "<f4").tobytes()
    raw[_SROW_OFFSET:_SROW_OFFSET + 48] = srow.astype("<f4").tobytes()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(gzip.compress(bytes(raw)))
