"""Export a bundle as a self-contained folder (or zip) for the MONAI model zoo and MONAI Label.

    python tools/export.py bundles/cmr_unet_segmentation OUT [--overwrite] [--zip]

The copy holds the bundle's ``configs/``, ``docs/``, ``LICENSE`` and ``models/``
(when present) plus the shared ``cmrssl`` package vendored as
``scripts/cmrssl/``, so it runs with ``python -m monai.bundle run`` from its own
folder on a machine where ``cmrssl`` is not installed (MONAI and MONAI Label
put the bundle folder on ``sys.path``; ``scripts`` is the model zoo's name for
bundle code).

Two rewrites make that work:

- configs: ``$import cmrssl`` becomes ``$import scripts.cmrssl as cmrssl`` (so
  ``$cmrssl.x.f(...)`` expressions resolve to the vendored copy unchanged), other
  ``$import``/``$from`` of ``cmrssl...`` and ``_target_`` values get the
  ``scripts.`` prefix; other strings (descriptions) are left alone;
- the vendored package: ``from cmrssl.x import y`` becomes a relative import
  (``from ..x import y``), so the package works under any parent package name.
  A plain ``import cmrssl.x`` has no relative form; it is refused with the
  file and line so the source can be changed to a ``from`` import.

Nothing is half-written: the copy is built in a temporary sibling and renamed.
An existing OUT is refused unless ``--overwrite`` (which replaces only what the
export writes); OUT may not be the bundle, contain it, or lie inside it. An
unfinished training run in ``models/`` (``*.partial``) is left out, with a note.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import fire

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SOURCE = REPO_ROOT / "common" / "cmrssl"
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.flags import as_bool  # noqa: E402

VENDORED_PREFIX = "scripts.cmrssl"
BUNDLE_PARTS = ("configs", "docs", "models", "LICENSE", "scripts")
# Training outputs, caches and unfinished training runs (``models/model.pt.partial``, see
# cmrssl.engines.training_run) never travel with a bundle.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "eval", "runs", "mlruns", ".pytest_cache",
                                 "*.partial", ".tmp-*")

_PACKAGE_NAME = re.compile(r"(?<![\w.])cmrssl(?=[.\s)\],;]|$)")
_FROM_IMPORT = re.compile(r"^(\s*)from\s+cmrssl((?:\.\w+)*)\s+import\b", re.MULTILINE)
_PLAIN_IMPORT = re.compile(r"^\s*import\s+cmrssl\b.*$", re.MULTILINE)


def rewrite_config_expression(expression: str) -> str:
    """Rewrite one ``$...`` config string so its package references resolve from ``scripts``.

    ``$import cmrssl`` -> ``$import scripts.cmrssl as cmrssl`` binds the name
    ``cmrssl`` to the vendored package, so expressions such as
    ``$cmrssl.engines.x.f(...)`` work unchanged; ``$import cmrssl.a.b`` (which
    only loads a submodule) and ``$from cmrssl.a import b`` get the
    ``scripts.`` prefix.
    """
    body = expression[1:].strip()
    bare = re.fullmatch(r"import\s+cmrssl(\s+as\s+\w+)?", body)
    if bare:
        return f"$import {VENDORED_PREFIX} as {(bare.group(1) or ' as cmrssl').split()[-1]}"
    if re.match(r"(import|from)\s+cmrssl\b", body):
        return "$" + re.sub(r"^(import|from)\s+cmrssl\b", rf"\1 {VENDORED_PREFIX}", body)
    return expression


def rewrite_config_value(value):
    """Point package references of a parsed config at the vendored ``scripts.cmrssl`` (recursively).

    Import expressions (see :func:`rewrite_config_expression`) and ``_target_``
    values are rewritten: they are what the bundle parser imports. Other
    strings (descriptions, paths) are left alone.
    """
    if isinstance(value, dict):
        return {
            k: (_PACKAGE_NAME.sub(VENDORED_PREFIX, v) if k == "_target_" and isinstance(v, str) else rewrite_config_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [rewrite_config_value(v) for v in value]
    if isinstance(value, str) and value.startswith("$"):
        return rewrite_config_expression(value)
    return value


def relative_imports(source: str, module_path: Path, filename: str = "<module>") -> str:
    """Rewrite ``from cmrssl.a import b`` in the module at ``module_path`` (relative to the package root).

    ``module_path`` is e.g. ``engines/cine_inference.py`` (depth 1) or ``__init__.py`` (depth 0).

    Raises:
        ValueError: a plain ``import cmrssl...`` statement (named by file and line).
    """
    plain = _PLAIN_IMPORT.search(source)
    if plain:
        line = source[: plain.start()].count("\n") + 1
        raise ValueError(
            f"{filename}:{line}: '{plain.group(0).strip()}' cannot be vendored; "
            "use 'from cmrssl.x import name' so the export can make it relative"
        )
    depth = len(module_path.parts) - 1  # sub-packages between the package root and the module

    def replace(match: re.Match) -> str:
        indent, submodule = match.group(1), match.group(2)
        dots = "." * (depth + 1)
        return f"{indent}from {dots}{submodule.lstrip('.')} import"

    return _FROM_IMPORT.sub(replace, source)


def vendor_package(destination: Path, package: Path = PACKAGE_SOURCE) -> None:
    """Copy ``package`` to ``destination`` with its imports made relative."""
    shutil.copytree(package, destination, ignore=IGNORED)
    for module in sorted(destination.rglob("*.py")):
        relative = module.relative_to(destination)
        text = module.read_text()
        module.write_text(relative_imports(text, relative, filename=str(package / relative)))


def export_bundle(bundle: Path, out: Path, overwrite: bool = False, zip: bool = False) -> Path:
    """Write the self-contained copy of ``bundle`` at ``out`` (or ``out.zip``); returns the written path.

    Raises:
        FileNotFoundError: ``bundle`` has no ``configs/`` folder.
        FileExistsError: ``out`` exists and not ``overwrite``.
    """
    from cmrssl.io.atomic import atomic_file, atomic_folder

    from cmrssl.io.atomic import check_not_input

    bundle, out = Path(bundle).resolve(), Path(out).resolve()
    if not (bundle / "configs").is_dir():
        raise FileNotFoundError(f"{bundle}: not a bundle (no configs/ folder)")
    check_not_input(out, [bundle])
    if bundle in out.parents:
        raise ValueError(f"{out}: the export would be inside the bundle it copies ({bundle}); choose a folder outside it")
    for partial in sorted((bundle / "models").glob("*.partial")) if (bundle / "models").is_dir() else []:
        print(f"export: {partial.relative_to(bundle)} (an unfinished training run) is left out", file=sys.stderr)
    if zip:
        target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        with atomic_file(target, overwrite=overwrite) as tmp_zip:
            staging = tmp_zip.with_suffix(".staging")
            try:
                _write_bundle_copy(bundle, staging / bundle.name)
                with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted((staging / bundle.name).rglob("*")):
                        archive.write(path, path.relative_to(staging))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target
    with atomic_folder(out, overwrite=overwrite) as tmp:
        _write_bundle_copy(bundle, tmp, fresh=False)
    return out


def _write_bundle_copy(bundle: Path, out: Path, fresh: bool = True) -> None:
    if fresh:
        out.mkdir(parents=True)
    for part in BUNDLE_PARTS:
        source = bundle / part
        if source.is_dir():
            shutil.copytree(source, out / part, ignore=IGNORED, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, out / part)
    scripts = out / "scripts"
    scripts.mkdir(exist_ok=True)
    init = scripts / "__init__.py"
    if not init.exists():
        init.write_text('"""Bundle code: the cmrssl package vendored by tools/export.py."""\n')
    vendor_package(scripts / "cmrssl")
    for config in sorted((out / "configs").glob("*.json")):
        parsed = json.loads(config.read_text())
        config.write_text(json.dumps(rewrite_config_value(parsed), indent=4) + "\n")


def main(bundle: str, out: str, overwrite: bool = False, zip: bool = False) -> None:
    """Export BUNDLE to OUT (a folder, or OUT.zip with --zip); refuses an existing OUT unless --overwrite."""
    with tool_errors("export"):
        written = export_bundle(Path(bundle), Path(out), overwrite=as_bool(overwrite, "overwrite"), zip=zip)
    print(f"exported {Path(bundle).name} -> {written}")


if __name__ == "__main__":
    fire.Fire(main)
