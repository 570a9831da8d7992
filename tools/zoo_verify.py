"""The model zoo's bundle checks that need no network, on our exported bundles (``make test-zoo``).

    python tools/zoo_verify.py --workdir OUT [--bundles cmr_unet_segmentation,...] [--overwrite]

Each bundle of ``bundles/`` is exported with ``tools/export.py`` into ``OUT/models/<name>``
(the zoo's repository layout). Then, as the zoo's ``ci/verify_bundle.py`` does it
(Project-MONAI/model-zoo; read, not copied):

1. files: ``configs/metadata.json`` and ``LICENSE``; ``models/model.pt`` and
   ``configs/inference.json`` unless the bundle is excluded (``EXCLUDED``, with the
   reason; the zoo keeps such lists in ``ci/bundle_custom_data.py``);
2. version: ``version`` is a key of ``changelog``;
3. metadata: MONAI's bundle specification (schema ``meta_schema_20240725``), checked
   offline by ``tests/bundle/test_bundle_metadata.py`` (the zoo's CI downloads the
   schema for MONAI's ``verify_metadata``; this machine cannot), which ``make test-zoo``
   runs first;
4. sizes and weights: every exported file stays under the zoo's 25 MB unless
   ``large_files.yml`` lists it; the zoo then downloads what that lists, here fake
   weights of the inference network stand in where the export has none (as the zoo's
   ``_produce_fake_weights``);
5. ``monai.bundle verify_net_in_out network_def`` and ``ckpt_export`` (TorchScript; not
   for ``NO_TORCHSCRIPT``) with ``configs/inference.json``, run in the export's folder by a Python that cannot
   import ``cmrssl`` (``-S``, only the venv's site-packages): the vendored
   ``scripts/cmrssl`` must do;
6. code format over ``OUT/models``: ``black --check`` (line length 120, no magic
   trailing comma), ``isort --check`` and ``flake8`` with ``tools/zoo/style.cfg``;
7. a zoo user's install: a virtual environment with exactly the metadata's versions
   (``monai_version``, ``pytorch_version``, ``numpy_version`` and every
   ``required_packages_version`` entry) and nothing of ours, in which
   ``python -m monai.bundle run --config_file configs/inference.json --input CINE`` must
   write its outputs for a phantom cine (bundles with an inference config). The
   environments are kept in ``--envs`` (one per package set) and reused;
8. pytype at the zoo's settings (``[pytype]`` of ``tools/zoo/style.cfg``) on each exported
   bundle, from the zoo-shaped root (``--pythonpath .``), in an environment of its own in
   ``--envs`` (``PYTYPE``); bundles whose Python files are byte for byte those of one already
   checked are reported with it, not checked again (every export vendors the same
   ``scripts/cmrssl``).

Prints one line per check and ends with ``N passed, N failed``; exits 1 on any failure.
Writes only below OUT and ``--envs``; an existing OUT is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Callable, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = REPO_ROOT / "bundles"
STYLE = REPO_ROOT / "tools" / "zoo" / "style.cfg"
ZOO_FILE_LIMIT_MB = 25
#: the zoo's requirements-dev.txt asks for pytype>=2020.6.1, so its CI takes the newest; pinned here, as the
#: linters are in setup.cfg's zoo extra, to its newest release (2024.10.11; none has followed it)
PYTYPE = "pytype==2024.10.11"
#: bundles without models/model.pt and configs/inference.json, and why (the zoo's
#: exclude_verify_preferred_files_list, exclude_verify_shape_list, exclude_verify_torchscript_list)
EXCLUDED = {
    "cmr_ssp_pretraining": "a pretraining bundle: its output is encoder weights (models/<method>.pt) that "
                           "cmr_unet_segmentation fine-tunes; nothing to infer",
    "cmr_position_ssl": "a pretraining bundle: its models/model.pt is the pretext U-Net that "
                        "cmr_unet_segmentation fine-tunes; nothing to infer",
}
#: bundles whose network TorchScript cannot compile (the zoo's exclude_verify_torchscript_list)
NO_TORCHSCRIPT = {
    "cmr_lvquan_ensemble": "LVQuanNet picks the feature path by the backbone's class (DenseNet, ResNet, SENet) "
                           "and returns a (prediction, segmentation) pair in training: not TorchScript-able",
}

# Runs in the exported bundle's folder without cmrssl: fake weights when none were exported,
# then MONAI's own verify_net_in_out and ckpt_export, as the zoo's verify_bundle.py calls them.
_MONAI_STEPS = """
import os, sys
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out
root = os.getcwd()
sys.path.insert(0, root)
config, meta = os.path.join(root, "configs", "inference.json"), os.path.join(root, "configs", "metadata.json")
weights = os.path.join(root, "models", "model.pt")
if not os.path.exists(weights):
    parser = ConfigParser()
    parser.read_config(config)
    parser.read_meta(meta)
    parser["bundle_root"] = root
    torch.manual_seed(0)
    os.makedirs(os.path.dirname(weights), exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    print("fake weights", os.path.getsize(weights))
verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, bundle_root=root, device="cpu")
print("verify_net_in_out ok")
if sys.argv[1:] == ["--no-torchscript"]:
    sys.exit(0)
ts = os.path.join(root, "models", "verify_model.ts")
ckpt_export(net_id="network_def", filepath=ts, ckpt_file=weights, meta_file=meta, config_file=config,
            bundle_root=root)
torch.jit.load(ts)
os.remove(ts)
print("ckpt_export ok")
"""


class Checks:
    """Runs named checks, prints ``PASS``/``FAIL`` lines and counts them."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: List[str] = []

    def run(self, name: str, check: Callable[[], Optional[str]]) -> None:
        try:
            note = check()
        except Exception as error:  # a check's failure is reported, the others still run
            self.failed.append(name)
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            return
        self.passed += 1
        print(f"PASS {name}" + (f" ({note})" if note else ""), flush=True)


def _isolated(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """A Python that cannot import cmrssl: no site processing (editable installs), the venv's packages only."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "PYTHONNOUSERSITE": "1",
           "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _require(result: subprocess.CompletedProcess, what: str) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
    return (result.stdout + result.stderr).strip()


def check_files(root: Path, name: str) -> Optional[str]:
    for required in ("configs/metadata.json", "LICENSE"):
        if not (root / required).is_file():
            raise FileNotFoundError(f"{required} is missing")
    if name in EXCLUDED:
        return f"preferred files not required: {EXCLUDED[name]}"
    if not (root / "configs" / "inference.json").is_file():
        raise FileNotFoundError("configs/inference.json is missing")
    if not (root / "models" / "model.pt").is_file():
        raise FileNotFoundError("models/model.pt is missing (exported, or downloaded from large_files.yml)")
    return None


def check_version(root: Path) -> str:
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    if metadata["version"] not in metadata["changelog"]:
        raise ValueError(f"version {metadata['version']} is not in changelog")
    return metadata["version"]


def check_sizes(root: Path) -> str:
    listed = set()
    if (root / "large_files.yml").is_file():
        import yaml

        try:  # read as the zoo's CI reads it, with a YAML parser
            entries = (yaml.safe_load((root / "large_files.yml").read_text()) or {}).get("large_files") or []
            listed = {str(entry["path"]) for entry in entries}
        except (yaml.YAMLError, AttributeError, KeyError, TypeError) as error:
            raise ValueError(f"large_files.yml: not a list of large_files entries with a path ({error})") from None
    big = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
           and p.stat().st_size > ZOO_FILE_LIMIT_MB * 1e6 and str(p.relative_to(root)) not in listed]
    if big:
        raise ValueError(f"over {ZOO_FILE_LIMIT_MB} MB and not in large_files.yml: {', '.join(sorted(big))}")
    return f"{len(listed)} in large_files.yml" if listed else "every file under 25 MB"


def check_network(root: Path, torchscript: bool = True) -> str:
    args = ("-c", _MONAI_STEPS) + (() if torchscript else ("--no-torchscript",))
    lines = _require(_isolated(*args, cwd=root), "verify_net_in_out / ckpt_export").splitlines()
    return "; ".join(line for line in lines if line.endswith(" ok") or line.startswith("fake weights"))


def _phantom_cine(path: Path) -> None:
    """A small synthetic short-axis cine (NIfTI) for the inference runs."""
    from cmrssl.data.phantom import generate_subject
    from cmrssl.io import write_cine_nifti

    path.parent.mkdir(parents=True, exist_ok=True)
    write_cine_nifti(generate_subject(5, num_frames=4, image_size=64).sax, path)


def metadata_pins(root: Path) -> dict:
    """``{package: version}`` a zoo user installs for the exported bundle: MONAI, torch, numpy and the required list."""
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    return {"monai": metadata["monai_version"], "torch": metadata["pytorch_version"],
            "numpy": metadata["numpy_version"], **metadata["required_packages_version"]}


def exact_environment(pins: dict, envs: Path) -> Path:
    """The Python of a virtual environment holding exactly ``pins`` (built once per package set, then reused)."""
    key = hashlib.sha256(json.dumps(sorted(pins.items())).encode()).hexdigest()[:12]
    env = envs / key
    python, stamp = env / "bin" / "python", env / "installed.json"
    if stamp.is_file():
        return python
    shutil.rmtree(env, ignore_errors=True)
    _require(subprocess.run([sys.executable, "-m", "venv", str(env)], capture_output=True, text=True), "venv")
    install = [str(python), "-m", "pip", "install", "-q", *(f"{name}=={version}" for name, version in pins.items())]
    _require(subprocess.run(install, capture_output=True, text=True, timeout=1800), "pip install")
    stamp.write_text(json.dumps(pins, indent=1) + "\n")  # last: an interrupted install is rebuilt next time
    return python


def check_exact_inference(root: Path, envs: Path, cine: Path) -> str:
    """The exported inference on ``cine`` in an environment with exactly the metadata's packages."""
    if "read_index_scale" in (root / "configs" / "inference.json").read_text() \
            and not (root / "models" / "index_scale.json").is_file():
        # fake weights stand in for the zoo's download: the index scale written beside them in training does too
        from cmrssl.metrics.lv_indices import INDEX_NAMES

        (root / "models" / "index_scale.json").write_text(json.dumps(
            {"index_names": list(INDEX_NAMES), "index_scale": [1.0] * len(INDEX_NAMES), "fake": True}))
    pins = metadata_pins(root)
    python = exact_environment(pins, envs)
    probe = subprocess.run([str(python), "-c", "import cmrssl"], cwd=root, capture_output=True, text=True)
    if probe.returncode == 0:
        raise RuntimeError(f"{python}: cmrssl is importable, the environment is not a zoo user's")
    output_dir = root.parent.parent / "inference" / root.name
    shutil.rmtree(output_dir, ignore_errors=True)
    env = {"PATH": f"{python.parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "OMP_NUM_THREADS": "2",
           "PYTHONNOUSERSITE": "1", "PYTHONWARNINGS": "ignore"}
    _require(subprocess.run([str(python), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                             "--input", str(cine), "--output_dir", str(output_dir)],
                            cwd=root, env=env, capture_output=True, text=True, timeout=900), "monai.bundle run")
    written = sorted(p.name for p in output_dir.iterdir() if p.is_file()) if output_dir.is_dir() else []
    if not written:
        raise RuntimeError(f"monai.bundle run wrote nothing to {output_dir}")
    return f"{len(pins)} pinned packages; wrote {', '.join(written)}"


def _code_key(root: Path) -> str:
    """One hash of a bundle's Python files, names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check_pytype(models: Path, envs: Path) -> str:
    """pytype at the zoo's settings on every exported bundle's code (once per distinct code)."""
    groups: dict = {}
    for root in sorted(p for p in models.iterdir() if p.is_dir()):
        groups.setdefault(_code_key(root), []).append(root)
    python = exact_environment(dict([PYTYPE.split("==")]), envs)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # the venv's: made from this Python
    checked = []
    for roots in groups.values():
        _require(subprocess.run(
            [str(python), "-m", "pytype", "--config", str(STYLE), "-j", "2", "-o", str(models.parent / ".pytype"),
             "--python-version", version, "--pythonpath", ".", str(roots[0].relative_to(models.parent))],
            cwd=models.parent, capture_output=True, text=True, timeout=3600), "pytype")
        files = sum(1 for p in roots[0].rglob("*.py") if "__pycache__" not in p.parts)
        same = f"; the same code: {', '.join(r.name for r in roots[1:])}" if roots[1:] else ""
        checked.append(f"{roots[0].name} ({files} files{same})")
    return f"{PYTYPE}, no errors: " + "; ".join(checked)


def check_format(models: Path) -> str:
    commands = {
        "black": ["black", "--check", "--quiet", "--line-length", "120", "--skip-magic-trailing-comma", "."],
        "isort": ["isort", "--check-only", "--quiet", "--settings-path", str(STYLE), "."],
        "flake8": ["flake8", "--config", str(STYLE), "--count", "."],
    }
    for tool, command in commands.items():
        _require(subprocess.run([sys.executable, "-m", *command], cwd=models, capture_output=True, text=True,
                                timeout=600), tool)
    return f"{len(list(models.rglob('*.py')))} Python files"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo_verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="OUT: the zoo-shaped tree goes to OUT/models")
    parser.add_argument("--bundles", default="", help="comma-separated bundle names (default: every bundle)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--envs", default="", help="where the exact-version environments are kept and reused "
                        "(default: OUT/envs, removed with OUT)")
    args = parser.parse_args(argv)
    names = [n for n in args.bundles.split(",") if n] or sorted(p.name for p in BUNDLES.iterdir()
                                                               if (p / "configs").is_dir())
    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        if not args.overwrite:
            print(f"zoo_verify: error: {workdir} already exists (use --overwrite)", file=sys.stderr)
            return 2
        if REPO_ROOT == workdir or workdir in REPO_ROOT.parents or (workdir / ".git").exists():
            print(f"zoo_verify: error: {workdir} holds the repository; choose another folder", file=sys.stderr)
            return 2
        shutil.rmtree(workdir)
    models = workdir / "models"
    models.mkdir(parents=True)
    envs = Path(args.envs).resolve() if args.envs else workdir / "envs"
    cine = workdir / "phantom" / "cine.nii.gz"
    _phantom_cine(cine)
    checks = Checks()
    for name in names:
        root = models / name
        checks.run(f"{name}: export", lambda name=name, root=root: _require(subprocess.run(
            [sys.executable, str(REPO_ROOT / "tools" / "export.py"), str(BUNDLES / name), str(root)],
            capture_output=True, text=True, timeout=600), "tools/export.py").splitlines()[-1])
        if not root.is_dir():
            continue
        # sizes as exported; then the weights stand in for the zoo's download of large_files.yml
        checks.run(f"{name}: file sizes", lambda root=root: check_sizes(root))
        if name in NO_TORCHSCRIPT:
            checks.run(f"{name}: verify_net_in_out", lambda root=root: check_network(root, torchscript=False))
            print(f"SKIP {name}: ckpt_export ({NO_TORCHSCRIPT[name]})")
        elif name not in EXCLUDED:
            checks.run(f"{name}: verify_net_in_out and ckpt_export", lambda root=root: check_network(root))
        else:
            print(f"SKIP {name}: verify_net_in_out and ckpt_export ({EXCLUDED[name]})")
        checks.run(f"{name}: files", lambda root=root, name=name: check_files(root, name))
        if name not in EXCLUDED and (root / "models" / "model.pt").is_file():
            checks.run(f"{name}: inference with exactly the metadata's packages",
                       lambda root=root: check_exact_inference(root, envs, cine))
        checks.run(f"{name}: version and changelog", lambda root=root: check_version(root))
    checks.run("code format (black, isort, flake8 at the zoo's settings)", lambda: check_format(models))
    checks.run("pytype at the zoo's settings", lambda: check_pytype(models, envs))
    print(f"{checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
