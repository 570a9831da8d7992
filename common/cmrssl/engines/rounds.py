"""The ranking bundle's round schedule: supervised and ranking steps from two loaders, one study per step.

:class:`AlternatingRounds` is the trainer's data loader (give the trainer ``epoch_length``): it feeds
``supervised_steps`` labelled studies, then ``ranking_steps`` studies of the ranking pool, again and again,
each batch tagged ``"step"`` so the method (:class:`cmrssl.engines.ranking.RankingMethod`) knows which loss
to compute: iterative optimisation on one optimiser, as Luo et al. describe it.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional

__all__ = ["AlternatingRounds"]


class AlternatingRounds:
    """Endless batches: ``supervised_steps`` from ``labelled``, then ``ranking_steps`` from ``ranking``, again.

    Each batch gets ``"step"``: ``"supervised"`` or ``"ranking"``. A loader is
    restarted when exhausted (a new shuffle, and ``set_epoch`` on a distributed
    sampler). ``ranking_steps=0`` (or no ranking loader) is supervised-only
    training. Give the trainer ``epoch_length``.
    """

    def __init__(self, labelled, ranking=None, supervised_steps: int = 1, ranking_steps: int = 1) -> None:
        self.loaders = {"supervised": labelled, "ranking": ranking}
        self.steps = {"supervised": int(supervised_steps), "ranking": int(ranking_steps) if ranking is not None else 0}
        if self.steps["supervised"] < 0 or self.steps["ranking"] < 0 or not sum(self.steps.values()):
            raise ValueError(f"steps per round must be >= 0 and not all 0, got {supervised_steps}, {ranking_steps}")
        for kind, steps in self.steps.items():
            if steps and len(self.loaders[kind]) == 0:
                raise ValueError(f"the {kind} pool holds no study")
        self._iterators: Dict[str, Optional[Iterator]] = {"supervised": None, "ranking": None}
        self._restarts = {"supervised": 0, "ranking": 0}

    def _next(self, kind: str) -> dict:
        for _ in range(2):
            if self._iterators[kind] is None:
                sampler = getattr(self.loaders[kind], "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(self._restarts[kind])
                self._restarts[kind] += 1
                self._iterators[kind] = iter(self.loaders[kind])
            try:
                return next(self._iterators[kind])
            except StopIteration:
                self._iterators[kind] = None
        raise RuntimeError(f"the {kind} loader yields nothing")

    def __iter__(self):
        while True:
            for kind in ("supervised", "ranking"):
                for _ in range(self.steps[kind]):
                    batch = dict(self._next(kind))
                    batch["step"] = kind
                    yield batch
