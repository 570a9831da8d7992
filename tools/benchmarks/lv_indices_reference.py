"""Reference per-ray Python loop for :func:`cmrssl.metrics.lv_indices.lv_indices`, and its benchmark.

A ``make bench`` plugin (``BENCHMARKS``) and the tests' oracle; it lives outside
the installed package because no user code needs it.

``lv_indices_loop_reference`` walks every ray sample by sample in plain
Python, the way the definition reads (STACOM18 ``calculateWallThicknesses``
loops over polar pixels the same way, under numba). It is the ground truth
the vectorised version is tested against (``tests/unit/test_lv_indices.py``)
and the baseline of the ``lv_indices`` benchmark (``make bench``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from cmrssl.labels import LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY
from cmrssl.metrics.lv_indices import DIMENSION_SECTORS, RWT_SECTORS, _SECTOR_START_DEG, lv_indices

__all__ = ["lv_indices_loop_reference", "synthetic_lv_frames", "bench_lv_indices"]


def lv_indices_loop_reference(
    mask: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    anterior_clockwise: bool = True,
    num_rays: int = 720,
    radial_step_mm: Optional[float] = None,
) -> Dict[str, object]:
    """Indices of ONE frame ``[H, W]`` (with RV) by explicit loops over rays and samples.

    Same definition and sampling as :func:`lv_indices` (rays at bin centres, samples at
    ``step, 2 step, ...``, nearest pixel, boundary half a step beyond the last sample).
    Returns ``dimensions_mm`` (3 floats) and ``wall_thickness_mm`` (6 floats) and the areas.
    """
    dy, dx = (float(s) for s in spacing_mm)
    h, w = mask.shape
    cavity_pixels = [(r, c) for r in range(h) for c in range(w) if mask[r, c] == LV_CAVITY]
    rv_pixels = [(r, c) for r in range(h) for c in range(w) if mask[r, c] == RV_CAVITY]
    lv_pixels = [(r, c) for r in range(h) for c in range(w) if mask[r, c] in (LV_CAVITY, LV_MYOCARDIUM)]
    cy = sum(r for r, _ in cavity_pixels) / len(cavity_pixels) * dy
    cx = sum(c for _, c in cavity_pixels) / len(cavity_pixels) * dx
    ry = sum(r for r, _ in rv_pixels) / len(rv_pixels) * dy
    rx = sum(c for _, c in rv_pixels) / len(rv_pixels) * dx
    septum = math.degrees(math.atan2(ry - cy, rx - cx))
    step = float(radial_step_mm) if radial_step_mm is not None else min(dy, dx) / 10.0
    max_radius = max(math.hypot(r * dy - cy, c * dx - cx) for r, c in lv_pixels) + max(dy, dx)
    num_samples = int(math.ceil(max_radius / step))
    sense = 1.0 if anterior_clockwise else -1.0

    rays = []  # (phi, cavity radius or None, thickness or None)
    for k in range(num_rays):
        phi = (k + 0.5) * 360.0 / num_rays
        angle = math.radians(septum + sense * phi)
        outer_cavity = inner_myo = outer_myo = None
        for j in range(1, num_samples + 1):
            radius = j * step
            row = int(np.rint((cy + math.sin(angle) * radius) / dy))
            col = int(np.rint((cx + math.cos(angle) * radius) / dx))
            if not (0 <= row < h and 0 <= col < w):
                continue
            label = mask[row, col]
            if label == LV_CAVITY:
                outer_cavity = radius
            elif label == LV_MYOCARDIUM:
                inner_myo = radius if inner_myo is None else inner_myo
                outer_myo = radius
        rays.append((
            phi,
            None if outer_cavity is None else outer_cavity + step / 2,
            None if inner_myo is None else outer_myo - inner_myo + step,
        ))

    def sector_mean(names, column, scale=1.0):
        values = [
            ray[column] for ray in rays
            if ray[column] is not None and any(
                _SECTOR_START_DEG[n] <= ray[0] < _SECTOR_START_DEG[n] + 60 for n in names)
        ]
        return scale * sum(values) / len(values) if values else float("nan")

    return {
        "cavity_area_mm2": len(cavity_pixels) * dy * dx,
        "myocardium_area_mm2": sum(1 for v in mask.ravel() if v == LV_MYOCARDIUM) * dy * dx,
        "dimensions_mm": [sector_mean(pair, 1, 2.0) for pair in DIMENSION_SECTORS],
        "wall_thickness_mm": [sector_mean((name,), 2) for name in RWT_SECTORS],
    }


def synthetic_lv_frames(num_frames: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """``[N, size, size]`` beating-annulus frames with an RV blob (cavity 14-22 px, wall 5-8 px)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.zeros((num_frames, size, size), np.uint8)
    for t in range(num_frames):
        cy, cx = size / 2 + rng.uniform(-3, 3, 2)
        inner = 18 + 4 * math.cos(2 * math.pi * t / max(num_frames, 1))
        outer = inner + 6 + rng.uniform(0, 2)
        d = np.hypot(rows - cy, cols - cx)
        frames[t][d < outer] = LV_MYOCARDIUM
        frames[t][d < inner] = LV_CAVITY
        angle = rng.uniform(0, 2 * math.pi)
        rv = np.hypot(rows - (cy + (outer + 8) * math.sin(angle)), cols - (cx + (outer + 8) * math.cos(angle))) < 9
        frames[t][rv & (frames[t] == 0)] = RV_CAVITY
    return frames


def bench_lv_indices(workdir: Optional[Path] = None, num_frames: int = 20, loop_frames: int = 2) -> List[dict]:
    """Seconds per frame of the vectorised :func:`lv_indices` vs the per-ray Python loop.

    ``workdir`` is unused (benchmark registry signature). Rows follow ``tools/bench.py``.
    """
    spacing = (1.25, 1.25)
    frames = synthetic_lv_frames(num_frames)
    lv_indices(frames[:1], spacing)  # warm-up (imports, allocations)
    start = time.perf_counter()
    vectorised = lv_indices(frames, spacing)
    vector_s = (time.perf_counter() - start) / num_frames
    start = time.perf_counter()
    reference = [lv_indices_loop_reference(frames[t], spacing) for t in range(loop_frames)]
    loop_s = (time.perf_counter() - start) / loop_frames
    agree = max(
        float(np.nanmax(np.abs(np.asarray(ref["wall_thickness_mm"]) - vectorised["wall_thickness_mm"][t])))
        for t, ref in enumerate(reference)
    )
    setting = f"96x96 px, {spacing[0]} mm, 720 rays, step 0.125 mm"
    name = "lv_indices"
    return [
        {"benchmark": name, "metric": "vectorised numpy", "value": round(vector_s * 1000, 2), "unit": "ms/frame",
         "note": f"{num_frames} frames in one call; {setting}"},
        {"benchmark": name, "metric": "per-ray Python loop", "value": round(loop_s * 1000, 1), "unit": "ms/frame",
         "note": f"{loop_frames} frames; {setting}"},
        {"benchmark": name, "metric": "speed-up", "value": round(loop_s / vector_s, 1), "unit": "x",
         "note": f"max |RWT difference| {agree:.2g} mm"},
    ]


BENCHMARKS = {"lv_indices": bench_lv_indices}
