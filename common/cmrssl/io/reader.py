"""One entry point for any cine on disk, and a MONAI ``ImageReader`` over it.

:func:`read_cine` dispatches on the path: a folder of DICOM files (or a list
of files/folders, e.g. Kaggle DSB ``sax_N`` folders), a folder of 3D NIfTI
frames, a 4D/3D NIfTI file, or a single DICOM file.

:class:`CineImageReader` lets MONAI pipelines load the same inputs::

    LoadImaged(keys="image", reader=CineImageReader())

gives the cine as ``[x=column, y=row, z=slice, t=frame]`` with
``original_channel_dim = -1`` (so ``EnsureChannelFirstd`` makes it
``[T, W, H, Z]``: frames as channels) and a RAS affine, matching
``LoadImaged`` on a 4D NIfTI written by :func:`~cmrssl.io.nifti.write_cine_nifti`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from .cine import CineStudy
from .dicom import read_dicom_cine
from .errors import CineReadError
from .geometry import LPS_TO_RAS
from .nifti import read_nifti_cine, read_nifti_frames

__all__ = ["read_cine", "is_nifti_path", "CineImageReader", "study_ras_affine", "study_to_xyzt"]

PathLike = Union[str, Path]


def is_nifti_path(path: PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _folder_holds_nifti_frames(folder: Path) -> bool:
    return any(is_nifti_path(f) for f in folder.iterdir() if f.is_file())


def read_cine(
    path: Union[PathLike, Sequence[PathLike]],
    *,
    label_path: Optional[PathLike] = None,
    label_map: Union[str, Mapping[int, int], None] = None,
    view: str = "sax",
    series: Union[str, int, None] = None,
) -> CineStudy:
    """Read a cine from a DICOM folder/file(s), a NIfTI file or a folder of NIfTI frames.

    Args:
        path: see module docstring.
        label_path: label cine for a NIfTI input.
        label_map: label mapping for NIfTI labels (default canonical; ``"auto"`` for frame folders).
        view: ``"sax"``, ``"2ch"`` or ``"4ch"``.
        series: DICOM series to pick when a folder mixes several.

    Raises:
        FileNotFoundError, CineReadError: as the specific readers.
    """
    if not isinstance(path, (str, Path)):
        return read_dicom_cine(list(path), series=series, view=view)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such cine file or folder")
    if p.is_file() and is_nifti_path(p):
        return read_nifti_cine(p, label_path=label_path, label_map=label_map or "canonical", view=view)
    if p.is_dir() and _folder_holds_nifti_frames(p):
        study = read_nifti_frames(p, label_map=label_map or "auto")
        study.view = view
        return study
    return read_dicom_cine(p, series=series, view=view)


def study_ras_affine(study: CineStudy) -> np.ndarray:
    """4x4 RAS affine of the regular stack: voxel ``(x=col, y=row, z=slice)`` -> RAS mm."""
    return LPS_TO_RAS @ study.stack_affine


def study_to_xyzt(study: CineStudy) -> np.ndarray:
    """Pixels ``[T, Z, H, W]`` -> ``[x=W, y=H, z=Z, t=T]`` (NIfTI order)."""
    return np.transpose(study.pixels, (3, 2, 1, 0))


class CineImageReader(ImageReader):
    """MONAI reader for cine DICOM folders and NIfTI cines / frame folders.

    Output of :meth:`get_data`: array ``[x, y, z, t]`` float32 and a meta dict
    with ``affine`` / ``original_affine`` (RAS), ``spatial_shape`` ``[x, y, z]``,
    ``original_channel_dim = -1``, ``space = RAS``, ``pixdim`` /
    ``spacing_mm`` ``[dx, dy, dz]``, ``trigger_times_ms`` ``[T]`` (NaN when
    unknown), ``view`` and ``source_frame_index``.

    Args:
        series: DICOM series to pick in folders that mix several.
        view: view recorded in the meta.
    """

    def __init__(self, series: Union[str, int, None] = None, view: str = "sax") -> None:
        super().__init__()
        self.series = series
        self.view = view

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
        studies = [read_cine(n, series=kwargs.get("series", self.series), view=self.view) for n in names]
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
                dz, dy, dx = study.spacing_mm
                times = study.trigger_times_ms
                meta = {
                    MetaKeys.AFFINE: affine,
                    MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape[:3]),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: -1,
                    MetaKeys.SPACE: SpaceKeys.RAS,
                    "pixdim": np.asarray([1.0, dx, dy, dz, 1.0, 1.0, 1.0, 1.0]),
                    "spacing_mm": np.asarray([dx, dy, dz]),
                    "trigger_times_ms": np.full(study.num_frames, np.nan) if times is None else np.asarray(times, float),
                    "source_frame_index": np.asarray(study.source_frame_index),
                    "view": study.view,
                    "num_frames": study.num_frames,
                }
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return data, meta
