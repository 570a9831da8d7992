"""Ranking losses on predicted LV cavity areas: the free ordinal labels of a cine stack.

What holds in every short-axis cine without a label (our reading of Luo et al.,
whose method is public only as an abstract; ``bundles/cmr_ranking_ssl`` says so):

- **temporal**: at a mid-ventricular slice the cavity shrinks from ED to ES and
  grows back from ES to the next ED (:func:`temporal_pairs`);
- **spatial**: from the mid-ventricular slice towards the apex the cavity never
  grows (:func:`spatial_pairs`, slices ordered base to apex);
- **nested crops**: the cavity visible in a window is never more than in a window
  that contains it (learning to rank for counting; the windows come from
  :func:`cmrssl.transforms.ranking.nested_boxes`);
- **invariance**: an intensity or contrast change does not change the area.

Each ordered pair ``(larger, smaller)`` costs ``max(0, smaller - larger + margin)``
(torch's ``margin_ranking_loss``); MONAI has no ranking loss. Areas are in mm^2;
the losses divide them by ``scale_mm2`` (100: cm^2) so that their size does not
depend on the unit.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "temporal_pairs",
    "mid_ventricular_slices",
    "spatial_pairs",
    "pairwise_ranking_loss",
    "invariance_loss",
    "AREA_SCALE_MM2",
]

#: mm^2 per loss unit (1 cm^2): slice cavity areas are 100-4000 mm^2.
AREA_SCALE_MM2 = 100.0


def temporal_pairs(num_frames: int, ed: int, es: int) -> List[Tuple[int, int]]:
    """``(larger, smaller)`` frame pairs of consecutive frames of one cardiac cycle.

    Frames are positions ``0..num_frames-1`` in cycle order, the cycle wraps
    around. From ``ed`` forwards to ``es`` the area does not increase (each frame
    is paired with the next as ``(earlier, later)``); from ``es`` forwards to the
    next ``ed`` it does not decrease (``(later, earlier)``). With two frames
    (ED/ES-only data such as ACDC) this is the one pair ``(ed, es)``.

    Raises:
        ValueError: fewer than two frames, ED or ES outside the cycle, or ED == ES.
    """
    n = int(num_frames)
    if n < 2:
        raise ValueError(f"temporal ranking needs at least two frames, got {n}")
    ed, es = int(ed), int(es)
    if not (0 <= ed < n and 0 <= es < n):
        raise ValueError(f"ED {ed} / ES {es} outside the cycle of {n} frames")
    if ed == es:
        raise ValueError(f"ED and ES fall on the same frame {ed}")
    if n == 2:
        return [(ed, es)]
    pairs = []
    t = ed
    while t != es:  # systole: t -> t+1 does not grow
        pairs.append((t, (t + 1) % n))
        t = (t + 1) % n
    while t != ed:  # diastole: t -> t+1 does not shrink
        pairs.append(((t + 1) % n, t))
        t = (t + 1) % n
    return pairs


def mid_ventricular_slices(num_slices: int, fraction: Sequence[float] = (0.25, 0.75)) -> List[int]:
    """Slice positions (base to apex) between ``fraction[0]`` and ``fraction[1]`` of the stack.

    Where a study has no labels, the mid-ventricular slices are taken by position:
    the basal slices may leave the ventricle as the base descends in systole, and
    the apical ones may hold no cavity at all, so the temporal order is only
    trusted in between. Always at least the middle slice.
    """
    n = int(num_slices)
    if n < 1:
        return []
    low, high = float(fraction[0]), float(fraction[1])
    chosen = [z for z in range(n) if low <= (z + 0.5) / n <= high]
    return chosen or [n // 2]


def spatial_pairs(num_slices: int, start: Optional[int] = None) -> List[Tuple[int, int]]:
    """``(larger, smaller)`` pairs of adjacent slices from ``start`` (default the middle) to the apex.

    Slices are ordered base to apex (the data contract), so slice ``z`` holds at
    least the cavity of slice ``z + 1`` for every ``z >= start``.
    """
    n = int(num_slices)
    start = n // 2 if start is None else int(start)
    return [(z, z + 1) for z in range(max(start, 0), n - 1)]


def pairwise_ranking_loss(
    larger: torch.Tensor, smaller: torch.Tensor, margin_mm2: float = 0.0, scale_mm2: float = AREA_SCALE_MM2
) -> torch.Tensor:
    """Mean of ``max(0, smaller - larger + margin)`` over paired areas (mm^2), in ``scale_mm2`` units.

    An empty pair list costs 0 (with a gradient path, so a step without pairs still runs).
    """
    larger, smaller = larger.reshape(-1), smaller.reshape(-1)
    if larger.shape != smaller.shape:
        raise ValueError(f"paired areas differ in shape: {tuple(larger.shape)} vs {tuple(smaller.shape)}")
    if larger.numel() == 0:
        return larger.sum() * 0.0
    target = torch.ones_like(larger)
    return F.margin_ranking_loss(larger / scale_mm2, smaller / scale_mm2, target, margin=margin_mm2 / scale_mm2)


def invariance_loss(areas: torch.Tensor, augmented: torch.Tensor, scale_mm2: float = AREA_SCALE_MM2) -> torch.Tensor:
    """Smooth-L1 distance between the areas (mm^2) of slices and of their intensity-augmented copies."""
    if areas.shape != augmented.shape:
        raise ValueError(f"areas {tuple(areas.shape)} and augmented areas {tuple(augmented.shape)} differ in shape")
    if areas.numel() == 0:
        return areas.sum() * 0.0
    return F.smooth_l1_loss(augmented / scale_mm2, areas / scale_mm2)
