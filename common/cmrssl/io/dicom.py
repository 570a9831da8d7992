"""DICOM cine I/O: a series of single-frame MR files, one per slice and phase.

Reading (:func:`read_dicom_cine`):

- Files are gathered from a folder (recursively) or a list of files/folders.
  The Kaggle Data Science Bowl 2016 layout keeps one slice per ``sax_N``
  folder, each its own series: a list of such folders is one study.
  Truncated or non-DICOM files are skipped with a logged warning naming the
  file. A folder that cannot be listed or a file that cannot be opened
  (permissions, I/O error) is an error naming it: skipping it could silently
  drop a slice or a phase.
- Files are grouped by SeriesInstanceUID (not FrameOfReferenceUID: on real
  Sunnybrook data every file has its own frame of reference, 240 UIDs for the
  240 files of SCD0000101's series). Several series inside one input folder is
  an error naming them; ``series=`` picks one. The FrameOfReferenceUIDs of the
  files read are carried into the study (``CineStudy.frame_of_reference_uids``),
  so that views combined in one world (the anatomical-position labels) can be
  checked to share one; they are never logged or written.
- Slices are the distinct ImagePositionPatient projections on the slice normal
  (row cosine x column cosine). They are ordered base to apex with a heuristic:
  the LV long axis points to the patient's left, anterior and inferior (+x, -y,
  -z in LPS), so the normal is flipped to have a positive projection on that
  direction and slices sorted along it (``slice_order="source"`` keeps the
  acquisition order instead). Slice spacing is measured from the positions,
  never from SliceLocation (which scanners fill inconsistently).
- Phases are ordered by TriggerTime within each slice (InstanceNumber when
  TriggerTime is missing). Each slice is its own breath-hold, so trigger times
  differ slightly between slices: frames are matched by rank within the slice
  and ``trigger_times_ms`` is the median across slices. When a slice's files
  carry neither, they are ordered by the numbers in their names (natural
  order: ``2`` before ``10``), provided the names differ only in those
  numbers; otherwise nothing orders the cycle and the read is refused.
- Missing geometry tags, inconsistent orientation, pixel spacing or matrix
  size, irregular slice spacing (gaps) and unequal phase counts per slice are
  errors naming the files and values involved. So are, per file, values that
  would give silently wrong pixels or geometry: NaN/inf or non-numeric
  geometry, TriggerTime, InstanceNumber, RescaleSlope or RescaleIntercept; a
  PixelSpacing that is not positive; an ImageOrientationPatient whose cosines
  are not unit length or not orthogonal (see
  :func:`cmrssl.io.geometry.in_plane_axes_problem`); a RescaleSlope of 0.

Writing (:func:`write_dicom_series`) produces anonymous MR Image Storage files
into a temporary folder renamed into place. Patient names, IDs and dates are
never read into the study nor written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .atomic import atomic_folder
from .cine import CineStudy
from .errors import CineReadError, CineWriteError
from .geometry import in_plane_axes_problem, orient_normal_base_to_apex, slice_affine_from_dicom

__all__ = ["read_dicom_cine", "read_long_axis_dicom", "write_dicom_series", "MR_IMAGE_STORAGE"]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

# Two files belong to the same slice when their positions along the normal
# differ by less than this (mm): far below any real slice spacing, far above
# the rounding of DS strings.
_SAME_SLICE_MM = 0.1
# Direction cosines may differ by rounding (DS strings) and tiny table moves; 5e-3
# is about 0.3 degrees, far below a deliberately re-planned slice.
_ORIENTATION_TOLERANCE = 5e-3
_SPACING_RTOL = 1e-3


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's validation chatter (e.g. Sunnybrook's non-conformant UIDs)
    for the duration of a read only; pydicom both warns and logs these."""
    pd_logger = logging.getLogger("pydicom")
    level = pd_logger.level
    pd_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            warnings.filterwarnings("ignore", message=r".*(UID|uid).*")
            yield
    finally:
        pd_logger.setLevel(level)


@dataclass
class _Frame:
    path: Path
    input_index: int
    series_uid: str
    series_label: str
    study_uid: str
    frame_of_reference_uid: str
    orientation: np.ndarray
    position: np.ndarray
    pixel_spacing: np.ndarray
    shape: tuple
    trigger_time: Optional[float]
    instance_number: Optional[int]
    rescale_slope: Optional[float]
    rescale_intercept: Optional[float]
    dataset: Dataset


def _list_folder(folder: Path) -> List[Path]:
    """Files under ``folder`` (recursively; names starting with "." left out), sorted.

    Raises:
        CineReadError: ``folder`` or a folder below it cannot be listed (permissions).
            ``Path.rglob`` would skip such a folder without a word, losing its slices.
    """

    def refuse(err: OSError) -> None:
        where = err.filename or folder
        raise CineReadError(f"{where}: folder cannot be listed ({err.strerror or err})") from err

    found: List[Path] = []
    for dirpath, _, names in os.walk(folder, onerror=refuse):
        found.extend(Path(dirpath) / name for name in names if not name.startswith("."))
    return sorted(f for f in found if f.is_file())


def _gather_files(path_or_paths: Union[PathLike, Sequence[PathLike]]) -> List[tuple]:
    inputs = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not inputs:
        raise CineReadError("read_dicom_cine: no input paths given")
    # Each file is tagged with the input it came from: a folder given, or for a
    # file given directly its parent folder, so that files listed one by one
    # from a single folder still count as one input for mixed-series detection.
    files = []
    groups: Dict[str, int] = {}
    for item in inputs:
        p = Path(item)
        try:
            is_dir, is_file = p.is_dir(), p.is_file()
        except OSError as err:  # e.g. a parent folder without search permission
            raise CineReadError(f"{p}: cannot be accessed ({err.strerror or err})") from err
        if is_dir:
            found = _list_folder(p)
            if not found:
                raise CineReadError(f"{p}: folder holds no files")
            index = groups.setdefault(str(p.resolve()), len(groups))
            files.extend((f, index) for f in found)
        elif is_file:
            files.append((p, groups.setdefault(str(p.resolve().parent), len(groups))))
        else:
            raise FileNotFoundError(f"{p}: no such DICOM file or folder")
    return files


def _required(ds: Dataset, path: Path, keyword: str, count: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise CineReadError(f"{path}: missing {keyword}, needed for the slice geometry")
    try:
        arr = np.asarray([float(v) for v in (value if count > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CineReadError(f"{path}: {keyword} is not numeric ({value!r})") from err
    if arr.size != count:
        raise CineReadError(f"{path}: {keyword} must hold {count} numbers, got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise CineReadError(f"{path}: {keyword} holds NaN or infinite values ({arr.tolist()})")
    return arr


def _optional_number(ds: Dataset, path: Path, keyword: str) -> Optional[float]:
    """The single number in ``keyword``, None when the tag is absent or empty.

    Raises:
        CineReadError: a value that is present but not a finite number (e.g. "abc", "nan",
            "inf"). Treating it as absent would silently drop a rescale or an ordering key.
    """
    try:
        value = ds.get(keyword)
    except Exception as err:  # pydicom may refuse to parse a malformed DS/IS value
        raise CineReadError(f"{path}: {keyword} cannot be parsed ({err})") from err
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise CineReadError(f"{path}: {keyword} is not a number ({str(value)!r})") from err
    if not np.isfinite(number):
        raise CineReadError(f"{path}: {keyword} is {number} (NaN or infinite)")
    return number


def _skip(path: Path, reason: str, skipped: List[str]) -> None:
    logger.warning("skipping %s: %s", path, reason)
    skipped.append(f"{path.name}: {reason}")


def _read_frame(path: Path, input_index: int, skipped: List[str]) -> Optional[_Frame]:
    """Header and pixels of one file, or None (logged and appended to ``skipped``)
    when it is not a usable image."""
    try:
        ds = pydicom.dcmread(str(path))
    except OSError as err:
        # Permissions or an I/O error: most likely one of the series' images, and
        # skipping it would silently drop a phase or a slice.
        raise CineReadError(f"{path}: file cannot be read ({err.strerror or err})") from err
    except Exception as err:  # InvalidDicomError, EOFError, struct errors on truncation...
        _skip(path, f"not a readable DICOM file ({type(err).__name__})", skipped)
        return None
    if "PixelData" not in ds:
        _skip(path, "DICOM file without pixel data", skipped)
        return None
    try:
        pixels = ds.pixel_array
    except Exception as err:
        _skip(path, f"pixel data cannot be decoded, truncated or unsupported compression? ({err})", skipped)
        return None
    if pixels.ndim != 2:
        raise CineReadError(f"{path}: expected a single-frame 2D image, got pixel array shape {pixels.shape}")
    orientation = _required(ds, path, "ImageOrientationPatient", 6)
    problem = in_plane_axes_problem(orientation[:3], orientation[3:], unit=True)
    if problem:
        raise CineReadError(f"{path}: degenerate ImageOrientationPatient {orientation.tolist()}: {problem}")
    position = _required(ds, path, "ImagePositionPatient", 3)
    spacing = _required(ds, path, "PixelSpacing", 2)
    if np.any(spacing <= 0):
        raise CineReadError(
            f"{path}: PixelSpacing must be positive (row, column spacing in mm), got {spacing.tolist()}"
        )
    slope = _optional_number(ds, path, "RescaleSlope")
    if slope == 0.0:
        raise CineReadError(f"{path}: RescaleSlope is 0 (every pixel would become the intercept)")
    intercept = _optional_number(ds, path, "RescaleIntercept")
    trigger_time = _optional_number(ds, path, "TriggerTime")
    instance = _optional_number(ds, path, "InstanceNumber")
    if instance is not None and instance != round(instance):
        raise CineReadError(f"{path}: InstanceNumber is not an integer ({instance})")
    series_number = ds.get("SeriesNumber")
    description = str(ds.get("SeriesDescription", "") or "")
    label = f"SeriesNumber {series_number} '{description}'"
    ds._cmrssl_pixels = pixels  # decoded once, scaled later
    return _Frame(
        path=path,
        input_index=input_index,
        series_uid=str(ds.get("SeriesInstanceUID", "") or f"<no SeriesInstanceUID in {path.parent}>"),
        series_label=label,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "").strip(),
        orientation=orientation,
        position=position,
        pixel_spacing=spacing,
        shape=tuple(pixels.shape),
        trigger_time=trigger_time,
        instance_number=None if instance is None else int(instance),
        rescale_slope=slope,
        rescale_intercept=intercept,
        dataset=ds,
    )


def _select_series(frames: List[_Frame], series, source: str) -> List[_Frame]:
    by_series: Dict[str, List[_Frame]] = defaultdict(list)
    for f in frames:
        by_series[f.series_uid].append(f)

    def describe(uid: str) -> str:
        fs = by_series[uid]
        return f"{fs[0].series_label} (SeriesInstanceUID {uid}): {len(fs)} files"

    if series is not None:
        chosen = [
            uid
            for uid, fs in by_series.items()
            if str(series) in (uid, str(fs[0].dataset.get("SeriesNumber", "")), str(fs[0].dataset.get("SeriesDescription", "")))
        ]
        if not chosen:
            listing = "; ".join(describe(u) for u in by_series)
            raise CineReadError(f"{source}: no series matches series={series!r}; found {listing}")
        return [f for uid in chosen for f in by_series[uid]]
    if len(by_series) > 1:
        # Several series are fine when each input folder holds one (Kaggle DSB sax_N folders);
        # several series inside one input are two acquisitions mixed together.
        per_input: Dict[int, set] = defaultdict(set)
        for f in frames:
            per_input[f.input_index].add(f.series_uid)
        mixed = [i for i, uids in per_input.items() if len(uids) > 1]
        if mixed or len(per_input) == 1:
            uids = sorted(per_input[mixed[0]] if mixed else by_series)
            listing = "; ".join(describe(u) for u in uids)
            raise CineReadError(
                f"{source}: {len(uids)} series mixed in one folder: {listing}. Pass series=<SeriesInstanceUID, "
                f"SeriesNumber or SeriesDescription> to pick one"
            )
        studies = {f.study_uid for f in frames}
        if len(studies) > 1:
            raise CineReadError(f"{source}: the inputs belong to {len(studies)} different studies (StudyInstanceUID)")
    return frames


def _check_consistent(frames: List[_Frame], source: str) -> None:
    ref = frames[0]
    for f in frames[1:]:
        if np.max(np.abs(f.orientation - ref.orientation)) > _ORIENTATION_TOLERANCE:
            raise CineReadError(
                f"{source}: inconsistent ImageOrientationPatient: {f.path} has {np.round(f.orientation, 4).tolist()}, "
                f"{ref.path} has {np.round(ref.orientation, 4).tolist()}"
            )
        if not np.allclose(f.pixel_spacing, ref.pixel_spacing, rtol=_SPACING_RTOL, atol=1e-6):
            raise CineReadError(
                f"{source}: non-uniform PixelSpacing: {f.path} has {f.pixel_spacing.tolist()} mm, "
                f"{ref.path} has {ref.pixel_spacing.tolist()} mm"
            )
        if f.shape != ref.shape:
            raise CineReadError(
                f"{source}: inconsistent image size: {f.path} is {f.shape}, {ref.path} is {ref.shape} (rows, columns)"
            )


_DIGITS = re.compile(r"(\d+)")


def _natural_key(path: Path) -> tuple:
    """``str(path)`` split into text and numbers: ``.../IM_2.dcm`` sorts before ``.../IM_10.dcm``.

    Text parts sit at even positions and numbers at odd ones, so two keys never
    compare a number with a text."""
    parts = _DIGITS.split(str(path))
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def _order_phases(s: List[_Frame], source: str, slice_mm: float) -> Tuple[List[_Frame], str]:
    """The files of one slice in cycle order, and what gave it: ``"trigger"``, ``"instance"`` or ``"names"``.

    TriggerTime when every file has one, else InstanceNumber when every file has one,
    else the numbers in the file names (natural order), which is only meaningful when
    the names differ in nothing else (``1.dcm, 2.dcm, ... 10.dcm``; ``IM_0001...``):
    sorting them as text would put ``10`` before ``2`` and scramble the cycle.

    Raises:
        CineReadError: neither tag and names that do not order the files.
    """
    if all(f.trigger_time is not None for f in s):
        return sorted(s, key=lambda f: (f.trigger_time, f.instance_number or 0, _natural_key(f.path))), "trigger"
    if all(f.instance_number is not None for f in s):
        return sorted(s, key=lambda f: (f.instance_number, _natural_key(f.path))), "instance"
    keys = [_natural_key(f.path) for f in s]
    skeletons = {k[0::2] for k in keys}
    if len(s) > 1 and (len(skeletons) > 1 or len(set(keys)) < len(keys)):
        examples = ", ".join(f.path.name for f in s[:3])
        raise CineReadError(
            f"{source}: cannot order the {len(s)} phases of the slice at {slice_mm:.1f} mm: its files carry neither "
            f"TriggerTime nor InstanceNumber, and their names ({examples}, ...) are not numbered alike, so nothing "
            f"gives the order of the cardiac cycle"
        )
    return [f for _, f in sorted(zip(keys, s), key=lambda kf: kf[0])], "names"


def _scaled_pixels(f: _Frame) -> np.ndarray:
    arr = np.asarray(f.dataset._cmrssl_pixels, dtype=np.float32)
    if f.rescale_slope is not None and f.rescale_slope != 1.0:
        arr = arr * np.float32(f.rescale_slope)
    if f.rescale_intercept:
        arr = arr + np.float32(f.rescale_intercept)
    return arr


def read_dicom_cine(
    path_or_paths: Union[PathLike, Sequence[PathLike]],
    *,
    series: Union[str, int, None] = None,
    slice_order: str = "base_to_apex",
    allow_irregular_spacing: bool = False,
    view: str = "sax",
) -> CineStudy:
    """Read a cine from single-frame DICOM files (one file per slice and phase).

    Args:
        path_or_paths: a folder (searched recursively), a file, or a list of both.
        series: pick one series by SeriesInstanceUID, SeriesNumber or SeriesDescription.
        slice_order: ``"base_to_apex"`` (heuristic, see module docstring) or
            ``"source"`` (input order, then InstanceNumber).
        allow_irregular_spacing: warn instead of raising when slice gaps differ.
        view: ``"sax"``, ``"2ch"`` or ``"4ch"`` recorded on the study.

    Returns:
        :class:`CineStudy`: pixels ``[T, Z, H, W]`` float32 (rescale slope and
        intercept applied), per-slice LPS affines, slice spacing from positions
        (0 for one slice), ``trigger_times_ms`` = median over slices per frame,
        ``frame_of_reference_uids`` of the files (``""`` for files without one).

    Raises:
        FileNotFoundError: a path does not exist.
        CineReadError: no usable image, mixed series, missing geometry tags,
            inconsistent orientation / pixel spacing / size, gaps, unequal phase counts.
    """
    if slice_order not in ("base_to_apex", "source"):
        raise ValueError(f"slice_order must be 'base_to_apex' or 'source', got {slice_order!r}")
    source = str(path_or_paths) if isinstance(path_or_paths, (str, Path)) else str(Path(path_or_paths[0]).parent)
    files = _gather_files(path_or_paths)
    skipped: List[str] = []
    with _quiet_pydicom():
        frames = [fr for fr in (_read_frame(p, i, skipped) for p, i in files) if fr is not None]
    if not frames:
        raise CineReadError(
            f"{source}: no readable DICOM image among {len(files)} files (e.g. {skipped[0] if skipped else '-'})"
        )
    frames = _select_series(frames, series, source)
    _check_consistent(frames, source)

    ref = frames[0]
    normal = np.cross(ref.orientation[:3], ref.orientation[3:])
    normal /= np.linalg.norm(normal)
    cosine = 1.0
    if slice_order == "base_to_apex":
        normal, cosine = orient_normal_base_to_apex(normal)

    # Cluster files into slices by their position along the normal.
    projections = np.array([f.position @ normal for f in frames])
    order = np.argsort(projections, kind="stable")
    slices: List[List[_Frame]] = []
    slice_pos: List[float] = []
    for i in order:
        if slice_pos and abs(projections[i] - slice_pos[-1]) < _SAME_SLICE_MM:
            slices[-1].append(frames[i])
        else:
            slices.append([frames[i]])
            slice_pos.append(float(projections[i]))
    if slice_order == "base_to_apex" and len(slices) > 1 and cosine < 0.2:
        logger.warning(
            "%s: slice normal is nearly perpendicular to the expected LV long axis (cos %.2f); "
            "base-to-apex order is uncertain", source, cosine
        )
    if slice_order == "source":
        keys = [min((f.input_index, f.instance_number or 0) for f in s) for s in slices]
        perm = sorted(range(len(slices)), key=lambda k: keys[k])
        slices = [slices[k] for k in perm]
        slice_pos = [slice_pos[k] for k in perm]

    # Files of one slice must sit at one position, not merely at one depth: two
    # acquisitions shifted in-plane would otherwise be silently interleaved.
    half_pixel = 0.5 * float(np.min(ref.pixel_spacing))
    for s in slices:
        offsets = np.linalg.norm(np.array([f.position for f in s]) - s[0].position, axis=1)
        if offsets.max() > half_pixel:
            worst = s[int(np.argmax(offsets))]
            raise CineReadError(
                f"{source}: {worst.path} lies {offsets.max():.2f} mm in-plane from {s[0].path} at the same slice "
                f"depth; two acquisitions at one slice position?"
            )

    # Spacing from positions; gaps (a missing slice) or irregular steps are errors.
    spacing = 0.0
    if len(slices) > 1:
        gaps = np.abs(np.diff(slice_pos))
        spacing = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - spacing) > max(0.05 * spacing, 0.1))
        if bad.size:
            k = int(bad[0])
            msg = (
                f"{source}: irregular slice spacing: {gaps[k]:.2f} mm between slices at {slice_pos[k]:.2f} and "
                f"{slice_pos[k + 1]:.2f} mm along the normal (median {spacing:.2f} mm; gaps {np.round(gaps, 2).tolist()}); "
                f"a slice may be missing"
            )
            if not allow_irregular_spacing:
                raise CineReadError(msg)
            logger.warning(msg)

    counts = [len(s) for s in slices]
    if len(set(counts)) > 1:
        detail = ", ".join(f"slice at {p:.1f} mm ({s[0].path.name}...): {c}" for p, s, c in zip(slice_pos, slices, counts))
        note = f"; {len(skipped)} files were skipped ({'; '.join(skipped[:3])})" if skipped else ""
        raise CineReadError(f"{source}: unequal number of phases per slice: {detail}{note}")

    num_frames = counts[0]
    pixels = np.empty((num_frames, len(slices)) + ref.shape, dtype=np.float32)
    affines = np.empty((len(slices), 4, 4))
    times = np.full((len(slices), num_frames), np.nan)
    source_index = np.empty(len(slices), dtype=np.int64)
    def first_file(files):
        return min((f.input_index, f.instance_number or 0) for f in files)

    source_rank = {id(s): r for r, s in enumerate(sorted(slices, key=first_file))}
    by_names = 0
    for z, s in enumerate(slices):
        s_sorted, ordered_by = _order_phases(s, source, slice_pos[z])
        by_names += ordered_by == "names" and len(s) > 1
        if ordered_by == "trigger":
            tts = [f.trigger_time for f in s_sorted]
            if len(set(tts)) < len(tts):
                dup = next(f for f, g in zip(s_sorted[1:], s_sorted) if f.trigger_time == g.trigger_time)
                raise CineReadError(
                    f"{source}: two files of one slice share TriggerTime {dup.trigger_time} ms ({dup.path}); "
                    f"repeated acquisition or mixed series?"
                )
            times[z] = tts
        for t, f in enumerate(s_sorted):
            pixels[t, z] = _scaled_pixels(f)
        affines[z] = slice_affine_from_dicom(s_sorted[0].orientation, s_sorted[0].position, s_sorted[0].pixel_spacing)
        affines[z, :3, 2] = normal  # one orientation for the whole stack: base -> apex
        source_index[z] = source_rank[id(s)]
    if by_names:
        logger.warning(
            "%s: no TriggerTime or InstanceNumber in %d of %d slices; their phases are ordered by the numbers in "
            "the file names", source, by_names, len(slices)
        )
    trigger = np.nanmedian(times, axis=0) if np.all(np.isfinite(times)) else None
    return CineStudy(
        pixels=pixels,
        slice_affines=affines,
        slice_spacing_mm=spacing,
        trigger_times_ms=trigger,
        source=source,
        source_slice_index=source_index,
        view=view,
        frame_of_reference_uids=tuple(sorted({f.frame_of_reference_uid for f in frames})),
    )


def read_long_axis_dicom(path_or_paths, *, view: str = "4ch", series=None) -> CineStudy:
    """Read a single-slice long-axis cine (2Ch / 4Ch) as a CineStudy with Z = 1."""
    study = read_dicom_cine(path_or_paths, series=series, slice_order="source", view=view)
    if study.num_slices != 1:
        raise CineReadError(f"{study.source}: a long-axis cine must hold one slice position, got {study.num_slices}")
    return study


# --------------------------------------------------------------------------- writing


def _ds_number(x: float) -> str:
    # DS values are at most 16 characters: keep as many significant digits as fit.
    for digits in range(14, 4, -1):
        s = f"{float(x):.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{float(x):.4g}"


def write_dicom_series(
    study: CineStudy,
    folder: PathLike,
    *,
    series_number: int = 1,
    series_description: Optional[str] = None,
    study_instance_uid: Optional[str] = None,
    frame_of_reference_uid: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Write the cine as single-frame MR Image Storage files, one per slice and phase.

    Pixels are stored as uint16 with RescaleSlope/RescaleIntercept so that
    ``stored * slope + intercept`` recovers the float pixels (to half a step of
    ``(max - min) / 65535``). Files are named by InstanceNumber
    (``z * T + t + 1``, slice-major in the study's base-to-apex order).
    SliceLocation is written deliberately unreliable (negated and scaled
    position along the normal, as some scanners do) so that readers relying on
    it are caught by tests. Patient tags are anonymous.

    Args:
        study: the cine (``view`` becomes the default SeriesDescription).
        folder: output folder, created whole (temporary folder renamed).
        series_number: SeriesNumber.
        series_description: SeriesDescription, default ``study.view``.
        study_instance_uid / frame_of_reference_uid: share them between the
            short-axis and long-axis series of one subject (fresh when None).
        overwrite: replace an existing folder.

    Raises:
        FileExistsError: the folder exists and not ``overwrite``.
        CineWriteError: pixels not finite.
    """
    pixels = np.asarray(study.pixels, dtype=np.float64)
    if not np.all(np.isfinite(pixels)):
        raise CineWriteError(f"{study.source or 'cine'}: pixels hold NaN or infinite values")
    lo, hi = float(pixels.min()), float(pixels.max())
    # Use the slope and intercept exactly as written (DS strings) to quantise.
    slope = float(_ds_number((hi - lo) / 65535.0)) if hi > lo else 1.0
    intercept = float(_ds_number(lo))
    stored = np.clip(np.round((pixels - intercept) / slope), 0, 65535).astype(np.uint16)

    num_frames, num_slices = study.num_frames, study.num_slices
    times = study.trigger_times_ms
    if times is None or len(times) != num_frames:
        times = np.arange(num_frames) * (1000.0 / max(num_frames, 1))
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    description = series_description if series_description is not None else study.view
    normal = study.slice_normal
    dy, dx = study.pixel_spacing_mm
    thickness = float(study.slice_spacing_mm) or 8.0
    today = _dt.date.today().strftime("%Y%m%d")  # content date of this synthetic/exported file, not a patient date

    with atomic_folder(Path(folder), overwrite=overwrite) as tmp:
        for z in range(num_slices):
            a = study.slice_affines[z]
            row_cos = a[:3, 0] / np.linalg.norm(a[:3, 0])
            col_cos = a[:3, 1] / np.linalg.norm(a[:3, 1])
            position = a[:3, 3]
            for t in range(num_frames):
                instance = z * num_frames + t + 1
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
                meta.MediaStorageSOPInstanceUID = generate_uid()
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = Dataset()
                ds.file_meta = meta
                ds.SOPClassUID = MR_IMAGE_STORAGE
                ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
                ds.Modality = "MR"
                ds.ImageType = ["DERIVED", "PRIMARY", "CINE"]
                ds.ContentDate = today
                ds.PatientName = "Anonymous"
                ds.PatientID = "anonymous"
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.FrameOfReferenceUID = for_uid
                ds.SeriesNumber = int(series_number)
                ds.SeriesDescription = description
                ds.InstanceNumber = instance
                ds.ImagePositionPatient = [_ds_number(v) for v in position]
                ds.ImageOrientationPatient = [_ds_number(v) for v in np.concatenate([row_cos, col_cos])]
                ds.PixelSpacing = [_ds_number(dy), _ds_number(dx)]
                ds.SliceThickness = _ds_number(thickness)
                ds.SpacingBetweenSlices = _ds_number(thickness)
                ds.SliceLocation = _ds_number(-0.67 * float(position @ normal))
                ds.TriggerTime = _ds_number(float(times[t]))
                ds.CardiacNumberOfImages = num_frames
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows, ds.Columns = int(stored.shape[2]), int(stored.shape[3])
                ds.BitsAllocated = 16
                ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 0
                ds.RescaleSlope = _ds_number(slope)
                ds.RescaleIntercept = _ds_number(intercept)
                ds.PixelData = stored[t, z].tobytes()
                ds.save_as(str(tmp / f"{instance:05d}.dcm"), enforce_file_format=True)
    return Path(folder)
