"""ACDC (Automated Cardiac Diagnosis Challenge) -> canonical label files + MONAI datalist.

Layout read (as distributed, and under ``../shared/data/acdc/training``)::

    ROOT/patient001/Info.cfg                        "ED: 1", "ES: 12" (1-based frames), "Group: DCM",
                                                    "NbFrame: 30", "Height: ...", "Weight: ..."
    ROOT/patient001/patient001_frame01.nii.gz       3D image [x, y, z] of the ED frame
    ROOT/patient001/patient001_frame01_gt.nii.gz    its labels: 1 RV cavity, 2 LV myocardium, 3 LV cavity
    ROOT/patient001/patient001_frame12(_gt).nii.gz  the ES frame
    ROOT/patient001/patient001_4d.nii.gz            full cycle [x, y, z, t] (optional)

Layout written::

    OUT_DIR/labels/patient001/frame_00_gt.nii.gz    canonical labels of frame 0 (0-based; ED here)
    OUT_DIR/labels/patient001/frame_11_gt.nii.gz    canonical labels of frame 11 (ES)
    OUT_DIR/datalist.json                           (default datalist path)

The subject folders sit one level down, not beside the datalist: MONAI's
``load_decathlon_datalist`` replaces any record value naming an existing path
next to the datalist, and would turn the subject "patient001" into a folder.

The label files keep the original affine and header (spacing in the zooms, the
affine without spacing: the ACDC quirk of :mod:`cmrssl.io.nifti`); every record
says so with ``"spacing_from": "pixdim"`` (:data:`SPACING_FROM`), so a reader
never has to infer the convention, and a label whose grid is not its image's is
refused at indexing (:func:`cmrssl.io.nifti.check_label_grid`). Only the
values change, with :data:`cmrssl.labels.ACDC_TO_CANONICAL` (ACDC 3 LV cavity
-> 1, 1 RV cavity -> 3, 2 LV myocardium stays). They are named ``frame_XX_gt``
(our 0-based naming), not ``patientNNN_frameYY_gt``: a reader that sees ACDC
names maps ACDC labels, and must not map these a second time. Images are never
copied: ``image`` is the original file where it lies.

Every input is checked before anything is written (Info.cfg, files, label
values, non-empty masks, image headers with a valid spacing, image data not
cut short), so a bad patient leaves no output at all; each subject folder then
appears whole (temporary folder renamed). A damaged patient stops the whole
run with an error naming the file, as any other bad patient does: a datalist
silently missing patients would change the published splits.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from cmrssl.io.atomic import atomic_folder, check_can_write
from cmrssl.io.errors import CineReadError
from cmrssl.io.nifti import check_label_grid, frame_file_name
from cmrssl.labels import ACDC_TO_CANONICAL

from .datalist import (
    canonical_label_image,
    nifti_spacing_mm,
    numbered_assignments,
    numbered_subject_names,
    split_records,
    write_datalist,
)

__all__ = [
    "ACDC_GROUPS",
    "LABELS_FOLDER",
    "read_info_cfg",
    "acdc_subject_names",
    "find_acdc_patients",
    "is_acdc_root",
    "select_acdc_patients",
    "AcdcFrame",
    "AcdcPatient",
    "read_acdc_patient",
    "acdc_records",
    "index_acdc",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Diagnostic groups of ACDC (20 training patients each).
ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
#: Sub-folder of ``out_dir`` holding the subject folders of canonical labels.
LABELS_FOLDER = "labels"
#: The file of each patient folder giving ED/ES frames, group and size.
INFO_CFG = "Info.cfg"
#: Prefix of ACDC subject names (``patient001``); numbers in subject selections get it.
SUBJECT_PREFIX = "patient"

#: Where ACDC keeps the voxel spacing: pixdim; its sform (code 2) holds unit directions only.
SPACING_FROM = "pixdim"
_PATIENT = re.compile(rf"^{SUBJECT_PREFIX}(?P<number>\d+)$")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


# --------------------------------------------------------------------------- Info.cfg and subjects


def read_info_cfg(path: PathLike) -> Dict[str, str]:
    """``Key: value`` lines of an ACDC ``Info.cfg`` as a dict of strings.

    Raises:
        FileNotFoundError: missing file.
        ValueError: a non-empty line without ``:``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; every ACDC patient folder holds an Info.cfg with ED/ES frames")
    info: Dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise ValueError(f"{path}:{number}: expected 'Key: value', got {line!r}")
        key, value = line.split(":", 1)
        info[key.strip()] = value.strip()
    return info


def _frame_number(info: Mapping[str, str], key: str, path: Path) -> int:
    if key not in info:
        raise ValueError(f"{path}: no '{key}:' line")
    try:
        number = int(float(info[key]))
    except ValueError as err:
        raise ValueError(f"{path}: '{key}: {info[key]}' is not a frame number") from err
    if number < 1:
        raise ValueError(f"{path}: '{key}: {number}': ACDC frame numbers start at 1")
    return number


def acdc_subject_names(selection: Union[str, int, Iterable[Union[str, int]]]) -> List[str]:
    """Patient numbers or ranges -> ``patientNNN`` names.

    ``"1-80"`` -> patient001..patient080; ``"1-20,41-60"``, ``81``, ``[81, "patient090"]``
    and ``"patient005"`` work too (:func:`cmrssl.data.datalist.numbered_subject_names`).

    Raises:
        ValueError: a part that is neither a number, a range ``A-B`` with ``A <= B``,
            nor a ``patientNNN`` name.
    """
    return numbered_subject_names(selection, SUBJECT_PREFIX)


def find_acdc_patients(root: PathLike) -> List[Path]:
    """The ``patientNNN`` folders of an ACDC root, sorted.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no ``patientNNN`` folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such ACDC folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _PATIENT.match(p.name))
    if not folders:
        raise ValueError(f"{root}: no patientNNN folders; expected an ACDC root (e.g. .../acdc/training)")
    return folders


def is_acdc_root(path: PathLike) -> bool:
    """Whether ``path`` is an ACDC root: a folder with a ``patientNNN/Info.cfg``."""
    path = Path(path)
    return path.is_dir() and any(
        p.is_dir() and _PATIENT.match(p.name) and (p / INFO_CFG).is_file() for p in path.iterdir())


def select_acdc_patients(root: PathLike, subjects: Optional[Iterable[str]] = None) -> List[Path]:
    """The ``patientNNN`` folders of ``root`` named in ``subjects`` (every one when None), sorted.

    Raises:
        FileNotFoundError / ValueError: as :func:`find_acdc_patients`; a named patient not in ``root``.
    """
    folders = find_acdc_patients(root)
    if subjects is None:
        return folders
    wanted = sorted({str(s) for s in subjects})
    missing = sorted(set(wanted) - {f.name for f in folders})
    if missing:
        raise ValueError(f"{root}: patients {missing} not found")
    return [f for f in folders if f.name in wanted]


def _nifti(folder: Path, stem: str) -> Optional[Path]:
    for suffix in _NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _data_problem(img: nib.Nifti1Image, path: Path) -> Optional[str]:
    """Why the voxel data of ``path`` cannot all be read (a file cut short), or None.

    Images are indexed without being read (they are only pointed at), so a truncated
    ``.nii.gz`` would pass and break training later. Reading every volume costs a
    gzip pass per file; instead the gzip trailer is checked: its last 4 bytes hold the
    uncompressed size (mod 2**32), which a file cut short does not end with. Only when
    it disagrees (also the case of a valid multi-member gzip) is the data read to be sure.
    """
    expected = int(img.header.get_data_offset()) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    size = path.stat().st_size
    if not path.name.endswith(".gz"):
        return None if size >= expected else f"file holds {size} bytes, the header needs {expected}"
    if size >= 18:  # smallest gzip stream: 10 bytes header, 8 bytes trailer
        with path.open("rb") as fh:
            fh.seek(-4, os.SEEK_END)
            if int.from_bytes(fh.read(4), "little") == expected % 2**32:
                return None
    try:
        np.asanyarray(img.dataobj)
    except Exception as err:  # zlib/gzip/EOF errors on truncated streams
        return f"image data cannot be read, file cut short? ({err})"
    return None


def _open_nifti(path: Path, what: str) -> nib.Nifti1Image:
    """The header of a NIfTI file whose data is all there.

    Raises:
        CineReadError: unreadable header or data cut short, naming ``path``.
    """
    try:
        img = nib.load(str(path))
        _ = img.shape
    except Exception as err:  # nibabel raises several types for damaged files
        raise CineReadError(f"{path}: not a readable NIfTI {what} file ({err})") from err
    problem = _data_problem(img, path)
    if problem:
        raise CineReadError(f"{path}: {problem}")
    return img


# --------------------------------------------------------------------------- one patient


@dataclass
class AcdcFrame:
    """One labelled frame of an ACDC patient: its phase, 0-based index, image and label files, shape."""

    phase: str  # "ED" / "ES"
    index: int  # 0-based
    image: Path
    label: Path
    shape: tuple


@dataclass
class AcdcPatient:
    """One ACDC patient as :func:`read_acdc_patient` finds it (headers only, no pixels)."""

    subject: str
    folder: Path
    num_frames: int
    group: Optional[str]
    spacing: List[float]
    cine: Optional[Path]
    frames: List[AcdcFrame] = field(default_factory=list)


def read_acdc_patient(folder: Path) -> AcdcPatient:
    """Info.cfg and the ED/ES files of one patient folder ``patientNNN/`` (headers only).

    Raises:
        FileNotFoundError: Info.cfg or an image / label file missing.
        ValueError: bad Info.cfg, ED == ES, image and label shapes differ.
        CineReadError: an unreadable or truncated image / label / 4D file, a header
            without a valid voxel spacing.
    """
    subject = folder.name
    cfg = folder / INFO_CFG
    info = read_info_cfg(cfg)
    ed, es = _frame_number(info, "ED", cfg), _frame_number(info, "ES", cfg)
    if ed == es:
        raise ValueError(f"{cfg}: ED and ES are the same frame ({ed})")
    num_frames = int(float(info["NbFrame"])) if "NbFrame" in info else max(ed, es)
    if max(ed, es) > num_frames:
        raise ValueError(f"{cfg}: ED {ed} / ES {es} beyond NbFrame {num_frames}")
    group = info.get("Group") or None
    frames: List[AcdcFrame] = []
    spacing: Optional[List[float]] = None
    for phase, number in (("ED", ed), ("ES", es)):
        stem = f"{subject}_frame{number:02d}"
        image, label = _nifti(folder, stem), _nifti(folder, f"{stem}_gt")
        for path, name in ((image, f"{stem}.nii.gz"), (label, f"{stem}_gt.nii.gz")):
            if path is None:
                raise FileNotFoundError(f"{folder / name}: missing ({phase} frame {number} of {cfg})")
        header = _open_nifti(image, "image")
        label_header = _open_nifti(label, "label")
        if tuple(header.shape) != tuple(label_header.shape):
            raise ValueError(f"{label}: label shape {label_header.shape} differs from the image {image} {header.shape}")
        if len(header.shape) != 3:
            raise ValueError(f"{image}: expected a 3D frame [x, y, z], got shape {header.shape}")
        check_label_grid(header, image, label_header, label, SPACING_FROM)
        if spacing is None:
            spacing = nifti_spacing_mm(header, SPACING_FROM)  # as the readers measure it
        frames.append(AcdcFrame(phase, number - 1, image.resolve(), label.resolve(), tuple(header.shape)))
    cine = _nifti(folder, f"{subject}_4d")
    if cine is not None:
        _open_nifti(cine, "4D cine")
    return AcdcPatient(subject, folder, num_frames, group, spacing, cine.resolve() if cine else None, frames)


def _records(patient: AcdcPatient, subject_dir: Path) -> List[dict]:
    records = []
    for f in patient.frames:
        record = {
            "image": str(f.image),
            "label": str(subject_dir / frame_file_name(f.index, patient.num_frames, labels=True)),
            "subject": patient.subject,
            "frame": f.phase,
            "frame_index": f.index,
            "phase": f.phase,
            "spacing_zyx_mm": list(patient.spacing),
            "spacing_from": SPACING_FROM,
        }
        if patient.group is not None:
            record["group"] = patient.group
        if patient.cine is not None:
            record["cine"] = str(patient.cine)
        records.append(record)
    return records


def acdc_records(
    root: PathLike,
    out_dir: PathLike,
    *,
    subjects: Optional[Iterable[str]] = None,
    overwrite: bool = False,
) -> List[dict]:
    """Write the canonical ED/ES label files of ACDC patients and return their records.

    Args:
        root: ACDC root holding ``patientNNN/`` folders.
        out_dir: output folder; ``out_dir/labels/patientNNN/frame_XX_gt.nii.gz`` are written.
        subjects: restrict to these ``patientNNN`` names (default: every patient).
        overwrite: replace existing subject folders.

    Returns:
        Records, see :func:`index_acdc`.

    Raises:
        FileNotFoundError: missing root, Info.cfg, image or label file.
        FileExistsError: a subject folder exists and not ``overwrite``.
        ValueError: bad Info.cfg, label values outside {0, 1, 2, 3}, an empty label
            mask, shape mismatch; a requested subject that is not in ``root``; an
            unreadable or truncated NIfTI file, a header without a valid voxel spacing
            (:class:`~cmrssl.io.errors.CineReadError`, naming the file).
        All raised before anything is written.
    """
    labels_dir = Path(out_dir).resolve() / LABELS_FOLDER
    folders = select_acdc_patients(root, subjects)
    for folder in folders:  # refuse before any work
        check_can_write(labels_dir / folder.name, overwrite)
    patients = [read_acdc_patient(folder) for folder in folders]
    # Labels are loaded to check them before anything is written, and once more to write
    # them: twice a few ms per file, instead of holding every label volume in memory.
    for patient in patients:
        for f in patient.frames:
            canonical_label_image(f.label, ACDC_TO_CANONICAL, shape=f.shape)
    records: List[dict] = []
    for patient in patients:
        subject_dir = labels_dir / patient.subject
        with atomic_folder(subject_dir, overwrite=overwrite) as tmp:
            for f in patient.frames:
                labels = canonical_label_image(f.label, ACDC_TO_CANONICAL, shape=f.shape)
                nib.save(labels, str(tmp / frame_file_name(f.index, patient.num_frames, labels=True)))
        records.extend(_records(patient, subject_dir))
        logger.debug("%s: ED frame %d, ES frame %d -> %s", patient.subject, patient.frames[0].index,
                     patient.frames[1].index, subject_dir)
    return records


def index_acdc(
    root: PathLike,
    out_dir: PathLike,
    datalist_path: Optional[PathLike] = None,
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    subjects: Optional[Mapping[str, Sequence[Union[str, int]]]] = None,
    overwrite: bool = False,
) -> Dict[str, List[dict]]:
    """Index ACDC: canonical label files under ``out_dir`` and a datalist split by patient.

    Records (two per patient, ED and ES; paths absolute): ``image`` (the original
    ``patientNNN_frameYY.nii.gz``), ``label`` (``out_dir/labels/patientNNN/frame_XX_gt.nii.gz``,
    canonical: 0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity, uint8),
    ``subject`` (``patientNNN``), ``frame`` and ``phase`` ("ED"/"ES"), ``frame_index``
    (0-based: Info.cfg's 1-based number - 1), ``spacing_zyx_mm`` ``[dz, dy, dx]`` mm (header
    zooms), ``spacing_from`` (``"pixdim"``: ACDC's convention), ``group``
    (NOR/MINF/DCM/HCM/RV), ``cine`` (``patientNNN_4d.nii.gz``, only when present).

    Args:
        root: ACDC root holding ``patientNNN/`` folders.
        out_dir: output folder (label files under ``out_dir/labels/``).
        datalist_path: output JSON, default ``out_dir/datalist.json``.
        seed: split seed (ignored with ``subjects``).
        fractions: ``{split: share}`` of the seeded split, stratified by group
            (default 70/10/20 %).
        subjects: explicit split instead, ``{"training": ["1-80"], "test": ["81-100"]}``:
            patient numbers, ranges or ``patientNNN`` names (see :func:`acdc_subject_names`);
            patients in no list are not indexed.
        overwrite: replace existing subject folders and datalist.

    Returns:
        The datalist ``{"training": [...], "validation": [...], "test": [...]}``.

    Raises:
        FileExistsError: the datalist or a subject folder exists and not ``overwrite``.
        FileNotFoundError, ValueError: see :func:`acdc_records`; nothing is written then.
    """
    out_dir = Path(out_dir)
    datalist_path = Path(datalist_path) if datalist_path is not None else out_dir / "datalist.json"
    check_can_write(datalist_path, overwrite)
    assignments = None
    selected = None
    if subjects is not None:
        assignments = numbered_assignments(subjects, SUBJECT_PREFIX)
        selected = [s for names in assignments.values() for s in names]
    records = acdc_records(root, out_dir, subjects=selected, overwrite=overwrite)
    datalist = split_records(records, seed, fractions, assignments=assignments, strata_key="group")
    write_datalist(datalist, datalist_path, overwrite=overwrite)
    return datalist
