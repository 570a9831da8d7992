"""tools/export.py: a self-contained bundle copy that runs where cmrssl is not installed.

How "cmrssl is not importable" is made robust: the exported bundle runs under
the venv's interpreter with ``-S`` (no ``site`` processing, hence no ``.pth``
files: the editable install of cmrssl is an ``__editable__...pth`` entry) and
``PYTHONPATH`` set to the venv's site-packages only, from a working folder
outside the repository. The test first checks that ``import cmrssl`` fails in
exactly that environment, so a passing run proves the vendored copy was used.
"""

from __future__ import annotations

import os
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
    from monai.bundle import ConfigParser

    exported = export.export_bundle(BUNDLE, tmp_path / "zoo" / "cmr_unet_segmentation")
    assert (exported / "scripts" / "cmrssl" / "engines" / "cine_inference.py").is_file()
    # a model for the exported bundle (random weights: the test is about imports, not accuracy)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def", instantiate=True)
    (exported / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), exported / "models" / "model.pt")
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
