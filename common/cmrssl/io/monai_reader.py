"""MONAI ``ImageReader`` for cines: ``LoadImaged(keys, reader=CineImageReader())``.

Import it as ``cmrssl.io.reader.CineImageReader`` or ``cmrssl.io.CineImageReader``
(both resolve here lazily, so that importing :mod:`cmrssl.io` does not import MONAI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from .cine import CineStudy
from .errors import CineReadError
from .nifti import check_spacing_from
from .reader import is_nifti_path, read_cine, study_ras_affine, study_to_xyzt

__all__ = ["CineImageReader"]

PathLike = Union[str, Path]


class CineImageReader(ImageReader):
    """MONAI reader for cine DICOM folders and NIfTI cines / frame folders.

    Output of :meth:`get_data`: array ``[x, y, z, t]`` float32 and a meta dict
    with ``affine`` / ``original_affine`` (RAS), ``spatial_shape`` ``[x, y, z]``,
    ``original_channel_dim = -1``, ``space = RAS``, ``pixdim`` /
    ``spacing_xyz_mm`` ``[dx, dy, dz]``, ``trigger_times_ms`` ``[T]`` (NaN when
    unknown), ``view`` and ``source_frame_index``.

    Args:
        series: DICOM series to pick in folders that mix several.
        view: view recorded in the meta.
        spacing_from: NIfTI spacing source, ``"auto"`` (what the header proves),
            ``"sform"`` or ``"pixdim"`` (:mod:`cmrssl.io.nifti`).
    """

    def __init__(self, series: Union[str, int, None] = None, view: str = "sax", spacing_from: str = "auto") -> None:
        super().__init__()
        self.series = series
        self.view = view
        self.spacing_from = check_spacing_from(spacing_from)

    def verify_suffix(self, filename: Union[Sequence[PathLike], PathLike]) -> bool:
        """Accept NIfTI files, ``.dcm`` files and folders (DICOM series or NIfTI frames)."""
        for name in ensure_tuple(filename):
            p = Path(name)
            if not (p.is_dir() or is_nifti_path(p) or p.suffix.lower() in (".dcm", ".dicom")):
                return False
        return True

    def read(self, data: Union[Sequence[PathLike], PathLike], **kwargs) -> Union[CineStudy, list]:
        """Read one cine per path (a list of paths gives a list of studies)."""
        names = ensure_tuple(data)
        studies = [read_cine(n, series=kwargs.get("series", self.series), view=self.view,
                             spacing_from=kwargs.get("spacing_from", self.spacing_from)) for n in names]
        return studies if len(studies) > 1 else studies[0]

    def get_data(self, img: Union[CineStudy, Sequence[CineStudy]]) -> Tuple[np.ndarray, Dict[str, Any]]:
        """``([x, y, z, t] array, meta)``; several studies are stacked on a new first axis."""
        studies = [img] if isinstance(img, CineStudy) else list(img)
        arrays, meta = [], {}
        for study in studies:
            if arrays and study.pixels.shape != studies[0].pixels.shape:
                raise CineReadError(f"{study.source}: shape {study.pixels.shape} differs from {studies[0].source}")
            arrays.append(np.ascontiguousarray(study_to_xyzt(study), dtype=np.float32))
            if not meta:
                affine = study_ras_affine(study)
                dz, dy, dx = study.spacing_zyx_mm
                times = study.trigger_times_ms
                meta = {
                    MetaKeys.AFFINE: affine,
                    MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape[:3]),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: -1,
                    MetaKeys.SPACE: SpaceKeys.RAS,
                    "pixdim": np.asarray([1.0, dx, dy, dz, 1.0, 1.0, 1.0, 1.0]),
                    "spacing_xyz_mm": np.asarray([dx, dy, dz]),
                    "trigger_times_ms": np.full(study.num_frames, np.nan) if times is None else np.asarray(times, float),
                    "source_frame_index": np.asarray(study.source_frame_index),
                    "view": study.view,
                    "num_frames": study.num_frames,
                }
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return data, meta
