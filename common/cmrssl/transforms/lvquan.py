"""Transforms of LV-index regression: the scaling augmentation, and the evaluator's postprocessing.

:class:`RandZoomLVQuand`: Gessert & Schlaefer scale images by 0.8-1.2 and the targets
accordingly: lengths (dimensions, wall thicknesses) by the factor and areas by its square. Works
on 2D samples (``[C, H, W]``, indices ``[11]``) and 2D+t clips (``[C, T, H, W]``, indices
``[11, T]``; time never zoomed).

:class:`LVQuanOutputsd`: the multi-crop prediction of one sample (scaled indices and phase
probabilities, :class:`cmrssl.engines.lvquan.CornerCropInferer`) as indices in mm / mm^2 and a
systole probability.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Zoom

from cmrssl.lvquan_layout import NUM_INDICES, split_outputs

__all__ = ["scale_lvquan_targets", "RandZoomLVQuand", "LVQuanOutputsd", "PRED_INDICES_KEY", "PHASE_PROBABILITY_KEY"]

NUM_AREAS = 2  # cavity and myocardium areas lead the 11 indices (LVQuan order)
#: Keys :class:`LVQuanOutputsd` adds.
PRED_INDICES_KEY = "pred_indices"
PHASE_PROBABILITY_KEY = "pred_phase_probability"


def scale_lvquan_targets(indices, factor: float):
    """Indices ``[11]`` or ``[11, T]`` after zooming the image by ``factor``: areas x f^2, lengths x f."""
    scale = np.full(11, float(factor))
    scale[:NUM_AREAS] = float(factor) ** 2
    if isinstance(indices, torch.Tensor):
        s = torch.as_tensor(scale, dtype=indices.dtype, device=indices.device)
        return indices * (s if indices.ndim == 1 else s[:, None])
    indices = np.asarray(indices)
    return (indices * (scale if indices.ndim == 1 else scale[:, None])).astype(indices.dtype)


class RandZoomLVQuand(RandomizableTransform, MapTransform):
    """Zoom ``keys`` in-plane by one random factor in ``[min_zoom, max_zoom]`` (size kept) and scale
    ``indices_key`` with it.

    Args:
        keys: image-like keys (``[C, H, W]`` or ``[C, T, H, W]``).
        indices_key: key of the 11 index targets.
        prob: probability of zooming.
        min_zoom, max_zoom: factor range (paper: 0.8-1.2).
        mode: interpolation per key (e.g. ``["bilinear", "nearest"]`` for image and label).
    """

    def __init__(self, keys: KeysCollection, indices_key: str = "indices", prob: float = 1.0,
                 min_zoom: float = 0.8, max_zoom: float = 1.2, mode: Union[str, Sequence[str]] = "bilinear",
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.indices_key = indices_key
        self.min_zoom, self.max_zoom = float(min_zoom), float(max_zoom)
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(self.mode) != len(self.keys):
            raise ValueError(f"mode needs one entry per key ({len(self.keys)}), got {self.mode}")
        self.factor = 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.factor = float(self.R.uniform(self.min_zoom, self.max_zoom)) if self._do_transform else 1.0

    def __call__(self, data: Mapping[Hashable, object]):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, mode in self.key_iterator(d, self.mode):
            image = d[key]
            spatial = image.ndim - 1
            zoom = (1.0,) * (spatial - 2) + (self.factor, self.factor)  # time (if any) untouched
            d[key] = Zoom(zoom=zoom, mode=mode, keep_size=True, padding_mode="constant")(image)
        d[self.indices_key] = scale_lvquan_targets(d[self.indices_key], self.factor)
        return d


class LVQuanOutputsd(MapTransform):
    """Postprocessing of one decollated LVQuan prediction: indices in mm / mm^2 and the systole probability.

    Args:
        keys: the prediction key, ``[n(, T)]`` in the task's channel layout
            (:mod:`cmrssl.lvquan_layout`) with scaled indices (0-1) and phase *probabilities*
            (what :class:`cmrssl.engines.lvquan.CornerCropInferer` returns).
        task: ``"indices"``, ``"phase"`` or ``"both"``.
        index_scale: ``[11]`` training maxima (mm / mm^2) the targets were divided by.

    Adds ``pred_indices`` float64 ``[11(, T)]`` in mm / mm^2 (NaN when the task has no indices)
    and ``pred_phase_probability`` float64 ``[(T)]`` (systole; NaN when the task has no phase).
    With several keys, the last one's values are kept.
    """

    def __init__(self, keys: KeysCollection = "pred", task: str = "both", index_scale=None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.task = task
        self.index_scale = np.ones(NUM_INDICES) if index_scale is None else np.asarray(index_scale, np.float64)

    def __call__(self, data: Mapping[Hashable, object]):
        d = dict(data)
        for key in self.key_iterator(d):
            prediction = d[key]
            if isinstance(prediction, torch.Tensor):
                prediction = prediction.detach().cpu()
                prediction = prediction.as_tensor() if hasattr(prediction, "as_tensor") else prediction
                prediction = prediction.numpy()
            prediction = np.asarray(prediction, np.float64)
            parts = split_outputs(prediction[None], self.task)  # batch of one
            frames = prediction.shape[1:]  # () for 2D, (T,) for 2D+t
            if "indices" in parts:
                scale = self.index_scale.reshape((NUM_INDICES,) + (1,) * len(frames))
                d[PRED_INDICES_KEY] = parts["indices"][0] * scale
            else:
                d[PRED_INDICES_KEY] = np.full((NUM_INDICES,) + frames, np.nan)
            d[PHASE_PROBABILITY_KEY] = (parts["phase_logits"][0][1] if "phase_logits" in parts
                                        else np.full(frames, np.nan))
        return d
