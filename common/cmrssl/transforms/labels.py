"""Label transforms: checks of reference labels, and the anatomical clean-up of predicted ones.

- :class:`CheckLabels` / :class:`CheckLabelsd`: a wrong label file fails loudly,
  naming the file, before it trains anything. A datalist made for another
  convention (ACDC's 1 RV / 3 LV not mapped, a probability map, a mask resampled
  with linear interpolation) would otherwise train silently into a wrong model.
  ACDC's own ``_gt`` files (1 RV, 3 LV) hold only canonical values, so the values
  cannot tell; the anatomy can (:func:`myocardial_border_share`): the LV cavity is the
  label inside the myocardial ring, and a file whose label 3 is has the two cavities
  swapped.
- :class:`KeepHeart` / :class:`KeepHeartd`: keep the heart, not each label's
  largest blob. Few-label models leave stray blobs far from the heart; MONAI's
  per-label ``KeepLargestConnectedComponent`` removes them, but at end-systole
  the true LV cavity is small and a stray cavity blob can be larger, so the
  heart's own cavity is deleted (about one ES frame in five with a 5-subject
  model). :class:`KeepHeart` instead keeps the largest connected component of
  LV cavity + myocardium together (the cavity inside its myocardial ring is
  the largest LV structure at every phase), and the RV components touching
  that myocardium (the septum).
- :func:`keep_study_heart`: the same over a cine or an ED/ES pair, where the heart
  of each frame is the LV component that overlaps the heart of the other frames
  most (the heart does not move centimetres within a study), not the largest.
"""

from __future__ import annotations

from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from cmrssl.labels import LABELS, LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY, STRUCTURES

_CANONICAL_LABELS = tuple(LABELS.values())

__all__ = ["CheckLabels", "CheckLabelsd", "myocardial_border_share", "keep_heart", "keep_study_heart", "KeepHeart", "KeepHeartd",
           "POSTPROCESSING_MODES", "refuse_retired_keep_largest_component"]

#: ``--postprocessing`` of the segmentation bundle: the heart (default), MONAI's largest component
#: of each label separately (the behaviour before bundle 0.2.0), or nothing.
POSTPROCESSING_MODES = ("heart", "largest_per_label", "none")


#: A label file is taken for ACDC's convention (1 RV, 3 LV) when label 3's in-plane border is at least this
#: share LV myocardium and label 1's at most SWAPPED_MAX_LV_SHARE. On ACDC's 200 reference frames (ACDC
#: convention) label 3's share is 0.98-1.00 and label 1's 0.17-0.43 (the septum); canonical files the reverse.
SWAPPED_MIN_RV_SHARE, SWAPPED_MAX_LV_SHARE = 0.8, 0.6


def myocardial_border_share(label: np.ndarray, value: int, slice_axis: int = -1) -> Optional[float]:
    """The share of the in-plane border of ``value``'s voxels that is LV myocardium (label 2).

    About 1 for the LV cavity, which the myocardium encloses; a third or less for the RV cavity,
    which touches it only at the septum. None where ``value`` is absent.

    Args:
        label: 2D ``[H, W]`` or 3D label array (slices along ``slice_axis``).
        value: the label whose border is measured.
        slice_axis: the axis across slices of a 3D array (``-1`` for MONAI's ``[W, H, Z]``).
    """
    label = np.asarray(label)
    mask = label == value
    if not mask.any():
        return None
    structure = ndimage.generate_binary_structure(2, 1)
    if label.ndim == 3:
        structure = np.expand_dims(structure, slice_axis % 3)
    elif label.ndim != 2:
        raise ValueError(f"expected a 2D or 3D label array, got shape {label.shape}")
    border = ndimage.binary_dilation(mask, structure=structure) & ~mask
    total = int(border.sum())
    return None if total == 0 else float(np.count_nonzero(label[border] == LV_MYOCARDIUM)) / total


class CheckLabels(Transform):
    """Pass a label image through unchanged if its values are whole numbers of ``allowed``.

    Args:
        allowed: admissible values (the canonical 0 background, 1 LV cavity,
            2 LV myocardium, 3 RV cavity).
        require_foreground: refuse a label image holding only background (an
            empty mask gives no Dice and no volume).

    Raises:
        ValueError: NaN, non-integer or unexpected values, an empty mask, or the two
            cavities swapped (label 3 inside the myocardial ring: ACDC's 1 RV / 3 LV,
            :data:`SWAPPED_MIN_RV_SHARE`); the message names the file
            (``meta["filename_or_obj"]``), what was found and the remap command.
    """

    def __init__(self, allowed: Sequence[int] = _CANONICAL_LABELS, require_foreground: bool = True) -> None:
        if not allowed:
            raise ValueError("allowed must name at least one label value")
        self.allowed = sorted(int(v) for v in allowed)
        self.require_foreground = bool(require_foreground)

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        name = getattr(label, "meta", {}).get("filename_or_obj", "label image")
        values = torch.as_tensor(label).detach()
        if values.is_floating_point():
            if not torch.isfinite(values).all():
                raise ValueError(f"{name}: label image holds NaN or infinite values")
            if not torch.equal(values, values.round()):
                raise ValueError(
                    f"{name}: label image holds non-integer values (a probability map or an interpolated mask?)"
                )
        found = sorted(int(v) for v in torch.unique(values))
        unexpected = [v for v in found if v not in self.allowed]
        if unexpected:
            raise ValueError(
                f"{name}: unknown label values {unexpected} (found {found}, expected a subset of {self.allowed}: "
                "0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity; map other conventions in the indexer)"
            )
        if self.require_foreground and all(v == 0 for v in found):
            raise ValueError(f"{name}: empty mask (only background)")
        if {LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY} <= set(found):
            _refuse_swapped_cavities(values, name)
        return label


def _refuse_swapped_cavities(label: torch.Tensor, name: str) -> None:
    """Refuse a canonical-valued label image whose label 3, not 1, sits inside the myocardial ring."""
    array = label.detach().cpu().numpy()
    array = array[0] if array.ndim in (3, 4) and array.shape[0] == 1 else array  # channel first
    rv, lv = myocardial_border_share(array, RV_CAVITY), myocardial_border_share(array, LV_CAVITY)
    if rv is not None and lv is not None and rv >= SWAPPED_MIN_RV_SHARE and lv <= SWAPPED_MAX_LV_SHARE:
        raise ValueError(
            f"{name}: label 3 sits inside the ring of label 2 ({rv:.0%} of its border is myocardium, label 1's "
            f"{lv:.0%}): the cavities are swapped, as in ACDC's own files (1 RV, 3 LV); ours are 1 LV cavity, "
            "2 LV myocardium, 3 RV cavity. Remap: python tools/convert.py IMAGE OUT_DIR --labels LABELS "
            "--label_map acdc (an ACDC folder: python tools/index.py acdc ROOT --out_dir DIR)"
        )


class CheckLabelsd(MapTransform):
    """Dictionary twin of :class:`CheckLabels`."""

    def __init__(
        self,
        keys: KeysCollection = "label",
        allowed: Sequence[int] = _CANONICAL_LABELS,
        require_foreground: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckLabels(allowed, require_foreground)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            self.checker(d[key])
        return d


def _components(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """Connected components of ``mask`` with full (corner) connectivity in every dimension."""
    return ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))


def _largest(components: np.ndarray, count: int, anchor: Optional[np.ndarray] = None) -> np.ndarray:
    """The mask of the largest of ``count`` labelled components (label 0 is background); with ``anchor``
    (weights over the same grid), the component holding most anchor weight, the largest among ties."""
    sizes = np.bincount(components.ravel(), minlength=count + 1).astype(np.float64)
    sizes[0] = -1.0
    if anchor is not None:
        weights = np.bincount(components.ravel(), weights=np.asarray(anchor, np.float64).ravel(), minlength=count + 1)
        weights[0] = -1.0
        if weights.max() > 0:
            best = np.flatnonzero(weights >= weights.max() * (1 - 1e-9))
            return components == int(best[np.argmax(sizes[best])])
    return components == int(np.argmax(sizes))


def _drop_open_cavities(cleaned: np.ndarray, slice_axis: int, min_enclosed: float) -> None:
    """In place: on each slice below the basal-most one holding LV cavity, cavity blobs less than
    ``min_enclosed`` surrounded by myocardium become background (cavity labels spilt into the RV or
    the atrium, joined to the LV through the septum)."""
    stack = np.moveaxis(cleaned, slice_axis, -1)  # a view: [..., H or W, W or H, slices]
    lead = stack.shape[:-3]
    ring = ndimage.generate_binary_structure(2, 2)
    for index in np.ndindex(*lead):
        frame = stack[index]
        holding = [z for z in range(frame.shape[-1]) if (frame[..., z] == LV_CAVITY).any()]
        for z in holding[1:]:  # slices run base to apex; the basal-most cavity slice may be open
            plane = frame[..., z]
            blobs, count = ndimage.label(plane == LV_CAVITY, structure=ring)
            for blob in range(1, count + 1):
                cavity = blobs == blob
                border = ndimage.binary_dilation(cavity, structure=ring) & ~cavity
                if border.any() and (plane[border] == LV_MYOCARDIUM).mean() < min_enclosed:
                    plane[cavity] = 0


def keep_heart(labels: np.ndarray, slice_axis: Optional[int] = None, min_enclosed: float = 0.5,
               anchor: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Dict[str, int]]:
    """The heart of a canonical label volume: its LV complex and the RV beside it; stray blobs removed.

    1. LV: the largest connected component of LV cavity + LV myocardium taken together
       (full connectivity over all axes: a 3D frame ``[x, y, z]``, or a cine with time as a
       further axis, so the choice is the same on every frame); cavity and myocardium
       outside it become background.
    2. RV: the RV-cavity components touching that myocardium (the septum); when none
       touches, the largest RV component (as before).
    3. With ``slice_axis``: on every slice but the most basal one holding cavity, LV-cavity
       blobs whose border is less than ``min_enclosed`` myocardium become background (cavity
       labels spilt into the RV or the atrium through the septum join the LV complex of step 1).

    Args:
        labels: integer array of canonical labels (any number of dimensions).
        slice_axis: axis of the short-axis slices, base first (-1 for MONAI's ``[x, y, z]``,
            1 for a cine ``[T, Z, H, W]``); None skips step 3.
        min_enclosed: smallest share of a cavity blob's border that must be myocardium.
        anchor: weights over the grid of ``labels`` (where the heart is expected, e.g. the share of a
            study's other frames holding LV there): step 1 keeps the component holding most of it
            instead of the largest; the largest when no component touches it.

    Returns:
        ``(cleaned, removed)``: the cleaned copy and the voxels removed per structure
        (:data:`cmrssl.labels.STRUCTURES` names).
    """
    labels = np.asarray(labels)
    cleaned = labels.copy()
    lv = (labels == LV_CAVITY) | (labels == LV_MYOCARDIUM)
    heart_lv = np.zeros_like(lv)
    if lv.any():
        heart_lv = _largest(*_components(lv), anchor=anchor)
        cleaned[lv & ~heart_lv] = 0
    rv = labels == RV_CAVITY
    if rv.any():
        components, count = _components(rv)
        myocardium = heart_lv & (labels == LV_MYOCARDIUM)
        near = ndimage.binary_dilation(myocardium, structure=ndimage.generate_binary_structure(rv.ndim, rv.ndim))
        touching = np.unique(components[near & rv])
        touching = touching[touching > 0]
        if touching.size:
            keep = np.isin(components, touching)
        else:
            keep = _largest(components, count)
        cleaned[rv & ~keep] = 0
    if slice_axis is not None and cleaned.ndim >= 3:
        _drop_open_cavities(cleaned, slice_axis, min_enclosed)
    removed = {name: int(((labels == v) & (cleaned != v)).sum()) for name, v in STRUCTURES.items()}
    return cleaned, removed


def keep_study_heart(labels: np.ndarray, slice_axis: Optional[int] = None, min_enclosed: float = 0.5,
                     passes: int = 2) -> Tuple[np.ndarray, Dict[str, int]]:
    """:func:`keep_heart` on every frame of a study ``[T, *frame]`` (a cine, or its ED and ES frames on one
    grid), each frame's heart chosen by its overlap with the other frames' hearts, not by its size.

    Within a study the heart stays where it is (over the 100 ACDC reference ED/ES pairs its centroid moves
    12 mm at most), while a few-label model's false heart elsewhere can be larger than the true one on a
    frame, above all at end-systole. The anchor of frame ``t`` is, per voxel, the share of the other frames
    whose LV (cavity + myocardium) holds it: the raw predictions on the first pass, the hearts kept by the
    previous pass after that. A single frame is :func:`keep_heart` (the largest component).

    Args:
        labels: canonical labels, frames on the first axis.
        slice_axis: axis of the short-axis slices within a frame (0 for ``[Z, H, W]``, -1 for ``[x, y, z]``);
            None skips the open-cavity step of :func:`keep_heart`.
        min_enclosed: as :func:`keep_heart`.
        passes: anchor refinements (1: the raw predictions only).

    Returns:
        ``(cleaned, removed)`` as :func:`keep_heart`, over the whole study.
    """
    labels = np.asarray(labels)
    if labels.shape[0] < 2:
        cleaned = np.stack([keep_heart(frame, slice_axis, min_enclosed)[0] for frame in labels])
    else:
        hearts = (labels == LV_CAVITY) | (labels == LV_MYOCARDIUM)
        cleaned = labels
        for _ in range(max(int(passes), 1)):
            total = hearts.sum(axis=0, dtype=np.float64)
            cleaned = np.stack([
                keep_heart(frame, slice_axis, min_enclosed, anchor=(total - heart) / (labels.shape[0] - 1))[0]
                for frame, heart in zip(labels, hearts)])
            hearts = (cleaned == LV_CAVITY) | (cleaned == LV_MYOCARDIUM)
    removed = {name: int(((labels == v) & (cleaned != v)).sum()) for name, v in STRUCTURES.items()}
    return cleaned, removed


class KeepHeart(Transform):
    """:func:`keep_heart` on a channel-first label tensor ``[1, *spatial]`` (MetaTensor kept).

    Attributes:
        removed: voxels removed per structure by the last call.
    """

    def __init__(self) -> None:
        self.removed: Dict[str, int] = {}

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if array.shape[0] != 1:
            raise ValueError(f"KeepHeart expects one channel of discrete labels, got shape {tuple(array.shape)}")
        cleaned, self.removed = keep_heart(array[0], slice_axis=-1)
        out = torch.as_tensor(cleaned[None], dtype=labels.dtype if isinstance(labels, torch.Tensor) else None)
        if isinstance(labels, torch.Tensor):
            out = out.to(labels.device)
            if hasattr(labels, "meta"):
                out = labels.__class__(out, meta=labels.meta, applied_operations=getattr(labels, "applied_operations", []))
        return out


class KeepHeartd(MapTransform):
    """Dictionary twin of :class:`KeepHeart`.

    Writes, beside each key, ``<key>_postprocessing``: ``{"removed_voxels": {structure: n},
    "lost": [structures present before and absent after]}``, so an evaluation can count
    frames where postprocessing deleted a whole structure (it should be none). With
    ``raw_suffix``, also ``<key><raw_suffix>``: the labels before the clean-up, from which a
    writer that sees the whole study chooses each frame's heart again (:func:`keep_study_heart`).
    """

    def __init__(self, keys: KeysCollection = "pred", allow_missing_keys: bool = False,
                 raw_suffix: Optional[str] = None) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KeepHeart()
        self.raw_suffix = raw_suffix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            before = d[key]
            if self.raw_suffix:
                d[f"{key}{self.raw_suffix}"] = before
            d[key] = self.transform(before)
            present_before = _present(before)
            present_after = _present(d[key])
            d[f"{key}_postprocessing"] = {
                "removed_voxels": dict(self.transform.removed),
                "lost": [name for name in present_before if name not in present_after],
            }
        return d


def _present(labels) -> List[str]:
    values = torch.unique(torch.as_tensor(labels)).tolist()
    return [name for name, v in STRUCTURES.items() if v in values]


def refuse_retired_keep_largest_component(value) -> None:
    """``--keep_largest_component`` (bundle < 0.2.0) would now be ignored without a word: refuse it.

    Raises:
        ValueError: any value given, naming its replacement.
    """
    if value is not None:
        raise ValueError(
            f"--keep_largest_component {value} was replaced by --label_cleanup: heart (default: the LV's largest "
            "component of cavity + myocardium and the RV beside it), largest_per_label (the old true) or none "
            "(the old false)"
        )
