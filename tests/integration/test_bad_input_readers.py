"""Bad input through the public command lines (issue 10): no silently wrong numbers, no tracebacks.

Each case damages a small synthetic input (one phantom subject, 32 px) the way
the bad-input audit did and runs the tool a user would run:

- ``tools/function.py`` (EDV from a labelled NIfTI): header zooms of 0 or
  negative with a valid sform must give the original volumes; a sheared
  affine is refused.
- ``tools/convert.py`` (any cine): DICOM phases without TriggerTime and
  InstanceNumber ordered by numeric file names; NaN / non-numeric rescale,
  non-positive PixelSpacing, degenerate ImageOrientationPatient and
  unreadable files named with a clean exit code.
- ``tools/index.py acdc``: a truncated ``.nii.gz`` named, nothing written.

A refusal is exit code 1 (convert) or 2 (function, index), one line on stderr
``<tool>: error: <path>: <what is wrong>`` and no traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cmrssl.data.phantom import generate_subject
from cmrssl.io.dicom import write_dicom_series
from cmrssl.io.nifti import write_cine_nifti
from nifti_header import patch_nifti_header
from tool_cli import assert_refused as _assert_refused, run_tool as _run

REPO_ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0



@pytest.fixture(scope="module")
def subject():
    """One phantom study: 12 frames (so file numbers reach two digits within a slice), 32 px."""
    return generate_subject(7, num_frames=12, image_size=32)


# --------------------------------------------------------------------------- NIfTI geometry (function.py)


@pytest.fixture(scope="module")
def labels_nifti(subject, tmp_path_factory) -> Path:
    """The phantom's canonical labels as a 4D NIfTI (sform and qform code 1, zooms = spacing)."""
    path = tmp_path_factory.mktemp("labels") / "sax_cine_gt.nii.gz"
    write_cine_nifti(subject.sax, path, what="labels")
    return path


def _function(study: Path, out: Path) -> dict:
    proc = _run("function", study, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "function.json").read_text())


@pytest.mark.parametrize("zooms", ["zero", "negative"])
def test_nifti_without_valid_zooms_takes_the_spacing_from_the_sform(labels_nifti, tmp_path, zooms):
    # Before: nibabel turns pixdim 0 into 1 mm zooms, which the reader trusted over
    # the sform: EDV 0.6 ml instead of 149 ml. Negative zooms are no spacing either.
    original = _function(labels_nifti, tmp_path / "original")
    damaged = tmp_path / "damaged_gt.nii.gz"
    spacing = np.asarray(nib.load(str(labels_nifti)).header.get_zooms()[:3])
    patch_nifti_header(labels_nifti, damaged, pixdim_xyz=0.0 if zooms == "zero" else -spacing)
    result = _function(damaged, tmp_path / "damaged")
    for key in ("lv_edv_ml", "lv_esv_ml", "lv_mass_g", "rv_edv_ml"):
        assert result[key] == pytest.approx(original[key], rel=1e-5), key
    assert result["spacing_zyx_mm"] == pytest.approx(original["spacing_zyx_mm"], rel=1e-5)
    assert original["lv_edv_ml"] > 50.0


def test_nifti_without_zooms_or_sform_is_refused(labels_nifti, tmp_path):
    # Without an sform the affine is nibabel's qform, built from the same missing zooms.
    damaged = tmp_path / "nospacing_gt.nii.gz"
    patch_nifti_header(labels_nifti, damaged, pixdim_xyz=0.0, sform_code=0)
    proc = _run("function", damaged, "--out", tmp_path / "out")
    _assert_refused(proc, "function", 2, damaged, "no valid voxel spacing", "pixdim[1]")
    assert not (tmp_path / "out").exists()


def test_sheared_affine_is_refused_not_measured(labels_nifti, tmp_path):
    # Before: EDV 182 ml instead of 149 ml (voxel volume = product of column lengths).
    img = nib.load(str(labels_nifti))
    affine = img.affine.copy()
    affine[:3, 1] += 0.7 * affine[:3, 0]
    sheared = tmp_path / "sheared_gt.nii.gz"
    new = nib.Nifti1Image(np.asanyarray(img.dataobj), affine)
    new.header.set_sform(affine, code=1)
    nib.save(new, str(sheared))
    proc = _run("function", sheared, "--out", tmp_path / "out")
    _assert_refused(proc, "function", 2, sheared, "not orthogonal", "sheared pixel grid")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- DICOM (convert.py)


@pytest.fixture(scope="module")
def dicom_series(subject, tmp_path_factory) -> Path:
    """The phantom's short-axis cine as DICOM files ``00001.dcm`` ... (13 slices x 12 phases)."""
    return write_dicom_series(subject.sax, tmp_path_factory.mktemp("dicom") / "sax")


@pytest.fixture(scope="module")
def converted_reference(dicom_series, tmp_path_factory) -> np.ndarray:
    """``sax_cine.nii.gz`` pixels that convert.py writes for the intact series."""
    out = tmp_path_factory.mktemp("reference") / "out"
    proc = _run("convert", dicom_series, out)
    assert proc.returncode == 0, proc.stderr
    return np.asanyarray(nib.load(str(out / "sax_cine.nii.gz")).dataobj)


def _damaged_copy(series: Path, dst: Path, change, rename=None) -> Path:
    """Copy of the series with ``change(dataset, index)`` applied to every file (index in name order)."""
    dst.mkdir()
    for i, f in enumerate(sorted(series.iterdir())):
        ds = pydicom.dcmread(f)
        change(ds, i)
        ds.save_as(dst / (rename(i) if rename else f.name))
    return dst


def _set_raw_ds(path: Path, keyword: str, text: str) -> None:
    """Store ``text`` verbatim as the DS value of ``keyword`` (pydicom refuses to write e.g. "abc")."""
    placeholder = "9" * 16
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, placeholder)
    ds.save_as(path)
    raw = path.read_bytes()
    assert raw.count(placeholder.encode()) == 1
    path.write_bytes(raw.replace(placeholder.encode(), text.encode().ljust(16)))


def _strip_phase_tags(ds, _):
    del ds.TriggerTime
    del ds.InstanceNumber


def test_phases_without_trigger_time_or_instance_number_follow_numeric_file_names(
    dicom_series, converted_reference, tmp_path
):
    # Names 1 ... 156, slice-major: sorted as text, slice 1 read as 1, 10, 11, 12, 2, ... (frames scrambled).
    damaged = _damaged_copy(dicom_series, tmp_path / "numbered", _strip_phase_tags, rename=lambda i: f"{i + 1}")
    out = tmp_path / "out"
    proc = _run("convert", damaged, out)
    assert proc.returncode == 0, proc.stderr
    assert "ordered by the numbers in the file names" in proc.stderr
    converted = np.asanyarray(nib.load(str(out / "sax_cine.nii.gz")).dataobj)
    np.testing.assert_array_equal(converted, converted_reference)


def test_phases_without_trigger_time_instance_number_or_numbered_names_are_refused(dicom_series, tmp_path):
    letters = [f"{a}{b}" for a in "abcdefghijklm" for b in "abcdefghijkl"]
    damaged = _damaged_copy(dicom_series, tmp_path / "named", _strip_phase_tags, rename=lambda i: f"img_{letters[i]}")
    proc = _run("convert", damaged, tmp_path / "out")
    _assert_refused(proc, "convert", 1, damaged, "neither TriggerTime nor InstanceNumber", "not numbered alike")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keyword, text", [
    ("RescaleSlope", "nan"), ("RescaleSlope", "inf"), ("RescaleSlope", "abc"),
    ("RescaleIntercept", "NaN"), ("RescaleIntercept", "12,5"),
])
def test_non_finite_or_non_numeric_rescale_names_the_file(dicom_series, tmp_path, keyword, text):
    # Before: "nan" wrote NaN voxels; "abc" was silently treated as no rescale (exit 0).
    damaged = _damaged_copy(dicom_series, tmp_path / "series", lambda ds, i: None)
    victim = damaged / "00006.dcm"
    _set_raw_ds(victim, keyword, text)
    proc = _run("convert", damaged, tmp_path / "out")
    _assert_refused(proc, "convert", 1, victim, keyword)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spacing, files", [(["0", "0"], "one"), (["0", "0"], "all"), (["-1.5", "-1.5"], "all")])
def test_non_positive_pixel_spacing_names_the_file(dicom_series, tmp_path, spacing, files):
    # Before: LinAlgError traceback (all zero), or "non-uniform PixelSpacing" / "two acquisitions" (wrong cause).
    victim_index = 3 if files == "one" else 0

    def change(ds, i):
        if files == "all" or i == victim_index:
            ds.PixelSpacing = spacing

    damaged = _damaged_copy(dicom_series, tmp_path / "series", change)
    victim = sorted(damaged.iterdir())[victim_index]
    proc = _run("convert", damaged, tmp_path / "out")
    _assert_refused(proc, "convert", 1, victim, "PixelSpacing must be positive")


def _iop(ds) -> np.ndarray:
    return np.array([float(v) for v in ds.ImageOrientationPatient])


def _skewed(ds) -> list:
    iop = _iop(ds)
    column = iop[3:] + 0.6 * iop[:3]
    return [f"{v:.6f}" for v in np.concatenate([iop[:3], column / np.linalg.norm(column)])]


@pytest.mark.parametrize("damage, words", [
    ("row_equals_column", ["ImageOrientationPatient", "parallel"]),
    ("zero_row", ["ImageOrientationPatient", "zero length"]),
    ("skewed", ["ImageOrientationPatient", "not orthogonal"]),
    ("not_unit", ["ImageOrientationPatient", "not a unit vector"]),
    ("nan", ["ImageOrientationPatient", "NaN or infinite"]),
    ("position_inf", ["ImagePositionPatient", "NaN or infinite"]),
])
def test_degenerate_orientation_or_position_names_the_file(dicom_series, tmp_path, damage, words):
    # Before: a ValueError traceback (parallel, zero) or a silently sheared grid (skewed).
    def change(ds, _):
        iop = [str(v) for v in _iop(ds)]
        if damage == "row_equals_column":
            ds.ImageOrientationPatient = iop[:3] * 2
        elif damage == "zero_row":
            ds.ImageOrientationPatient = ["0", "0", "0"] + iop[3:]
        elif damage == "skewed":
            ds.ImageOrientationPatient = _skewed(ds)
        elif damage == "not_unit":
            ds.ImageOrientationPatient = [f"{0.5 * float(v):.6f}" for v in iop[:3]] + iop[3:]
        elif damage == "nan":
            ds.ImageOrientationPatient = ["nan"] + iop[1:]
        elif damage == "position_inf":
            ds.ImagePositionPatient = ["inf"] + [str(v) for v in ds.ImagePositionPatient[1:]]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about writing "nan" / "inf" as DS
        damaged = _damaged_copy(dicom_series, tmp_path / "series", change)
    proc = _run("convert", damaged, tmp_path / "out")
    _assert_refused(proc, "convert", 1, damaged / "00001.dcm", *words)


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop root from reading")
def test_unreadable_file_in_the_series_names_the_file(dicom_series, tmp_path):
    damaged = _damaged_copy(dicom_series, tmp_path / "series", lambda ds, i: None)
    victim = damaged / "00007.dcm"
    victim.chmod(0)
    try:
        proc = _run("convert", damaged, tmp_path / "out")
    finally:
        victim.chmod(0o644)
    _assert_refused(proc, "convert", 1, victim, "cannot be read")


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 000 does not stop root from listing")
def test_unreadable_folder_names_the_folder(dicom_series, tmp_path):
    damaged = _damaged_copy(dicom_series, tmp_path / "series", lambda ds, i: None)
    damaged.chmod(0)
    try:
        proc = _run("convert", damaged, tmp_path / "out")
    finally:
        damaged.chmod(0o755)
    _assert_refused(proc, "convert", 1, damaged, "cannot be listed")


# --------------------------------------------------------------------------- ACDC (index.py)


def _acdc_fake():
    spec = importlib.util.spec_from_file_location("acdc_fake", REPO_ROOT / "tests" / "unit" / "acdc_fake.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("victim, keep", [
    ("patient002/patient002_frame01.nii.gz", 0.5),  # before: indexed without a word, broken at training
    ("patient002/patient002_frame01.nii.gz", 60),  # before: ImageFileError traceback
    ("patient002/patient002_frame03_gt.nii.gz", 0.5),
    ("patient002/patient002_4d.nii.gz", 0.5),  # before: indexed without a word
])
def test_index_acdc_truncated_nifti_is_named_and_nothing_written(tmp_path, victim, keep):
    tiny = generate_subject(7, num_frames=4, image_size=32)
    root = _acdc_fake().write_acdc(tmp_path / "acdc", tiny, {1: "NOR", 2: "DCM", 3: "HCM"}, with_4d=(2,))
    path = root / victim
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    out = tmp_path / "out"
    proc = _run("index", "acdc", root, "--out_dir", out)
    _assert_refused(proc, "index", 2, path)
    assert not out.exists() or not any(out.rglob("*"))
