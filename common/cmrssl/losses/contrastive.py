"""Contrastive losses for self-supervised pretraining on cine slices.

- :class:`NTXentLoss`: SimCLR's normalised temperature-scaled cross entropy
  (Chen et al. 2020), temperature 0.1 as in de Mooij et al. 2024.
- :class:`PositionalContrastiveLoss`: positional contrastive learning (PCL,
  Zeng et al. 2021): a supervised-contrastive loss whose positives are all
  pairs of slices whose relative position in their stack (slice index /
  number of slices) differs by at most ``threshold`` (0.1).

Both take the projections of two augmented views of the same ``N`` slices,
``[N, F]`` each, so a contrastive method is the same composition with a
different loss (lightly's decomposition: view transform, head, loss).

Why not ``monai.losses.ContrastiveLoss``: it computes exactly this NT-Xent
(cosine similarity, denominator over all ``k != i`` including the positive,
mean over the ``2N`` anchors; ``tests/unit/test_ssl_losses.py`` checks the two
agree), but it exponentiates similarities directly, which overflows in half
precision at temperature 0.1, and it cannot express PCL's positives. Both
losses here share one log-space implementation instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["NTXentLoss", "PositionalContrastiveLoss", "supervised_contrastive_loss"]

# Positions are ratios i / n computed in floating point: |0.4 - 0.3| is
# 0.10000000000000003 in float64, so "within 0.1" needs a tolerance far below
# the smallest real position step (1 / number of slices, >= 1 / 64).
_POSITION_TOLERANCE = 1e-6


def supervised_contrastive_loss(features: torch.Tensor, positive_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised-contrastive ("L_out", Khosla et al. 2020) loss over ``M`` embeddings.

    For anchor ``i`` with positives ``P(i)``:
    ``l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) )``,
    with ``s`` the cosine similarity; the loss is the mean over anchors that
    have at least one positive. With exactly one positive per anchor (its other
    view) this is NT-Xent.

    Args:
        features: ``[M, F]`` embeddings (not necessarily normalised).
        positive_mask: ``[M, M]`` bool, ``True`` where ``(i, k)`` is a positive pair;
            the diagonal is ignored.
        temperature: softmax temperature (> 0).

    Returns:
        scalar loss tensor.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [M, F], got shape {tuple(features.shape)}")
    num = features.shape[0]
    if positive_mask.shape != (num, num):
        raise ValueError(f"positive_mask must be [{num}, {num}], got {tuple(positive_mask.shape)}")
    # float32 even under autocast: logits up to 1/t = 10 and a log-sum-exp over M terms.
    z = F.normalize(features.float(), dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(num, dtype=torch.bool, device=features.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = positive_mask.to(device=features.device, dtype=torch.bool) & ~self_mask
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    if not bool(has_positive.any()):
        raise ValueError("no anchor has a positive pair; the contrastive loss is undefined")
    # masked_fill instead of multiplying: log_prob is -inf on the diagonal and 0 * -inf is nan.
    positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    per_anchor = -positive_log_prob[has_positive] / num_positives[has_positive]
    return per_anchor.mean()


def _check_views(view_0: torch.Tensor, view_1: torch.Tensor) -> None:
    if view_0.ndim != 2 or view_0.shape != view_1.shape:
        raise ValueError(
            f"the two views' projections must both be [N, F], got {tuple(view_0.shape)} and {tuple(view_1.shape)}"
        )


class NTXentLoss(_Loss):
    """SimCLR NT-Xent loss between the projections of two views of the same ``N`` images.

    Each of the ``2N`` projections is an anchor whose only positive is the other
    view of its image; the other ``2N - 2`` are negatives.

    Args:
        temperature: softmax temperature, 0.1 in de Mooij et al. 2024.

    Example:
        >>> loss = NTXentLoss(temperature=0.1)
        >>> loss(projection_view_0, projection_view_1)  # each [N, F]
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, view_0: torch.Tensor, view_1: torch.Tensor) -> torch.Tensor:
        """
        Args:
            view_0: ``[N, F]`` projections of the first view.
            view_1: ``[N, F]`` projections of the second view (row ``i`` is the same image).
        """
        _check_views(view_0, view_1)
        n = view_0.shape[0]
        index = torch.arange(2 * n, device=view_0.device)
        partner = (index + n) % (2 * n)
        positive_mask = index[None, :] == partner[:, None]
        return supervised_contrastive_loss(torch.cat([view_0, view_1]), positive_mask, self.temperature)


class PositionalContrastiveLoss(_Loss):
    """Positional contrastive loss (PCL, Zeng et al. 2021) for short-axis slices.

    Positives of an anchor are every other projection (either view) whose
    slice position differs by at most ``threshold``; this always includes the
    anchor's own other view. Position is ``slice index / number of slices`` of
    the slice's stack (0 at the base), so slices at the same relative level of
    different subjects and frames attract each other.

    Args:
        temperature: softmax temperature (0.1).
        threshold: largest position difference counted as positive (0.1,
            inclusive; the reference code uses a strict ``<``).

    Example:
        >>> loss = PositionalContrastiveLoss()
        >>> loss(projection_view_0, projection_view_1, slice_position)  # [N, F], [N, F], [N]
    """

    def __init__(self, temperature: float = 0.1, threshold: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a position difference in [0, 1], got {threshold}")
        self.temperature = float(temperature)
        self.threshold = float(threshold)

    def positive_mask(self, positions: torch.Tensor) -> torch.Tensor:
        """``[M, M]`` bool mask of pairs within ``threshold`` (diagonal included) for ``[M]`` positions."""
        positions = positions.reshape(-1).double()
        difference = (positions[:, None] - positions[None, :]).abs()
        return difference <= self.threshold + _POSITION_TOLERANCE

    def forward(self, view_0: torch.Tensor, view_1: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """
        Args:
            view_0: ``[N, F]`` projections of the first view.
            view_1: ``[N, F]`` projections of the second view.
            positions: ``[N]`` slice positions in ``[0, 1]`` (slice index / number of slices).
        """
        _check_views(view_0, view_1)
        positions = torch.as_tensor(positions, device=view_0.device).reshape(-1)
        if positions.numel() != view_0.shape[0]:
            raise ValueError(f"positions must have {view_0.shape[0]} values (one per slice), got {positions.numel()}")
        both_views = torch.cat([positions, positions])
        return supervised_contrastive_loss(
            torch.cat([view_0, view_1]), self.positive_mask(both_views), self.temperature
        )
