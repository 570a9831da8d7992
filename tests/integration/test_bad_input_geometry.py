"""Geometry a header cannot prove, through the command lines (issue 29, classes 1 and 3).

Class 1: a NIfTI header holds two voxel spacings, the sform's column lengths and
pixdim. The reader takes what the header proves (:mod:`cmrssl.io.nifti`): both
agree; only one is there (a zero column, no sform, pixdim 0); the sform carries
directions only (unit columns, ACDC); pixdim was left at 1 (a scanner sform).
Anything else is refused naming both, and ``--spacing_from`` settles it.

Class 3: a label on the right shape but another place in the world is refused,
both files named, wherever an image and its label are read together.

Each case damages one phantom subject (32 px, oblique short-axis stack, 5.16 x
5.16 mm pixels, 9.16 mm slices) and runs ``tools/function.py`` (volumes) or
``tools/convert.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrssl.data.phantom import generate_subject
from cmrssl.io.nifti import write_cine_nifti
from nifti_header import patch_nifti_header
from tool_cli import assert_refused as _refusal, run_tool as _run




@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    """One phantom subject as a 4D image and labels NIfTI, and its function report."""
    subject = generate_subject(7, num_frames=12, image_size=32)
    folder = tmp_path_factory.mktemp("phantom")
    labels = folder / "sax_cine_gt.nii.gz"
    write_cine_nifti(subject.sax, folder / "sax_cine.nii.gz")
    write_cine_nifti(subject.sax, labels, what="labels")
    proc = _run("function", labels, "--out", folder / "function")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((folder / "function" / "function.json").read_text())
    header = nib.load(str(labels))
    return {"folder": folder, "labels": labels, "report": report, "columns": header.get_sform()[:3, :3],
            "spacing": np.asarray(header.header.get_zooms()[:3], dtype=np.float64)}


def _function(study: Path, out: Path, *args) -> dict:
    proc = _run("function", study, "--out", out, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "function.json").read_text())


def _assert_same_volumes(result: dict, reference: dict, scale: float = 1.0) -> None:
    for key in ("lv_edv_ml", "lv_esv_ml", "lv_mass_g", "rv_edv_ml"):
        assert result[key] == pytest.approx(reference[key] * scale, rel=2e-3), key


# --------------------------------------------------------------------------- class 1: two spacings


def test_scanner_sform_with_pixdim_left_at_one_takes_the_sform(phantom, tmp_path):
    # Before: pixdim 1/1/1 was taken as the truth: EDV 0.6 ml instead of 149.2.
    damaged = tmp_path / "pixdim_one_gt.nii.gz"
    patch_nifti_header(phantom["labels"], damaged, pixdim_xyz=1.0)
    result = _function(damaged, tmp_path / "out")
    _assert_same_volumes(result, phantom["report"])
    assert result["spacing_zyx_mm"] == pytest.approx(phantom["report"]["spacing_zyx_mm"], rel=1e-4)
    assert phantom["report"]["lv_edv_ml"] > 50.0


def test_zero_slice_column_takes_the_slices_perpendicular_at_the_pixdim_spacing(phantom, tmp_path):
    # Before: the zero column became the scanner's z axis; on this oblique stack the slice
    # spacing came out 6.61 mm instead of 9.16 (EDV 107.7 ml instead of 149.2).
    columns = phantom["columns"].copy()
    columns[:, 2] = 0.0
    damaged = tmp_path / "zero_slice_column_gt.nii.gz"
    patch_nifti_header(phantom["labels"], damaged, sform_columns=columns)
    result = _function(damaged, tmp_path / "out")
    _assert_same_volumes(result, phantom["report"])
    assert result["spacing_zyx_mm"][0] == pytest.approx(phantom["spacing"][2], rel=1e-4)


def test_two_spacings_the_header_cannot_choose_between_are_refused_then_settled(phantom, tmp_path):
    # Before: pixdim was taken silently (EDV 76.4 ml, 0.512 times the sform's 149.2).
    damaged = tmp_path / "disagree_gt.nii.gz"
    patch_nifti_header(phantom["labels"], damaged, pixdim_xyz=0.8 * phantom["spacing"])
    proc = _run("function", damaged, "--out", tmp_path / "refused")
    message = _refusal(proc, "function", 2, damaged)
    dx, dy, dz = phantom["spacing"]
    for words in (f"{dx:.4g} x {dy:.4g} x {dz:.4g} mm", f"{0.8 * dx:.4g} x {0.8 * dy:.4g} x {0.8 * dz:.4g} mm",
                  "sform", "pixdim", "--spacing_from"):
        assert words in message, message
    assert not (tmp_path / "refused").exists()
    _assert_same_volumes(_function(damaged, tmp_path / "sform", "--spacing_from", "sform"), phantom["report"])
    _assert_same_volumes(_function(damaged, tmp_path / "pixdim", "--spacing_from", "pixdim"), phantom["report"],
                         scale=0.8 ** 3)


def test_unit_sform_columns_take_pixdim_as_acdc_stores_it(phantom, tmp_path):
    # ACDC: sform code 2 with unit columns (directions only), the spacing in pixdim.
    columns = phantom["columns"] / np.linalg.norm(phantom["columns"], axis=0)
    damaged = tmp_path / "acdc_like_gt.nii.gz"
    patch_nifti_header(phantom["labels"], damaged, sform_columns=columns, sform_code=2)
    _assert_same_volumes(_function(damaged, tmp_path / "out"), phantom["report"])


def test_a_spacing_option_that_is_not_one_of_the_sources_is_refused(phantom, tmp_path):
    proc = _run("function", phantom["labels"], "--out", tmp_path / "out", "--spacing_from", "header")
    assert proc.returncode == 2, proc.stderr
    assert "function: error: spacing_from must be one of auto, sform, pixdim; got 'header'" in proc.stderr
    proc = _run("function", phantom["labels"], "--out", tmp_path / "out2", "--spacing_from", "sform")
    assert proc.returncode == 0, proc.stderr  # an explicit source that agrees changes nothing


def test_spacing_from_an_absent_source_is_named(phantom, tmp_path):
    damaged = tmp_path / "no_sform_gt.nii.gz"
    patch_nifti_header(phantom["labels"], damaged, sform_code=0)
    proc = _run("function", damaged, "--out", tmp_path / "out", "--spacing_from", "sform")
    message = _refusal(proc, "function", 2, damaged)
    assert "spacing_from 'sform' asked, but the header has no sform spacing along x, y, z" in message


# --------------------------------------------------------------------------- class 3: label on another grid


def test_label_on_another_grid_than_its_image_is_refused_naming_both(phantom, tmp_path):
    # Before: a label of the image's shape 30 mm away was measured (and trained on) silently.
    study = tmp_path / "subject"
    study.mkdir()
    (study / "sax_cine.nii.gz").write_bytes((phantom["folder"] / "sax_cine.nii.gz").read_bytes())
    patch_nifti_header(phantom["labels"], study / "sax_cine_gt.nii.gz", translate_mm=[30.0, 0.0, 0.0])
    proc = _run("function", study, "--out", tmp_path / "out")
    message = _refusal(proc, "function", 2, study / "sax_cine_gt.nii.gz")
    assert "not on the grid of its image" in message and str(study / "sax_cine.nii.gz") in message, message
    assert "30.0 mm apart" in message, message
    assert not (tmp_path / "out").exists()

    proc = _run("convert", study / "sax_cine.nii.gz", tmp_path / "converted", "--labels", study / "sax_cine_gt.nii.gz")
    message = _refusal(proc, "convert", 1, study / "sax_cine_gt.nii.gz")
    assert "not on the grid of its image" in message, message
    assert not (tmp_path / "converted").exists()


def test_label_within_float_rounding_of_its_image_is_accepted(phantom, tmp_path):
    study = tmp_path / "subject"
    study.mkdir()
    (study / "sax_cine.nii.gz").write_bytes((phantom["folder"] / "sax_cine.nii.gz").read_bytes())
    patch_nifti_header(phantom["labels"], study / "sax_cine_gt.nii.gz", translate_mm=[0.01, -0.01, 0.0])
    _assert_same_volumes(_function(study, tmp_path / "out"), phantom["report"])
