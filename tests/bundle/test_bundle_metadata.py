"""Every bundle carries the model zoo's mandatory metadata and files."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
MANDATORY_KEYS = ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                  "required_packages_version", "task", "description", "authors", "copyright", "network_data_format",
                  "name")
#: files beyond configs/metadata.json, per bundle
FILES = {
    "cmr_unet_segmentation": ("configs/train.json", "configs/evaluate.json", "configs/inference.json",
                              "configs/multi_gpu_train.json"),
    "cmr_ssp_pretraining": ("configs/train.json", "configs/multi_gpu_train.json"),  # + the method overlays
    "cmr_lvquan_ensemble": ("configs/train.json", "configs/train_3d.json", "configs/evaluate.json"),
    "cmr_position_ssl": ("configs/train.json", "configs/train_lax.json", "configs/multi_gpu_train.json"),
    "cmr_ranking_ssl": ("configs/train.json", "configs/evaluate.json", "configs/inference.json",
                        "configs/multi_gpu_train.json"),
}


def test_every_bundle_folder_is_checked():
    assert {p.name for p in BUNDLES.iterdir() if p.is_dir()} == set(FILES)


@pytest.mark.parametrize("bundle", sorted(FILES))
def test_metadata_has_the_mandatory_model_zoo_keys_and_files(bundle):
    metadata = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    for key in MANDATORY_KEYS:
        assert metadata.get(key), key
    assert metadata["version"] in metadata["changelog"]
    assert set(metadata["network_data_format"]) == {"inputs", "outputs"}
    for name in ("LICENSE", "docs/README.md", "configs/logging.conf", "configs/cpu.json") + FILES[bundle]:
        assert (BUNDLES / bundle / name).is_file(), name


def test_segmentation_output_channels_are_the_canonical_labels():
    metadata = json.loads((BUNDLES / "cmr_unet_segmentation" / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "left ventricle cavity", "2": "left ventricle myocardium", "3": "right ventricle cavity",
    }


# ---------------------------------------------------------------------------------------------------
# MONAI's bundle specification (docs/source/mb_specification.rst, schema meta_schema_20240725.json),
# checked offline: the zoo's CI downloads the schema, this machine cannot. Mandatory keys and their
# types, the tensor format specifiers, and that required_packages_version names every package the
# configs import beyond MONAI's own requirements (torch, numpy).
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
SPEC_KEYS = {"version": str, "monai_version": str, "pytorch_version": str, "numpy_version": str,
             "required_packages_version": dict, "task": str, "description": str, "authors": str, "copyright": str,
             "network_data_format": dict}
ZOO_KEYS = {"schema": str, "changelog": dict, "name": str}  # the model zoo's CI and listing read these too
TENSOR_KEYS = {"type": str, "format": str, "num_channels": int, "spatial_shape": list, "dtype": str,
               "value_range": list, "is_patch_data": bool, "channel_def": dict}
MONAI_REQUIREMENTS = {"monai", "torch", "numpy"}
#: components whose optional dependency (of MONAI or ignite) the bundle then needs, also when the
#: config offers them switched off by default (TensorBoard): MONAI 1.6 reads optional_packages_version
#: as a deprecated name of required_packages_version, so there is one list
NEEDS = {"KeepLargestConnectedComponentd": "scikit-image", "ProgressBar": "tqdm",
         "TensorBoardStatsHandler": "tensorboard"}
#: what every bundle needs to run at all: ``python -m monai.bundle run`` is a fire command line
RUNNER = {"fire"}
PACKAGE = BUNDLES.parent / "common" / "cmrssl"


def _metadata(bundle: str) -> dict:
    return json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())


def _version(text) -> bool:
    return isinstance(text, str) and re.fullmatch(r"\d+(\.\d+)*([a-z0-9.+-]*)", text) is not None


@pytest.mark.parametrize("bundle", sorted(FILES))
def test_metadata_follows_the_current_bundle_specification(bundle):
    metadata = _metadata(bundle)
    assert metadata["schema"] == SCHEMA_URL
    for key, kind in {**SPEC_KEYS, **ZOO_KEYS}.items():
        assert isinstance(metadata.get(key), kind) and metadata[key] != "", key
    assert "optional_packages_version" not in metadata  # MONAI would put it in place of the required list
    for key in ("version", "monai_version", "pytorch_version", "numpy_version"):
        assert _version(metadata[key]), (key, metadata[key])
    for name, version in metadata["required_packages_version"].items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and _version(version), (name, version)
    assert all(_version(v) and isinstance(text, str) for v, text in metadata["changelog"].items())
    assert isinstance(metadata.get("supported_apps", {}), dict)
    formats = metadata["network_data_format"]
    assert set(formats) >= {"inputs", "outputs"} and formats["inputs"] and formats["outputs"]
    for part in ("inputs", "outputs"):
        for name, tensor in formats[part].items():
            for key, kind in TENSOR_KEYS.items():
                value = tensor.get(key)
                assert isinstance(value, kind) and (kind is bool or not isinstance(value, bool)), (part, name, key)
            assert all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in tensor["spatial_shape"])
            assert len(tensor["value_range"]) in (0, 2)
            assert set(tensor["channel_def"]) == {str(c) for c in range(tensor["num_channels"])}, (part, name)
    assert isinstance(formats["inputs"]["image"].get("modality"), str)


def _config_modules(value) -> set:
    """Modules a parsed config imports (``$import``/``$from`` expressions, dotted ``_target_`` values)
    and the class names of its components, as ``class:Name`` (``_target_`` without the module)."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "_target_" and isinstance(item, str):
                found |= {item.rsplit(".", 1)[0]} if "." in item else set()
                found.add("class:" + item.rsplit(".", 1)[-1])
            else:
                found |= _config_modules(item)
    elif isinstance(value, list):
        for item in value:
            found |= _config_modules(item)
    elif isinstance(value, str) and value.startswith("$"):
        for match in re.finditer(r"(?:^|;)\s*(?:import|from)\s+([\w.]+)", value[1:]):
            found.add(match.group(1))
    return found


def _imports_of(module_file: Path) -> set:
    """Modules a file of the package imports, relative imports made absolute (at any depth in the file)."""
    package = ["cmrssl", *module_file.parent.relative_to(PACKAGE).parts]
    names = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            if module.split(".")[0] == "cmrssl":  # "from cmrssl.io import dicom" may name a module
                names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def _third_party_imports(modules: set) -> set:
    """Top-level third-party packages imported by ``modules``, following cmrssl modules (at any depth)."""
    seen, queue, third_party = set(), sorted(modules), set()
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top != "cmrssl":
            if top not in sys.stdlib_module_names:
                third_party.add(top)
            continue
        parts = name.split(".")[1:]
        # importing a.b.c runs a/__init__.py, a/b/__init__.py and a/b/c.py (or a/b/c/__init__.py)
        files = [PACKAGE.joinpath(*parts[:depth], "__init__.py") for depth in range(len(parts) + 1)]
        files.append(PACKAGE.joinpath(*parts).with_suffix(".py") if parts else files[0])
        for module_file in files:
            if module_file.is_file():
                queue.extend(_imports_of(module_file))
    return third_party


@pytest.mark.parametrize("bundle", sorted(FILES))
def test_required_packages_are_every_package_the_configs_import_beyond_monai(bundle):
    from importlib.metadata import packages_distributions

    modules = set()
    for config in sorted((BUNDLES / bundle / "configs").glob("*.json")):
        if config.name != "metadata.json":
            modules |= _config_modules(json.loads(config.read_text()))
    distributions = packages_distributions()
    components = {m.split(":", 1)[1] for m in modules if m.startswith("class:")}
    imported = _third_party_imports({m for m in modules if not m.startswith("class:")}) - MONAI_REQUIREMENTS
    needed = {distributions[top][0].lower() for top in imported} | {NEEDS[c] for c in components & set(NEEDS)}
    metadata = _metadata(bundle)
    assert {name.lower() for name in metadata["required_packages_version"]} == needed | RUNNER


@pytest.mark.parametrize("bundle", sorted(FILES))
def test_metadata_keys_survive_monai_parsing_unchanged(bundle):
    """What MONAI's ConfigParser reads is what the file says (no deprecated key renamed over another)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_meta(BUNDLES / bundle / "configs" / "metadata.json")
    assert parser.get("_meta_") == _metadata(bundle)
