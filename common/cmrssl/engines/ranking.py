"""The ranking bundle's training method: supervised and ranking losses of one study per step.

Our reading of Luo et al. (the bundle README lists the choices): :class:`RankingMethod` (a method in
the sense of :mod:`cmrssl.engines.ssl`, run by the generic :class:`cmrssl.engines.ssl.SSLTrainer` the
config builds, fed by :class:`cmrssl.engines.rounds.AlternatingRounds`) scores

- a labelled study with the segmentation loss of its labelled frames when the network segments
  (:class:`cmrssl.networks.regression.SegmentationAreas`), else smooth-L1 on their slice areas;
- a volumes-only study with smooth-L1 on EDV/ESV through the sum of areas x slice spacing;
- an unlabelled one with the ranking terms, whose pairs :mod:`cmrssl.losses.ranking` builds. ED/ES of a
  study without known ED/ES frames are re-estimated from the current model at every step it is drawn.

Evaluation and inference live in :mod:`cmrssl.engines.study_volumes`.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cmrssl.engines.study_volumes import study_areas
from cmrssl.flags import as_bool
from cmrssl.losses.ranking import (
    AREA_SCALE_MM2,
    invariance_loss,
    mid_ventricular_slices,
    pairwise_ranking_loss,
    spatial_pairs,
    temporal_pairs,
)
from cmrssl.transforms.ranking import frame_positions, mask_outside, nested_boxes, random_similarity_grids, warp

__all__ = ["RANKING_TERMS", "RankingMethod"]

logger = logging.getLogger(__name__)

#: the ranking terms, each weighted by ``ranking_weights[name]``
RANKING_TERMS = ("temporal", "spatial", "nested", "invariance")
#: volume loss unit for volumes-only supervision (ml)
VOLUME_SCALE_ML = 10.0


def _first(x: Any) -> Any:
    """The one study of a batch of one."""
    if isinstance(x, (list, tuple)):
        return x[0]
    if isinstance(x, torch.Tensor) and x.ndim >= 1:
        return x[0]
    return x


class RankingMethod(nn.Module):
    """Supervised and ranking losses of one study per step (module docstring).

    The method interface :class:`cmrssl.engines.ssl.SSLTrainer` runs: ``prepare_batch``,
    ``compute_loss`` (also ``forward``, so DDP can wrap it) and ``backbone_state_dict``.

    Args:
        network: the slice-area network (:func:`cmrssl.networks.regression.area_network`).
        segmentation_loss: the loss of a labelled frame's logits against its label map
            (``loss(logits, label [N, 1, H, W])``, the segmentation bundle's), used when
            the network segments (has ``segment``); else labelled frames supervise their areas.
        ranking_weights: weight of each of :data:`RANKING_TERMS` (missing: 1.0).
        ranking: False switches every ranking term off (supervised-only training).
        margin_mm2: ranking margin (mm^2).
        ranking_scale_mm2: the area of one unit of the ranking losses (mm^2). None: the network's
            own: for a segmenting network the slice's field of view (the areas become fractions of
            it), so that a term's gradient on a pixel's probability is of the segmentation loss's
            size; for a regressor :data:`cmrssl.losses.ranking.AREA_SCALE_MM2` (1 cm^2). In cm^2 a
            U-Net's ranking gradients were about 50 times its Dice loss's, and under one Adam
            optimiser the supervised steps stopped learning (docs/results/ranking.md).
        mid_fraction: the mid-ventricular part of a stack, base to apex, where the temporal
            pairs are scored (the spatial pairs run from the middle slice to the apex).
        max_frames: frames of a long cine scored with gradients per ranking step (spread over
            the cycle, ED and ES always among them; the others only re-estimate ED/ES);
            0: every frame, so the temporal term orders the whole cycle.
        nested_slices: slices per ranking step that get a nested window pair and an
            intensity-augmented copy.
        invariance_on: what the intensity-augmented copy must keep: ``"area"`` (its LV area, smooth
            L1) or, for a segmenting network, ``"segmentation"`` (every pixel's class
            probabilities, mean squared difference to the un-augmented slice's, which give no gradient);
            None: ``"segmentation"`` when the network segments, else ``"area"``.
        invariance_slices: slices per ranking step given an intensity-augmented copy when
            ``invariance_on`` is ``"segmentation"``: None, the ``nested_slices`` picks; 0, every slice
            the step scores (all its frames' slices); K > 0, K of those drawn at random.
        invariance_rotate_deg, invariance_zoom: with ``"segmentation"``, the augmented copy is also
            rotated (angle drawn from +-``invariance_rotate_deg``) and zoomed (factor drawn from
            ``invariance_zoom``), and its probabilities must equal the un-augmented slice's moved the
            same way (equivariance), compared where the moved slice covers the image; 0 and (1, 1):
            intensity only.
        nested_fraction: side of a window relative to the window holding it.
        intensity_augment: callable on a ``[K, H, W]`` tensor (a MONAI Compose of
            intensity transforms) giving the augmented copies of the invariance term.
        chunk_size: slices per forward pass.
        seed: seed of the window draws.
    """

    def __init__(
        self,
        network: nn.Module,
        segmentation_loss: Optional[nn.Module] = None,
        ranking_weights: Optional[Mapping[str, float]] = None,
        ranking: bool = True,
        margin_mm2: float = 0.0,
        ranking_scale_mm2: Optional[float] = None,
        mid_fraction: Sequence[float] = (0.25, 0.75),
        max_frames: int = 0,
        nested_slices: int = 4,
        nested_fraction: Sequence[float] = (0.5, 0.9),
        invariance_on: Optional[str] = None,
        invariance_slices: Optional[int] = None,
        invariance_rotate_deg: float = 0.0,
        invariance_zoom: Sequence[float] = (1.0, 1.0),
        intensity_augment: Optional[Any] = None,
        chunk_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = set(ranking_weights or {}) - set(RANKING_TERMS)
        if unknown:
            raise ValueError(f"unknown ranking terms {sorted(unknown)}; the terms are {list(RANKING_TERMS)}")
        self.network = network
        self.segmentation_loss = segmentation_loss if hasattr(network, "segment") else None
        self.ranking = as_bool(ranking, "ranking")
        self.weights = {name: float((ranking_weights or {}).get(name, 1.0)) if self.ranking else 0.0
                        for name in RANKING_TERMS}
        self.margin_mm2 = float(margin_mm2)
        if ranking_scale_mm2 is not None and not float(ranking_scale_mm2) > 0:
            raise ValueError(f"ranking_scale_mm2 must be > 0 or None, got {ranking_scale_mm2}")
        self.ranking_scale_mm2 = None if ranking_scale_mm2 is None else float(ranking_scale_mm2)
        self.mid_fraction = (float(mid_fraction[0]), float(mid_fraction[1]))
        self.max_frames = max(int(max_frames), 2) if int(max_frames) > 0 else 0
        self.nested_slices = max(int(nested_slices), 0)
        self.nested_fraction = tuple(float(v) for v in nested_fraction)
        if invariance_on is None:
            invariance_on = "segmentation" if hasattr(network, "probabilities") else "area"
        if invariance_on not in ("area", "segmentation"):
            raise ValueError(f"invariance_on must be 'area' or 'segmentation', got {invariance_on!r}")
        if invariance_on == "segmentation" and not hasattr(network, "probabilities"):
            raise ValueError("invariance_on 'segmentation' needs a segmenting network (backbone 'unet')")
        self.invariance_on = invariance_on
        if invariance_slices is not None and int(invariance_slices) < 0:
            raise ValueError(f"invariance_slices must be None, 0 (every slice) or a count, got {invariance_slices}")
        self.invariance_slices = None if invariance_slices is None else int(invariance_slices)
        self.invariance_rotate_deg = float(invariance_rotate_deg)
        self.invariance_zoom = (float(invariance_zoom[0]), float(invariance_zoom[1]))
        if not (self.invariance_rotate_deg >= 0 and 0 < self.invariance_zoom[0] <= self.invariance_zoom[1]):
            raise ValueError(f"invariance_rotate_deg must be >= 0 and invariance_zoom a range 0 < low <= high, got "
                             f"{invariance_rotate_deg}, {list(invariance_zoom)}")
        self.intensity_augment = intensity_augment
        self.chunk_size = int(chunk_size)
        self.rng = np.random.RandomState(int(seed))
        self.temporal_skipped = 0

    # ------------------------------------------------------------------ the SSLTrainer method interface
    def prepare_batch(self, batchdata: Dict[str, Any], device=None, non_blocking: bool = False, **kwargs) -> Dict[str, Any]:
        inputs: Dict[str, Any] = {"step": batchdata.get("step", "supervised")}
        for key, value in batchdata.items():
            if key == "step":
                continue
            value = _first(value)
            if isinstance(value, torch.Tensor):
                value = value.as_tensor() if hasattr(value, "as_tensor") else value
                value = value.to(device=device, non_blocking=non_blocking) if device is not None else value
            inputs[key] = value
        return inputs

    def compute_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        if inputs["step"] == "supervised":
            return self.supervised_loss(inputs)
        if not self.ranking:
            raise RuntimeError("a ranking step reached a supervised-only method; give the rounds ranking_steps=0")
        return self.ranking_loss(inputs)

    def forward(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        return self.compute_loss(inputs)

    def backbone_state_dict(self) -> Dict[str, torch.Tensor]:
        return self.network.state_dict()

    # ------------------------------------------------------------------ losses
    def supervised_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The labelled frames' segmentation loss (a segmenting network) or smooth-L1 on their slice areas;
        else smooth-L1 on the study's EDV/ESV through the Simpson sum of its areas."""
        image, labelled = inputs["image"], inputs["labelled"].bool()
        if bool(labelled.any()) and self.segmentation_loss is not None:
            slices = image[labelled].reshape(-1, 1, *image.shape[-2:])
            target = inputs["label"][labelled].reshape(-1, 1, *image.shape[-2:]).long()
            logits = torch.cat([self.network.segment(slices[i:i + self.chunk_size])
                                for i in range(0, slices.shape[0], max(self.chunk_size, 1))])
            loss = self.segmentation_loss(logits, target)
            return {"loss": loss, "supervised_segmentation": loss.detach()}
        if bool(labelled.any()):
            areas = study_areas(self.network, image[labelled], self.chunk_size)
            target = inputs["area_mm2"][labelled]
            loss = F.smooth_l1_loss(areas / AREA_SCALE_MM2, target / AREA_SCALE_MM2)
            return {"loss": loss, "supervised_area": loss.detach()}
        edv, esv = inputs["edv_ml"], inputs["esv_ml"]
        if not (torch.isfinite(edv) and torch.isfinite(esv)):
            raise ValueError(
                f"{inputs.get('source', 'study')}: a supervised step drew a study with neither labels nor EDV/ESV")
        volumes = study_areas(self.network, image, self.chunk_size).sum(dim=1) * inputs["slice_spacing_mm"] / 1000.0
        predicted = torch.stack([volumes.max(), volumes.min()])
        loss = F.smooth_l1_loss(predicted / VOLUME_SCALE_ML, torch.stack([edv, esv]).float() / VOLUME_SCALE_ML)
        return {"loss": loss, "supervised_volume": loss.detach()}

    def _known_ed_es(self, inputs: Dict[str, Any]) -> tuple:
        """Positions of the study's known ED and ES frames, ``(-1, -1)`` when the datalist names none."""
        ed, es = int(inputs["ed_position"]), int(inputs["es_position"])
        return (ed, es) if ed >= 0 and es >= 0 and ed != es else (-1, -1)

    def ranking_scale(self, image: torch.Tensor) -> float:
        """mm^2 per ranking-loss unit for slices of ``image [..., H, W]`` (``ranking_scale_mm2``)."""
        if self.ranking_scale_mm2 is not None:
            return self.ranking_scale_mm2
        pixel_area = getattr(self.network, "pixel_area_mm2", None)
        if hasattr(self.network, "segment") and pixel_area:
            return float(pixel_area) * image.shape[-2] * image.shape[-1]
        return AREA_SCALE_MM2

    def ranking_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The weighted ranking terms of one study (module docstring); labels unused."""
        image = inputs["image"]
        num_frames, num_slices = image.shape[:2]
        scale = self.ranking_scale(image)
        terms: Dict[str, torch.Tensor] = {}
        mid = mid_ventricular_slices(num_slices, self.mid_fraction)
        if num_frames < 2:
            self.temporal_skipped += 1
        ed, es = self._known_ed_es(inputs)
        positions = list(range(num_frames))
        if 0 < self.max_frames < num_frames:
            if ed < 0:  # the current model's ED/ES over the whole cycle, then the frames scored with gradients
                with torch.no_grad():
                    volumes = study_areas(self.network, image, self.chunk_size).sum(dim=1)
                ed, es = int(torch.argmax(volumes)), int(torch.argmin(volumes))
            positions = frame_positions(num_frames, self.max_frames, must=(ed, es))
        areas = study_areas(self.network, image[positions], self.chunk_size)  # [F', Z]
        if num_frames >= 2 and ed < 0:  # every frame scored: the current model's ED/ES from these areas
            volumes = areas.detach().sum(dim=1)
            ed, es = positions[int(torch.argmax(volumes))], positions[int(torch.argmin(volumes))]
        temporal = num_frames >= 2 and ed != es and self.weights["temporal"] > 0
        zero = areas.sum() * 0.0
        if temporal:
            pairs = temporal_pairs(len(positions), positions.index(ed), positions.index(es))
            larger = torch.stack([areas[a][mid] for a, _ in pairs])
            smaller = torch.stack([areas[b][mid] for _, b in pairs])
            terms["temporal"] = pairwise_ranking_loss(larger, smaller, self.margin_mm2, scale)
        pairs = spatial_pairs(num_slices)  # from the middle slice to the apex
        if pairs and self.weights["spatial"] > 0:
            terms["spatial"] = pairwise_ranking_loss(
                areas[:, [a for a, _ in pairs]], areas[:, [b for _, b in pairs]], self.margin_mm2, scale)
        picks = [(int(self.rng.randint(len(positions))), int(mid[self.rng.randint(len(mid))]))
                 for _ in range(self.nested_slices)]
        slices = image.new_zeros((0, *image.shape[-2:]))
        if picks and (self.weights["nested"] > 0 or self.weights["invariance"] > 0):
            slices = torch.stack([image[positions[t], z] for t, z in picks])  # [K, H, W]
            full = torch.stack([areas[t, z] for t, z in picks])
            if self.weights["nested"] > 0:
                outer, inner = [], []
                for k in range(len(picks)):
                    box_outer, box_inner = nested_boxes(slices.shape[-2:], self.rng, self.nested_fraction)
                    fill = slices[k].amin()
                    outer.append(mask_outside(slices[k], box_outer, fill))
                    inner.append(mask_outside(slices[k], box_inner, fill))
                windows = self.network(torch.stack(outer + inner)[:, None]).reshape(-1)
                k = len(picks)
                terms["nested"] = pairwise_ranking_loss(
                    torch.cat([full, windows[:k]]), torch.cat([windows[:k], windows[k:]]), self.margin_mm2, scale)
            if self.weights["invariance"] > 0 and self.intensity_augment is not None and self.invariance_on == "area":
                predicted = self.network(self._intensity_augmented(slices)[:, None]).reshape(-1)
                terms["invariance"] = invariance_loss(full.detach(), predicted, scale)
        if self.weights["invariance"] > 0 and self.intensity_augment is not None and self.invariance_on == "segmentation":
            if self.invariance_slices is not None:  # else the nested picks above
                slices = image[positions].reshape(-1, *image.shape[-2:])
                if 0 < self.invariance_slices < slices.shape[0]:
                    slices = slices[torch.as_tensor(self.rng.choice(slices.shape[0], self.invariance_slices,
                                                                    replace=False), device=slices.device)]
            if slices.shape[0]:
                terms["invariance"] = self._segmentation_consistency(slices)
        loss = zero + sum(self.weights[name] * value for name, value in terms.items())
        out = {"loss": loss}
        out.update({f"ranking_{name}": value.detach() for name, value in terms.items()})
        return out

    def _intensity_augmented(self, slices: torch.Tensor) -> torch.Tensor:
        """``intensity_augment`` of ``slices [K, H, W]`` (a copy; no gradient to the originals)."""
        augmented = torch.as_tensor(self.intensity_augment(slices.detach().clone()))
        augmented = augmented.as_tensor() if hasattr(augmented, "as_tensor") else augmented
        return augmented.to(slices.device).float()

    def _segmentation_consistency(self, slices: torch.Tensor) -> torch.Tensor:
        """Mean squared difference between the class probabilities of the augmented slices and those of the
        slices themselves (no gradient through these), moved by the same rotation and zoom when drawn."""
        augmented = self._intensity_augmented(slices)[:, None]
        with torch.no_grad():
            target = self.network.probabilities(slices[:, None])
        if self.invariance_rotate_deg == 0 and self.invariance_zoom == (1.0, 1.0):
            return F.mse_loss(self.network.probabilities(augmented), target)
        grids = random_similarity_grids(slices.shape[0], slices.shape[-2:], self.rng, self.invariance_rotate_deg,
                                        self.invariance_zoom, device=slices.device)
        inside = (warp(torch.ones_like(augmented), grids) > 0.999).to(target.dtype)  # the moved slice covers it
        difference = (self.network.probabilities(warp(augmented, grids)) - warp(target, grids)) ** 2
        return (difference * inside).sum() / (inside.sum() * target.shape[1]).clamp_min(1.0)
