"""DINO self-distillation loss (Caron et al. 2021) with teacher centring.

The teacher's outputs for the global crops are centred (a running mean,
momentum 0.9, subtracted before its sharp softmax) and sharpened (temperature
0.04, warmed up linearly from 0.02); the student's outputs for every crop are
softened with temperature 0.1. The loss is the cross-entropy between teacher
and student distributions over all pairs of different crops. Centring and
sharpening together are what keep DINO from collapsing.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["DINOLoss", "linear_warmup"]


def linear_warmup(start: float, end: float, warmup_steps: int, step: int) -> float:
    """Value rising linearly from ``start`` (step 0) to ``end`` (step ``warmup_steps``), constant after.

    Used for the teacher temperature (0.02 -> 0.04 over the first epochs).
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * max(step, 0) / warmup_steps)


class DINOLoss(_Loss):
    """Cross-entropy between the centred, sharpened teacher and the student over crop pairs.

    Args:
        output_dim: number of prototypes (the DINO head's output size), 8192 by default.
        student_temperature: 0.1.
        teacher_temperature: final teacher temperature, 0.04.
        warmup_teacher_temperature: teacher temperature at epoch 0, 0.02.
        warmup_teacher_temperature_epochs: epochs of the linear warm-up (30 in the
            reference; scaled with the schedule for short runs).
        center_momentum: momentum of the running centre, 0.9.

    The current teacher temperature is :attr:`teacher_temperature`; :meth:`set_epoch`
    sets it from the warm-up schedule (the trainer calls it at every epoch start
    through :class:`cmrssl.engines.ssl.EpochSetter`).

    Example:
        >>> loss = DINOLoss(output_dim=8192)
        >>> loss(teacher_global_outputs, student_all_outputs)  # lists of [B, 8192]
    """

    def __init__(
        self,
        output_dim: int = 8192,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        warmup_teacher_temperature: float = 0.02,
        warmup_teacher_temperature_epochs: int = 30,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        for name, value in (
            ("student_temperature", student_temperature),
            ("teacher_temperature", teacher_temperature),
            ("warmup_teacher_temperature", warmup_teacher_temperature),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0 <= center_momentum < 1:
            raise ValueError(f"center_momentum must be in [0, 1), got {center_momentum}")
        self.output_dim = int(output_dim)
        self.student_temperature = float(student_temperature)
        self.final_teacher_temperature = float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup_teacher_temperature)
        self.warmup_teacher_temperature_epochs = int(warmup_teacher_temperature_epochs)
        self.center_momentum = float(center_momentum)
        self.teacher_temperature = self.warmup_teacher_temperature if warmup_teacher_temperature_epochs > 0 else (
            self.final_teacher_temperature
        )
        self.register_buffer("center", torch.zeros(1, self.output_dim))

    def set_epoch(self, epoch: int) -> None:
        """Set the teacher temperature for 0-based ``epoch`` from the linear warm-up."""
        self.teacher_temperature = linear_warmup(
            self.warmup_teacher_temperature,
            self.final_teacher_temperature,
            self.warmup_teacher_temperature_epochs,
            epoch,
        )

    def forward(self, teacher_outputs: Sequence[torch.Tensor], student_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            teacher_outputs: ``V_t`` tensors ``[B, output_dim]``, the teacher on the global crops.
            student_outputs: ``V_s >= V_t`` tensors ``[B, output_dim]``, the student on the same
                global crops first (same order), then the local crops.

        Returns:
            mean cross-entropy over pairs ``(t, s)`` with ``t != s`` (a crop is never
            compared with itself). Updates the centre from the teacher outputs.
        """
        if len(teacher_outputs) == 0 or len(student_outputs) < len(teacher_outputs):
            raise ValueError(
                f"need >= 1 teacher view and at least as many student views, got {len(teacher_outputs)} "
                f"teacher and {len(student_outputs)} student views"
            )
        teacher = torch.stack([t.float() for t in teacher_outputs])  # [V_t, B, D]
        student = torch.stack([s.float() for s in student_outputs])  # [V_s, B, D]
        if teacher.shape[-1] != self.output_dim or student.shape[-1] != self.output_dim:
            raise ValueError(
                f"outputs must have {self.output_dim} prototypes, got teacher {tuple(teacher.shape)}, "
                f"student {tuple(student.shape)}"
            )
        teacher_probs = F.softmax((teacher.detach() - self.center) / self.teacher_temperature, dim=-1)
        student_log_probs = F.log_softmax(student / self.student_temperature, dim=-1)
        # cross_entropy[t, s] = mean over the batch of -sum_d p_t log q_s
        cross_entropy = -torch.einsum("tbd,sbd->ts", teacher_probs, student_log_probs) / teacher.shape[1]
        same_crop = torch.zeros_like(cross_entropy, dtype=torch.bool)
        same_crop[:, : teacher.shape[0]] = torch.eye(teacher.shape[0], dtype=torch.bool, device=teacher.device)
        loss = cross_entropy[~same_crop].mean()
        self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """EMA of the teacher's mean output; averaged over processes under DDP so ranks agree.

        Args:
            teacher: ``[V_t, B, D]`` teacher outputs (before centring).
        """
        batch_sum = teacher.detach().float().sum(dim=(0, 1))
        count = torch.tensor(float(teacher.shape[0] * teacher.shape[1]), device=teacher.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        batch_center = (batch_sum / count).reshape(1, -1)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
