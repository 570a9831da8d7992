"""The phantom cohort on disk: layout, read-back through cmrssl.io, CLI, refusal to overwrite."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrssl.data.phantom import generate_cohort

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(REPO_ROOT / "tools" / "phantom.py")]
TINY = ["--image_size", "40", "--num_frames", "6"]


def _run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def _run_in_process(capsys, *args):
    """The CLI through fire in this process (saves the interpreter start-up of a subprocess)."""
    import fire

    spec = importlib.util.spec_from_file_location("phantom_cli", REPO_ROOT / "tools" / "phantom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fire.Fire(module.main, command=[str(a) for a in args])
    return capsys.readouterr().out


def _tree(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_cohort_layout(phantom_cohort: Path):
    cohort = json.loads((phantom_cohort / "cohort.json").read_text())
    assert cohort["seed"] == 0
    assert cohort["subjects"] == ["phantom_000", "phantom_001", "phantom_002"]
    assert not [p for p in phantom_cohort.iterdir() if p.name.startswith(".")]  # no temp leftovers
    for name in cohort["subjects"]:
        d = phantom_cohort / name
        a = json.loads((d / "analytic.json").read_text())
        for key in ("edv_ml", "esv_ml", "sv_ml", "ef_percent", "lv_mass_g", "rv_edv_ml", "rv_esv_ml",
                    "ed_frame", "es_frame", "lv_volume_curve_ml", "num_frames", "num_slices", "spacing_zyx_mm"):
            assert key in a, key
        t, z = a["num_frames"], a["num_slices"]
        assert len(a["lv_volume_curve_ml"]) == t
        img = nib.load(str(d / "sax_cine.nii.gz"))
        gt = nib.load(str(d / "sax_cine_gt.nii.gz"))
        h, w = a["image_size"]
        assert img.shape == (w, h, z, t) and gt.shape == img.shape
        assert img.get_data_dtype() == np.float32 and gt.get_data_dtype() == np.uint8
        assert img.header.get_zooms()[:3] == pytest.approx(a["spacing_zyx_mm"][::-1], rel=1e-5)
        frames = sorted(p.name for p in (d / "frames").iterdir())
        assert frames == sorted([f"frame_{i:02d}.nii.gz" for i in range(t)]
                                + [f"frame_{i:02d}_gt.nii.gz" for i in range(t)])
        assert len(list((d / "dicom" / "sax").glob("*.dcm"))) == z * t
        for view in ("2ch", "4ch"):
            assert len(list((d / "dicom" / view).glob("*.dcm"))) == t
            lax = nib.load(str(d / f"lax_{view}.nii.gz"))
            assert lax.shape == (w, h, 1, t)


def test_written_labels_give_the_analytic_volumes(phantom_cohort: Path):
    """What a user measures from the files (voxels x NIfTI zooms) matches analytic.json within 3 %."""
    for d in sorted(p for p in phantom_cohort.iterdir() if p.is_dir()):
        a = json.loads((d / "analytic.json").read_text())
        gt = nib.load(str(d / "sax_cine_gt.nii.gz"))
        labels = np.asarray(gt.dataobj)
        voxel_ml = float(np.prod(gt.header.get_zooms()[:3])) / 1000.0
        edv = (labels[..., a["ed_frame"]] == 1).sum() * voxel_ml
        esv = (labels[..., a["es_frame"]] == 1).sum() * voxel_ml
        mass = 1.05 * (labels[..., a["ed_frame"]] == 2).sum() * voxel_ml
        assert edv == pytest.approx(a["edv_ml"], rel=0.03)
        assert esv == pytest.approx(a["esv_ml"], rel=0.03)
        assert mass == pytest.approx(a["lv_mass_g"], rel=0.03)
        frame_gt = nib.load(str(d / "frames" / f"frame_{a['ed_frame']:02d}_gt.nii.gz"))
        np.testing.assert_array_equal(np.asarray(frame_gt.dataobj), labels[..., a["ed_frame"]])


def test_dicom_and_nifti_read_back_as_the_same_cine(phantom_cohort: Path):
    from cmrssl.io.dicom import read_dicom_cine, read_long_axis_dicom
    from cmrssl.io.nifti import read_nifti_cine

    d = phantom_cohort / "phantom_001"
    a = json.loads((d / "analytic.json").read_text())
    from_dicom = read_dicom_cine(d / "dicom" / "sax")
    from_nifti = read_nifti_cine(d / "sax_cine.nii.gz", label_path=d / "sax_cine_gt.nii.gz")
    for study in (from_dicom, from_nifti):
        assert study.pixels.shape == (a["num_frames"], a["num_slices"], *a["image_size"])
        assert list(study.spacing_zyx_mm) == pytest.approx(a["spacing_zyx_mm"], abs=1e-3)
    np.testing.assert_allclose(from_dicom.slice_affines, from_nifti.slice_affines, atol=1e-3)
    step = (from_nifti.pixels.max() - from_nifti.pixels.min()) / 65535.0
    np.testing.assert_allclose(from_dicom.pixels, from_nifti.pixels, atol=2 * step + 1e-3)
    four = read_long_axis_dicom(d / "dicom" / "4ch", view="4ch")
    assert four.pixels.shape == (a["num_frames"], 1, *a["image_size"])


def test_view_lines_from_the_files_cross_the_lv_in_both_views(phantom_cohort: Path):
    """The position-prediction path on disk: DICOM geometry -> plane intersection -> pixels of both
    images; along the 4Ch/2Ch line drawn on a mid SAX slice (and the SAX line drawn on the
    long-axis image) the labels written beside the DICOM show LV cavity."""
    from cmrssl.io.dicom import read_dicom_cine, read_long_axis_dicom
    from cmrssl.io.geometry import intersect_planes, plane_from_affine, project_line_to_pixels
    from cmrssl.io.nifti import read_long_axis_nifti, read_nifti_cine

    d = phantom_cohort / "phantom_002"
    a = json.loads((d / "analytic.json").read_text())
    ed = a["ed_frame"]
    sax = read_dicom_cine(d / "dicom" / "sax")
    sax_labels = read_nifti_cine(d / "sax_cine.nii.gz", label_path=d / "sax_cine_gt.nii.gz").labels
    lv_area = (sax_labels[ed] == 1).sum(axis=(1, 2))
    z = int(np.argmax(lv_area))  # a mid-ventricular slice
    for view in ("4ch", "2ch"):
        lax = read_long_axis_dicom(d / "dicom" / view, view=view)
        lax_labels = read_long_axis_nifti(d / f"lax_{view}.nii.gz", view=view,
                                          label_path=d / f"lax_{view}_gt.nii.gz").labels
        line = intersect_planes(plane_from_affine(sax.slice_affines[z]), plane_from_affine(lax.slice_affines[0]))
        assert line is not None
        for affine, labels in ((sax.slice_affines[z], sax_labels[ed, z]), (lax.slice_affines[0], lax_labels[ed, 0])):
            segment = project_line_to_pixels(line, affine, labels.shape)
            assert segment is not None
            samples = np.linspace(segment[0], segment[1], 400)
            col = np.clip(np.rint(samples[:, 0]).astype(int), 0, labels.shape[1] - 1)
            row = np.clip(np.rint(samples[:, 1]).astype(int), 0, labels.shape[0] - 1)
            on_line = labels[row, col]
            assert (on_line == 1).sum() >= 20, view  # a long chord of cavity in each image
            assert (on_line == 2).sum() > 0  # crossing the myocardium on the way


def test_cli_writes_prints_and_refuses_to_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "cohort"
    stdout = _run_in_process(capsys, "--out", out, "--subjects", 2, "--seed", 3, "--no_dicom", *TINY)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("phantom_")]
    assert len(lines) == 2
    analytic = json.loads((out / "phantom_001" / "analytic.json").read_text())
    assert f"EDV {analytic['edv_ml']:6.1f} ml" in lines[1] and "EF" in lines[1] and "LV mass" in lines[1]
    assert not (out / "phantom_000" / "dicom").exists()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    # a real command line: non-zero exit, a message naming the folder, nothing touched
    again = _run("--out", out, "--subjects", 1, "--seed", 4, "--no_dicom", *TINY)
    assert again.returncode != 0
    assert str(out) in again.stderr and "--overwrite" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    _run_in_process(capsys, "--out", out, "--subjects", 1, "--seed", 4, "--no_dicom", "--overwrite", *TINY)
    assert json.loads((out / "cohort.json").read_text())["subjects"] == ["phantom_000"]
    assert not (out / "phantom_001").exists()


def test_same_seed_same_bytes(tmp_path: Path):
    a = generate_cohort(tmp_path / "a", 2, seed=9, write_dicom=False, num_frames=5, image_size=32)
    b = generate_cohort(tmp_path / "b", 2, seed=9, write_dicom=False, num_frames=5, image_size=32)
    c = generate_cohort(tmp_path / "c", 1, seed=10, write_dicom=False, num_frames=5, image_size=32)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    for rel in _tree(tmp_path / "a"):
        if (tmp_path / "a" / rel).is_file():
            assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
    assert not filecmp.cmp(a[0] / "sax_cine.nii.gz", c[0] / "sax_cine.nii.gz", shallow=False)
    # growing the cohort keeps its first subjects
    d = generate_cohort(tmp_path / "d", 3, seed=9, write_dicom=False, num_frames=5, image_size=32)
    assert filecmp.cmp(a[1] / "analytic.json", d[1] / "analytic.json", shallow=False)
    assert b[0].name == "phantom_000"


def test_generate_cohort_accepts_an_empty_folder_and_refuses_a_file(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    folders = generate_cohort(empty, 1, seed=0, write_dicom=False, num_frames=4, image_size=24)
    assert folders == [empty / "phantom_000"] and (empty / "cohort.json").is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        generate_cohort(a_file, 1, seed=0, write_dicom=False)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cohort(empty, 1, seed=0, write_dicom=False)
    with pytest.raises(ValueError, match="num_subjects"):
        generate_cohort(tmp_path / "none", 0, seed=0)
    assert not (tmp_path / "none").exists()
    assert sorted(os.listdir(tmp_path)) == ["empty", "file"]
