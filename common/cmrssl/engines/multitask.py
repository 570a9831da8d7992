"""Bai et al. 2019's alternating multi-task fine-tuning, as an ignite handler on MONAI's SupervisedTrainer.

SSL+MultiTask as the paper trains it: each iteration is one sub-iteration of
the pretext task on a batch of the unlabelled pool (its own data loader and
labels, e.g. the anatomical-position boxes of ``tools/position_labels.py``),
then ``beta`` (10 in the paper) sub-iterations of segmentation on labelled
batches. The segmentation sub-iterations are the trainer's own iterations;
:class:`AlternatingPretextSteps` runs one pretext step before every
``beta``-th of them, with the same network (a
:class:`cmrssl.networks.multitask.MultiTaskUNet` built with
``schedule="alternate"``) and optimizer. The ``sum`` schedule (one loss
``segmentation + beta * pretext`` on the labelled batch) needs no handler.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from cmrssl.losses.segmentation import PretextLoss
from cmrssl.networks.checkpoint import check_schedule
from cmrssl.networks.multitask import MultiTaskUNet

__all__ = ["AlternatingPretextSteps", "check_multitask_schedule"]

logger = logging.getLogger(__name__)


def check_multitask_schedule(finetune_mode: str, multitask_schedule: str, pretext_datalist: str) -> None:
    """Refuse, before any data is read, a schedule the other options cannot serve
    (the mode through :func:`cmrssl.networks.checkpoint.check_schedule`, which
    :func:`~cmrssl.networks.checkpoint.prepare_finetuning` runs again with the checkpoint).

    Raises:
        ValueError: an unknown schedule; ``alternate`` outside ``--finetune_mode multitask`` or
            without ``--pretext_datalist``; a pretext datalist with a schedule that never reads it.
    """
    schedule = check_schedule(finetune_mode, multitask_schedule)
    datalist = str(pretext_datalist or "").strip()
    if schedule == "alternate":
        if not datalist:
            raise ValueError(
                "--multitask_schedule alternate needs --pretext_datalist PATH: the unlabelled pool the pretext "
                "sub-iterations draw from (for position prediction, the datalist.json of tools/position_labels.py)"
            )
    elif datalist:
        raise ValueError(
            f"--pretext_datalist {datalist} is read only with --finetune_mode multitask --multitask_schedule alternate"
        )


class AlternatingPretextSteps:
    """One pretext optimisation step before every ``segmentation_steps``-th trainer iteration.

    Args:
        network: the trainer's network: a :class:`~cmrssl.networks.multitask.MultiTaskUNet`
            with ``schedule="alternate"``, or a DDP wrapper of one.
        optimizer: the trainer's optimizer (the pretext step updates the same weights).
        data_loader: batches of the unlabelled pool: ``image_key`` ``[B, 1, H, W]`` and, for a
            class-map pretext, ``label_key`` ``[B, 1, H, W]``; cycled when exhausted.
        segmentation_steps: beta, segmentation sub-iterations per pretext sub-iteration (>= 1).
        loss_function: the pretext loss, :class:`cmrssl.losses.segmentation.PretextLoss` by default.
        image_key, label_key: batch keys.
        device: where batches go (the trainer's device).

    Attributes:
        num_steps: pretext sub-iterations run so far (also ``engine.state.pretext_steps``).
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader,
        segmentation_steps: int = 10,
        loss_function: Optional[nn.Module] = None,
        image_key: str = "image",
        label_key: str = "position_label",
        device: Optional[torch.device] = None,
    ) -> None:
        module = getattr(network, "module", network)
        if not isinstance(module, MultiTaskUNet) or module.schedule != "alternate":
            raise ValueError(
                "the alternating schedule needs the multi-task network built with multitask_schedule 'alternate' "
                f"(got {type(module).__name__}{'' if not isinstance(module, MultiTaskUNet) else ' schedule ' + module.schedule})"
            )
        steps = int(segmentation_steps)
        if steps < 1 or steps != segmentation_steps:
            raise ValueError(f"segmentation_steps (beta) must be an integer >= 1, got {segmentation_steps!r}")
        if len(data_loader) == 0:
            raise ValueError("the pretext datalist holds no records: the alternating schedule has nothing to draw")
        self.network, self.module, self.optimizer = network, module, optimizer
        self.data_loader = data_loader
        self.segmentation_steps = steps
        self.loss_function = loss_function if loss_function is not None else PretextLoss()
        self.image_key, self.label_key = image_key, label_key
        self.device = device
        self.num_steps = 0
        self._loss_sum, self._epoch_steps = 0.0, 0
        self._iterator: Optional[Iterator] = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch)

    def _next_batch(self) -> dict:
        if self._iterator is None:
            self._iterator = iter(self.data_loader)
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.data_loader)
            return next(self._iterator)

    def __call__(self, engine: Engine) -> None:
        if (engine.state.iteration - 1) % self.segmentation_steps:
            return
        batch = self._next_batch()
        device = self.device if self.device is not None else getattr(engine.state, "device", None)
        image = torch.as_tensor(batch[self.image_key]).to(device)
        target = batch.get(self.label_key)
        if self.module.pretext_task == "classes":
            if target is None:
                raise KeyError(
                    f"the pretext batch has no '{self.label_key}': a class-map pretext needs the label maps of "
                    "tools/position_labels.py in its datalist"
                )
            target = torch.as_tensor(target).to(device)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        scaler = getattr(engine, "scaler", None) if getattr(engine, "amp", False) else None
        autocast = torch.autocast(image.device.type) if scaler is not None else contextlib.nullcontext()
        self.module.pretext_pass = True  # routed through the (DDP) wrapper's forward, so gradients sync
        try:
            with autocast:
                loss = self.loss_function(self.network(image), target)
        finally:
            self.module.pretext_pass = False
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_steps += 1
        self._loss_sum += float(loss.detach())
        self._epoch_steps += 1
        engine.state.pretext_steps = self.num_steps

    def _log_epoch(self, engine: Engine) -> None:
        if self._epoch_steps:
            logger.info(
                "epoch %d: %d pretext sub-iterations (1 per %d segmentation), mean pretext loss %.4f",
                engine.state.epoch, self._epoch_steps, self.segmentation_steps, self._loss_sum / self._epoch_steps,
            )
        self._loss_sum, self._epoch_steps = 0.0, 0
