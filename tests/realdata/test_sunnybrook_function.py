"""Real Sunnybrook SC-HF-I-1: contour volumes against the data README, ED/ES
phases, and the x = column convention checked on the image intensities.

README reference (polygon fill x slice spacing): EDV ~196 ml, ESV ~145 ml,
EF ~26 %, ED on phase 19 and ES on phase 8 (1-based) = frames 18 and 7.
Measured here (pixel centres inside or on the contour, 1.367 mm pixels,
10.0 mm slice spacing from positions, slices 2..10 of 12): EDV 195.8 ml,
ESV 145.2 ml, EF 25.8 %, LV mass 118.2 g.
"""

from __future__ import annotations

import numpy as np
import pytest

from cmrssl.data.sunnybrook import polygon_mask, read_contour, read_sunnybrook_study
from cmrssl.metrics.function import cardiac_function_from_study

pytestmark = pytest.mark.realdata

README_EDV_ML, README_ESV_ML, README_EF_PERCENT = 196.0, 145.0, 26.0


@pytest.fixture(scope="module")
def sunnybrook(sunnybrook_root):
    dicom_dir = sunnybrook_root / "dicoms" / "SCD0000101"
    contour_dir = sunnybrook_root / "contourfiles" / "SC-HF-I-1"
    if not dicom_dir.is_dir() or not contour_dir.is_dir():
        pytest.skip(f"{dicom_dir} or {contour_dir} is absent")
    study, details = read_sunnybrook_study(dicom_dir, contour_dir)
    return study, details, contour_dir


def test_contours_give_readme_volumes_and_phases(sunnybrook):
    study, details, _ = sunnybrook
    assert study.pixels.shape == (20, 12, 256, 256)
    assert study.slice_spacing_mm == pytest.approx(10.0, abs=0.01)
    assert details.labelled_frames == [7, 18]
    assert details.labelled_slices == {7: list(range(2, 11)), 18: list(range(2, 11))}
    fn = cardiac_function_from_study(study)
    assert (fn.ed_frame, fn.es_frame) == (18, 7)  # phases 19 / 8 of the README, 0-based
    assert fn.lv_edv_ml == pytest.approx(README_EDV_ML, rel=0.03)
    assert fn.lv_esv_ml == pytest.approx(README_ESV_ML, rel=0.03)
    assert fn.lv_ef_percent == pytest.approx(README_EF_PERCENT, abs=1.5)
    # Myocardium only where an o-contour exists (ED); none at ES.
    assert fn.lv_mass_g is not None and 80 < fn.lv_mass_g < 250
    assert fn.lv_myocardium_curve_ml[7] == 0


def test_image_numbers_follow_the_sunnybrook_numbering(sunnybrook):
    _, details, _ = sunnybrook
    # Derived from headers, and agrees with slice (N-1)//20, phase (N-1)%20 here.
    for image, (t, z) in details.image_numbers.items():
        assert (z, t) == ((image - 1) // 20, (image - 1) % 20)


def test_x_is_column_contour_sits_on_the_bright_blood_pool(sunnybrook):
    study, details, contour_dir = sunnybrook
    blood_means, swapped_means, walls_checked = [], [], 0
    for image, (t, z) in sorted(details.image_numbers.items()):
        pixels = study.pixels[t, z]
        i_pts = read_contour(next(contour_dir.rglob(f"IM-0001-{image:04d}-icontour-manual.txt")))
        cavity = polygon_mask(i_pts, pixels.shape)
        # The same polygon read as (row, column): the LV sits near the image
        # diagonal here, so it still overlaps the cavity partly, but less.
        swapped = polygon_mask(i_pts[:, ::-1], pixels.shape)
        blood_means.append(pixels[cavity].mean())
        swapped_means.append(pixels[swapped].mean())
        o_files = list(contour_dir.rglob(f"IM-0001-{image:04d}-ocontour-manual.txt"))
        if o_files:
            wall = polygon_mask(read_contour(o_files[0]), pixels.shape) & ~cavity
            # Bright-blood cine: the cavity is much brighter than the myocardium around it.
            assert np.median(pixels[cavity]) > 1.5 * np.median(pixels[wall]), image
            walls_checked += 1
    assert walls_checked == 9
    assert all(b > s for b, s in zip(blood_means, swapped_means))
    assert np.mean(blood_means) > 1.15 * np.mean(swapped_means)


def test_index_sunnybrook_real_root(sunnybrook_root, tmp_path):
    import nibabel as nib

    from cmrssl.data.sunnybrook import index_sunnybrook

    records = index_sunnybrook(sunnybrook_root, tmp_path / "converted")
    assert [(r["subject"], r["phase"], r["frame"], r["frame_index"]) for r in records] == [
        ("SCD0000101", "ES", "ES", 7), ("SCD0000101", "ED", "ED", 18)]
    ed = records[1]
    assert ed["spacing_zyx_mm"] == pytest.approx([10.0, 1.367188, 1.367188], abs=1e-3)
    assert ed["labelled_slices"] == list(range(2, 11))
    label = nib.load(ed["label"])
    assert label.shape == (256, 256, 12)
    voxel_ml = float(np.prod(label.header.get_zooms())) / 1000.0
    edv = float((np.asarray(label.dataobj) == 1).sum()) * voxel_ml
    assert edv == pytest.approx(README_EDV_ML, rel=0.03)


def test_function_cli_on_sunnybrook_root(sunnybrook_root, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "function"
    proc = subprocess.run([sys.executable, str(repo / "tools" / "function.py"), str(sunnybrook_root), "--out", str(out)],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "function.json").read_text())
    assert (result["ed_frame"], result["es_frame"]) == (18, 7)
    assert result["lv_edv_ml"] == pytest.approx(README_EDV_ML, rel=0.03)
    assert result["rv_edv_ml"] is None  # Sunnybrook has no RV contours
