"""MONAI datalist of a phantom cohort (written by :func:`cmrssl.data.phantom.generate_cohort`).

Layout read (frames 0-based)::

    COHORT/cohort.json                                  {"subjects": ["phantom_000", ...], ...}
    COHORT/phantom_000/frames/frame_XX.nii.gz           3D image of frame XX
    COHORT/phantom_000/frames/frame_XX_gt.nii.gz        3D canonical labels of frame XX
    COHORT/phantom_000/sax_cine.nii.gz                  4D cine [x, y, z, t]
    COHORT/phantom_000/dicom/sax/                       the same cine as DICOM
    COHORT/phantom_000/lax_2ch.nii.gz, lax_4ch.nii.gz   long-axis cines [x, y, 1, t] (when present)
    COHORT/phantom_000/analytic.json                    num_frames, ed_frame, es_frame, ...

Every frame of the phantom is labelled, so each subject gives ``num_frames``
records. Nothing is converted: records point at the cohort's own files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Union

import nibabel as nib

from cmrssl.io.atomic import check_can_write
from cmrssl.io.nifti import frame_file_name

from .datalist import nifti_spacing_mm, numbered_assignments, split_records, write_datalist
from .phantom import SUBJECT_PREFIX

__all__ = ["phantom_fractions", "phantom_records", "index_phantom"]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def phantom_fractions(num_subjects: int) -> Dict[str, float]:
    """Default split of a phantom cohort: 1 test subject, 1 validation subject when there
    are >= 3, the rest training (a single subject goes to training)."""
    n = int(num_subjects)
    if n <= 1:
        return {"training": 1.0, "validation": 0.0, "test": 0.0}
    if n == 2:
        return {"training": 0.5, "validation": 0.0, "test": 0.5}
    return {"training": (n - 2) / n, "validation": 1 / n, "test": 1 / n}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected a phantom cohort written by tools/phantom.py")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _frame_phase(t: int, ed_frame: int, es_frame: int) -> str:
    return "ED" if t == ed_frame else "ES" if t == es_frame else "other"


def phantom_records(cohort_dir: PathLike) -> List[dict]:
    """One record per subject and frame of the cohort (see :func:`index_phantom`).

    Raises:
        FileNotFoundError: ``cohort.json``, a subject's ``analytic.json``, frame or label
            file, or ``sax_cine.nii.gz`` missing (the message names it).
        ValueError: ``cohort.json`` without subjects, ``analytic.json`` without
            ``num_frames`` / ``ed_frame`` / ``es_frame``.
    """
    cohort_dir = Path(cohort_dir).resolve()
    cohort = _read_json(cohort_dir / "cohort.json")
    subjects = cohort.get("subjects")
    if not isinstance(subjects, list) or not subjects:
        raise ValueError(f"{cohort_dir / 'cohort.json'}: no 'subjects' list")
    records: List[dict] = []
    for subject in subjects:
        folder = cohort_dir / str(subject)
        analytic_path = folder / "analytic.json"
        analytic = _read_json(analytic_path)
        missing = [k for k in ("num_frames", "ed_frame", "es_frame") if k not in analytic]
        if missing:
            raise ValueError(f"{analytic_path}: lacks {missing}")
        num_frames, ed, es = int(analytic["num_frames"]), int(analytic["ed_frame"]), int(analytic["es_frame"])
        cine = folder / "sax_cine.nii.gz"
        frames = [(folder / "frames" / frame_file_name(t, num_frames),
                   folder / "frames" / frame_file_name(t, num_frames, labels=True)) for t in range(num_frames)]
        for path in [cine] + [p for pair in frames for p in pair]:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing from the phantom subject {folder}")
        # every frame of a subject shares the geometry: one header is enough
        spacing = nifti_spacing_mm(nib.load(str(frames[0][0])))
        long_axis = {key: str(folder / f"{key}.nii.gz") for key in ("lax_2ch", "lax_4ch")
                     if (folder / f"{key}.nii.gz").is_file()}
        for t, (image, label) in enumerate(frames):
            phase = _frame_phase(t, ed, es)
            records.append({
                "image": str(image),
                "label": str(label),
                "subject": str(subject),
                "frame": phase if phase != "other" else str(t),
                "frame_index": t,
                "phase": phase,
                "spacing_zyx_mm": spacing,
                "cine": str(cine),
                **long_axis,
            })
    return records


def index_phantom(
    cohort_dir: PathLike,
    datalist_path: PathLike,
    seed: int = 0,
    fractions: Optional[Mapping[str, float]] = None,
    overwrite: bool = False,
    subjects: Optional[Mapping[str, Union[str, int, Iterable[Union[str, int]]]]] = None,
) -> Dict[str, List[dict]]:
    """Write the MONAI datalist of a phantom cohort, split by subject.

    Records (one per subject and frame, paths absolute): ``image``
    (``frames/frame_XX.nii.gz``), ``label`` (its ``_gt`` file, canonical labels),
    ``subject``, ``frame`` ("ED", "ES" or the 0-based index as a string),
    ``frame_index`` (int, 0-based), ``phase`` ("ED"/"ES"/"other"), ``spacing``
    ``[dz, dy, dx]`` mm, ``cine`` (``sax_cine.nii.gz``), ``lax_2ch`` / ``lax_4ch``
    (``lax_2ch.nii.gz`` / ``lax_4ch.nii.gz``; absent when the subject has none).

    Args:
        cohort_dir: the cohort folder (``cohort.json`` inside).
        datalist_path: output JSON, outside the cohort folder (e.g. beside it): in the
            cohort folder, MONAI's ``load_decathlon_datalist`` would turn each
            ``subject`` into the path of the subject folder (refused).
        seed: split seed.
        fractions: ``{split: share}``; default :func:`phantom_fractions` (1 test subject,
            1 validation subject from 3 subjects on, the rest training).
        overwrite: replace an existing datalist.
        subjects: explicit ``{split: selection}`` instead of a seeded split (a fixed
            held-out set); a selection is subject numbers, ranges or names
            (``"0,1,8"``, ``"2-7,10-19"``, ``"phantom_009"``); subjects in no list are left out.

    Returns:
        The datalist ``{"training": [...], "validation": [...], "test": [...]}``.

    Raises:
        FileExistsError: ``datalist_path`` exists and not ``overwrite``.
        FileNotFoundError, ValueError: see :func:`phantom_records`; ``datalist_path`` in the
            cohort folder (see :func:`~cmrssl.data.datalist.write_datalist`).
    """
    check_can_write(Path(datalist_path), overwrite)  # refuse before reading anything
    records = phantom_records(cohort_dir)
    num_subjects = len({r["subject"] for r in records})
    assignments = None if subjects is None else numbered_assignments(subjects, SUBJECT_PREFIX)
    datalist = split_records(records, seed, fractions if fractions is not None else phantom_fractions(num_subjects),
                             assignments=assignments)
    if num_subjects == 1 and assignments is None:
        logger.warning("%s: one subject only; it goes to training and the test split is empty", cohort_dir)
    write_datalist(datalist, datalist_path, overwrite=overwrite)
    return datalist
