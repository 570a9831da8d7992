"""Shared pieces of the dataset indexers: subject splits, datalist files, canonical label files.

A datalist is the MONAI decathlon-style JSON every bundle reads
(``monai.data.load_decathlon_datalist``)::

    {"training": [record, ...], "validation": [...], "test": [...]}

with one record per subject and frame (see ``DESIGN.md``, "Data contract"):
``image`` (absolute path), optional ``label``, ``subject``, ``frame``
("ED"/"ES"/frame index as a string), ``frame_index`` (0-based in the cardiac
cycle; present in every record, ``null`` only where the data set does not say
which frame an image is: M&Ms-2 ED/ES files without a matching cine), ``phase``
("ED"/"ES"/"other"), ``spacing`` ``[dz, dy, dx]`` mm and, for cine, ``cine``
(the full stack). Splits are always by subject: all frames of a subject go to
one split, so no subject's images leak from training into evaluation; the
DICOM indexers also refuse one series found under two subjects
(:func:`refuse_duplicate_series`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
import pydicom

from cmrssl.io.atomic import atomic_file, check_can_write
from cmrssl.io.nifti import map_labels, nifti_voxel_spacing_mm

__all__ = [
    "SPLITS",
    "DEFAULT_FRACTIONS",
    "numbered_subject_names",
    "numbered_assignments",
    "split_subjects",
    "split_records",
    "check_records",
    "write_datalist",
    "datalist_summary",
    "format_summary",
    "dicom_series_uid",
    "refuse_duplicate_series",
    "nifti_spacing_mm",
    "UnreadableFileError",
    "load_nifti_header",
    "load_nifti",
    "nifti_like",
    "canonical_labels",
    "canonical_label_image",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: The datalist keys, in the order they are written.
SPLITS: Tuple[str, ...] = ("training", "validation", "test")
#: Default share of subjects per split.
DEFAULT_FRACTIONS: Dict[str, float] = {"training": 0.7, "validation": 0.1, "test": 0.2}
#: When there are fewer subjects than splits asked for, the first splits of this order get them.
_FILL_ORDER: Tuple[str, ...] = ("training", "test", "validation")
#: Fields every record must carry.
REQUIRED_FIELDS: Tuple[str, ...] = ("image", "subject")


# --------------------------------------------------------------------------- splits


def _check_fractions(fractions: Optional[Mapping[str, float]]) -> Dict[str, float]:
    if fractions is None:
        return dict(DEFAULT_FRACTIONS)
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ValueError(f"fractions: unknown split(s) {unknown}; use {list(SPLITS)}")
    values = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    if any(not np.isfinite(v) or v < 0 for v in values.values()):
        raise ValueError(f"fractions must be finite and >= 0, got {dict(fractions)}")
    total = sum(values.values())
    if total <= 0:
        raise ValueError(f"fractions must give at least one split a share > 0, got {dict(fractions)}")
    return {s: v / total for s, v in values.items()}


def _split_counts(num_subjects: int, fractions: Dict[str, float]) -> Dict[str, int]:
    """Largest-remainder rounding of ``num_subjects x fraction`` (ties: ``_FILL_ORDER``)."""
    exact = {s: num_subjects * fractions[s] for s in SPLITS}
    counts = {s: int(np.floor(exact[s] + 1e-9)) for s in SPLITS}
    leftover = num_subjects - sum(counts.values())
    by_remainder = sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), _FILL_ORDER.index(s)))
    for s in by_remainder[:leftover]:
        counts[s] += 1
    return counts


def _ensure_every_split(counts: Dict[str, int], fractions: Dict[str, float]) -> Dict[str, int]:
    """Give every split with a positive fraction at least one subject, taken from the largest split
    that can spare one (so 5 subjects at 70/10/20 still get a validation and a test subject)."""
    counts = dict(counts)
    for s in _FILL_ORDER:
        if fractions[s] <= 0 or counts[s] > 0:
            continue
        donors = [d for d in _FILL_ORDER if counts[d] > 1]
        if not donors:
            break
        donor = max(donors, key=lambda d: counts[d])
        counts[donor] -= 1
        counts[s] += 1
    return counts


def numbered_subject_names(selection: Union[str, int, Iterable[Union[str, int]]], prefix: str) -> List[str]:
    """Subject numbers or ranges -> ``<prefix>NNN`` names (three digits at least).

    With ``prefix="patient"``: ``"1-80"`` -> patient001..patient080; ``"1-20,41-60"``,
    ``81``, ``[81, "patient090"]`` and ``"patient005"`` work too.

    Raises:
        ValueError: a part that is neither a number, a range ``A-B`` with ``A <= B``,
            nor a ``<prefix>NNN`` name.
    """
    named = re.compile(rf"^{re.escape(prefix)}(?P<number>\d+)$")
    if isinstance(selection, (str, int)):
        parts: List[Union[str, int]] = list(str(selection).split(","))
    else:
        parts = list(selection)
    names: List[str] = []
    for part in parts:
        text = str(part).strip()
        if not text:
            continue
        m = named.match(text)
        if m:
            names.append(f"{prefix}{int(m.group('number')):03d}")
            continue
        bounds = text.split("-")
        try:
            numbers = [int(b) for b in bounds]
        except ValueError as err:
            raise ValueError(
                f"subject selection {text!r}: expected a subject number, a range like 1-80, or {prefix}NNN") from err
        if len(numbers) == 1:
            names.append(f"{prefix}{numbers[0]:03d}")
        elif len(numbers) == 2 and numbers[0] <= numbers[1]:
            names.extend(f"{prefix}{n:03d}" for n in range(numbers[0], numbers[1] + 1))
        else:
            raise ValueError(f"subject selection {text!r}: a range must read A-B with A <= B")
    return names


def numbered_assignments(
    subjects: Mapping[str, Optional[Union[str, int, Iterable[Union[str, int]]]]], prefix: str
) -> Dict[str, List[str]]:
    """``{split: selection}`` -> ``{split: names}`` for :func:`split_subjects`'s ``assignments``
    (each selection through :func:`numbered_subject_names`; ``None`` selections are dropped)."""
    return {split: numbered_subject_names(selection, prefix)
            for split, selection in subjects.items() if selection is not None}


def _check_explicit(subjects: Sequence[str], assignments: Mapping[str, Iterable[str]]) -> Dict[str, List[str]]:
    unknown = sorted(set(assignments) - set(SPLITS))
    if unknown:
        raise ValueError(f"subject lists: unknown split(s) {unknown}; use {list(SPLITS)}")
    available = set(subjects)
    chosen: Dict[str, List[str]] = {s: [] for s in SPLITS}
    seen: Dict[str, str] = {}
    for split in SPLITS:
        for subject in assignments.get(split) or []:
            subject = str(subject)
            if subject not in available:
                raise ValueError(f"subject {subject!r} of the {split} list is not in the data set")
            if subject in seen:
                raise ValueError(f"subject {subject!r} is listed for both {seen[subject]} and {split}")
            seen[subject] = split
            chosen[split].append(subject)
    left_out = sorted(available - set(seen))
    if left_out:
        logger.info("%d subjects in no subject list are left out of the datalist (e.g. %s)",
                    len(left_out), left_out[0])
    return {s: sorted(v) for s, v in chosen.items()}


def split_subjects(
    subjects: Iterable[str],
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    *,
    assignments: Optional[Mapping[str, Iterable[str]]] = None,
    strata: Optional[Mapping[str, str]] = None,
) -> Dict[str, List[str]]:
    """Split subjects into ``training`` / ``validation`` / ``test``, deterministically.

    The subjects are sorted, permuted with ``numpy.random.default_rng(seed)`` and cut
    by ``fractions`` (largest-remainder rounding). Every split with a fraction > 0
    gets at least one subject when there are at least as many subjects as such splits;
    with fewer, training is filled first, then test, then validation.

    Args:
        subjects: subject keys (duplicates are ignored).
        seed: permutation seed; the same seed and subjects give the same split.
        fractions: ``{split: share}`` (normalised to sum 1; missing splits get 0),
            default :data:`DEFAULT_FRACTIONS`.
        assignments: explicit ``{split: [subjects]}`` instead of a random split; subjects
            in no list are left out (logged).
        strata: ``{subject: group}`` for a stratified split: every split receives each
            group's share of its subjects (to within one subject).

    Returns:
        ``{split: sorted subject list}`` for all three splits (possibly empty).

    Raises:
        ValueError: bad fractions, an explicit subject not in ``subjects`` or listed twice,
            a subject without a stratum.
    """
    unique = sorted({str(s) for s in subjects})
    if assignments is not None:
        return _check_explicit(unique, assignments)
    shares = _check_fractions(fractions)
    rng = np.random.default_rng(int(seed))
    if strata is None:
        order = [unique[i] for i in rng.permutation(len(unique))]
    else:
        missing = [s for s in unique if s not in strata]
        if missing:
            raise ValueError(f"strata: no group for subject(s) {missing[:5]}")
        groups: Dict[str, List[str]] = {}
        for s in unique:
            groups.setdefault(str(strata[s]), []).append(s)
        # Systematic stratified order: each group is permuted, its i-th member placed at
        # (i + 1/2) / group size along [0, 1]; cutting the merged order by the split
        # counts then gives every split each group's share (to one subject).
        keyed = []
        for name in sorted(groups):
            members = groups[name]
            for i, k in enumerate(rng.permutation(len(members))):
                keyed.append(((2 * i + 1) / (2 * len(members)), members[k]))
        ties = rng.permutation(len(keyed))
        order = [s for _, _, s in sorted((pos, tie, s) for (pos, s), tie in zip(keyed, ties))]
    counts = _ensure_every_split(_split_counts(len(order), shares), shares)
    parts: Dict[str, List[str]] = {}
    start = 0
    for split in SPLITS:
        parts[split] = sorted(order[start : start + counts[split]])
        start += counts[split]
    return parts


def split_records(
    records: Sequence[dict],
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    *,
    assignments: Optional[Mapping[str, Iterable[str]]] = None,
    strata_key: Optional[str] = None,
) -> Dict[str, List[dict]]:
    """Group records into splits by their ``subject`` (see :func:`split_subjects`).

    Args:
        records: datalist records (each with ``subject``).
        seed, fractions, assignments: as :func:`split_subjects`.
        strata_key: record field to stratify by (e.g. ``"group"``); ignored when a
            record lacks it.

    Returns:
        ``{split: records}`` keeping the input order within each split.
    """
    check_records(records, "records")
    subjects = [r["subject"] for r in records]
    strata = None
    if strata_key is not None and records and all(strata_key in r for r in records):
        strata = {r["subject"]: str(r[strata_key]) for r in records}
    split_of: Dict[str, str] = {}
    for split, members in split_subjects(subjects, seed, fractions, assignments=assignments, strata=strata).items():
        split_of.update({m: split for m in members})
    out: Dict[str, List[dict]] = {s: [] for s in SPLITS}
    for r in records:
        if r["subject"] in split_of:
            out[split_of[r["subject"]]].append(r)
    return out


# --------------------------------------------------------------------------- datalist files


def check_records(records: Sequence[dict], where: str) -> None:
    """Every record must be a dict with a non-empty ``image`` and ``subject``.

    Raises:
        ValueError: naming ``where`` and the record's position.
    """
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"{where}: expected a list of records, got {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"{where}[{i}]: a record must be a dict, got {type(r).__name__}")
        missing = [k for k in REQUIRED_FIELDS if r.get(k) in (None, "")]
        if missing:
            raise ValueError(f"{where}[{i}]: record lacks {missing}: {dict(r)}")


def _check_monai_path_fields(content: Mapping[str, Sequence[dict]], path: Path) -> None:
    """Refuse values that ``monai.data.load_decathlon_datalist`` would turn into paths.

    MONAI joins the datalist's folder to *every* string field (``image``/``label``
    always; the others whenever the joined path exists). A subject folder beside the
    datalist (``OUT/patient001`` next to ``OUT/datalist.json``) would silently turn the
    ``subject`` "patient001" into ``OUT/patient001`` when the datalist is loaded.
    """
    folder = path.resolve().parent
    for split, records in content.items():
        for i, record in enumerate(records):
            for key, value in record.items():
                if key in ("image", "label"):
                    continue
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, str) and not Path(v).is_absolute() and (folder / v).exists():
                        raise ValueError(
                            f"{path}: {split}[{i}] field {key!r} = {v!r} names {folder / v}; "
                            f"monai.data.load_decathlon_datalist would replace the value by that path. "
                            f"Write the datalist to another folder"
                        )


def write_datalist(records_by_split: Mapping[str, Sequence[dict]], path: PathLike, overwrite: bool = False) -> Path:
    """Write ``{"training": [...], "validation": [...], "test": [...]}`` to ``path``.

    The file appears whole or not at all (temporary file renamed). Splits missing
    from ``records_by_split`` are written as empty lists.

    Raises:
        FileExistsError: ``path`` exists and not ``overwrite`` (the message names it).
        ValueError: an unknown split key, a record without ``image`` / ``subject``, a
            subject in two splits, or a field (other than ``image``/``label``) whose value
            names a file or folder beside ``path`` (MONAI would load it as that path).
    """
    path = Path(path)
    check_can_write(path, overwrite)
    unknown = sorted(set(records_by_split) - set(SPLITS))
    if unknown:
        raise ValueError(f"{path}: unknown split(s) {unknown}; a datalist holds {list(SPLITS)}")
    owner: Dict[str, str] = {}
    for split in SPLITS:
        records = records_by_split.get(split, [])
        check_records(records, f"{path}:{split}")
        for subject in {r["subject"] for r in records}:
            if subject in owner:
                raise ValueError(f"{path}: subject {subject!r} is in both {owner[subject]} and {split}")
            owner[subject] = split
    content = {split: list(records_by_split.get(split, [])) for split in SPLITS}
    _check_monai_path_fields(content, path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(content, indent=1) + "\n")
    return path


def datalist_summary(datalist: Mapping[str, Sequence[dict]]) -> Dict[str, Dict[str, int]]:
    """``{split: {"subjects": n, "records": n}}`` for the three splits."""
    return {
        split: {"subjects": len({r["subject"] for r in datalist.get(split, [])}),
                "records": len(datalist.get(split, []))}
        for split in SPLITS
    }


def format_summary(datalist: Mapping[str, Sequence[dict]]) -> List[str]:
    """One line per split: ``training: 70 subjects, 140 records``."""
    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'' if n == 1 else 's'}"

    return [f"{split}: {count(n['subjects'], 'subject')}, {count(n['records'], 'record')}"
            for split, n in datalist_summary(datalist).items()]


# --------------------------------------------------------------------------- DICOM series across subjects


def dicom_series_uid(folder: PathLike) -> Optional[str]:
    """SeriesInstanceUID of the first file under ``folder`` (by path, recursively) that is
    DICOM and carries one; None when none does. Reads headers only (no pixels).

    One file stands for the folder: the cine reader refuses a folder mixing series.
    """
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's complaints about odd UIDs/values
                ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except Exception:  # not DICOM, truncated: the reader skips such files too
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if uid:
            return uid
    return None


def refuse_duplicate_series(entries: Iterable[Tuple[str, Sequence[PathLike]]], where: str) -> None:
    """Refuse a DICOM series found in two entries (a study folder copied under another name).

    Each entry is ``(subject, series folders)`` (one subject's series); the series
    are compared by SeriesInstanceUID (:func:`dicom_series_uid`, one header per folder,
    so this runs before the long reading). Two copies of one series would be indexed as
    two subjects and could land in training and test; keeping one of them silently would
    pick by folder order, so the user decides.

    Raises:
        ValueError: naming the two subjects and folders of each duplicate (the first
            three); never the UID (DICOM UIDs can carry dates and site identifiers).
    """
    entries = [(str(subject), [Path(f) for f in folders]) for subject, folders in entries]
    owner: Dict[str, int] = {}
    shared: Dict[Tuple[int, int], int] = {}  # (first entry, later entry) -> series in common
    for index, (_, folders) in enumerate(entries):
        for folder in folders:
            uid = dicom_series_uid(folder)
            if uid is None:
                continue
            first = owner.setdefault(uid, index)
            if first != index:
                shared[(first, index)] = shared.get((first, index), 0) + 1
    if shared:
        def place(index: int) -> str:
            folders = entries[index][1]
            return str(folders[0] if len(folders) == 1 else Path(os.path.commonpath([str(f) for f in folders])))

        pairs = sorted(shared.items())
        listing = "; ".join(
            f"subject {entries[a][0]!r} ({place(a)}) and subject {entries[b][0]!r} ({place(b)}): {n} series"
            for (a, b), n in pairs[:3])
        more = f" (and {len(pairs) - 3} more pairs)" if len(pairs) > 3 else ""
        raise ValueError(
            f"{where}: the same DICOM series (SeriesInstanceUID) under two subjects: {listing}{more}. "
            "A copied study would be indexed twice and could land in both training and test; "
            "remove one copy and index again"
        )


# --------------------------------------------------------------------------- NIfTI helpers


def nifti_spacing_mm(img: nib.Nifti1Image, spacing_from: str = "auto") -> List[float]:
    """``[dz, dy, dx]`` mm of a loaded NIfTI image, as the cine readers measure it.

    One measurement for records and readers (:func:`cmrssl.io.nifti.nifti_voxel_spacing_mm`):
    the zooms where they hold a spacing (ACDC affines carry none, ``diag(-1, -1, 1)``), the
    sform where nibabel's zooms are its 1 mm placeholder for a stored 0. A single slice keeps
    its header zoom as ``dz`` (its thickness: there is no distance between slices to
    measure); a 2D image gets ``dz = 0``. ``spacing_from`` (``auto``, ``sform``, ``pixdim``)
    as in :mod:`cmrssl.io.nifti`: an indexer that knows its dataset's convention names it.

    Raises:
        CineReadError: no valid spacing, a sheared grid or a NaN/inf affine, naming the file.
    """
    if len(img.shape) < 3:
        dx, dy = (float(z) for z in img.header.get_zooms()[:2])
        return [0.0, dy, dx]
    dz, dy, dx = nifti_voxel_spacing_mm(img, img.get_filename() or "NIfTI image", spacing_from)
    if int(img.shape[2]) == 1:
        dz = float(img.header.get_zooms()[2])
    return [dz, dy, dx]


def canonical_labels(data: np.ndarray, label_map: Mapping[int, int], where: str) -> np.ndarray:
    """Remap a label array to canonical values (uint8, same shape).

    Raises:
        ValueError: non-integer values, values outside ``label_map``, or no foreground
            (an empty mask); the message starts with ``where`` (the file).
    """
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise ValueError(f"{where}: label image holds non-integer values")
    mapped = map_labels(data, label_map, where).astype(np.uint8)
    if not mapped.any():
        raise ValueError(f"{where}: empty label mask (only background)")
    return mapped


class UnreadableFileError(ValueError):
    """A file that exists but cannot be read (empty, truncated, not the format): a damaged
    copy of one subject, which indexers skip, unlike content errors that they refuse."""


def load_nifti_header(path: PathLike, what: str = "NIfTI") -> nib.Nifti1Image:
    """The NIfTI image of ``path`` with its header read and its data not yet read.

    A truncated ``.nii.gz`` passes here (the header is at the start); :func:`load_nifti`
    finds it.

    Raises:
        FileNotFoundError: missing file.
        UnreadableFileError: empty file or unreadable header (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, gzip/zlib errors, OSError...
        raise UnreadableFileError(f"{path}: not a readable {what} file ({err})") from err


def load_nifti(path: PathLike, what: str = "NIfTI") -> Tuple[nib.Nifti1Image, np.ndarray]:
    """``(image, data array)`` of a NIfTI file.

    Raises:
        FileNotFoundError: missing file.
        UnreadableFileError: (a ValueError) empty, unreadable or truncated file (naming it).
    """
    img = load_nifti_header(path, what)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel/gzip raise several types for damaged files
        raise UnreadableFileError(f"{path}: not a readable {what} file ({err})") from err
    return img, data


def nifti_like(data: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """A NIfTI of ``data`` (3D) with ``reference``'s affine and header (codes, zooms, units);
    data type from ``data`` (float64 stored as float32), no intensity scaling."""
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(None, None)
    return nib.Nifti1Image(np.ascontiguousarray(data), reference.affine, header)


def canonical_label_image(path: PathLike, label_map: Mapping[int, int], *,
                          shape: Optional[Sequence[int]] = None) -> nib.Nifti1Image:
    """Load a 3D label NIfTI and return it with canonical values (uint8, same affine and header).

    Args:
        path: label file ``[x, y, z]``.
        label_map: ``{dataset value: canonical value}``; any other value is an error.
        shape: expected shape (the image's), checked when given.

    Returns:
        A ``Nifti1Image`` of the remapped values with the original affine and header
        (sform/qform codes, zooms); data type uint8, no scaling.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file, not 3D, wrong shape, non-integer values, values
            outside ``label_map``, no foreground (an empty mask), each naming the file.
    """
    img, data = load_nifti(path, "label")
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D label image [x, y, z], got shape {data.shape}")
    if shape is not None and tuple(data.shape) != tuple(int(s) for s in shape):
        raise ValueError(f"{path}: label shape {data.shape} differs from the image shape {tuple(shape)}")
    return nifti_like(canonical_labels(data, label_map, str(path)), img)
