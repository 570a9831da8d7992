"""Kaggle Second Annual Data Science Bowl (2016) -> unlabelled MONAI datalist for self-supervision.

Layout (as distributed; the archives sometimes extract one folder deeper,
``ROOT/train/train/<id>/study``, which is accepted too)::

    ROOT/train.csv                      Id,Systole,Diastole   (LV ESV / EDV in ml)
    ROOT/validate.csv                   same columns, when the solution was released
    ROOT/train/1/study/sax_5/IM-4557-0001.dcm ...   one slice position x 30 phases per sax_NN
    ROOT/train/1/study/sax_6/...
    ROOT/train/1/study/2ch_21/, 4ch_20/            long-axis series (lax_2ch / lax_4ch)
    ROOT/validate/<id>/study/..., ROOT/test/<id>/study/...

A study's short-axis stack is *all* its ``sax_*`` folders together, each one
its own DICOM series; the long-axis series are not part of it, but records name them
(``lax_2ch`` / ``lax_4ch``: the lowest-numbered ``2ch_N`` / ``4ch_N`` folder, absent when
the study has none) for the anatomical-position labels. :func:`cmrssl.io.reader.read_cine`
(hence ``CineImageReader`` and ``LoadCineFramed`` in the bundles) recognises a
``study`` folder and reads it so, like :func:`read_kaggle_study`, which also
takes the reader's options. The records' ``image`` / ``cine`` is the ``study`` folder.

Some studies cannot be read as one stack (duplicated or repeated series at one
position, several positions in one folder with different phase counts, slice
gaps, mixed sizes): they are skipped with a warning naming the folder and the
reason, and listed in the ``skipped`` entry of :func:`index_kaggle_dsb`'s
result, never in the datalist. One series (SeriesInstanceUID) under two study
Ids (a study copied under another Id) is refused before any study is read,
naming both (:func:`cmrssl.data.datalist.refuse_duplicate_series`).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from cmrssl.io.atomic import check_can_write
from cmrssl.io.cine import CineStudy
from cmrssl.io.dicom import read_dicom_cine
from cmrssl.io.errors import CineReadError
from cmrssl.io.reader import sax_series_folders

from .datalist import refuse_duplicate_series, split_records, write_datalist

__all__ = ["DSB_SPLITS", "sax_folders", "long_axis_folders", "read_kaggle_study", "read_dsb_volumes",
           "find_dsb_studies", "index_kaggle_dsb"]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: DSB folder -> datalist split.
DSB_SPLITS = {"train": "training", "validate": "validation", "test": "test"}


def sax_folders(study_dir: PathLike) -> List[Path]:
    """The ``sax_NN`` folders of a DSB ``study`` folder, by number.

    Raises:
        FileNotFoundError: not a folder.
        CineReadError: no ``sax_*`` folder.
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such DSB study folder")
    folders = sax_series_folders(study_dir)
    if not folders:
        raise CineReadError(f"{study_dir}: no sax_NN folders (Kaggle DSB layout <id>/study/sax_NN/*.dcm)")
    return folders


_LONG_AXIS_FOLDER = re.compile(r"^(?P<view>[24]ch)_(?P<number>\d+)$", re.IGNORECASE)


def long_axis_folders(study_dir: PathLike) -> Dict[str, str]:
    """``{"lax_2ch": folder, "lax_4ch": folder}`` (absolute) of a DSB ``study`` folder; absent views left out.

    Some studies hold two series of a view (a repeated acquisition): the lowest-numbered
    ``2ch_N`` / ``4ch_N`` folder is taken.
    """
    study_dir = Path(study_dir)
    if (study_dir / "study").is_dir():
        study_dir = study_dir / "study"
    found: Dict[str, Tuple[int, Path]] = {}
    for folder in sorted(study_dir.iterdir()) if study_dir.is_dir() else []:
        m = _LONG_AXIS_FOLDER.match(folder.name)
        if m and folder.is_dir():
            key = f"lax_{m.group('view').lower()}"
            number = int(m.group("number"))
            if key not in found or number < found[key][0]:
                found[key] = (number, folder)
    return {key: str(folder.resolve()) for key, (_, folder) in sorted(found.items())}


def read_kaggle_study(study_dir: PathLike, **kwargs) -> CineStudy:
    """Read the short-axis stack of a DSB study (all its ``sax_*`` folders) as one cine.

    Args:
        study_dir: the ``<id>/study`` folder (or the ``<id>`` folder above it).
        kwargs: passed to :func:`cmrssl.io.dicom.read_dicom_cine` (e.g. ``allow_irregular_spacing``).

    Returns:
        :class:`CineStudy` ``[T, Z, H, W]``, slices base to apex, ``source`` = the study folder.

    Raises:
        FileNotFoundError: not a folder.
        CineReadError: no sax folder, or the reader's checks (several series in one sax
            folder, repeated positions, unequal phase counts, gaps...).
    """
    study_dir = Path(study_dir)
    if (study_dir / "study").is_dir():
        study_dir = study_dir / "study"
    study = read_dicom_cine(sax_folders(study_dir), **kwargs)
    study.source = str(study_dir)
    return study


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_dsb_volumes(path: PathLike) -> Dict[str, Dict[str, float]]:
    """``{Id: {"esv_ml": Systole, "edv_ml": Diastole}}`` from ``train.csv`` / ``validate.csv``.

    Raises:
        FileNotFoundError: missing file.
        ValueError: no ``Id`` / ``Systole`` / ``Diastole`` columns (case ignored).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        missing = [c for c in ("id", "systole", "diastole") if c not in columns]
        if missing:
            raise ValueError(f"{path}: no {missing} column(s); expected Id,Systole,Diastole, got {reader.fieldnames}")
        volumes: Dict[str, Dict[str, float]] = {}
        for row in reader:
            subject = (row.get(columns["id"]) or "").strip()
            esv, edv = _number(row.get(columns["systole"])), _number(row.get(columns["diastole"]))
            if subject and esv is not None and edv is not None:
                volumes[subject] = {"edv_ml": edv, "esv_ml": esv}
    return volumes


def find_dsb_studies(root: PathLike) -> List[Tuple[str, str, Path]]:
    """``(dsb split folder, Id, study folder)`` for every study of a DSB root, by split then Id.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no ``<train|validate|test>/<id>/study`` folder, or an Id in two splits.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Kaggle DSB folder")
    found: List[Tuple[str, str, Path]] = []
    for split in DSB_SPLITS:
        for base in (root / split, root / split / split):
            if not base.is_dir():
                continue
            for study in base.glob("*/study"):
                if study.is_dir():
                    found.append((split, study.parent.name, study))
    if not found:
        raise ValueError(f"{root}: no Kaggle DSB studies (<train|validate|test>/<id>/study/sax_NN/*.dcm)")
    owner: Dict[str, str] = {}
    for split, subject, _study in found:
        if owner.get(subject, split) != split:
            raise ValueError(f"{root}: study Id {subject} is in both {owner[subject]} and {split}")
        owner[subject] = split
    order = list(DSB_SPLITS)
    return sorted(found, key=lambda f: (order.index(f[0]), int(f[1]) if f[1].isdigit() else 0, f[1]))


def index_kaggle_dsb(
    root: PathLike,
    datalist_path: PathLike,
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    subjects: Optional[Mapping[str, Sequence[str]]] = None,
    dataset_split: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Dict[str, list]:
    """Read every DSB study and write an unlabelled datalist (one record per study and frame).

    Records: ``image`` and ``cine`` (the ``study`` folder, absolute; read it with
    :func:`read_kaggle_study`), ``subject`` (the DSB Id), ``frame`` (the 0-based index
    as a string), ``frame_index``, ``phase`` ("other": the data set names no ED/ES
    frame), ``spacing`` ``[dz, dy, dx]`` mm (slice spacing from positions), and
    ``edv_ml`` / ``esv_ml`` (LV volumes from ``train.csv`` / ``validate.csv``) when known,
    ``lax_2ch`` / ``lax_4ch`` (long-axis series folders, see :func:`long_axis_folders`) when present.
    Each study is read in full (every file), which takes a while for the whole set.

    Args:
        root: DSB root (see the module docstring).
        datalist_path: output JSON.
        seed, fractions: seeded split by subject, when not ``dataset_split``.
        subjects: explicit ``{split: [Ids]}``.
        dataset_split: keep the data set's train / validate / test as the splits (default).
        overwrite: replace an existing datalist.
        progress: show a progress bar over the studies.

    Returns:
        The datalist splits plus ``"skipped"``: ``[{"folder": ..., "reason": ...}]``,
        the studies that could not be read (not written to the datalist).

    Raises:
        FileExistsError: the datalist exists and not ``overwrite``.
        FileNotFoundError, ValueError: no DSB layout under ``root``, bad CSV, one series
            under two study Ids (naming both).
    """
    root = Path(root)
    check_can_write(Path(datalist_path), overwrite)
    studies = find_dsb_studies(root)
    if subjects is not None:  # read only the studies asked for
        wanted = {str(s) for members in subjects.values() for s in (members or [])}
        unknown = sorted(wanted - {subject for _, subject, _ in studies})
        if unknown:
            raise ValueError(f"{root}: study Ids {unknown} not found")
        studies = [s for s in studies if s[1] in wanted]
    refuse_duplicate_series([(subject, sax_series_folders(folder)) for _, subject, folder in studies], str(root))
    volumes: Dict[str, Dict[str, float]] = {}
    for name in ("train.csv", "validate.csv"):
        if (root / name).is_file():
            volumes.update(read_dsb_volumes(root / name))
    records: List[dict] = []
    skipped: List[dict] = []
    iterator = studies
    if progress:
        iterator = tqdm(studies, desc="DSB studies", unit="study")
    split_of: Dict[str, str] = {}
    for split, subject, folder in iterator:
        try:
            study = read_kaggle_study(folder)
        except (CineReadError, FileNotFoundError, ValueError) as err:  # ValueError: malformed header values
            logger.warning("skipping DSB study %s: %s", folder, err)
            skipped.append({"folder": str(folder), "reason": str(err)})
            continue
        split_of[subject] = DSB_SPLITS[split]
        spacing = [float(s) for s in study.spacing_zyx_mm]
        long_axis = long_axis_folders(folder)
        for t in range(study.num_frames):
            record = {"image": str(folder.resolve()), "subject": subject, "frame": str(t), "frame_index": t,
                      "phase": "other", "spacing_zyx_mm": spacing, "cine": str(folder.resolve()), **long_axis}
            record.update(volumes.get(subject, {}))
            records.append(record)
    if subjects is not None:  # a study asked for but unreadable is reported in "skipped"
        assignments = {split: [str(s) for s in (members or []) if str(s) in split_of]
                       for split, members in subjects.items()}
    elif dataset_split:
        assignments = {}
        for subject, split in split_of.items():
            assignments.setdefault(split, []).append(subject)
    else:
        assignments = None
    datalist: Dict[str, list] = dict(split_records(records, seed, fractions, assignments=assignments))
    write_datalist(datalist, datalist_path, overwrite=overwrite)
    datalist["skipped"] = skipped
    return datalist
