"""Training runs that are never mistaken for finished ones, and resume after a crash.

While a bundle trains towards its checkpoint ``F`` (``models/model.pt``,
``models/mim.pt``, ...), everything it saves goes into the folder ``F.partial/``
beside it:

- ``last.pt``: the state to resume from, saved after every
  ``save_interval_epochs`` epochs: each object of ``save_dict`` (network,
  optimizer, learning-rate scheduler) and the trainer's epoch/iteration;
- ``best.pt``: the best model on the validation set so far (when validating);
- ``run.json``: ``{"status", "saved_epoch", "max_epochs", "pid", "host", ...}``. The status says
  "interrupted" or "failed: ..." only when this handler's exception callback runs, which ignite
  skips when an earlier handler (MONAI's StatsHandler) re-raises first; so a "running" run whose
  process is gone (``kill -9``, Ctrl-C, a crash) is reported as stopped, and one whose process
  still runs is never started over.

``F`` itself appears only when training completes: the best model (or the
last epoch's model when there is no validation) is renamed into place, after
any ``final_files`` that belong with it, and ``F.partial/`` is removed. A run
stopped at any point (``kill -9``, Ctrl-C, an exception) therefore leaves no
``F``: evaluation, inference and export cannot take it for a finished model,
and a new run refuses to start over it silently (:func:`check_training_run`).
``--resume true`` continues from ``last.pt``; ``--overwrite true`` discards it.

An earlier *finished* ``F`` is kept until the new run completes (a run that
fails does not cost the user their previous model).

Resumed runs restore weights, optimizer and scheduler state and the epoch
count, but not the random number generators or data order: a resumed run
is not bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from cmrssl.flags import as_bool
from cmrssl.io.atomic import atomic_file, check_can_write
from cmrssl.io.run_state import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    PARTIAL_SUFFIX,
    RUN_STATE,
    partial_dir,
    process_alive,
    read_run_state,
    unfinished_run_note,
)
from cmrssl.networks.checkpoint import load_torch_file, state_dict_differences

__all__ = [
    "PARTIAL_SUFFIX",
    "partial_dir",
    "read_run_state",
    "unfinished_run_note",
    "check_training_run",
    "is_rank0",
    "TrainingRun",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_WRAPPERS = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)


def is_rank0() -> bool:
    """True outside torch.distributed and on its rank 0 (the one process that writes files)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def check_training_run(checkpoint: PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Decide, before any work, whether a training run towards ``checkpoint`` may start.

    - ``resume``: an unfinished run with a saved ``last.pt`` must exist.
    - otherwise an unfinished run is refused unless ``overwrite`` (it would be
      discarded), and so is an existing finished ``checkpoint``.

    Returns ``checkpoint`` as a Path.

    A run whose process still runs on this machine is refused in every case.

    Raises:
        FileNotFoundError: ``resume`` without anything to resume.
        FileExistsError: an unfinished run (or one still running) or a finished checkpoint is in the way.
    """
    checkpoint = Path(checkpoint)
    overwrite, resume = as_bool(overwrite, "overwrite"), as_bool(resume, "resume")
    folder = partial_dir(checkpoint)
    state = read_run_state(checkpoint)
    if state is not None and state.get("status") == "running" and process_alive(state):
        raise FileExistsError(
            f"{checkpoint}: {unfinished_run_note(checkpoint)}; wait for it or stop it first "
            "(two runs must not write one model)"
        )
    if resume:
        if not (folder / LAST_CHECKPOINT).is_file():
            raise FileNotFoundError(
                f"{folder / LAST_CHECKPOINT}: no unfinished training run to resume"
                + (f" ({unfinished_run_note(checkpoint)})" if folder.is_dir() else "")
                + "; start a new run without --resume"
            )
        return checkpoint
    if folder.exists() and not overwrite:
        raise FileExistsError(
            f"{checkpoint}: {unfinished_run_note(checkpoint)}; continue it with --resume true, "
            "or discard it and start over with --overwrite true"
        )
    check_can_write(checkpoint, overwrite)
    return checkpoint


def _save(obj: Any, path: Path) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        torch.save(obj, tmp)


def _write_json(obj: Mapping, path: Path) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def _tensors_on_cpu(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


class TrainingRun:
    """Ignite handler: keep a training run's files in ``F.partial/`` until it completes (module docstring).

    Attach it last among the trainer's handlers, so that the learning-rate
    step and the validation of an epoch are done before the epoch is saved.

    Args:
        checkpoint: the finished model's path ``F``.
        final_model: the network whose ``state_dict()`` is the finished model (a DDP or
            DataParallel wrapper is unwrapped, so the names carry no ``module.``), or a
            callable returning the state dict (an SSL method's ``backbone_state_dict``).
        save_dict: objects restored on resume, each with ``state_dict()`` /
            ``load_state_dict()`` (network, optimizer, lr scheduler); the
            trainer's own state is added as ``"trainer"``.
        validator: the validation evaluator; its best key metric decides the
            finished model (``best.pt``). Without one, the last epoch's model is kept.
        resume: continue from ``F.partial/last.pt``.
        save_interval_epochs: epochs between resume checkpoints (>= 1).
        final_files: ``{file name: JSON-able content}`` written beside ``F``
            before ``F`` appears (e.g. an index scale inference needs).
    """

    def __init__(
        self,
        checkpoint: PathLike,
        final_model: Union[torch.nn.Module, Callable[[], Mapping[str, torch.Tensor]]],
        save_dict: Optional[Mapping[str, Any]] = None,
        validator: Optional[Engine] = None,
        resume: bool = False,
        save_interval_epochs: int = 1,
        final_files: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if isinstance(final_model, torch.nn.Module):
            module = final_model.module if isinstance(final_model, _WRAPPERS) else final_model
            final_model = module.state_dict
        if not callable(final_model):
            raise TypeError(f"final_model must be a network or a callable returning a state dict, "
                            f"got {type(final_model).__name__}")
        interval = int(save_interval_epochs)
        if interval < 1:
            raise ValueError(f"save_interval_epochs must be >= 1, got {save_interval_epochs!r}")
        self.checkpoint = Path(checkpoint)
        self.folder = partial_dir(self.checkpoint)
        self.model_state = final_model
        self.save_dict = dict(save_dict or {})
        if "trainer" in self.save_dict:
            raise ValueError("save_dict must not hold 'trainer': the trainer's state is added by TrainingRun")
        self.validator = validator
        self.resume = as_bool(resume, "resume")
        self.save_interval_epochs = interval
        self.final_files = dict(final_files or {})
        self._state: dict = {}
        self._resume_refused = False

    # ------------------------------------------------------------------ events
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        if self.validator is not None:
            # after the evaluator's own best-metric bookkeeping (registered when it was built)
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self.validation_completed)

    def started(self, engine: Engine) -> None:
        if self.resume:
            try:
                self._load(engine)
            except BaseException:
                self._resume_refused = True  # the unfinished run stays as it was, run.json included
                raise
        elif is_rank0():
            if self.folder.exists():
                shutil.rmtree(self.folder)  # discarded on --overwrite (check_training_run allowed it)
            self.folder.mkdir(parents=True)
        self._state.update(
            status="running", max_epochs=engine.state.max_epochs, final_checkpoint=self.checkpoint.name,
            started=time.strftime("%Y-%m-%d %H:%M:%S"), pid=os.getpid(), host=socket.gethostname(),
        )
        self._state.setdefault("saved_epoch", 0)
        self._write_state()

    def epoch_completed(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        if epoch % self.save_interval_epochs and epoch != engine.state.max_epochs:
            return
        if is_rank0():
            content = {name: obj.state_dict() for name, obj in self.save_dict.items()}
            content["trainer"] = dict(engine.state_dict())
            _save(content, self.folder / LAST_CHECKPOINT)
        self._state["saved_epoch"] = epoch
        self._write_state()

    def validation_completed(self, validator: Engine) -> None:
        state = validator.state
        if getattr(state, "best_metric_epoch", -1) != state.epoch:
            return
        if is_rank0():
            _save(_tensors_on_cpu(self.model_state()), self.folder / BEST_CHECKPOINT)
        self._state.update(best_metric=float(state.best_metric), best_metric_epoch=int(state.best_metric_epoch))
        self._write_state()

    def completed(self, engine: Engine) -> None:
        if not is_rank0():
            return
        for name, content in self.final_files.items():
            _write_json(content, self.checkpoint.with_name(name))
        best = self.folder / BEST_CHECKPOINT
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if self.validator is not None and best.is_file():
            os.replace(best, self.checkpoint)
            how = f"best validation model (epoch {self._state.get('best_metric_epoch')}, {self._state.get('best_metric'):.4f})"
        else:
            _save(_tensors_on_cpu(self.model_state()), self.checkpoint)
            how = f"model after epoch {engine.state.epoch}"
        shutil.rmtree(self.folder, ignore_errors=True)
        logger.info("training finished: %s saved as %s", how, self.checkpoint)

    def exception_raised(self, engine: Engine, error: BaseException) -> None:
        if self._resume_refused:
            raise error
        interrupted = isinstance(error, KeyboardInterrupt)
        self._state["status"] = "interrupted" if interrupted else f"failed: {type(error).__name__}: {error}"[:500]
        self._write_state()
        if is_rank0():
            logger.error(
                "training stopped; %s. Nothing was saved as %s. Continue with --resume true.",
                unfinished_run_note(self.checkpoint) or f"{self.folder} holds the run", self.checkpoint,
            )
        raise error  # ignite hands the exception to EXCEPTION_RAISED handlers instead of raising it

    # ------------------------------------------------------------------ helpers
    def _write_state(self) -> None:
        if is_rank0() and self.folder.is_dir():
            _write_json(self._state, self.folder / RUN_STATE)

    def _load(self, engine: Engine) -> None:
        path = self.folder / LAST_CHECKPOINT
        content = load_torch_file(path, "readable as a resume checkpoint")
        expected = set(self.save_dict) | {"trainer"}
        if not isinstance(content, dict) or set(content) != expected:
            found = sorted(content) if isinstance(content, dict) else type(content).__name__
            raise ValueError(f"{path}: resume checkpoint holds {found}, this run needs {sorted(expected)}")
        restart = "resume with the options the run was started with, or start over with --overwrite true"
        for name, obj in self.save_dict.items():
            if isinstance(obj, torch.nn.Module) and isinstance(content[name], Mapping):
                problems = state_dict_differences(obj.state_dict(), content[name])
                if problems:  # before: torch's multi-line "size mismatch for ..." without the file
                    raise ValueError(
                        f"{path}: the unfinished training run was made with a different network than this run "
                        f"builds ({name}: {'; '.join(problems)}): an option that shapes the network (such as "
                        f"--backbone or --network_def#channels) differs from the run's; {restart}"
                    )
        max_epochs = engine.state.max_epochs  # the run's own setting wins (it may extend training)
        try:
            Checkpoint.load_objects(to_load={**self.save_dict, "trainer": engine}, checkpoint=content)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:  # e.g. another optimizer's state
            raise ValueError(
                f"{path}: the unfinished training run's saved state does not fit this run "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); {restart}"
            ) from error
        if engine.state.epoch > max_epochs:
            raise ValueError(
                f"{path}: the unfinished run already trained {engine.state.epoch} epochs, more than --max_epochs "
                f"{max_epochs}; resume with at least that many epochs"
            )
        engine.state.max_epochs = max_epochs
        previous = read_run_state(self.checkpoint) or {}
        self._state.update({k: v for k, v in previous.items() if k in ("best_metric", "best_metric_epoch")})
        self._state["saved_epoch"] = int(engine.state.epoch)
        if self.validator is not None and "best_metric_epoch" in self._state:
            # the evaluator compares new scores with the best so far: give it the run's
            self.validator.state.best_metric = self._state["best_metric"]
            self.validator.state.best_metric_epoch = self._state["best_metric_epoch"]
        logger.info("resuming %s from epoch %d of %d", self.folder, engine.state.epoch, max_epochs)
