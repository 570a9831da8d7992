"""Output layout of the LVQuan regression network (vocabulary shared by network, loss, transforms, engines).

:class:`cmrssl.networks.lvquan.LVQuanNet` returns, per sample (and per frame for
2D+t), the outputs of its ``task`` in one channel axis (axis 1 of a batch):

- ``"indices"``: the 11 LVQuan indices divided by their training maxima
  (:data:`cmrssl.metrics.lv_indices.INDEX_NAMES` order);
- ``"phase"``: 2 phase logits (0 diastole, 1 systole);
- ``"both"``: the 11 indices, then the 2 phase logits.

It lives at the root of the package (beside :mod:`cmrssl.labels`) because the
network and its loss are one layer and must not import each other.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["NUM_INDICES", "NUM_PHASES", "TASK_OUTPUTS", "check_task", "split_outputs"]

NUM_INDICES = 11
NUM_PHASES = 2
#: Output channels per task: indices first, then phase logits.
TASK_OUTPUTS: Dict[str, int] = {"indices": NUM_INDICES, "phase": NUM_PHASES, "both": NUM_INDICES + NUM_PHASES}


def check_task(task: str) -> str:
    """``task`` itself when it is one of :data:`TASK_OUTPUTS`.

    Raises:
        ValueError: an unknown task, naming the known ones.
    """
    if task not in TASK_OUTPUTS:
        raise ValueError(f"task must be one of {sorted(TASK_OUTPUTS)}, got {task!r}")
    return task


def split_outputs(prediction, task: str) -> Dict[str, object]:
    """``{"indices": [B, 11(, T)], "phase_logits": [B, 2(, T)]}`` (the keys the task has).

    ``prediction`` is a batch ``[B, n(, T)]`` (torch tensor or numpy array; the parts are
    views of it along axis 1).

    Raises:
        ValueError: an unknown task, or a channel count that is not the task's.
    """
    check_task(task)
    if prediction.shape[1] != TASK_OUTPUTS[task]:
        raise ValueError(f"task {task!r} has {TASK_OUTPUTS[task]} outputs, prediction has {prediction.shape[1]}")
    if task == "indices":
        return {"indices": prediction}
    if task == "phase":
        return {"phase_logits": prediction}
    return {"indices": prediction[:, :NUM_INDICES], "phase_logits": prediction[:, NUM_INDICES:]}
