"""tools/export.py: a self-contained bundle copy that runs where cmrssl is not installed.

How "cmrssl is not importable" is made robust: the exported bundle runs under
the venv's interpreter with ``-S`` (no ``site`` processing, hence no ``.pth``
files: the editable install of cmrssl is an ``__editable__...pth`` entry) and
``PYTHONPATH`` set to the venv's site-packages only, from a working folder
outside the repository. The test first checks that ``import cmrssl`` fails in
exactly that environment, so a passing run proves the vendored copy was used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
sys.path.insert(0, str(REPO_ROOT / "tools"))

import export  # noqa: E402  (tools/ is not a package)


def _isolated_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=sysconfig.get_paths()["purelib"], PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    return env


def _isolated_python(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=_isolated_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_config_rewrite_targets_the_vendored_package():
    rewritten = export.rewrite_config_value({
        "imports": ["$import os", "$import cmrssl", "$import cmrssl.engines.cine_inference", "$from cmrssl.io import read_cine"],
        "writer": {"_target_": "cmrssl.engines.cine_inference.CineSegmentationWriter", "output_dir": "cmrssl results"},
        "cines": "$cmrssl.engines.cine_inference.resolve_cine_inputs(@input)",
        "description": "segmentation with cmrssl.networks",
    })
    assert rewritten["imports"] == [
        "$import os", "$import scripts.cmrssl as cmrssl", "$import scripts.cmrssl.engines.cine_inference",
        "$from scripts.cmrssl.io import read_cine",
    ]
    assert rewritten["writer"]["_target_"] == "scripts.cmrssl.engines.cine_inference.CineSegmentationWriter"
    assert rewritten["writer"]["output_dir"] == "cmrssl results"
    # bound by "$import scripts.cmrssl as cmrssl": expressions stay as written
    assert rewritten["cines"] == "$cmrssl.engines.cine_inference.resolve_cine_inputs(@input)"
    assert rewritten["description"] == "segmentation with cmrssl.networks"


def test_vendored_imports_become_relative():
    source = "from cmrssl.io.atomic import atomic_folder\n    from cmrssl import LABELS\nx = 'cmrssl'\n"
    out = export.relative_imports(source, Path("engines/cine_inference.py"))
    assert out == "from ..io.atomic import atomic_folder\n    from .. import LABELS\nx = 'cmrssl'\n"
    assert export.relative_imports("from cmrssl.io import x\n", Path("__init__.py")) == "from .io import x\n"
    with pytest.raises(ValueError, match=r"networks/unet.py:2: 'import cmrssl.io'"):
        export.relative_imports("'''doc'''\nimport cmrssl.io\n", Path("networks/unet.py"), "networks/unet.py")


def test_refuses_existing_output_and_zips(tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(out)):
        export.export_bundle(BUNDLE, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    archive = export.export_bundle(BUNDLE, tmp_path / "bundle", zip=True)
    assert archive == tmp_path / "bundle.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert "cmr_unet_segmentation/configs/inference.json" in names
    assert "cmr_unet_segmentation/scripts/cmrssl/engines/cine_inference.py" in names
    assert not [n for n in names if "__pycache__" in n]


@pytest.mark.slow
def test_exported_bundle_runs_without_cmrssl_installed(tmp_path):
    from cmrssl.data.phantom import generate_subject
    from cmrssl.io import write_cine_nifti

    exported = export.export_bundle(BUNDLE, tmp_path / "zoo" / "cmr_unet_segmentation")
    assert (exported / "scripts" / "cmrssl" / "engines" / "cine_inference.py").is_file()
    assert not (exported / "scripts" / "cmrssl" / "study").exists()  # runs bundles from a checkout, not in one
    # the export carries the shipped model, which the exported inference.json runs with no option
    assert (exported / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()
    cine = tmp_path / "data" / "cine.nii.gz"
    write_cine_nifti(generate_subject(5, num_frames=4, image_size=40).sax, cine)

    probe = _isolated_python("-c", "import cmrssl", cwd=exported)
    assert probe.returncode != 0 and "No module named 'cmrssl'" in probe.stderr, "cmrssl must not be importable"
    probe = _isolated_python("-c", "import monai, torch, nibabel, scripts.cmrssl", cwd=exported)
    assert probe.returncode == 0, probe.stderr

    output_dir = tmp_path / "result"
    run = _isolated_python(
        "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--input", str(cine),
        "--output_dir", str(output_dir), cwd=exported,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert nib.load(str(output_dir / "segmentation.nii.gz")).shape == nib.load(str(cine)).shape
    assert (output_dir / "function.json").is_file()
    assert "/work/main/common" not in run.stderr and str(REPO_ROOT / "common") not in run.stderr


def _export_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "export.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def tiny_trained_bundle(tmp_path) -> Path:
    """The segmentation bundle with weights of a test-sized network (channels [4, 8, 16, 32])."""
    from cmrssl.networks.unet import CMRUNet

    bundle = tmp_path / "cmr_unet_segmentation"
    for part in ("configs", "docs"):
        shutil.copytree(BUNDLE / part, bundle / part)
    shutil.copy2(BUNDLE / "LICENSE", bundle / "LICENSE")
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    network = CMRUNet(channels=(4, 8, 16, 32), deep_supervision=True, num_deep_supervision_heads=2)
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle


def test_overrides_build_the_exported_network_the_weights_came_from(tiny_trained_bundle, tmp_path):
    refused = _export_cli(tiny_trained_bundle, tmp_path / "plain")
    assert refused.returncode == 2 and "would not load these weights" in refused.stderr, refused.stderr[-2000:]
    assert "missing" in refused.stderr or "unexpected" in refused.stderr or "shape" in refused.stderr
    assert not (tmp_path / "plain").exists()
    typo = _export_cli(tiny_trained_bundle, tmp_path / "typo", "--override", "network_def#chanels=[4,8,16,32]")
    assert typo.returncode == 2 and "no config of the bundle defines 'network_def#chanels'" in typo.stderr
    done = _export_cli(tiny_trained_bundle, tmp_path / "fits", "--override", "network_def#channels=[4,8,16,32]",
                       "--override", "pixdim_mm=[2.0,2.0]")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("inference.json", "train.json"):
        config = json.loads((tmp_path / "fits" / "configs" / name).read_text())
        assert config["network_def"]["channels"] == [4, 8, 16, 32] and config["pixdim_mm"] == [2.0, 2.0], name
    assert "network_def" not in json.loads((tmp_path / "fits" / "configs" / "evaluate.json").read_text())
    source = json.loads((tiny_trained_bundle / "configs" / "inference.json").read_text())
    assert source["network_def"]["channels"] == [16, 32, 64, 128, 256]  # the input is never changed


def test_cpu_and_overrides_size_the_exported_configs_for_monai_label(tiny_trained_bundle, tmp_path):
    """MONAI Label and the zoo load ``train.json`` / ``inference.json`` alone: ``--cpu`` writes ``configs/cpu.json``
    into them, and the ``--override``s of ``configs/gpu.json`` make weights of that size fit (an override wins)."""
    from cmrssl.networks.unet import CMRUNet

    cpu_size = json.loads((BUNDLE / "configs" / "cpu.json").read_text())
    gpu_size = json.loads((BUNDLE / "configs" / "gpu.json").read_text())
    network = CMRUNet(channels=gpu_size["network_def#channels"], deep_supervision=True, num_deep_supervision_heads=2)
    torch.save(network.state_dict(), tiny_trained_bundle / "models" / "model.pt")
    refused = _export_cli(tiny_trained_bundle, tmp_path / "default", "--cpu")  # weights of another size
    assert refused.returncode == 2 and "would not load these weights" in refused.stderr
    size = [f"{key}={json.dumps(value)}" for key, value in gpu_size.items()]
    done = _export_cli(tiny_trained_bundle, tmp_path / "gpu", "--cpu", "--override", "num_workers=0",
                       *[arg for item in size for arg in ("--override", item)])
    assert done.returncode == 0, done.stderr[-2000:]
    train = json.loads((tmp_path / "gpu" / "configs" / "train.json").read_text())
    inference = json.loads((tmp_path / "gpu" / "configs" / "inference.json").read_text())
    for config in (train, inference):
        assert config["network_def"]["channels"] == gpu_size["network_def#channels"]
        assert config["pixdim_mm"] == gpu_size["pixdim_mm"]
    assert train["max_epochs"] == cpu_size["max_epochs"] and train["num_workers"] == 0


def test_weights_over_the_zoo_limit_are_listed_in_large_files_yml(tiny_trained_bundle, tmp_path):
    import hashlib

    import yaml

    weights = tiny_trained_bundle / "models" / "model.pt"
    common = ["--override", "network_def#channels=[4,8,16,32]", "--large_file_mb", "0.01"]
    kept = _export_cli(tiny_trained_bundle, tmp_path / "kept", *common)
    assert kept.returncode == 0 and "pass --weights_url" in kept.stderr
    assert (tmp_path / "kept" / "models" / "model.pt").read_bytes() == weights.read_bytes()
    assert not (tmp_path / "kept" / "large_files.yml").exists()
    listed = _export_cli(tiny_trained_bundle, tmp_path / "zoo", *common, "--weights_url", "https://example.org/cmr/")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert not (tmp_path / "zoo" / "models" / "model.pt").exists()
    assert yaml.safe_load((tmp_path / "zoo" / "large_files.yml").read_text()) == {"large_files": [
        {"path": "models/model.pt", "url": "https://example.org/cmr/model.pt",
         "hash_val": hashlib.md5(weights.read_bytes()).hexdigest(), "hash_type": "md5"}]}
    assert weights.is_file()  # the bundle keeps its weights


def test_exported_code_passes_the_zoo_format_checks(tmp_path):
    """black, isort and flake8 at the model zoo's settings (tools/zoo/style.cfg) over the vendored code."""
    pytest.importorskip("black")
    pytest.importorskip("isort")
    exported = export.export_bundle(BUNDLE, tmp_path / "cmr_unet_segmentation")
    style = str(REPO_ROOT / "tools" / "zoo" / "style.cfg")
    for check in (["black", "--check", "--line-length", "120", "--skip-magic-trailing-comma", "."],
                  ["isort", "--check", "--settings-path", style, "."], ["flake8", "--config", style, "."]):
        result = subprocess.run([sys.executable, "-m", *check], cwd=exported, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (check[0], result.stdout[-3000:], result.stderr[-3000:])


def test_a_trained_lvquan_export_needs_the_index_scale_beside_its_weights(tmp_path):
    """LVQuan's inference turns its outputs into mm with index_scale.json: weights without it are refused
    (before the weights are even loaded, so any file stands in for them here)."""
    source = REPO_ROOT / "bundles" / "cmr_lvquan_ensemble"
    bundle = tmp_path / "cmr_lvquan_ensemble"
    for part in ("configs", "docs"):
        shutil.copytree(source / part, bundle / part)
    shutil.copy2(source / "LICENSE", bundle / "LICENSE")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    refused = _export_cli(bundle, tmp_path / "zoo" / "refused")
    assert refused.returncode != 0
    assert f"{bundle / 'models' / 'index_scale.json'}: missing" in refused.stderr
    assert not (tmp_path / "zoo" / "refused").exists()
