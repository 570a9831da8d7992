"""Records of a datalist for a training run: one split, labelled frames only, optionally few subjects.

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
import os
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

from cmrssl.io.atomic import safe_folder_name, unique_folder_name

__all__ = [
    "datalist_records",
    "choose_subjects",
    "labelled_training_records",
    "check_disjoint_subjects",
    "warn_if_not_held_out",
    "DatalistRecords",
    "read_from_datalist",
]

logger = logging.getLogger(__name__)

_PATH_KEYS = ("image", "label", "cine", "lax_2ch", "lax_4ch", "position_label")
#: Fields a training or evaluation pipeline reads, with the value a record lacking one gets.
#: Records keep only these: the default collate fails when a batch mixes records with and
#: without an optional field (ACDC's ``cine`` exists for one patient, DSB volumes for some).
_TRAINING_FIELDS = {"image": None, "label": None, "subject": None, "frame": "", "frame_index": -1, "phase": "other"}


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
        ValueError: not a JSON object, a split missing, or a record without ``image``.
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
        for number, record in enumerate(content[split]):
            if not isinstance(record, dict) or "image" not in record:
                raise ValueError(f"{path}: record {number} of '{split}' lacks 'image': {record}")
            record = dict(record)
            for key in _PATH_KEYS:
                if isinstance(record.get(key), str) and not os.path.isabs(record[key]):
                    record[key] = str((base / record[key]).resolve())
                if isinstance(record.get(key), str) and record[key] and not os.path.exists(record[key]):
                    raise FileNotFoundError(
                        f"{path}: record {number} of '{split}' (subject {record.get('subject', '?')}): {key} "
                        f"{record[key]} does not exist"
                    )
            records.append(record)
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


def labelled_training_records(
    datalist: Union[str, os.PathLike],
    split: str = "training",
    dataset_dir: str = "",
    num_labelled_subjects: int = 0,
    seed: int = 0,
    allow_empty: bool = False,
) -> List[dict]:
    """Labelled records of ``split``, restricted to ``num_labelled_subjects`` subjects (0: all), as :class:`DatalistRecords`.

    Records without ``label`` are left out (a datalist may mix unlabelled frames
    for pretraining); the subjects kept are logged. Each record keeps ``image``,
    ``label``, ``subject``, ``frame``, ``frame_index`` (-1 when absent: a 3D frame
    file needs none) and ``phase`` ("other" when absent).

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
        if not split or not json.loads(Path(datalist).expanduser().read_text()).get(split):
            logger.warning("%s: no '%s' records: training without validation, the last epoch's model is kept",
                           datalist, split)
            return DatalistRecords([], datalist)
    records = datalist_records(datalist, split, dataset_dir)
    no_subject = [number for number, record in enumerate(records) if record.get("subject") in (None, "")]
    if no_subject:
        # few-label subsets and subject-wise splits need to know whose frame each record is
        raise ValueError(f"{datalist}: records {no_subject[:10]} of '{split}' have no 'subject'")
    labelled = [
        {key: record.get(key, default) for key, default in _TRAINING_FIELDS.items()}
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
        logger.info("few-label training on %d subjects (seed %d): %s", len(kept), seed, ", ".join(sorted(kept)))
    return DatalistRecords(labelled, datalist)


class DatalistRecords(list):
    """Training records read from a datalist file (a plain list of dicts; ``datalist`` names the file).

    The records :func:`labelled_training_records` returns. A training config tells them
    from records a program handed in itself through ``train#dataset#data`` (MONAI Label's
    bundle trainer does: it trains into the bundle's ``models/model.pt`` by design), see
    :func:`read_from_datalist`.
    """

    def __init__(self, records=(), datalist: Union[str, os.PathLike] = "") -> None:
        super().__init__(records)
        self.datalist = str(datalist)


def read_from_datalist(records: Sequence[dict]) -> bool:
    """True for records read from a datalist file here, False for records a program handed in."""
    return isinstance(records, DatalistRecords)


def _shared_subjects(records_a: Sequence[dict], records_b: Sequence[dict]) -> List[str]:
    def subjects(records: Sequence[dict]) -> set:
        return {str(r["subject"]) for r in records if isinstance(r, dict) and r.get("subject") is not None}

    return sorted(subjects(records_a) & subjects(records_b))


def check_disjoint_subjects(
    training: Sequence[dict], validation: Sequence[dict], names: Sequence[str] = ("training", "validation")
) -> None:
    """Refuse validation records whose subjects are also trained on.

    A validation subject seen in training makes the best-model choice (and
    every validation score) optimistic without a word; splits are by subject.

    Raises:
        ValueError: naming the shared subjects.
    """
    shared = _shared_subjects(training, validation)
    if shared:
        listing = ", ".join(shared[:10]) + (f", ... ({len(shared)} in all)" if len(shared) > 10 else "")
        raise ValueError(
            f"subjects {listing} are in both the {names[0]} and the {names[1]} records; "
            "splits must be by subject (fix the datalist, or validate on other subjects)"
        )


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
        cines.append({"cine_key": unique_folder_name(subject, taken), "subject": subject, "cine": str(cine)})
    return cines
