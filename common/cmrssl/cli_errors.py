"""The last line a bundle user reads names the file and what is wrong.

``python -m monai.bundle run`` evaluates each ``$`` expression of a config
inside ``ConfigExpression.evaluate``, which wraps any error in
``RuntimeError: Failed to evaluate ConfigExpression: <the expression>``. The
message that names the bad file or option (ours) then sits in the middle of
two tracebacks, and the last line, which users read first, shows only the
expression. :func:`install` adds one line after the traceback with the
original error (:func:`reported_error`: the innermost error of ours, whose message
names the file, rather than a library error it was raised from), its message on
that one line; everything Python printed before stays (developers need it).

Each bundle config calls it first in ``initialize``; it changes nothing for
library users who never call it.

:func:`tool_errors` is the command-line tools' counterpart: an expected error
(an existing output, a missing or unreadable input) becomes one line
``<tool>: error: <message>`` and an exit status, without a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import TracebackType
from typing import Iterator, Optional, Tuple, Type

__all__ = ["install", "one_line", "reported_error", "root_cause", "tool_errors"]

_installed = False


def root_cause(error: BaseException) -> BaseException:
    """The innermost ``__cause__`` of ``error`` (``raise ... from ...`` chains), or ``error`` itself."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


#: this package's folder (also where tools/export.py vendors it): errors raised here are ours
_PACKAGE_DIR = Path(__file__).resolve().parent


def _raised_here(error: BaseException) -> bool:
    """Whether ``error`` was raised by code of this package (the innermost frame of its traceback)."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    return _PACKAGE_DIR in Path(frame.tb_frame.f_code.co_filename).resolve().parents


def reported_error(error: BaseException) -> BaseException:
    """The error whose message a user should read last: the innermost one of ours in the ``__cause__`` chain.

    Our messages name the file and the option; the foreign error one of them was raised ``from``
    (torch's unpickling error, a KeyError deep in a reader) does not, so the innermost error raised
    by this package wins over the chain's root; without one, the root (:func:`root_cause`).
    """
    chain, seen = [error], {id(error)}
    while chain[-1].__cause__ is not None and id(chain[-1].__cause__) not in seen:
        chain.append(chain[-1].__cause__)
        seen.add(id(chain[-1]))
    ours = [e for e in chain if _raised_here(e)]
    return ours[-1] if ours else chain[-1]


def one_line(error: BaseException) -> str:
    """``<type>: <message>`` with the message's lines joined, so that the last line printed holds all of it."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {message}"


def _hook(previous):
    def hook(kind: Type[BaseException], error: BaseException, traceback: Optional[TracebackType]) -> None:
        previous(kind, error, traceback)
        reported = reported_error(error)
        if reported is not error or "\n" in str(error):
            print(f"\nerror: {one_line(reported)}", file=sys.stderr)

    return hook


def install() -> bool:
    """Make uncaught errors end with their original message (once per process); returns True."""
    global _installed
    if not _installed:
        sys.excepthook = _hook(sys.excepthook)
        _installed = True
    return True


@contextlib.contextmanager
def tool_errors(
    tool: str,
    *,
    exists_status: int = 1,
    errors: Tuple[Type[BaseException], ...] = (FileNotFoundError, ValueError),
    overwrite_option: bool = True,
) -> Iterator[None]:
    """Turn a tool's expected errors into ``<tool>: error: <message>`` on stderr and ``SystemExit``.

    ``FileExistsError`` (an output in the way) adds "(use --overwrite)" when the tool has that
    option (``overwrite_option``) and the message does not already say so, and exits with
    ``exists_status``; ``errors`` (by default a missing input or a bad value, which includes
    :class:`cmrssl.io.errors.CineReadError`) exit with 2. Anything else propagates with its
    traceback: it is a bug, not a user's mistake.
    """
    try:
        yield
    except FileExistsError as err:
        hint = " (use --overwrite)" if overwrite_option and "--overwrite" not in str(err) else ""
        print(f"{tool}: error: {err}{hint}", file=sys.stderr)
        raise SystemExit(exists_status) from None
    except errors as err:
        print(f"{tool}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
