"""Writing outputs safely: whole or not at all, only what the tool writes, never over an input.

- :func:`atomic_file` / :func:`atomic_folder`: the output is built under a
  temporary sibling name and renamed into place on success, so a failing
  writer leaves no partial file or folder behind.
- ``overwrite`` replaces only what the writer itself produced. An existing
  output folder is never deleted as a whole: each entry the writer made
  (``function.json``, ``frames/``, ...) replaces its namesake, and everything
  else in the folder stays. A user who points ``--out`` at a folder holding
  their own files loses none of them.
- :func:`check_not_input`: an output folder that *is* an input, or contains
  one, is refused before any work (writing results there is how inputs get
  replaced). An output folder inside an input folder is fine (``STUDY/function``).
- :func:`safe_folder_name`: a subject key from a datalist becomes a folder
  name that cannot leave the output folder (``../../x`` or ``/abs/path`` would).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from cmrssl.flags import as_bool, safe_name

__all__ = [
    "OutputOverlapsInputError",
    "atomic_file",
    "atomic_folder",
    "check_can_write",
    "check_output_dir",
    "check_not_input",
    "safe_folder_name",
    "unique_folder_name",
    "SUBJECTS_JSON",
    "write_subjects_json",
    "listed_folders",
]

PathLike = Union[str, os.PathLike]


class OutputOverlapsInputError(ValueError):
    """An output path is an input, or a folder that contains one."""


def check_not_input(output: PathLike, inputs: Iterable[Optional[PathLike]]) -> Path:
    """Refuse an ``output`` that is one of ``inputs`` or a folder containing one.

    Paths are compared after resolving symbolic links, so a link to the input
    folder is caught too. Empty or None entries of ``inputs`` are ignored.

    Raises:
        OutputOverlapsInputError: naming the output and the input it would cover.
    """
    out = Path(output).expanduser().resolve()
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = Path(item).expanduser().resolve()
        if out == source:
            raise OutputOverlapsInputError(
                f"{output}: the output is the input {item}; choose another output folder (nothing was written)"
            )
        if out in source.parents:
            raise OutputOverlapsInputError(
                f"{output}: the output folder contains the input {item}; choose a folder outside it "
                "(nothing was written)"
            )
    return Path(output)


def check_can_write(path: PathLike, overwrite: bool, inputs: Iterable[Optional[PathLike]] = ()) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``, and a ``path`` that is or holds an input.

    Returns ``path`` as a Path.

    Raises:
        OutputOverlapsInputError: see :func:`check_not_input`.
        FileExistsError: ``path`` exists and not ``overwrite``.
    """
    path = Path(path)
    check_not_input(path, inputs)
    if path.exists() and not as_bool(overwrite, "overwrite"):
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    return path


def check_output_dir(output_dir: PathLike, overwrite: bool = False, inputs: Iterable[Optional[PathLike]] = ()) -> Path:
    """Refuse an output folder that already holds files unless ``overwrite``, or that is or holds an input.

    Raises:
        OutputOverlapsInputError: ``output_dir`` is one of ``inputs`` or a folder containing one.
        FileExistsError: ``output_dir`` is a non-empty folder (or a file) and not ``overwrite``.
    """
    overwrite = as_bool(overwrite, "overwrite")
    check_not_input(output_dir, inputs)
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.is_file():
        raise FileExistsError(f"{output_dir}: output path is a file, expected a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output_dir}: output folder already holds results; pass --overwrite true to replace them"
        )
    return output_dir


def safe_folder_name(name: object) -> str:
    """``name`` as a single, harmless folder name: letters, digits, ``.``, ``_`` and ``-`` only.

    Every other run of characters (path separators included) and every
    ``..`` becomes one ``_``; dots and underscores at either end are dropped.
    So ``../../x`` becomes ``x`` and ``/data/p1`` becomes ``data_p1``: never a
    path outside the output folder, never a hidden name. An empty result
    becomes ``subject``. Callers that map several keys must still make the
    names unique (two keys may clean to one name). The rule is
    :func:`cmrssl.flags.safe_name`, which also refuses an option that becomes a
    file name (``--method_name ../../x``).
    """
    return safe_name(name) or "subject"


def unique_folder_name(name: object, taken: set) -> str:
    """:func:`safe_folder_name` of ``name``, made unique among ``taken`` (``_1``, ``_2`` appended); added to ``taken``."""
    folder = safe_folder_name(name)
    candidate, number = folder, 1
    while candidate in taken:
        candidate, number = f"{folder}_{number}", number + 1
    taken.add(candidate)
    return candidate


#: the index of a multi-study output folder: which sub-folder holds which subject and input
SUBJECTS_JSON = "subjects.json"


def write_subjects_json(folder: PathLike, entries: Iterable[dict]) -> None:
    """``folder/subjects.json``: ``[{"folder", "subject", "input"}, ...]`` (folder names are made safe, subjects kept)."""
    (Path(folder) / SUBJECTS_JSON).write_text(json.dumps(list(entries), indent=2) + "\n")


def listed_folders(folder: PathLike) -> set:
    """The sub-folder names an earlier run listed in ``folder/subjects.json`` (empty when there is none)."""
    try:
        return {str(entry["folder"]) for entry in json.loads((Path(folder) / SUBJECTS_JSON).read_text())}
    except (OSError, ValueError, TypeError, KeyError):
        return set()


def _temp_sibling(path: Path) -> Path:
    # Same folder as the target, so the final rename stays on one file system.
    # The original name is kept as a suffix because nibabel picks the format
    # from the extension (".nii.gz").
    return path.parent / f".tmp-{uuid.uuid4().hex[:12]}-{path.name}"


@contextlib.contextmanager
def atomic_file(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or ``path`` is a folder.
    """
    path = check_can_write(Path(path), overwrite)
    if path.is_dir():
        raise FileExistsError(f"{path}: is a folder; expected a file name")
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replace_entries(new: Path, folder: Path, owned: Optional[Callable[[str], bool]] = None) -> None:
    """Move every entry of ``new`` into ``folder``, replacing its namesakes and the entries
    ``owned`` claims; other entries stay."""
    entries = sorted(new.iterdir())
    names = {entry.name for entry in entries}
    stale = [p for p in sorted(folder.iterdir()) if owned is not None and p.name not in names and owned(p.name)]
    # Old versions go aside first and are deleted last: a run killed in between leaves the
    # previous results recoverable in the hidden sibling, never a folder mixing two runs.
    trash = _temp_sibling(folder)
    trash.mkdir()
    try:
        for old in stale:
            os.replace(old, trash / old.name)
        for entry in entries:
            target = folder / entry.name
            if target.exists() or target.is_symlink():
                os.replace(target, trash / entry.name)
        for entry in entries:
            os.replace(entry, folder / entry.name)
    finally:
        _remove(trash)


@contextlib.contextmanager
def atomic_folder(
    path: PathLike, *, overwrite: bool = False, owned: Optional[Callable[[str], bool]] = None
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move its content to ``path`` on success.

    A new ``path`` is the renamed temporary folder. An existing ``path`` (with
    ``overwrite=True``) keeps everything the writer did not produce: each
    entry of the temporary folder replaces the entry of the same name, the
    rest of the folder is left as it was, except the entries whose name
    ``owned`` recognises as the writer's own (a previous run's outputs that
    this run no longer writes, e.g. ``phantom_004`` of a larger cohort):
    those are removed, so stale results never pass for current ones.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or ``path`` is a file.
    """
    path = check_can_write(Path(path), overwrite)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: is a file; expected a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.is_dir():
            _replace_entries(tmp, path, owned)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
