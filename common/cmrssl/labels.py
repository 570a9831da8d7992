"""The project's one vocabulary of segmentation labels (every module imports it from here).

Canonical labels everywhere inside the project (the model zoo's ventricular
bundle order): 0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity.
Datasets that number their structures otherwise are mapped on reading, with
the maps below, and checked (:func:`cmrssl.io.nifti.map_labels`).

LV mass is the myocardial volume times :data:`MYOCARDIAL_DENSITY_G_PER_ML`
(1.05 g/ml, the density of myocardium used by clinical CMR software).
"""

from __future__ import annotations

from typing import Dict, Tuple

__all__ = [
    "BACKGROUND",
    "LV_CAVITY",
    "LV_MYOCARDIUM",
    "RV_CAVITY",
    "UNLABELLED",
    "LABELS",
    "NUM_LABELS",
    "STRUCTURES",
    "STRUCTURE_NAMES",
    "STRUCTURE_COLOURS",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "CANONICAL_LABELS",
    "ACDC_TO_CANONICAL",
    "MNMS_TO_CANONICAL",
]

BACKGROUND, LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY = 0, 1, 2, 3

#: A voxel nobody labelled (a Sunnybrook frame without contours); never a class of a network.
UNLABELLED = -1

#: name -> value of every canonical label, background included.
LABELS: Dict[str, int] = {
    "background": BACKGROUND,
    "lv_cavity": LV_CAVITY,
    "lv_myocardium": LV_MYOCARDIUM,
    "rv_cavity": RV_CAVITY,
}
NUM_LABELS = len(LABELS)

#: The foreground structures (name -> value), the order of every per-structure table.
STRUCTURES: Dict[str, int] = {k: v for k, v in LABELS.items() if v != BACKGROUND}

#: How reports and plots name each foreground structure.
STRUCTURE_NAMES: Dict[int, str] = {LV_CAVITY: "LV cavity", LV_MYOCARDIUM: "LV myocardium", RV_CAVITY: "RV cavity"}

#: (name, colour) of each foreground structure in overlays and curves (ColorBrewer Set1).
STRUCTURE_COLOURS: Dict[int, Tuple[str, str]] = {
    LV_CAVITY: (STRUCTURE_NAMES[LV_CAVITY], "#e41a1c"),
    LV_MYOCARDIUM: (STRUCTURE_NAMES[LV_MYOCARDIUM], "#4daf4a"),
    RV_CAVITY: (STRUCTURE_NAMES[RV_CAVITY], "#377eb8"),
}

MYOCARDIAL_DENSITY_G_PER_ML = 1.05

#: Dataset label value -> canonical value. ACDC numbers 1 RV cavity, 2 myocardium, 3 LV cavity;
#: M&Ms / M&Ms-2 already use the canonical order.
CANONICAL_LABELS: Dict[int, int] = {v: v for v in LABELS.values()}
ACDC_TO_CANONICAL: Dict[int, int] = {0: BACKGROUND, 1: RV_CAVITY, 2: LV_MYOCARDIUM, 3: LV_CAVITY}
MNMS_TO_CANONICAL: Dict[int, int] = dict(CANONICAL_LABELS)
