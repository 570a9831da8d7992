"""Evaluation writer of the segmentation bundle: per-frame scores and per-subject function errors.

Attached to an evaluator whose postprocessing puts the discrete prediction
back in the reference label's grid, :class:`SegmentationEvaluationWriter`
scores every frame (3D Dice and HD95 of LV cavity, LV myocardium and RV
cavity, volumes) and, for every subject with an ED and an ES frame, the
cardiac function from the prediction against the one from the reference
(EDV, ESV, EF, LV mass, RV EDV/ESV). It writes, whole or not at all:

- ``metrics.csv``: one row per subject and frame;
- ``function.csv``: one row per subject, reference, predicted and error;
- ``summary.json``: per structure mean / SD / median Dice and HD95, and for
  the function the mean error, mean absolute error, SD and Pearson correlation;
  under ``quality``, the frames whose postprocessing deleted a whole structure
  (the prediction's ``pred_postprocessing``, :class:`cmrssl.transforms.labels.KeepHeartd`),
  the frames that lost their LV cavity (Dice < 0.05), the frames and subjects
  raising quality flags (:mod:`cmrssl.metrics.quality`), the subjects whose verdict
  is ``review``, and how the verdict meets the frames' LV Dice (below 0.5, above 0.8); under
  ``ok_studies``, every score again over the subjects whose verdict is ``ok`` only; under
  ``error_decomposition_ml_per_frame``, per phase (all, ED, ES), the mean volume of each
  reference label predicted as each other label
  (:func:`cmrssl.metrics.segmentation.confusion_volumes_ml`), which says where a
  volume or mass bias comes from.

With ``label_cleanup="heart"``, each subject's frames are cleaned up together
(:func:`cmrssl.transforms.labels.keep_study_heart`, from the labels before the per-frame
clean-up): a frame keeps the heart the subject's other frames agree on. A subject's
verdict (:func:`cmrssl.metrics.quality.verdict`) comes from its frames' flags, the heart's
movement between its frames and the plausibility of its predicted function.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from ignite.engine import Events

from cmrssl.flags import as_bool
from cmrssl.io.atomic import atomic_folder, check_output_dir
from cmrssl.io.cine import swap_layout
from cmrssl.labels import STRUCTURES
from cmrssl.metrics.function import agreement, cardiac_function_from_ed_es
from cmrssl.metrics.quality import (frame_quality_flags, frames_lv_cavity_lost, function_quality_flags,
                                    heart_shift_flags, verdict)
from cmrssl.metrics.segmentation import CONFUSION_KEYS, confusion_volumes_ml, structure_dice, structure_scores
from cmrssl.transforms.labels import keep_study_heart

__all__ = ["SegmentationEvaluationWriter", "structure_summary", "summarise", "write_rows_csv"]

logger = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
FUNCTION_CSV = "function.csv"
SUMMARY_JSON = "summary.json"

#: Function quantities compared per subject: (name, unit).
FUNCTION_QUANTITIES = (
    ("lv_edv_ml", "ml"), ("lv_esv_ml", "ml"), ("lv_ef_percent", "%"), ("lv_mass_g", "g"),
    ("rv_edv_ml", "ml"), ("rv_esv_ml", "ml"), ("rv_ef_percent", "%"),
)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.numpy()
    return np.asarray(x)


def _spacing_xyz_mm(image) -> List[float]:
    """Voxel size along the array axes of a MONAI-loaded frame ``[x, y, z]`` (the affine's column norms)."""
    affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("the reference label carries no affine (load it with LoadCineFramed or LoadImaged)")
    affine = _numpy(affine).astype(np.float64)
    return [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)]


def _stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None}
    return {
        "n": int(finite.size),
        "mean": float(finite.mean()),
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
    }


def _study_cleanup(rows: List[dict]) -> dict:
    """What the study-level clean-up changed against the per-frame one (LV cavity Dice)."""
    compared = [r for r in rows if r.get("dice_lv_cavity_per_frame_cleanup") is not None
                and r.get("dice_lv_cavity") is not None]
    before = [r for r in compared if r["dice_lv_cavity_per_frame_cleanup"] < 0.5]
    return {
        "frames_compared": len(compared),
        "frames_changed": sum(bool(r.get("changed_by_study_cleanup")) for r in compared),
        "frames_with_lv_cavity_dice_below_0.5_per_frame": len(before),
        "of_which_repaired": sum(r["dice_lv_cavity"] >= 0.5 for r in before),
        "frames_with_lv_cavity_dice_lower_by_0.05": sum(
            r["dice_lv_cavity"] < r["dice_lv_cavity_per_frame_cleanup"] - 0.05 for r in compared),
    }


def _caught(rows: List[dict]) -> dict:
    """How many of the frame rows raise a flag themselves, and how many are in a subject sent to review."""
    return {"frames": len(rows), "flagged": sum(bool(r.get("quality_flags")) for r in rows),
            "in_review_subjects": sum(r.get("verdict") == "review" for r in rows)}


def _lv_dice(rows: List[dict], below: float = math.inf, above: float = -math.inf) -> List[dict]:
    """The rows whose LV cavity Dice lies strictly between ``above`` and ``below`` (NaN and None never do)."""
    return [r for r in rows if r.get("dice_lv_cavity") is not None and above < r["dice_lv_cavity"] < below]


def summarise(frame_rows: List[dict], function_rows: List[dict]) -> dict:
    """Summary statistics of the per-frame and per-subject rows (see the module docstring)."""
    summary: dict = {"frames": len(frame_rows), "subjects_with_function": len(function_rows)}
    flagged = [r for r in frame_rows if r.get("quality_flags")]
    review = [r for r in frame_rows if r.get("verdict") == "review"]
    low, high = _lv_dice(frame_rows, below=0.5), _lv_dice(frame_rows, above=0.8)
    summary["quality"] = {
        "frames_with_a_structure_lost_to_postprocessing": sum(bool(r.get("lost_to_postprocessing")) for r in frame_rows),
        "frames_with_lv_cavity_dice_below_0.05": frames_lv_cavity_lost(r.get("dice_lv_cavity") for r in frame_rows),
        "frames_with_quality_flags": len(flagged),
        "frames_without_lv_cavity": sum("no LV cavity" in r["quality_flags"].split("; ") for r in flagged),
        "subjects_with_implausible_function": sum(bool(r.get("predicted_quality_flags")) for r in function_rows),
        "subjects": len({r["subject"] for r in frame_rows}),
        "subjects_marked_review": len({r["subject"] for r in review}),
        "frames_in_review_subjects": len(review),
        # how the verdict meets the segmentation: a bad frame should be in review, a good one not
        "frames_with_lv_cavity_dice_below_0.5": _caught(low),
        "frames_with_lv_cavity_dice_above_0.8": _caught(high),
        "study_cleanup": _study_cleanup(frame_rows),
    }
    summary.update(_scores(frame_rows, function_rows))
    ok = {r["subject"] for r in frame_rows if r.get("verdict", "ok") == "ok"}
    summary["ok_studies"] = {"subjects": len(ok), "frames": sum(r["subject"] in ok for r in frame_rows),
                             **_scores([r for r in frame_rows if r["subject"] in ok],
                                       [r for r in function_rows if r["subject"] in ok])}
    return summary


def structure_summary(frame_rows: Sequence[dict]) -> Dict[str, dict]:
    """``summary.json``'s ``"segmentation"``: per structure the statistics of the frames' Dice and HD95
    (:func:`cmrssl.metrics.segmentation.structure_scores` rows), the schema both U-Net bundles' evaluations write."""
    return {name: {"dice": _stats([r[f"dice_{name}"] for r in frame_rows]),
                   "hd95_mm": _stats([r[f"hd95_mm_{name}"] for r in frame_rows])} for name in STRUCTURES}


def _scores(frame_rows: List[dict], function_rows: List[dict]) -> dict:
    """Per structure Dice and HD95, the error decomposition and the function agreement of the rows."""
    summary: dict = {"segmentation": structure_summary(frame_rows)}
    decomposition = {}
    for phase in ("all", "ED", "ES"):
        rows = [r for r in frame_rows if phase == "all" or r.get("phase") == phase]
        if rows and all(key in rows[0] for key in CONFUSION_KEYS):
            decomposition[phase] = {key: float(np.mean([r[key] for r in rows])) for key in CONFUSION_KEYS}
    summary["error_decomposition_ml_per_frame"] = decomposition
    summary["function"] = {}
    for name, unit in FUNCTION_QUANTITIES:
        pairs = [
            (r[f"reference_{name}"], r[f"predicted_{name}"]) for r in function_rows
            if r.get(f"reference_{name}") is not None and r.get(f"predicted_{name}") is not None
        ]
        if not pairs:
            continue
        summary["function"][name] = agreement(*zip(*pairs), unit=unit)
    return summary


class SegmentationEvaluationWriter:
    """Ignite handler scoring each evaluated frame against its reference and writing the tables.

    Args:
        output_dir: folder receiving ``metrics.csv``, ``function.csv``, ``summary.json``.
        overwrite: replace a folder that already holds results (checked at construction,
            before any inference runs); only the three files written here are replaced.
        inputs: the datalist and the evaluated images and labels: an output folder
            that is one of them, or contains one, is refused.
        pred_key: discrete prediction ``[1, *spatial]`` in the reference's grid.
        label_key: reference labels ``[1, *spatial]`` with their affine.
        label_cleanup: ``"heart"``: each subject's frames are cleaned up together
            (:func:`cmrssl.transforms.labels.keep_study_heart`) from the labels before the
            per-frame clean-up (``raw_key``), where the postprocessing kept them.
        raw_key: the labels before the per-frame clean-up
            (:class:`cmrssl.transforms.labels.KeepHeartd`'s ``raw_suffix``).

    Every evaluated record needs ``subject``; ``phase`` ("ED"/"ES") and
    ``frame_index`` are used when present. Frames are scored when the run completes,
    with their subject's other frames in view.
    """

    def __init__(
        self,
        output_dir: Union[str, os.PathLike],
        overwrite: bool = False,
        pred_key: str = "pred",
        label_key: str = "label",
        inputs: Sequence[Union[str, os.PathLike]] = (),
        label_cleanup: str = "none",
        raw_key: str = "pred_raw",
    ) -> None:
        self.output_dir = check_output_dir(output_dir, overwrite, inputs=inputs)
        self.overwrite = as_bool(overwrite, "overwrite")
        self.pred_key, self.label_key, self.raw_key = pred_key, label_key, raw_key
        self.label_cleanup = str(label_cleanup).strip().lower()
        self.rows: List[dict] = []
        self._frames: List[dict] = []
        self._volumes: Dict[str, Dict[str, tuple]] = defaultdict(dict)
        self.summary: dict = {}

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.rows, self._frames, self._volumes, self.summary = [], [], defaultdict(dict), {}

    def collect(self, engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, dict):
            raise ValueError("SegmentationEvaluationWriter needs the evaluator's decollate=True")
        for record, result in zip(batch, output):
            label = result[self.label_key] if self.label_key in result else record[self.label_key]
            name = getattr(label, "meta", {}).get("filename_or_obj", "reference label")
            prediction = _numpy(result[self.pred_key])
            reference = _numpy(label)
            if prediction.shape != reference.shape:
                raise ValueError(
                    f"{name}: prediction {prediction.shape} is not in the reference grid {reference.shape}; "
                    "the postprocessing must invert the preprocessing"
                )
            raw = result.get(self.raw_key) if self.label_cleanup == "heart" else None
            postprocessing = result.get(f"{self.pred_key}_postprocessing") or {}
            self._frames.append({
                "subject": str(record.get("subject", name)), "frame_index": record.get("frame_index"),
                "phase": str(record.get("phase", "")) or "other", "spacing_xyz": _spacing_xyz_mm(label),
                "prediction": np.rint(prediction[0]).astype(np.int16), "reference": reference[0].astype(np.int16),
                "raw": None if raw is None else np.rint(_numpy(raw)[0]).astype(np.int16),
                "lost": list(postprocessing.get("lost", [])),
            })

    def _by_subject(self) -> Dict[str, List[int]]:
        """The indices of each subject's frames (and of their rows, once scored), in evaluation order."""
        groups: Dict[str, List[int]] = defaultdict(list)
        for index, frame in enumerate(self._frames):
            groups[frame["subject"]].append(index)
        return groups

    def _clean_up_by_subject(self) -> None:
        """With the heart clean-up, each subject's frames again, together, from their raw labels (in place)."""
        for indices in self._by_subject().values():
            frames = [self._frames[i] for i in indices]
            if any(f["raw"] is None for f in frames) or len({f["raw"].shape for f in frames}) > 1:
                continue  # no raw labels, or frames on different grids: the per-frame clean-up stands
            raw = np.stack([f["raw"] for f in frames])
            cleaned, _ = keep_study_heart(raw, slice_axis=-1)
            for frame, before, after in zip(frames, raw, cleaned):
                frame["per_frame"] = frame["prediction"]  # what the per-frame clean-up kept: the comparison
                frame["prediction"] = after
                frame["lost"] = [n for n, v in STRUCTURES.items() if (before == v).any() and not (after == v).any()]

    def _score(self) -> None:
        """The frame rows and the ED/ES volumes, once every frame is in."""
        for frame in self._frames:
            prediction, reference, spacing_xyz = frame["prediction"], frame["reference"], frame["spacing_xyz"]
            scores = structure_scores(prediction, reference, spacing_xyz)
            scores.update(confusion_volumes_ml(prediction, reference, spacing_xyz, slice_axis=-1))
            subject, phase = frame["subject"], frame["phase"]
            row = {"subject": subject, "frame_index": frame["frame_index"], "phase": phase, **scores,
                   "lost_to_postprocessing": ", ".join(frame["lost"]),
                   "quality_flags": "; ".join(frame_quality_flags(swap_layout(prediction), spacing_xyz[::-1]))}
            if "per_frame" in frame:  # the study-level clean-up against the per-frame one, on the LV cavity
                row["dice_lv_cavity_per_frame_cleanup"] = structure_dice(frame["per_frame"], reference)["dice_lv_cavity"]
                row["changed_by_study_cleanup"] = bool((frame["per_frame"] != prediction).any())
            self.rows.append(row)
            if phase in ("ED", "ES"):
                # [x, y, z] -> [Z, H, W], the function module's layout, and spacing (dz, dy, dx) alike
                self._volumes[subject][phase] = (
                    swap_layout(prediction), swap_layout(reference), spacing_xyz[::-1], frame["frame_index"])

    def _verdicts(self, function_rows: List[dict]) -> Dict[str, dict]:
        """Per subject: its frames' flags, the heart's movement between them, its predicted function's flags."""
        functions = {r["subject"]: r for r in function_rows}
        verdicts = {}
        for subject, indices in self._by_subject().items():
            rows, frames = [self.rows[i] for i in indices], [self._frames[i] for i in indices]
            flags = [f"{r['quality_flags']} ({r['phase']})" for r in rows if r["quality_flags"]]
            if len(frames) > 1 and len({f["prediction"].shape for f in frames}) == 1:
                flags += heart_shift_flags(np.stack([swap_layout(f["prediction"]) for f in frames]),
                                           frames[0]["spacing_xyz"][::-1], [r["phase"] for r in rows])
            function = functions.get(subject)
            if function is not None and function.get("predicted_quality_flags"):
                flags += function["predicted_quality_flags"].split("; ")
            verdicts[subject] = verdict(flags)
        return verdicts

    def _function_rows(self) -> List[dict]:
        rows = []
        for subject, phases in sorted(self._volumes.items()):
            if set(phases) != {"ED", "ES"}:
                continue
            (ed_pred, ed_ref, spacing, ed_frame), (es_pred, es_ref, _, es_frame) = phases["ED"], phases["ES"]
            frames = {"ed_frame": int(ed_frame or 0), "es_frame": int(es_frame if es_frame is not None else 1)}
            if frames["ed_frame"] == frames["es_frame"]:
                frames = {"ed_frame": 0, "es_frame": 1}
            row: dict = {"subject": subject}
            try:
                reference = cardiac_function_from_ed_es(ed_ref, es_ref, spacing, source=subject, **frames).scalars()
            except ValueError as error:
                logger.warning("%s: no reference function: %s", subject, error)
                continue
            try:
                predicted = cardiac_function_from_ed_es(ed_pred, es_pred, spacing, source=subject, **frames).scalars()
            except ValueError as error:  # e.g. no LV found on the predicted ES frame
                logger.warning("%s: no function from the prediction: %s", subject, error)
                predicted = {}
            for name, _ in FUNCTION_QUANTITIES:
                ref_value, pred_value = reference.get(name), predicted.get(name)
                row[f"reference_{name}"] = ref_value
                row[f"predicted_{name}"] = pred_value
                row[f"error_{name}"] = (
                    None if ref_value is None or pred_value is None else float(pred_value) - float(ref_value)
                )
            row["predicted_quality_flags"] = "; ".join(
                function_quality_flags(predicted) if predicted else ["no function from the prediction"])
            rows.append(row)
        return rows

    def write(self, engine=None) -> None:
        if not self._frames:
            raise RuntimeError("no frame was evaluated: is the datalist split empty?")
        if self.label_cleanup == "heart":
            self._clean_up_by_subject()
        self.rows, self._volumes = [], defaultdict(dict)
        self._score()
        function_rows = self._function_rows()
        verdicts = self._verdicts(function_rows)
        for row in self.rows + function_rows:
            row["verdict"] = verdicts[row["subject"]]["verdict"]
        for row in function_rows:
            row["review_reasons"] = "; ".join(verdicts[row["subject"]]["review_reasons"])
        self.summary = summarise(self.rows, function_rows)
        replace = self.overwrite or (self.output_dir.is_dir() and not any(self.output_dir.iterdir()))
        owned = {METRICS_CSV, FUNCTION_CSV, SUMMARY_JSON}.__contains__  # no stale function.csv of an earlier run
        with atomic_folder(self.output_dir, overwrite=replace, owned=owned) as tmp:
            write_rows_csv(tmp / METRICS_CSV, self.rows)
            if function_rows:
                write_rows_csv(tmp / FUNCTION_CSV, function_rows)
            (tmp / SUMMARY_JSON).write_text(json.dumps(self.summary, indent=2))
        dice = {k: v["dice"]["mean"] for k, v in self.summary["segmentation"].items()}
        logger.info(
            "evaluated %d frames: mean Dice %s -> %s", len(self.rows),
            ", ".join(f"{k} {v:.3f}" for k, v in dice.items() if v is not None), self.output_dir,
        )


def write_rows_csv(path: Path, rows: Sequence[dict]) -> None:
    """``rows`` as a CSV table, its columns in the order the rows first name them."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
