"""Study records for LV volume regression: a datalist's frame records grouped by subject.

The datalists of every indexer hold one record per subject and frame. The
ranking bundle trains on whole studies, so :func:`ranking_studies` groups them:

``{"subject", "frames": [{"image", "label"?, "frame_index"}, ...], "cine"?,
"ed_frame"?, "es_frame"?, "edv_ml"?, "esv_ml"?, "labelled": bool}``

A study is *labelled* when it carries LV labels (per-slice areas) or both study
volumes (``edv_ml`` and ``esv_ml``, the Kaggle 2016 ``train.csv``). Few-label
runs keep the labels of ``num_labelled_subjects`` subjects, drawn as every
bundle draws them (:func:`cmrssl.data.subsets.choose_subjects`), and strip the
others, which join the unlabelled pool with the studies of any extra
(unlabelled) datalists.

Everything is checked here, before training starts; errors name the file:
a label with no LV cavity, a volumes-only record with one of the two volumes, a
record whose slice spacing is not positive, a subject in two datalists.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from cmrssl.data.datalist import load_nifti
from cmrssl.data.subsets import choose_subjects, datalist_records
from cmrssl.labels import LV_CAVITY

__all__ = ["ranking_studies", "check_study_label"]

logger = logging.getLogger(__name__)

_VOLUME_KEYS = ("edv_ml", "esv_ml")


def check_study_label(path: str) -> None:
    """Refuse a label file without LV cavity (label 1): its study would teach an empty heart."""
    _, data = load_nifti(path, "label")
    if not (np.asarray(data) == LV_CAVITY).any():
        raise ValueError(f"{path}: label has no LV cavity (label {LV_CAVITY}); the study cannot supervise "
                         "LV volumes (fix the label, or remove 'label' to use the study unlabelled)")


def _volume(record: dict, key: str, where: str) -> Optional[float]:
    value = record.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key} {value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{where}: {key} must be a positive volume in ml, got {value!r}")
    return number


def _group(records: Sequence[dict], where: str) -> "OrderedDict[str, dict]":
    studies: "OrderedDict[str, dict]" = OrderedDict()
    for number, record in enumerate(records):
        subject = record.get("subject")
        if subject in (None, ""):
            raise ValueError(f"{where}: record {number} has no 'subject' (studies are grouped by subject)")
        subject = str(subject)
        spacing = record.get("spacing_zyx_mm")
        if spacing is not None and not float(spacing[0]) > 0:
            raise ValueError(f"{record['image']}: slice spacing {spacing[0]} mm (no geometry): LV volumes need a "
                             "short-axis stack with slice positions")
        study = studies.setdefault(subject, {"subject": subject, "frames": []})
        if record.get("cine"):
            study.setdefault("cine", record["cine"])
        frame_index = int(record.get("frame_index", -1))
        if frame_index < 0:
            frame_index = len(study["frames"])  # a 3D frame file without its cycle index: keep the order
        frame = {"image": record["image"], "frame_index": frame_index}
        if record.get("label"):
            frame["label"] = record["label"]
        if not any(f["frame_index"] == frame_index for f in study["frames"]):
            study["frames"].append(frame)
        phase = str(record.get("phase") or record.get("frame") or "").upper()
        if phase in ("ED", "ES"):
            study[f"{phase.lower()}_frame"] = frame_index
        volumes = {key: _volume(record, key, f"{where}: subject {subject}") for key in _VOLUME_KEYS}
        given = [key for key, value in volumes.items() if value is not None]
        if len(given) == 1:
            raise ValueError(f"{where}: subject {subject} has {given[0]} but not "
                             f"{[k for k in _VOLUME_KEYS if k not in given][0]}: a volumes-only record needs both")
        for key, value in volumes.items():
            if value is not None:
                study[key] = value
    return studies


def _strip(study: dict) -> dict:
    stripped = {k: v for k, v in study.items() if k not in _VOLUME_KEYS}
    stripped["frames"] = [{k: v for k, v in f.items() if k != "label"} for f in study["frames"]]
    stripped["labelled"] = False
    return stripped


def _is_labelled(study: dict) -> bool:
    return any(f.get("label") for f in study["frames"]) or all(study.get(k) is not None for k in _VOLUME_KEYS)


def ranking_studies(
    datalist: Union[str, os.PathLike],
    splits: Union[str, Sequence[str]] = "training",
    dataset_dir: str = "",
    num_labelled_subjects: int = 0,
    seed: int = 0,
    unlabelled_datalists: Optional[Iterable[Union[str, os.PathLike]]] = None,
    check_labels: bool = True,
) -> Dict[str, List[dict]]:
    """The studies of ``splits``: ``{"labelled": [...], "unlabelled": [...], "all": [...]}``.

    Args:
        datalist: datalist JSON (any indexer's); relative paths resolve as
            :func:`cmrssl.data.subsets.datalist_records` does.
        splits: splits whose records are read.
        dataset_dir: base folder for relative paths.
        num_labelled_subjects: keep the labels of this many labelled subjects (0: all);
            the others become unlabelled.
        seed: the draw of the labelled subjects.
        unlabelled_datalists: more datalists whose ``training`` studies join the
            unlabelled pool (their labels unused).

    Returns:
        Study dicts (module docstring); ``all`` is labelled then unlabelled.

    Raises:
        ValueError: see the module docstring; fewer labelled subjects than asked for.
        FileNotFoundError: a missing datalist or file.
    """
    where = str(datalist)
    studies = _group(datalist_records(datalist, splits, dataset_dir), where)
    for study in studies.values() if check_labels else ():
        for frame in study["frames"]:
            if frame.get("label"):
                check_study_label(frame["label"])
    labelled = [s for s in studies.values() if _is_labelled(s)]
    if int(num_labelled_subjects) > 0:
        kept = set(choose_subjects([s["subject"] for s in labelled], num_labelled_subjects, seed))
        logger.info("%d labelled subjects (seed %d): %s", len(kept), seed, ", ".join(sorted(kept)))
    else:
        kept = {s["subject"] for s in labelled}
    result: Dict[str, List[dict]] = {"labelled": [], "unlabelled": []}
    for study in studies.values():
        if study["subject"] in kept:
            result["labelled"].append(dict(study, labelled=True))
        else:
            result["unlabelled"].append(_strip(study))
    for extra in unlabelled_datalists or ():
        if not extra:
            continue
        for subject, study in _group(datalist_records(extra, "training", ""), str(extra)).items():
            if subject in studies:
                raise ValueError(f"{extra}: subject {subject} is also in {datalist}; one study cannot be in two pools")
            result["unlabelled"].append(_strip(study))
    one_frame = sum(1 for s in result["unlabelled"] if not s.get("cine") and len(s["frames"]) < 2)
    if one_frame:
        logger.info("%d unlabelled studies have one frame: temporal ranking is skipped for them", one_frame)
    logger.info("%s %s: %d labelled and %d unlabelled studies", where, splits, len(result["labelled"]),
                len(result["unlabelled"]))
    result["all"] = result["labelled"] + result["unlabelled"]
    return result
