"""Study records for LV volume regression: a datalist's frame records grouped by subject.

The datalists of every indexer hold one record per subject and frame. The
ranking bundle trains on whole studies, so :func:`ranking_studies` groups them:

``{"subject", "frames": [{"image", "label"?, "frame_index"}, ...], "cine"?,
"ed_frame"?, "es_frame"?, "edv_ml"?, "esv_ml"?, "frame_numbers_known"?, "labelled": bool}``

A study is *labelled* when it carries LV labels (per-slice areas) or both study
volumes (``edv_ml`` and ``esv_ml``, the Kaggle 2016 ``train.csv``). Few-label
runs keep the labels of ``num_labelled_subjects`` subjects, drawn as every
bundle draws them (:func:`cmrssl.data.subsets.choose_subjects`), and strip the
others, which join the unlabelled pool with the studies of any extra
(unlabelled) datalists.

Everything is checked here, before training starts; errors name the file or the
record (datalist, split, record number, subject): a label with no LV cavity, a
record whose slice spacing is not positive, a subject in two datalists, and the
records that cannot be true that every datalist load refuses
(:func:`cmrssl.data.subsets.check_record_contents`: EDV < ESV or one volume of
the two, two records for one frame).

A study's frames need their cycle order (the temporal ranking runs ED -> ES -> ED
through them), and ``frame_index`` is the only evidence of it: the order of the
records in the list is not. So:

- a study with a ``cine`` takes its frames from the cine; a record with a label, or
  with phase ED/ES, must say which cine frame it is (``frame_index``), else it is
  refused; an unlabelled "other" record without one adds nothing and is ignored;
- a study of 3D frame files (no ``cine``) needs every frame's ``frame_index``
  (absent, ``null`` or -1: not known), refused otherwise, except where the order
  does not matter: a single frame (index 0), and exactly two frames whose ``phase``
  says which is ED and which ES (M&Ms-2 ED/ES files without a matching cine frame,
  ``frame_index`` null). Those two take positions 0 (ED) and 1 (ES), and the study
  is marked ``frame_numbers_known: False``: its ED/ES frame numbers are not reported
  or scored as frame numbers, as none is known.
- two records naming different frames as the study's ED (or ES) are refused, and so is
  a study whose ED label holds less LV cavity than its ES label (EF < 0 as reference:
  ED and ES swapped). On the 100 ACDC training patients the smallest ED/ES ratio is 1.12.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from cmrssl.data.datalist import load_nifti
from cmrssl.data.subsets import (
    VOLUME_FIELDS,
    choose_subjects,
    datalist_records,
    frame_number,
    log_drawn_subjects,
    record_name,
    record_volumes,
    split_has_records,
)
from cmrssl.labels import LV_CAVITY

__all__ = ["ranking_studies", "check_study_label", "validation_studies"]

logger = logging.getLogger(__name__)

_VOLUME_KEYS = VOLUME_FIELDS
_PHASES = ("ED", "ES")


def check_study_label(path: str) -> float:
    """Refuse a label file without LV cavity (label 1): its study would teach an empty heart.

    Returns the LV cavity volume of the label in ml (voxel count x the header's voxel volume),
    for the ED/ES check of :func:`ranking_studies`.
    """
    img, data = load_nifti(path, "label")
    voxels = int((np.asarray(data) == LV_CAVITY).sum())
    if not voxels:
        raise ValueError(f"{path}: label has no LV cavity (label {LV_CAVITY}); the study cannot supervise "
                         "LV volumes (fix the label, or remove 'label' to use the study unlabelled)")
    return voxels * abs(float(np.prod(img.header.get_zooms()[:3]))) / 1000.0


def _check_ed_above_es(study: dict, volumes: Dict[int, float], names: Dict[tuple, str]) -> None:
    """Refuse a study whose ED label holds less LV cavity than its ES label: the references would give EF < 0."""
    ed, es = study.get("ed_frame"), study.get("es_frame")
    if ed is None or es is None or ed not in volumes or es not in volumes or volumes[ed] >= volumes[es]:
        return
    raise ValueError(
        f"{names[(study['subject'], ed)]}: its ED frame's label holds {volumes[ed]:.1f} ml of LV cavity, less than "
        f"the {volumes[es]:.1f} ml of the ES frame's ({names[(study['subject'], es)]}): EDV < ESV cannot be true; "
        "are ED and ES swapped (the records' phase, or the data set's ED/ES columns)?")


def _named_records(datalist: Union[str, os.PathLike], splits: Union[str, Sequence[str]],
                   dataset_dir: str) -> List[tuple]:
    """``[(record, name)]`` of ``splits``, checked by :func:`datalist_records`; ``name`` says where each is."""
    named = []
    for split in [splits] if isinstance(splits, str) else list(splits):
        for number, record in enumerate(datalist_records(datalist, split, dataset_dir)):
            named.append((record, record_name(str(datalist), split, number, record)))
    return named


def _phase(record: dict) -> str:
    return str(record.get("phase") or record.get("frame") or "").upper()


def _add_frame(study: dict, record: dict, name: str, frame_index: int, names: Dict[tuple, str]) -> None:
    if any(f["frame_index"] == frame_index for f in study["frames"]):
        raise ValueError(f"{name}: frame_index {frame_index} is already a frame of subject {study['subject']}: "
                         "two records for one frame (fix the frame_index, or remove one)")
    frame = {"image": record["image"], "frame_index": frame_index}
    if record.get("label"):
        frame["label"] = record["label"]
    study["frames"].append(frame)
    names[(study["subject"], frame_index)] = name
    phase = _phase(record)
    if phase in _PHASES:
        key = f"{phase.lower()}_frame"
        if study.get(key, frame_index) != frame_index:
            raise ValueError(f"{name}: phase {phase} at frame {frame_index}, but subject {study['subject']} already "
                             f"has its {phase} at frame {study[key]}: one study has one {phase} frame")
        study[key] = frame_index


def _place_frames(study: dict, named: List[tuple], names: Dict[tuple, str]) -> None:
    """Put a study's frame records in cycle order (module docstring), or refuse them, naming the record."""
    numbered = [(record, name, frame_number(record, name)) for record, name in named]
    if study.get("cine"):
        for record, name, t in numbered:
            if t is None:
                if record.get("label") or _phase(record) in _PHASES:
                    what = "a label" if record.get("label") else f"phase {_phase(record)}"
                    raise ValueError(f"{name}: {what} but no frame_index: which frame of the cine {study['cine']} "
                                     "it is cannot be known; give the record its frame_index")
                continue  # an unlabelled frame of the cine: the cine holds it already
            _add_frame(study, record, name, t, names)
        return
    unknown = [name for _, name, t in numbered if t is None]
    if not unknown:
        for record, name, t in numbered:
            _add_frame(study, record, name, t, names)
        return
    if len(numbered) == 1:  # one frame: there is no order to know
        _add_frame(study, numbered[0][0], numbered[0][1], 0, names)
        return
    if len(numbered) == 2 and sorted(_phase(r) for r, _, _ in numbered) == list(_PHASES):
        # ED and ES named by their phase: a two-frame cycle ranks ED above ES whichever comes first,
        # so no frame number is needed, and none is invented for the reports either
        for record, name, _ in sorted(numbered, key=lambda item: _PHASES.index(_phase(item[0]))):
            _add_frame(study, record, name, _PHASES.index(_phase(record)), names)
        study["frame_numbers_known"] = False
        return
    raise ValueError(
        f"{unknown[0]}: no frame_index, and subject {study['subject']} has {len(numbered)} frame records and no "
        "cine: their order through the cardiac cycle cannot be known (the order of the list is no evidence of "
        "it); give every frame record its frame_index, or the study's 'cine'")


def _group(named: Sequence[tuple], names: Optional[Dict[tuple, str]] = None) -> "OrderedDict[str, dict]":
    """Studies by subject, in cycle order; ``names`` (when given) gets ``{(subject, frame_index): record name}``."""
    names = {} if names is None else names
    studies: "OrderedDict[str, dict]" = OrderedDict()
    records_of: Dict[str, List[tuple]] = {}
    for record, name in named:
        subject = record.get("subject")
        if subject in (None, ""):
            raise ValueError(f"{name}: no 'subject' (studies are grouped by subject)")
        subject = str(subject)
        spacing = record.get("spacing_zyx_mm")
        if spacing is not None and not float(spacing[0]) > 0:
            raise ValueError(f"{record['image']}: slice spacing {spacing[0]} mm (no geometry): LV volumes need a "
                             "short-axis stack with slice positions")
        study = studies.setdefault(subject, {"subject": subject, "frames": []})
        if record.get("cine"):
            study.setdefault("cine", record["cine"])
        records_of.setdefault(subject, []).append((record, name))
        volumes = record_volumes(record, name)  # checked with the datalist: one pair per subject, EDV >= ESV
        if volumes is not None:
            study["edv_ml"], study["esv_ml"] = volumes
    for subject, study in studies.items():
        _place_frames(study, records_of[subject], names)
    return studies


def _strip(study: dict) -> dict:
    stripped = {k: v for k, v in study.items() if k not in _VOLUME_KEYS}
    stripped["frames"] = [{k: v for k, v in f.items() if k != "label"} for f in study["frames"]]
    stripped["labelled"] = False
    return stripped


def _is_labelled(study: dict) -> bool:
    return any(f.get("label") for f in study["frames"]) or all(study.get(k) is not None for k in _VOLUME_KEYS)


def _other_split_sizes(datalist: Union[str, os.PathLike], splits: Sequence[str]) -> Dict[str, int]:
    """Image records per non-empty split of ``datalist`` outside ``splits``."""
    content = json.loads(Path(datalist).expanduser().read_text())
    sizes = {name: sum(isinstance(r, dict) and "image" in r for r in records) for name, records in content.items()
             if name not in splits and isinstance(records, list)}
    return {name: n for name, n in sizes.items() if n}


def ranking_studies(
    datalist: Union[str, os.PathLike],
    splits: Union[str, Sequence[str]] = "training",
    dataset_dir: str = "",
    num_labelled_subjects: int = 0,
    seed: int = 0,
    unlabelled_datalists: Optional[Iterable[Union[str, os.PathLike]]] = None,
    check_labels: bool = True,
    unlabelled_splits: Union[str, Sequence[str]] = ("training",),
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
        unlabelled_datalists: more datalists (any indexer's) whose ``unlabelled_splits`` studies
            join the unlabelled pool (their labels unused); the studies of their other splits are
            counted in a warning, not used (a held-out split stays held out).
        unlabelled_splits: the splits read from each of ``unlabelled_datalists``.

    Returns:
        Study dicts (module docstring); ``all`` is labelled then unlabelled.

    Raises:
        ValueError: see the module docstring; fewer labelled subjects than asked for.
        FileNotFoundError: a missing datalist or file.
    """
    where = str(datalist)
    names: Dict[tuple, str] = {}
    studies = _group(_named_records(datalist, splits, dataset_dir), names)
    for study in studies.values() if check_labels else ():
        volumes = {frame["frame_index"]: check_study_label(frame["label"])
                   for frame in study["frames"] if frame.get("label")}
        _check_ed_above_es(study, volumes, names)
    labelled = [s for s in studies.values() if _is_labelled(s)]
    if int(num_labelled_subjects) > 0:
        kept = set(choose_subjects([s["subject"] for s in labelled], num_labelled_subjects, seed))
        log_drawn_subjects(kept, seed, logger)
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
        extra_splits = [unlabelled_splits] if isinstance(unlabelled_splits, str) else list(unlabelled_splits)
        added = _group(_named_records(extra, extra_splits, ""))
        for subject, study in added.items():
            if subject in studies:
                raise ValueError(f"{extra}: subject {subject} is also in {datalist}; one study cannot be in two pools")
            result["unlabelled"].append(_strip(study))
        others = _other_split_sizes(extra, extra_splits)
        if others:
            logger.warning("%s: %d studies of %s join the unlabelled pool; its other splits are not used (%s): "
                           "add them with --unlabelled_splits, or index with --fractions '{\"training\": 1.0}'",
                           extra, len(added), "/".join(extra_splits),
                           ", ".join(f"{name} {n} records" for name, n in others.items()))
    one_frame = sum(1 for s in result["unlabelled"] if not s.get("cine") and len(s["frames"]) < 2)
    if one_frame:
        logger.info("%d unlabelled studies have one frame: temporal ranking is skipped for them", one_frame)
    logger.info("%s %s: %d labelled and %d unlabelled studies", where, splits, len(result["labelled"]),
                len(result["unlabelled"]))
    result["all"] = result["labelled"] + result["unlabelled"]
    return result


def validation_studies(datalist: Union[str, os.PathLike], split: str = "validation",
                       dataset_dir: str = "") -> List[dict]:
    """The labelled studies of ``split`` that validate a training (its curve); ``[]``, said in the log, when the
    datalist has no such split or it is empty. The training's pools read ``train_split`` alone, so these
    studies stay out of them unless ``train_split`` names this split too."""
    if not split_has_records(datalist, split):
        logger.info("%s: no '%s' studies: training without a validation curve", datalist, split)
        return []
    return ranking_studies(datalist, split, dataset_dir)["labelled"]

