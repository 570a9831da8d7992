"""Quality flags of a segmentation: what a reader should check before trusting its numbers.

A segmentation can give EDV, ESV, EF and mass with exit code 0 and still be
wrong in ways its own labels reveal. Each flag is a short sentence; an empty
list means none was raised (not that the segmentation is right).

Per frame (:func:`frame_quality_flags`, labels ``[Z, H, W]``):

- no LV cavity at all;
- LV cavity not enclosed by myocardium: on a slice below the most basal one
  holding cavity, less than half of the cavity's border touches myocardium (a
  cavity blob in the RV or the atrium); the most basal cavity slice is not
  checked, since there the cavity opens to the atrium and the outflow tract;
- a structure missing on slices between slices where it is present (a gap in
  the stack).

Per study (:func:`study_quality_flags`, labels ``[T, Z, H, W]`` and the function):
the frame flags, named by frame, and an implausible volume curve (EF outside
5-90 %, ESV above EDV).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from cmrssl.labels import LV_CAVITY, LV_MYOCARDIUM, STRUCTURE_NAMES, STRUCTURES

__all__ = ["EF_PLAUSIBLE_PERCENT", "MIN_ENCLOSED_FRACTION", "frame_quality_flags", "function_quality_flags",
           "study_quality_flags"]

#: EF outside this range (percent) is flagged as implausible.
EF_PLAUSIBLE_PERCENT = (5.0, 90.0)

#: Smallest share of a slice's LV-cavity border that must be myocardium.
MIN_ENCLOSED_FRACTION = 0.5


def _slices_with(labels_zhw: np.ndarray, value: int) -> np.ndarray:
    return np.flatnonzero((labels_zhw == value).any(axis=(1, 2)))


def _ranges(indices: Sequence[int]) -> str:
    indices = sorted(int(i) for i in indices)
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def frame_quality_flags(labels_zhw: np.ndarray) -> List[str]:
    """Flags of one segmented frame ``[Z, H, W]`` of canonical labels (slices base to apex)."""
    labels = np.asarray(labels_zhw)
    flags: List[str] = []
    cavity_slices = _slices_with(labels, LV_CAVITY)
    if cavity_slices.size == 0:
        flags.append("no LV cavity")
    open_slices = []
    ring = ndimage.generate_binary_structure(2, 2)
    for z in cavity_slices[1:]:  # slices run base to apex; the basal-most cavity slice may be open
        cavity = labels[z] == LV_CAVITY
        border = ndimage.binary_dilation(cavity, structure=ring) & ~cavity
        if border.any() and (labels[z][border] == LV_MYOCARDIUM).mean() < MIN_ENCLOSED_FRACTION:
            open_slices.append(int(z))
    if open_slices:
        flags.append(f"LV cavity not enclosed by myocardium on slice(s) {_ranges(open_slices)}")
    for _name, value in STRUCTURES.items():
        present = _slices_with(labels, value)
        if present.size:
            gaps = sorted(set(range(int(present[0]), int(present[-1]) + 1)) - set(present.tolist()))
            if gaps:
                flags.append(f"{STRUCTURE_NAMES[value]} missing on slice(s) {_ranges(gaps)} between slices holding it")
    return flags


def function_quality_flags(function: Optional[Dict[str, float]]) -> List[str]:
    """Flags of the cardiac function: EF outside :data:`EF_PLAUSIBLE_PERCENT`, ESV above EDV."""
    if not function:
        return []
    flags = []
    edv, esv, ef = function.get("lv_edv_ml"), function.get("lv_esv_ml"), function.get("lv_ef_percent")
    low, high = EF_PLAUSIBLE_PERCENT
    if ef is not None and not low <= float(ef) <= high:
        flags.append(f"LV EF {float(ef):.1f} % outside {low:g}-{high:g} %")
    if edv is not None and esv is not None and float(esv) > float(edv):
        flags.append(f"LV ESV {float(esv):.1f} ml above EDV {float(edv):.1f} ml")
    return flags


def study_quality_flags(labels_tzhw: np.ndarray, function: Optional[Dict[str, float]] = None,
                        frames: Optional[Sequence[int]] = None) -> List[str]:
    """Flags of a segmented cine ``[T, Z, H, W]``: each frame flag with the frames raising it, then the function's.

    Args:
        labels_tzhw: canonical labels of every frame.
        function: the study's function scalars (``lv_edv_ml``, ``lv_esv_ml``, ``lv_ef_percent``), if any.
        frames: the frame numbers to report (default ``0..T-1``).
    """
    labels = np.asarray(labels_tzhw)
    numbers = list(frames) if frames is not None else list(range(labels.shape[0]))
    by_flag: Dict[str, List[int]] = {}
    for number, frame in zip(numbers, labels):
        for flag in frame_quality_flags(frame):
            by_flag.setdefault(flag, []).append(int(number))
    flags = [f"{flag} (frame{'s' if len(found) > 1 else ''} {_ranges(found)})" for flag, found in by_flag.items()]
    return flags + function_quality_flags(function)
