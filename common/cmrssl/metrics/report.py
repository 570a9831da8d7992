"""The cardiac function report of one segmented cine: numbers (JSON + CSV) and figures.

What segmentation inference delivers beside the masks, for every cine:

- ``function.json`` and ``function.csv``: EDV, ESV, SV, EF, LV mass, ED/ES frames
  (:class:`cmrssl.metrics.function.CardiacFunction`), or, when the segmentation
  gives no function, ``"status": "no function: <reason>"`` and the LV volume curve;
  with the segmentation's quality flags (:mod:`cmrssl.metrics.quality`:
  ``quality_flags`` in the JSON, ``num_quality_flags`` in both) and the study's
  verdict (``verdict``: ``ok`` or ``review``, in both; ``review_reasons`` in the JSON);
- ``volume_curve.png`` (LV/RV volume over the cycle, ED/ES marked) and
  ``contours_ed.png`` / ``contours_es.png`` (contours on every segmented slice).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from cmrssl.io.cine import CineStudy
from cmrssl.labels import LV_CAVITY
from cmrssl.metrics.function import CardiacFunction, cardiac_function_from_study, volume_curve_ml
from cmrssl.metrics.plots import plot_contour_overlays, plot_volume_curve
from cmrssl.metrics.quality import study_quality_flags, verdict

__all__ = [
    "FUNCTION_JSON",
    "FUNCTION_CSV",
    "VOLUME_CURVE_PNG",
    "CONTOURS_ED_PNG",
    "CONTOURS_ES_PNG",
    "cardiac_function_report",
    "write_function_report",
    "write_function_plots",
]

logger = logging.getLogger(__name__)

FUNCTION_JSON = "function.json"
FUNCTION_CSV = "function.csv"
VOLUME_CURVE_PNG = "volume_curve.png"
CONTOURS_ED_PNG = "contours_ed.png"
CONTOURS_ES_PNG = "contours_es.png"


def _segmented(study: CineStudy, labels_tzhw: np.ndarray) -> CineStudy:
    """A shallow copy of ``study`` carrying ``labels_tzhw`` as its labels on every frame."""
    segmented = copy.copy(study)
    segmented.labels = np.asarray(labels_tzhw).astype(np.int16)
    segmented.labelled_frames = list(range(study.num_frames))
    return segmented


def cardiac_function_report(study: CineStudy, labels_tzhw: np.ndarray) -> Tuple[Optional[CardiacFunction], dict]:
    """Cardiac function of the segmented cine: ``(CardiacFunction or None, report dict)``.

    The dict is :meth:`CardiacFunction.to_dict` plus ``"status": "ok"``. When
    the segmentation gives no function (no LV cavity on the ED or ES frame, a
    flat volume curve) the run still delivers its masks: the function is None
    and the dict holds ``"status": "no function: <reason>"`` and the LV volume curve.
    Either way it holds ``quality_flags`` (:func:`cmrssl.metrics.quality.study_quality_flags`,
    frames numbered in the cycle, with the study's spacing and volume curve), ``num_quality_flags``,
    and the verdict (:func:`cmrssl.metrics.quality.verdict`): ``verdict`` and ``review_reasons``.
    """
    segmented = _segmented(study, labels_tzhw)
    cycle = [int(t) for t in study.source_frame_index]
    try:
        function = cardiac_function_from_study(segmented)
    except ValueError as error:
        logger.warning("%s: no cardiac function from the segmentation: %s", study.source, error)
        curve = volume_curve_ml(segmented.labels, study.voxel_volume_ml, LV_CAVITY, source=str(study.source))
        flags = study_quality_flags(labels_tzhw, None, frames=cycle, spacing_zyx_mm=study.spacing_zyx_mm,
                                    lv_curve_ml=curve)
        status = f"no function: {error}"
        return None, {
            "status": status,
            # a single frame has no function to give: its verdict is its flags'; a cine without one needs a look
            **verdict(flags, status if study.num_frames > 1 else "ok"),
            "lv_volume_curve_ml": [float(v) for v in curve],
            "spacing_zyx_mm": [float(s) for s in study.spacing_zyx_mm],
            "num_frames": study.num_frames,
            "source": str(study.source),
            "num_quality_flags": len(flags),
            "quality_flags": flags,
        }
    report = dict(function.to_dict(), status="ok")
    flags = study_quality_flags(labels_tzhw, report, frames=cycle, spacing_zyx_mm=study.spacing_zyx_mm,
                                lv_curve_ml=function.lv_volume_curve_ml)
    if flags:
        logger.warning("%s: review the segmentation: %s", study.source, "; ".join(flags))
    return function, dict(report, **verdict(flags), num_quality_flags=len(flags), quality_flags=flags)


def write_function_report(report: dict, folder: Union[str, os.PathLike]) -> Dict[str, str]:
    """``function.json`` (the whole report) and ``function.csv`` (one row of its scalars) in ``folder``.

    Returns the files written: output name -> file name.
    """
    folder = Path(folder)
    (folder / FUNCTION_JSON).write_text(json.dumps(report, indent=2))
    scalars = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}  # curves stay in the JSON
    with open(folder / FUNCTION_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(scalars))
        writer.writeheader()
        writer.writerow(scalars)
    return {"function_json": FUNCTION_JSON, "function_csv": FUNCTION_CSV}


def write_function_plots(
    study: CineStudy,
    labels_tzhw: np.ndarray,
    function: Optional[CardiacFunction],
    report: dict,
    folder: Union[str, os.PathLike],
    name: str,
) -> Dict[str, str]:
    """The volume curve and the ED/ES contour overlays of one segmented cine, in ``folder``.

    Without a function (see :func:`cardiac_function_report`) there is no curve, but
    the contours still show the user what the network did: on the frames of largest
    and smallest segmented LV (the first and middle frames if the curve is flat).

    Returns the files written: output name -> file name.
    """
    folder = Path(folder)
    files = {}
    cycle = [int(t) for t in study.source_frame_index]
    if function is not None:
        plot_volume_curve(function, folder / VOLUME_CURVE_PNG, title=name, flags=report.get("quality_flags", ()))
        files["volume_curve_png"] = VOLUME_CURVE_PNG
        phases = (("ED", cycle.index(int(function.ed_frame))), ("ES", cycle.index(int(function.es_frame))))
    else:
        curve = np.asarray(report["lv_volume_curve_ml"], dtype=np.float64)
        largest, smallest = int(np.argmax(curve)), int(np.argmin(curve))
        if largest == smallest:
            largest, smallest = 0, study.num_frames // 2
        phases = (("largest LV", largest), ("smallest LV", smallest))
    check = "" if function is not None or not report.get("quality_flags") else (
        "\ncheck: " + "; ".join(report["quality_flags"]))  # no curve to carry the flags
    for (phase, t), png in zip(phases, (CONTOURS_ED_PNG, CONTOURS_ES_PNG)):
        plot_contour_overlays(study.pixels[t], labels_tzhw[t], folder / png,
                              title=f"{name}: {phase} (frame {cycle[t]}){check}")
        files[png.replace(".png", "_png")] = png
    return files
