"""Reading the state of an unfinished training run from its files (no engine involved).

A training run towards checkpoint ``F`` keeps everything it saves in ``F.partial/``
(:mod:`cmrssl.engines.training_run` writes it); ``F`` appears only when the run
completes. Everything that must recognise an unfinished run (the checkpoint
loader, the demo, the cross-validation tool) reads it through this module.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import List, Mapping, Optional, Tuple, Union

__all__ = [
    "PARTIAL_SUFFIX",
    "LAST_CHECKPOINT",
    "BEST_CHECKPOINT",
    "RUN_STATE",
    "partial_dir",
    "read_run_state",
    "process_alive",
    "unfinished_run_note",
    "restart_options",
]

PathLike = Union[str, os.PathLike]

PARTIAL_SUFFIX = ".partial"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
RUN_STATE = "run.json"


def partial_dir(checkpoint: PathLike) -> Path:
    """``F.partial``: where an unfinished run towards checkpoint ``F`` keeps its files."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + PARTIAL_SUFFIX)


def read_run_state(checkpoint: PathLike) -> Optional[dict]:
    """``run.json`` of the unfinished run towards ``checkpoint``, or None when there is none."""
    folder = partial_dir(checkpoint)
    if not folder.is_dir():
        return None
    try:
        return json.loads((folder / RUN_STATE).read_text())
    except (OSError, json.JSONDecodeError):
        return {"status": "unknown (run.json missing or unreadable)"}


def process_alive(state: Mapping) -> bool:
    """Whether the process that wrote ``state`` still runs (same host; a kill -9 leaves "running" behind)."""
    if state.get("host") != socket.gethostname() or not isinstance(state.get("pid"), int):
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _status(state: Mapping) -> str:
    status = str(state.get("status", "unknown"))
    if status == "running":
        return f"still running as process {state['pid']}" if process_alive(state) else "stopped"
    return status


def unfinished_run_note(checkpoint: PathLike) -> str:
    """One sentence about an unfinished run towards ``checkpoint`` ("" when there is none)."""
    state = read_run_state(checkpoint)
    if state is None:
        return ""
    folder = partial_dir(checkpoint)
    saved = (folder / LAST_CHECKPOINT).is_file()
    where = (
        f"last saved after epoch {state.get('saved_epoch', '?')} of {state.get('max_epochs', '?')}"
        if saved else "nothing saved yet"
    )
    return f"{folder} holds an unfinished training run ({_status(state)}, {where})"


def restart_options(checkpoint: PathLike) -> Tuple[List[str], str]:
    """How the same training command continues towards ``checkpoint``, and a note saying so.

    ``--resume true`` when an unfinished run saved an epoch (``F.partial/last.pt``), ``--overwrite true`` when
    one stopped before its first checkpoint (nothing worth keeping), nothing for a finished run or none
    started. The one rule the study, the demo and the cross-validation tool resume by; the training
    run itself does the resuming (:mod:`cmrssl.engines.training_run`).
    """
    if Path(checkpoint).exists():
        return [], ""
    unfinished = partial_dir(checkpoint)
    if (unfinished / LAST_CHECKPOINT).is_file():
        return ["--resume", "true"], "resumes the interrupted training from its last epoch"
    if unfinished.exists():
        return ["--overwrite", "true"], "starts over (interrupted before its first checkpoint)"
    return [], ""
