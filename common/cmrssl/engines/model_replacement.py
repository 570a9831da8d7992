"""Which training run may replace the finished model it trains towards without ``--overwrite true``.

A finished ``models/model.pt`` is the user's result; a new run replaces it only when told
(``--overwrite true``, :func:`cmrssl.engines.training_run.check_training_run`), whether its
records come from a datalist file or are handed in on the command line
(``--train#dataset#data``). The one exception is a run that *continues* that model
(:func:`starts_from_checkpoint`): MONAI Label's bundle trainer trains the bundle in place,
starting from ``models/model.pt`` and writing the result there again, and cannot pass options
of ours. The rule rests on what the run starts from, not on the Python type of its records.

The training config asks ``starts_from_checkpoint(@train#handlers#0, @checkpoint)``: MONAI
Label inserts its loader at index 0. Referencing that handler builds it (and what it refers
to) during ``initialize``; the segmentation bundle's own first handler is the learning-rate
scheduler (network and optimizer, no data), so the check still comes before any data is read.
Keep a cheap handler first.
"""

from __future__ import annotations

import os
from typing import Any, Union

__all__ = ["starts_from_checkpoint"]


def starts_from_checkpoint(handler: Any, checkpoint: Union[str, os.PathLike]) -> bool:
    """True when ``handler`` is a MONAI ``CheckpointLoader`` of ``checkpoint`` itself.

    A run that starts from the finished model it trains towards continues that model, and
    replaces it when it completes: what MONAI Label's bundle trainer does (with "pretrained"
    on, its default, it puts a ``CheckpointLoader`` of ``models/model.pt`` first in
    ``train#handlers`` and trains into the same ``models/model.pt``). A training config
    passes ``@train#handlers#0`` and lets such a run replace the checkpoint without
    ``--overwrite true``; any other run (records from a datalist or handed in on the
    command line alike) must say ``--overwrite true`` to replace a finished model. The
    rule rests on what the run starts from, not on where its records came from.
    """
    from monai.handlers import CheckpointLoader

    if not isinstance(handler, CheckpointLoader) or not getattr(handler, "load_path", None):
        return False
    return os.path.realpath(str(handler.load_path)) == os.path.realpath(str(checkpoint))
