"""ACDC's own label files (1 RV, 3 LV) are recognised by their anatomy and refused with the remap
command; tools/convert.py --label_map acdc writes them canonical (skipped when ../shared is absent)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from cmrssl.transforms.labels import CheckLabels

pytestmark = pytest.mark.realdata

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_acdc_reference_frame_is_refused_as_written(acdc_root):
    files = sorted(acdc_root.glob("patient*/patient*_frame*_gt.nii.gz"))
    if not files:
        pytest.skip(f"no ACDC frames under {acdc_root}")
    check, load = CheckLabels(), LoadImage(image_only=True, ensure_channel_first=True)
    accepted = []
    for path in files:
        try:
            check(load(str(path)))
            accepted.append(path.name)
        except ValueError as error:
            assert "cavities are swapped" in str(error) and str(path) in str(error)
    assert accepted == [], f"{len(accepted)} of {len(files)} ACDC files taken as canonical: {accepted[:5]}"


def test_convert_with_the_acdc_map_writes_labels_the_check_accepts(acdc_root, tmp_path):
    folder = acdc_root / "patient001"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    out = tmp_path / "patient001_es"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "convert.py"),
                             str(folder / "patient001_frame12.nii.gz"), str(out),
                             "--labels", str(folder / "patient001_frame12_gt.nii.gz"), "--label_map", "acdc"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    label = LoadImage(image_only=True, ensure_channel_first=True)(str(out / "frames" / "frame_00_gt.nii.gz"))
    CheckLabels()(label)
    raw = LoadImage(image_only=True, ensure_channel_first=True)(str(folder / "patient001_frame12_gt.nii.gz"))
    assert torch.equal(torch.as_tensor(np.asarray(label)) == 1, torch.as_tensor(np.asarray(raw)) == 3)
