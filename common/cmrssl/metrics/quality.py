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
  the stack) worth at least :data:`MIN_GAP_SHARE` of its volume (its neighbours'
  mean area on each empty slice);
- an LV outline that is not round: on a slice below the most basal one holding
  cavity, at least half as wide as the widest (:data:`MIN_OUTLINE_SHARE`), the filled LV (cavity and myocardium) less solid than
  :data:`MIN_LV_SOLIDITY` or longer than :data:`MAX_LV_ELONGATION` times its width
  (at least 0.91 and at most 1.54 on every such slice of ACDC's 200 reference
  frames; a few-label model can draw a second, false LV against the septum,
  inside the RV, in a ring of its own or inside a widened LV outline).

With the voxel spacing, also per frame: the RV cavity not beside the LV (its
nearest LV myocardium more than :data:`SEPTUM_GAP_MM` away; in every ACDC
reference frame they touch).

Per study (:func:`study_quality_flags`, labels ``[T, Z, H, W]`` and the function):
the frame flags, named by frame; the heart moving between frames (the LV's
centroid more than :data:`HEART_SHIFT_MM` from where the other frames put it; at
most 12.4 mm between ED and ES over the 100 ACDC reference pairs); a volume
curve of a cine (6 frames or more) with more than one trough or with a spike (one
frame departing from both neighbours, the same way, by more than
:data:`SPIKE_FRACTION` of the EDV); an implausible function (EF outside 5-90 %,
ESV above EDV, a volume or mass outside :data:`PLAUSIBLE_RANGES`).

:func:`verdict`: ``ok`` when nothing was flagged, else ``review`` with the reasons.

Against a reference, one count the evaluations share (:func:`frames_lv_cavity_lost`): the
frames whose LV cavity Dice is below :data:`LV_CAVITY_LOST_DICE`, the cavity missed or drawn elsewhere.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from cmrssl.labels import LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY, STRUCTURE_NAMES, STRUCTURES

__all__ = ["EF_PLAUSIBLE_PERCENT", "HEART_SHIFT_MM", "LV_CAVITY_LOST_DICE", "MIN_ENCLOSED_FRACTION",
           "MAX_LV_ELONGATION", "MIN_GAP_SHARE", "MIN_LV_SOLIDITY", "PLAUSIBLE_RANGES", "SEPTUM_GAP_MM",
           "SPIKE_FRACTION", "frame_quality_flags", "frames_lv_cavity_lost", "function_quality_flags",
           "heart_shift_flags", "study_quality_flags", "verdict", "volume_curve_flags"]

#: EF outside this range (percent) is flagged as implausible.
EF_PLAUSIBLE_PERCENT = (5.0, 90.0)

#: Adult plausibility ranges (not normal ranges) of the function's volumes (ml) and mass (g): the span of the
#: 100 ACDC expert references (LV EDV 49-374 ml, ESV 19-335 ml, mass 34-272 g, RV EDV 47-295 ml, ESV 10-263 ml;
#: normal, DCM, HCM, infarct and RV groups) widened by half on either side and rounded; the normal adult ranges of
#: Kawel-Boehm et al., JCMR 2020 lie well inside. Children's hearts can be smaller.
PLAUSIBLE_RANGES = {"lv_edv_ml": (30.0, 550.0), "lv_esv_ml": (10.0, 500.0), "lv_mass_g": (20.0, 400.0),
                    "rv_edv_ml": (30.0, 450.0), "rv_esv_ml": (5.0, 400.0)}

_RANGE_NAMES = {"lv_edv_ml": ("LV EDV", "ml"), "lv_esv_ml": ("LV ESV", "ml"), "lv_mass_g": ("LV mass", "g"),
                "rv_edv_ml": ("RV EDV", "ml"), "rv_esv_ml": ("RV ESV", "ml")}

#: A frame's LV centroid this far (mm) from the median of the other frames' is flagged (ACDC references: 12.4 at most).
HEART_SHIFT_MM = 20.0

#: An RV cavity whose nearest LV myocardium is this far (mm) is flagged (ACDC references: adjacent, under 2 mm).
SEPTUM_GAP_MM = 10.0

#: A gap in a structure's stack is flagged when filling it would add this share of the structure's volume.
MIN_GAP_SHARE = 0.05

#: A filled LV outline (cavity + myocardium) less solid than this (area / convex hull area) is flagged.
MIN_LV_SOLIDITY = 0.85

#: Outlines are judged on slices whose filled LV is at least this share of the frame's widest.
MIN_OUTLINE_SHARE = 0.5

#: A filled LV outline longer than this many times its width (the axes of its inertia ellipse) is flagged.
MAX_LV_ELONGATION = 1.75

#: A cine frame whose LV volume departs from both neighbours' mean by this share of the EDV is a spike.
SPIKE_FRACTION = 0.2

#: Troughs of the LV volume curve count when this deep (a share of the curve's range).
TROUGH_PROMINENCE = 0.25

#: Fewest frames for the volume curve's shape to be judged.
MIN_CURVE_FRAMES = 6

#: Smallest share of a slice's LV-cavity border that must be myocardium.
MIN_ENCLOSED_FRACTION = 0.5


#: An LV cavity Dice (against the reference) below this: the frame lost its cavity.
LV_CAVITY_LOST_DICE = 0.05


def frames_lv_cavity_lost(lv_cavity_dice: Iterable[Optional[float]]) -> int:
    """How many of the frames' LV cavity Dice values are below :data:`LV_CAVITY_LOST_DICE` (``None`` and NaN, a
    frame without a reference cavity, do not count): ``summary.json``'s ``quality`` count in the evaluations of both
    U-Net bundles, and the few-label study's ``frames_lv_cavity_lost``."""
    return sum(d is not None and not math.isnan(d) and d < LV_CAVITY_LOST_DICE for d in lv_cavity_dice)


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


def _gap_slices(labels: np.ndarray, value: int) -> List[int]:
    """Empty slices between slices holding ``value`` when, filled with their neighbours' mean area, they would hold
    at least :data:`MIN_GAP_SHARE` of the structure's volume (a speck beyond an empty apical slice changes nothing)."""
    areas = (labels == value).sum(axis=tuple(range(1, labels.ndim))).astype(np.float64)
    present = np.flatnonzero(areas)
    if present.size < 2:
        return []
    gaps = [z for z in range(int(present[0]), int(present[-1]) + 1) if areas[z] == 0]
    missing = sum((areas[present[present < z][-1]] + areas[present[present > z][0]]) / 2 for z in gaps)
    return gaps if gaps and missing >= MIN_GAP_SHARE * (areas.sum() + missing) else []


def _rv_myocardium_gap_mm(labels: np.ndarray, spacing_zyx_mm: Sequence[float]) -> Optional[float]:
    """The distance (mm) from the RV cavity to its nearest LV myocardium; None unless both are present."""
    rv, myocardium = labels == RV_CAVITY, labels == LV_MYOCARDIUM
    if not rv.any() or not myocardium.any():
        return None
    distance = ndimage.distance_transform_edt(~myocardium, sampling=[float(s) for s in spacing_zyx_mm])
    return float(distance[rv].min())


def _unround_slices(labels: np.ndarray) -> List[int]:
    """Slices below the basal-most cavity slice whose filled LV outline has a solidity under :data:`MIN_LV_SOLIDITY`."""
    from skimage.measure import regionprops

    outlines = {}
    for z in _slices_with(labels, LV_CAVITY)[1:]:
        disk = ndimage.binary_fill_holes((labels[z] == LV_CAVITY) | (labels[z] == LV_MYOCARDIUM))
        pieces, count = ndimage.label(disk, structure=ndimage.generate_binary_structure(2, 2))
        if count:
            outlines[int(z)] = max(regionprops(pieces), key=lambda region: region.area)
    widest = max((region.area for region in outlines.values()), default=0)
    unround = []
    for z, region in outlines.items():  # apical outlines, small and ragged in any prediction, are not judged
        elongation = region.axis_major_length / max(region.axis_minor_length, 1e-6)
        if region.area >= MIN_OUTLINE_SHARE * widest and (
                region.solidity < MIN_LV_SOLIDITY or elongation > MAX_LV_ELONGATION):
            unround.append(z)
    return unround


def _distance_flags(labels: np.ndarray, spacing_zyx_mm: Sequence[float], detail: bool = True) -> List[str]:
    """The flags that need the voxel spacing (``detail``: with the measured distance in the text)."""
    flags = []
    gap = _rv_myocardium_gap_mm(labels, spacing_zyx_mm)
    if gap is not None and gap > SEPTUM_GAP_MM:
        flags.append(f"RV cavity not beside the LV (nearest LV myocardium {gap:.0f} mm away)" if detail else
                     f"RV cavity not beside the LV (over {SEPTUM_GAP_MM:g} mm from its myocardium)")
    return flags


def frame_quality_flags(labels_zhw: np.ndarray, spacing_zyx_mm: Optional[Sequence[float]] = None) -> List[str]:
    """Flags of one segmented frame ``[Z, H, W]`` of canonical labels (slices base to apex); with its
    voxel spacing ``(dz, dy, dx)`` mm, also the RV's distance from the LV (:data:`SEPTUM_GAP_MM`)."""
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
    unround = _unround_slices(labels)
    if unround:
        flags.append(f"LV outline not round on slice(s) {_ranges(unround)}")
    for _name, value in STRUCTURES.items():
        gaps = _gap_slices(labels, value)
        if gaps:
            flags.append(f"{STRUCTURE_NAMES[value]} missing on slice(s) {_ranges(gaps)} between slices holding it")
    if spacing_zyx_mm is not None:
        flags += _distance_flags(labels, spacing_zyx_mm)
    return flags


def heart_shift_flags(labels_tzhw: np.ndarray, spacing_zyx_mm: Sequence[float],
                      frames: Optional[Sequence] = None) -> List[str]:
    """The frames whose LV (cavity + myocardium) centroid lies more than :data:`HEART_SHIFT_MM` from the
    median of the other frames' centroids (for an ED/ES pair: the two centroids that far apart); ``frames``
    names the frames (numbers, or phases such as ``"ED"``)."""
    labels = np.asarray(labels_tzhw)
    numbers = list(frames) if frames is not None else list(range(labels.shape[0]))
    scale = np.asarray([float(s) for s in spacing_zyx_mm])
    centroids = {}
    for index, frame in enumerate(labels):
        heart = (frame == LV_CAVITY) | (frame == LV_MYOCARDIUM)
        if heart.any():
            centroids[index] = np.asarray(ndimage.center_of_mass(heart)) * scale
    if len(centroids) < 2:
        return []
    moved, largest = [], 0.0
    for index, centroid in centroids.items():
        others = np.median(np.stack([c for i, c in centroids.items() if i != index]), axis=0)
        distance = float(np.linalg.norm(centroid - others))
        if distance > HEART_SHIFT_MM:
            moved.append(numbers[index])
            largest = max(largest, distance)
    if not moved:
        return []
    named = _ranges(moved) if all(isinstance(m, (int, np.integer)) for m in moved) else ", ".join(map(str, moved))
    return [f"heart {largest:.0f} mm from where the other frames place it "
            f"(frame{'s' if len(moved) > 1 else ''} {named}; over {HEART_SHIFT_MM:g} mm)"]


def volume_curve_flags(curve_ml: Sequence[float], frames: Optional[Sequence[int]] = None) -> List[str]:
    """Flags of an LV volume curve over a cine (one cycle, read as circular; fewer than
    :data:`MIN_CURVE_FRAMES` frames are not judged): more than one trough, spikes."""
    from scipy.signal import find_peaks

    curve = np.asarray(curve_ml, dtype=np.float64)
    numbers = list(frames) if frames is not None else list(range(curve.size))
    if curve.size < MIN_CURVE_FRAMES or not np.isfinite(curve).all() or curve.max() <= 0:
        return []
    flags = []
    span = float(curve.max() - curve.min())
    if span > 0:
        tiled = np.concatenate([curve, curve, curve])  # troughs at the ends of the recording count once
        troughs, _ = find_peaks(-tiled, prominence=TROUGH_PROMINENCE * span)
        troughs = [t - curve.size for t in troughs if curve.size <= t < 2 * curve.size]
        if len(troughs) > 1:
            flags.append(f"LV volume curve with {len(troughs)} troughs (frames {', '.join(str(numbers[t]) for t in troughs)})")
    before, after = np.roll(curve, 1), np.roll(curve, -1)
    departure = curve - (before + after) / 2
    same_way = np.sign(curve - before) == np.sign(curve - after)
    spikes = [numbers[t] for t in np.flatnonzero(same_way & (np.abs(departure) > SPIKE_FRACTION * curve.max()))]
    if spikes:
        flags.append(f"LV volume spike (frame{'s' if len(spikes) > 1 else ''} {_ranges(spikes)}: more than "
                     f"{SPIKE_FRACTION:.0%} of the EDV off both neighbours)")
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
    for name, (least, most) in PLAUSIBLE_RANGES.items():
        value = function.get(name)
        if value is not None and not least <= float(value) <= most:
            label, unit = _RANGE_NAMES[name]
            flags.append(f"{label} {float(value):.1f} {unit} outside the plausible {least:g}-{most:g} {unit}")
    return flags


def study_quality_flags(labels_tzhw: np.ndarray, function: Optional[Dict[str, float]] = None,
                        frames: Optional[Sequence[int]] = None,
                        spacing_zyx_mm: Optional[Sequence[float]] = None,
                        lv_curve_ml: Optional[Sequence[float]] = None) -> List[str]:
    """Flags of a segmented study ``[T, Z, H, W]``: each frame flag with the frames raising it, the heart's
    movement between frames (with the spacing), the volume curve's shape (with a cine's curve), the function's.

    Args:
        labels_tzhw: canonical labels of every frame (a cine, or a study's ED and ES frames).
        function: the study's function scalars (``lv_edv_ml``, ``lv_esv_ml``, ``lv_ef_percent``, ...), if any.
        frames: the frame numbers to report (default ``0..T-1``).
        spacing_zyx_mm: the voxel size ``(dz, dy, dx)``; without it the distance flags are not computed.
        lv_curve_ml: the LV volume of every frame of a cine (:func:`volume_curve_flags`).
    """
    labels = np.asarray(labels_tzhw)
    numbers = list(frames) if frames is not None else list(range(labels.shape[0]))
    by_flag: Dict[str, List[int]] = {}
    for number, frame in zip(numbers, labels):
        for flag in frame_quality_flags(frame):
            by_flag.setdefault(flag, []).append(int(number))
        if spacing_zyx_mm is not None:  # distances and slices differ by frame: grouped without them
            for flag in _distance_flags(frame, spacing_zyx_mm, detail=False):
                by_flag.setdefault(flag, []).append(int(number))
    flags = [f"{flag} (frame{'s' if len(found) > 1 else ''} {_ranges(found)})" for flag, found in by_flag.items()]
    if spacing_zyx_mm is not None:
        flags += heart_shift_flags(labels, spacing_zyx_mm, numbers)
    if lv_curve_ml is not None:
        flags += volume_curve_flags(lv_curve_ml, numbers)
    return flags + function_quality_flags(function)


def verdict(flags: Sequence[str], status: str = "ok") -> Dict[str, object]:
    """``{"verdict": "ok" | "review", "review_reasons": [...]}``: review when the report has no function
    (its ``status``) or any quality flag was raised; the reasons are the status and the flags."""
    reasons = ([] if status == "ok" else [str(status)]) + [str(f) for f in flags]
    return {"verdict": "review" if reasons else "ok", "review_reasons": reasons}
