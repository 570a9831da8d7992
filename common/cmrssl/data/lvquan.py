"""LVQuan-style samples (slice cine + 11 indices + phase) from any labelled short-axis study.

The challenge data (:mod:`cmrssl.data.lvquan_mat`) gives, per subject, one
mid-ventricular slice through the cycle with its indices. The same container
(:class:`cmrssl.data.lvquan_mat.LVQuanData`) is built here from canonical
label cines (phantom, ACDC, M&Ms, ...), the indices computed by
:func:`cmrssl.metrics.lv_indices.lv_indices`; one "subject" per measured
slice. So the LVQuan bundle trains from the challenge files and from our own
segmented data alike.

ACDC (:func:`lvquan_from_acdc`) labels only the ED and ES frames, so each of its
"cycles" has 2 frames with phases 0 (ED, diastole by the convention of
:func:`cmrssl.metrics.lv_indices.cardiac_phase`) and 1 (ES, last systolic
frame); ``whole_cycle`` is False and 2D+t clips or neighbouring-frame inputs
are refused for it.

Slice selection (:func:`select_mid_slices`): the slices whose LV cavity is
present in every labelled frame; ``"mid"`` keeps their middle third (LVQuan
indices are defined on mid-ventricular slices), ``"all"`` keeps them all.

View check (:func:`check_short_axis`): the indices are defined on short-axis
slices only; a 2Ch/4Ch long-axis label measured as if it were one gives
plausible-looking but meaningless numbers. Where the header has an oblique
orientation, a slice plane whose normal is more than
:data:`cmrssl.io.geometry.MAX_SHORT_AXIS_TILT_DEG` from the usual LV long axis is refused; a
header without orientation (axis-aligned, as ACDC's ``diag(-1, -1, 1)``) says
nothing, and then only a single slice whose LV cavity is both elongated and
open (not ringed by myocardium, the valve side of a long-axis view) is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from cmrssl.data.acdc import acdc_subject_names, is_acdc_root, read_acdc_patient, select_acdc_patients
from cmrssl.data.lvquan_mat import LVQuanData, read_lvquan18, read_lvquan19
from cmrssl.flags import square_pixdim_mm
from cmrssl.io import read_nifti_cine
from cmrssl.io.geometry import MAX_SHORT_AXIS_TILT_DEG, short_axis_tilt_deg
from cmrssl.labels import BACKGROUND, LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY
from cmrssl.metrics.lv_indices import cardiac_phase, indices_matrix, lv_indices

__all__ = [
    "check_short_axis",
    "select_mid_slices", "measure_slice", "lvquan_samples_from_labels", "concat_lvquan", "lvquan_from_phantom_cohort",
    "lvquan_from_acdc",
    "load_lvquan_source", "fold_subjects", "scale_percentiles", "lvquan_records", "lvquan_clip_records", "fold_records",
    "index_scale_of", "check_isotropic", "resample_slice",
]

logger = logging.getLogger(__name__)


#: A single slice without orientation is refused as long-axis when its LV cavity (at the
#: labelled frame of largest cavity) has principal axes at least this far apart (ratio,
#: in mm) ...
_LONG_AXIS_ASPECT = 1.3
#: ... and less than this share of the pixels bordering it are myocardium. Mid-ventricular
#: short-axis cavities are ringed by myocardium (ACDC ED/ES mid slices: 736 of 736 pass the
#: pair of tests, a few elongated up to 1.9 but all ringed; 1 of 1069 basal/apical slices
#: fails), a long-axis cavity is open at the mitral valve (phantom 2Ch/4Ch: 73-80 % ringed,
#: elongated 1.34-2.06).
_LONG_AXIS_RINGED = 0.85


def _cavity_shape(mask: np.ndarray, labels: np.ndarray, spacing_mm) -> tuple:
    """``(principal axis ratio in mm, share of the cavity's 4-neighbours that are myocardium)``."""
    rows, cols = np.nonzero(mask)
    if rows.size < 3:
        return 1.0, 1.0
    points = np.stack([rows * float(spacing_mm[0]), cols * float(spacing_mm[1])])
    small, large = np.maximum(np.linalg.eigvalsh(np.cov(points)), 1e-12)
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    border = grown & ~mask
    ringed = float((labels[border] == LV_MYOCARDIUM).mean()) if border.any() else 1.0
    return float(np.sqrt(large / small)), ringed


def check_short_axis(labels: np.ndarray, frames: Sequence[int], slice_affines: np.ndarray, spacing_mm,
                     name: str = "study") -> None:
    """Refuse a label stack that is not a short-axis view (see the module docstring).

    Args:
        labels: canonical labels ``[T, Z, H, W]``.
        frames: the labelled frames.
        slice_affines: ``[Z, 4, 4]`` pixel ``(col, row, 0, 1)`` -> LPS mm (the header's).
        spacing_mm: in-plane ``(dy, dx)``.
        name: the file, for the message.

    Raises:
        ValueError: naming ``name``, the angle or the cavity shape, and what to do.
    """
    tilt = short_axis_tilt_deg(np.asarray(slice_affines, np.float64)[0])
    if tilt is not None:
        if tilt > MAX_SHORT_AXIS_TILT_DEG:
            raise ValueError(
                f"{name}: not a short-axis view: by its header orientation the slice normal is {tilt:.0f} degrees "
                f"from the usual LV long axis (short-axis stacks: below {MAX_SHORT_AXIS_TILT_DEG:.0f}); "
                "a long-axis (2Ch/4Ch) plane contains that axis. LV indices are defined on short-axis slices"
            )
        return
    if labels.shape[1] != 1:
        return  # a stack without orientation (ACDC): several slices are a short-axis stack in practice
    cavity = [(labels[t, 0] == LV_CAVITY).sum() for t in frames]
    t = frames[int(np.argmax(cavity))]
    frame = labels[t, 0]
    if not (frame == LV_MYOCARDIUM).any():
        return  # no myocardium drawn: the ring test cannot tell
    aspect, ringed = _cavity_shape(frame == LV_CAVITY, frame, spacing_mm)
    if aspect >= _LONG_AXIS_ASPECT and ringed < _LONG_AXIS_RINGED:
        raise ValueError(
            f"{name}: looks like a long-axis view, not a short-axis slice: a single slice without orientation in "
            f"its header whose LV cavity (frame {t}) is elongated ({aspect:.2f}:1) and only {100 * ringed:.0f} % "
            f"ringed by myocardium (open towards the valve). LV indices are defined on short-axis slices"
        )


def select_mid_slices(labels: np.ndarray, frames: Sequence[int], slices: Union[str, int, Sequence[int]] = "mid") -> List[int]:
    """Slices of ``labels [T, Z, H, W]`` to measure: ``"mid"``, ``"all"``, or explicit indices
    (a list, an int, or a comma-separated string).

    Raises:
        ValueError: no slice has an LV cavity in every labelled frame, or an explicit slice lacks one.
    """
    with_cavity = [z for z in range(labels.shape[1]) if all((labels[t, z] == LV_CAVITY).any() for t in frames)]
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
    has_rv = np.array([(m == RV_CAVITY).any() for m in masks])
    if not has_rv.any():
        return None
    fallback = None
    if not has_rv.all():
        fallback = _circular_mean_deg(lv_indices(masks[has_rv], spacing_mm, num_rays=60)["septum_angle_deg"])
    result = lv_indices(masks, spacing_mm, septum_angle_deg=fallback)
    result["indices"] = indices_matrix(result)
    result["phase"] = cardiac_phase(result["cavity_area_mm2"]) if whole_cycle and len(masks) > 1 else None
    return result


def check_isotropic(spacing_mm, name: str = "study"):
    """``(dy, dx)`` as floats; LVQuan indices and resampling assume square pixels (within 1 %).

    Raises:
        ValueError: anisotropic in-plane spacing, naming ``name``.
    """
    dy, dx = (float(s) for s in spacing_mm)
    if abs(dy - dx) > 0.01 * max(dy, dx):
        raise ValueError(f"{name}: in-plane spacing {dy:.4g} x {dx:.4g} mm is anisotropic; resample first")
    return dy, dx


def lvquan_samples_from_labels(labels: np.ndarray, spacing_mm, *, pixels: Optional[np.ndarray] = None,
                               slices: Union[str, Sequence[int]] = "mid", name: str = "study",
                               frame_phase: Optional[Sequence[int]] = None) -> LVQuanData:
    """One LVQuan "subject" per measured slice of a fully labelled cine.

    Args:
        labels: canonical labels ``[T, Z, H, W]``, every frame labelled (phase needs the cycle).
        spacing_mm: ``(dy, dx)``; must be isotropic in-plane (within 1 %), like the challenge data.
        pixels: optional images ``[T, Z, H, W]`` (zeros otherwise).
        slices: see :func:`select_mid_slices`.
        name: prefix of the subject names (``name:slice{z}``).
        frame_phase: ``[T]`` phases (1 systole) when ``labels`` are not one whole cycle (ACDC's
            ED/ES frames: ``(0, 1)``); the result then has ``whole_cycle=False``. None derives the
            phase of every slice from its cavity area curve.

    Raises:
        ValueError: unlabelled frames (-1), anisotropic pixels, or no measurable slice.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(f"{name}: labels must be [T, Z, H, W], got {labels.shape}")
    if (labels < 0).any():
        raise ValueError(f"{name}: some frames are unlabelled (-1); LVQuan samples need the whole cycle")
    dy, dx = check_isotropic(spacing_mm, name)
    frames = list(range(labels.shape[0]))
    if frame_phase is not None and len(frame_phase) != len(frames):
        raise ValueError(f"{name}: frame_phase has {len(frame_phase)} values for {len(frames)} frames")
    kept, results = [], []
    for z in select_mid_slices(labels, frames, slices):
        result = measure_slice(labels[:, z], (dy, dx), whole_cycle=frame_phase is None)
        if result is None:
            logger.warning("%s: slice %d: no RV in any frame, sectors undefined; skipped", name, z)
            continue
        if frame_phase is not None:
            result["phase"] = np.asarray(frame_phase, np.int8)
        kept.append(z)
        results.append(result)
    if not kept:
        raise ValueError(f"{name}: no measurable slice (LV cavity and RV needed)")
    images = np.zeros(labels.shape, np.float32) if pixels is None else np.asarray(pixels, np.float32)
    indices = np.stack([r["indices"] for r in results])  # [S, T, 11]
    return LVQuanData(
        images=np.moveaxis(images[:, kept], 1, 0).copy(),
        labels=np.moveaxis(np.where(labels[:, kept] == RV_CAVITY, BACKGROUND, labels[:, kept]), 1, 0).astype(np.uint8),
        areas_mm2=indices[..., :2], dims_mm=indices[..., 2:5], rwt_mm=indices[..., 5:],
        phase=np.stack([r["phase"] for r in results]).astype(np.int8),
        pixel_spacing_mm=np.full(len(kept), dy), subjects=[f"{name}:slice{z}" for z in kept], source_units="mm",
        whole_cycle=frame_phase is None,
    )


# ------------------------------------------------------------------ sources, splits and records
def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Zero-pad ``[..., H, W]`` centred to ``height x width``."""
    dh, dw = height - array.shape[-2], width - array.shape[-1]
    pad = [(0, 0)] * (array.ndim - 2) + [(dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)]
    return np.pad(array, pad)


def concat_lvquan(parts: Sequence[LVQuanData]) -> LVQuanData:
    """Subjects of several containers stacked; images zero-padded (centred) to the largest size.

    Raises:
        ValueError: the parts differ in frame count.
    """
    frames = {p.images.shape[1] for p in parts}
    if len(frames) != 1:
        raise ValueError(f"LVQuan parts differ in frames per cycle {sorted(frames)}; resample the cycles first")
    height = max(p.images.shape[-2] for p in parts)
    width = max(p.images.shape[-1] for p in parts)

    def cat(name):
        arrays = [getattr(p, name) for p in parts]
        if name in ("images", "labels"):
            arrays = [_pad_to(a, height, width) for a in arrays]
        return np.concatenate(arrays)

    return LVQuanData(
        images=cat("images"), labels=cat("labels"), areas_mm2=cat("areas_mm2"), dims_mm=cat("dims_mm"),
        rwt_mm=cat("rwt_mm"), phase=cat("phase"), pixel_spacing_mm=cat("pixel_spacing_mm"),
        subjects=[s for p in parts for s in p.subjects],
        source_units=",".join(sorted({p.source_units for p in parts})),
        whole_cycle=all(p.whole_cycle for p in parts),
    )


def lvquan_from_phantom_cohort(cohort_dir, slices="mid", num_frames: Optional[int] = 20) -> LVQuanData:
    """Mid-ventricular slices of every subject of a phantom cohort (``cohort.json`` layout).

    Cycles are sampled at ``num_frames`` evenly spaced frames (nearest frame, so a shorter cine
    repeats frames; the challenges use 20 per cycle) so subjects of different frame counts
    stack; None keeps every frame.
    """
    cohort_dir = Path(cohort_dir)
    subjects = json.loads((cohort_dir / "cohort.json").read_text())["subjects"]
    parts = []
    for subject in subjects:
        folder = cohort_dir / subject
        cine = read_nifti_cine(folder / "sax_cine.nii.gz", label_path=folder / "sax_cine_gt.nii.gz")
        keep = np.arange(cine.num_frames)
        if num_frames is not None:
            keep = np.floor(np.arange(num_frames) * cine.num_frames / num_frames).astype(int)
        parts.append(lvquan_samples_from_labels(cine.labels[keep], cine.pixel_spacing_mm, pixels=cine.pixels[keep],
                                                slices=slices, name=subject))
    return concat_lvquan(parts)


def lvquan_from_acdc(root, slices="mid", subjects=None) -> LVQuanData:
    """Mid-ventricular slices of ACDC patients at their ED and ES frames (the labelled ones).

    Each measured slice is one "subject" ``patientNNN:sliceZ`` with 2 frames, ED (phase 0)
    then ES (phase 1); images and labels are zero-padded (centred) to the largest patient.

    Args:
        root: ACDC folder of ``patientNNN/`` (``Info.cfg`` and the ``_frameNN(_gt)`` files).
        slices: see :func:`select_mid_slices`.
        subjects: optional selection (``"1-80"``, ``["patient001", 5]``, ...; see
            :func:`cmrssl.data.acdc.acdc_subject_names`); all patients otherwise.

    Raises:
        FileNotFoundError / ValueError: as the ACDC indexer, naming the file; a selected
        patient missing under ``root``.
    """
    folders = select_acdc_patients(root, None if subjects is None else acdc_subject_names(subjects))
    parts = []
    for folder in folders:
        patient = read_acdc_patient(folder)
        frames = sorted(patient.frames, key=lambda f: f.phase != "ED")  # ED first
        cines = [read_nifti_cine(f.image, label_path=f.label, label_map="acdc") for f in frames]
        pixels = np.concatenate([c.pixels for c in cines])
        labels = np.concatenate([c.labels for c in cines])
        parts.append(lvquan_samples_from_labels(labels, cines[0].pixel_spacing_mm, pixels=pixels, slices=slices,
                                                name=patient.subject, frame_phase=(0, 1)))
    return concat_lvquan(parts)


def load_lvquan_source(path) -> LVQuanData:
    """An LVQuan dataset from ``path``: LVQuan18 ``cardiac-dig.mat``, an LVQuan19 folder of
    ``patient*.mat``, a phantom cohort folder (``cohort.json``), or an ACDC folder of
    ``patientNNN/Info.cfg`` (ED/ES frames only, :func:`lvquan_from_acdc`).

    Raises:
        FileNotFoundError: nothing at ``path``. ValueError: none of the layouts.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no LVQuan data file or folder")
    if path.is_file() and path.suffix == ".mat":
        return read_lvquan18(path)
    if (path / "cohort.json").is_file():
        return lvquan_from_phantom_cohort(path)
    if is_acdc_root(path):
        return lvquan_from_acdc(path)
    if path.is_dir() and any(path.glob("patient*.mat")):
        return read_lvquan19(path)
    if (path / "cardiac-dig.mat").is_file():
        return read_lvquan18(path / "cardiac-dig.mat")
    raise ValueError(f"{path}: not an LVQuan18 .mat, an LVQuan19 folder (patient*.mat), a phantom cohort "
                     "(cohort.json) or an ACDC folder (patientNNN/Info.cfg)")


def fold_subjects(subjects: Sequence[str], fold: int, num_folds: int = 5, seed: int = 0):
    """``(training, validation)`` indices into ``subjects`` for cross-validation ``fold``.

    Slices of one patient (names ``patient:sliceZ``) stay in one fold: the split is a seeded
    permutation of the patients, not of the slices.
    """
    patients = sorted({name.split(":")[0] for name in subjects})
    if not 0 <= fold < num_folds or len(patients) < num_folds:
        raise ValueError(f"fold {fold} of {num_folds} needs 0 <= fold < num_folds <= patients ({len(patients)})")
    order = np.random.default_rng(seed).permutation(len(patients))
    held_out = {patients[i] for i in np.array_split(order, num_folds)[fold]}
    validation = [i for i, name in enumerate(subjects) if name.split(":")[0] in held_out]
    training = [i for i, name in enumerate(subjects) if name.split(":")[0] not in held_out]
    return training, validation


def scale_percentiles(image: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """One slice clipped to its ``lower``-``upper`` percentiles and scaled to 0-1 (float32).

    The paper z-scores each slice and then scales it to 0-1; after the clip that equals this
    min-max scaling. A constant slice gives zeros.
    """
    low, high = np.percentile(image, (lower, upper))
    if not high > low:
        return np.zeros(image.shape, np.float32)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


INPUT_MODES = ("single", "copy3", "neighbours")


def resample_slice(image: np.ndarray, factor: float, mode: str = "bilinear") -> np.ndarray:
    """One slice ``[H, W]`` zoomed by ``factor`` with MONAI's ``Resize`` (dtype kept).

    The output is ``round(H * factor) x round(W * factor)`` pixels. ``"bilinear"`` (images) keeps
    the corner pixels on the corners (``align_corners``), the sampling of the scipy ``zoom`` this
    replaced, and equals it within float32 rounding, except that scipy set the last row and column
    of a downsampled slice to 0 (its last sample fell a rounding error outside the grid).
    ``"nearest-exact"`` (labels) samples pixel centres; on the phantom cohort at 2 mm it differs
    from scipy's order-0 zoom on 0.6 % of the foreground pixels (torch's plain ``"nearest"``, which
    floors, on 12 %).
    """
    # torch and MONAI imported here: tools/lv_indices.py measures slices with this module and
    # needs neither (importing them costs seconds).
    import torch
    from monai.transforms import Resize

    size = tuple(int(round(n * float(factor))) for n in image.shape)
    resize = Resize(spatial_size=size, mode=mode, align_corners=True if mode == "bilinear" else None)
    out = resize(torch.as_tensor(np.asarray(image, np.float32))[None])[0]
    out = out.as_tensor() if hasattr(out, "as_tensor") else out
    return out.numpy().astype(image.dtype)


def lvquan_records(data: LVQuanData, subjects: Sequence[int], index_scale: np.ndarray,
                   target_spacing_mm: Union[float, Sequence[float], None] = 1.0,
                   input_mode: str = "single") -> List[dict]:
    """One record per (subject, frame) for a MONAI Dataset of 2D samples.

    ``input_mode`` (the paper's 2D inputs): ``"single"`` one channel; ``"copy3"`` the slice in
    3 channels (ImageNet first convs unchanged); ``"neighbours"`` frames t-1, t, t+1 (cyclic).

    Record: ``image`` float32 ``[C, H, W]``, ``label`` uint8 ``[1, H, W]`` (0 bg, 1 cavity,
    2 myocardium), ``indices`` float32 ``[11]`` divided by ``index_scale`` (targets in 0-1, the
    paper's scaling), ``phase`` int64, ``subject``, ``frame``, ``pixel_spacing_mm``.
    Images (linear) and labels (nearest) are resampled to ``target_spacing_mm`` (the paper's
    1 mm; the bundle's ``pixdim_mm``, ``[1.0, 1.0]``: two equal values) unless None; the indices
    are in mm, so resampling leaves them unchanged. Each image is
    then clipped and scaled per slice by :func:`scale_percentiles`.
    """
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
    if input_mode == "neighbours" and not data.whole_cycle:
        raise ValueError(
            "input_mode 'neighbours' needs whole cycles; this data labels only some frames (ACDC: ED and ES)")
    index_scale = np.asarray(index_scale, np.float64)
    target = None if target_spacing_mm is None else square_pixdim_mm(target_spacing_mm)
    records = []
    num_frames = data.images.shape[1]
    for s in subjects:
        factor = 1.0 if target is None else float(data.pixel_spacing_mm[s]) / target
        images, labels = [], []
        for t in range(num_frames):
            image, label = data.images[s, t], data.labels[s, t]
            if abs(factor - 1.0) > 1e-3:
                image, label = resample_slice(image, factor, "bilinear"), resample_slice(label, factor, "nearest-exact")
            images.append(scale_percentiles(image))
            labels.append(label)
        for t in range(num_frames):
            if input_mode == "single":
                channels = [images[t]]
            elif input_mode == "copy3":
                channels = [images[t]] * 3
            else:
                channels = [images[(t - 1) % num_frames], images[t], images[(t + 1) % num_frames]]
            label = labels[t]
            records.append({
                "image": np.stack(channels),
                "label": label[None].astype(np.uint8),
                "indices": (data.indices[s, t] / index_scale).astype(np.float32),
                "phase": np.int64(data.phase[s, t]),
                "subject": data.subjects[s], "frame": t,
                "pixel_spacing_mm": float(data.pixel_spacing_mm[s]) / factor,
            })
    return records


def lvquan_clip_records(data: LVQuanData, subjects: Sequence[int], index_scale: np.ndarray, clip_frames: int,
                        target_spacing_mm: Union[float, Sequence[float], None] = 1.0,
                        input_mode: str = "single") -> List[dict]:
    """2D+t records: every cyclic window of ``clip_frames`` consecutive frames of each subject.

    Record: ``image`` ``[C, N_S, H, W]`` (``input_mode`` ``"single"`` or ``"copy3"``),
    ``label`` ``[1, N_S, H, W]``, ``indices`` ``[11, N_S]``
    (0-1), ``phase`` ``[N_S]``, ``subject``, ``frame`` (first frame of the window). Every frame
    of the cycle starts one window, so each frame is predicted ``N_S`` times (averaged at
    evaluation, as the paper's multi-window evaluation).
    """
    if not data.whole_cycle:
        raise ValueError("2D+t clips need whole cycles of consecutive frames; this data labels only some frames "
                         "(ACDC: ED and ES), use the 2D configuration")
    if clip_frames < 1 or clip_frames > data.images.shape[1]:
        raise ValueError(f"clip_frames must be in 1..{data.images.shape[1]}, got {clip_frames}")
    if input_mode == "neighbours":
        raise ValueError("input_mode 'neighbours' is for 2D networks; 2D+t clips carry the frames along time")
    frames = lvquan_records(data, subjects, index_scale, target_spacing_mm, input_mode)
    num_frames = data.images.shape[1]
    clips = []
    for first in range(0, len(frames), num_frames):
        cycle = frames[first: first + num_frames]
        for start in range(num_frames):
            window = [cycle[(start + k) % num_frames] for k in range(clip_frames)]
            clips.append({
                "image": np.stack([w["image"] for w in window], axis=1),
                "label": np.stack([w["label"][0] for w in window])[None],
                "indices": np.stack([w["indices"] for w in window], axis=1),
                "phase": np.array([w["phase"] for w in window], np.int64),
                "subject": window[0]["subject"], "frame": start,
                "pixel_spacing_mm": window[0]["pixel_spacing_mm"],
            })
    return clips


def fold_records(data: LVQuanData, subjects: Sequence[int], index_scale: np.ndarray,
                 target_spacing_mm: Union[float, Sequence[float], None] = 1.0, input_mode: str = "single",
                 clip_frames: Optional[int] = None) -> List[dict]:
    """Training records of ``subjects``: 2D frames (:func:`lvquan_records`), or 2D+t windows
    (:func:`lvquan_clip_records`) when ``clip_frames`` is set."""
    if clip_frames is None:
        return lvquan_records(data, subjects, index_scale, target_spacing_mm, input_mode)
    return lvquan_clip_records(data, subjects, index_scale, clip_frames, target_spacing_mm, input_mode)


def index_scale_of(data: LVQuanData, subjects: Sequence[int]) -> np.ndarray:
    """``[11]`` per-index maxima over ``subjects`` (training folds only: no leak into validation)."""
    return np.nanmax(data.indices[list(subjects)].reshape(-1, data.indices.shape[-1]), axis=0)
