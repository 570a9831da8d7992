"""Ignite glue of the ranking bundle: the alternating trainer's method, the study inferer, the writer.

Training (our reading of Luo et al.; the bundle README lists the choices):

- :class:`AlternatingRounds` feeds the trainer rounds of ``supervised_steps``
  labelled studies then ``ranking_steps`` studies of the ranking pool, one study
  per step, each batch tagged with its kind;
- :class:`RankingMethod` (a method in the sense of :mod:`cmrssl.engines.ssl`, run by the
  generic :class:`cmrssl.engines.ssl.SSLTrainer` the config builds) scores a labelled study with a
  smooth-L1 loss on its slice areas (or, for a volumes-only study, on EDV/ESV
  through the sum of areas x slice spacing) and an unlabelled one with the
  ranking losses of :mod:`cmrssl.losses.ranking`. ED/ES of a study without known
  ED/ES frames are re-estimated from the current model at every step it is drawn.

Evaluation and inference run MONAI's ``SupervisedEvaluator`` with
:class:`StudyAreaInferer` (a study ``[1, F, Z, H, W]`` -> areas ``[1, F, Z]``) and
:class:`StudyVolumeWriter`, which turns the areas into the volume curve, EDV,
ESV, EF and ED/ES frames (:func:`cmrssl.metrics.function.cardiac_function_from_lv_curve`)
and writes, per study, ``function.json`` / ``function.csv`` / ``volume_curve.png``
(the schema of the segmentation bundle's report, so one tool compares both), and,
against references, ``metrics.csv``, ``summary.json`` and Bland-Altman PNGs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Events
from monai.inferers import Inferer
from monai.utils import CommonKeys

from cmrssl.data.ranking import ranking_studies
from cmrssl.data.subsets import resolve_cine_inputs
from cmrssl.flags import as_bool, square_pixdim_mm
from cmrssl.io.atomic import (
    SUBJECTS_JSON,
    atomic_folder,
    check_output_dir,
    listed_folders,
    unique_folder_name,
    write_subjects_json,
)
from cmrssl.losses.ranking import (
    AREA_SCALE_MM2,
    invariance_loss,
    mid_ventricular_slices,
    pairwise_ranking_loss,
    spatial_pairs,
    temporal_pairs,
)
from cmrssl.metrics.function import agreement, cardiac_function_from_lv_curve
from cmrssl.metrics.plots import plot_bland_altman, plot_volume_curve
from cmrssl.metrics.report import FUNCTION_CSV, FUNCTION_JSON, VOLUME_CURVE_PNG, write_function_report
from cmrssl.transforms.ranking import frame_positions, mask_outside, nested_boxes

__all__ = [
    "RANKING_TERMS",
    "study_areas",
    "StudyAreaInferer",
    "AlternatingRounds",
    "RankingMethod",
    "StudyVolumeWriter",
    "inference_studies",
    "study_inputs",
]

logger = logging.getLogger(__name__)

#: the ranking terms, each weighted by ``ranking_weights[name]``
RANKING_TERMS = ("temporal", "spatial", "nested", "invariance")
#: The report's note for a study whose frames are known only as ED and ES (cmrssl.data.ranking).
_UNKNOWN_FRAME_NUMBERS = ("ED/ES frame numbers unknown: the datalist names the study's frames by phase only "
                          "(frame_index null), so ED/ES are not reported or scored as frame numbers")
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
#: volume loss unit for volumes-only supervision (ml)
VOLUME_SCALE_ML = 10.0


def study_areas(network: nn.Module, image: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """Areas ``[F, Z]`` (mm^2) of a study ``image`` ``[F, Z, H, W]``, slices through ``network`` in chunks."""
    f, z, h, w = image.shape
    flat = image.reshape(f * z, 1, h, w)
    chunk = max(int(chunk_size), 1)
    out = torch.cat([network(flat[i:i + chunk]).reshape(-1) for i in range(0, flat.shape[0], chunk)])
    return out.reshape(f, z)


class StudyAreaInferer(Inferer):
    """``inputs [B, F, Z, H, W]`` -> ``[B, F, Z]`` slice areas, ``chunk_size`` slices per forward pass."""

    def __init__(self, chunk_size: int = 64) -> None:
        super().__init__()
        self.chunk_size = int(chunk_size)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"StudyAreaInferer needs studies [B, F, Z, H, W], got shape {tuple(inputs.shape)}")
        inputs = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        return torch.stack([study_areas(network, study, self.chunk_size) for study in inputs])


class AlternatingRounds:
    """Endless batches: ``supervised_steps`` from ``labelled``, then ``ranking_steps`` from ``ranking``, again.

    Each batch gets ``"step"``: ``"supervised"`` or ``"ranking"``. A loader is
    restarted when exhausted (a new shuffle, and ``set_epoch`` on a distributed
    sampler). ``ranking_steps=0`` (or no ranking loader) is supervised-only
    training. Give the trainer ``epoch_length``.
    """

    def __init__(self, labelled, ranking=None, supervised_steps: int = 1, ranking_steps: int = 1) -> None:
        self.loaders = {"supervised": labelled, "ranking": ranking}
        self.steps = {"supervised": int(supervised_steps), "ranking": int(ranking_steps) if ranking is not None else 0}
        if self.steps["supervised"] < 0 or self.steps["ranking"] < 0 or not sum(self.steps.values()):
            raise ValueError(f"steps per round must be >= 0 and not all 0, got {supervised_steps}, {ranking_steps}")
        for kind, steps in self.steps.items():
            if steps and len(self.loaders[kind]) == 0:
                raise ValueError(f"the {kind} pool holds no study")
        self._iterators: Dict[str, Optional[Iterator]] = {"supervised": None, "ranking": None}
        self._restarts = {"supervised": 0, "ranking": 0}

    def _next(self, kind: str) -> dict:
        for _ in range(2):
            if self._iterators[kind] is None:
                sampler = getattr(self.loaders[kind], "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(self._restarts[kind])
                self._restarts[kind] += 1
                self._iterators[kind] = iter(self.loaders[kind])
            try:
                return next(self._iterators[kind])
            except StopIteration:
                self._iterators[kind] = None
        raise RuntimeError(f"the {kind} loader yields nothing")

    def __iter__(self):
        while True:
            for kind in ("supervised", "ranking"):
                for _ in range(self.steps[kind]):
                    batch = dict(self._next(kind))
                    batch["step"] = kind
                    yield batch


def _first(x: Any) -> Any:
    """The one study of a batch of one."""
    if isinstance(x, (list, tuple)):
        return x[0]
    if isinstance(x, torch.Tensor) and x.ndim >= 1:
        return x[0]
    return x


class RankingMethod(nn.Module):
    """Supervised and ranking losses of one study per step (module docstring).

    The method interface :class:`cmrssl.engines.ssl.SSLTrainer` runs: ``prepare_batch``,
    ``compute_loss`` (also ``forward``, so DDP can wrap it) and ``backbone_state_dict``.

    Args:
        network: the slice-area network (:func:`cmrssl.networks.regression.area_network`).
        segmentation_loss: the loss of a labelled frame's logits against its label map
            (``loss(logits, label [N, 1, H, W])``, the segmentation bundle's), used when
            the network segments (has ``segment``); else labelled frames supervise their areas.
        ranking_weights: weight of each of :data:`RANKING_TERMS` (missing: 1.0).
        ranking: False switches every ranking term off (supervised-only training).
        margin_mm2: ranking margin (mm^2).
        mid_fraction: the mid-ventricular part of a stack, base to apex, where the temporal
            pairs are scored (the spatial pairs run from the middle slice to the apex).
        max_frames: frames of a long cine scored with gradients per ranking step (spread over
            the cycle, ED and ES always among them); the others only re-estimate ED/ES.
        nested_slices: slices per ranking step that get a nested window pair and an
            intensity-augmented copy.
        nested_fraction: side of a window relative to the window holding it.
        intensity_augment: callable on a ``[K, H, W]`` tensor (a MONAI Compose of
            intensity transforms) giving the augmented copies of the invariance term.
        chunk_size: slices per forward pass.
        seed: seed of the window draws.
    """

    def __init__(
        self,
        network: nn.Module,
        segmentation_loss: Optional[nn.Module] = None,
        ranking_weights: Optional[Mapping[str, float]] = None,
        ranking: bool = True,
        margin_mm2: float = 0.0,
        mid_fraction: Sequence[float] = (0.25, 0.75),
        max_frames: int = 8,
        nested_slices: int = 4,
        nested_fraction: Sequence[float] = (0.5, 0.9),
        intensity_augment: Optional[Any] = None,
        chunk_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = set(ranking_weights or {}) - set(RANKING_TERMS)
        if unknown:
            raise ValueError(f"unknown ranking terms {sorted(unknown)}; the terms are {list(RANKING_TERMS)}")
        self.network = network
        self.segmentation_loss = segmentation_loss if hasattr(network, "segment") else None
        self.ranking = as_bool(ranking, "ranking")
        self.weights = {name: float((ranking_weights or {}).get(name, 1.0)) if self.ranking else 0.0
                        for name in RANKING_TERMS}
        self.margin_mm2 = float(margin_mm2)
        self.mid_fraction = (float(mid_fraction[0]), float(mid_fraction[1]))
        self.max_frames = max(int(max_frames), 2)
        self.nested_slices = max(int(nested_slices), 0)
        self.nested_fraction = tuple(float(v) for v in nested_fraction)
        self.intensity_augment = intensity_augment
        self.chunk_size = int(chunk_size)
        self.rng = np.random.RandomState(int(seed))
        self.temporal_skipped = 0

    # ------------------------------------------------------------------ the SSLTrainer method interface
    def prepare_batch(self, batchdata: Dict[str, Any], device=None, non_blocking: bool = False, **kwargs) -> Dict[str, Any]:
        inputs: Dict[str, Any] = {"step": batchdata.get("step", "supervised")}
        for key, value in batchdata.items():
            if key == "step":
                continue
            value = _first(value)
            if isinstance(value, torch.Tensor):
                value = value.as_tensor() if hasattr(value, "as_tensor") else value
                value = value.to(device=device, non_blocking=non_blocking) if device is not None else value
            inputs[key] = value
        return inputs

    def compute_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        if inputs["step"] == "supervised":
            return self.supervised_loss(inputs)
        if not self.ranking:
            raise RuntimeError("a ranking step reached a supervised-only method; give the rounds ranking_steps=0")
        return self.ranking_loss(inputs)

    def forward(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        return self.compute_loss(inputs)

    def backbone_state_dict(self) -> Dict[str, torch.Tensor]:
        return self.network.state_dict()

    # ------------------------------------------------------------------ losses
    def supervised_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The labelled frames' segmentation loss (a segmenting network) or smooth-L1 on their slice areas;
        else smooth-L1 on the study's EDV/ESV through the Simpson sum of its areas."""
        image, labelled = inputs["image"], inputs["labelled"].bool()
        if bool(labelled.any()) and self.segmentation_loss is not None:
            slices = image[labelled].reshape(-1, 1, *image.shape[-2:])
            target = inputs["label"][labelled].reshape(-1, 1, *image.shape[-2:]).long()
            logits = torch.cat([self.network.segment(slices[i:i + self.chunk_size])
                                for i in range(0, slices.shape[0], max(self.chunk_size, 1))])
            loss = self.segmentation_loss(logits, target)
            return {"loss": loss, "supervised_segmentation": loss.detach()}
        if bool(labelled.any()):
            areas = study_areas(self.network, image[labelled], self.chunk_size)
            target = inputs["area_mm2"][labelled]
            loss = F.smooth_l1_loss(areas / AREA_SCALE_MM2, target / AREA_SCALE_MM2)
            return {"loss": loss, "supervised_area": loss.detach()}
        edv, esv = inputs["edv_ml"], inputs["esv_ml"]
        if not (torch.isfinite(edv) and torch.isfinite(esv)):
            raise ValueError(
                f"{inputs.get('source', 'study')}: a supervised step drew a study with neither labels nor EDV/ESV")
        volumes = study_areas(self.network, image, self.chunk_size).sum(dim=1) * inputs["slice_spacing_mm"] / 1000.0
        predicted = torch.stack([volumes.max(), volumes.min()])
        loss = F.smooth_l1_loss(predicted / VOLUME_SCALE_ML, torch.stack([edv, esv]).float() / VOLUME_SCALE_ML)
        return {"loss": loss, "supervised_volume": loss.detach()}

    def _known_ed_es(self, inputs: Dict[str, Any]) -> tuple:
        """Positions of the study's known ED and ES frames, ``(-1, -1)`` when the datalist names none."""
        ed, es = int(inputs["ed_position"]), int(inputs["es_position"])
        return (ed, es) if ed >= 0 and es >= 0 and ed != es else (-1, -1)

    def ranking_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The weighted ranking terms of one study (module docstring); labels unused."""
        image = inputs["image"]
        num_frames, num_slices = image.shape[:2]
        terms: Dict[str, torch.Tensor] = {}
        mid = mid_ventricular_slices(num_slices, self.mid_fraction)
        if num_frames < 2:
            self.temporal_skipped += 1
        ed, es = self._known_ed_es(inputs)
        positions = list(range(num_frames))
        if num_frames > self.max_frames:
            if ed < 0:  # the current model's ED/ES over the whole cycle, then the frames scored with gradients
                with torch.no_grad():
                    volumes = study_areas(self.network, image, self.chunk_size).sum(dim=1)
                ed, es = int(torch.argmax(volumes)), int(torch.argmin(volumes))
            positions = frame_positions(num_frames, self.max_frames, must=(ed, es))
        areas = study_areas(self.network, image[positions], self.chunk_size)  # [F', Z]
        if num_frames >= 2 and ed < 0:  # every frame scored: the current model's ED/ES from these areas
            volumes = areas.detach().sum(dim=1)
            ed, es = positions[int(torch.argmax(volumes))], positions[int(torch.argmin(volumes))]
        temporal = num_frames >= 2 and ed != es and self.weights["temporal"] > 0
        zero = areas.sum() * 0.0
        if temporal:
            pairs = temporal_pairs(len(positions), positions.index(ed), positions.index(es))
            larger = torch.stack([areas[a][mid] for a, _ in pairs])
            smaller = torch.stack([areas[b][mid] for _, b in pairs])
            terms["temporal"] = pairwise_ranking_loss(larger, smaller, self.margin_mm2)
        pairs = spatial_pairs(num_slices)  # from the middle slice to the apex
        if pairs and self.weights["spatial"] > 0:
            terms["spatial"] = pairwise_ranking_loss(
                areas[:, [a for a, _ in pairs]], areas[:, [b for _, b in pairs]], self.margin_mm2)
        picks = [(int(self.rng.randint(len(positions))), int(mid[self.rng.randint(len(mid))]))
                 for _ in range(self.nested_slices)]
        if picks and (self.weights["nested"] > 0 or self.weights["invariance"] > 0):
            slices = torch.stack([image[positions[t], z] for t, z in picks])  # [K, H, W]
            full = torch.stack([areas[t, z] for t, z in picks])
            if self.weights["nested"] > 0:
                outer, inner = [], []
                for k in range(len(picks)):
                    box_outer, box_inner = nested_boxes(slices.shape[-2:], self.rng, self.nested_fraction)
                    fill = slices[k].amin()
                    outer.append(mask_outside(slices[k], box_outer, fill))
                    inner.append(mask_outside(slices[k], box_inner, fill))
                windows = self.network(torch.stack(outer + inner)[:, None]).reshape(-1)
                k = len(picks)
                terms["nested"] = pairwise_ranking_loss(
                    torch.cat([full, windows[:k]]), torch.cat([windows[:k], windows[k:]]), self.margin_mm2)
            if self.weights["invariance"] > 0 and self.intensity_augment is not None:
                augmented = torch.as_tensor(self.intensity_augment(slices.detach().clone()))
                augmented = augmented.as_tensor() if hasattr(augmented, "as_tensor") else augmented
                predicted = self.network(augmented.to(slices.device).float()[:, None]).reshape(-1)
                terms["invariance"] = invariance_loss(full.detach(), predicted)
        loss = zero + sum(self.weights[name] * value for name, value in terms.items())
        out = {"loss": loss}
        out.update({f"ranking_{name}": value.detach() for name, value in terms.items()})
        return out


# --------------------------------------------------------------------------- evaluation / inference
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
        score: write ``metrics.csv`` / ``summary.json`` / Bland-Altman PNGs for the studies that
            have references (labelled frames or EDV/ESV); else only the per-study reports.

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
    ) -> None:
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
        pred = pred.detach().float().cpu().numpy()

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
                "reference_volume_ml": numpy("reference_volume_ml")[b],
                "ed_position": int(numpy("ed_position")[b]),
                "es_position": int(numpy("es_position")[b]),
                "edv_ml": float(numpy("edv_ml")[b]),
                "esv_ml": float(numpy("esv_ml")[b]),
                "frame_numbers_known": bool(numpy("frame_numbers_known")[b]) if "frame_numbers_known" in batch
                else True,
            })

    # ------------------------------------------------------------------ per study
    def _report(self, study: dict) -> tuple:
        curve = study["areas_mm2"].sum(axis=1) * study["slice_spacing_mm"] / 1000.0
        spacing = (study["slice_spacing_mm"], self.pixdim_mm, self.pixdim_mm)
        try:
            function = cardiac_function_from_lv_curve(curve, spacing, source=study["source"],
                                                      frame_indices=study["frame_index"])
        except ValueError as error:
            logger.warning("%s: no cardiac function: %s", study["subject"], error)
            return None, {"status": f"no function: {error}", "lv_volume_curve_ml": [float(v) for v in curve],
                          "source": study["source"], "num_frames": len(curve)}
        report = dict(function.to_dict(), status="ok", method="slice-area regression (cmr_ranking_ssl)",
                      lv_area_mm2=[[float(a) for a in frame] for frame in study["areas_mm2"]])
        if not study.get("frame_numbers_known", True):
            # the curve's points are the ED and ES records, not frames of a known cine: no frame number to give
            report.update(ed_frame=None, es_frame=None, labelled_frames=None, frame_indices=None,
                          notes=[_UNKNOWN_FRAME_NUMBERS])
        return function, report

    def _reference(self, study: dict) -> Optional[dict]:
        """Reference EDV/ESV/EF and ED/ES frames of a study: its labelled frames, else its EDV/ESV."""
        volumes, cycle = study["reference_volume_ml"], study["frame_index"]
        labelled = [t for t in range(len(volumes)) if np.isfinite(volumes[t])]
        if len(labelled) >= 2:
            ed, es = study["ed_position"], study["es_position"]
            if ed not in labelled or es not in labelled:
                ed = labelled[int(np.argmax(volumes[labelled]))]
                es = labelled[int(np.argmin(volumes[labelled]))]
            edv, esv = float(volumes[ed]), float(volumes[es])
            reference = {"edv_ml": edv, "esv_ml": esv, "ef_percent": 100.0 * (edv - esv) / edv}
            if study.get("frame_numbers_known", True):  # else the positions are no frame numbers to score
                reference.update(ed_frame=cycle[ed], es_frame=cycle[es])
            return reference
        if math.isfinite(study["edv_ml"]) and math.isfinite(study["esv_ml"]):
            edv, esv = study["edv_ml"], study["esv_ml"]
            return {"edv_ml": edv, "esv_ml": esv, "ef_percent": 100.0 * (edv - esv) / edv}
        return None

    def write(self, engine=None) -> None:
        taken: set = set()
        rows: List[dict] = []
        with atomic_folder(self.output_dir, overwrite=self.overwrite or self._empty(),
                           owned=self._owned_entries().__contains__) as tmp:
            subjects = []
            for study in self.studies:
                folder_name = unique_folder_name(study["subject"], taken)
                folder = tmp if len(self.studies) == 1 and not self.score else tmp / folder_name
                folder.mkdir(parents=True, exist_ok=True)
                function, report = self._report(study)
                files = {"function_json": FUNCTION_JSON, "function_csv": FUNCTION_CSV}
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
            if len(subjects) > 1 or self.score:
                write_subjects_json(tmp, subjects)
            if self.score:
                self.summary = self._write_scores(rows, tmp)
        if self.score:
            logger.info("volume scores of %d studies -> %s", len(rows), self.output_dir / SUMMARY_JSON)

    def _owned_entries(self) -> set:
        """Names an earlier run of this writer made here: replaced or removed, never left stale."""
        owned = {FUNCTION_JSON, FUNCTION_CSV, VOLUME_CURVE_PNG, SUBJECTS_JSON, METRICS_CSV, SUMMARY_JSON,
                 "bland_altman_edv.png", "bland_altman_esv.png", "bland_altman_ef.png"}
        return owned | listed_folders(self.output_dir)

    def _empty(self) -> bool:
        return self.output_dir.is_dir() and not any(self.output_dir.iterdir())

    @staticmethod
    def _row(study: dict, function, reference: dict) -> dict:
        row = {"subject": study["subject"]}
        predicted = {"edv_ml": function.lv_edv_ml, "esv_ml": function.lv_esv_ml, "ef_percent": function.lv_ef_percent,
                     "ed_frame": function.ed_frame, "es_frame": function.es_frame}
        for name in ("edv_ml", "esv_ml", "ef_percent"):
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

    def _write_scores(self, rows: List[dict], folder: Path) -> dict:
        if not rows:
            raise ValueError("no study with references to score (labelled frames, or edv_ml and esv_ml)")
        fields: List[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        with open(folder / METRICS_CSV, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        summary: dict = {"studies": len(rows), "volumes": {}, "frames": {},
                         "crps": None, "crps_note": "the model predicts no spread; CRPS is not defined for it"}
        for name, unit in (("edv_ml", "ml"), ("esv_ml", "ml"), ("ef_percent", "%")):
            summary["volumes"][name] = agreement([r[f"reference_{name}"] for r in rows],
                                                 [r[f"predicted_{name}"] for r in rows], unit)
        for name in ("ed_frame", "es_frame"):
            errors = [r[f"error_{name}"] for r in rows if f"error_{name}" in r]
            if errors:
                summary["frames"][name] = {"n": len(errors), "exact": int(sum(e == 0 for e in errors)),
                                           "mean_absolute_error_frames": float(np.mean(errors))}
        (folder / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        if self.plots and len(rows) >= 2:
            for name, label, unit in (("edv_ml", "LV EDV", "ml"), ("esv_ml", "LV ESV", "ml"), ("ef_percent", "LV EF", "%")):
                plot_bland_altman([r[f"reference_{name}"] for r in rows], [r[f"predicted_{name}"] for r in rows],
                                  folder / f"bland_altman_{name.split('_')[0]}.png", label=label, unit=unit)
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
