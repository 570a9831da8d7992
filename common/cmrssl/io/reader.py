"""One entry point for any cine on disk, and a MONAI ``ImageReader`` over it.

:func:`read_cine` dispatches on the path: a folder of DICOM files (or a list
of files/folders), a Kaggle Data Science Bowl study folder (its ``sax_N``
sub-folders read together as one stack; its long-axis series ignored), a
folder of 3D NIfTI frames, a 4D/3D NIfTI file, or a single DICOM file.

:class:`CineImageReader` lets MONAI pipelines load the same inputs::

    LoadImaged(keys="image", reader=CineImageReader())

gives the cine as ``[x=column, y=row, z=slice, t=frame]`` with
``original_channel_dim = -1`` (so ``EnsureChannelFirstd`` makes it
``[T, W, H, Z]``: frames as channels) and a RAS affine, matching
``LoadImaged`` on a 4D NIfTI written by :func:`~cmrssl.io.nifti.write_cine_nifti`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np

from .cine import CineStudy
from .dicom import read_dicom_cine
from .errors import CineReadError
from .geometry import LPS_TO_RAS
from .nifti import read_nifti_cine, read_nifti_frames

__all__ = ["read_cine", "is_nifti_path", "CineImageReader", "study_ras_affine", "study_to_xyzt"]


def __getattr__(name: str):
    # CineImageReader subclasses MONAI's ImageReader; importing MONAI (and torch)
    # costs seconds, so data tools that only read cines do not pay for it.
    if name == "CineImageReader":
        from .monai_reader import CineImageReader

        return CineImageReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PathLike = Union[str, Path]


def is_nifti_path(path: PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _entries(folder: Path) -> List[Path]:
    """The entries of ``folder``; an unreadable folder is a named error, not a traceback."""
    try:
        return list(folder.iterdir())
    except OSError as err:
        raise CineReadError(f"{folder}: folder cannot be listed ({err.strerror or err})") from err


def _folder_holds_nifti_frames(folder: Path) -> bool:
    return any(is_nifti_path(f) for f in _entries(folder) if f.is_file())


_SAX_FOLDER = re.compile(r"^sax_(\d+)$")


def sax_series_folders(folder: PathLike) -> List[Path]:
    """The ``sax_N`` sub-folders of a Kaggle DSB study folder (``<id>/study`` or ``<id>``), by N; [] if none.

    DSB stores one short-axis slice position per ``sax_N`` folder beside
    ``2ch_*``/``4ch_*`` long-axis series: the stack is their union.
    """
    folder = Path(folder)
    if (folder / "study").is_dir():
        folder = folder / "study"
    found = [(int(m.group(1)), p) for p in _entries(folder) if p.is_dir() and (m := _SAX_FOLDER.match(p.name))]
    return [p for _, p in sorted(found)]


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
        label_path: label cine for a NIfTI input (refused for other inputs).
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
    if label_path is not None:  # silently dropping the user's labels would lose their work
        raise CineReadError(
            f"{label_path}: a label file can only accompany a NIfTI cine, not {p} "
            "(a folder of NIfTI frames carries its labels as frame_XX_gt files beside the frames)"
        )
    if p.is_dir() and _folder_holds_nifti_frames(p):
        study = read_nifti_frames(p, label_map=label_map or "auto")
        study.view = view
        return study
    sax = sax_series_folders(p) if p.is_dir() and view == "sax" else []
    if sax:
        study = read_dicom_cine(sax, series=series, view=view)
        study.source = str(p)
        return study
    return read_dicom_cine(p, series=series, view=view)


def study_ras_affine(study: CineStudy) -> np.ndarray:
    """4x4 RAS affine of the regular stack: voxel ``(x=col, y=row, z=slice)`` -> RAS mm."""
    return LPS_TO_RAS @ study.stack_affine


def study_to_xyzt(study: CineStudy) -> np.ndarray:
    """Pixels ``[T, Z, H, W]`` -> ``[x=W, y=H, z=Z, t=T]`` (NIfTI order)."""
    return np.transpose(study.pixels, (3, 2, 1, 0))
