"""``python tools/position_labels.py`` end to end on a small 2-subject phantom: NIfTI subject folder,
DICOM study folder and a datalist from ``tools/index.py phantom``; skips, exit statuses, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "position_labels.py"


def _run(*args, tool=TOOL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tool), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from cmrssl.data.phantom import generate_cohort

    out = tmp_path_factory.mktemp("position") / "cohort"
    generate_cohort(out, num_subjects=2, seed=0, num_frames=4, image_size=48)
    return out


def _check_loads_aligned(out: Path, datalist: str, num_records: int) -> None:
    """Every record's image and position label load with one shape and one affine."""
    from cmrssl.transforms.io import LoadCineFramed

    records = json.loads((out / datalist).read_text())["training"]
    assert len(records) == num_records
    load = LoadCineFramed(keys=["image", "position_label"], frame_key="frame_index")
    for record in (records[0], records[-1]):
        assert Path(record["image"]).is_absolute() and Path(record["position_label"]).parent == out / "labels"
        item = load(record)
        image, label = item["image"], item["position_label"]
        assert image.shape == label.shape
        np.testing.assert_allclose(image.affine.numpy(), label.affine.numpy(), atol=1e-4)
        values = set(np.unique(label.numpy()).astype(int).tolist())
        assert {0, 1} <= values <= set(range(10))


def test_nifti_subject_folder(cohort, tmp_path):
    out = tmp_path / "out"
    done = _run(cohort / "phantom_000", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "labelled 1 of 1 studies" in done.stdout and "skipped 0" in done.stdout
    for name in ("labels/phantom_000_sax_position.nii.gz", "labels/phantom_000_4ch_position.nii.gz",
                 "png/phantom_000.png", "datalist.json", "datalist_lax.json", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "png" / "phantom_000.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labelled"] == ["phantom_000"] and summary["skipped"] == {}
    assert summary["box_parameters"]["box_size_mm"] == 20.0 and summary["box_parameters"]["box_step_mm"] == 54.6
    _check_loads_aligned(out, "datalist.json", 4)
    _check_loads_aligned(out, "datalist_lax.json", 4)
    # no silent overwrite; --overwrite replaces only the tool's entries
    (out / "mine.txt").write_text("keep")
    refused = _run(cohort / "phantom_000", "--out", out)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    again = _run(cohort / "phantom_000", "--out", out, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert (out / "mine.txt").read_text() == "keep" and not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_dicom_study_folder_matches_nifti(cohort, tmp_path):
    import nibabel as nib

    out_dicom, out_nifti = tmp_path / "dicom", tmp_path / "nifti"
    done = _run(cohort / "phantom_001" / "dicom", "--out", out_dicom, "--subject", "phantom_001")
    assert done.returncode == 0, done.stderr
    assert _run(cohort / "phantom_001", "--out", out_nifti).returncode == 0
    record = json.loads((out_dicom / "datalist.json").read_text())["training"][0]
    assert record["subject"] == "phantom_001" and record["image"] == str((cohort / "phantom_001" / "dicom" / "sax"))
    _check_loads_aligned(out_dicom, "datalist.json", 4)
    _check_loads_aligned(out_dicom, "datalist_lax.json", 4)
    for view in ("sax", "4ch"):
        name = f"labels/phantom_001_{view}_position.nii.gz"
        np.testing.assert_array_equal(np.asarray(nib.load(str(out_dicom / name)).dataobj),
                                      np.asarray(nib.load(str(out_nifti / name)).dataobj))


def test_datalist_from_index_with_skips(cohort, tmp_path):
    datalist = tmp_path / "phantom.json"
    indexed = _run("phantom", cohort, "--datalist", datalist, tool=REPO_ROOT / "tools" / "index.py")
    assert indexed.returncode == 0, indexed.stderr
    # by default the held-out test split stays out of the pretraining pool; --splits names them all
    test_subjects = {r["subject"] for r in json.loads(datalist.read_text()).get("test", [])}
    assert len(test_subjects) == 1
    default = _run(datalist, "--out", tmp_path / "default")
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "default" / "summary.json").read_text())["labelled"] == sorted(
        {"phantom_000", "phantom_001"} - test_subjects)
    out = tmp_path / "out"
    done = _run(datalist, "--out", out, "--splits", "training,validation,test")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["labelled"] == ["phantom_000", "phantom_001"]
    _check_loads_aligned(out, "datalist.json", 8)

    # one good study, one without its 2Ch view, one whose 2Ch "view" is the 4Ch plane (parallel)
    content = json.loads(datalist.read_text())
    records = [r for split in content.values() for r in split if r["frame_index"] == 0]
    good, other = sorted(records, key=lambda r: r["subject"])
    no_2ch = {k: v for k, v in other.items() if k != "lax_2ch"}
    no_2ch["subject"] = "no_2ch"
    parallel = dict(other, subject="parallel", lax_2ch=other["lax_4ch"])
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"training": [good, no_2ch, parallel]}))
    out_mixed = tmp_path / "mixed"
    done = _run(mixed, "--out", out_mixed)
    assert done.returncode == 0, done.stderr
    assert "labelled 1 of 3 studies" in done.stdout and "skipped 2" in done.stdout
    assert "skipping no_2ch: no 2Ch long-axis view" in done.stderr and "skipping parallel:" in done.stderr
    summary = json.loads((out_mixed / "summary.json").read_text())
    assert summary["labelled"] == [good["subject"]]
    assert set(summary["skipped"]) == {"no_2ch", "parallel"} and "parallel" in summary["skipped"]["parallel"]
    assert {r["subject"] for r in json.loads((out_mixed / "datalist.json").read_text())["training"]} == {
        good["subject"]}

    # nothing labellable: exit 1, a clear message, nothing written
    hopeless = tmp_path / "hopeless.json"
    hopeless.write_text(json.dumps({"training": [no_2ch, parallel]}))
    failed = _run(hopeless, "--out", tmp_path / "none")
    assert failed.returncode == 1 and "no study could be labelled" in failed.stderr
    assert "Traceback" not in failed.stderr and not (tmp_path / "none").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_bad_inputs_name_the_file(tmp_path):
    missing = _run(tmp_path / "nowhere", "--out", tmp_path / "out")
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"training": [{"subject": "a", "image": str(tmp_path / "gone.nii.gz")}]}))
    named = _run(broken, "--out", tmp_path / "out")
    assert named.returncode == 2 and "gone.nii.gz" in named.stderr and "Traceback" not in named.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- geometry that cannot be trusted
# (issue 29, class 4): views that cannot be placed in one world are skipped, named; never labelled


def _frame_of_reference_uids(folder: Path) -> set:
    import pydicom

    return {str(pydicom.dcmread(str(f), stop_before_pixels=True).FrameOfReferenceUID) for f in folder.iterdir()}


def _study_with_long_axis_series_of(cohort: Path, tmp_path: Path) -> Path:
    """phantom_000's DICOM study with phantom_001's 2Ch/4Ch series (another FrameOfReferenceUID), filed in its
    study (StudyInstanceUID rewritten, as a re-landmarked exam would leave them), so the folder pairs them."""
    import shutil

    import pydicom

    study = tmp_path / "study"
    shutil.copytree(cohort / "phantom_000" / "dicom", study)
    study_uid = pydicom.dcmread(str(next((study / "sax").iterdir()))).StudyInstanceUID
    for view in ("2ch", "4ch"):
        shutil.rmtree(study / view)
        shutil.copytree(cohort / "phantom_001" / "dicom" / view, study / view)
        for path in (study / view).iterdir():
            ds = pydicom.dcmread(str(path))
            ds.StudyInstanceUID = study_uid
            ds.save_as(str(path))
    return study


def test_long_axis_dicom_from_another_frame_of_reference_is_refused(cohort, tmp_path):
    """Before: exit 0, 1 % of the short-axis box pixels right. Now the study is skipped, both folders named."""
    study = _study_with_long_axis_series_of(cohort, tmp_path)
    sax_uid, = _frame_of_reference_uids(study / "sax")
    lax_uid, = _frame_of_reference_uids(study / "4ch")
    alone = _run(study, "--out", tmp_path / "alone", "--subject", "phantom_000")
    assert alone.returncode == 1 and "Traceback" not in alone.stderr, alone.stderr
    assert (f"{study / '2ch'} and {study / '4ch'}: FrameOfReferenceUID {lax_uid} differ from the short-axis "
            f"series' {sax_uid} ({study / 'sax'}): the views cannot be placed in one world; position labels need "
            "one frame of reference") in alone.stderr
    assert not (tmp_path / "alone").exists()

    # among good studies: skipped and counted, the good one labelled; the UIDs stay out of every file written
    good = cohort / "phantom_001"
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [
        {"subject": "good", "image": str(good / "sax_cine.nii.gz"), "lax_2ch": str(good / "lax_2ch.nii.gz"),
         "lax_4ch": str(good / "lax_4ch.nii.gz")},
        {"subject": "other_frame", "image": str(study / "sax"),
         "lax_2ch": str(cohort / "phantom_000" / "dicom" / "2ch"), "lax_4ch": str(study / "4ch")}]}))
    out = tmp_path / "out"
    done = _run(datalist, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "labelled 1 of 2 studies" in done.stdout and "skipped 1" in done.stdout
    assert f"skipping other_frame: {study / '4ch'}: FrameOfReferenceUID {lax_uid} differs from the short-axis" \
           in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labelled"] == ["good"]
    assert summary["skipped"]["other_frame"] == (
        f"{study / '4ch'}: its FrameOfReferenceUID differs from the short-axis series' ({study / 'sax'}): the two "
        "cannot be placed in one world; position labels need one frame of reference")
    written = done.stdout + "".join(p.read_text() for p in out.glob("*.json"))
    assert sax_uid not in written and lax_uid not in written


def test_long_axis_nifti_without_orientation_is_refused(cohort, tmp_path):
    """Before: exit 0, 6 % of the short-axis box pixels right (nibabel's placeholder affine). Now named, skipped."""
    import shutil

    import nibabel as nib

    subject = tmp_path / "phantom_000"
    subject.mkdir()
    for name in ("sax_cine.nii.gz", "lax_2ch.nii.gz", "lax_4ch.nii.gz"):
        shutil.copy(cohort / "phantom_000" / name, subject / name)
    img = nib.load(str(subject / "lax_4ch.nii.gz"))
    header = img.header.copy()
    header["qform_code"], header["sform_code"] = 0, 0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, header), str(subject / "lax_4ch.nii.gz"))
    assert int(nib.load(str(subject / "lax_4ch.nii.gz")).header["sform_code"]) == 0
    done = _run(subject, "--out", tmp_path / "out")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (f"{subject / 'lax_4ch.nii.gz'}: no orientation in the header (qform_code and sform_code are 0): its "
            "world position is unknown, position labels cannot be derived") in done.stderr
    assert not (tmp_path / "out").exists()


def test_dicom_series_without_frame_of_reference_is_labelled_with_a_warning(cohort, tmp_path):
    """No FrameOfReferenceUID (an anonymiser's doing; the tag is mandatory): nothing to compare, so labelled as
    the intact study is, with a warning naming the series and a note in summary.json."""
    import shutil

    import nibabel as nib
    import pydicom

    study = tmp_path / "study"
    shutil.copytree(cohort / "phantom_000" / "dicom", study)
    for path in (study / "4ch").iterdir():
        ds = pydicom.dcmread(str(path))
        del ds.FrameOfReferenceUID
        ds.save_as(str(path))
    out, intact = tmp_path / "out", tmp_path / "intact"
    done = _run(study, "--out", out, "--subject", "phantom_000")
    assert done.returncode == 0, done.stderr
    assert _run(cohort / "phantom_000" / "dicom", "--out", intact, "--subject", "phantom_000").returncode == 0
    note = (f"{study / '4ch'}: its files carry no FrameOfReferenceUID: whether the 4Ch long-axis series shares one "
            "frame of reference with the other views cannot be checked; they are assumed to share one world")
    assert note in done.stderr
    assert json.loads((out / "summary.json").read_text())["notes"] == {"phantom_000": [note]}
    for view in ("sax", "4ch"):
        name = f"labels/phantom_000_{view}_position.nii.gz"
        np.testing.assert_array_equal(np.asarray(nib.load(str(out / name)).dataobj),
                                      np.asarray(nib.load(str(intact / name)).dataobj))
