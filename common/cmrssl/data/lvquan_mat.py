"""Readers for the LV Full Quantification challenge files (LVQuan18 and LVQuan19).

LVQuan18 (STACOM 2018) ships one ``cardiac-dig.mat`` for 145 subjects x 20
frames (MATLAB arrays, last axis = image):

- ``images_LV`` ``[80, 80, 2900]`` (or ``[80, 80, 20, 145]``), ``endo_LV`` and
  ``epi_LV`` binary masks of the same shape (``epi`` includes the cavity: the
  myocardium is ``epi & ~endo``);
- ``areas`` ``[2, 2900]`` (cavity, myocardium), ``dims`` ``[3, 2900]``
  (IS-AL, I-A, IL-AS), ``rwt`` ``[6, 2900]`` (IS, I, IL, AL, A, AS),
  ``lv_phase`` ``[1, 2900]`` (1 systole, 0 diastole);
- ``pix_spa`` (the challenge page calls it pixel spacing; some copies name it
  ``pix_spacing``) ``[145]`` mm per pixel of the original image and
  ``ratio_resize_inverse`` (per subject ``[145]`` or per image ``[2900]``),
  the original-to-80x80 size ratio.

The indices are normalised by the 80x80 image: areas are fractions of the
image area, dims and rwt fractions of the image side. Converted to mm as the
challenge defines (and as participants' evaluation code does)::

    mm_per_80px_pixel = pix_spa * ratio_resize_inverse
    length_mm = value * 80 * mm_per_80px_pixel
    area_mm2  = value * 80 * 80 * mm_per_80px_pixel ** 2

LVQuan19 (STACOM 2019) ships ``patientN.mat`` per subject: ``image``, ``endo``,
``epi`` ``[H, W, 20]``, ``areas`` ``[2, 20]``, ``dims`` ``[3, 20]``, ``rwt``
``[6, 20]``, ``lv_phase`` ``[20]`` and ``pix_spacing`` (scalar, mm).

The unit of the stored indices is checked, not assumed: the stored cavity
areas are compared with the endocardial mask's pixel counts as image
fractions, pixels and mm^2 (``units="auto"``), and the matching unit is
converted (``fraction``: x side x spacing; ``pixels``: x spacing; ``mm``: as
is). A file whose areas match none of them within 15 % is refused.

Masks become canonical labels (1 LV cavity, 2 LV myocardium; no RV is
delineated). The challenge images are oriented with the RV on the left
(STACOM18 ``metrics.py``: "assumes a RV left orientation"), so
:data:`LVQUAN_SEPTUM_ANGLE_DEG` is the fallback septum direction to give
:func:`cmrssl.metrics.lv_indices.lv_indices`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Union

import numpy as np
from scipy.io import loadmat

__all__ = ["LVQuanData", "LVQUAN_SEPTUM_ANGLE_DEG", "read_lvquan18", "read_lvquan19_patient", "read_lvquan19"]

PathLike = Union[str, Path]
#: Septum direction of the challenge images (RV on the left): screen angle towards -column.
LVQUAN_SEPTUM_ANGLE_DEG = 180.0
LVQUAN18_FRAMES = 20
_UNITS = ("fraction", "pixels", "mm")


@dataclass
class LVQuanData:
    """Images, canonical masks and reference indices of LVQuan subjects.

    Attributes:
        images: float32 ``[S, T, H, W]``.
        labels: uint8 ``[S, T, H, W]``, 0 background, 1 LV cavity, 2 LV myocardium.
        areas_mm2: ``[S, T, 2]`` cavity, myocardium.
        dims_mm: ``[S, T, 3]`` IS-AL, I-A, IL-AS cavity dimensions.
        rwt_mm: ``[S, T, 6]`` IS, I, IL, AL, A, AS wall thicknesses.
        phase: int8 ``[S, T]``, 1 systole, 0 diastole.
        pixel_spacing_mm: ``[S]`` mm per pixel of ``images`` (isotropic).
        subjects: names (``subject_000`` ... for LVQuan18, file stems for LVQuan19).
        source_units: the unit the file stored its indices in (``fraction``/``pixels``/``mm``).
        whole_cycle: the frames are one whole cycle in order (False for ACDC's ED/ES pair).
    """

    images: np.ndarray
    labels: np.ndarray
    areas_mm2: np.ndarray
    dims_mm: np.ndarray
    rwt_mm: np.ndarray
    phase: np.ndarray
    pixel_spacing_mm: np.ndarray
    subjects: List[str] = field(default_factory=list)
    source_units: str = ""
    whole_cycle: bool = True

    @property
    def indices(self) -> np.ndarray:
        """``[S, T, 11]`` in :data:`cmrssl.metrics.lv_indices.INDEX_NAMES` order."""
        return np.concatenate([self.areas_mm2, self.dims_mm, self.rwt_mm], axis=-1)


def _load(path: PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such LVQuan .mat file")
    try:
        return loadmat(str(path))
    except Exception as err:  # scipy raises several types for corrupt/v7.3 files
        raise ValueError(f"{path}: not a readable MATLAB (v5) .mat file: {err}") from err


def _field(mat: dict, path: PathLike, *names: str) -> np.ndarray:
    for name in names:
        if name in mat:
            return np.asarray(mat[name])
    found = sorted(k for k in mat if not k.startswith("__"))
    raise ValueError(f"{path}: missing field {' or '.join(repr(n) for n in names)} (fields: {found})")


def _images_last(array: np.ndarray, path, name) -> np.ndarray:
    """MATLAB ``[H, W, N]`` or ``[H, W, T, S]`` -> ``[N, H, W]`` (images in MATLAB column order)."""
    if array.ndim == 4:
        array = array.reshape(array.shape[0], array.shape[1], -1, order="F")
    if array.ndim != 3:
        raise ValueError(f"{path}: {name} must be [H, W, N] or [H, W, T, S], got {array.shape}")
    return np.moveaxis(array, -1, 0)


def _rows(array: np.ndarray, count: int, num: int, path, name) -> np.ndarray:
    """``[count, N]`` (or ``[N, count]``) -> ``[N, count]`` float64."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1 and count == 1:
        array = array[None]
    if array.shape == (num, count) and count != num:
        array = array.T
    if array.shape != (count, num):
        raise ValueError(f"{path}: {name} must be [{count}, {num}], got {np.asarray(array).shape}")
    return array.T


def _infer_units(stored_cavity, cavity_pixels, spacing, image_pixels, path, units: str) -> str:
    if units != "auto":
        if units not in _UNITS:
            raise ValueError(f"units must be 'auto' or one of {_UNITS}, got {units!r}")
        return units
    keep = cavity_pixels > 0
    if not keep.any():
        raise ValueError(f"{path}: every endocardial mask is empty; cannot check the unit of the areas")
    candidates = {
        "fraction": cavity_pixels / image_pixels,
        "pixels": cavity_pixels,
        "mm": cavity_pixels * spacing**2,
    }
    errors = {
        unit: float(np.median(np.abs(stored_cavity[keep] - expected[keep]) / expected[keep]))
        for unit, expected in candidates.items()
    }
    best = min(errors, key=errors.get)
    if errors[best] > 0.15:
        raise ValueError(
            f"{path}: stored cavity areas match the endocardial masks in no unit (median relative error "
            + ", ".join(f"{u} {e:.0%}" for u, e in errors.items()) + "); pass units explicitly"
        )
    return best


def _to_mm(areas, dims, rwt, units: str, spacing: np.ndarray, side_px: int):
    """Convert per-image indices ``[N, k]`` with per-image spacing ``[N]`` (mm per pixel)."""
    if units == "fraction":
        length = side_px * spacing
    elif units == "pixels":
        length = spacing
    else:
        length = np.ones_like(spacing)
    return areas * (length**2)[:, None], dims * length[:, None], rwt * length[:, None]


def _labels(endo: np.ndarray, epi: np.ndarray) -> np.ndarray:
    endo, epi = endo > 0, epi > 0
    labels = np.zeros(endo.shape, np.uint8)
    labels[epi & ~endo] = 2
    labels[endo] = 1
    return labels


def read_lvquan18(path: PathLike, *, units: str = "auto") -> LVQuanData:
    """Read LVQuan18 ``cardiac-dig.mat`` (145 subjects x 20 frames; any multiple of 20 accepted).

    Raises:
        FileNotFoundError: no file. ValueError: missing fields, inconsistent shapes, or areas
        matching the masks in no unit.
    """
    mat = _load(path)
    images = _images_last(_field(mat, path, "images_LV"), path, "images_LV").astype(np.float32)
    endo = _images_last(_field(mat, path, "endo_LV"), path, "endo_LV")
    epi = _images_last(_field(mat, path, "epi_LV"), path, "epi_LV")
    num, h, w = images.shape
    if endo.shape != images.shape or epi.shape != images.shape:
        raise ValueError(f"{path}: endo_LV {endo.shape} / epi_LV {epi.shape} differ from images_LV {images.shape}")
    if num % LVQUAN18_FRAMES or h != w:
        raise ValueError(f"{path}: expected square images and a multiple of {LVQUAN18_FRAMES} frames, got {images.shape}")
    num_subjects = num // LVQUAN18_FRAMES
    areas = _rows(_field(mat, path, "areas"), 2, num, path, "areas")
    dims = _rows(_field(mat, path, "dims"), 3, num, path, "dims")
    rwt = _rows(_field(mat, path, "rwt"), 6, num, path, "rwt")
    phase = _rows(_field(mat, path, "lv_phase"), 1, num, path, "lv_phase")[:, 0]
    pix = np.asarray(_field(mat, path, "pix_spa", "pix_spacing"), np.float64).ravel(order="F")
    ratio = np.asarray(_field(mat, path, "ratio_resize_inverse"), np.float64).ravel(order="F")
    per_image = []
    for name, values in (("pix_spa", pix), ("ratio_resize_inverse", ratio)):
        if values.size == num_subjects:
            values = np.repeat(values, LVQUAN18_FRAMES)
        elif values.size != num:
            raise ValueError(f"{path}: {name} has {values.size} values; expected {num_subjects} or {num}")
        per_image.append(values)
    spacing = per_image[0] * per_image[1]  # mm per pixel of the 80x80 image
    labels = _labels(endo, epi)
    unit = _infer_units(areas[:, 0], (labels == 1).sum(axis=(1, 2)).astype(np.float64), spacing, h * w, path, units)
    areas, dims, rwt = _to_mm(areas, dims, rwt, unit, spacing, h)

    def per_subject(a):
        return a.reshape(num_subjects, LVQUAN18_FRAMES, *a.shape[1:])

    return LVQuanData(
        images=per_subject(images), labels=per_subject(labels), areas_mm2=per_subject(areas),
        dims_mm=per_subject(dims), rwt_mm=per_subject(rwt), phase=per_subject(phase).astype(np.int8),
        pixel_spacing_mm=spacing.reshape(num_subjects, LVQUAN18_FRAMES)[:, 0],
        subjects=[f"subject_{s:03d}" for s in range(num_subjects)], source_units=unit,
    )


def read_lvquan19_patient(path: PathLike, *, units: str = "auto") -> LVQuanData:
    """Read one LVQuan19 ``patientN.mat`` (one subject, ``T`` frames) as an ``S = 1`` :class:`LVQuanData`."""
    mat = _load(path)
    images = _images_last(_field(mat, path, "image"), path, "image").astype(np.float32)
    endo = _images_last(_field(mat, path, "endo"), path, "endo")
    epi = _images_last(_field(mat, path, "epi"), path, "epi")
    num, h, w = images.shape
    if endo.shape != images.shape or epi.shape != images.shape:
        raise ValueError(f"{path}: endo {endo.shape} / epi {epi.shape} differ from image {images.shape}")
    areas = _rows(_field(mat, path, "areas"), 2, num, path, "areas")
    dims = _rows(_field(mat, path, "dims"), 3, num, path, "dims")
    rwt = _rows(_field(mat, path, "rwt"), 6, num, path, "rwt")
    phase = _rows(_field(mat, path, "lv_phase"), 1, num, path, "lv_phase")[:, 0]
    spacing_value = np.asarray(_field(mat, path, "pix_spacing", "pix_spa"), np.float64).ravel()
    if spacing_value.size != 1 or not spacing_value[0] > 0:
        raise ValueError(f"{path}: pix_spacing must be one positive number (mm), got {spacing_value.tolist()}")
    spacing = np.full(num, spacing_value[0])
    labels = _labels(endo, epi)
    unit = _infer_units(areas[:, 0], (labels == 1).sum(axis=(1, 2)).astype(np.float64), spacing, h * w, path, units)
    if unit == "fraction" and h != w:
        raise ValueError(f"{path}: image-fraction indices need square images, got {h}x{w}")
    areas, dims, rwt = _to_mm(areas, dims, rwt, unit, spacing, h)
    return LVQuanData(
        images=images[None], labels=labels[None], areas_mm2=areas[None], dims_mm=dims[None], rwt_mm=rwt[None],
        phase=phase[None].astype(np.int8), pixel_spacing_mm=spacing[:1], subjects=[Path(path).stem],
        source_units=unit,
    )


def read_lvquan19(folder: PathLike, *, units: str = "auto", pattern: str = "patient*.mat") -> LVQuanData:
    """All ``patientN.mat`` of a folder (sorted by N), stacked; they must share image size and frames."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such LVQuan19 folder")

    def number(p: Path):
        digits = "".join(ch for ch in p.stem if ch.isdigit())
        return (int(digits) if digits else -1, p.name)

    files = sorted(folder.glob(pattern), key=number)
    if not files:
        raise FileNotFoundError(f"{folder}: no {pattern} files")
    parts = [read_lvquan19_patient(p, units=units) for p in files]
    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: patients differ in frames/image size {sorted(shapes)}; read them one by one")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    units_seen = sorted({p.source_units for p in parts})
    return LVQuanData(
        images=cat("images"), labels=cat("labels"), areas_mm2=cat("areas_mm2"), dims_mm=cat("dims_mm"),
        rwt_mm=cat("rwt_mm"), phase=cat("phase"), pixel_spacing_mm=cat("pixel_spacing_mm"),
        subjects=[s for p in parts for s in p.subjects], source_units=",".join(units_seen),
    )
