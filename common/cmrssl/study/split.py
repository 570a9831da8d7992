"""The study's split of an ACDC root, and its pools: the held-out evaluation set, the labelled and unlabelled pools."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

from cmrssl.data.acdc import find_acdc_patients, index_acdc, read_acdc_patient, read_info_cfg
from cmrssl.io.atomic import atomic_file
from cmrssl.io.reader import read_cine

__all__ = ["RECORD", "cine_frames", "make_split", "planned_split", "prepare_data", "say", "study_split"]

#: what ``OUT/study.json`` records (budget, data, pools): fixed per output folder; a folder with it holds a study
RECORD = "study.json"


def say(message: str) -> None:
    """The study's progress line (standard output)."""
    print(f"[study] {message}", flush=True)


def make_split(data: Path, eval_per_group: int, validation_per_group: int = 0) -> dict:
    """The fixed split of an ACDC root: per ``Group`` the ``eval_per_group`` highest-numbered patients are held out
    for evaluation, and the ``validation_per_group`` highest-numbered of the rest validate (a curve each fine-tune
    is watched by, never a model chosen by: :data:`cmrssl.study.budgets.BUDGETS`); the rest is the labelled pool."""
    groups: Dict[str, List[str]] = {}
    for folder in find_acdc_patients(data):
        group = read_info_cfg(folder / "Info.cfg").get("Group")
        if not group:
            raise ValueError(f"{folder / 'Info.cfg'}: no 'Group:' line; the split is stratified by group")
        groups.setdefault(group, []).append(folder.name)
    evaluation, validation, pool = [], [], []
    for group, patients in sorted(groups.items()):
        if len(patients) <= eval_per_group + validation_per_group:
            raise ValueError(f"{data}: group {group} has {len(patients)} patients, too few to hold out "
                             f"{eval_per_group} (--eval_per_group) and {validation_per_group} for validation and "
                             "keep any for training")
        rest = patients[:-eval_per_group]
        evaluation += patients[-eval_per_group:]
        validation += rest[len(rest) - validation_per_group:]
        pool += rest[:len(rest) - validation_per_group]
    rule = f"per Info.cfg group, the {eval_per_group} highest-numbered patients are the evaluation set"
    if validation_per_group:
        rule += f", the {validation_per_group} next validate"
    return {"rule": rule, "groups": {g: len(p) for g, p in sorted(groups.items())},
            "evaluation": sorted(evaluation), "validation": sorted(validation), "labelled_pool": sorted(pool)}


def cine_frames(path: str) -> int:
    """The number of cardiac phases of a cine (every frame of a 4D cine is a pretraining record)."""
    return int(read_cine(path).pixels.shape[0])


def study_split(out: Path, data: Path, eval_per_group: int, validation_per_group: int = 0) -> dict:
    """The split the study in ``out`` holds (its ``split.json``, when ``out`` holds a study), else the one it would
    make of ``data`` (:func:`make_split`, which reads ``Info.cfg`` files only and writes nothing)."""
    earlier = out / "split.json"
    if (out / RECORD).exists() and earlier.exists():
        return json.loads(earlier.read_text())
    return make_split(data, eval_per_group, validation_per_group)


def planned_split(split: dict, out: Path, data: Path, extra_unlabelled: Sequence[str]) -> dict:
    """``split`` as :func:`prepare_data` completes it, writing nothing (``--dry_run``): its unlabelled pool's size
    counts every frame of every cine as a pretraining record, and its datalists are named under ``out``."""
    if "datalists" in split:  # made already
        return split
    patients = split["labelled_pool"] + split.get("validation", [])
    cines = [str(cine) for cine in (read_acdc_patient(data / patient).cine for patient in patients) if cine]
    return dict(split, unlabelled_pool={"records": 2 * len(patients)
                                        + sum(cine_frames(c) for c in cines + list(extra_unlabelled))},
                datalists={"acdc": str(out / "data" / "acdc" / "datalist.json"),
                           "unlabelled": str(out / "data" / "unlabelled.json")})


def prepare_data(out: Path, data: Path, eval_per_group: int, extra_unlabelled: Sequence[str],
                 validation_per_group: int = 0) -> dict:
    """split.json, the ACDC datalist (training: pool, validation, test: evaluation) and the unlabelled datalist
    (the images of the pool and validation patients, labels never read, and the cines); reused."""
    split_path = out / "split.json"
    if split_path.exists():
        return json.loads(split_path.read_text())
    split = make_split(data, eval_per_group, validation_per_group)
    acdc_dir = out / "data" / "acdc"
    shutil.rmtree(out / "data", ignore_errors=True)  # only a run that died before split.json left this
    say(f"indexing {data}: {len(split['labelled_pool'])} pool and {len(split['evaluation'])} evaluation patients")
    subjects = {"training": split["labelled_pool"], "test": split["evaluation"]}
    if split["validation"]:
        subjects["validation"] = split["validation"]
    datalist = index_acdc(data, acdc_dir, subjects=subjects)
    records, cines = [], []
    for record in datalist["training"] + datalist.get("validation", []):  # images only: no label is read here
        records.append({"image": record["image"], "subject": record["subject"], "frame_index": record["frame_index"]})
        if record.get("cine") and record["cine"] not in cines:
            cines.append(record["cine"])
    extra = [str(Path(c).resolve()) for c in extra_unlabelled]
    extra_records = []
    for cine in cines + extra:
        frames = cine_frames(cine)
        name = Path(cine).name.split(".")[0]
        cine_records = [{"image": cine, "subject": name, "frame_index": t} for t in range(frames)]
        records += cine_records
        if cine in extra:  # the ranking bundle's extra pool (a pool patient's cine is in its ACDC study already)
            extra_records += [dict(r, cine=cine) for r in cine_records]
    cines += extra
    split["unlabelled_pool"] = {"acdc_frames": len(datalist["training"]) + len(datalist.get("validation", [])),
                                "cines": cines,
                                "records": len(records), "extra_records": len(extra_records)}
    split["datalists"] = {"acdc": str(acdc_dir / "datalist.json"), "unlabelled": str(out / "data" / "unlabelled.json"),
                          "extra_cines": str(out / "data" / "extra_cines.json")}
    with atomic_file(out / "data" / "unlabelled.json") as tmp:
        tmp.write_text(json.dumps({"training": records}, indent=1))
    with atomic_file(out / "data" / "extra_cines.json") as tmp:
        tmp.write_text(json.dumps({"training": extra_records}, indent=1))
    with atomic_file(split_path) as tmp:
        tmp.write_text(json.dumps(split, indent=2))
    return split
