"""Records of a datalist for a training run: one split, labelled frames only, optionally few subjects.

Every datalist a bundle reads goes through :func:`datalist_records`, which refuses,
before any data is loaded, a record naming a file that does not exist and a record
that cannot be true (:func:`check_record_contents`: EDV < ESV, two records for one
frame, a ``frame_index`` that is no frame number). Records a program hands in itself
(``train#dataset#data`` / ``validate#dataset#data``, as MONAI Label does) get the same
checks, and the check that no subject or image is both trained and validated on,
through :func:`check_training_records`.

Few-label fine-tuning (de Mooij et al. 2024 train on 1 to 80 labelled
subjects) draws its subjects here, so every bundle draws them the same way:
a seeded permutation of the split's subjects, the first ``N`` kept, with all
their labelled frames.

Inference takes its studies here too (:func:`resolve_cine_inputs`): one cine
given by path, or every cine of a datalist split, each with a safe, unique
output folder name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np

from cmrssl.io.atomic import safe_folder_name, unique_folder_name
from cmrssl.io.errors import CineReadError
from cmrssl.io.nifti import check_label_grid, record_spacing_from

__all__ = [
    "datalist_records",
    "split_has_records",
    "choose_subjects",
    "drawn_subjects_in",
    "log_drawn_subjects",
    "labelled_training_records",
    "check_disjoint_subjects",
    "check_record_contents",
    "check_training_records",
    "frame_number",
    "record_name",
    "record_volumes",
    "VOLUME_FIELDS",
    "warn_if_not_held_out",
]

logger = logging.getLogger(__name__)

_PATH_KEYS = ("image", "label", "cine", "lax_2ch", "lax_4ch", "position_label")
#: Fields a training or evaluation pipeline reads, with the value a record lacking one gets.
#: Records keep only these: the default collate fails when a batch mixes records with and
#: without an optional field (ACDC's ``cine`` exists for one patient, DSB volumes for some).
#: ``spacing_from`` "auto": the record does not say; the loader's own setting applies.
_TRAINING_FIELDS = {"image": None, "label": None, "subject": None, "frame": "", "frame_index": -1, "phase": "other",
                    "spacing_from": "auto"}


#: Study volumes of a volumes-only record (the Kaggle 2016 ``train.csv``): LV EDV and ESV in ml.
VOLUME_FIELDS: Tuple[str, str] = ("edv_ml", "esv_ml")


def record_name(source: str, split: Optional[str], number: int, record: object) -> str:
    """``datalist.json: record 3 of 'training' (subject X)``: how every record check names a record."""
    subject = record.get("subject", "?") if isinstance(record, dict) else "?"
    return f"{source}: record {number}{f' of {split!r}' if split else ''} (subject {subject})"


def _check_files(record: dict, name: str) -> None:
    for key in _PATH_KEYS:
        if isinstance(record.get(key), str) and record[key] and not os.path.exists(record[key]):
            raise FileNotFoundError(f"{name}: {key} {record[key]} does not exist")


def record_volumes(record: dict, name: str = "record") -> Optional[Tuple[float, float]]:
    """``(EDV, ESV)`` in ml of a volumes-only record, None when it gives neither.

    Raises:
        ValueError: naming the record (``name``): one volume without the other, a value
            that is not a positive number, or EDV < ESV (the ventricle cannot hold less
            at end-diastole than at end-systole; Kaggle's ``train.csv`` lists Systole
            before Diastole, so swapped columns give exactly this).
    """
    values: Dict[str, float] = {}
    for key in VOLUME_FIELDS:
        value = record.get(key)
        if value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {key} {value!r} is not a number") from None
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"{name}: {key} must be a positive volume in ml, got {value!r}")
        values[key] = number
    if not values:
        return None
    if len(values) == 1:
        given = next(iter(values))
        missing = next(k for k in VOLUME_FIELDS if k not in values)
        raise ValueError(f"{name}: has {given} but not {missing}: a volumes-only record needs both")
    edv, esv = values["edv_ml"], values["esv_ml"]
    if edv < esv:
        raise ValueError(
            f"{name}: edv_ml {edv:g} is smaller than esv_ml {esv:g} (EF {100.0 * (edv - esv) / edv:.0f} %): "
            "the end-diastolic volume is the larger one; were Systole and Diastole swapped "
            "(Kaggle's train.csv lists Systole first)?")
    return edv, esv


def frame_number(record: dict, name: str = "record") -> Optional[int]:
    """The record's ``frame_index`` (0-based in the cardiac cycle), or None where it is not known.

    Not known: absent, ``null`` (M&Ms-2 ED/ES files without a matching cine frame) or -1
    (what :func:`labelled_training_records` fills in for an absent one).

    Raises:
        ValueError: naming the record: a value that is not a whole number >= 0.
    """
    value = record.get("frame_index")
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name}: frame_index {value!r} is not a frame number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: frame_index {value!r} is not a frame number") from None
    if not number.is_integer() or number < -1:
        raise ValueError(f"{name}: frame_index {value!r} is not a frame number (a whole number >= 0, or null)")
    return None if number == -1 else int(number)


def _holds_one_frame(path: str) -> bool:
    """True for a NIfTI file holding one 3D frame (its header says so; the data is not read)."""
    if not str(path).lower().endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
        return False
    try:
        shape = nib.load(str(path)).shape
    except Exception:  # an unreadable file: the reader names it when it loads it
        return False
    return len(shape) <= 3 or all(int(n) == 1 for n in shape[3:])


def _is_nifti_file(path: object) -> bool:
    return isinstance(path, str) and path.lower().endswith((".nii", ".nii.gz")) and os.path.isfile(path)


def _check_geometry(record: dict, name: str) -> None:
    """A record's ``spacing_from`` is a known source, and a NIfTI label lies on its NIfTI image's grid.

    Headers only, so a datalist of hundreds of frames is checked in seconds, before any
    data is cached (a loader that finds it later fails inside a worker thread). An image
    that is a DICOM folder is checked by the frame loader when it reads both.
    """
    try:
        spacing_from = record_spacing_from(record.get("spacing_from"))
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    image, label = record.get("image"), record.get("label")
    if not (_is_nifti_file(image) and _is_nifti_file(label)) or os.path.abspath(image) == os.path.abspath(label):
        return
    try:
        check_label_grid(nib.load(image), image, nib.load(label), label, spacing_from or "auto")
    except CineReadError as err:
        raise CineReadError(f"{name}: {err}") from None
    except Exception as err:  # nibabel's several errors for a damaged header
        raise CineReadError(f"{name}: image {image} or label {label} is not a readable NIfTI ({err})") from None


def check_record_contents(records: Sequence[dict], source: str, split: Optional[str] = None) -> None:
    """Refuse records that cannot be true, naming each (``source``, ``split``, record number, subject).

    - ``edv_ml`` / ``esv_ml``: both or neither, positive numbers, EDV >= ESV
      (:func:`record_volumes`); and one pair per subject (two records of one study
      giving different volumes cannot both be its reference);
    - ``frame_index``: a whole number >= 0, or not known (absent, null, -1; :func:`frame_number`);
    - two records for one frame: one subject's records of one series claiming the same
      ``frame_index``, or naming the same 3D frame file twice. A record's series is its
      ``cine`` when it has one, else its ``image`` when that holds several frames (a 4D
      NIfTI, a DICOM folder: ``frame_index`` picks one of them), else the subject's 3D
      frame files together (a study written frame by frame, as the indexers write them).
      Kept silently, such a pair kept one of the two frames and made ED = ES;
    - ``spacing_from`` one of ``auto``, ``sform``, ``pixdim``, and a NIfTI ``label`` on its
      NIfTI ``image``'s voxel grid (:func:`cmrssl.io.nifti.check_label_grid`: a label of the
      right shape 30 mm away trained without a word).

    Whether the cycle order of frames without ``frame_index`` matters is up to the
    reader: a segmentation record stands alone, a ranking study needs it
    (:func:`cmrssl.data.ranking.ranking_studies`).

    Raises:
        ValueError: the first record found that cannot be true (a
            :class:`~cmrssl.io.errors.CineReadError` for geometry).
    """
    volumes: Dict[str, Tuple[int, Tuple[float, float]]] = {}
    frames: Dict[tuple, int] = {}
    for number, record in enumerate(records):
        name = record_name(source, split, number, record)
        subject = str(record.get("subject", ""))
        _check_geometry(record, name)
        pair = record_volumes(record, name)
        if pair is not None:
            first = volumes.setdefault(subject, (number, pair))
            if first[1] != pair:
                raise ValueError(
                    f"{name}: edv_ml {pair[0]:g} / esv_ml {pair[1]:g}, but record {first[0]} of the same subject "
                    f"gives {first[1][0]:g} / {first[1][1]:g}: one study has one pair of reference volumes")
        t = frame_number(record, name)
        image = str(record.get("image", ""))
        one_frame = not record.get("cine") and _holds_one_frame(image)
        if t is None and not one_frame:
            continue
        if t is None:
            key: tuple = (subject, "file", os.path.abspath(image))
            claim = f"the 3D frame {image}"
        else:
            series = record.get("cine") or (None if one_frame else image)
            key = (subject, "series", os.path.abspath(str(series)) if series else None, t)
            claim = f"frame_index {t}" + (f" of {series}" if series else " of the subject's 3D frame files")
        first_number = frames.setdefault(key, number)
        if first_number != number:
            raise ValueError(
                f"{name}: claims {claim}, as record {first_number} does: two records for one frame "
                "(a wrong frame_index, or a record listed twice); fix or remove one")


def datalist_records(
    datalist: Union[str, os.PathLike], splits: Union[str, Sequence[str]] = "training", dataset_dir: str = ""
) -> List[dict]:
    """The records of ``splits`` with relative paths made absolute.

    Path fields: ``image``, ``label``, ``cine``, the long-axis cines ``lax_2ch`` / ``lax_4ch``
    and ``position_label`` (anatomical-position box maps).

    Relative paths resolve against ``dataset_dir`` when given, else against the
    datalist's folder (MONAI's ``load_decathlon_datalist`` convention). Every
    path is checked here, before any data is loaded: a missing file found by a
    data-loading worker thread aborts training with no word about which one.

    Raises:
        FileNotFoundError: no datalist file, or a record's image / label / cine missing
            (named with the record's split, number and subject).
        ValueError: not a JSON object, a split missing, a record without ``image``, or a
            record that cannot be true (:func:`check_record_contents`, named the same way).
    """
    path = Path(datalist).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist not found (make one with tools/index.py)")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object with split lists, got {type(content).__name__}")
    base = Path(dataset_dir).expanduser() if dataset_dir else path.parent
    records = []
    for split in [splits] if isinstance(splits, str) else list(splits):
        if split not in content:
            raise ValueError(f"{path}: has no split '{split}' (found {sorted(content)})")
        if not isinstance(content[split], list):
            raise ValueError(f"{path}: split '{split}' is not a list of records")
        split_records = []
        for number, record in enumerate(content[split]):
            if not isinstance(record, dict) or "image" not in record:
                raise ValueError(f"{path}: record {number} of '{split}' lacks 'image': {record}")
            record = dict(record)
            for key in _PATH_KEYS:
                if isinstance(record.get(key), str) and not os.path.isabs(record[key]):
                    record[key] = str((base / record[key]).resolve())
            _check_files(record, record_name(str(path), split, number, record))
            split_records.append(record)
        check_record_contents(split_records, str(path), split)
        records += split_records
    return records


def choose_subjects(subjects: Sequence[str], num_subjects: int, seed: int = 0) -> List[str]:
    """``num_subjects`` of ``subjects`` (distinct, sorted first), drawn by a seeded permutation.

    The draw is nested: the subjects chosen for ``N`` are among those for ``N + 1``
    with the same seed, so label-count curves compare like with like.

    Raises:
        ValueError: fewer subjects than asked for, or a negative count.
    """
    unique = sorted({str(s) for s in subjects})
    num_subjects = int(num_subjects)
    if num_subjects < 0:
        raise ValueError(f"num_labelled_subjects must be >= 0 (0: all), got {num_subjects}")
    if num_subjects > len(unique):
        raise ValueError(f"asked for {num_subjects} labelled subjects but only {len(unique)} are available")
    order = np.random.default_rng(int(seed)).permutation(len(unique))
    return sorted(unique[i] for i in order[:num_subjects])


#: how a few-label training states the subjects it drew (:func:`log_drawn_subjects`), so that a study reads them
#: back from its log (:func:`drawn_subjects_in`) whichever bundle trained
_DRAWN = re.compile(r"few-label training on \d+ subjects \(seed \d+\): (.+?)\s*$", re.MULTILINE)


def log_drawn_subjects(subjects: Sequence[str], seed: int, log: Optional[logging.Logger] = None) -> None:
    """States the labelled subjects a few-label training drew (:func:`choose_subjects`), one line in its log."""
    (log or logger).info("few-label training on %d subjects (seed %d): %s", len(subjects), int(seed),
                         ", ".join(sorted(str(s) for s in subjects)))


def drawn_subjects_in(text: str) -> List[str]:
    """The subjects of the last draw a training log's ``text`` states (:func:`log_drawn_subjects`); ``[]`` when it
    states none (a training on every subject)."""
    found = _DRAWN.findall(text)
    return [name.strip() for name in found[-1].split(",")] if found else []


def split_has_records(datalist: Union[str, os.PathLike], split: str) -> bool:
    """Whether the datalist names ``split`` and holds records under it (a validation split a few-label run may
    not afford is absent or empty; the caller says what it does without one)."""
    return bool(split) and bool(json.loads(Path(datalist).expanduser().read_text()).get(split))


def labelled_training_records(
    datalist: Union[str, os.PathLike],
    split: str = "training",
    dataset_dir: str = "",
    num_labelled_subjects: int = 0,
    seed: int = 0,
    allow_empty: bool = False,
) -> List[dict]:
    """Labelled records of ``split``, restricted to ``num_labelled_subjects`` subjects (0: all).

    Records without ``label`` are left out (a datalist may mix unlabelled frames
    for pretraining); the subjects kept are logged. Each record keeps ``image``,
    ``label``, ``subject``, ``frame``, ``frame_index`` (-1 when absent or null: a 3D
    frame file needs none) and ``phase`` ("other" when absent).

    With ``allow_empty`` (a validation split, which few-label runs may not afford),
    an empty or absent ``split`` gives ``[]`` with a logged warning.

    Raises:
        ValueError: the split holds no labelled record (unless ``allow_empty``), or
            fewer labelled subjects than asked for.
    """
    if int(num_labelled_subjects) < 0:
        raise ValueError(
            f"num_labelled_subjects must be >= 0 (0: every subject of the split), got {num_labelled_subjects}"
        )
    if allow_empty:
        if not split_has_records(datalist, split):
            logger.warning("%s: no '%s' records: training without validation, the last epoch's model is kept",
                           datalist, split)
            return []
    records = datalist_records(datalist, split, dataset_dir)
    no_subject = [number for number, record in enumerate(records) if record.get("subject") in (None, "")]
    if no_subject:
        # few-label subsets and subject-wise splits need to know whose frame each record is
        raise ValueError(f"{datalist}: records {no_subject[:10]} of '{split}' have no 'subject'")
    labelled = [
        {key: default if record.get(key) is None else record[key] for key, default in _TRAINING_FIELDS.items()}
        for record in records if record.get("label")
    ]
    if not labelled:
        raise ValueError(f"{datalist}: split '{split}' holds no record with a 'label'")
    if len(labelled) < len(records):
        logger.info("%s: %d of %d '%s' records have no label and are left out", datalist,
                    len(records) - len(labelled), len(records), split)
    if int(num_labelled_subjects) > 0:
        kept = set(choose_subjects([r["subject"] for r in labelled], num_labelled_subjects, seed))
        labelled = [r for r in labelled if str(r["subject"]) in kept]
        log_drawn_subjects(kept, seed)
    return labelled


def _shared_subjects(records_a: Sequence[dict], records_b: Sequence[dict]) -> List[str]:
    def subjects(records: Sequence[dict]) -> set:
        return {str(r["subject"]) for r in records if isinstance(r, dict) and r.get("subject") is not None}

    return sorted(subjects(records_a) & subjects(records_b))


def _study_files(records: Sequence[dict]) -> Dict[str, int]:
    """``{absolute image or cine path: first record number}``: the files that stand for a study."""
    files: Dict[str, int] = {}
    for number, r in enumerate(records):
        if isinstance(r, dict):
            for key in ("image", "cine"):
                if isinstance(r.get(key), str) and r[key]:
                    files.setdefault(os.path.abspath(r[key]), number)
    return files


def check_disjoint_subjects(
    training: Sequence[dict], validation: Sequence[dict], names: Sequence[str] = ("training", "validation")
) -> None:
    """Refuse validation records whose subjects are also trained on.

    A validation subject seen in training makes the best-model choice (and
    every validation score) optimistic without a word; splits are by subject.
    Records without ``subject`` (MONAI Label hands in ``{"image", "label"}`` only) are
    compared by their files: an ``image`` or ``cine`` in both lists is one study in both.

    Raises:
        ValueError: naming the shared subjects, else the first shared file.
    """
    shared = _shared_subjects(training, validation)
    if shared:
        listing = ", ".join(shared[:10]) + (f", ... ({len(shared)} in all)" if len(shared) > 10 else "")
        raise ValueError(
            f"subjects {listing} are in both the {names[0]} and the {names[1]} records; "
            "splits must be by subject (fix the datalist, or validate on other subjects)"
        )
    trained = _study_files(training)
    for path, number in _study_files(validation).items():
        if path in trained:
            raise ValueError(
                f"{path} is in both the {names[0]} records (record {trained[path]}) and the {names[1]} records "
                f"(record {number}); the best epoch would be chosen on a trained study: splits must be by subject"
            )


def _check_handed_in(records: Sequence[dict], name: str) -> None:
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"{name}: expected a list of records, got {type(records).__name__}")
    for number, record in enumerate(records):
        if not isinstance(record, dict) or not record.get("image"):
            raise ValueError(f"{name}: record {number} lacks 'image': {record}")
        _check_files(record, record_name(name, None, number, record))
    check_record_contents(records, name)


def check_training_records(
    training: Sequence[dict],
    validation: Sequence[dict] = (),
    names: Sequence[str] = ("train#dataset#data", "validate#dataset#data"),
) -> None:
    """The checks of :func:`datalist_records` and :func:`check_disjoint_subjects` on the records a run trains
    and validates on, wherever they came from: a datalist, or a program that hands them in
    (``--train#dataset#data`` / ``--validate#dataset#data``, MONAI Label's bundle trainer).

    Paths are checked as given (relative ones against the working folder, where the loaders
    will open them); the records are named ``<name>: record N (subject S)``.

    Raises:
        FileNotFoundError: a record's image / label / cine missing.
        ValueError: not a list of records, a record without ``image``, a record that cannot
            be true (:func:`check_record_contents`), or a subject or file in both lists.
    """
    _check_handed_in(training, names[0])
    _check_handed_in(validation or [], names[1])
    check_disjoint_subjects(training, validation or [], ("training", "validation"))


def warn_if_not_held_out(
    datalist: Union[str, os.PathLike], split: str, training_split: str = "training", dataset_dir: str = ""
) -> List[str]:
    """Warn (and return them) when subjects of ``split`` are also in ``training_split`` of the datalist.

    Evaluation cannot know which subjects a model was trained on; the
    datalist it came with is the best witness. A shared subject makes the
    scores optimistic, so the warning names them.
    """
    content = json.loads(Path(datalist).expanduser().read_text())
    if split == training_split or not content.get(training_split):
        return []
    shared = _shared_subjects(content.get(split, []), content[training_split])
    if shared:
        logger.warning(
            "%s: subjects %s of '%s' are also in '%s': their scores are not held-out scores",
            datalist, ", ".join(shared), split, training_split,
        )
    return shared


def resolve_cine_inputs(
    input: Union[str, os.PathLike, None] = "",
    datalist: Union[str, os.PathLike, None] = "",
    dataset_dir: Union[str, os.PathLike, None] = "",
    split: str = "test",
) -> List[dict]:
    """The cines to segment, as ``[{"cine_key": folder name, "subject": key, "cine": absolute path}]``.

    ``input`` (one cine) wins; otherwise every distinct cine of the datalist's
    ``split`` (the record's ``cine``, else its ``image``), keyed by ``subject``.
    Relative datalist paths resolve against ``dataset_dir`` when given, else
    against the datalist's folder.

    ``cine_key`` names the cine's output sub-folder: the subject made a safe
    folder name (:func:`cmrssl.io.atomic.safe_folder_name`: a subject such as
    ``../../x`` or ``/abs/p`` must not write outside the output folder) and
    unique (``_1``, ``_2`` appended); ``subject`` keeps the key as the user gave it.

    Raises:
        ValueError: neither ``input`` nor ``datalist`` is given, or the split is empty.
        FileNotFoundError: the input or datalist does not exist.
    """
    if input:
        path = Path(input).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: input cine not found (give a DICOM folder, a 4D NIfTI or a folder of 3D NIfTI frames)"
            )
        name = path.name
        for suffix in (".nii.gz", ".nii"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        return [{"cine_key": safe_folder_name(name), "subject": name, "cine": str(path)}]
    if not datalist:
        raise ValueError("no input: pass --input PATH (a cine) or --datalist JSON")
    # the one datalist reader: relative paths resolved, every file checked before inference starts
    records = datalist_records(datalist, split, dataset_dir or "")
    if not records:
        raise ValueError(f"{datalist}: split '{split}' is empty")
    cines: List[dict] = []
    seen: set = set()
    taken: set = set()
    for record in records:
        cine = Path(record.get("cine") or record["image"]).resolve()
        if str(cine) in seen:
            continue
        seen.add(str(cine))
        subject = str(record.get("subject") or cine.name)
        entry = {"cine_key": unique_folder_name(subject, taken), "subject": subject, "cine": str(cine)}
        spacing_from = record_spacing_from(record.get("spacing_from"))
        if spacing_from is not None:
            entry["spacing_from"] = spacing_from  # the indexer's word on the NIfTI header
        cines.append(entry)
    return cines
