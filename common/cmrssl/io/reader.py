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

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from .cine import CineStudy, swap_layout
from .dicom import read_dicom_cine
from .errors import CineReadError
from .geometry import LPS_TO_RAS
from .nifti import check_spacing_from, read_nifti_cine, read_nifti_frames

__all__ = [
    "read_cine",
    "read_cine_for_inference",
    "CineStudyCache",
    "is_nifti_path",
    "study_ras_affine",
    "study_to_xyzt",
]


def __getattr__(name: str):
    # CineImageReader subclasses MONAI's ImageReader; importing MONAI (and torch)
    # costs seconds, so data tools that only read cines do not pay for it. Loaded on
    # first use, it is left out of __all__ (a star import would load it).
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
    spacing_from: str = "auto",
) -> CineStudy:
    """Read a cine from a DICOM folder/file(s), a NIfTI file or a folder of NIfTI frames.

    Args:
        path: see module docstring.
        label_path: label cine for a NIfTI input (refused for other inputs).
        label_map: label mapping for NIfTI labels (default canonical; ``"auto"`` for frame folders).
        view: ``"sax"``, ``"2ch"`` or ``"4ch"``.
        series: DICOM series to pick when a folder mixes several.
        spacing_from: NIfTI only: ``"auto"`` (what the header proves), ``"sform"`` or
            ``"pixdim"`` (:mod:`cmrssl.io.nifti`); DICOM has one spacing and ignores it.

    Raises:
        FileNotFoundError, CineReadError: as the specific readers.
    """
    if not isinstance(path, (str, Path)):
        return read_dicom_cine(list(path), series=series, view=view)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such cine file or folder")
    if p.is_file() and is_nifti_path(p):
        return read_nifti_cine(p, label_path=label_path, label_map=label_map or "canonical", view=view,
                               spacing_from=spacing_from)
    if label_path is not None:  # silently dropping the user's labels would lose their work
        raise CineReadError(
            f"{label_path}: a label file can only accompany a NIfTI cine, not {p} "
            "(a folder of NIfTI frames carries its labels as frame_XX_gt files beside the frames)"
        )
    if p.is_dir() and _folder_holds_nifti_frames(p):
        study = read_nifti_frames(p, label_map=label_map or "auto", spacing_from=spacing_from)
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
    return swap_layout(study.pixels)


def _check_nifti_dimensions(path: Path, expected_channels: int) -> None:
    """Reject, with a message naming ``path``, a NIfTI that is 2D or has several channels.

    A 5D NIfTI ``[x, y, z, t, c]`` with ``c > 1`` (RGB, multi-echo) cannot be
    fed to a grayscale network; a 2D image ``[x, y]`` (or ``[x, y, 1]`` with a
    single slice and no time axis) is a single picture, not a cine or a frame stack.
    """
    shape = tuple(int(s) for s in nib.load(str(path)).shape)
    if len(shape) < 3:
        raise ValueError(
            f"{path}: is a 2D image of shape {shape}; expected a cine (4D NIfTI [x, y, z, t], "
            "a DICOM folder or a folder of 3D NIfTI frames) or a 3D frame [x, y, z]"
        )
    if len(shape) >= 5:
        channels = int(np.prod(shape[4:]))
        if channels != expected_channels:
            raise ValueError(
                f"{path}: has {channels} channels (shape {shape}); the network expects "
                f"{expected_channels} (grayscale cine)"
            )


def read_cine_for_inference(path: Union[str, os.PathLike], expected_channels: int = 1, spacing_from: str = "auto"):
    """Read a cine (or a single 3D frame) as a :class:`cmrssl.io.CineStudy`.

    Args:
        path: a DICOM folder, a 4D NIfTI ``[x, y, z, t]``, a folder of 3D NIfTI
            frames, or a single 3D NIfTI frame ``[x, y, z]`` (read as a one-frame cine).
        expected_channels: channels the network takes; other counts are refused.
        spacing_from: as in :func:`read_cine`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a 2D image or an unexpected channel count (the message names ``path``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such cine (expected a DICOM folder, a 4D NIfTI or a folder of 3D NIfTI frames)")
    if path.is_file() and is_nifti_path(path):
        _check_nifti_dimensions(path, expected_channels)
    study = read_cine(path, spacing_from=spacing_from)
    if study.num_frames == 1 and study.num_slices == 1:
        raise ValueError(
            f"{path}: is a single 2D image (one frame, one slice, {study.pixels.shape[2]}x{study.pixels.shape[3]}); "
            "expected a cine or a 3D frame (a stack of slices)"
        )
    if min(study.pixels.shape[2:]) < 2:
        raise ValueError(f"{path}: image of shape {study.pixels.shape} [T, Z, H, W] is not a cine")
    return study


class CineStudyCache:
    """Keeps the last few studies read, keyed by path and modification time: the one study cache.

    Frame-by-frame loading visits the frames of one cine in a row; reading a
    DICOM folder of 250 files for each of its 25 frames would dominate the run.
    Segmentation inference shares one cache between the frame loader
    (:class:`cmrssl.transforms.io.LoadCineFramed`) and the writer that assembles
    the cine, so each cine is read once.

    Args:
        max_studies: studies kept (0: none, every ``get`` reads).
        expected_channels: when given, studies are read with
            :func:`read_cine_for_inference` (2D images and other channel counts
            refused); else with :func:`read_cine`.
        spacing_from: NIfTI spacing source for every study (:func:`read_cine`); a
            ``get`` may name its own (a datalist record's ``spacing_from``).
    """

    def __init__(self, max_studies: int = 1, expected_channels: Optional[int] = None,
                 spacing_from: str = "auto") -> None:
        if int(max_studies) < 0:
            raise ValueError(f"max_studies must be >= 0, got {max_studies}")
        self.max_studies = int(max_studies)
        self.expected_channels = None if expected_channels is None else int(expected_channels)
        self.spacing_from = check_spacing_from(spacing_from)
        self._studies: "OrderedDict[tuple, CineStudy]" = OrderedDict()

    def get(self, path: Union[str, os.PathLike], spacing_from: Optional[str] = None) -> CineStudy:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such cine or frame")
        source = self.spacing_from if spacing_from is None else check_spacing_from(spacing_from)
        key = (str(path.resolve()), path.stat().st_mtime_ns, source)
        if key in self._studies:
            self._studies.move_to_end(key)
            return self._studies[key]
        if self.expected_channels is None:
            study = read_cine(path, spacing_from=source)
        else:
            study = read_cine_for_inference(path, expected_channels=self.expected_channels, spacing_from=source)
        if self.max_studies:
            self._studies[key] = study
            while len(self._studies) > self.max_studies:
                self._studies.popitem(last=False)
        return study
