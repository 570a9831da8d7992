"""Load one frame of a cine as a MONAI 3D image ``[1, W, H, Z]`` with a RAS affine.

Datalist records (see the data contract) point either at a 3D NIfTI frame or
at the whole cine (a 4D NIfTI or a DICOM folder) plus ``frame_index``.
:class:`LoadCineFramed` reads both into the same layout that
``LoadImaged(keys, ensure_channel_first=True)`` gives on the project's NIfTI
frames: ``[C=1, W=columns, H=rows, Z=slices base->apex]`` float32, affine
voxel -> RAS mm. Geometry goes through :func:`cmrssl.io.read_cine`, so ACDC's
spacing-less affines come out with the header spacing (where plain
``LoadImaged`` would keep MONAI's own header rectification), and a NIfTI whose
sform and pixdim disagree beyond what the header can settle is refused unless
the record (or the transform) names ``spacing_from``. An image and its label
must lie on one voxel grid; a label elsewhere in the world is refused, both
files named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Hashable, Mapping, Optional, Union

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Spacingd, Transform
from monai.utils import MetaKeys, SpaceKeys

from cmrssl.io.cine import swap_layout
from cmrssl.io.errors import CineReadError
from cmrssl.io.geometry import grid_mismatch
from cmrssl.io.nifti import record_spacing_from
from cmrssl.io.reader import CineStudyCache, is_nifti_path, study_ras_affine

__all__ = ["LoadCineFrame", "LoadCineFramed", "PathSafeSpacingd", "SourceGridd", "SOURCE_GRID", "to_study_grid"]


class LoadCineFrame(Transform):
    """Read frame ``frame_index`` of a cine, or a 3D NIfTI frame, as ``MetaTensor [1, W, H, Z]``.

    Args:
        dtype: output dtype (float32 like ``LoadImaged``).
        cache_size: studies kept in memory, keyed by path and modification time;
            records of one subject come in a row, and re-reading a DICOM folder of
            hundreds of files for each frame would dominate loading.
        cache: a :class:`cmrssl.io.reader.CineStudyCache` to read through instead
            (``cache_size`` is then unused): segmentation inference shares one with
            the writer that assembles the cine, so each cine is read once.
        spacing_from: NIfTI spacing source (``"auto"``, ``"sform"``, ``"pixdim"``;
            :mod:`cmrssl.io.nifti`) when the call names none; None: the cache's.

    Call:
        ``loader(path, frame_index=None, spacing_from=None)``: ``frame_index``
        (0-based) is required for a multi-frame cine and ignored for a single 3D
        frame (a record may carry the frame's index in the cycle beside a 3D frame
        file).

    Raises:
        ValueError: ``frame_index`` missing or outside ``[0, T-1]``.
        FileNotFoundError, cmrssl.io.CineReadError: from the readers.
    """

    def __init__(self, dtype=np.float32, cache_size: int = 2, cache: Optional[CineStudyCache] = None,
                 spacing_from: Optional[str] = None) -> None:
        if cache is None and int(cache_size) < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.dtype = dtype
        self.cache = cache if cache is not None else CineStudyCache(max_studies=int(cache_size))
        self.spacing_from = spacing_from

    def __call__(self, path: Union[str, Path], frame_index: Optional[int] = None,
                 spacing_from: Optional[str] = None) -> MetaTensor:
        path = Path(path)
        study = self.cache.get(path, spacing_from=spacing_from if spacing_from is not None else self.spacing_from)
        if study.num_frames == 1:
            t = 0
        elif frame_index is None:
            raise ValueError(f"{path}: cine of {study.num_frames} frames; give frame_index to pick one")
        else:
            t = int(frame_index)
            if not 0 <= t < study.num_frames:
                raise ValueError(f"{path}: frame_index {t} outside [0, {study.num_frames - 1}]")
        array = np.ascontiguousarray(swap_layout(study.pixels[t])[None], dtype=self.dtype)
        affine = torch.as_tensor(study_ras_affine(study), dtype=torch.float64)
        dz, dy, dx = study.spacing_zyx_mm
        times = study.trigger_times_ms
        meta = {
            "filename_or_obj": str(path),
            MetaKeys.ORIGINAL_AFFINE: affine.clone(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[1:]),
            MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
            MetaKeys.SPACE: SpaceKeys.RAS,
            "spacing_xyz_mm": np.asarray([dx, dy, dz]),
            # index in the cardiac cycle: the cine's own, or the record's for a 3D frame file
            "frame_index": int(study.source_frame_index[t]) if study.num_frames > 1 else int(frame_index or 0),
            "trigger_time_ms": float("nan") if times is None else float(times[t]),
            # each slice's index in the file, so a mask can go back to the file's own voxel order
            "source_slice_index": np.asarray(study.source_slice_index, dtype=np.int64),
        }
        return MetaTensor(torch.from_numpy(array), affine=affine, meta=meta)


class LoadCineFramed(MapTransform):
    """Dictionary twin of :class:`LoadCineFrame`.

    Args:
        keys: keys holding paths (``"image"``, ``"label"``); every key after the first
            must lie on the first one's voxel grid.
        frame_key: key of the 0-based frame index in the record (may be absent for 3D frames).
        dtype, cache_size, cache, spacing_from: as :class:`LoadCineFrame`; a record's
            own ``spacing_from`` of ``"sform"`` or ``"pixdim"`` (an indexer records its
            dataset's convention) comes first, ``"auto"`` leaves it to the transform.
        allow_missing_keys: skip absent keys.

    Raises:
        CineReadError: a key's image on another grid than the first key's, naming both files.
    """

    def __init__(
        self,
        keys: KeysCollection,
        frame_key: str = "frame_index",
        dtype=np.float32,
        cache_size: int = 2,
        allow_missing_keys: bool = False,
        cache: Optional[CineStudyCache] = None,
        spacing_from: Optional[str] = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.loader = LoadCineFrame(dtype=dtype, cache_size=cache_size, cache=cache, spacing_from=spacing_from)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        frame_index = d.get(self.frame_key)
        spacing_from = record_spacing_from(d.get("spacing_from"))
        first = None
        for key in self.key_iterator(d):
            path = d[key]
            d[key] = self.loader(path, None if frame_index is None else int(frame_index), spacing_from)
            if first is None:
                first = (path, d[key])
                continue
            problem = grid_mismatch(first[1].affine.numpy(), first[1].shape[1:], d[key].affine.numpy(), d[key].shape[1:])
            if problem:
                raise CineReadError(
                    f"{path}: '{key}' is not on the grid of its image {first[0]}: {problem}; "
                    "a label must share its image's affine"
                )
        return d


class PathSafeSpacingd(Spacingd):
    """MONAI's ``Spacingd`` that leaves plain ``{key}_...`` entries of a record alone.

    After resampling a NIfTI image, ``Spacingd`` (MONAI 1.6.1) updates every record entry
    whose name starts with ``{key}_`` as if it were a metadata dict; MONAI Label's
    inference adds the string ``image_path``, and ``str.update`` fails. Entries that
    are not dicts are set aside for the call and put back unchanged; the resampling
    and its inverse are MONAI's.
    """

    def __call__(self, data, lazy=None):
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        aside = {k: d.pop(k) for k in list(d) if isinstance(k, str) and k.startswith(prefixes)
                 and not isinstance(d[k], Mapping)}
        d = super().__call__(d, lazy=lazy)
        d.update(aside)
        return d


#: meta key set by :class:`SourceGridd` on a mask it put back in its NIfTI file's own grid
SOURCE_GRID = "source_grid"


class SourceGridd(MapTransform):
    """Put a mask ``[1, W, H, Z]`` of a NIfTI frame back in that file's voxel order, with the file's affine.

    The loader (:class:`LoadCineFramed`) orders slices base to apex and builds the affine from the
    spacing it decided (an ACDC frame's pixdim where its sform says 1 mm); a mask written from that
    grid (MONAI Label's writer takes the prediction's affine) lands elsewhere than the image in a
    viewer. This puts each slice back at its index in the file (``source_slice_index``) and the
    affine back to the file's, as nibabel reads it; the spacing used for measurements is unchanged
    and stays in ``spacing_xyz_mm``. DICOM inputs (no file affine) and masks whose shape is not the
    file's pass unchanged. Sets ``meta[SOURCE_GRID]`` on what it changed.

    Args:
        keys: the masks.
        ref_key: the image they were predicted from: its ``original_affine`` becomes the file's
            too, since MONAI Label's ``Restored`` (run after the bundle's postprocessing) gives the
            mask the image's ``original_affine``.
    """

    def __init__(self, keys: KeysCollection, ref_key: Optional[str] = "image", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            meta = getattr(mask, "meta", {})
            path, order = meta.get("filename_or_obj"), meta.get("source_slice_index")
            if not isinstance(mask, MetaTensor) or path is None or order is None or meta.get(SOURCE_GRID):
                continue
            path = Path(str(path))
            if not (path.is_file() and is_nifti_path(path)):
                continue
            header = nib.load(str(path))
            order = np.asarray(order, dtype=np.int64).reshape(-1)
            if tuple(header.shape[:3]) != tuple(mask.shape[1:]) or len(order) != mask.shape[-1]:
                continue
            placed = torch.zeros_like(mask.as_tensor())
            placed[..., torch.as_tensor(order)] = mask.as_tensor()
            out = MetaTensor(placed, meta={k: v for k, v in meta.items() if k != MetaKeys.AFFINE})
            out.affine = torch.as_tensor(header.affine, dtype=torch.float64)
            out.meta[SOURCE_GRID] = True
            d[key] = out
            reference = d.get(self.ref_key) if self.ref_key else None
            if isinstance(reference, MetaTensor) and reference.meta.get("filename_or_obj") == meta["filename_or_obj"]:
                reference.meta[MetaKeys.ORIGINAL_AFFINE] = torch.as_tensor(header.affine, dtype=torch.float64)
        return d


def to_study_grid(mask: np.ndarray, meta: Mapping) -> np.ndarray:
    """The inverse of :class:`SourceGridd` on an array ``[..., Z]``: slices back in the loader's order."""
    if not meta.get(SOURCE_GRID):
        return mask
    return np.asarray(mask)[..., np.asarray(meta["source_slice_index"], dtype=np.int64)]
