"""The last line a bundle user reads names the file and what is wrong.

``python -m monai.bundle run`` evaluates each ``$`` expression of a config
inside ``ConfigExpression.evaluate``, which wraps any error in
``RuntimeError: Failed to evaluate ConfigExpression: <the expression>``. The
message that names the bad file or option (ours) then sits in the middle of
two tracebacks, and the last line, which users read first, shows only the
expression. :func:`install` adds one line after the traceback with the
original error; everything Python printed before stays (developers need it).

Each bundle config calls it first in ``initialize``; it changes nothing for
library users who never call it.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Optional, Type

__all__ = ["install", "root_cause"]

_installed = False


def root_cause(error: BaseException) -> BaseException:
    """The innermost ``__cause__`` of ``error`` (``raise ... from ...`` chains), or ``error`` itself."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def _hook(previous):
    def hook(kind: Type[BaseException], error: BaseException, traceback: Optional[TracebackType]) -> None:
        previous(kind, error, traceback)
        root = root_cause(error)
        if root is not error:
            print(f"\nerror: {type(root).__name__}: {root}", file=sys.stderr)

    return hook


def install() -> bool:
    """Make uncaught errors end with their original message (once per process); returns True."""
    global _installed
    if not _installed:
        sys.excepthook = _hook(sys.excepthook)
        _installed = True
    return True
