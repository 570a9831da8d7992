"""Export a bundle as a self-contained folder (or zip) for the MONAI model zoo and MONAI Label.

    python tools/export.py bundles/cmr_unet_segmentation OUT [--overwrite] [--zip] [--cpu]
        [--override KEY=VALUE | --override "['KEY=VALUE', ...]"] [--weights_url URL] [--large_file_mb 25]

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

``--override KEY=VALUE`` sets the config id ``KEY`` (``network_def#channels``,
``pixdim_mm``, ...) in every exported config that defines it, as ``python -m monai.bundle
run --KEY VALUE`` would (VALUE is read as JSON, else kept as a string): weights trained
with overrides need the same ones in the configs that come with them. A key no config
defines is refused. ``--cpu`` overrides every id the bundle's ``configs/cpu.json`` sets (the CPU size, which
MONAI Label and the model zoo cannot merge in as an overlay), before the ``--override`` items.
When the bundle holds ``models/model.pt`` and ``configs/inference.json``,
the weights must load (strictly) into the exported inference network, and the files the
inference reads beside them (``COMPANIONS``: LVQuan's ``index_scale.json``) must be there,
or nothing is written.

The model zoo keeps files over 25 MB out of its repository: with ``--weights_url URL``
each file of ``models/`` above ``--large_file_mb`` is left out of the copy and listed in
``large_files.yml`` (``path``, ``url`` = URL/<file name>, md5 ``hash_val``), which the
zoo's CI downloads; without it such files are copied, with a note. URL must be an http(s)
(or file) URL without whitespace or characters a URL holds only percent-encoded; the file is
written with a YAML writer.

The vendored code is formatted with isort and black at the model zoo's settings
(``tools/zoo/style.cfg``; black: line length 120, no magic trailing comma) when they
are installed (the ``zoo`` extra), so the zoo's format check passes.

Nothing is half-written: the copy is built in a temporary sibling and renamed.
An existing OUT is refused unless ``--overwrite`` (which replaces only what the
export writes); OUT may not be the bundle, contain it, or lie inside it. An
unfinished training run in ``models/`` (``*.partial``) is left out, with a note.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union
from urllib.parse import quote, urlsplit


REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SOURCE = REPO_ROOT / "common" / "cmrssl"
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.bundle_configs import CPU_OVERLAY  # noqa: E402
from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.flags import as_bool, check_options  # noqa: E402

VENDORED_PREFIX = "scripts.cmrssl"
#: sub-packages of cmrssl no bundle config uses: the study runs bundles from a checkout, a bundle never runs it
NOT_VENDORED = ("study",)
ZOO_STYLE = REPO_ROOT / "tools" / "zoo" / "style.cfg"
BLACK_LINE_LENGTH = 120
#: the model zoo's limit for a file in its repository; larger ones go to large_files.yml
ZOO_FILE_LIMIT_MB = 25
#: files an inference config reads beside models/model.pt, by the function that reads them
COMPANIONS = {"read_index_scale": "index_scale.json"}
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
    """Copy ``package`` (but :data:`NOT_VENDORED`) to ``destination`` with its imports made relative."""
    def ignore(folder: str, names: List[str]) -> set:
        top = Path(folder).resolve() == package.resolve()
        return set(IGNORED(folder, names)) | ({n for n in names if n in NOT_VENDORED} if top else set())

    shutil.copytree(package, destination, ignore=ignore)
    for module in sorted(destination.rglob("*.py")):
        relative = module.relative_to(destination)
        text = module.read_text()
        module.write_text(relative_imports(text, relative, filename=str(package / relative)))


def parse_overrides(overrides: Union[None, str, Sequence[str]]) -> Dict[str, object]:
    """``["KEY=VALUE", ...]`` (or one such string) -> ``{KEY: value}``, VALUE read as JSON when it is JSON.

    Raises:
        ValueError: an item without ``=`` or with an empty KEY.
    """
    items = [overrides] if isinstance(overrides, str) else list(overrides or [])
    parsed: Dict[str, object] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--override {item!r}: expected KEY=VALUE (e.g. network_def#channels=[16,32,64,128,256])")
        try:
            parsed[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key.strip()] = text
    return parsed


def _locate(config: dict, key: str):
    """``(container, last part)`` of the id ``key`` in a parsed config, or None where it does not define it.

    An id is looked up as the config file has it: a literal top-level key (an overlay's
    ``"network_def#spatial_dims"``), else nested ``#`` parts (list items by index).
    """
    if key in config:
        return config, key
    node, parts = config, key.split("#")
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node, last
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node, int(last)
    return None


def apply_overrides(configs: Dict[str, dict], overrides: Dict[str, object]) -> Dict[str, List[str]]:
    """Set each override in every config (by file name) that defines its id; returns ``{key: [file names]}``.

    Raises:
        ValueError: an id no config defines (a typo would otherwise export the wrong network).
    """
    applied: Dict[str, List[str]] = {}
    for key, value in overrides.items():
        for name, config in sorted(configs.items()):
            found = _locate(config, key)
            if found is not None:
                container, last = found
                container[last] = value
                applied.setdefault(key, []).append(name)
        if key not in applied:
            raise ValueError(f"--override {key}: no config of the bundle defines '{key}' ({', '.join(sorted(configs))})")
    return applied


def check_weights_fit(inference_config: dict, bundle: Path, weights: Path) -> None:
    """Load ``weights`` strictly into the network ``inference_config`` builds (before the ``scripts.`` rewrite).

    Raises:
        ValueError: missing or unexpected keys, or shapes that differ (named by
            :func:`cmrssl.networks.checkpoint.load_network_checkpoint`), with the fix.
    """
    from monai.bundle import ConfigParser

    from cmrssl.networks.checkpoint import load_network_checkpoint

    parser = ConfigParser()
    parser.read_config(inference_config)  # ids resolve lazily: only network_def and what it refers to
    parser["bundle_root"] = str(bundle)
    try:
        load_network_checkpoint(parser.get_parsed_content("network_def", instantiate=True), weights)
    except ValueError as error:
        raise ValueError(
            f"{error}\nThe exported configs would not load these weights: pass the overrides they were trained with, "
            "e.g. --override 'network_def#channels=[16,32,64,128,256]'"
        ) from error


def large_files(models: Path, limit_mb: float) -> List[Path]:
    """Files of ``models/`` over ``limit_mb`` MB (10**6 bytes), sorted."""
    if not models.is_dir():
        return []
    return sorted(p for p in models.rglob("*") if p.is_file() and p.stat().st_size > limit_mb * 1e6
                  and not any(part.endswith(".partial") for part in p.relative_to(models).parts))


def check_weights_url(weights_url: str) -> str:
    """``weights_url`` when it can prefix a file name: an http(s)/file URL without a query or fragment.

    Raises:
        ValueError: naming ``--weights_url`` (see :func:`cmrssl.flags.check_url`).
    """
    check_options({"weights_url": [weights_url, "url"]})
    parts = urlsplit(weights_url)
    if parts.query or parts.fragment or weights_url.endswith(("?", "#")):
        raise ValueError(f"--weights_url is the folder the files are uploaded to (each url is URL/<file name>): "
                         f"it cannot end in a query (?...) or a fragment (#...); got {weights_url!r}")
    return weights_url


def large_files_yaml(bundle: Path, files: Sequence[Path], weights_url: str) -> str:
    """The zoo's ``large_files.yml``: one entry per file, ``url`` = ``weights_url``/<file name>, md5 hash.

    Written by a YAML writer, so no text of a path or URL can add entries or break the file.

    Raises:
        ValueError: ``weights_url`` refused by :func:`check_weights_url`.
    """
    import yaml

    weights_url = check_weights_url(weights_url)
    entries = []
    for path in files:
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        entries.append({"path": path.relative_to(bundle).as_posix(), "url": f"{weights_url.rstrip('/')}/{quote(path.name)}",
                        "hash_val": digest.hexdigest(), "hash_type": "md5"})
    return yaml.safe_dump({"large_files": entries}, sort_keys=False, default_flow_style=False, allow_unicode=False)


def format_like_the_zoo(folder: Path) -> bool:
    """isort and black at the zoo's settings over every ``*.py`` below ``folder``; False where they are not installed."""
    try:
        import black
        import isort
    except ImportError:
        return False
    settings = isort.Config(settings_file=str(ZOO_STYLE))
    mode = black.Mode(line_length=BLACK_LINE_LENGTH, magic_trailing_comma=False)
    for module in sorted(folder.rglob("*.py")):
        text = module.read_text()
        formatted = black.format_str(isort.code(text, config=settings), mode=mode)
        if formatted != text:
            module.write_text(formatted)
    return True


def export_bundle(
    bundle: Path,
    out: Path,
    overwrite: bool = False,
    zip: bool = False,
    override: Union[None, str, Sequence[str]] = None,
    weights_url: Optional[str] = None,
    large_file_mb: float = ZOO_FILE_LIMIT_MB,
    cpu: bool = False,
) -> Path:
    """Write the self-contained copy of ``bundle`` at ``out`` (or ``out.zip``); returns the written path.

    Raises:
        FileNotFoundError: ``bundle`` has no ``configs/`` folder.
        FileExistsError: ``out`` exists and not ``overwrite``.
        ValueError: ``weights_url`` is not an http(s)/file URL, or other bad input (named).
    """
    from cmrssl.io.atomic import atomic_file, atomic_folder, check_not_input

    bundle, out = Path(bundle).resolve(), Path(out).resolve()
    if not (bundle / "configs").is_dir():
        raise FileNotFoundError(f"{bundle}: not a bundle (no configs/ folder)")
    check_not_input(out, [bundle])
    check_options({"large_file_mb": [large_file_mb, "float>=0"]})
    if weights_url is not None:
        check_weights_url(weights_url)
    if bundle in out.parents:
        raise ValueError(f"{out}: the export would be inside the bundle it copies ({bundle}); choose a folder outside it")
    # everything that can refuse the export is decided before anything is written
    configs = {c.name: json.loads(c.read_text()) for c in sorted((bundle / "configs").glob("*.json"))
               if c.name != "metadata.json"}
    overrides = parse_overrides(override)
    if cpu:
        cpu_size = bundle / CPU_OVERLAY
        if not cpu_size.is_file():
            raise FileNotFoundError(f"{cpu_size}: --cpu needs the bundle's CPU size, and this bundle has none")
        overrides = {**json.loads(cpu_size.read_text()), **overrides}
    for key, names in apply_overrides(configs, overrides).items():
        print(f"export: {key} = {json.dumps(overrides[key])} in {', '.join(names)}", file=sys.stderr)
    models = bundle / "models"
    if (models / "model.pt").is_file() and "inference.json" in configs:
        text = json.dumps(configs["inference.json"])
        missing = [name for reader, name in COMPANIONS.items() if reader in text and not (models / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{models / missing[0]}: missing; configs/inference.json reads it beside model.pt "
                                    "(training writes it there: copy it with the model)")
        check_weights_fit(configs["inference.json"], bundle, models / "model.pt")
    big = large_files(models, float(large_file_mb))
    large = large_files_yaml(bundle, big, weights_url) if big and weights_url else None
    for path in big:
        size = f"{path.relative_to(bundle)} ({path.stat().st_size / 1e6:.1f} MB, over {float(large_file_mb):g} MB)"
        print(f"export: {size} is listed in large_files.yml, not copied: upload it to {weights_url}" if weights_url
              else f"export: {size} is copied; the model zoo wants it as a download: pass --weights_url", file=sys.stderr)
    for partial in sorted(models.glob("*.partial")) if models.is_dir() else []:
        print(f"export: {partial.relative_to(bundle)} (an unfinished training run) is left out", file=sys.stderr)

    def write(folder: Path, fresh: bool) -> None:
        _write_bundle_copy(bundle, folder, configs, leave_out=big if large else (), large_files_text=large, fresh=fresh)

    if zip:
        target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        with atomic_file(target, overwrite=overwrite) as tmp_zip:
            staging = tmp_zip.with_suffix(".staging")
            try:
                write(staging / bundle.name, fresh=True)
                with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted((staging / bundle.name).rglob("*")):
                        archive.write(path, path.relative_to(staging))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target
    with atomic_folder(out, overwrite=overwrite) as tmp:
        write(tmp, fresh=False)
    return out


def _write_bundle_copy(bundle: Path, out: Path, configs: Dict[str, dict], leave_out: Sequence[Path] = (),
                       large_files_text: Optional[str] = None, fresh: bool = True) -> None:
    if fresh:
        out.mkdir(parents=True)
    left_out = {Path(p).resolve() for p in leave_out}

    def ignore(folder: str, names: List[str]) -> set:
        return set(IGNORED(folder, names)) | {n for n in names if (Path(folder) / n).resolve() in left_out}

    for part in BUNDLE_PARTS:
        source = bundle / part
        if source.is_dir():
            shutil.copytree(source, out / part, ignore=ignore, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, out / part)
    if large_files_text:
        (out / "large_files.yml").write_text(large_files_text)
    scripts = out / "scripts"
    scripts.mkdir(exist_ok=True)
    init = scripts / "__init__.py"
    if not init.exists():
        init.write_text('"""Bundle code: the cmrssl package vendored by tools/export.py."""\n')
    vendor_package(scripts / "cmrssl")
    if not format_like_the_zoo(scripts):
        print("export: black/isort are not installed (pip install -e '.[zoo]'): the code is vendored as written, "
              "which runs the same but fails the model zoo's format check", file=sys.stderr)
    for config in sorted((out / "configs").glob("*.json")):
        parsed = configs.get(config.name, None)
        parsed = json.loads(config.read_text()) if parsed is None else parsed
        config.write_text(json.dumps(rewrite_config_value(parsed), indent=4) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Export BUNDLE to OUT (a folder, or OUT.zip with --zip); refuses an existing OUT unless --overwrite."""
    parser = argparse.ArgumentParser(prog="export", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("out")
    parser.add_argument("--overwrite", nargs="?", const="true", default="false",
                        help="replace what an earlier export wrote at OUT")
    parser.add_argument("--zip", nargs="?", const="true", default="false", help="write OUT.zip instead of a folder")
    # argparse, not fire: fire reads a value as Python, where the '#' of a config id starts a comment
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set the config id KEY (e.g. network_def#channels=[16,32,64,128,256]); repeatable")
    parser.add_argument("--cpu", nargs="?", const="true", default="false",
                        help="set the ids of the bundle's configs/cpu.json (the CPU size) in every config")
    parser.add_argument("--weights_url", default=None, metavar="URL",
                        help="list files of models/ over --large_file_mb in large_files.yml (URL/<name>), not copied")
    parser.add_argument("--large_file_mb", type=float, default=ZOO_FILE_LIMIT_MB)
    args = parser.parse_args(argv)
    with tool_errors("export"):
        written = export_bundle(
            Path(args.bundle), Path(args.out), overwrite=as_bool(args.overwrite, "overwrite"),
            zip=as_bool(args.zip, "zip"), override=args.override, weights_url=args.weights_url,
            large_file_mb=args.large_file_mb, cpu=as_bool(args.cpu, "cpu"),
        )
    print(f"exported {Path(args.bundle).name} -> {written}")


if __name__ == "__main__":
    main()
