"""Whole-study stacks for LV volume regression: one study ``[F, Z, H, W]`` per sample.

:class:`LoadStudyStack` turns a study record (:func:`cmrssl.data.ranking.study_records`)
into what the ranking bundle trains and infers on:

- ``image``: float32 ``[F, Z, S, S]``: every frame (cycle order) and slice (base to
  apex), resampled in-plane to ``pixdim_mm`` (MONAI ``Zoom``), intensities clipped at
  the study's percentiles and standardised, cropped to ``S = roi_size`` pixels
  around the heart. Each slice is in the segmentation bundle's in-plane order
  (``[x, y]``, :func:`cmrssl.io.cine.swap_layout`: the reader's ``[H, W]`` transposed), so
  a U-Net sees the anatomy as it does there and weights move between the bundles;
- ``area_mm2``: ``[F, Z]`` LV cavity area (label 1) inside the crop, NaN on frames
  without a label;
- ``label``: uint8 ``[F, Z, S, S]`` the label maps on the image's grid and order (nearest
  neighbour), 0 on frames without a label (``labelled`` says which frames have one);
- ``reference_volumes_ml``: ``[F, 4]`` volume of each label (background, LV cavity, LV myocardium,
  RV cavity) on the label's own grid (voxel count x
  voxel volume, the whole field of view), NaN where unlabelled;
- ``frame_index`` ``[F]`` (index in the cycle), ``labelled`` ``[F]``,
  ``slice_spacing_mm``, ``ed_position`` / ``es_position`` (positions in ``F`` of
  known ED/ES frames, -1 unknown), ``crop_centre_mm`` (row, column of the crop's centre in mm from
  the first pixel, in the reader's ``[H, W]`` order), ``crop_geometry`` (``[H, W, H', W', row, column]``:
  the source grid, the resampled grid and the window's first pixel there, for :func:`labels_on_source`),
  ``from_cine`` (the study was read from one cine file or folder), ``edv_ml`` / ``esv_ml`` (study volumes of a
  volumes-only record, NaN when absent), ``frame_numbers_known`` (False for a study
  whose frames are known only as ED and ES, :mod:`cmrssl.data.ranking`: its
  ``frame_index`` values are positions, not cine frame numbers), ``subject``, ``source``;
- with ``source_labels`` (evaluation): ``label_source`` uint8 ``[F, Z, H, W]``, the label maps as read, on the
  source grid and in the reader's order (0 on frames without a label), and ``source_spacing_mm``
  ``[dz, dy, dx]``: what a prediction put back there (:func:`labels_on_source`) is scored against.

The heart is found without labels, the same way in training and inference: the
pixel-wise standard deviation over the frames (the beating heart moves most),
averaged over the mid-ventricular slices, smoothed at 30 mm and weighted towards
the image centre; a one-frame study is cropped at its centre. Choices of ours,
listed in the bundle README.

:class:`RandZoomStackd` is the training's scale augmentation, keeping the area and volume targets true;
:func:`nested_boxes` draws the windows of the nested-crop ranking constraint; :func:`labels_on_source`
and :func:`probabilities_on_source` put maps of the stack back on the source grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.transforms import RandomizableTransform, Transform, Zoom
from scipy.ndimage import gaussian_filter

from cmrssl.flags import as_bool, square_pixdim_mm
from cmrssl.io.reader import CineStudyCache, read_cine
from cmrssl.labels import LV_CAVITY, NUM_LABELS

__all__ = ["LoadStudyStack", "RandZoomStackd", "heart_centre", "labels_on_source", "nested_boxes", "probabilities_on_source",
           "mask_outside", "frame_positions", "random_similarity_grids", "warp"]

#: smoothing of the motion map that finds the heart, mm: the heart's scale. At 15 mm the peak fell 44 mm
#: from the LV centre on the Sunnybrook cine (30 mm: 27 mm); on ACDC both keep >= 0.93 of every LV in an
#: 80 px crop at 2 mm (tests/realdata/test_ranking_acdc.py).
MOTION_SMOOTHING_MM = 30.0


def heart_centre(pixels_fzhw: np.ndarray, pixdim_mm: float, smoothing_mm: float = MOTION_SMOOTHING_MM) -> Tuple[int, int]:
    """``(row, column)`` of the heart on a ``[F, Z, H, W]`` stack (resampled to ``pixdim_mm``).

    The temporal standard deviation averaged over the middle half of the slices,
    smoothed at :data:`MOTION_SMOOTHING_MM`, times a wide Gaussian prior around the
    image centre (sigma a third of the field of view; cardiac scans are planned
    with the heart near the middle); its maximum. One frame: the image centre.
    """
    f, z, h, w = pixels_fzhw.shape
    if f < 2:
        return h // 2, w // 2
    mid = slice(z // 4, max(z // 4 + 1, (3 * z + 3) // 4))
    motion = pixels_fzhw[:, mid].std(axis=0).mean(axis=0)
    motion = gaussian_filter(motion.astype(np.float64), float(smoothing_mm) / float(pixdim_mm))
    rows, cols = np.mgrid[0:h, 0:w]
    prior = np.exp(-0.5 * (((rows - h / 2) / (h / 3)) ** 2 + ((cols - w / 2) / (w / 3)) ** 2))
    row, col = np.unravel_index(int(np.argmax(motion * prior)), motion.shape)
    return int(row), int(col)


def _crop(array: np.ndarray, centre: Tuple[int, int], size: int, fill: float) -> np.ndarray:
    """``[..., size, size]`` window of ``array`` centred at ``centre``, padded with ``fill`` outside."""
    half = size // 2
    pad = [(0, 0)] * (array.ndim - 2) + [(half, half + size), (half, half + size)]
    padded = np.pad(array, pad, mode="constant", constant_values=fill)
    r, c = centre  # the window's corner in padded coordinates: (centre + half) - half
    return padded[..., r:r + size, c:c + size]


def _zoom(array_czhw: np.ndarray, factors: Tuple[float, float], mode: str) -> np.ndarray:
    flat = array_czhw.reshape((-1,) + array_czhw.shape[-2:])
    zoomed = Zoom(zoom=factors, mode=mode, keep_size=False, **({"align_corners": False} if mode == "bilinear" else {}))(
        torch.as_tensor(flat, dtype=torch.float32))
    zoomed = np.asarray(zoomed)
    return zoomed.reshape(array_czhw.shape[:-2] + zoomed.shape[-2:])


class RandZoomStackd(RandomizableTransform):
    """Zoom a study stack in-plane by one random factor in ``[min_zoom, max_zoom]`` (the window kept) and keep its
    targets true: ``image`` (bilinear) and ``label`` (nearest) ``[F, Z, S, S]`` zoomed alike, zeros outside;
    ``area_mm2`` of the labelled frames measured again on the zoomed label (``pixdim_mm`` pixels), and
    ``edv_ml`` / ``esv_ml`` of a volumes-only study times the factor squared. The segmentation bundle's
    scaling (0.7-1.4), as one in-plane factor."""

    def __init__(self, prob: float = 0.3, min_zoom: float = 0.7, max_zoom: float = 1.4,
                 pixdim_mm: Union[float, Sequence[float]] = 2.0) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0 < float(min_zoom) <= float(max_zoom):
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.min_zoom, self.max_zoom = float(min_zoom), float(max_zoom)
        self.pixel_area_mm2 = square_pixdim_mm(pixdim_mm) ** 2
        self.factor = 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.factor = float(self.R.uniform(self.min_zoom, self.max_zoom)) if self._do_transform else 1.0

    def __call__(self, data: Mapping[Hashable, object]) -> Dict[str, object]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        zoom = (1.0, self.factor, self.factor)  # [F | Z, S, S]: frames as channels, slices untouched
        d["image"] = Zoom(zoom=zoom, mode="bilinear", keep_size=True, padding_mode="constant")(d["image"])
        if "label" in d:
            d["label"] = Zoom(zoom=zoom, mode="nearest", keep_size=True, padding_mode="constant")(d["label"])
            labelled = torch.as_tensor(d["labelled"]).bool()
            lv = (torch.as_tensor(d["label"]) == LV_CAVITY).flatten(2).sum(dim=2).float() * self.pixel_area_mm2
            d["area_mm2"] = torch.where(labelled[:, None], lv, torch.as_tensor(d["area_mm2"]))
        for key in ("edv_ml", "esv_ml"):
            if key in d:
                d[key] = torch.as_tensor(d[key]) * self.factor ** 2
        return d


def labels_on_source(labels_fzss: np.ndarray, geometry: Sequence[int]) -> np.ndarray:
    """Label maps ``[F, Z, S, S]`` of a study stack (its ``[x, y]`` order) -> ``[F, Z, H, W]`` on the source grid
    (the reader's order): each source pixel takes the window pixel its centre falls in after resampling
    (nearest neighbour), 0 outside the window. ``geometry``: the stack's ``crop_geometry``."""
    height, width, zoomed_h, zoomed_w, row0, col0 = (int(v) for v in geometry)
    maps = np.asarray(labels_fzss).swapaxes(-1, -2)  # back to the reader's [H, W] order
    size = maps.shape[-1]
    rows = np.floor((np.arange(height) + 0.5) * zoomed_h / height).astype(np.int64) - row0
    cols = np.floor((np.arange(width) + 0.5) * zoomed_w / width).astype(np.int64) - col0
    inside_r, inside_c = np.nonzero((rows >= 0) & (rows < size))[0], np.nonzero((cols >= 0) & (cols < size))[0]
    out = np.zeros(maps.shape[:-2] + (height, width), dtype=np.uint8)
    out[..., inside_r[:, None], inside_c[None, :]] = maps[..., rows[inside_r][:, None], cols[inside_c][None, :]]
    return out


def probabilities_on_source(probabilities: np.ndarray, geometry: Sequence[int]) -> np.ndarray:
    """Class probabilities ``[..., C, S, S]`` of a study stack (its ``[x, y]`` order) -> ``[..., C, H, W]`` on the
    source grid (the reader's order), resampled bilinearly as MONAI's ``Invertd`` returns the segmentation bundle's
    probabilities (pixel centres as :func:`labels_on_source` maps them); outside the window, background.
    ``geometry``: the stack's ``crop_geometry``."""
    height, width, zoomed_h, zoomed_w, row0, col0 = (int(v) for v in geometry)
    window = np.asarray(probabilities, dtype=np.float32).swapaxes(-1, -2)  # back to the reader's [H, W] order
    lead, classes, size = window.shape[:-3], window.shape[-3], window.shape[-1]
    full = np.zeros((int(np.prod(lead, dtype=np.int64)), classes, zoomed_h, zoomed_w), dtype=np.float32)
    full[:, 0] = 1.0  # background outside the window
    r0, r1, c0, c1 = max(row0, 0), min(row0 + size, zoomed_h), max(col0, 0), min(col0 + size, zoomed_w)
    window = window.reshape(full.shape[:2] + (size, size))
    full[:, :, r0:r1, c0:c1] = window[:, :, r0 - row0:r1 - row0, c0 - col0:c1 - col0]
    back = torch.nn.functional.interpolate(torch.from_numpy(full), size=(height, width), mode="bilinear",
                                           align_corners=False)
    return back.numpy().reshape(lead + (classes, height, width))


def _label_frame(path: str, shape_zhw: Tuple[int, ...], spacing_from: str = "auto") -> np.ndarray:
    labels = read_cine(path, spacing_from=spacing_from).pixels
    if labels.shape[0] != 1 or labels.shape[1:] != tuple(shape_zhw):
        raise ValueError(f"{path}: label of shape {labels.shape[1:]} (frames {labels.shape[0]}) does not match "
                         f"its image frame {tuple(shape_zhw)}")
    return np.rint(labels[0]).astype(np.int16)


class LoadStudyStack(Transform):
    """Read and prepare one study record (module docstring).

    Args:
        pixdim_mm: in-plane pixel size after resampling (mm): the bundle's ``[dy, dx]``, two
            equal values (the stack is resampled to square pixels), or one number.
        roi_size: side of the square crop around the heart (pixels).
        intensity_percentiles: clipping percentiles of the study's intensities.
        cache_size: studies kept in memory by path (a cine read once for all its frames).
        spacing_from: NIfTI spacing source, ``"auto"`` (what the header proves), ``"sform"``
            or ``"pixdim"`` (:mod:`cmrssl.io.nifti`).
        source_labels: also return the labels on the source grid (``label_source``, ``source_spacing_mm``).

    Raises (naming the file):
        ValueError: frames of different geometry, a stack without slice spacing (one
            slice, or no positions to measure it), a label that does not match its frame.
    """

    def __init__(
        self,
        pixdim_mm: Union[float, Sequence[float]] = (1.5, 1.5),
        roi_size: int = 128,
        intensity_percentiles: Sequence[float] = (0.5, 99.5),
        cache_size: int = 1,
        spacing_from: str = "auto",
        source_labels: bool = False,
    ) -> None:
        self.pixdim_mm = square_pixdim_mm(pixdim_mm)
        self.source_labels = as_bool(source_labels, "source_labels")
        self.roi_size = int(roi_size)
        if self.roi_size < 8:
            raise ValueError(f"roi_size must be >= 8, got {roi_size}")
        self.percentiles = (float(intensity_percentiles[0]), float(intensity_percentiles[1]))
        self.cache = CineStudyCache(max_studies=int(cache_size), spacing_from=spacing_from)
        self.spacing_from = self.cache.spacing_from

    def _pixels(self, record: Mapping) -> Tuple[np.ndarray, object, List[int], str]:
        """``(pixels [F, Z, H, W], a study with the geometry, cycle index of each frame, source)``."""
        frames = sorted(record.get("frames") or [], key=lambda f: int(f["frame_index"]))
        if record.get("cine"):
            study = self.cache.get(record["cine"])
            return study.pixels, study, [int(t) for t in study.source_frame_index], str(record["cine"])
        if not frames:
            raise ValueError(f"study {record.get('subject', '?')}: neither a cine nor frames to read")
        stacks, first = [], None
        for f in frames:
            study = read_cine(f["image"], spacing_from=self.spacing_from)  # each 3D frame once; the cache keeps cines
            if study.num_frames != 1:
                raise ValueError(f"{f['image']}: a frame record must point at one 3D frame, got {study.num_frames} "
                                 "frames (put a whole cine under 'cine')")
            if first is not None and study.pixels.shape[1:] != first.pixels.shape[1:]:
                raise ValueError(f"{f['image']}: frame of shape {study.pixels.shape[1:]} differs from "
                                 f"{frames[0]['image']} {first.pixels.shape[1:]} of the same study")
            first = first or study
            stacks.append(study.pixels[0])
        return np.stack(stacks), first, [int(f["frame_index"]) for f in frames], str(frames[0]["image"])

    def __call__(self, record: Mapping[Hashable, object]) -> Dict[str, object]:
        pixels, study, cycle, source = self._pixels(record)
        if study.num_slices < 2 or not study.slice_spacing_mm > 0:
            raise ValueError(f"{source}: no slice spacing ({study.num_slices} slice(s), spacing "
                             f"{study.slice_spacing_mm} mm): LV volumes need a short-axis stack with positions")
        dy, dx = study.pixel_spacing_mm
        dz = float(study.slice_spacing_mm)
        factors = (dy / self.pixdim_mm, dx / self.pixdim_mm)
        num_frames = pixels.shape[0]

        low, high = np.percentile(pixels, self.percentiles)
        image = np.clip(pixels.astype(np.float32), low, high)
        image = (image - image.mean()) / max(float(image.std()), 1e-6)
        image = _zoom(image, factors, "bilinear")
        centre = heart_centre(image, self.pixdim_mm)
        # where the window lies: source [H, W], resampled [H', W'], the window's first row and column there
        geometry = [*pixels.shape[-2:], *image.shape[-2:], centre[0] - self.roi_size // 2, centre[1] - self.roi_size // 2]
        image = _crop(image, centre, self.roi_size, float(image.min()))

        area = np.full((num_frames, study.num_slices), np.nan, dtype=np.float32)
        label_maps = np.zeros(image.shape, dtype=np.uint8)
        reference = np.full((num_frames, NUM_LABELS), np.nan, dtype=np.float32)
        labelled = np.zeros(num_frames, dtype=bool)
        source_maps = np.zeros(pixels.shape, dtype=np.uint8) if self.source_labels else None
        for f in record.get("frames") or []:
            if not f.get("label"):
                continue
            t = cycle.index(int(f["frame_index"]))
            labels = _label_frame(f["label"], pixels.shape[1:], self.spacing_from)
            clipped = np.clip(labels, 0, NUM_LABELS - 1)
            counts = np.bincount(clipped.astype(np.int64).ravel(), minlength=NUM_LABELS)
            reference[t] = counts[:NUM_LABELS] * dz * dy * dx / 1000.0
            label_maps[t] = _crop(_zoom(labels[None].astype(np.float32), factors, "nearest")[0], centre, self.roi_size, 0.0)
            lv_zoomed = label_maps[t] == LV_CAVITY
            area[t] = lv_zoomed.reshape(lv_zoomed.shape[0], -1).sum(axis=1) * self.pixdim_mm ** 2
            labelled[t] = True
            if source_maps is not None:
                source_maps[t] = clipped

        def position(key: str) -> int:
            value = record.get(key)
            return cycle.index(int(value)) if value is not None and int(value) in cycle else -1

        nan = float("nan")
        image, label_maps = image.swapaxes(-1, -2), label_maps.swapaxes(-1, -2)  # the segmentation bundle's [x, y]
        sources = {} if source_maps is None else {
            "label_source": torch.as_tensor(source_maps),
            "source_spacing_mm": torch.tensor([dz, dy, dx], dtype=torch.float64)}
        return {
            **sources,
            "image": torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32),
            "area_mm2": torch.as_tensor(area),
            "label": torch.as_tensor(np.ascontiguousarray(label_maps)),
            "reference_volumes_ml": torch.as_tensor(reference),
            "labelled": torch.as_tensor(labelled),
            "frame_index": torch.as_tensor(cycle, dtype=torch.int64),
            "slice_spacing_mm": torch.tensor(dz, dtype=torch.float32),
            "crop_centre_mm": torch.tensor([centre[0] * self.pixdim_mm, centre[1] * self.pixdim_mm]),
            "crop_geometry": torch.tensor(geometry, dtype=torch.int64),
            "from_cine": torch.tensor(bool(record.get("cine"))),
            "ed_position": torch.tensor(position("ed_frame")),
            "es_position": torch.tensor(position("es_frame")),
            "edv_ml": torch.tensor(nan if record.get("edv_ml") is None else float(record["edv_ml"])),
            "esv_ml": torch.tensor(nan if record.get("esv_ml") is None else float(record["esv_ml"])),
            "frame_numbers_known": torch.tensor(bool(record.get("frame_numbers_known", True))),
            "subject": str(record.get("subject", Path(source).name)),
            "source": source,
        }


def nested_boxes(
    shape: Sequence[int], rng: np.random.RandomState, fraction: Sequence[float] = (0.5, 0.9)
) -> Tuple[Tuple[int, int, int, int], Tuple[int, int, int, int]]:
    """An ``outer`` window inside an image of ``shape = (H, W)`` and an ``inner`` window inside ``outer``.

    Windows are ``(row0, row1, col0, col1)`` (half-open); each side of ``outer`` is a
    random ``fraction`` of the image's and each side of ``inner`` the same range of
    ``outer``'s, placed uniformly. ``inner`` is strictly smaller than ``outer``, which
    is strictly smaller than the image, so the cavity visible never grows from image
    to ``outer`` to ``inner``: the pairs of the nested-crop ranking loss.
    """
    low, high = float(fraction[0]), float(fraction[1])
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"nested crop fraction must satisfy 0 < low <= high < 1, got {fraction}")

    def inside(r0: int, r1: int, c0: int, c1: int) -> Tuple[int, int, int, int]:
        h, w = r1 - r0, c1 - c0
        bh = min(h - 1, max(1, int(round(h * rng.uniform(low, high)))))
        bw = min(w - 1, max(1, int(round(w * rng.uniform(low, high)))))
        top = r0 + int(rng.randint(0, h - bh + 1))
        left = c0 + int(rng.randint(0, w - bw + 1))
        return top, top + bh, left, left + bw

    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < 4:
        raise ValueError(f"image {shape} too small for nested windows")
    outer = inside(0, h, 0, w)
    inner = inside(*outer)
    return outer, inner


def mask_outside(image: torch.Tensor, box: Tuple[int, int, int, int], fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``image`` ``[..., H, W]`` with everything outside ``box`` set to ``fill`` (default its minimum)."""
    r0, r1, c0, c1 = box
    keep = torch.zeros(image.shape[-2:], dtype=torch.bool, device=image.device)
    keep[r0:r1, c0:c1] = True
    if fill is None:
        fill = image.amin(dim=(-2, -1), keepdim=True)
    return torch.where(keep, image, fill)


def frame_positions(num_frames: int, keep: int, must: Sequence[int] = ()) -> List[int]:
    """At most ``keep`` frame positions spread evenly over the cycle, always with those in ``must``, sorted."""
    if keep >= num_frames:
        return list(range(num_frames))
    chosen = {int(round(i * num_frames / keep)) % num_frames for i in range(keep)} | {int(m) for m in must if m >= 0}
    return sorted(chosen)


def random_similarity_grids(
    count: int, shape: Sequence[int], rng: np.random.RandomState, rotate_deg: float = 0.0,
    zoom: Sequence[float] = (1.0, 1.0), device=None,
) -> torch.Tensor:
    """``count`` sampling grids ``[K, H, W, 2]`` (for :func:`warp`), each a rotation about the image centre by an
    angle drawn from ``[-rotate_deg, rotate_deg]`` and a zoom drawn from ``zoom`` (> 1 magnifies), one draw per
    image from ``rng`` so that an image and its class probabilities can be moved by the same one."""
    low, high = float(zoom[0]), float(zoom[1])
    if not 0.0 < low <= high:
        raise ValueError(f"zoom must be a range 0 < low <= high, got {zoom}")
    angles = np.deg2rad(rng.uniform(-float(rotate_deg), float(rotate_deg), size=count))
    factors = rng.uniform(low, high, size=count)
    theta = np.zeros((count, 2, 3), dtype=np.float32)  # output -> input coordinates, normalised to [-1, 1]
    theta[:, 0, 0] = np.cos(angles) / factors
    theta[:, 0, 1] = -np.sin(angles) / factors
    theta[:, 1, 0] = np.sin(angles) / factors
    theta[:, 1, 1] = np.cos(angles) / factors
    size = (int(count), 1, int(shape[0]), int(shape[1]))
    return torch.nn.functional.affine_grid(torch.as_tensor(theta, device=device), size, align_corners=False)


def warp(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """``images [K, C, H, W]`` resampled on ``grids`` (:func:`random_similarity_grids`), bilinear, 0 outside."""
    return torch.nn.functional.grid_sample(images, grids.to(images.dtype), mode="bilinear", padding_mode="zeros",
                                           align_corners=False)
