"""Write-then-rename helpers: outputs appear whole or not at all.

A failing writer leaves no partial file or folder behind, and an existing
output is only replaced when the caller asked for ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from cmrssl.flags import as_bool

__all__ = ["atomic_file", "atomic_folder", "check_can_write"]


def check_can_write(path: Path, overwrite: bool) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; returns ``path`` as a Path."""
    path = Path(path)
    if path.exists() and not as_bool(overwrite, "overwrite"):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    return path


def _temp_sibling(path: Path) -> Path:
    # Same folder as the target, so the final rename stays on one file system.
    # The original name is kept as a suffix because nibabel picks the format
    # from the extension (".nii.gz").
    return path.parent / f".tmp-{uuid.uuid4().hex[:12]}-{path.name}"


@contextlib.contextmanager
def atomic_file(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = check_can_write(Path(path), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced nothing for {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success.

    An existing ``path`` (with ``overwrite=True``) is moved aside first and
    deleted only after the new folder is in place.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = check_can_write(Path(path), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    tmp.mkdir()
    old = None
    try:
        yield tmp
        if path.exists():
            old = _temp_sibling(path)
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
