"""The MONAI Label steps of the segmentation docs stay runnable by ``make test-monailabel``.

``tools/monailabel_check.py`` runs the command blocks of the docs' "MONAI Label, step by step"
as written; these tests need no MONAI Label: they check that the docs still hold each block the
check runs, with the names it replaces, and that the install block is what the Makefile runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("monailabel_check", REPO_ROOT / "tools" / "monailabel_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_hold_every_step_the_check_runs(check):
    blocks = check.readme_blocks()
    assert sorted(blocks) == sorted(check.BLOCKS)
    served = check.literal(blocks["serve"], {"/data/sax_frames": "/tmp/x/sax_frames", "8000": "8123"})
    assert "--studies /tmp/x/sax_frames" in served and "--port 8123" in served and "8000" not in served
    inferred = check.literal(blocks["infer"], {"FRAME_ID": "patient001_frame01", "8000": "8123"})
    assert "127.0.0.1:8123/infer/cmr_unet_segmentation?image=patient001_frame01&" in inferred
    assert "-o patient001_frame01_seg.nii.gz" in inferred


def test_the_install_step_is_what_the_makefile_installs(check):
    install = check.readme_blocks()["install"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "-r tools/monailabel-requirements.txt" in install
    assert "-r tools/monailabel-requirements.txt" in makefile.split("$(ML_STAMP):", 1)[1].split("\n\n", 1)[0]


def test_a_changed_step_fails_the_check_naming_it(check, tmp_path):
    text = check.DOC.read_text()
    doc = tmp_path / "inference.md"
    doc.write_text(text.replace("tools/convert.py /data/dicom/cine_series", "tools/convert.py /data/dicom/series"))
    with pytest.raises(ValueError, match="the convert block lost '/data/dicom/cine_series'"):
        check.readme_blocks(doc)
    doc.write_text(text.replace("```bash\n   mkdir -p apps", "```text\n   mkdir -p apps"))
    with pytest.raises(ValueError, match="0 blocks with 'tools/export.py'"):
        check.readme_blocks(doc)


def test_a_users_path_the_check_does_not_know_is_refused(check):
    block = "curl http://127.0.0.1:8000/infer/x?image=FRAME_ID -o /data/elsewhere/FRAME_ID.nii.gz"
    with pytest.raises(ValueError, match="a user's path"):
        check.literal(block, {"FRAME_ID": "a", "8000": "8123"})
    assert check.literal("convert /data/dicom/cine_series /data/cine_series",
                         {"/data/dicom/cine_series": "/w/shared/data/s", "/data/cine_series": "/w/out"}) \
        == "convert /w/shared/data/s /w/out"
