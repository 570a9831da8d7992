"""Cine inference glue for the segmentation bundle: what its config cannot say.

The bundle's ``preprocessing``, ``inferer`` and ``postprocessing`` work on one
3D frame ``[C=1, W, H, Z]`` (the unit MONAI Label sends). A cine is segmented by
giving the evaluator one record per frame (:func:`cine_frame_records`) and
attaching :class:`CineSegmentationWriter`, which gathers the frame predictions
of each cine into ``[T, Z, H, W]`` and, once every frame is done, writes

- ``segmentation.nii.gz``: canonical labels (0 background, 1 LV cavity,
  2 LV myocardium, 3 RV cavity) as a 4D NIfTI ``[x, y, z, t]`` aligned with
  the input (same shape and affine as a 4D NIfTI input; the first frame's
  affine for a folder of 3D frames; the DICOM series' stack geometry, slices
  base to apex, for a DICOM folder; :func:`cmrssl.io.nifti.segmentation_nifti`);
- the function report and its figures (:mod:`cmrssl.metrics.report`):
  ``function.json``, ``function.csv``, ``volume_curve.png``, ``contours_ed.png``,
  ``contours_es.png``.

Each cine is read once: the frame loader (``LoadCineFramed(cache=...)``) and the
writer share one :class:`cmrssl.io.reader.CineStudyCache`.

With several cines, each gets a sub-folder named by its subject made a safe
folder name, and ``subjects.json`` maps the folders to the subjects as given.

Everything is written into a temporary folder that is moved into the output
folder at the end, so a failing run leaves nothing half-written. An output
folder that already holds results is refused unless ``overwrite``, which
replaces only the entries this writer makes; an output folder that is an
input, or contains one, is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence, Union

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Events

from cmrssl.flags import as_bool
from cmrssl.io.atomic import SUBJECTS_JSON, atomic_folder, check_output_dir, listed_folders, write_subjects_json
from cmrssl.io.cine import CineStudy, swap_layout
from cmrssl.io.nifti import segmentation_nifti
from cmrssl.io.reader import CineStudyCache
from cmrssl.metrics.report import (
    CONTOURS_ED_PNG,
    CONTOURS_ES_PNG,
    FUNCTION_CSV,
    FUNCTION_JSON,
    VOLUME_CURVE_PNG,
    cardiac_function_report,
    write_function_plots,
    write_function_report,
)
from cmrssl.transforms.io import to_study_grid
from cmrssl.transforms.labels import keep_study_heart

__all__ = [
    "cine_frame_records",
    "write_cine_outputs",
    "CineSegmentationWriter",
]

logger = logging.getLogger(__name__)

SEGMENTATION_FILE = "segmentation.nii.gz"


# --------------------------------------------------------------------------- inputs
def cine_frame_records(cines: Sequence[dict], cache: CineStudyCache) -> List[dict]:
    """One dataset record per frame of each cine: ``{"image", "frame_index", "cine_key", "spacing_from"}``.

    ``spacing_from`` is the cine's own (a datalist record's), else ``"auto"``: the cache's setting.
    """
    records = []
    for cine in cines:
        study = _read(cache, cine)
        for t in range(study.num_frames):
            records.append({"image": cine["cine"], "frame_index": t, "cine_key": cine["cine_key"],
                            "spacing_from": cine.get("spacing_from") or "auto"})
    return records


def _read(cache: CineStudyCache, cine: dict) -> CineStudy:
    """The cine through the shared cache, with its own NIfTI spacing source when it names one."""
    return cache.get(cine["cine"], spacing_from=cine.get("spacing_from"))


# --------------------------------------------------------------------------- outputs
def write_cine_outputs(
    study: CineStudy,
    labels_tzhw: np.ndarray,
    folder: Union[str, os.PathLike],
    source: Union[str, os.PathLike, None] = None,
    plots: bool = True,
) -> dict:
    """Write the masks, the function report (JSON + CSV) and the PNGs of one cine into ``folder``.

    Args:
        study: the input :class:`cmrssl.io.CineStudy` (pixels ``[T, Z, H, W]``).
        labels_tzhw: canonical labels ``[T, Z, H, W]`` (the segmentation of every frame).
        folder: written in place; callers wanting all-or-nothing pass a
            temporary folder (:class:`CineSegmentationWriter` does).
        source: the input path, for the output geometry (default ``study.source``).
        plots: write the volume curve and the ED/ES contour overlays.

    Returns:
        The report dict, with ``"files"``: output name -> file name in ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(segmentation_nifti(study, labels_tzhw, source), str(folder / SEGMENTATION_FILE))
    function, report = cardiac_function_report(study, labels_tzhw)
    files = {"segmentation": SEGMENTATION_FILE, "function_json": FUNCTION_JSON, "function_csv": FUNCTION_CSV}
    if plots:
        files.update(write_function_plots(study, labels_tzhw, function, report, folder, Path(source or study.source).name))
    report = dict(report, input=str(source or study.source), files=files)
    write_function_report(report, folder)
    return report


class CineSegmentationWriter:
    """Ignite handler gathering per-frame predictions into cines and writing their outputs.

    Args:
        output_dir: folder that receives the results (for several cines, one
            sub-folder per ``cine_key``).
        cines: the cines being segmented (:func:`cmrssl.data.subsets.resolve_cine_inputs`).
        cache: the :class:`CineStudyCache` the frames were loaded through.
        overwrite: replace an output folder that already holds results.
        pred_key: key of the discrete prediction ``[1, W, H, Z]`` in the engine output.
        plots: write the PNGs (needs matplotlib).
        label_cleanup: ``"heart"`` chooses every frame's heart again with the whole cine in view
            (:func:`cmrssl.transforms.labels.keep_study_heart`: the LV component that overlaps
            the other frames' hearts, not the largest), from the labels before the per-frame
            clean-up (``raw_key``) when the postprocessing kept them; other values leave the
            frames as the postprocessing gave them.
        raw_key: key of the labels before the per-frame clean-up
            (:class:`cmrssl.transforms.labels.KeepHeartd`'s ``raw_suffix``).

    The output folder is checked at construction (before any inference runs),
    and written at ``COMPLETED`` through a temporary sibling folder renamed at the end.
    """

    def __init__(
        self,
        output_dir: Union[str, os.PathLike],
        cines: Sequence[dict],
        cache: CineStudyCache,
        overwrite: bool = False,
        pred_key: str = "pred",
        plots: bool = True,
        label_cleanup: str = "none",
        raw_key: str = "pred_raw",
    ) -> None:
        self.cines = list(cines)
        self.label_cleanup = str(label_cleanup).strip().lower()
        self.output_dir = check_output_dir(output_dir, overwrite, inputs=[c["cine"] for c in self.cines])
        self.overwrite = as_bool(overwrite, "overwrite")
        self.cache = cache
        self.pred_key, self.raw_key = pred_key, raw_key
        self.plots = as_bool(plots, "write_plots")
        self.labels: Dict[str, np.ndarray] = {}
        self.reports: Dict[str, dict] = {}

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.labels = {}
        self.reports = {}

    def collect(self, engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, dict):  # decollate=False: one record per batch row
            raise ValueError("CineSegmentationWriter needs the evaluator's decollate=True")
        for record, result in zip(batch, output):
            key, t = str(record["cine_key"]), int(record["frame_index"])
            cine = next(c for c in self.cines if c["cine_key"] == key)
            study = _read(self.cache, cine)
            if key not in self.labels:
                self.labels[key] = np.full(study.pixels.shape, -1, dtype=np.int16)
            study_level = self.label_cleanup == "heart" and self.raw_key in result
            pred = result[self.raw_key if study_level else self.pred_key]
            meta = dict(getattr(pred, "meta", {}))
            pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            if pred.ndim == 4:
                pred = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
            pred = to_study_grid(pred, meta)  # a mask SourceGridd put in the file's order: back in the study's
            expected = study.pixels.shape[1:][::-1]
            if pred.shape != expected:
                raise ValueError(
                    f"{cine['cine']}: frame {t} prediction {pred.shape} is not in the input grid "
                    f"[W, H, Z] = {expected}; the postprocessing must invert the preprocessing"
                )
            self.labels[key][t] = swap_layout(np.rint(pred).astype(np.int16))

    def write(self, engine=None) -> None:
        for cine in self.cines:
            labels = self.labels.get(cine["cine_key"])
            if labels is None or (labels < 0).any():
                missing = "all" if labels is None else int((labels < 0).any(axis=(1, 2, 3)).sum())
                raise RuntimeError(f"{cine['cine']}: {missing} frames were not segmented")
        with atomic_folder(self.output_dir, overwrite=self._may_replace(), owned=self._owned_entries().__contains__) as tmp:
            for cine in self.cines:
                folder = tmp if len(self.cines) == 1 else tmp / cine["cine_key"]
                study = _read(self.cache, cine)
                labels = self.labels[cine["cine_key"]]
                if self.label_cleanup == "heart":
                    labels, removed = keep_study_heart(labels, slice_axis=0)  # frames [Z, H, W]
                    if any(removed.values()):
                        logger.info("%s: blobs apart from the heart over the cycle removed (voxels %s)",
                                    cine["cine_key"], removed)
                self.reports[cine["cine_key"]] = write_cine_outputs(study, labels, folder, cine["cine"], plots=self.plots)
            if len(self.cines) > 1:
                # which sub-folder holds which subject: folder names are made safe, subjects kept as given
                write_subjects_json(tmp, [{"folder": c["cine_key"], "subject": c.get("subject", c["cine_key"]),
                                           "input": c["cine"]} for c in self.cines])
        for key, report in self.reports.items():
            if report.get("status") == "ok":
                logger.info(
                    "%s: LV EDV %.1f ml, ESV %.1f ml, EF %.1f %%; verdict %s -> %s", key, report["lv_edv_ml"],
                    report["lv_esv_ml"], report["lv_ef_percent"], report["verdict"], self.output_dir,
                )
            else:
                logger.warning("%s: %s; verdict %s -> %s", key, report.get("status"), report["verdict"],
                               self.output_dir)
            if report["verdict"] != "ok":
                logger.warning("%s: review before use: %s", key, "; ".join(report["review_reasons"]))

    def _owned_entries(self) -> set:
        """Names in the output folder that an earlier run of this writer made (replaced, never left stale)."""
        owned = {SEGMENTATION_FILE, FUNCTION_JSON, FUNCTION_CSV, VOLUME_CURVE_PNG, CONTOURS_ED_PNG, CONTOURS_ES_PNG,
                 SUBJECTS_JSON}
        return owned | listed_folders(self.output_dir)

    def _may_replace(self) -> bool:
        # An empty folder made by the user (or by a previous refused run) may be replaced.
        return self.overwrite or (self.output_dir.is_dir() and not any(self.output_dir.iterdir()))
