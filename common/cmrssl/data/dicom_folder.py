"""Any folder tree of DICOM cine series -> unlabelled MONAI datalist for self-supervision.

Layout read: ``ROOT`` with, anywhere below it, folders that hold the files of one
short-axis cine series (single-frame MR images, one per slice and phase)::

    ROOT/site_a/case_01/sax/*.dcm       -> subject "site_a/case_01/sax"
    ROOT/site_a/case_02/*.dcm           -> subject "site_a/case_02"
    ROOT/site_a/case_01/4ch/*.dcm       -> not a record: long-axis series, lax_4ch of case_01/sax
    ROOT/site_b/4ch/*.dcm               -> skipped: one slice position (long-axis or single slice)

A *series folder* is a folder holding files directly, with no sub-folder that
holds files itself: :func:`cmrssl.io.reader.read_cine` reads a folder with all
its sub-folders, so a folder with files beside series sub-folders would mix
them (it is skipped with a warning; its sub-folders are indexed on their own).
Each series folder is read with :func:`cmrssl.io.dicom.read_dicom_cine`, exactly
as the data loader will read it later; folders that fail (mixed series, gaps,
missing geometry, unequal phase counts), hold a single slice position or a
single phase are skipped with a warning naming the folder and the reason.
One series (SeriesInstanceUID) in two folders, as when a study folder was
copied under another name, is refused before any reading, naming both folders
(:func:`cmrssl.data.datalist.refuse_duplicate_series`): the copies would be two
subjects and could land in training and test.

Long-axis series. A single-slice cine series is never a record (it is listed in
``skipped`` as before), but when its folder name or SeriesDescription contains
``2ch`` or ``4ch`` (case-insensitive; not both) it is attached to the short-axis
series of its study: the short-axis series folder with the same parent folder
and, when both headers carry one, the same StudyInstanceUID. Its records then
carry ``lax_2ch`` / ``lax_4ch`` (the series folder, absolute); a study with two
series of one view gets the first by folder name. The anatomical-position
labels (:mod:`cmrssl.data.position`) need both.

The subject key is the folder's path relative to ``ROOT``, never anything from
the DICOM headers: no patient name, ID or date reaches the datalist or the log
(the StudyInstanceUID is compared, never written).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pydicom
from tqdm import tqdm

from cmrssl.io.atomic import check_can_write
from cmrssl.io.dicom import read_dicom_cine
from cmrssl.io.errors import CineReadError

from .datalist import refuse_duplicate_series, split_records, write_datalist

__all__ = ["find_series_folders", "long_axis_view", "find_dicom_studies", "index_dicom_folder"]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def _holds_files(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def find_series_folders(root: PathLike) -> Dict[str, List[Path]]:
    """Candidate series folders under ``root`` (``root`` included), and the ambiguous ones.

    Returns:
        ``{"series": [folders holding files, no file-holding sub-folder],
        "mixed": [folders holding files beside file-holding sub-folders]}``, sorted.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such DICOM folder")
    with_files = sorted({p for p in [root, *root.rglob("*")]
                         if p.is_dir() and not any(part.startswith(".") for part in p.relative_to(root).parts)
                         and _holds_files(p)})
    parents = {a for f in with_files for a in f.parents}
    return {"series": [f for f in with_files if f not in parents],
            "mixed": [f for f in with_files if f in parents]}


def _subject_key(folder: Path, root: Path) -> str:
    relative = folder.relative_to(root).as_posix()
    return root.resolve().name if relative == "." else relative


def _series_header(folder: Path) -> Tuple[str, Optional[str]]:
    """``(SeriesDescription, StudyInstanceUID)`` of the first readable DICOM file in ``folder``."""
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                                 specific_tags=["SeriesDescription", "StudyInstanceUID"])
        except Exception:  # not DICOM (a note, a thumbnail): try the next file
            continue
        return str(ds.get("SeriesDescription", "") or ""), (str(ds.get("StudyInstanceUID", "")) or None)
    return "", None


def long_axis_view(folder_name: str, series_description: str = "") -> Optional[str]:
    """``"2ch"`` / ``"4ch"`` when the folder name, else the SeriesDescription, names exactly one of them."""
    for text in (folder_name, series_description):
        lowered = str(text).lower()
        views = [v for v in ("2ch", "4ch") if v in lowered]
        if len(views) == 1:
            return views[0]
    return None


def find_dicom_studies(root: PathLike, min_slices: int = 2, progress: bool = False) -> Tuple[List[dict], List[dict]]:
    """Short-axis cine series under ``root`` with their long-axis series, and the folders skipped.

    Returns:
        ``(studies, skipped)``: ``studies`` one dict per short-axis series, by folder:
        ``subject`` (folder relative to ``root``), ``folder`` (absolute), ``num_frames``,
        ``spacing_zyx_mm``, and ``lax_2ch`` / ``lax_4ch`` (absolute folders) when found;
        ``skipped`` ``[{"folder", "reason"}]`` (long-axis series included, see the module
        docstring). Warnings name each skipped folder.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: one series in two folders (naming both).
    """
    root = Path(root)
    folders = find_series_folders(root)
    refuse_duplicate_series([(_subject_key(f, root), [f]) for f in folders["series"]], str(root))
    skipped: List[dict] = []

    def skip(folder: Path, reason: str) -> None:
        logger.warning("skipping %s: %s", folder, reason)
        skipped.append({"folder": str(folder), "reason": reason})

    for folder in folders["mixed"]:
        skip(folder, "files beside sub-folders holding files; reading it would mix them (sub-folders indexed)")
    iterator = folders["series"]
    if progress:
        iterator = tqdm(iterator, desc="DICOM folders", unit="folder")
    studies: List[dict] = []
    long_axis: List[Tuple[Path, str]] = []
    for folder in iterator:
        try:
            study = read_dicom_cine(folder)
        except (CineReadError, ValueError) as err:  # ValueError: malformed header values
            skip(folder, str(err))
            continue
        if study.num_slices < min_slices:
            if study.num_slices == 1 and study.num_frames >= 2:
                long_axis.append((folder, _series_header(folder)))  # skipped below, unless attached
            else:
                skip(folder,
                     f"{study.num_slices} slice position(s): not a short-axis stack (long-axis or single slice?)")
            continue
        if study.num_frames < 2:
            skip(folder, "a single phase: not a cine")
            continue
        studies.append({"subject": _subject_key(folder, root), "folder": str(folder.resolve()),
                        "num_frames": study.num_frames,
                        "spacing_zyx_mm": [float(s) for s in study.spacing_zyx_mm]})
    uids = {s["folder"]: _series_header(Path(s["folder"]))[1] for s in studies} if long_axis else {}
    for folder, (description, uid) in long_axis:
        view = long_axis_view(folder.name, description)
        owners = []
        for s in studies if view else []:
            same_parent = Path(s["folder"]).parent == folder.resolve().parent
            if same_parent and (uid is None or uids[s["folder"]] in (None, uid)):
                if s.setdefault(f"lax_{view}", str(folder.resolve())) == str(folder.resolve()):
                    owners.append(s["subject"])
        reason = "1 slice position(s): not a short-axis stack (long-axis or single slice?)"
        if owners:  # a record field, not a lost series: no warning
            reason = f"1 slice position(s): not a short-axis stack; the {view} long-axis series of {', '.join(owners)}"
            logger.info("%s: %s", folder, reason)
            skipped.append({"folder": str(folder), "reason": reason})
        else:
            skip(folder, reason)
    skipped.sort(key=lambda s: s["folder"])
    return studies, skipped


def index_dicom_folder(
    root: PathLike,
    datalist_path: PathLike,
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    subjects: Optional[Mapping[str, Sequence[str]]] = None,
    min_slices: int = 2,
    overwrite: bool = False,
    progress: bool = False,
) -> Dict[str, list]:
    """Read every series folder under ``root`` and write an unlabelled datalist.

    Records (one per series and frame): ``image`` and ``cine`` (the series folder,
    absolute; :func:`cmrssl.io.reader.read_cine` reads it), ``subject`` (the folder
    relative to ``root``), ``frame`` (the 0-based index as a string), ``frame_index``,
    ``phase`` ("other"), ``spacing`` ``[dz, dy, dx]`` mm (slice spacing from positions),
    ``lax_2ch`` / ``lax_4ch`` (the study's long-axis series folders, when found).

    Args:
        root: the folder tree.
        datalist_path: output JSON.
        seed, fractions: seeded split by subject (see :func:`~cmrssl.data.datalist.split_subjects`).
        subjects: explicit ``{split: [relative folder paths]}``.
        min_slices: fewer slice positions than this is not a short-axis stack (skipped).
        overwrite: replace an existing datalist.
        progress: show a progress bar over the folders.

    Returns:
        The datalist splits plus ``"skipped"``: ``[{"folder": ..., "reason": ...}]``
        (not written to the datalist).

    Raises:
        FileExistsError: the datalist exists and not ``overwrite``.
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no readable cine series under ``root``; bad explicit subjects; one
            series in two folders (naming both).
    """
    root = Path(root)
    check_can_write(Path(datalist_path), overwrite)
    studies, skipped = find_dicom_studies(root, min_slices=min_slices, progress=progress)
    records: List[dict] = []
    for study in studies:
        path = study["folder"]
        long_axis = {k: study[k] for k in ("lax_2ch", "lax_4ch") if k in study}
        for t in range(study["num_frames"]):
            records.append({"image": path, "subject": study["subject"], "frame": str(t), "frame_index": t,
                            "phase": "other", "spacing_zyx_mm": study["spacing_zyx_mm"], "cine": path,
                            **long_axis})
    if not records:
        num_series = len(find_series_folders(root)["series"])
        raise ValueError(f"{root}: no readable short-axis cine series among {num_series} folders"
                         + (f" (e.g. {skipped[0]['folder']}: {skipped[0]['reason']})" if skipped else ""))
    datalist: Dict[str, list] = dict(split_records(records, seed, fractions, assignments=subjects))
    write_datalist(datalist, datalist_path, overwrite=overwrite)
    datalist["skipped"] = skipped
    return datalist
