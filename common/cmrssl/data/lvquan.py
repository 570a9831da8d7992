"""LVQuan-style samples (slice cine + 11 indices + phase) from any labelled short-axis study.

The challenge data (:mod:`cmrssl.data.lvquan_mat`) gives, per subject, one
mid-ventricular slice through the cycle with its indices. The same container
(:class:`cmrssl.data.lvquan_mat.LVQuanData`) is built here from canonical
label cines (phantom, ACDC, M&Ms, ...), the indices computed by
:func:`cmrssl.metrics.lv_indices.lv_indices`; one "subject" per measured
slice. So the LVQuan bundle trains from the challenge files and from our own
segmented data alike.

Slice selection (:func:`select_mid_slices`): the slices whose LV cavity is
present in every labelled frame; ``"mid"`` keeps their middle third (LVQuan
indices are defined on mid-ventricular slices), ``"all"`` keeps them all.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence, Union

import numpy as np

from cmrssl.data.lvquan_mat import LVQuanData
from cmrssl.metrics.lv_indices import cardiac_phase, indices_matrix, lv_indices

__all__ = ["select_mid_slices", "measure_slice", "lvquan_samples_from_labels"]


def select_mid_slices(labels: np.ndarray, frames: Sequence[int], slices: Union[str, int, Sequence[int]] = "mid") -> List[int]:
    """Slices of ``labels [T, Z, H, W]`` to measure: ``"mid"``, ``"all"``, or explicit indices
    (a list, an int, or a comma-separated string).

    Raises:
        ValueError: no slice has an LV cavity in every labelled frame, or an explicit slice lacks one.
    """
    with_cavity = [z for z in range(labels.shape[1]) if all((labels[t, z] == 1).any() for t in frames)]
    if not (isinstance(slices, str) and slices in ("mid", "all")):
        wanted = [int(s) for s in (slices.split(",") if isinstance(slices, str) else np.atleast_1d(slices))]
        bad = [z for z in wanted if z not in with_cavity]
        if bad:
            raise ValueError(f"slice(s) {bad} lack an LV cavity in some labelled frame (usable: {with_cavity})")
        return wanted
    if not with_cavity:
        raise ValueError("no slice shows an LV cavity in every labelled frame")
    if slices == "all":
        return with_cavity
    third = len(with_cavity) // 3
    return with_cavity[third: len(with_cavity) - third]


def _circular_mean_deg(angles: np.ndarray) -> float:
    rad = np.radians(angles)
    return float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))


def measure_slice(masks: np.ndarray, spacing_mm, *, whole_cycle: bool) -> Optional[dict]:
    """Indices of one slice's frames ``masks [T, H, W]``; None when no frame shows the RV.

    Frames without RV (apical slices, some systolic frames) take the slice's mean septum
    direction of the frames that show it. ``phase`` is None unless ``whole_cycle``.
    """
    has_rv = np.array([(m == 3).any() for m in masks])
    if not has_rv.any():
        return None
    fallback = None
    if not has_rv.all():
        fallback = _circular_mean_deg(lv_indices(masks[has_rv], spacing_mm, num_rays=60)["septum_angle_deg"])
    result = lv_indices(masks, spacing_mm, septum_angle_deg=fallback)
    result["indices"] = indices_matrix(result)
    result["phase"] = cardiac_phase(result["cavity_area_mm2"]) if whole_cycle and len(masks) > 1 else None
    return result


def lvquan_samples_from_labels(labels: np.ndarray, spacing_mm, *, pixels: Optional[np.ndarray] = None,
                               slices: Union[str, Sequence[int]] = "mid", name: str = "study") -> LVQuanData:
    """One LVQuan "subject" per measured slice of a fully labelled cine.

    Args:
        labels: canonical labels ``[T, Z, H, W]``, every frame labelled (phase needs the cycle).
        spacing_mm: ``(dy, dx)``; must be isotropic in-plane (within 1 %), like the challenge data.
        pixels: optional images ``[T, Z, H, W]`` (zeros otherwise).
        slices: see :func:`select_mid_slices`.
        name: prefix of the subject names (``name:slice{z}``).

    Raises:
        ValueError: unlabelled frames (-1), anisotropic pixels, or no measurable slice.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(f"{name}: labels must be [T, Z, H, W], got {labels.shape}")
    if (labels < 0).any():
        raise ValueError(f"{name}: some frames are unlabelled (-1); LVQuan samples need the whole cycle")
    dy, dx = (float(s) for s in spacing_mm)
    if abs(dy - dx) > 0.01 * max(dy, dx):
        raise ValueError(f"{name}: in-plane spacing {dy} x {dx} mm is anisotropic; resample first")
    frames = list(range(labels.shape[0]))
    kept, results = [], []
    for z in select_mid_slices(labels, frames, slices):
        result = measure_slice(labels[:, z], (dy, dx), whole_cycle=True)
        if result is None:
            print(f"{name}: slice {z}: no RV in any frame, sectors undefined; skipped", file=sys.stderr)
            continue
        kept.append(z)
        results.append(result)
    if not kept:
        raise ValueError(f"{name}: no measurable slice (LV cavity and RV needed)")
    images = np.zeros(labels.shape, np.float32) if pixels is None else np.asarray(pixels, np.float32)
    indices = np.stack([r["indices"] for r in results])  # [S, T, 11]
    return LVQuanData(
        images=np.moveaxis(images[:, kept], 1, 0).copy(),
        labels=np.moveaxis(np.where(labels[:, kept] == 3, 0, labels[:, kept]), 1, 0).astype(np.uint8),
        areas_mm2=indices[..., :2], dims_mm=indices[..., 2:5], rwt_mm=indices[..., 5:],
        phase=np.stack([r["phase"] for r in results]).astype(np.int8),
        pixel_spacing_mm=np.full(len(kept), dy), subjects=[f"{name}:slice{z}" for z in kept], source_units="mm",
    )
