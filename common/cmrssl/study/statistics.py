"""The study's statistics: one value per held-out subject, paired against scratch, with an interval.

A held-out subject is one observation. Its value for an arm is its mean over the seeds (each seed a
fine-tune on its own draw of labelled subjects); comparing two arms pairs the same subject, over the
seeds both arms ran. Counting each subject once per seed would treat the seeds' repeats of one heart
as independent and overstate the evidence (pseudo-replication).

A structure the model lost (none predicted where the reference has it) has no surface distance; its
HD95 counts as the image's diagonal (:func:`hd95_counting_lost`), the largest distance the image
allows, and the tables give the lost count beside it, so a model that loses structures cannot show
a better HD95 by leaving them out.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["MIN_PAIRS", "PLATEAU_GAIN", "PRETEXT_FLAT", "bootstrap_interval", "hd95_counting_lost",
           "paired_differences", "plateau_gain", "pretext_drop", "subject_means", "wilcoxon_p"]

#: fewer paired subjects than this give no test
MIN_PAIRS = 6

#: a fine-tune has plateaued when the last quarter of its validations raised the best validation Dice by less
PLATEAU_GAIN = 0.01

#: a pretraining's pretext loss has flattened when its last quarter of epochs lowered the mean loss by less than
#: this fraction of the quarter before's
PRETEXT_FLAT = 0.02

PerSeed = Mapping[int, Mapping[str, float]]  # {seed: {subject: value}}


def hd95_counting_lost(hd95_mm: Optional[float], lost: bool, diagonal_mm: float) -> Optional[float]:
    """A frame's HD95 with a lost structure counted as ``diagonal_mm``; None when the reference has none either."""
    if lost:
        return float(diagonal_mm)
    if hd95_mm is None or (isinstance(hd95_mm, float) and math.isnan(hd95_mm)):
        return None
    return float(hd95_mm)


def subject_means(per_seed: PerSeed, seeds: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """``{subject: mean over seeds}`` (over ``seeds`` when given, else every seed present)."""
    values: Dict[str, list] = {}
    for seed, subjects in per_seed.items():
        if seeds is not None and seed not in seeds:
            continue
        for subject, value in subjects.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                values.setdefault(subject, []).append(float(value))
    return {subject: float(np.mean(v)) for subject, v in sorted(values.items())}


def paired_differences(ours: PerSeed, base: PerSeed) -> Dict[str, float]:
    """``{subject: its mean over seeds in ours - the same in base}``, over the seeds both ran."""
    seeds = sorted(set(ours) & set(base))
    a, b = subject_means(ours, seeds), subject_means(base, seeds)
    return {subject: a[subject] - b[subject] for subject in sorted(set(a) & set(b))}


def wilcoxon_p(differences: Sequence[float]) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p of paired differences (one per subject); None under :data:`MIN_PAIRS`."""
    from scipy.stats import wilcoxon

    differences = [float(d) for d in differences]
    if len(differences) < MIN_PAIRS:
        return None
    if not any(differences):
        return 1.0
    return float(wilcoxon(differences).pvalue)


def bootstrap_interval(differences: Sequence[float], confidence: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> Optional[Tuple[float, float]]:
    """Percentile bootstrap interval of the mean difference, resampling subjects; None under :data:`MIN_PAIRS`."""
    values = np.asarray(differences, dtype=float)
    if len(values) < MIN_PAIRS:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def pretext_drop(epoch_losses: Sequence[float]) -> Optional[float]:
    """How much the last quarter of a pretraining's epochs lowered its pretext loss: (mean of the quarter before
    - mean of the last quarter) / mean of the quarter before. None under 4 epochs or when the quarter before
    averages 0. Below :data:`PRETEXT_FLAT` the loss has flattened."""
    values = [float(v) for v in epoch_losses]
    if len(values) < 4:
        return None
    tail = max(1, len(values) // 4)
    before, last = float(np.mean(values[-2 * tail:-tail])), float(np.mean(values[-tail:]))
    return None if before == 0 else (before - last) / abs(before)


def plateau_gain(curve: Sequence[float]) -> Optional[float]:
    """How much the last quarter of a validation curve (at least one value) raised its best value: the best of the
    last quarter minus the best before it. None under 4 values. Below :data:`PLATEAU_GAIN` the run has plateaued;
    with the schedules' decaying learning rate a late rise is damped, so a run that keeps rising is all the clearer."""
    values = [float(v) for v in curve]
    if len(values) < 4:
        return None
    tail = max(1, len(values) // 4)
    return max(values[-tail:]) - max(values[:-tail])
