"""Ignite glue of the LVQuan bundle: batches of ``image`` + a target dict for :class:`cmrssl.losses.lvquan.LVQuanLoss`."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

__all__ = ["prepare_lvquan_batch", "TARGET_KEYS"]

TARGET_KEYS = ("indices", "phase", "label")


def prepare_lvquan_batch(batchdata: Dict, device: Optional[torch.device] = None, non_blocking: bool = False,
                         **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(image, {"indices", "phase", "label"})`` on ``device`` (MONAI ``prepare_batch`` signature)."""
    def move(x):
        x = torch.as_tensor(x)
        return x.to(device=device, non_blocking=non_blocking) if device is not None else x

    missing = [k for k in ("image",) + TARGET_KEYS if k not in batchdata]
    if missing:
        raise KeyError(f"LVQuan batch lacks {missing}; keys: {sorted(batchdata)}")
    return move(batchdata["image"]), {k: move(batchdata[k]) for k in TARGET_KEYS}
