"""View generators for self-supervised pretraining, as MONAI transforms.

A pretraining sample is one 2D short-axis slice ``[C, H, W]`` of one cine
frame. :class:`CineSlicesd` turns a loaded 3D frame ``[C, W, H, Z]`` into its
slices (a list of samples, which MONAI's ``list_data_collate`` flattens into
the batch), each with its position in the stack (slice index / number of
slices, 0 at the base) for positional contrastive learning.

The per-method view transforms (lightly's first part of a method):

- :class:`TwoViewsd`: SimCLR and PCL, two independently augmented views.
- :class:`DINOMultiCropd`: DINO multi-crop, 2 global crops (one always blurred,
  one solarised with probability 0.2) and 6 local crops.
- MIM uses :class:`RandCMRAugmentd` (one augmented view) followed by
  :class:`cmrssl.transforms.masking.RandPatchMaskd`.

:class:`RandCMRAugment` is the augmentation of de Mooij et al. 2024: rotation
(+-180 deg), isotropic scale 0.7-1.4, flips, translation (+-40 px of 256),
Gaussian noise, Gaussian blur, multiplicative (0.6-1.5) and additive (+-0.4)
intensity changes and gamma (0.7-1.5), on z-scored intensities.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Affine,
    Compose,
    MapTransform,
    RandAdjustContrast,
    RandGaussianNoise,
    RandGaussianSmooth,
    Randomizable,
    RandScaleIntensity,
    RandShiftIntensity,
    Transform,
)

__all__ = [
    "CineSlicesd",
    "RandCMRAugment",
    "RandCMRAugmentd",
    "RandResizedCrop",
    "RandSolarize",
    "MultiViewd",
    "TwoViewsd",
    "DINOMultiCropd",
]


def _as_plain_tensor(x: Any) -> torch.Tensor:
    # Slices leave the 3D frame's MetaTensor (a 4x4 affine) behind: 2D spatial
    # transforms would otherwise try to compose a 3D affine with a 2D one.
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x)


def _check_range(name: str, value: Sequence[float], low: float = -math.inf, high: float = math.inf) -> Tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < low or pair[1] > high:
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {value}")
    return pair


def _check_probability(name: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


class CineSlicesd(MapTransform):
    """Split a loaded 3D cine frame into 2D slice samples, each with its stack position.

    Input ``d[key]``: ``[C, W, H, Z]`` (a frame loaded by ``LoadImaged``) or
    ``[T, W, H, Z]`` (a whole cine loaded with ``cmrssl.io.CineImageReader``,
    frames as channels), in which case frame ``d[frame_key]`` is taken (all
    frames when the record has none). Slices must run base to apex, the
    project's convention for files it writes and for ``CineImageReader``.

    Output: a list of dicts, one per slice (and frame), with ``d[key]`` a
    ``[1, W, H]`` float tensor and ``slice_position = z / Z`` (float),
    ``slice_index = z``, ``num_slices = Z``; other record fields are copied.

    Args:
        keys: the image key(s) to slice (all must share Z).
        frame_key: key of the 0-based frame index for cine inputs.
        position_key: key written with the slice position.
        min_slices: stacks with fewer slices are refused (a 2D image is not a stack).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        frame_key: str = "frame_index",
        position_key: str = "slice_position",
        min_slices: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.position_key = position_key
        self.min_slices = int(min_slices)

    def _frames(self, image: torch.Tensor, d: Mapping, key: Hashable) -> List[torch.Tensor]:
        name = d.get("image_meta_dict", {}).get("filename_or_obj") if isinstance(d.get("image_meta_dict"), dict) else None
        name = name or getattr(image, "meta", {}).get("filename_or_obj", key)
        if image.ndim != 4:
            raise ValueError(f"{name}: expected a 3D frame [C, W, H, Z] (or a cine [T, W, H, Z]), got {tuple(image.shape)}")
        if image.shape[-1] < self.min_slices:
            raise ValueError(f"{name}: has {image.shape[-1]} slices, fewer than min_slices={self.min_slices}")
        plain = _as_plain_tensor(image).float()
        if plain.shape[0] == 1:
            return [plain]
        frame = d.get(self.frame_key)
        if frame is None:
            return [plain[t : t + 1] for t in range(plain.shape[0])]
        frame = int(frame)
        if not 0 <= frame < plain.shape[0]:
            raise ValueError(f"{name}: {self.frame_key}={frame} outside the cine's {plain.shape[0]} frames")
        return [plain[frame : frame + 1]]

    def __call__(self, data: Mapping[Hashable, Any]) -> List[dict]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            raise KeyError(f"CineSlicesd: none of the keys {self.keys} is in the record")
        stacks = {key: self._frames(d[key], d, key) for key in keys}
        num_frames = len(stacks[keys[0]])
        num_slices = int(stacks[keys[0]][0].shape[-1])
        for key in keys[1:]:
            if len(stacks[key]) != num_frames or int(stacks[key][0].shape[-1]) != num_slices:
                raise ValueError(f"CineSlicesd: {key} and {keys[0]} differ in frames or slices")
        samples = []
        for t in range(num_frames):
            for z in range(num_slices):
                sample = {k: v for k, v in d.items() if k not in keys and not str(k).endswith("_meta_dict")}
                for key in keys:
                    sample[key] = stacks[key][t][..., z].clone()
                sample[self.position_key] = float(z) / float(num_slices)
                sample["slice_index"] = z
                sample["num_slices"] = num_slices
                samples.append(sample)
        return samples


class RandCMRAugment(Randomizable, Transform):
    """The reference CMR augmentation for one ``[C, H, W]`` slice (z-scored intensities).

    Spatial part (one resampling): rotation uniform in ``+-rotate_range_deg``,
    one isotropic scale factor in ``scale_range`` (``> 1`` shows more of the
    image), translation up to ``translate_fraction`` of the image size per axis,
    then flips along each axis with ``flip_prob``. Intensity part: Gaussian
    noise, Gaussian blur, multiplicative scale, additive shift, gamma, each with
    its own probability.

    Args:
        rotate_range_deg: 180.
        scale_range: (0.7, 1.4).
        translate_fraction: 40 / 256 (the reference's +-40 px on 256 px slices).
        flip_prob: 0.5 per axis.
        noise_prob, noise_std: 0.2, 0.2.
        blur_prob, blur_sigma: 0.2, (0.5, 1.5) pixels.
        scale_intensity_prob, scale_intensity: 1.0, factors (0.6, 1.5).
        shift_intensity_prob, shift_intensity: 1.0, offsets (-0.4, 0.4).
        gamma_prob, gamma: 1.0, (0.7, 1.5).
        spatial_prob: probability of the spatial part (1.0).
    """

    def __init__(
        self,
        rotate_range_deg: float = 180.0,
        scale_range: Sequence[float] = (0.7, 1.4),
        translate_fraction: float = 40.0 / 256.0,
        flip_prob: float = 0.5,
        noise_prob: float = 0.2,
        noise_std: float = 0.2,
        blur_prob: float = 0.2,
        blur_sigma: Sequence[float] = (0.5, 1.5),
        scale_intensity_prob: float = 1.0,
        scale_intensity: Sequence[float] = (0.6, 1.5),
        shift_intensity_prob: float = 1.0,
        shift_intensity: Sequence[float] = (-0.4, 0.4),
        gamma_prob: float = 1.0,
        gamma: Sequence[float] = (0.7, 1.5),
        spatial_prob: float = 1.0,
    ) -> None:
        if rotate_range_deg < 0:
            raise ValueError(f"rotate_range_deg must be >= 0, got {rotate_range_deg}")
        if not 0 <= translate_fraction < 1:
            raise ValueError(f"translate_fraction must be in [0, 1), got {translate_fraction}")
        self.rotate_range = math.radians(float(rotate_range_deg))
        self.scale_range = _check_range("scale_range", scale_range, low=1e-3)
        self.translate_fraction = float(translate_fraction)
        self.flip_prob = _check_probability("flip_prob", flip_prob)
        self.spatial_prob = _check_probability("spatial_prob", spatial_prob)
        scale = _check_range("scale_intensity", scale_intensity, low=0.0)
        self.intensity = Compose(
            [
                RandGaussianNoise(prob=_check_probability("noise_prob", noise_prob), mean=0.0, std=float(noise_std)),
                RandGaussianSmooth(
                    sigma_x=_check_range("blur_sigma", blur_sigma, low=0.0),
                    sigma_y=_check_range("blur_sigma", blur_sigma, low=0.0),
                    prob=_check_probability("blur_prob", blur_prob),
                ),
                # MONAI multiplies by (1 + factor)
                RandScaleIntensity(
                    factors=(scale[0] - 1.0, scale[1] - 1.0), prob=_check_probability("scale_intensity_prob", scale_intensity_prob)
                ),
                RandShiftIntensity(
                    offsets=_check_range("shift_intensity", shift_intensity),
                    prob=_check_probability("shift_intensity_prob", shift_intensity_prob),
                ),
                RandAdjustContrast(
                    gamma=_check_range("gamma", gamma, low=1e-3), prob=_check_probability("gamma_prob", gamma_prob)
                ),
            ]
        )
        self._params: Optional[dict] = None

    def set_random_state(self, seed: Optional[int] = None, state: Optional[np.random.RandomState] = None):
        super().set_random_state(seed, state)
        self.intensity.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        size = np.asarray(spatial_shape, dtype=float)
        self._params = {
            "spatial": self.R.rand() < self.spatial_prob,
            "rotate": self.R.uniform(-self.rotate_range, self.rotate_range),
            "scale": math.exp(self.R.uniform(math.log(self.scale_range[0]), math.log(self.scale_range[1]))),
            "translate": self.R.uniform(-1, 1, size=2) * self.translate_fraction * size,
            "flips": [axis for axis in range(len(spatial_shape)) if self.R.rand() < self.flip_prob],
        }

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        """``[C, H, W]`` -> augmented ``[C, H, W]`` float tensor."""
        image = _as_plain_tensor(img).float()
        if image.ndim != 3:
            raise ValueError(f"RandCMRAugment expects a 2D slice [C, H, W], got shape {tuple(image.shape)}")
        if randomize or self._params is None:
            self.randomize(image.shape[1:])
        p = self._params
        if p["spatial"]:
            affine = Affine(
                rotate_params=p["rotate"],
                scale_params=(p["scale"], p["scale"]),
                translate_params=tuple(float(t) for t in p["translate"]),
                padding_mode="zeros",
                image_only=True,
            )
            image = _as_plain_tensor(affine(image))
            if p["flips"]:
                image = torch.flip(image, dims=[axis + 1 for axis in p["flips"]])
        return _as_plain_tensor(self.intensity(image)).float()


class RandCMRAugmentd(Randomizable, MapTransform):
    """Dictionary twin of :class:`RandCMRAugment` (one independent draw per key)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **augment_kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.augment = RandCMRAugment(**augment_kwargs)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key])
        return d


class RandResizedCrop(Randomizable, Transform):
    """Random crop covering a random fraction of the image area, resized to ``spatial_size``.

    The DINO/Inception crop: area fraction uniform in ``area_range``, aspect ratio
    log-uniform in ``aspect_range``, position uniform; then bilinear resize
    (antialiased when shrinking).

    Args:
        spatial_size: output ``(H, W)`` (or one int).
        area_range: fraction of the input area, DINO global (0.14, 1.0) / local (0.05, 0.14).
        aspect_range: (3/4, 4/3).
    """

    def __init__(
        self,
        spatial_size: Any,
        area_range: Sequence[float] = (0.14, 1.0),
        aspect_range: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        size = (int(spatial_size),) * 2 if np.isscalar(spatial_size) else tuple(int(s) for s in spatial_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"spatial_size must be a positive int or (H, W), got {spatial_size}")
        self.spatial_size = size
        self.area_range = _check_range("area_range", area_range, low=1e-4, high=1.0)
        self.aspect_range = _check_range("aspect_range", aspect_range, low=1e-3)
        self._box: Optional[Tuple[int, int, int, int]] = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        rows, cols = int(spatial_shape[0]), int(spatial_shape[1])
        area = self.R.uniform(*self.area_range) * rows * cols
        aspect = math.exp(self.R.uniform(math.log(self.aspect_range[0]), math.log(self.aspect_range[1])))
        height = int(round(min(rows, max(1.0, math.sqrt(area / aspect)))))
        width = int(round(min(cols, max(1.0, math.sqrt(area * aspect)))))
        top = int(self.R.randint(0, rows - height + 1))
        left = int(self.R.randint(0, cols - width + 1))
        self._box = (top, left, height, width)

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        """``[C, H, W]`` -> ``[C, *spatial_size]``."""
        image = _as_plain_tensor(img).float()
        if image.ndim != 3:
            raise ValueError(f"RandResizedCrop expects [C, H, W], got shape {tuple(image.shape)}")
        if randomize or self._box is None:
            self.randomize(image.shape[1:])
        top, left, height, width = self._box
        crop = image[:, top : top + height, left : left + width]
        shrinking = height > self.spatial_size[0] or width > self.spatial_size[1]
        return F.interpolate(
            crop[None], size=self.spatial_size, mode="bilinear", align_corners=False, antialias=shrinking
        )[0]


class RandSolarize(Randomizable, Transform):
    """With probability ``prob``, invert intensities at or above ``threshold`` within the image's range.

    ``x >= threshold  ->  min + max - x``: on a ``[0, 1]`` image this is the
    usual solarisation ``1 - x``; on z-scored CMR (threshold 0, the reference's
    value) it inverts the bright blood pool and fat while keeping the dark background.
    """

    def __init__(self, prob: float = 0.2, threshold: float = 0.0) -> None:
        self.prob = _check_probability("prob", prob)
        self.threshold = float(threshold)
        self._do = False

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        image = _as_plain_tensor(img).float()
        if randomize:
            self.randomize()
        if not self._do:
            return image
        low, high = image.min(), image.max()
        return torch.where(image >= self.threshold, low + high - image, image)


class MultiViewd(Randomizable, MapTransform):
    """Make several independently transformed views of ``d[key]``: ``d[view_keys[i]] = view_transforms[i](d[key])``.

    The generic multi-view generator (lightly's ``MultiViewTransform``): each
    view transform is an array transform on ``[C, H, W]``; a transform object
    listed twice draws its random parameters independently for each view.

    Args:
        keys: the source image key (one key).
        view_transforms: one callable per view.
        view_keys: output keys, one per view.
        delete_source: drop ``d[key]`` afterwards (the views replace it).
    """

    def __init__(
        self,
        keys: KeysCollection,
        view_transforms: Sequence[Callable],
        view_keys: Sequence[str],
        delete_source: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"MultiViewd takes one source key, got {self.keys}")
        if len(view_transforms) != len(view_keys) or len(view_keys) == 0:
            raise ValueError(
                f"need one view key per view transform, got {len(view_transforms)} transforms and keys {list(view_keys)}"
            )
        if len(set(view_keys)) != len(view_keys):
            raise ValueError(f"view_keys must be distinct, got {list(view_keys)}")
        self.view_transforms = list(view_transforms)
        self.view_keys = list(view_keys)
        self.delete_source = bool(delete_source)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        seen = set()
        for transform in self.view_transforms:
            if id(transform) not in seen and hasattr(transform, "set_random_state"):
                transform.set_random_state(seed=int(self.R.randint(2**31 - 1)))
                seen.add(id(transform))
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            source = _as_plain_tensor(d[key]).float()
            for transform, view_key in zip(self.view_transforms, self.view_keys):
                d[view_key] = transform(source.clone())
            if self.delete_source:
                del d[key]
        return d


class TwoViewsd(MultiViewd):
    """SimCLR / PCL view transform: two views ``view_0``, ``view_1`` of :class:`RandCMRAugment`.

    Args:
        keys: source image key.
        view_keys: ``("view_0", "view_1")``.
        augment_kwargs: passed to :class:`RandCMRAugment` (reference defaults otherwise).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        view_keys: Sequence[str] = ("view_0", "view_1"),
        delete_source: bool = True,
        allow_missing_keys: bool = False,
        **augment_kwargs: Any,
    ) -> None:
        augment = RandCMRAugment(**augment_kwargs)
        super().__init__(keys, [augment] * len(view_keys), view_keys, delete_source, allow_missing_keys)


# DINO's augmentation probabilities in the reference (lower than SimCLR's: the
# crops already make the task hard).
_DINO_INTENSITY = {
    "noise_prob": 0.15,
    "blur_prob": 0.1,
    "scale_intensity_prob": 0.2,
    "shift_intensity_prob": 0.15,
    "gamma_prob": 0.15,
}


class DINOMultiCropd(MultiViewd):
    """DINO multi-crop view transform.

    Views (keys): ``global_0`` (always blurred, sigma 0.1-2.0 px),
    ``global_1`` (solarised with probability ``solarize_prob``), then
    ``local_0 .. local_{n-1}``. Each crop is a :class:`RandResizedCrop`
    (global area 0.14-1.0 at ``global_size``, local 0.05-0.14 at ``local_size``)
    followed by rotation, flips and the reference's intensity augmentation.

    Args:
        keys: source image key.
        global_size: 256 (scale down for CPU runs).
        local_size: 128.
        num_local_crops: 6.
        global_area_range, local_area_range: crop area fractions.
        solarize_prob: 0.2.
        blur_sigma: sigma range of the always-blurred global crop, (0.1, 2.0).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        global_size: int = 256,
        local_size: int = 128,
        num_local_crops: int = 6,
        global_area_range: Sequence[float] = (0.14, 1.0),
        local_area_range: Sequence[float] = (0.05, 0.14),
        solarize_prob: float = 0.2,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        delete_source: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        if num_local_crops < 0:
            raise ValueError(f"num_local_crops must be >= 0, got {num_local_crops}")
        # crop placement replaces the scale/translation of the contrastive views
        spatial = {"scale_range": (1.0, 1.0), "translate_fraction": 0.0}
        blurred = Compose(
            [
                RandResizedCrop(global_size, global_area_range),
                RandCMRAugment(**spatial, **{**_DINO_INTENSITY, "blur_prob": 1.0, "blur_sigma": blur_sigma}),
            ]
        )
        solarised = Compose(
            [
                RandResizedCrop(global_size, global_area_range),
                RandCMRAugment(**spatial, **_DINO_INTENSITY),
                RandSolarize(prob=solarize_prob, threshold=0.0),
            ]
        )
        local = Compose([RandResizedCrop(local_size, local_area_range), RandCMRAugment(**spatial, **_DINO_INTENSITY)])
        self.global_keys = ["global_0", "global_1"]
        self.local_keys = [f"local_{i}" for i in range(int(num_local_crops))]
        super().__init__(
            keys,
            [blurred, solarised] + [local] * int(num_local_crops),
            self.global_keys + self.local_keys,
            delete_source,
            allow_missing_keys,
        )
