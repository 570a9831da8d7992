"""Label checks: a wrong label file fails loudly, naming the file, before it trains anything.

A datalist made for another convention (ACDC's 1 RV / 3 LV not mapped, a
probability map, a mask resampled with linear interpolation) would otherwise
train silently into a wrong model.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from cmrssl.labels import LABELS

__all__ = ["CheckLabels", "CheckLabelsd"]


class CheckLabels(Transform):
    """Pass a label image through unchanged if its values are whole numbers of ``allowed``.

    Args:
        allowed: admissible values (the canonical 0 background, 1 LV cavity,
            2 LV myocardium, 3 RV cavity).
        require_foreground: refuse a label image holding only background (an
            empty mask gives no Dice and no volume).

    Raises:
        ValueError: NaN, non-integer or unexpected values, or an empty mask; the
            message names the file (``meta["filename_or_obj"]``) and the values found.
    """

    def __init__(self, allowed: Sequence[int] = tuple(LABELS.values()), require_foreground: bool = True) -> None:
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
        return label


class CheckLabelsd(MapTransform):
    """Dictionary twin of :class:`CheckLabels`."""

    def __init__(
        self,
        keys: KeysCollection = "label",
        allowed: Sequence[int] = tuple(LABELS.values()),
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
