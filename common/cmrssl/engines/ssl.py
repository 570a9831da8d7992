"""Ignite glue for self-supervised pretraining: one generic trainer, one object per method.

A method (lightly's composition of a view transform, a head and a loss) is an
``nn.Module`` implementing

- ``prepare_batch(batchdata, device, non_blocking)`` -> dict of input tensors
  (which views of the collated batch it needs, moved to the device), and
- ``compute_loss(inputs)`` (also its ``forward``, so DDP can wrap it) -> dict
  with ``"loss"`` and any other scalars worth logging,
- ``backbone_state_dict()`` -> the pretrained weights to save, under the
  backbone's own parameter names.

:class:`SSLTrainer` runs any method: its iteration is forward, backward,
optimiser step and the MONAI iteration events, nothing method specific.
Method-specific schedules are ignite handlers: :class:`TeacherEMAHandler`
(DINO's momentum teacher), :class:`EpochSetter` (e.g. DINO's teacher
temperature warm-up), :class:`FreezeParametersHandler` (DINO's frozen
prototype layer in the first epoch). The bundle's
:class:`cmrssl.engines.training_run.TrainingRun` writes ``models/<method>.pt``
(``backbone_state_dict()``) when training completes.

Methods: :class:`ContrastiveMethod` (SimCLR with NT-Xent, PCL with the
positional loss), :class:`DINOMethod`, :class:`MaskedImageModellingMethod`.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer

from cmrssl.networks.heads import SSLEncoder
from cmrssl.networks.multitask import pretext_state_dict

_DINO_LOCAL_KEYS = tuple(f"local_{i}" for i in range(6))

__all__ = [
    "SSLMethod",
    "ContrastiveMethod",
    "DINOMethod",
    "MaskedImageModellingMethod",
    "SSLTrainer",
    "TeacherEMAHandler",
    "EpochSetter",
    "FreezeParametersHandler",
    "cosine_momentum",
]

logger = logging.getLogger(__name__)


def _to_device(x: Any, device: Optional[torch.device], non_blocking: bool) -> torch.Tensor:
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.to(device=device, non_blocking=non_blocking) if device is not None else x


def _require(batchdata: Any, key: str, method: str) -> Any:
    if not isinstance(batchdata, dict) or key not in batchdata:
        found = sorted(batchdata) if isinstance(batchdata, dict) else type(batchdata).__name__
        raise KeyError(f"{method}: the batch has no '{key}' (found {found}); check the view transform's keys")
    return batchdata[key]


class SSLMethod(nn.Module):
    """Interface of a self-supervised method run by :class:`SSLTrainer` (see the module docstring)."""

    def prepare_batch(self, batchdata: Dict[str, Any], device=None, non_blocking: bool = False, **kwargs) -> Dict[str, Any]:
        raise NotImplementedError

    def compute_loss(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, inputs: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        return self.compute_loss(inputs)

    def backbone_state_dict(self) -> Dict[str, torch.Tensor]:
        raise NotImplementedError


class ContrastiveMethod(SSLMethod):
    """Two views through one :class:`SSLEncoder`, scored by a contrastive loss.

    SimCLR: ``loss = NTXentLoss``, ``position_key=None``. PCL: ``loss =
    PositionalContrastiveLoss`` and ``position_key="slice_position"`` (the loss
    then also gets the slices' positions).

    Args:
        network: backbone + pooling + projection head.
        loss: ``loss(projection_view_0, projection_view_1[, positions])``.
        view_keys: batch keys of the two views (``TwoViewsd``'s ``view_0``, ``view_1``).
        position_key: batch key of the slice positions, for positional losses.
    """

    def __init__(
        self,
        network: SSLEncoder,
        loss: nn.Module,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        position_key: Optional[str] = None,
    ) -> None:
        super().__init__()
        if len(view_keys) != 2:
            raise ValueError(f"a contrastive method takes two views, got view_keys={list(view_keys)}")
        self.network = network
        self.loss = loss
        self.view_keys = list(view_keys)
        self.position_key = position_key

    def prepare_batch(self, batchdata, device=None, non_blocking=False, **kwargs):
        name = type(self).__name__
        inputs = {key: _to_device(_require(batchdata, key, name), device, non_blocking) for key in self.view_keys}
        if self.position_key is not None:
            inputs[self.position_key] = _to_device(_require(batchdata, self.position_key, name), device, non_blocking)
        return inputs

    def compute_loss(self, inputs):
        view_0, view_1 = (inputs[key] for key in self.view_keys)
        # one forward for both views: BatchNorm sees the whole batch, as in SimCLR
        projections = self.network(torch.cat([view_0, view_1]))
        projection_0, projection_1 = projections.chunk(2)
        extra = (inputs[self.position_key],) if self.position_key is not None else ()
        return {"loss": self.loss(projection_0, projection_1, *extra)}

    def backbone_state_dict(self):
        return self.network.backbone_state_dict()


class DINOMethod(SSLMethod):
    """DINO self-distillation: a student and its momentum teacher (a frozen copy updated by EMA).

    The teacher sees the global crops, the student every crop; the loss compares
    each teacher output with the student's outputs for the other crops.

    Args:
        student: backbone + pooling + :class:`cmrssl.networks.heads.DINOHead`.
        loss: :class:`cmrssl.losses.dino.DINOLoss`.
        global_keys: batch keys of the global crops (``DINOMultiCropd.global_keys``).
        local_keys: batch keys of the local crops.
        save_teacher: save the teacher's backbone instead of the student's
            (the reference saves the student; DINO's paper evaluates the teacher).
    """

    def __init__(
        self,
        student: SSLEncoder,
        loss: nn.Module,
        global_keys: Sequence[str] = ("global_0", "global_1"),
        local_keys: Sequence[str] = _DINO_LOCAL_KEYS,
        save_teacher: bool = False,
    ) -> None:
        super().__init__()
        if len(global_keys) < 1:
            raise ValueError("DINO needs at least one global crop")
        self.student = student
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.loss = loss
        self.global_keys = list(global_keys)
        self.local_keys = list(local_keys)
        self.save_teacher = bool(save_teacher)

    def prepare_batch(self, batchdata, device=None, non_blocking=False, **kwargs):
        name = type(self).__name__
        return {
            "global": [_to_device(_require(batchdata, k, name), device, non_blocking) for k in self.global_keys],
            "local": [_to_device(_require(batchdata, k, name), device, non_blocking) for k in self.local_keys],
        }

    def compute_loss(self, inputs):
        global_crops, local_crops = inputs["global"], inputs["local"]
        with torch.no_grad():
            teacher_out = self.teacher(torch.cat(global_crops)).chunk(len(global_crops))
        # crops of one size share a forward pass
        student_out = list(self.student(torch.cat(global_crops)).chunk(len(global_crops)))
        if local_crops:
            student_out += list(self.student(torch.cat(local_crops)).chunk(len(local_crops)))
        loss = self.loss(list(teacher_out), student_out)
        return {"loss": loss, "teacher_temperature": torch.tensor(float(self.loss.teacher_temperature))}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student`` for parameters; buffers copied."""
        student = self.student.module if hasattr(self.student, "module") else self.student
        for teacher_param, student_param in zip(self.teacher.parameters(), student.parameters()):
            teacher_param.mul_(momentum).add_(student_param.detach(), alpha=1.0 - momentum)
        for teacher_buffer, student_buffer in zip(self.teacher.buffers(), student.buffers()):
            teacher_buffer.copy_(student_buffer)

    def backbone_state_dict(self):
        return (self.teacher if self.save_teacher else self.student).backbone_state_dict()


class MaskedImageModellingMethod(SSLMethod):
    """Masked image modelling: the whole U-Net reconstructs the slice from its masked version.

    Args:
        network: the shared U-Net with one output channel (``CMRUNet(out_channels=1)``).
        loss: :class:`cmrssl.losses.masked.MaskedMSELoss`.
        image_key, masked_key, mask_key: keys written by ``cmrssl.transforms.masking.RandPatchMaskd``
            (target image, masked input, ``[1, H, W]`` mask).
        saved_parts: U-Net parts saved under their names: encoder and decoder; the 1-channel
            reconstruction head is saved as ``pretext_head.*`` (the segmentation head is another task's).
    """

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        image_key: str = "image",
        masked_key: str = "image_masked",
        mask_key: str = "image_mask",
        saved_parts: Sequence[str] = ("encoder", "decoder"),
    ) -> None:
        super().__init__()
        self.network = network
        self.loss = loss
        self.image_key, self.masked_key, self.mask_key = image_key, masked_key, mask_key
        self.saved_parts = tuple(saved_parts)

    def prepare_batch(self, batchdata, device=None, non_blocking=False, **kwargs):
        name = type(self).__name__
        keys = (self.image_key, self.masked_key, self.mask_key)
        return {k: _to_device(_require(batchdata, k, name), device, non_blocking) for k in keys}

    def compute_loss(self, inputs):
        prediction = self.network(inputs[self.masked_key])
        if isinstance(prediction, (list, tuple)):  # deep supervision: the full-resolution output first
            prediction = prediction[0]
        return {"loss": self.loss(prediction, inputs[self.image_key], inputs[self.mask_key])}

    def backbone_state_dict(self):
        """Encoder and decoder, and the reconstruction head as ``pretext_head.*`` (kept by multi-task fine-tuning)."""
        return pretext_state_dict(self.network, parts=self.saved_parts)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


class SSLTrainer(Trainer):
    """Generic self-supervised trainer: ``method.prepare_batch`` -> ``network(inputs)["loss"]`` -> step.

    Args:
        device: device to train on.
        max_epochs: epochs to run.
        train_data_loader: loader of collated view batches.
        method: an :class:`SSLMethod` (gives ``prepare_batch`` and the loss).
        optimizer: optimiser over the method's trainable parameters.
        network: the module called in the iteration; the method itself by
            default, its ``DistributedDataParallel`` wrapper under DDP.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        non_blocking: asynchronous host-to-device copies.
        train_handlers: ignite/MONAI handlers (``attach(engine)``).
        amp: autocast + gradient scaling (CUDA).
        grad_clip_norm: clip the gradient norm to this value (None: no clipping).
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        to_kwargs, amp_kwargs, event_names, event_to_attr: as MONAI's ``SupervisedTrainer``.

    ``engine.state.output`` is ``[{"loss": ..., other scalars}]``, the decollated
    form MONAI handlers read with ``from_engine(["loss"], first=True)``.
    """

    def __init__(
        self,
        device: Union[str, torch.device],
        max_epochs: int,
        train_data_loader: Iterable,
        method: SSLMethod,
        optimizer: Optimizer,
        network: Optional[nn.Module] = None,
        epoch_length: Optional[int] = None,
        non_blocking: bool = False,
        train_handlers: Optional[Sequence] = None,
        amp: bool = False,
        grad_clip_norm: Optional[float] = None,
        optim_set_to_none: bool = True,
        to_kwargs: Optional[dict] = None,
        amp_kwargs: Optional[dict] = None,
        event_names: Optional[list] = None,
        event_to_attr: Optional[dict] = None,
    ) -> None:
        for name in ("prepare_batch", "compute_loss", "backbone_state_dict"):
            if not callable(getattr(method, name, None)):
                raise TypeError(f"method {type(method).__name__} has no {name}(); see cmrssl.engines.ssl.SSLMethod")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=method.prepare_batch,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=False,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.method = method
        self.network = network if network is not None else method
        self.optimizer = optimizer
        self.grad_clip_norm = grad_clip_norm
        self.optim_set_to_none = optim_set_to_none

    def _iteration(self, engine: "SSLTrainer", batchdata: Dict[str, Any]) -> List[Dict[str, torch.Tensor]]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        device_type = engine.state.device.type if isinstance(engine.state.device, torch.device) else "cpu"
        with torch.autocast(device_type, enabled=bool(engine.amp), **engine.amp_kwargs):
            outputs = engine.network(inputs)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = outputs["loss"]
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"non-finite loss {loss.item()} at iteration {engine.state.iteration}")
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if engine.grad_clip_norm is not None:
                engine.scaler.unscale_(engine.optimizer)
                nn.utils.clip_grad_norm_(engine.network.parameters(), engine.grad_clip_norm)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if engine.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(engine.network.parameters(), engine.grad_clip_norm)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        record = {Keys.LOSS: loss.detach()}
        record.update({k: v.detach() for k, v in outputs.items() if k != "loss" and isinstance(v, torch.Tensor)})
        return [record]


def cosine_momentum(base: float, final: float, step: int, total_steps: int) -> float:
    """DINO's teacher momentum: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``.

    ``base`` at step 0, ``final`` at ``total_steps``.
    """
    if total_steps <= 0:
        return float(final)
    progress = min(max(step / total_steps, 0.0), 1.0)
    return float(final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0)


class TeacherEMAHandler:
    """After every iteration, move the teacher towards the student: momentum 0.996 -> 1 on a cosine.

    Args:
        method: an object with ``update_teacher(momentum)`` (:class:`DINOMethod`).
        base_momentum: 0.996.
        final_momentum: 1.0.

    The momentum of iteration ``k`` (0-based) is
    ``cosine_momentum(base, final, k, max_epochs * epoch_length)``; the last
    value used is kept in ``engine.state.teacher_momentum``.
    """

    def __init__(self, method: Any, base_momentum: float = 0.996, final_momentum: float = 1.0) -> None:
        if not callable(getattr(method, "update_teacher", None)):
            raise TypeError(f"{type(method).__name__} has no update_teacher(momentum)")
        if not 0 <= base_momentum <= final_momentum <= 1:
            raise ValueError(
                f"need 0 <= base_momentum <= final_momentum <= 1, got {base_momentum}, {final_momentum}"
            )
        self.method = method
        self.base_momentum = float(base_momentum)
        self.final_momentum = float(final_momentum)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        total = int(engine.state.max_epochs) * int(engine.state.epoch_length or 1)
        momentum = cosine_momentum(self.base_momentum, self.final_momentum, engine.state.iteration - 1, total)
        self.method.update_teacher(momentum)
        engine.state.teacher_momentum = momentum


class EpochSetter:
    """At every epoch start call ``target.set_epoch(epoch)`` (0-based) on each target.

    E.g. :meth:`cmrssl.losses.dino.DINOLoss.set_epoch` (teacher temperature
    warm-up), or a ``DistributedSampler``.
    """

    def __init__(self, targets: Union[Any, Sequence[Any]]) -> None:
        self.targets = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        for target in self.targets:
            if not callable(getattr(target, "set_epoch", None)):
                raise TypeError(f"{type(target).__name__} has no set_epoch(epoch)")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for target in self.targets:
            target.set_epoch(engine.state.epoch - 1)


class FreezeParametersHandler:
    """Drop the gradients of ``module`` during the first ``epochs`` epochs (after backward, before the step).

    DINO freezes its prototype layer in the first epoch (``freeze_last_layer=1``):
    early prototype updates are noisy and can collapse training.
    """

    def __init__(self, module: nn.Module, epochs: int = 1) -> None:
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.module = module
        self.epochs = int(epochs)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch <= self.epochs:
            for param in self.module.parameters():
                param.grad = None
