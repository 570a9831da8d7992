"""Global cardiac function from canonical label maps.

Labels are canonical (:mod:`cmrssl.labels`): 0 background, 1 LV cavity, 2 LV
myocardium, 3 RV cavity. Volumes are voxel counts times the real voxel volume
``dz * dy * dx`` (slice spacing from slice positions, not slice thickness), the
summation-of-discs method used for clinical short-axis cine.

Clinical conventions followed here:

- End-diastole (ED) is the frame of maximal LV cavity volume and end-systole
  (ES) the frame of minimal LV cavity volume, among the labelled frames. The
  RV is measured on the same two frames (as in ACDC and M&Ms, where one ED/ES
  pair is given per study).
- Papillary muscles and trabeculae belong to the cavity (that is how the
  reference contours of ACDC and Sunnybrook are drawn), so the LV cavity label
  is taken as is.
- LV mass is the myocardial volume at ED times
  :data:`cmrssl.labels.MYOCARDIAL_DENSITY_G_PER_ML`.

Frames without a reference carry ``-1`` everywhere (the
:class:`cmrssl.io.cine.CineStudy` convention); they are skipped and their
entries in the volume curves are NaN.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cmrssl.labels import LV_CAVITY, LV_MYOCARDIUM, MYOCARDIAL_DENSITY_G_PER_ML, NUM_LABELS, RV_CAVITY, UNLABELLED

__all__ = [
    "CardiacFunction",
    "volume_curve_ml",
    "label_volumes_ml",
    "cardiac_function",
    "cardiac_function_from_ed_es",
    "cardiac_function_from_study",
    "cardiac_function_from_lv_curve",
    "cardiac_function_from_volume_curves",
    "agreement",
]

logger = logging.getLogger(__name__)


def _where(source: Optional[str]) -> str:
    return f"{source}: " if source else ""


def _check_spacing(spacing_zyx_mm: Sequence[float], source: Optional[str]) -> Tuple[float, float, float]:
    try:
        spacing = tuple(float(s) for s in spacing_zyx_mm)
    except TypeError as exc:
        raise ValueError(f"{_where(source)}spacing_zyx_mm must be (dz, dy, dx) in mm, got {spacing_zyx_mm!r}") from exc
    if len(spacing) != 3:
        raise ValueError(f"{_where(source)}spacing_zyx_mm must be (dz, dy, dx) in mm, got {spacing_zyx_mm!r}")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"{_where(source)}spacing must be positive and finite (dz, dy, dx in mm), got {spacing}; "
            "a single-slice study has no slice spacing and no volume"
        )
    return spacing  # type: ignore[return-value]


def _frame_label_counts(frame: np.ndarray, frame_index: int, source: Optional[str]) -> np.ndarray:
    """Voxel count of each canonical label ``[4]`` in one frame ``[Z, H, W]``, after validation."""
    if frame.dtype.kind == "f":
        if np.isnan(frame).any():
            raise ValueError(f"{_where(source)}labels of frame {frame_index} contain NaN")
        if (frame != np.round(frame)).any():
            bad = np.unique(frame[frame != np.round(frame)])[:5]
            raise ValueError(
                f"{_where(source)}labels of frame {frame_index} are not integers (e.g. {bad.tolist()}); "
                "expected canonical labels {0, 1, 2, 3}"
            )
    elif frame.dtype.kind not in "iub":
        raise ValueError(f"{_where(source)}labels must be numeric, got dtype {frame.dtype}")
    if frame.size == 0:
        raise ValueError(f"{_where(source)}labels of frame {frame_index} are empty (shape {frame.shape})")
    lo, hi = frame.min(), frame.max()
    if lo < 0 or hi >= NUM_LABELS:
        outside = (frame < 0) | (frame >= NUM_LABELS)
        bad = np.unique(frame[outside])[:5]
        raise ValueError(
            f"{_where(source)}labels of frame {frame_index} hold values {bad.tolist()} outside the "
            "canonical set {0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity}"
        )
    return np.bincount(frame.ravel().astype(np.intp), minlength=NUM_LABELS)


def _as_cine_labels(labels, source: Optional[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(
            f"{_where(source)}labels must be a cine [T, Z, H, W], got {labels.ndim}D shape {labels.shape}"
        )
    if labels.dtype.kind not in "iubf":
        raise ValueError(f"{_where(source)}labels must be numeric, got dtype {labels.dtype}")
    return labels


def _resolve_labelled_frames(labels: np.ndarray, labelled_frames, source: Optional[str]) -> List[int]:
    num_frames = labels.shape[0]
    if labelled_frames is None:
        # A frame that is -1 everywhere is "not labelled" (CineStudy convention);
        # anything else is validated as a reference.
        flat = labels.reshape(num_frames, -1)
        unlabelled = (flat == UNLABELLED).all(axis=1)
        frames = [t for t in range(num_frames) if not unlabelled[t]]
    else:
        frames = sorted({int(t) for t in labelled_frames})
        bad = [t for t in frames if not 0 <= t < num_frames]
        if bad:
            raise ValueError(f"{_where(source)}labelled_frames {bad} outside the {num_frames} frames of the cine")
    if len(frames) < 2:
        raise ValueError(
            f"{_where(source)}need at least two labelled frames to find ED and ES, got {frames} of {num_frames}"
        )
    return frames


def label_volumes_ml(
    labels, voxel_volume_ml: float, labelled_frames: Optional[Sequence[int]] = None, source: Optional[str] = None
) -> np.ndarray:
    """Volume of each canonical label per frame.

    Args:
        labels: ``[T, Z, H, W]`` canonical labels (integer, or float holding integers).
        voxel_volume_ml: volume of one voxel in ml (``dz * dy * dx / 1000`` with mm spacing).
        labelled_frames: frames to measure; None measures every frame that is not ``-1`` everywhere.
        source: name of the study, used in error messages.

    Returns:
        float64 ``[T, 4]`` volumes in ml of background, LV cavity, LV myocardium, RV
        cavity; rows of unmeasured frames are NaN.

    Raises:
        ValueError: wrong dimensionality, NaN, values outside {0, 1, 2, 3} in a
            measured frame, or a voxel volume that is not positive.
    """
    labels = _as_cine_labels(labels, source)
    voxel_volume_ml = float(voxel_volume_ml)
    if not (math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0):
        raise ValueError(f"{_where(source)}voxel volume must be positive, got {voxel_volume_ml} ml")
    if labelled_frames is None:
        frames = [t for t in range(labels.shape[0]) if not (labels[t] == UNLABELLED).all()]
    else:
        frames = [int(t) for t in labelled_frames]
    volumes = np.full((labels.shape[0], NUM_LABELS), np.nan)
    # One bincount per frame: the Python loop runs over frames, never voxels.
    for t in frames:
        volumes[t] = _frame_label_counts(labels[t], t, source) * voxel_volume_ml
    return volumes


def volume_curve_ml(labels, voxel_volume_ml: float, label: int, source: Optional[str] = None) -> np.ndarray:
    """Volume (ml) of one canonical ``label`` in every frame of ``labels`` ``[T, Z, H, W]``.

    Frames that are ``-1`` everywhere (unlabelled) give NaN. Returns float64 ``[T]``.

    Raises:
        ValueError: as :func:`label_volumes_ml`, or a ``label`` outside {0, 1, 2, 3}.
    """
    if int(label) != label or not 0 <= int(label) < NUM_LABELS:
        raise ValueError(f"{_where(source)}label must be one of 0, 1, 2, 3, got {label!r}")
    return label_volumes_ml(labels, voxel_volume_ml, source=source)[:, int(label)]


def _ejection_fraction_percent(edv: float, esv: float) -> Optional[float]:
    if edv <= 0:
        return None
    return 100.0 * (edv - esv) / edv


@dataclass
class CardiacFunction:
    """Global LV and RV function of one study.

    Volumes in ml, mass in g, EF in percent, frames 0-based indices of the
    cine as given (for a study read from disk: frame indices in the source's
    full cycle). ``None`` marks a number that the labels cannot give (no RV
    labelled, no myocardium at ED). Volume curves are ``[T]`` in ml with NaN on
    unlabelled frames.
    """

    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_percent: float
    lv_mass_g: Optional[float]
    rv_edv_ml: Optional[float]
    rv_esv_ml: Optional[float]
    rv_sv_ml: Optional[float]
    rv_ef_percent: Optional[float]
    ed_frame: int
    es_frame: int
    lv_volume_curve_ml: np.ndarray
    rv_volume_curve_ml: np.ndarray
    lv_myocardium_curve_ml: np.ndarray
    spacing_zyx_mm: Tuple[float, float, float]
    labelled_frames: List[int] = field(default_factory=list)
    frame_indices: Optional[List[int]] = None
    source: str = ""

    #: Scalar fields with their units, in report order.
    SCALARS = (
        ("lv_edv_ml", "ml"),
        ("lv_esv_ml", "ml"),
        ("lv_sv_ml", "ml"),
        ("lv_ef_percent", "%"),
        ("lv_mass_g", "g"),
        ("rv_edv_ml", "ml"),
        ("rv_esv_ml", "ml"),
        ("rv_sv_ml", "ml"),
        ("rv_ef_percent", "%"),
        ("ed_frame", ""),
        ("es_frame", ""),
    )

    @property
    def voxel_volume_ml(self) -> float:
        dz, dy, dx = self.spacing_zyx_mm
        return dz * dy * dx / 1000.0

    def scalars(self) -> Dict[str, Optional[float]]:
        """The scalar numbers (``SCALARS`` order) as a flat dict (None where unavailable)."""
        return {name: getattr(self, name) for name, _ in self.SCALARS}

    def to_dict(self) -> dict:
        """JSON-ready dict: scalars, curves as lists (NaN -> None), spacing, frames."""

        def curve(values: np.ndarray) -> list:
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]

        out: dict = {}
        for name, value in self.scalars().items():
            if value is None:
                out[name] = None
            elif name in ("ed_frame", "es_frame"):
                out[name] = int(value)
            else:
                out[name] = float(value)
        out["lv_volume_curve_ml"] = curve(self.lv_volume_curve_ml)
        out["rv_volume_curve_ml"] = curve(self.rv_volume_curve_ml)
        out["lv_myocardium_curve_ml"] = curve(self.lv_myocardium_curve_ml)
        out["labelled_frames"] = [int(t) for t in self.labelled_frames]
        if self.frame_indices is not None:
            out["frame_indices"] = [int(t) for t in self.frame_indices]
        out["spacing_zyx_mm"] = [float(s) for s in self.spacing_zyx_mm]
        out["voxel_volume_ml"] = float(self.voxel_volume_ml)
        out["num_frames"] = int(len(self.lv_volume_curve_ml))
        out["source"] = self.source
        return out


def _function_from_volumes(
    volumes: np.ndarray,
    frames: Sequence[int],
    spacing: Tuple[float, float, float],
    source: Optional[str],
    ed_frame: Optional[int] = None,
    es_frame: Optional[int] = None,
    frame_indices: Optional[Sequence[int]] = None,
) -> CardiacFunction:
    lv = volumes[:, LV_CAVITY]
    frames = list(frames)
    if ed_frame is None or es_frame is None:
        lv_labelled = lv[frames]
        # First maximum / first minimum: deterministic on ties.
        ed_frame = frames[int(np.argmax(lv_labelled))]
        es_frame = frames[int(np.argmin(lv_labelled))]
    for name, t in (("ED", ed_frame), ("ES", es_frame)):
        if not lv[t] > 0:
            raise ValueError(
                f"{_where(source)}LV cavity (label 1) is empty on frame {t} used for {name}; "
                "cannot measure LV volumes"
            )
    if ed_frame == es_frame:
        raise ValueError(f"{_where(source)}ED and ES fall on the same frame {ed_frame}: the LV volume does not change")
    edv, esv = float(lv[ed_frame]), float(lv[es_frame])
    myo_ed = float(volumes[ed_frame, LV_MYOCARDIUM])
    rv_edv, rv_esv = float(volumes[ed_frame, RV_CAVITY]), float(volumes[es_frame, RV_CAVITY])
    has_rv = rv_edv > 0
    mapping = list(frame_indices) if frame_indices is not None else None

    def report_frame(t: int) -> int:
        return int(mapping[t]) if mapping is not None else int(t)

    return CardiacFunction(
        lv_edv_ml=edv,
        lv_esv_ml=esv,
        lv_sv_ml=edv - esv,
        lv_ef_percent=float(_ejection_fraction_percent(edv, esv)),
        lv_mass_g=MYOCARDIAL_DENSITY_G_PER_ML * myo_ed if myo_ed > 0 else None,
        rv_edv_ml=rv_edv if has_rv else None,
        rv_esv_ml=rv_esv if has_rv else None,
        rv_sv_ml=rv_edv - rv_esv if has_rv else None,
        rv_ef_percent=_ejection_fraction_percent(rv_edv, rv_esv) if has_rv else None,
        ed_frame=report_frame(ed_frame),
        es_frame=report_frame(es_frame),
        lv_volume_curve_ml=lv.copy(),
        rv_volume_curve_ml=volumes[:, RV_CAVITY].copy(),
        lv_myocardium_curve_ml=volumes[:, LV_MYOCARDIUM].copy(),
        spacing_zyx_mm=spacing,
        labelled_frames=[report_frame(t) for t in frames],
        frame_indices=[int(t) for t in mapping] if mapping is not None else None,
        source=source or "",
    )


def cardiac_function(
    labels,
    spacing_zyx_mm: Sequence[float],
    labelled_frames: Optional[Sequence[int]] = None,
    source: Optional[str] = None,
    frame_indices: Optional[Sequence[int]] = None,
) -> CardiacFunction:
    """LV/RV function of a labelled cine.

    ED is the labelled frame of maximal LV cavity volume, ES the one of
    minimal LV cavity volume; a cine may be labelled on every frame or only on
    some (e.g. ED and ES).

    Args:
        labels: ``[T, Z, H, W]`` canonical labels; unlabelled frames are ``-1`` everywhere.
        spacing_zyx_mm: ``(dz, dy, dx)`` in mm; ``dz`` is the slice spacing (from positions).
        labelled_frames: frames holding references; None takes every frame not ``-1`` everywhere.
        source: study name used in error messages and in the result.
        frame_indices: ``[T]`` index of each frame in the source's full cycle, used for the
            reported ED/ES frames (e.g. ACDC keeps frames 0 and 11 only); default ``0..T-1``.

    Returns:
        :class:`CardiacFunction`.

    Raises:
        ValueError: labels not 4D, NaN or values outside {0, 1, 2, 3} in a labelled
            frame, fewer than two labelled frames, spacing not positive, an empty LV
            cavity on the ED or ES frame. Messages start with ``source`` when given.
    """
    spacing = _check_spacing(spacing_zyx_mm, source)
    labels = _as_cine_labels(labels, source)
    frames = _resolve_labelled_frames(labels, labelled_frames, source)
    if frame_indices is not None and len(frame_indices) != labels.shape[0]:
        raise ValueError(
            f"{_where(source)}frame_indices has {len(frame_indices)} entries for {labels.shape[0]} frames"
        )
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    volumes = label_volumes_ml(labels, voxel_ml, labelled_frames=frames, source=source)
    return _function_from_volumes(volumes, frames, spacing, source, frame_indices=frame_indices)


def cardiac_function_from_ed_es(
    ed_labels,
    es_labels,
    spacing_zyx_mm: Sequence[float],
    source: Optional[str] = None,
    ed_frame: int = 0,
    es_frame: int = 1,
) -> CardiacFunction:
    """LV/RV function from the ED and ES label volumes of one study.

    The caller says which volume is ED and which is ES (e.g. from ACDC's
    ``Info.cfg``); they are not re-ordered by volume. An ES cavity larger than
    the ED one is logged as a warning and gives a negative EF.

    Args:
        ed_labels, es_labels: ``[Z, H, W]`` canonical labels of the same geometry.
        spacing_zyx_mm: ``(dz, dy, dx)`` in mm.
        source: study name for messages.
        ed_frame, es_frame: 0-based frame numbers reported in the result.

    Returns:
        :class:`CardiacFunction` with two-point volume curves ``[ED, ES]``.
    """
    spacing = _check_spacing(spacing_zyx_mm, source)
    ed_labels, es_labels = np.asarray(ed_labels), np.asarray(es_labels)
    for name, arr in (("ED", ed_labels), ("ES", es_labels)):
        if arr.ndim != 3:
            raise ValueError(
                f"{_where(source)}{name} labels must be a volume [Z, H, W], got {arr.ndim}D shape {arr.shape}"
            )
    if ed_labels.shape != es_labels.shape:
        raise ValueError(
            f"{_where(source)}ED labels shape {ed_labels.shape} differs from ES labels shape {es_labels.shape}"
        )
    if int(ed_frame) == int(es_frame):
        raise ValueError(f"{_where(source)}ED and ES frame numbers must differ, got {ed_frame}")
    labels = np.stack([ed_labels, es_labels])
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    volumes = label_volumes_ml(labels, voxel_ml, labelled_frames=[0, 1], source=source)
    if volumes[1, LV_CAVITY] > volumes[0, LV_CAVITY]:
        logger.warning(
            "%sES LV cavity (%.1f ml) is larger than ED (%.1f ml): ED/ES may be swapped",
            _where(source), volumes[1, LV_CAVITY], volumes[0, LV_CAVITY],
        )
    return _function_from_volumes(
        volumes, [0, 1], spacing, source, ed_frame=0, es_frame=1, frame_indices=[int(ed_frame), int(es_frame)]
    )


def cardiac_function_from_study(study) -> CardiacFunction:
    """LV/RV function of a labelled :class:`cmrssl.io.cine.CineStudy`.

    Uses the study's real voxel volume (slice spacing from slice positions),
    its ``labelled_frames`` and reports ED/ES as indices of the source's full
    cycle (``study.source_frame_index``).

    Raises:
        ValueError: the study has no labels, or any error of :func:`cardiac_function`.
    """
    source = str(getattr(study, "source", "") or "study")
    if study.labels is None:
        raise ValueError(f"{source}: the study has no labels; cardiac function needs a labelled cine")
    return cardiac_function(
        study.labels,
        study.spacing_zyx_mm,
        labelled_frames=list(study.labelled_frames) or None,
        source=source,
        frame_indices=[int(t) for t in study.source_frame_index],
    )


def cardiac_function_from_volume_curves(
    volumes_ml,
    spacing_zyx_mm: Sequence[float],
    source: Optional[str] = None,
    frame_indices: Optional[Sequence[int]] = None,
    frames: Optional[Sequence[int]] = None,
    ed_frame: Optional[int] = None,
    es_frame: Optional[int] = None,
) -> CardiacFunction:
    """LV/RV function from per-label volume curves ``[T, 4]`` (ml of background, LV cavity, LV
    myocardium, RV cavity) measured without a label map, e.g. the summed class probabilities of a
    segmentation head (the ranking bundle's U-Net). ED is the frame of largest LV volume, ES of
    smallest; mass and RV numbers as :func:`cardiac_function` gives them (None where a curve is 0).
    ``frames``: the frames measured (default all; the others may be NaN, e.g. a label's unlabelled
    frames); ``ed_frame`` / ``es_frame``: known ED/ES among them (default: largest / smallest LV volume).

    Raises:
        ValueError: not ``[T, 4]``, fewer than two measured frames, non-finite measured volumes, the
            spacing or ED/ES checks of :func:`cardiac_function`.
    """
    spacing = _check_spacing(spacing_zyx_mm, source)
    volumes = np.asarray(volumes_ml, dtype=np.float64)
    if volumes.ndim != 2 or volumes.shape[1] != NUM_LABELS:
        raise ValueError(f"{_where(source)}volume curves must be [T, {NUM_LABELS}], got shape {volumes.shape}")
    measured = list(range(volumes.shape[0])) if frames is None else [int(t) for t in frames]
    if len(measured) < 2:
        raise ValueError(f"{_where(source)}an LV volume curve needs at least two frames, got {len(measured)}")
    if not np.isfinite(volumes[measured]).all():
        raise ValueError(f"{_where(source)}the LV volume curve holds non-finite values")
    if frame_indices is not None and len(frame_indices) != volumes.shape[0]:
        raise ValueError(f"{_where(source)}frame_indices has {len(frame_indices)} entries for {volumes.shape[0]} frames")
    return _function_from_volumes(volumes, measured, spacing, source, ed_frame=ed_frame, es_frame=es_frame,
                                  frame_indices=frame_indices)


def cardiac_function_from_lv_curve(
    lv_volume_ml,
    spacing_zyx_mm: Sequence[float],
    source: Optional[str] = None,
    frame_indices: Optional[Sequence[int]] = None,
) -> CardiacFunction:
    """LV function from an LV cavity volume curve ``[T]`` (ml) measured without labels.

    What a volume regressor delivers (the ranking bundle's regressor sums predicted slice areas
    times the slice spacing): as :func:`cardiac_function_from_volume_curves`, with no mass and
    no RV numbers (None), their curves NaN.
    """
    lv = np.asarray(lv_volume_ml, dtype=np.float64).reshape(-1)
    volumes = np.stack([lv if label == LV_CAVITY else np.zeros_like(lv) for label in range(NUM_LABELS)], axis=1)
    function = cardiac_function_from_volume_curves(volumes, spacing_zyx_mm, source, frame_indices)
    function.rv_volume_curve_ml = np.full(lv.size, np.nan)
    function.lv_myocardium_curve_ml = np.full(lv.size, np.nan)
    return function


def agreement(reference: Sequence[float], predicted: Sequence[float], unit: str = "") -> dict:
    """How paired measurements agree: ``n``, mean error (bias, predicted - reference),
    mean absolute error, SD of the error and Pearson r (None for fewer than three pairs
    or a constant side). The one summary of every bundle's evaluation tables.
    """
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if reference.shape != predicted.shape or reference.size == 0:
        raise ValueError(f"agreement needs paired, non-empty measurements, got {reference.size} and {predicted.size}")
    error = predicted - reference
    correlation = (
        float(np.corrcoef(reference, predicted)[0, 1])
        if reference.size > 2 and reference.std() > 0 and predicted.std() > 0 else None
    )
    return {
        "unit": unit,
        "n": int(reference.size),
        "mean_error": float(error.mean()),
        "mean_absolute_error": float(np.abs(error).mean()),
        "sd_error": float(error.std(ddof=1)) if reference.size > 1 else 0.0,
        "pearson_r": correlation,
    }
