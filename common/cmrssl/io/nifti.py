"""NIfTI cine I/O: 4D cines ``[x, y, z, t]``, one 3D file per frame, long-axis cines.

On disk (nibabel / MONAI convention) the data array is ``[x=column, y=row,
z=slice(, t=frame)]`` and the affine maps voxel ``(i, j, k)`` to RAS mm. In
memory (:class:`~cmrssl.io.cine.CineStudy`) pixels are ``[T, Z, H, W]`` and
affines map to LPS mm; the conversion negates the first two world rows.

Slice order: NIfTI keeps the stored order (``k = 0`` first). Files written by
this package store the base first, and so does ACDC; nothing in a NIfTI header
says where the base is, so no reordering is attempted.

Two spacings in one header: the sform's column lengths and the zooms
(``pixdim[1..3]``) can disagree, and no single rule picks the true one. ACDC's
files carry an sform (code 2) of ``diag(-1, -1, 1)`` with the true spacing in
pixdim (1.5625, 1.5625, 10 mm); other writers copy the scanner's sform and leave
pixdim at 1 (taking pixdim there made a phantom's 149 ml ventricle 0.6 ml). The reader
(``spacing_from="auto"``) takes only what the header proves:

- the two agree (within 0.1 %): that spacing;
- only one is there on an axis (no sform, a zero sform column, a pixdim of 0,
  negative or NaN): that one;
- they disagree and every sform column is 1 mm long: the sform holds directions
  only (ACDC), the spacing is pixdim;
- they disagree and pixdim is 1 on every axis: pixdim was never set, the
  spacing is the sform's;
- otherwise the file is refused, naming both spacings: ``spacing_from="sform"``
  or ``"pixdim"`` (the tools' ``--spacing_from``, a datalist record's
  ``spacing_from``) settles it.

The affine's directions are kept and rescaled to the spacing taken. A zero slice
column carries no direction: the stack is taken perpendicular to the image
plane (rather than along the scanner's z, which shortened an oblique phantom
stack's spacing from 9.16 to 6.61 mm). A zero in-plane sform column falls back to the
qform, or is refused without one. The slice order stays the stored one.

Spacing that is not there: a header zoom (``pixdim[1..3]``) of 0, negative or
NaN is not a spacing. nibabel silently replaces a 0 by 1.0 when loading, so the
header is read a second time unfixed to tell a real 1 mm from that placeholder.
Such an axis takes its spacing from the sform (when ``sform_code`` > 0 and its
column is not zero); the qform or nibabel's fallback affine are built from the
very zooms in doubt and cannot stand in for them. With neither, the file is
refused, except along the slice axis of a single-slice image, where no spacing
is needed.

A label read with its image must lie on the image's grid (same shape, voxel
corners within 0.1 voxel: :func:`cmrssl.io.geometry.grid_mismatch`), or both
files are named in the refusal. An affine holding NaN/inf, a sheared pixel grid (see
:func:`cmrssl.io.geometry.in_plane_axes_problem`) or a slice axis in the image
plane is refused too.

Time: frames are written with ``pixdim[4]`` = frame interval (ms) and
``toffset`` = first trigger time, and read back as ``trigger_times_ms``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from cmrssl.flags import SPACING_SOURCES
from cmrssl.labels import ACDC_TO_CANONICAL, CANONICAL_LABELS, MNMS_TO_CANONICAL

from .atomic import atomic_file, atomic_folder
from .cine import CineStudy, swap_layout
from .errors import CineReadError, CineWriteError
from .geometry import LPS_TO_RAS, grid_mismatch, in_plane_axes_problem

__all__ = [
    "resolve_label_map",
    "map_labels",
    "read_nifti_cine",
    "read_nifti_frames",
    "read_long_axis_nifti",
    "write_cine_nifti",
    "write_frames_nifti",
    "write_long_axis_nifti",
    "frame_file_name",
    "nifti_voxel_spacing_mm",
    "SPACING_SOURCES",
    "check_spacing_from",
    "record_spacing_from",
    "check_label_grid",
    "segmentation_nifti",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

_NAMED_LABEL_MAPS = {"canonical": CANONICAL_LABELS, "acdc": ACDC_TO_CANONICAL, "mnms": MNMS_TO_CANONICAL}

_ACDC_FRAME = re.compile(r"^(?P<subject>patient\d+)_frame(?P<number>\d+)(?P<gt>_gt)?\.nii(\.gz)?$")
_OUR_FRAME = re.compile(r"^frame_(?P<number>\d+)(?P<gt>_gt)?\.nii(\.gz)?$")


def resolve_label_map(label_map: Union[str, Mapping[int, int], None]) -> Dict[int, int]:
    """``"canonical"`` / ``"acdc"`` / ``"mnms"`` / a dict ``{source value: canonical}`` -> dict."""
    if label_map is None:
        return dict(CANONICAL_LABELS)
    if isinstance(label_map, str):
        key = label_map.lower()
        if key not in _NAMED_LABEL_MAPS:
            raise ValueError(f"label_map must be one of {sorted(_NAMED_LABEL_MAPS)} or a dict, got {label_map!r}")
        return dict(_NAMED_LABEL_MAPS[key])
    return {int(k): int(v) for k, v in dict(label_map).items()}


def frame_file_name(frame: int, num_frames: int, *, labels: bool = False) -> str:
    """``frame_XX.nii.gz`` (``frame_XX_gt.nii.gz`` for labels), 0-based, zero-padded to >= 2 digits."""
    width = max(2, len(str(max(num_frames - 1, 0))))
    return f"frame_{frame:0{width}d}{'_gt' if labels else ''}.nii.gz"


# --------------------------------------------------------------------------- reading


def _load(path: Path) -> nib.Nifti1Image:
    try:
        exists = path.is_file()
    except OSError as err:  # e.g. a parent folder without search permission
        raise CineReadError(f"{path}: cannot be accessed ({err.strerror or err})") from err
    if not exists:
        raise FileNotFoundError(f"{path}: no such NIfTI file")
    try:
        img = nib.load(str(path))
        _ = img.shape
    except Exception as err:  # nibabel raises several types for damaged files
        raise CineReadError(f"{path}: not a readable NIfTI file ({err})") from err
    return img


def _array(img: nib.Nifti1Image, path: Path, *, integer: bool = False) -> np.ndarray:
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # truncated gzip streams fail here, not at load
        raise CineReadError(f"{path}: image data cannot be read ({err})") from err
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise CineReadError(f"{path}: {bad} voxels are NaN or infinite")
    if integer and np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise CineReadError(f"{path}: label image holds non-integer values")
    return data


def _stored_zooms(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """``pixdim[1..3]`` as stored in the file, before nibabel's fixes (0 -> 1, negative -> absolute).

    Only a single-file NIfTI (``.nii`` / ``.nii.gz``, header at offset 0) is re-read; for
    anything else, or a re-read that disagrees with nibabel on a valid zoom, nibabel's
    (fixed) zooms are returned.
    """
    fixed = np.asarray(img.header["pixdim"][1:4], dtype=np.float64)
    if not isinstance(img, nib.Nifti1Image) or not path.name.lower().endswith((".nii", ".nii.gz")):
        return fixed
    try:
        with ImageOpener(str(path)) as fh:
            stored = np.asarray(type(img.header).from_fileobj(fh, check=False)["pixdim"][1:4], dtype=np.float64)
    except Exception:  # it loaded once: a failure now is a race with a writer; keep nibabel's
        logger.debug("%s: header not re-read unfixed", path)
        return fixed
    valid = np.isfinite(stored) & (stored > 0)
    return stored if np.array_equal(stored[valid], fixed[valid]) else fixed


# A column or zoom this close to 1 mm is the value a writer leaves when it stores no spacing there.
_UNIT_TOLERANCE_MM = 1e-4


def check_spacing_from(spacing_from: str) -> str:
    """``spacing_from`` lower-cased, or ValueError naming the allowed values."""
    value = str(spacing_from).strip().lower()
    if value not in SPACING_SOURCES:
        raise ValueError(f"spacing_from must be one of {', '.join(SPACING_SOURCES)}; got {spacing_from!r}")
    return value


def record_spacing_from(value: object) -> Optional[str]:
    """A datalist record's ``spacing_from``: ``"sform"`` / ``"pixdim"``, or None where the record says
    nothing (absent or null, ``"auto"``) and the reader's own setting applies.

    Raises:
        ValueError: any other value (an empty string included), naming :data:`SPACING_SOURCES`.
    """
    if value is None:
        return None
    source = check_spacing_from(value)
    return None if source == "auto" else source


def _mm(values: np.ndarray) -> str:
    return " x ".join(f"{v:.4g}" for v in values)


def _voxel_spacing(
    path: Path, zooms: np.ndarray, norms: np.ndarray, sform_code: int, num_slices: int, spacing_from: str
) -> np.ndarray:
    """The voxel spacing ``(dx, dy, dz)`` mm from what the header proves (see the module docstring).

    ``zooms`` are the stored ``pixdim[1..3]``, ``norms`` the sform's column lengths (meaningful
    only when ``sform_code`` > 0).
    """
    needed = [True, True, num_slices > 1]  # one slice: no distance between slices to know
    pixdim_ok = np.isfinite(zooms) & (zooms > 0)
    sform_ok = (norms > 1e-6) if sform_code > 0 else np.zeros(3, dtype=bool)
    settle = ("settle it with spacing_from 'sform' or 'pixdim' (tools: --spacing_from; bundles: --spacing_from, "
              "or \"spacing_from\" in the datalist record)")
    if spacing_from in ("sform", "pixdim"):
        ok, values = (sform_ok, norms) if spacing_from == "sform" else (pixdim_ok, zooms)
        missing = [name for axis, name in enumerate("xyz") if needed[axis] and not ok[axis]]
        if missing:
            what = (f"sform_code {sform_code}, column lengths {_mm(norms)} mm" if spacing_from == "sform"
                    else f"pixdim {_mm(zooms)}")
            raise CineReadError(
                f"{path}: spacing_from '{spacing_from}' asked, but the header has no {spacing_from} spacing "
                f"along {', '.join(missing)} ({what})")
        return np.where(ok, values, np.where(pixdim_ok, zooms, np.where(sform_ok, norms, 1.0)))
    spacing = np.empty(3)
    for axis, name in enumerate("xyz"):
        if pixdim_ok[axis]:
            spacing[axis] = zooms[axis]
        elif sform_ok[axis]:
            spacing[axis] = norms[axis]  # pixdim 0/negative/NaN is no spacing; the sform holds one
        elif not needed[axis]:
            spacing[axis] = 1.0
        else:
            source = "its sform column is zero" if sform_code > 0 else "there is no sform (sform_code 0) to take it from"
            raise CineReadError(
                f"{path}: no valid voxel spacing along {name}: header pixdim[{axis + 1}] is {zooms[axis]:g} "
                f"(0, negative or NaN) and {source}"
            )
    both = pixdim_ok & sform_ok & np.asarray(needed)
    disagree = both & ~np.isclose(norms, zooms, rtol=1e-3, atol=1e-4)
    if not disagree.any():
        return spacing
    if np.all(np.abs(norms[sform_ok] - 1.0) < _UNIT_TOLERANCE_MM):
        # ACDC: sform code 2 of diag(-1, -1, 1): directions only, the spacing is in pixdim.
        logger.info("%s: sform columns are unit length (directions only); spacing from pixdim %s mm", path, _mm(zooms))
        return spacing
    if np.all(np.abs(zooms[pixdim_ok] - 1.0) < _UNIT_TOLERANCE_MM):
        # A writer that set the sform from the scanner but left pixdim at its default of 1.
        spacing = np.where(sform_ok, norms, spacing)
        logger.info("%s: pixdim left at 1; spacing from the sform columns %s mm", path, _mm(spacing))
        return spacing
    axes = ", ".join(name for axis, name in enumerate("xyz") if disagree[axis])
    raise CineReadError(
        f"{path}: the header holds two voxel spacings that disagree along {axes}: the sform (sform_code {sform_code}) "
        f"gives {_mm(norms)} mm, pixdim gives {_mm(zooms)} mm, and nothing in the header proves which is true; "
        f"{settle}"
    )


def _spatial_affine_lps(
    img: nib.Nifti1Image, path: Path, num_slices: int, spacing_from: str = "auto"
) -> Tuple[np.ndarray, bool]:
    """Voxel ``(i, j, k)`` -> LPS affine, with the spacing the header proves (see the module docstring).

    Args:
        img: the loaded image.
        path: its file, named in errors (and re-read for the unfixed zooms).
        num_slices: size along ``k``; a single slice needs no slice spacing.
        spacing_from: ``"auto"``, ``"sform"`` or ``"pixdim"`` (:data:`SPACING_SOURCES`).

    Returns:
        ``(affine, rescaled)``: rescaled is True when the affine's column norms were replaced.

    Raises:
        CineReadError: no valid spacing along an axis, two spacings the header cannot choose
            between, an affine holding NaN/inf, a zero in-plane sform column, a sheared pixel
            grid, a slice axis lying in the image plane.
    """
    spacing_from = check_spacing_from(spacing_from)
    ras = np.array(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(ras)):
        raise CineReadError(f"{path}: the affine holds NaN or infinite values ({np.round(ras, 4).tolist()})")
    sform_code = int(img.header["sform_code"])
    norms = np.linalg.norm(ras[:3, :3], axis=0)
    if sform_code > 0 and np.any(norms[:2] <= 1e-6):
        axis = "x" if norms[0] <= 1e-6 else "y"
        if int(img.header["qform_code"]) > 0:  # the qform still places the pixel grid
            logger.warning("%s: the sform's %s column is zero; using the qform", path, axis)
            ras = np.array(img.get_qform(), dtype=np.float64)
            norms = np.linalg.norm(ras[:3, :3], axis=0)
            sform_code = 0
        else:
            raise CineReadError(
                f"{path}: the sform's {axis} column is zero and there is no qform: the orientation of the pixel "
                "grid is not in the header"
            )
    zooms = _stored_zooms(img, path)
    spacing = _voxel_spacing(path, zooms, norms, sform_code, num_slices, spacing_from)
    rescaled = False
    if not np.allclose(norms, spacing, rtol=1e-3, atol=1e-4):
        directions = ras[:3, :3] / np.where(norms > 1e-9, norms, 1.0)
        if norms[2] <= 1e-9:
            # A zero slice column says nothing of the slice direction: the stack is taken
            # perpendicular to the image plane (a guess along z would shorten the spacing).
            normal = np.cross(directions[:, 0], directions[:, 1])
            directions[:, 2] = normal / max(float(np.linalg.norm(normal)), 1e-12)
            if num_slices > 1:
                logger.warning("%s: the affine's slice column is zero; slices taken perpendicular to the image "
                               "plane, %.4g mm apart (pixdim[3])", path, spacing[2])
        ras[:3, :3] = directions * spacing
        rescaled = True
        logger.info("%s: affine column norms %s disagree with the spacing taken %s", path, norms, spacing)
    problem = in_plane_axes_problem(ras[:3, 0], ras[:3, 1])
    if problem:
        raise CineReadError(f"{path}: the affine's x and y columns do not span a rectangular pixel grid: {problem}")
    if num_slices > 1:
        normal = np.cross(ras[:3, 0], ras[:3, 1])
        normal /= np.linalg.norm(normal)
        through_plane = abs(float(normal @ ras[:3, 2]))
        if through_plane < 1e-3 * max(float(np.linalg.norm(ras[:3, 2])), 1e-9) or through_plane < 1e-6:
            raise CineReadError(
                f"{path}: the affine's slice axis {np.round(ras[:3, 2], 4).tolist()} lies in the image plane "
                f"(slice spacing {through_plane:.3g} mm)"
            )
    return LPS_TO_RAS @ ras, rescaled


def _slice_affines(lps: np.ndarray, num_slices: int) -> Tuple[np.ndarray, float]:
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    normal = normal / np.linalg.norm(normal)
    if float(normal @ lps[:3, 2]) < 0:
        normal = -normal
    affines = np.repeat(lps[None], num_slices, axis=0)
    for z in range(num_slices):
        affines[z, :3, 2] = normal
        affines[z, :3, 3] = lps[:3, 3] + z * lps[:3, 2]
    spacing = abs(float(normal @ lps[:3, 2])) if num_slices > 1 else 0.0
    return affines, spacing


def nifti_voxel_spacing_mm(
    img: nib.Nifti1Image, path: PathLike, spacing_from: str = "auto"
) -> Tuple[float, float, float]:
    """``(dz, dy, dx)`` mm of a 3D/4D NIfTI as the readers here measure it (header only).

    ``dz`` is the distance between slice planes (0 for a single slice), ``dy``/``dx`` the
    row/column spacing, taken from what the header proves or from ``spacing_from``
    (``"auto"``, ``"sform"``, ``"pixdim"``; see the module docstring).

    Raises:
        CineReadError: as :func:`read_nifti_cine` for a header without a valid spacing, a
            sheared grid or a NaN/inf affine; a 2D image.
    """
    path = Path(path)
    if len(img.shape) < 3:
        raise CineReadError(f"{path}: a {len(img.shape)}D image {img.shape} has no slice axis")
    lps, _ = _spatial_affine_lps(img, path, int(img.shape[2]), spacing_from)
    _, dz = _slice_affines(lps, int(img.shape[2]))
    return float(dz), float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0]))


def _as_txyz(data: np.ndarray, path: Path) -> np.ndarray:
    """``[x, y, z(, t)]`` -> ``[T, Z, H, W]``."""
    if data.ndim == 5 and data.shape[3] == 1:  # some writers put time in the 5th dim
        data = data[:, :, :, 0, :]
    if data.ndim < 3:
        raise CineReadError(
            f"{path}: a {data.ndim}D image {data.shape} where a cine or stack [x, y, z(, t)] is expected"
        )
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise CineReadError(f"{path}: expected a 3D or 4D image [x, y, z(, t)], got shape {data.shape}")
    return np.ascontiguousarray(swap_layout(data))


def map_labels(data: np.ndarray, label_map: Mapping[int, int], path: PathLike) -> np.ndarray:
    """``data`` with every value ``v`` replaced by ``label_map[v]`` (int16).

    Raises:
        CineReadError: a value ``label_map`` does not cover, naming ``path``.
    """
    values = np.unique(data)
    unexpected = [v for v in values.tolist() if int(v) not in label_map]
    if unexpected:
        raise CineReadError(
            f"{path}: label values {sorted(int(v) for v in unexpected)} outside the expected set "
            f"{sorted(label_map)}"
        )
    lut_keys = np.array(sorted(label_map), dtype=np.int64)
    lut_vals = np.array([label_map[k] for k in lut_keys], dtype=np.int16)
    idx = np.searchsorted(lut_keys, data.astype(np.int64))
    return lut_vals[idx]


def _trigger_times(img: nib.Nifti1Image, num_frames: int) -> Optional[np.ndarray]:
    header = img.header
    if len(img.shape) < 4:
        return None
    _, time_unit = header.get_xyzt_units()
    dt = float(header.get_zooms()[3]) if len(header.get_zooms()) > 3 else 0.0
    offset = float(header["toffset"])
    # A NaN/inf interval or offset is no timing at all, as a 0 interval is: None, not NaN times.
    if not (np.isfinite(dt) and dt > 0 and np.isfinite(offset)) or time_unit not in ("msec", "sec", "usec"):
        return None
    scale = {"msec": 1.0, "sec": 1000.0, "usec": 0.001}[time_unit]
    return (offset + np.arange(num_frames) * dt) * scale


def check_label_grid(
    image: nib.Nifti1Image, image_path: PathLike, label: nib.Nifti1Image, label_path: PathLike,
    spacing_from: str = "auto",
) -> None:
    """Refuse a label that does not lie on its image's voxel grid, naming both files.

    Shapes must match and every voxel sit at the same world position (within
    :data:`cmrssl.io.geometry.GRID_TOLERANCE_VOXELS`), each header read as the readers
    read it. Only headers are used.

    Raises:
        CineReadError: the grids differ, or a header has no spacing the reader accepts.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    shape = tuple(int(n) for n in image.shape[:3])
    if tuple(int(n) for n in label.shape[:3]) != shape:
        raise CineReadError(f"{label_path}: label shape {tuple(label.shape)} differs from its image {image_path} "
                            f"{tuple(image.shape)}")
    num_slices = shape[2] if len(shape) > 2 else 1
    image_lps, _ = _spatial_affine_lps(image, image_path, num_slices, spacing_from)
    label_lps, _ = _spatial_affine_lps(label, label_path, num_slices, spacing_from)
    problem = grid_mismatch(image_lps, shape, label_lps, shape)
    if problem:
        raise CineReadError(
            f"{label_path}: the label is not on the grid of its image {image_path}: {problem}; "
            "a label must share its image's affine"
        )


def _read_labels(
    label_path: PathLike, shape: tuple, label_map, *, image_path: Path, image: nib.Nifti1Image, spacing_from: str
) -> Tuple[np.ndarray, list]:
    """Mapped labels ``[T, Z, H, W]`` int16 and the labelled frames.

    A frame filled with -1 is "not labelled" (how :func:`write_cine_nifti` stores a
    partially labelled cine); -1 anywhere else is a value outside the set. The label
    must lie on the image's grid (:func:`check_label_grid`): a label of the right
    shape but another place in the world would train on contours of other pixels.
    """
    label_path = Path(label_path)
    img = _load(label_path)
    labels = _as_txyz(_array(img, label_path, integer=True), label_path)
    if labels.shape != shape:
        raise CineReadError(f"{label_path}: label shape {labels.shape} [T,Z,H,W] differs from the image {shape}")
    if label_path != image_path:
        check_label_grid(image, image_path, img, label_path, spacing_from)
    unlabelled = [t for t in range(labels.shape[0]) if np.all(labels[t] == -1)]
    labelled = [t for t in range(labels.shape[0]) if t not in unlabelled]
    mapped = np.full(labels.shape, -1, dtype=np.int16)
    if labelled:
        mapped[labelled] = map_labels(labels[labelled], resolve_label_map(label_map), label_path)
    return mapped, labelled


def read_nifti_cine(
    path: PathLike,
    *,
    label_path: Optional[PathLike] = None,
    label_map: Union[str, Mapping[int, int], None] = "canonical",
    view: str = "sax",
    spacing_from: str = "auto",
) -> CineStudy:
    """Read a 4D NIfTI cine ``[x, y, z, t]`` (a 3D file is read as one frame).

    Args:
        path: ``.nii`` / ``.nii.gz``.
        label_path: optional label cine of the same shape, on the same grid.
        label_map: ``"canonical"``, ``"acdc"``, ``"mnms"`` or ``{source: canonical}``;
            values outside its keys raise.
        view: ``"sax"``, ``"2ch"`` or ``"4ch"``.
        spacing_from: ``"auto"`` (what the header proves), ``"sform"`` or ``"pixdim"``.

    Returns:
        :class:`CineStudy` with pixels ``[T, Z, H, W]`` float32.

    Raises:
        FileNotFoundError: missing file.
        CineReadError: unreadable file, NaN/inf voxels, a 2D image, labels outside the set,
            a label on another grid, a header whose spacing cannot be told (module docstring).
    """
    path = Path(path)
    img = _load(path)
    pixels = _as_txyz(_array(img, path), path).astype(np.float32)
    lps, _ = _spatial_affine_lps(img, path, pixels.shape[1], spacing_from)
    affines, spacing = _slice_affines(lps, pixels.shape[1])
    labels, labelled = (None, []) if label_path is None else _read_labels(
        label_path, pixels.shape, label_map, image_path=path, image=img, spacing_from=spacing_from)
    if labels is not None and not labelled:
        raise CineReadError(f"{label_path}: every frame is marked unlabelled (-1)")
    return CineStudy(
        pixels=pixels,
        slice_affines=affines,
        slice_spacing_mm=spacing,
        trigger_times_ms=_trigger_times(img, pixels.shape[0]),
        labels=labels,
        labelled_frames=labelled,
        source=str(path),
        view=view,
    )


def read_long_axis_nifti(
    path: PathLike, *, view: str = "4ch", label_path: Optional[PathLike] = None, spacing_from: str = "auto"
) -> CineStudy:
    """Read a single-slice long-axis cine ``[x, y, 1, t]`` (2Ch / 4Ch) as a CineStudy with Z = 1."""
    study = read_nifti_cine(path, label_path=label_path, view=view, spacing_from=spacing_from)
    if study.num_slices != 1:
        raise CineReadError(f"{path}: a long-axis cine must hold one slice, got {study.num_slices}")
    return study


def _discover_frames(folder: Path) -> Tuple[list, Dict[int, Path], Optional[str]]:
    """Frame image files and label files in a folder (ours or ACDC), keyed by 0-based frame."""
    images: Dict[int, Path] = {}
    labels: Dict[int, Path] = {}
    naming = None
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:  # permissions: say so rather than "no frame files"
        raise CineReadError(f"{folder}: folder cannot be listed ({err.strerror or err})") from err
    for f in entries:
        m = _OUR_FRAME.match(f.name)
        if m:
            frame, naming = int(m.group("number")), "ours"
        else:
            m = _ACDC_FRAME.match(f.name)
            if not m:
                continue
            frame, naming = int(m.group("number")) - 1, "acdc"  # ACDC frame numbers are 1-based
        (labels if m.group("gt") else images)[frame] = f
    return sorted(images.items()), labels, naming


def read_nifti_frames(
    frames: Union[PathLike, Sequence[PathLike]],
    *,
    label_paths: Optional[Mapping[int, PathLike]] = None,
    frame_indices: Optional[Sequence[int]] = None,
    label_map: Union[str, Mapping[int, int], None] = "auto",
    spacing_from: str = "auto",
) -> CineStudy:
    """Read one 3D NIfTI per frame into a cine.

    Args:
        frames: a folder holding ``frame_XX.nii.gz`` (0-based, written by
            :func:`write_frames_nifti`) or ACDC ``patientNNN_frameYY.nii.gz``
            (1-based YY), with optional ``_gt`` label files beside them; or a list
            of 3D files (then ``frame_indices`` gives their 0-based frame numbers,
            default ``0..N-1``).
        label_paths: for a list input, ``{position in the list: label file}``.
        frame_indices: 0-based frame numbers of a list input.
        label_map: ``"auto"`` (ACDC mapping for ACDC-named files, else canonical),
            or as in :func:`read_nifti_cine`.
        spacing_from: as in :func:`read_nifti_cine`.

    Returns:
        :class:`CineStudy` with ``source_frame_index`` = the frame numbers and
        labels on the frames that have a label file (-1 elsewhere).
    """
    naming = None
    if isinstance(frames, (str, Path)):
        folder = Path(frames)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of NIfTI frames")
        found, label_files, naming = _discover_frames(folder)
        if not found:
            raise CineReadError(f"{folder}: no frame_XX.nii.gz or patientNNN_frameYY.nii.gz files")
        frame_numbers = [k for k, _ in found]
        paths = [p for _, p in found]
        label_by_pos = {i: label_files[k] for i, k in enumerate(frame_numbers) if k in label_files}
        source = str(folder)
    else:
        paths = [Path(p) for p in frames]
        if not paths:
            raise CineReadError("read_nifti_frames: empty list of frame files")
        frame_numbers = list(frame_indices) if frame_indices is not None else list(range(len(paths)))
        if len(frame_numbers) != len(paths):
            raise ValueError(f"frame_indices has {len(frame_numbers)} entries for {len(paths)} files")
        label_by_pos = {int(k): Path(v) for k, v in (label_paths or {}).items()}
        source = str(paths[0].parent)
        if all(_ACDC_FRAME.match(p.name) for p in paths):
            naming = "acdc"
    if isinstance(label_map, str) and label_map == "auto":
        label_map = "acdc" if naming == "acdc" else "canonical"

    volumes, affine_ref, images = [], None, []
    for p in paths:
        img = _load(p)
        data = _array(img, p)
        if data.ndim != 3:
            raise CineReadError(f"{p}: a frame must be a 3D image [x, y, z], got shape {data.shape}")
        lps, _ = _spatial_affine_lps(img, p, data.shape[2], spacing_from)
        if affine_ref is None:
            affine_ref = lps
        elif volumes[0].shape != data.shape or not np.allclose(lps, affine_ref, atol=1e-3):
            raise CineReadError(f"{p}: shape or affine differs from {paths[0]}")
        volumes.append(data)
        images.append(img)
    pixels = np.stack([_as_txyz(v, p)[0] for v, p in zip(volumes, paths)]).astype(np.float32)
    affines, spacing = _slice_affines(affine_ref, pixels.shape[1])
    labels = None
    labelled = sorted(label_by_pos)
    if labelled:
        labels = np.full(pixels.shape, -1, dtype=np.int16)
        for pos in labelled:
            frame_labels, ok = _read_labels(label_by_pos[pos], pixels[pos : pos + 1].shape, label_map,
                                            image_path=paths[pos], image=images[pos], spacing_from=spacing_from)
            if not ok:
                raise CineReadError(f"{label_by_pos[pos]}: label frame holds only -1 (unlabelled)")
            labels[pos] = frame_labels[0]
    return CineStudy(
        pixels=pixels,
        slice_affines=affines,
        slice_spacing_mm=spacing,
        labels=labels,
        labelled_frames=labelled,
        source=source,
        source_frame_index=np.asarray(frame_numbers),
    )


# --------------------------------------------------------------------------- writing


def _ras_stack_affine(study: CineStudy) -> np.ndarray:
    return LPS_TO_RAS @ study.stack_affine


def _nifti_image(array_txyz: np.ndarray, study: CineStudy, *, four_d: bool) -> nib.Nifti1Image:
    data = swap_layout(array_txyz)  # [T,Z,H,W] -> [x, y, z, t]
    if not four_d:
        data = data[..., 0]
    affine = _ras_stack_affine(study)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    dz = float(study.slice_spacing_mm) or 1.0
    dy, dx = study.pixel_spacing_mm
    if four_d:
        tt = study.trigger_times_ms
        dt = float(np.median(np.diff(tt))) if tt is not None and len(tt) > 1 else 1.0
        img.header.set_zooms((dx, dy, dz, dt))
        img.header["toffset"] = float(tt[0]) if tt is not None and len(tt) else 0.0
        img.header.set_xyzt_units("mm", "msec")
    else:
        img.header.set_xyzt_units("mm")
    return img


def _label_array(study: CineStudy, what: str, frames: Optional[Sequence[int]] = None) -> np.ndarray:
    if what == "pixels":
        return study.pixels.astype(np.float32)
    if what != "labels":
        raise ValueError(f"what must be 'pixels' or 'labels', got {what!r}")
    if study.labels is None:
        raise CineWriteError(f"{study.source or 'cine'}: has no labels to write")
    labels = np.asarray(study.labels)
    if frames is not None:
        labels = labels[list(frames)]
    if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255):
        return labels.astype(np.uint8)
    return labels.astype(np.int16)


def write_cine_nifti(study: CineStudy, path: PathLike, *, what: str = "pixels", overwrite: bool = False) -> Path:
    """Write the cine as one 4D NIfTI ``[x, y, z, t]`` with the RAS stack affine.

    Args:
        study: the cine.
        path: output ``.nii.gz``.
        what: ``"pixels"`` (float32) or ``"labels"`` (uint8; int16 when some frames are
            unlabelled, stored as frames of -1 and read back as such).
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and not ``overwrite``.
        CineWriteError: labels requested from a study without labels.
    """
    array = _label_array(study, what)
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        nib.save(_nifti_image(array, study, four_d=True), str(tmp))
    return path


def write_long_axis_nifti(study: CineStudy, path: PathLike, *, what: str = "pixels", overwrite: bool = False) -> Path:
    """Write a single-slice (Z = 1) long-axis cine as ``[x, y, 1, t]``."""
    if study.num_slices != 1:
        raise CineWriteError(f"{study.source or 'cine'}: a long-axis cine has one slice, got {study.num_slices}")
    return write_cine_nifti(study, path, what=what, overwrite=overwrite)


def write_frames_nifti(study: CineStudy, folder: PathLike, *, overwrite: bool = False) -> Path:
    """Write every frame as a 3D NIfTI ``folder/frame_XX.nii.gz`` (0-based), and
    ``frame_XX_gt.nii.gz`` for each labelled frame. The folder appears whole or not at all.

    Raises:
        FileExistsError: ``folder`` exists and not ``overwrite``.
    """
    folder = Path(folder)
    pixels = study.pixels.astype(np.float32)
    labelled = sorted(int(f) for f in study.labelled_frames) if study.labels is not None else []
    # only labelled frames get a _gt file, so they fit uint8 even when others hold -1
    labels = _label_array(study, "labels", frames=labelled) if labelled else None
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        for t in range(study.num_frames):
            name = frame_file_name(t, study.num_frames)
            nib.save(_nifti_image(pixels[t : t + 1], study, four_d=False), str(tmp / name))
            if t in labelled:
                i = labelled.index(t)
                gt_name = frame_file_name(t, study.num_frames, labels=True)
                nib.save(_nifti_image(labels[i : i + 1], study, four_d=False), str(tmp / gt_name))
    return folder


# --------------------------------------------------------------------------- masks of an input


def _source_kind(source: Path) -> str:
    if source.is_dir():
        has_nifti = any(p.name.lower().endswith((".nii", ".nii.gz")) for p in source.iterdir())
        return "nifti_frames" if has_nifti else "dicom"
    return "nifti"


def segmentation_nifti(study: CineStudy, labels_tzhw: np.ndarray, source: Optional[PathLike] = None) -> nib.Nifti1Image:
    """The masks ``[T, Z, H, W]`` as a 4D ``Nifti1Image`` ``[x, y, z, t]`` in the input's geometry.

    For a NIfTI input (4D file or folder of 3D frames) the voxel grid is the
    file's own: slices are put back in the source order
    (``study.source_slice_index``) and the file's affine and orientation codes
    are kept, so the mask overlays the input in any viewer. For a DICOM folder
    the grid is the series' stack (slices base to apex) with its LPS geometry
    converted to RAS.
    """
    labels = np.asarray(labels_tzhw)
    if labels.shape != study.pixels.shape:
        raise ValueError(
            f"{study.source or 'cine'}: labels {labels.shape} differ from the study's pixels {study.pixels.shape}"
        )
    source = Path(source or study.source)
    kind = _source_kind(source) if source.exists() else "dicom"
    data_xyzt = np.zeros(labels.shape[::-1], dtype=np.uint8)  # [W, H, Z, T]
    order = np.asarray(study.source_slice_index) if kind != "dicom" else np.arange(study.num_slices)
    for z in range(study.num_slices):
        data_xyzt[:, :, int(order[z]), :] = swap_layout(labels[:, z])
    reference = None
    if kind == "nifti":
        reference = nib.load(str(source))
    elif kind == "nifti_frames":
        # Every frame shares one grid (the reader checks it); any image frame gives the geometry.
        frames = sorted(
            p for p in source.iterdir()
            if p.name.lower().endswith((".nii", ".nii.gz")) and "frame" in p.name and "_gt" not in p.name
        )
        reference = nib.load(str(frames[0])) if frames else None
    if reference is not None and tuple(reference.shape[:3]) == data_xyzt.shape[:3]:
        # a single 3D frame (what MONAI Label sends) gets a 3D mask, like its input
        data = data_xyzt[..., 0] if kind == "nifti" and len(reference.shape) == 3 else data_xyzt
        header = reference.header.copy()
        header.set_data_dtype(np.uint8)
        image = nib.Nifti1Image(data, reference.affine, header)
        image.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]) or 1)
        image.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]) or 1)
        return image
    affine = LPS_TO_RAS @ study.stack_affine
    image = nib.Nifti1Image(data_xyzt, affine)
    image.header.set_xyzt_units("mm", "msec")
    return image
