"""Evaluation and inference of slice-area networks: a study's areas -> its volume curve and function report.

MONAI's ``SupervisedEvaluator`` runs :class:`StudyAreaInferer` (a study ``[1, F, Z, H, W]`` -> areas
``[1, F, Z]``, or with a segmenting network every class's probabilities ``[1, F, Z, 4, H, W]``,
:func:`study_areas`) and :class:`StudyVolumeWriter`, which sums those into areas (and takes their argmax for
the masks of a cine input) and turns the areas into the volume curves, EDV, ESV, EF and ED/ES frames,
and from a segmenting network also the LV mass and the RV volumes
(:func:`cmrssl.metrics.function.cardiac_function_from_volume_curves`), and
writes, per study, ``function.json`` / ``function.csv`` / ``volume_curve.png`` (the segmentation bundle's
report), and, against references, the segmentation bundle's evaluation tables: ``function.csv`` (a row per
subject: ``reference_``/``predicted_``/``error_`` of each quantity) and ``summary.json`` (``"function"``:
the agreement of each quantity, :func:`cmrssl.metrics.function.agreement`; ``"subjects_with_function"``),
plus ``"frames"`` (ED/ES frame agreement) and Bland-Altman PNGs. From a segmenting network whose batch holds the
labels on the source grid (``LoadStudyStack(source_labels=True)``), every labelled frame is scored as the segmentation
bundle scores it: ``metrics.csv`` (a row per frame: 3D Dice, HD95 and volumes of each structure,
:func:`cmrssl.metrics.segmentation.structure_scores`) and ``summary.json``'s ``"segmentation"``, of the class
probabilities put back on the label's grid, their argmax and the study's heart kept (the segmentation bundle's way).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Events
from ignite.metrics import Metric
from monai.inferers import Inferer
from monai.utils import CommonKeys

from cmrssl.data.ranking import ranking_studies
from cmrssl.data.subsets import resolve_cine_inputs
from cmrssl.engines.cine_inference import SEGMENTATION_FILE
from cmrssl.engines.seg_evaluation import FUNCTION_CSV as SCORES_CSV
from cmrssl.engines.seg_evaluation import (FUNCTION_QUANTITIES, METRICS_CSV, SUMMARY_JSON, structure_summary,
                                           write_rows_csv)
from cmrssl.flags import as_bool, square_pixdim_mm
from cmrssl.io.atomic import (
    SUBJECTS_JSON,
    atomic_folder,
    check_output_dir,
    listed_folders,
    unique_folder_name,
    write_subjects_json,
)
from cmrssl.io.nifti import segmentation_nifti
from cmrssl.io.reader import read_cine
from cmrssl.labels import LV_CAVITY
from cmrssl.metrics.segmentation import structure_dice, structure_scores
from cmrssl.metrics.function import agreement, cardiac_function_from_lv_curve, cardiac_function_from_volume_curves
from cmrssl.metrics.plots import plot_bland_altman, plot_volume_curve
from cmrssl.metrics.quality import frames_lv_cavity_lost
from cmrssl.metrics.report import FUNCTION_CSV, FUNCTION_JSON, VOLUME_CURVE_PNG, write_function_report
from cmrssl.transforms.labels import keep_study_heart
from cmrssl.transforms.ranking import labels_on_source, probabilities_on_source

__all__ = ["study_areas", "StudyAreaInferer", "StudyMeanDice", "StudyVolumeWriter", "inference_studies", "study_inputs",
           "QUANTITIES", "VOLUMES_FROM"]

logger = logging.getLogger(__name__)

#: The report's note for a study whose frames are known only as ED and ES (cmrssl.data.ranking).
_UNKNOWN_FRAME_NUMBERS = ("ED/ES frame numbers unknown: the datalist names the study's frames by phase only "
                          "(frame_index null), so ED/ES are not reported or scored as frame numbers")
#: the quantities scored: the segmentation bundle's evaluation names (``cmrssl.engines.seg_evaluation``); the LV
#: mass and RV ones only where the network segments them and the references have them
QUANTITIES = tuple(FUNCTION_QUANTITIES)
_LV_QUANTITIES = ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent")
#: ``--volumes_from`` of a segmenting network: its summed class probabilities over the crop (the areas it trains on),
#: or its masks, the argmax of those cleaned up as the segmentation bundle cleans its own
#: (:func:`cmrssl.transforms.labels.keep_study_heart`), so the report's volumes are the written segmentation's
VOLUMES_FROM = ("probabilities", "masks")


def study_areas(network: nn.Module, image: torch.Tensor, chunk_size: int = 64, probabilities: bool = False) -> torch.Tensor:
    """A study ``image`` ``[F, Z, H, W]`` through ``network`` in chunks of slices: the LV cavity areas ``[F, Z]``
    (mm^2), or with ``probabilities`` (a network that segments) every class's probabilities ``[F, Z, C, H, W]``."""
    f, z, h, w = image.shape
    flat = image.reshape(f * z, 1, h, w)
    chunk = max(int(chunk_size), 1)
    measure = network.probabilities if probabilities else network
    out = torch.cat([measure(flat[i:i + chunk]) for i in range(0, flat.shape[0], chunk)])
    return out.reshape(f, z, *out.shape[1:]) if probabilities else out.reshape(f, z)


class StudyAreaInferer(Inferer):
    """``inputs [B, F, Z, H, W]`` -> ``chunk_size`` slices per forward pass: the LV cavity areas ``[B, F, Z]``, or
    for a network that segments (``probabilities``) every class's probabilities ``[B, F, Z, C, H, W]`` (the
    writer sums them into areas and takes their argmax for masks) unless ``lv_only`` (a model trained on volumes
    alone, whose myocardium and RV channels learned nothing)."""

    def __init__(self, chunk_size: int = 64, lv_only: bool = False) -> None:
        super().__init__()
        self.chunk_size = int(chunk_size)
        self.lv_only = as_bool(lv_only, "lv_only")

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"StudyAreaInferer needs studies [B, F, Z, H, W], got shape {tuple(inputs.shape)}")
        inputs = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        segments = hasattr(network, "probabilities") and not self.lv_only
        return torch.stack([study_areas(network, study, self.chunk_size, segments) for study in inputs])


class StudyMeanDice(Metric):
    """Ignite metric of a segmenting network's validation: the mean 3D Dice of LV cavity, myocardium and RV over the
    labelled frames of each study, on the crop (a frame is labelled when its label map draws anything: a
    label without LV is refused at loading). A training curve, cheap and comparable between epochs; the
    evaluation scores on each label's own grid (:class:`StudyVolumeWriter`).

    ``output_transform`` gives ``(pred, label)``: class probabilities ``[B, F, Z, C, S, S]`` and labels
    ``[B, F, Z, S, S]`` (the evaluator's ``decollate=False`` output, the default transform).
    """

    def __init__(self, output_transform=lambda output: (output[CommonKeys.PRED], output[CommonKeys.LABEL]),
                 device: Union[str, torch.device] = "cpu") -> None:
        self._scores: List[float] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._scores = []

    def update(self, output) -> None:
        pred, label = output
        if pred.ndim != 6:
            raise ValueError(f"StudyMeanDice needs class probabilities [B, F, Z, C, S, S], got {tuple(pred.shape)}")
        masks = pred.detach().argmax(dim=3).cpu().numpy()
        labels = torch.as_tensor(label).detach().cpu().numpy()
        for mask, reference in zip(masks.reshape((-1,) + masks.shape[2:]), labels.reshape((-1,) + labels.shape[2:])):
            if reference.any():
                self._scores.append(float(np.nanmean(list(structure_dice(mask, reference).values()))))

    def compute(self) -> float:
        return float(np.mean(self._scores)) if self._scores else 0.0


def _lv_reference(edv: float, esv: float) -> dict:
    return {"lv_edv_ml": float(edv), "lv_esv_ml": float(esv), "lv_ef_percent": 100.0 * (edv - esv) / edv}


def _cyclic_distance(a: int, b: int, cycle: Optional[int]) -> int:
    d = abs(int(a) - int(b))
    return min(d, cycle - d) if cycle else d


class StudyVolumeWriter:
    """Ignite handler: slice areas of each study -> its volume curve, function report and, with references, scores.

    Args:
        output_dir: results folder (written whole at the end; refused when it holds
            results unless ``overwrite``; an input inside it is refused).
        overwrite: replace this writer's earlier outputs there.
        plots: write ``volume_curve.png`` per study and the Bland-Altman PNGs.
        pixdim_mm: in-plane pixel size the areas were measured at (for the report's spacing):
            ``[dy, dx]`` of two equal values, or one number.
        inputs: the input paths (refused as or inside ``output_dir``).
        score: write ``function.csv`` / ``summary.json`` / Bland-Altman PNGs for the studies that
            have references (labelled frames or EDV/ESV); else only the per-study reports.
        volumes_from: for a segmenting network, ``probabilities`` (each class's summed probabilities) or
            ``masks`` (the cleaned argmax, :data:`VOLUMES_FROM`); a regressor's areas are its outputs either way.

    ``engine.state.batch`` is the collated batch (``decollate=False``) and
    ``engine.state.output[CommonKeys.PRED]`` the areas ``[B, F, Z]``.
    """

    def __init__(
        self,
        output_dir: Union[str, os.PathLike],
        overwrite: bool = False,
        plots: bool = True,
        pixdim_mm: Union[float, Sequence[float]] = (1.5, 1.5),
        inputs: Sequence[Union[str, os.PathLike, None]] = (),
        score: bool = False,
        spacing_from: str = "auto",
        volumes_from: str = "probabilities",
    ) -> None:
        self.spacing_from = spacing_from
        self.volumes_from = str(volumes_from).strip().lower()
        if self.volumes_from not in VOLUMES_FROM:
            raise ValueError(f"--volumes_from must be one of {', '.join(VOLUMES_FROM)}, got {volumes_from!r}")
        self.overwrite = as_bool(overwrite, "overwrite")
        self.output_dir = check_output_dir(output_dir, self.overwrite, inputs=list(inputs))
        self.plots = as_bool(plots, "write_plots")
        self.pixdim_mm = square_pixdim_mm(pixdim_mm)
        self.score = as_bool(score, "score")
        self.studies: List[dict] = []
        self.summary: dict = {}

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.studies = []

    def collect(self, engine) -> None:
        batch = engine.state.batch
        pred = engine.state.output[CommonKeys.PRED] if isinstance(engine.state.output, dict) else None
        if pred is None or not isinstance(batch, dict):
            raise ValueError("StudyVolumeWriter needs the evaluator's decollate=False and a 'pred' output")
        pred = pred.detach().float()
        labels = labelled = None
        if pred.ndim == 6:  # class probabilities [B, F, Z, C, S, S]: soft areas and argmax masks
            if self.score and "label_source" in batch:  # the labelled frames' probabilities, scored on their grid
                labelled = torch.as_tensor(batch["labelled"]).bool().cpu()
                probabilities = pred.cpu()
            labels = pred.argmax(dim=3).to(torch.uint8).cpu().numpy()
            if self.volumes_from == "masks":  # each study's heart kept; its one-hot masks stand for the probabilities
                labels = np.stack([keep_study_heart(study, slice_axis=0)[0] for study in labels])
                pred = F.one_hot(torch.from_numpy(labels).long(), pred.shape[3]).movedim(-1, 3).double()  # counts, exact
            pred = pred.sum(dim=(-1, -2)) * self.pixdim_mm ** 2
        pred = pred.cpu().numpy()

        def numpy(key: str) -> np.ndarray:
            value = batch[key]
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

        for b in range(pred.shape[0]):
            self.studies.append({
                "subject": str(batch["subject"][b]),
                "source": str(batch["source"][b]),
                "areas_mm2": pred[b],
                "slice_spacing_mm": float(numpy("slice_spacing_mm")[b]),
                "frame_index": [int(t) for t in numpy("frame_index")[b]],
                "reference_volumes_ml": numpy("reference_volumes_ml")[b],
                "ed_position": int(numpy("ed_position")[b]),
                "es_position": int(numpy("es_position")[b]),
                "edv_ml": float(numpy("edv_ml")[b]),
                "esv_ml": float(numpy("esv_ml")[b]),
                "frame_numbers_known": bool(numpy("frame_numbers_known")[b]) if "frame_numbers_known" in batch
                else True,
                "labels": None if labels is None else labels[b],
                "crop_geometry": numpy("crop_geometry")[b] if "crop_geometry" in batch else None,
                "from_cine": bool(numpy("from_cine")[b]) if "from_cine" in batch else False,
                "labelled_positions": None if labelled is None else np.flatnonzero(labelled[b].numpy()),
                "labelled_probabilities": None if labelled is None else probabilities[b][labelled[b]].numpy(),
                "label_source": None if labelled is None else numpy("label_source")[b],
                "source_spacing_mm": None if labelled is None else numpy("source_spacing_mm")[b],
            })

    # ------------------------------------------------------------------ per study
    def _report(self, study: dict) -> tuple:
        areas = study["areas_mm2"]  # [F, Z] of the LV cavity, or [F, Z, C] of every class
        volumes = areas.sum(axis=1) * study["slice_spacing_mm"] / 1000.0
        lv_areas = areas[..., LV_CAVITY] if areas.ndim == 3 else areas
        curve = volumes[:, LV_CAVITY] if areas.ndim == 3 else volumes
        spacing = (study["slice_spacing_mm"], self.pixdim_mm, self.pixdim_mm)
        measure = cardiac_function_from_volume_curves if areas.ndim == 3 else cardiac_function_from_lv_curve
        try:
            function = measure(volumes, spacing, source=study["source"], frame_indices=study["frame_index"])
        except ValueError as error:
            logger.warning("%s: no cardiac function: %s", study["subject"], error)
            return None, {"status": f"no function: {error}", "lv_volume_curve_ml": [float(v) for v in curve],
                          "source": study["source"], "num_frames": len(curve)}
        method = ("slice-area regression (cmr_ranking_ssl)" if areas.ndim != 3
                  else "the U-Net's masks, heart kept (cmr_ranking_ssl)" if self.volumes_from == "masks"
                  else "summed class probabilities of the U-Net (cmr_ranking_ssl)")
        report = dict(function.to_dict(), status="ok", method=method,
                      lv_area_mm2=[[float(a) for a in frame] for frame in lv_areas])
        if not study.get("frame_numbers_known", True):
            # the curve's points are the ED and ES records, not frames of a known cine: no frame number to give
            report.update(ed_frame=None, es_frame=None, labelled_frames=None, frame_indices=None,
                          notes=[_UNKNOWN_FRAME_NUMBERS])
        return function, report

    def _reference(self, study: dict) -> Optional[dict]:
        """Reference EDV/ESV/EF and ED/ES frames of a study (and LV mass and RV volumes where its labels hold
        them): its labelled frames, else its EDV/ESV."""
        volumes, cycle = study["reference_volumes_ml"], study["frame_index"]
        labelled = [t for t in range(len(volumes)) if np.isfinite(volumes[t, LV_CAVITY])]
        if len(labelled) >= 2:
            ed, es = study["ed_position"], study["es_position"]
            known = ed in labelled and es in labelled  # else the labelled frames of largest and smallest LV
            function = cardiac_function_from_volume_curves(
                volumes, (study["slice_spacing_mm"], self.pixdim_mm, self.pixdim_mm), source=study["source"],
                frames=labelled, ed_frame=ed if known else None, es_frame=es if known else None)
            reference = {name: value for name, value in function.to_dict().items()
                         if name in dict(QUANTITIES) and value is not None}
            if study.get("frame_numbers_known", True):  # else the positions are no frame numbers to score
                reference.update(ed_frame=cycle[function.ed_frame], es_frame=cycle[function.es_frame])
            return reference
        if math.isfinite(study["edv_ml"]) and math.isfinite(study["esv_ml"]):
            return _lv_reference(study["edv_ml"], study["esv_ml"])
        return None

    def write(self, engine=None) -> None:
        taken: set = set()
        rows: List[dict] = []
        with atomic_folder(self.output_dir, overwrite=self.overwrite or self._empty(),
                           owned=self._owned_entries().__contains__) as tmp:
            subjects, frame_rows = [], []
            for study in self.studies:
                folder_name = unique_folder_name(study["subject"], taken)
                folder = tmp if len(self.studies) == 1 and not self.score else tmp / folder_name
                folder.mkdir(parents=True, exist_ok=True)
                function, report = self._report(study)
                files = {"function_json": FUNCTION_JSON, "function_csv": FUNCTION_CSV}
                if self._write_masks(study, folder):
                    files["segmentation"] = SEGMENTATION_FILE
                if function is not None and self.plots:
                    plot_volume_curve(function, folder / VOLUME_CURVE_PNG, title=folder_name)
                    files["volume_curve_png"] = VOLUME_CURVE_PNG
                write_function_report(dict(report, input=study["source"], files=files), folder)
                subjects.append({"folder": folder_name, "subject": study["subject"], "input": study["source"]})
                if function is not None:
                    logger.info("%s: LV EDV %.1f ml, ESV %.1f ml, EF %.1f %%", study["subject"], function.lv_edv_ml,
                                function.lv_esv_ml, function.lv_ef_percent)
                reference = self._reference(study) if self.score else None
                if reference is not None and function is not None:
                    rows.append(self._row(study, function, reference))
                if self.score:
                    frame_rows += self._segmentation_rows(study)
            if len(subjects) > 1 or self.score:
                write_subjects_json(tmp, subjects)
            if self.score:
                self.summary = self._write_scores(rows, tmp, frame_rows)
        if self.score:
            logger.info("volume scores of %d studies -> %s", len(rows), self.output_dir / SUMMARY_JSON)

    @staticmethod
    def _segmentation_rows(study: dict) -> List[dict]:
        """A row per labelled frame of a study, scored as the segmentation bundle scores a frame: the class
        probabilities put back on the label's grid (bilinear, as its ``Invertd``), their argmax, the study's heart
        kept over its labelled frames (``keep_study_heart``, its ``heart`` clean-up); none without source labels."""
        if study.get("labelled_probabilities") is None or study["crop_geometry"] is None:
            return []
        back = probabilities_on_source(study["labelled_probabilities"], study["crop_geometry"])  # [n, Z, C, H, W]
        masks, _ = keep_study_heart(back.argmax(axis=2).astype(np.uint8), slice_axis=0)
        rows = []
        for mask, t in zip(masks, study["labelled_positions"]):
            phase = "ED" if t == study["ed_position"] else "ES" if t == study["es_position"] else "other"
            rows.append({"subject": study["subject"], "frame_index": study["frame_index"][t], "phase": phase,
                         **structure_scores(mask, study["label_source"][t], study["source_spacing_mm"])})
        return rows

    def _write_masks(self, study: dict, folder: Path) -> bool:
        """``segmentation.nii.gz`` in the input's geometry, for a cine input (not in scoring runs): the argmax of the
        class probabilities, put back from the crop onto the source grid (nearest neighbour)."""
        if self.score or study["labels"] is None or study["crop_geometry"] is None or not study["from_cine"]:
            return False
        cine = read_cine(study["source"], spacing_from=self.spacing_from)
        labels = labels_on_source(study["labels"], study["crop_geometry"])
        nib.save(segmentation_nifti(cine, labels, study["source"]), str(folder / SEGMENTATION_FILE))
        return True

    def _owned_entries(self) -> set:
        """Names an earlier run of this writer made here: replaced or removed, never left stale."""
        owned = {FUNCTION_JSON, FUNCTION_CSV, SEGMENTATION_FILE, SCORES_CSV, VOLUME_CURVE_PNG, SUBJECTS_JSON, SUMMARY_JSON,
                 "bland_altman_edv.png", "bland_altman_esv.png", "bland_altman_ef.png",
                 METRICS_CSV}  # the frames' scores (also the function scores' name before 0.3.0)
        return owned | listed_folders(self.output_dir)

    def _empty(self) -> bool:
        return self.output_dir.is_dir() and not any(self.output_dir.iterdir())

    @staticmethod
    def _row(study: dict, function, reference: dict) -> dict:
        row = {"subject": study["subject"]}
        predicted = function.to_dict()
        for name, _ in QUANTITIES:
            if reference.get(name) is None or predicted.get(name) is None:
                continue
            row[f"reference_{name}"] = round(reference[name], 3)
            row[f"predicted_{name}"] = round(predicted[name], 3)
            row[f"error_{name}"] = round(predicted[name] - reference[name], 3)
        frames = study["frame_index"]
        cycle = len(frames) if frames == list(range(len(frames))) and len(frames) > 2 else None  # a whole cycle
        for name in ("ed_frame", "es_frame"):
            if name in reference:
                row[f"reference_{name}"] = reference[name]
                row[f"predicted_{name}"] = predicted[name]
                row[f"error_{name}"] = _cyclic_distance(predicted[name], reference[name], cycle)
        return row

    def _write_scores(self, rows: List[dict], folder: Path, frame_rows: Sequence[dict] = ()) -> dict:
        if not rows:
            raise ValueError("no study with references to score (labelled frames, or edv_ml and esv_ml)")
        write_rows_csv(folder / SCORES_CSV, rows)
        # the segmentation bundle's summary schema (cmrssl.engines.seg_evaluation.summarise), so one tool reads both
        summary: dict = {"subjects_with_function": len(rows), "function": {}, "frames": {},
                         "crps": None, "crps_note": "the model predicts no spread; CRPS is not defined for it"}
        if frame_rows:
            write_rows_csv(folder / METRICS_CSV, frame_rows)
            summary.update(frames_scored=len(frame_rows), segmentation=structure_summary(frame_rows),
                           quality={"frames_with_lv_cavity_dice_below_0.05": frames_lv_cavity_lost(
                               r.get("dice_lv_cavity") for r in frame_rows)},
                           segmentation_note="the class probabilities put back on each label's grid (bilinear), their "
                                             "argmax, each study's heart kept (keep_study_heart), scored there")
        for name, unit in QUANTITIES:
            scored = [r for r in rows if f"error_{name}" in r]
            if scored:
                summary["function"][name] = agreement([r[f"reference_{name}"] for r in scored],
                                                      [r[f"predicted_{name}"] for r in scored], unit)
        for name in ("ed_frame", "es_frame"):
            errors = [r[f"error_{name}"] for r in rows if f"error_{name}" in r]
            if errors:
                summary["frames"][name] = {"n": len(errors), "exact": int(sum(e == 0 for e in errors)),
                                           "mean_absolute_error_frames": float(np.mean(errors))}
        (folder / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        if self.plots and len(rows) >= 2:
            for name, unit, key in zip(_LV_QUANTITIES, ("ml", "ml", "%"), ("edv", "esv", "ef")):
                plot_bland_altman([r[f"reference_{name}"] for r in rows], [r[f"predicted_{name}"] for r in rows],
                                  folder / f"bland_altman_{key.split('_')[0]}.png",
                                  label=f"LV {key.split('_')[0].upper()}", unit=unit)
        return summary


def inference_studies(
    input: Union[str, os.PathLike, None] = "",
    datalist: Union[str, os.PathLike, None] = "",
    dataset_dir: Union[str, os.PathLike, None] = "",
    split: str = "test",
) -> List[dict]:
    """The studies to measure: ``input`` (one cine: a DICOM folder, a 4D NIfTI, a folder of 3D
    NIfTI frames), else every study of the datalist's ``split`` (frames grouped by subject,
    labels unused). Errors as :func:`cmrssl.data.subsets.resolve_cine_inputs`.
    """
    if input or not datalist:
        return [{"subject": c["subject"], "cine": c["cine"], "frames": []}
                for c in resolve_cine_inputs(input, datalist, dataset_dir, split)]
    studies = ranking_studies(datalist, split, dataset_dir or "", check_labels=False)["all"]
    if not studies:
        raise ValueError(f"{datalist}: split '{split}' is empty")
    return studies


def study_inputs(studies: Sequence[dict]) -> List[str]:
    """Every file a study list reads (an output folder must be none of them, nor hold one)."""
    paths = [s["cine"] for s in studies if s.get("cine")]
    for study in studies:
        paths += [f[key] for f in study.get("frames", []) for key in ("image", "label") if f.get(key)]
    return paths
