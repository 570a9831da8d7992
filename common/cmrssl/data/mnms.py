"""M&Ms and M&Ms-2 (multi-centre, multi-vendor challenges) -> 3D frames + MONAI datalist.

M&Ms layout (the open data set)::

    ROOT/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv   (any *.csv with the columns
        External code, ED, ES and optionally Vendor, Centre, Pathology; ED/ES 0-based)
    ROOT/Training/Labeled/A0S9V9/A0S9V9_sa.nii.gz      4D cine [x, y, z, t]
    ROOT/Training/Labeled/A0S9V9/A0S9V9_sa_gt.nii.gz   4D labels, only on the ED and ES frames
    ROOT/Training/Unlabeled/<code>/<code>_sa.nii.gz    (no labels: not indexed)
    ROOT/Validation/<code>/..., ROOT/Testing/<code>/...

M&Ms-2 layout::

    ROOT/dataset/001/001_SA_ED.nii.gz, 001_SA_ED_gt.nii.gz   3D frame + labels
    ROOT/dataset/001/001_SA_ES.nii.gz, 001_SA_ES_gt.nii.gz
    ROOT/dataset/001/001_SA_CINE.nii.gz                      4D cine
    ROOT/dataset_information.csv                             (optional: SUBJECT_CODE, DISEASE, VENDOR, ...)

Labels of both are 1 LV cavity, 2 LV myocardium, 3 RV cavity: already canonical
(:data:`cmrssl.labels.MNMS_TO_CANONICAL`), checked all the same.

Layout written for M&Ms (the 4D files are split: plain MONAI pipelines read 3D frames)::

    OUT_DIR/frames/A0S9V9/frame_XX.nii.gz, frame_XX_gt.nii.gz   ED and ES (0-based XX), original header
    OUT_DIR/datalist.json

(subject folders one level down, so that MONAI's ``load_decathlon_datalist`` does
not mistake the subject code for the folder of that name beside the datalist).

For M&Ms-2 the ED/ES files already are 3D frames with canonical labels: records
point at them and nothing but the datalist is written. Their ``frame_index`` is
found by matching the ED/ES image with the frames of the ``SA_CINE`` file (the
data set names no frame number: ``NNN_SA_ED`` says which phase, not which
frame); without a cine, or when no cine frame matches, ``frame_index`` is
``null`` (None) and ``cine`` is left out, with a warning.

A subject whose file exists but cannot be read (empty, truncated or damaged
cine, labels or M&Ms-2 ED/ES file) is skipped with a warning naming the file
and listed in ``skipped`` of :func:`index_mnms`'s result (``tools/index.py``
counts them); the other subjects are indexed. An M&Ms label file without its
cine is skipped the same way; a cine without labels is unlabelled data, not
indexed; a missing M&Ms-2 cine costs only the ``frame_index``. Content errors (labels outside the set, an ED/ES frame
outside the cine or without labels, shapes that differ) are refused, naming
the file, before anything is written: they point at a wrong CSV or layout
rather than at one damaged copy. Each subject folder appears whole (temporary
folder renamed).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np

from cmrssl.io.atomic import atomic_folder, check_can_write
from cmrssl.io.nifti import frame_file_name
from cmrssl.labels import MNMS_TO_CANONICAL

from .datalist import (
    UnreadableFileError,
    canonical_label_image,
    canonical_labels,
    load_nifti,
    load_nifti_header,
    nifti_like,
    nifti_spacing_mm,
    split_records,
    write_datalist,
)

__all__ = [
    "FRAMES_FOLDER",
    "detect_mnms_layout",
    "read_mnms_info",
    "mnms_records",
    "mnms2_records",
    "mnms2_subject_records",
    "is_mnms2_subject_folder",
    "index_mnms",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Sub-folder of ``out_dir`` holding the extracted frames, one folder per subject.
FRAMES_FOLDER = "frames"
#: Column aliases after normalisation (lower case, letters and digits only).
_CODE_COLUMNS = ("externalcode", "subjectcode", "code", "subject", "id")
_COLUMNS = {"ed": ("ed",), "es": ("es",), "vendor": ("vendor", "vendorname"),
            "centre": ("centre", "center"), "group": ("pathology", "disease")}
#: M&Ms folder names -> datalist split.
_DATASET_SPLITS = {"training": "training", "validation": "validation", "testing": "test", "test": "test"}
_MNMS2_CODE = re.compile(r"^(?P<code>\d+)_SA_ED\.nii(\.gz)?$")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _code_key(code: str) -> str:
    """Codes compare as written, except numbers (``"001"`` == ``"1"``, M&Ms-2 CSVs drop zeros)."""
    code = str(code).strip()
    return str(int(code)) if code.isdigit() else code


def detect_mnms_layout(root: PathLike) -> str:
    """``"mnms"`` or ``"mnms2"`` from the files under ``root``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: neither layout (the message describes both).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such M&Ms folder")
    if any(True for _ in root.glob("*/*_SA_ED.nii*")) or any(True for _ in root.glob("dataset/*/*_SA_ED.nii*")):
        return "mnms2"
    if any(True for _ in root.rglob("*_sa.nii*")):
        return "mnms"
    raise ValueError(
        f"{root}: not an M&Ms layout (<split>/.../<code>/<code>_sa.nii.gz with <code>_sa_gt.nii.gz and a CSV) "
        f"nor M&Ms-2 (dataset/<NNN>/<NNN>_SA_ED.nii.gz, _SA_ED_gt, _SA_ES, _SA_ES_gt, _SA_CINE)"
    )


# --------------------------------------------------------------------------- CSV


def _find_csv(root: Path, required: Sequence[str]) -> Optional[Path]:
    candidates = sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv"))
    for path in candidates:
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                header = {_normalise(c) for c in next(csv.reader(fh), [])}
        except (OSError, UnicodeDecodeError):
            continue
        if header & set(_CODE_COLUMNS) and all(header & set(_COLUMNS[k]) for k in required):
            return path
    return None


def read_mnms_info(path: PathLike, required: Sequence[str] = ("ed", "es")) -> Dict[str, Dict[str, str]]:
    """Rows of an M&Ms information CSV by subject code.

    Column names are matched ignoring case, spaces and punctuation (``External code``,
    ``External_Code``, ``SUBJECT_CODE`` ...).

    Returns:
        ``{code: {"ed": ..., "es": ..., "vendor": ..., "centre": ..., "group": ...}}``
        (the fields present, as strings).

    Raises:
        FileNotFoundError: missing file.
        ValueError: no subject code column, a required column missing, a code twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {_normalise(c): c for c in (reader.fieldnames or [])}
        code_column = next((columns[c] for c in _CODE_COLUMNS if c in columns), None)
        if code_column is None:
            raise ValueError(
                f"{path}: no subject code column (External code / SUBJECT_CODE); columns are {reader.fieldnames}")
        wanted = {key: next((columns[a] for a in aliases if a in columns), None) for key, aliases in _COLUMNS.items()}
        missing = [k.upper() for k in required if wanted[k] is None]
        if missing:
            raise ValueError(f"{path}: no {missing} column; columns are {reader.fieldnames}")
        info: Dict[str, Dict[str, str]] = {}
        for row in reader:
            code = (row.get(code_column) or "").strip()
            if not code:
                continue
            key = _code_key(code)
            if key in info:
                raise ValueError(f"{path}: subject {code} appears twice")
            info[key] = {k: (row.get(c) or "").strip() for k, c in wanted.items() if c is not None}
    return info


def _extras(row: Mapping[str, str]) -> dict:
    return {k: row[k] for k in ("group", "vendor", "centre") if row.get(k)}


# --------------------------------------------------------------------------- M&Ms (4D files)


@dataclass
class _Subject:
    code: str
    split: Optional[str]
    image: Path
    label: Path
    num_frames: int
    shape: tuple
    spacing: List[float]
    frames: Dict[str, int] = field(default_factory=dict)  # {"ED": t, "ES": t}
    extras: dict = field(default_factory=dict)


def _dataset_split(path: Path, root: Path) -> Optional[str]:
    for part in path.relative_to(root).parts:
        split = _DATASET_SPLITS.get(part.lower())
        if split:
            return split
    return None


def _frame(row: Mapping[str, str], key: str, csv_path: Path, code: str, num_frames: int, image: Path) -> int:
    try:
        t = int(float(row[key]))
    except (KeyError, ValueError) as err:
        raise ValueError(f"{csv_path}: subject {code}: {key.upper()} {row.get(key)!r} is not a frame number") from err
    if not 0 <= t < num_frames:
        raise ValueError(
            f"{csv_path}: subject {code}: {key.upper()} frame {t} outside [0, {num_frames - 1}] of {image}")
    return t


def _skip(skipped: List[dict], folder: Path, reason: str) -> None:
    """Log and list a subject (its folder, named by its code) left out for an unreadable file
    (``reason`` names the file)."""
    logger.warning("skipping %s: %s", folder, reason)
    skipped.append({"folder": str(folder), "subject": folder.name, "reason": reason})


def _find_mnms_subjects(root: Path, info: Mapping[str, Mapping[str, str]], csv_path: Path,
                        skipped: List[dict]) -> List[_Subject]:
    subjects: List[_Subject] = []
    for image in sorted(root.rglob("*_sa.nii*")):
        code = image.name.split("_sa.nii")[0]
        label = next((p for p in (image.with_name(f"{code}_sa_gt.nii.gz"), image.with_name(f"{code}_sa_gt.nii"))
                      if p.is_file()), None)
        if label is None:
            logger.info("%s: no %s_sa_gt labels, not indexed", image.parent, code)
            continue
        row = info.get(_code_key(code))
        if row is None:
            raise ValueError(f"{csv_path}: no row for subject {code} ({image})")
        try:
            header = load_nifti_header(image, "cine")
            label_shape = load_nifti_header(label, "label").shape
        except UnreadableFileError as err:
            _skip(skipped, image.parent, str(err))
            continue
        if len(header.shape) != 4:
            raise ValueError(f"{image}: expected a 4D cine [x, y, z, t], got shape {header.shape}")
        if tuple(label_shape) != tuple(header.shape):
            raise ValueError(f"{label}: label shape {label_shape} differs from the image {image} {header.shape}")
        num_frames = int(header.shape[3])
        frames = {phase: _frame(row, phase.lower(), csv_path, code, num_frames, image) for phase in ("ED", "ES")}
        if frames["ED"] == frames["ES"]:
            raise ValueError(f"{csv_path}: subject {code}: ED and ES are the same frame {frames['ED']}")
        subjects.append(_Subject(code, _dataset_split(image, root), image.resolve(), label.resolve(), num_frames,
                                 tuple(header.shape[:3]), nifti_spacing_mm(header), frames, _extras(row)))
    for label in sorted(root.rglob("*_sa_gt.nii*")):
        code = label.name.split("_sa_gt.nii")[0]
        if not any(label.with_name(f"{code}_sa{ext}").is_file() for ext in (".nii.gz", ".nii")):
            _skip(skipped, label.parent, f"{label}: labels without their cine {code}_sa.nii.gz")
    if not subjects:
        raise ValueError(f"{root}: no labelled M&Ms subject (<code>/<code>_sa.nii.gz with <code>_sa_gt.nii.gz)"
                         + (f"; {len(skipped)} skipped, e.g. {skipped[0]['reason']}" if skipped else ""))
    codes = [s.code for s in subjects]
    duplicated = sorted({c for c in codes if codes.count(c) > 1})
    if duplicated:
        raise ValueError(f"{root}: subject codes {duplicated} appear in more than one folder")
    return subjects


def _labelled_frames(subject: _Subject) -> Tuple[nib.Nifti1Image, Dict[str, np.ndarray]]:
    """Canonical label volumes of the ED and ES frames (checked: values, non-empty)."""
    img, data = load_nifti(subject.label, "label")
    return img, {phase: canonical_labels(data[..., t], MNMS_TO_CANONICAL,
                                         f"{subject.label} (frame {t}, 0-based, {phase} in the CSV)")
                 for phase, t in subject.frames.items()}


def mnms_records(root: PathLike, out_dir: PathLike, *, csv_path: Optional[PathLike] = None,
                 overwrite: bool = False, skipped: Optional[List[dict]] = None) -> List[dict]:
    """Write the ED/ES frames of the labelled M&Ms subjects as 3D NIfTI and return their records.

    Args:
        root: M&Ms root (see the module docstring).
        out_dir: output folder; ``out_dir/frames/<code>/frame_XX(_gt).nii.gz`` are written.
        csv_path: the information CSV; default the first ``*.csv`` in ``root`` (or one
            folder below) with code, ED and ES columns.
        overwrite: replace existing subject folders.
        skipped: receives ``{"folder", "subject", "reason"}`` for each subject left out
            because a file of it cannot be read or its cine is missing (also logged).

    Returns:
        Records, see :func:`index_mnms`, plus ``dataset_split`` (the M&Ms folder's split).

    Raises:
        FileNotFoundError: no CSV, missing files.
        FileExistsError: a subject folder exists and not ``overwrite``.
        ValueError: CSV without the needed columns or rows, ED/ES outside the cine,
            labels outside {0, 1, 2, 3} or empty on an ED/ES frame; all before writing.
    """
    root = Path(root)
    skipped = [] if skipped is None else skipped
    frames_dir = Path(out_dir).resolve() / FRAMES_FOLDER
    csv_file = Path(csv_path) if csv_path is not None else _find_csv(root, ("ed", "es"))
    if csv_file is None:
        raise FileNotFoundError(f"{root}: no information CSV with 'External code', 'ED' and 'ES' columns "
                                f"(e.g. 211230_M&Ms_Dataset_information_diagnosis_opendataset.csv)")
    subjects = _find_mnms_subjects(root, read_mnms_info(csv_file), csv_file, skipped)
    for s in subjects:  # refuse before any work
        check_can_write(frames_dir / s.code, overwrite)
    readable = []
    for s in subjects:
        try:
            _labelled_frames(s)
        except UnreadableFileError as err:  # truncated labels: the header read, the data did not
            _skip(skipped, s.image.parent, str(err))
            continue
        readable.append(s)
    records: List[dict] = []
    for s in readable:
        label_img, labels = _labelled_frames(s)
        try:
            # Read here, not in the checks above: holding every cine of the data set in
            # memory is not an option, and a skip writes nothing for this subject.
            image_img, pixels = load_nifti(s.image, "cine")
        except UnreadableFileError as err:
            _skip(skipped, s.image.parent, str(err))
            continue
        subject_dir = frames_dir / s.code
        with atomic_folder(subject_dir, overwrite=overwrite) as tmp:
            for phase, t in s.frames.items():
                nib.save(nifti_like(pixels[..., t], image_img), str(tmp / frame_file_name(t, s.num_frames)))
                nib.save(nifti_like(labels[phase], label_img),
                         str(tmp / frame_file_name(t, s.num_frames, labels=True)))
        for phase, t in sorted(s.frames.items(), key=lambda kv: kv[1]):
            record = {
                "image": str(subject_dir / frame_file_name(t, s.num_frames)),
                "label": str(subject_dir / frame_file_name(t, s.num_frames, labels=True)),
                "subject": s.code,
                "frame": phase,
                "frame_index": t,
                "phase": phase,
                "spacing_zyx_mm": list(s.spacing),
                "cine": str(s.image),
                **s.extras,
            }
            if s.split is not None:
                record["dataset_split"] = s.split
            records.append(record)
    return records


# --------------------------------------------------------------------------- M&Ms-2 (3D files)


def _mnms2_dataset(root: Path) -> Path:
    return root / "dataset" if (root / "dataset").is_dir() else root


def _match_frame(frame_image: Path, cine: Path, cine_data: np.ndarray, data: np.ndarray) -> Optional[int]:
    """Frame of the cine equal to ``data`` (to 1e-3 of the intensity range), or None."""
    if cine_data.ndim != 4 or cine_data.shape[:3] != data.shape:
        logger.warning("%s: shape %s does not hold frames of %s %s", cine, cine_data.shape, frame_image, data.shape)
        return None
    reference = data.astype(np.float32)
    tolerance = 1e-3 * max(float(reference.max() - reference.min()), 1e-6)
    errors = [float(np.abs(cine_data[..., t].astype(np.float32) - reference).max()) for t in range(cine_data.shape[3])]
    best = int(np.argmin(errors))
    if errors[best] > tolerance:
        logger.warning("%s: no frame of %s matches it; frame_index unknown (null), cine left out", frame_image, cine)
        return None
    return best


def mnms2_records(root: PathLike, *, csv_path: Optional[PathLike] = None,
                  skipped: Optional[List[dict]] = None) -> List[dict]:
    """Records of the M&Ms-2 ED/ES frames (nothing is written).

    Args:
        root: M&Ms-2 root (see the module docstring).
        csv_path: the information CSV (optional; default: found in ``root``).
        skipped: receives ``{"folder", "subject", "reason"}`` for each subject left out
            because a file of it (cine, ED/ES image or labels) cannot be read (also logged).

    Raises:
        FileNotFoundError: a subject lacks one of its ED/ES image or label files.
        ValueError: no subject, shapes differ, labels outside {0, 1, 2, 3} or empty.
    """
    root = Path(root)
    skipped = [] if skipped is None else skipped
    dataset = _mnms2_dataset(root)
    csv_file = Path(csv_path) if csv_path is not None else _find_csv(root, ())
    info = read_mnms_info(csv_file, required=()) if csv_file is not None else {}
    folders = sorted(p.parent for p in dataset.glob("*/*_SA_ED.nii*") if _MNMS2_CODE.match(p.name))
    if not folders:
        raise ValueError(f"{root}: no M&Ms-2 subject (dataset/<NNN>/<NNN>_SA_ED.nii.gz)")
    records: List[dict] = []
    for folder in folders:
        try:
            records.extend(mnms2_subject_records(folder, info))
        except UnreadableFileError as err:
            _skip(skipped, folder, str(err))
    if not records:
        raise ValueError(f"{root}: no readable M&Ms-2 subject; {len(skipped)} unreadable, e.g. {skipped[0]['reason']}")
    return records


def is_mnms2_subject_folder(folder: PathLike) -> bool:
    """True for an M&Ms-2 subject folder ``NNN/`` holding ``NNN_SA_ED.nii(.gz)``."""
    folder = Path(folder)
    return folder.is_dir() and any(
        (m := _MNMS2_CODE.match(p.name)) and m.group("code") == folder.name for p in folder.iterdir()
    )


def mnms2_subject_records(folder: PathLike, info: Optional[Mapping[str, Mapping[str, str]]] = None) -> List[dict]:
    """The ED and ES records of one M&Ms-2 subject folder (see :func:`mnms2_records`).

    ``frame_index`` is the matching frame of ``NNN_SA_CINE`` (None when there is
    no cine or no frame matches).

    Raises:
        FileNotFoundError: an ED/ES image or label file is missing.
        UnreadableFileError, ValueError: as :func:`mnms2_records`.
    """
    folder = Path(folder)
    info = info or {}
    code = folder.name
    cine = next((p for p in (folder / f"{code}_SA_CINE.nii.gz", folder / f"{code}_SA_CINE.nii") if p.is_file()),
                None)
    extras = _extras(info.get(_code_key(code), {}))
    cine_data = load_nifti(cine, "cine")[1] if cine is not None else None
    if cine is None:
        logger.warning("%s: no %s_SA_CINE file; frame_index of its ED/ES records unknown (null)", folder, code)
    records = []
    for phase in ("ED", "ES"):
        image = folder / f"{code}_SA_{phase}.nii.gz"
        label = folder / f"{code}_SA_{phase}_gt.nii.gz"
        for path in (image, label):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing ({phase} frame of M&Ms-2 subject {code})")
        image_img, pixels = load_nifti(image, "image")
        if pixels.ndim != 3:
            raise ValueError(f"{image}: expected a 3D frame [x, y, z], got shape {pixels.shape}")
        canonical_label_image(label, MNMS_TO_CANONICAL, shape=pixels.shape)  # checks only
        t = _match_frame(image, cine, cine_data, pixels) if cine is not None else None
        # The data set names the phase, not the frame: an unmatched frame's index is unknown,
        # written as null rather than left out, so every record has the field.
        record = {"image": str(image.resolve()), "label": str(label.resolve()), "subject": code,
                  "frame": phase, "frame_index": t, "phase": phase, "spacing_zyx_mm": nifti_spacing_mm(image_img),
                  **extras}
        if t is not None:
            record["cine"] = str(cine.resolve())
        records.append(record)
    return records


# --------------------------------------------------------------------------- datalist


def index_mnms(
    root: PathLike,
    out_dir: PathLike,
    datalist_path: Optional[PathLike] = None,
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    subjects: Optional[Mapping[str, Sequence[str]]] = None,
    dataset_split: bool = True,
    csv_path: Optional[PathLike] = None,
    overwrite: bool = False,
) -> Dict[str, List[dict]]:
    """Index M&Ms or M&Ms-2 (detected from the files) into a datalist split by subject.

    Records (two per subject, ED and ES; paths absolute): ``image`` (3D frame),
    ``label`` (canonical: 0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity),
    ``subject`` (the M&Ms code), ``frame`` and ``phase`` ("ED"/"ES"), ``frame_index``
    (0-based in the cine: M&Ms from the CSV's ED/ES columns, M&Ms-2 by matching the
    frame with its cine), ``spacing`` ``[dz, dy, dx]`` mm (header zooms), ``cine``
    (the 4D file), and from the CSV when present ``vendor``, ``centre``, ``group``
    (pathology). M&Ms records also carry ``dataset_split``. An M&Ms-2 frame without a
    cine or matching no cine frame has ``frame_index`` None (``null`` in the JSON) and
    no ``cine`` (warned).

    Args:
        root: M&Ms or M&Ms-2 root.
        out_dir: output folder (M&Ms frames under ``out_dir/frames/``; the default datalist place).
        datalist_path: output JSON, default ``out_dir/datalist.json``.
        seed, fractions: seeded split by subject (see :func:`~cmrssl.data.datalist.split_subjects`).
        subjects: explicit ``{split: [codes]}``.
        dataset_split: M&Ms only: keep the data set's own Training / Validation /
            Testing folders as the splits (default), instead of a seeded split.
        csv_path: the information CSV (default: found in ``root``).
        overwrite: replace existing subject folders and datalist.

    Returns:
        The datalist ``{"training": [...], "validation": [...], "test": [...]}`` plus
        ``"skipped"``: ``[{"folder": ..., "subject": ..., "reason": ...}]``, the subjects left
        out for an unreadable file or a missing cine (not written to the datalist).

    Raises:
        FileExistsError: the datalist or a subject folder exists and not ``overwrite``.
        FileNotFoundError, ValueError: unrecognised layout, see :func:`mnms_records`,
            :func:`mnms2_records`; nothing is written then.
    """
    out_dir = Path(out_dir)
    datalist_path = Path(datalist_path) if datalist_path is not None else out_dir / "datalist.json"
    check_can_write(datalist_path, overwrite)
    layout = detect_mnms_layout(root)
    skipped: List[dict] = []
    if layout == "mnms":
        records = mnms_records(root, out_dir, csv_path=csv_path, overwrite=overwrite, skipped=skipped)
    else:
        records = mnms2_records(root, csv_path=csv_path, skipped=skipped)
    if not records:  # every subject skipped (their reasons were logged)
        example = f", e.g. {skipped[0]['reason']}" if skipped else ""
        raise ValueError(f"{root}: no readable subject; {len(skipped)} skipped{example}")
    assignments = subjects
    if assignments is not None and skipped:  # a listed subject that was skipped is reported, not "unknown"
        gone = {entry["subject"] for entry in skipped}
        assignments = {split: [c for c in (codes or []) if str(c) not in gone] for split, codes in assignments.items()}
    if assignments is None and dataset_split and layout == "mnms":
        if all(r.get("dataset_split") for r in records):
            assignments = {}
            for r in records:
                assignments.setdefault(r["dataset_split"], set()).add(r["subject"])
        else:
            logger.warning("%s: some subjects lie outside Training/Validation/Testing folders; seeded split", root)
    datalist: Dict[str, list] = dict(split_records(records, seed, fractions, assignments=assignments,
                                                   strata_key="vendor"))
    write_datalist(datalist, datalist_path, overwrite=overwrite)
    datalist["skipped"] = skipped
    return datalist
