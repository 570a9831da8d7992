"""Dataset indexers -> MONAI datalists: splits, records, canonical labels, refusals, CLI.

Every layout except the phantom cohort is faked here from one small phantom
subject (32 px, 4 frames): ACDC and M&Ms / M&Ms-2 NIfTI files written with
nibabel, Kaggle DSB and generic DICOM trees with ``write_dicom_series``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from acdc_fake import CANONICAL_TO_ACDC, acdc_nifti, write_acdc, xyz

from cmrssl.data.acdc import acdc_subject_names, index_acdc
from cmrssl.data.datalist import (
    DEFAULT_FRACTIONS,
    canonical_label_image,
    format_summary,
    split_records,
    split_subjects,
    write_datalist,
)
from cmrssl.data.dicom_folder import index_dicom_folder
from cmrssl.data.kaggle_dsb import index_kaggle_dsb, read_kaggle_study
from cmrssl.data.mnms import index_mnms
from cmrssl.data.phantom import generate_subject
from cmrssl.data.phantom_index import index_phantom, phantom_fractions
from cmrssl.io import CineReadError, CineStudy, read_cine, write_dicom_series
from cmrssl.labels import ACDC_TO_CANONICAL

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(REPO_ROOT / "tools" / "index.py")]


def _run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def _subjects(datalist: dict, split: str) -> set:
    return {r["subject"] for r in datalist[split]}


@pytest.fixture(scope="module")
def tiny():
    """One small phantom study: sax ``[4, Z, 32, 32]`` with canonical labels on every frame."""
    return generate_subject(7, num_frames=4, image_size=32)


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory, tiny) -> Path:
    groups = ["NOR", "MINF", "DCM", "HCM", "RV"]
    patients = {n: groups[(n - 1) // 2] for n in range(1, 11)}  # 2 patients per group
    return write_acdc(tmp_path_factory.mktemp("acdc") / "training", tiny, patients, with_4d=(2,))


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_complete():
    subjects = [f"s{i:02d}" for i in range(40)]
    first = split_subjects(subjects, seed=3)
    assert first == split_subjects(list(reversed(subjects)), seed=3)  # input order does not matter
    assert first != split_subjects(subjects, seed=4)
    members = [s for split in first.values() for s in split]
    assert sorted(members) == subjects and len(set(members)) == len(members)
    assert {k: len(v) for k, v in first.items()} == {"training": 28, "validation": 4, "test": 8}


@pytest.mark.parametrize("n, expected", [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (5, (3, 1, 1))])
def test_split_gives_every_split_a_subject_when_possible(n, expected):
    counts = split_subjects([f"s{i}" for i in range(n)], seed=0, fractions=DEFAULT_FRACTIONS)
    assert tuple(len(counts[s]) for s in ("training", "validation", "test")) == expected


def test_split_explicit_lists_and_their_errors():
    subjects = ["a", "b", "c", "d"]
    split = split_subjects(subjects, assignments={"training": ["b", "a"], "test": ["d"]})
    assert split == {"training": ["a", "b"], "validation": [], "test": ["d"]}  # "c" is left out
    with pytest.raises(ValueError, match="'x'.*not in the data set"):
        split_subjects(subjects, assignments={"training": ["x"]})
    with pytest.raises(ValueError, match="both training and test"):
        split_subjects(subjects, assignments={"training": ["a"], "test": ["a"]})
    with pytest.raises(ValueError, match="unknown split"):
        split_subjects(subjects, assignments={"train": ["a"]})


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="unknown split"):
        split_subjects(["a"], fractions={"train": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        split_subjects(["a"], fractions={"training": 1.0, "test": -0.5})
    with pytest.raises(ValueError, match="> 0"):
        split_subjects(["a"], fractions={"training": 0.0})


def test_split_stratified_keeps_group_proportions():
    strata = {f"{g}{i:02d}": g for g in ("NOR", "DCM", "HCM", "MINF", "RV") for i in range(20)}
    split = split_subjects(strata, seed=1, strata=strata)
    for name, members in split.items():
        per_group = {g: sum(strata[s] == g for s in members) for g in ("NOR", "DCM", "HCM", "MINF", "RV")}
        expected = round(20 * DEFAULT_FRACTIONS[name])
        assert set(per_group.values()) == {expected}, (name, per_group)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_phantom_default_split_has_training_and_test(n):
    split = split_subjects([f"phantom_{i:03d}" for i in range(n)], seed=0, fractions=phantom_fractions(n))
    assert len(split["test"]) == 1 and len(split["training"]) >= 1
    assert len(split["validation"]) == (1 if n >= 3 else 0)


def test_split_records_keeps_subjects_together():
    records = [{"image": f"/x/{s}_{t}.nii.gz", "subject": s, "frame_index": t} for s in "abcdefghij" for t in range(3)]
    split = split_records(records, seed=2)
    seen = {}
    for name, rs in split.items():
        for r in rs:
            assert seen.setdefault(r["subject"], name) == name
    assert sum(len(v) for v in split.values()) == 30


# --------------------------------------------------------------------------- datalist files


def test_write_datalist_refuses_existing_and_bad_records(tmp_path):
    path = tmp_path / "datalist.json"
    records = {"training": [{"image": "/a.nii.gz", "subject": "a"}], "test": [{"image": "/b.nii.gz", "subject": "b"}]}
    write_datalist(records, path)
    assert json.loads(path.read_text()) == {"training": records["training"], "validation": [], "test": records["test"]}
    with pytest.raises(FileExistsError, match="datalist.json"):
        write_datalist(records, path)
    write_datalist({"training": records["training"]}, path, overwrite=True)
    assert json.loads(path.read_text())["test"] == []
    with pytest.raises(ValueError, match=r"other.json:training\[0\]: record lacks \['subject'\]"):
        write_datalist({"training": [{"image": "/a.nii.gz"}]}, tmp_path / "other.json")
    with pytest.raises(ValueError, match="'a' is in both training and test"):
        write_datalist({"training": records["training"], "test": [{"image": "/c", "subject": "a"}]},
                       tmp_path / "o.json")
    assert not (tmp_path / "other.json").exists() and not (tmp_path / "o.json").exists()


def test_write_datalist_refuses_values_monai_would_turn_into_paths(tmp_path):
    (tmp_path / "patient001").mkdir()
    with pytest.raises(ValueError, match="'subject' = 'patient001'.*load_decathlon_datalist"):
        write_datalist({"training": [{"image": "/a.nii.gz", "subject": "patient001"}]}, tmp_path / "datalist.json")
    assert not (tmp_path / "datalist.json").exists()


def test_format_summary_lines():
    datalist = {"training": [{"image": "/a", "subject": "a"}, {"image": "/a2", "subject": "a"}], "test": []}
    assert format_summary(datalist) == [
        "training: 1 subject, 2 records", "validation: 0 subjects, 0 records", "test: 0 subjects, 0 records"]


# --------------------------------------------------------------------------- phantom


def test_index_phantom_records_and_split(phantom_cohort, tmp_path):
    path = tmp_path / "datalist.json"
    datalist = index_phantom(phantom_cohort, path, seed=0)
    assert json.loads(path.read_text()) == datalist
    assert [len(_subjects(datalist, s)) for s in ("training", "validation", "test")] == [1, 1, 1]
    for subject in ("phantom_000", "phantom_001", "phantom_002"):
        analytic = json.loads((phantom_cohort / subject / "analytic.json").read_text())
        records = [r for split in datalist.values() for r in split if r["subject"] == subject]
        assert [r["frame_index"] for r in records] == list(range(analytic["num_frames"]))
        by_phase = {r["phase"]: r for r in records if r["phase"] != "other"}
        assert by_phase["ED"]["frame_index"] == analytic["ed_frame"] and by_phase["ED"]["frame"] == "ED"
        assert by_phase["ES"]["frame_index"] == analytic["es_frame"] and by_phase["ES"]["frame"] == "ES"
        other = next(r for r in records if r["phase"] == "other")
        assert other["frame"] == str(other["frame_index"])
        for r in records:
            assert Path(r["image"]).is_absolute() and Path(r["image"]).is_file() and Path(r["label"]).is_file()
            assert r["label"] == r["image"].replace(".nii.gz", "_gt.nii.gz")
            assert r["cine"] == str((phantom_cohort / subject / "sax_cine.nii.gz").resolve())
            np.testing.assert_allclose(r["spacing_zyx_mm"], analytic["spacing_zyx_mm"], rtol=1e-5)
    # same seed, same datalist; refusal without overwrite
    again = index_phantom(phantom_cohort, tmp_path / "again.json", seed=0)
    assert again == datalist
    with pytest.raises(FileExistsError, match="datalist.json"):
        index_phantom(phantom_cohort, path, seed=1)
    assert json.loads(path.read_text()) == datalist


def test_index_phantom_fixed_subject_lists(phantom_cohort, tmp_path):
    # a fixed held-out set (numbers, ranges or names), whatever the seed; subjects in no list are left out
    datalist = index_phantom(phantom_cohort, tmp_path / "datalist.json", seed=5,
                             subjects={"training": "1-2", "test": [0]})
    assert [sorted(_subjects(datalist, s)) for s in ("training", "validation", "test")] == [
        ["phantom_001", "phantom_002"], [], ["phantom_000"]]
    alone = index_phantom(phantom_cohort, tmp_path / "alone.json", subjects={"test": "phantom_002"})
    assert [sorted(_subjects(alone, s)) for s in ("training", "validation", "test")] == [[], [], ["phantom_002"]]
    with pytest.raises(ValueError, match="'phantom_007' of the test list is not in the data set"):
        index_phantom(phantom_cohort, tmp_path / "unknown.json", subjects={"test": "7"})
    assert not (tmp_path / "unknown.json").exists()


def test_index_phantom_refuses_datalist_inside_cohort(phantom_cohort):
    with pytest.raises(ValueError, match="load_decathlon_datalist"):
        index_phantom(phantom_cohort, phantom_cohort / "datalist.json")
    assert not (phantom_cohort / "datalist.json").exists()


def test_index_phantom_names_missing_frame(phantom_cohort, tmp_path):
    broken = tmp_path / "cohort"
    shutil.copytree(phantom_cohort, broken, ignore=shutil.ignore_patterns("dicom"))
    (broken / "phantom_001" / "frames" / "frame_02_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="phantom_001/frames/frame_02_gt.nii.gz"):
        index_phantom(broken, tmp_path / "datalist.json")
    assert not (tmp_path / "datalist.json").exists()


# --------------------------------------------------------------------------- ACDC


def test_acdc_subject_ranges():
    assert acdc_subject_names("1-3") == ["patient001", "patient002", "patient003"]
    assert acdc_subject_names("1-2,9") == ["patient001", "patient002", "patient009"]
    assert acdc_subject_names((81, "patient090")) == ["patient081", "patient090"]
    with pytest.raises(ValueError, match="A <= B"):
        acdc_subject_names("9-1")
    with pytest.raises(ValueError, match="range like 1-80"):
        acdc_subject_names("first")


def test_index_acdc_canonical_labels_frames_and_spacing(acdc_root, tmp_path, tiny):
    out = tmp_path / "index"
    datalist = index_acdc(acdc_root, out, seed=0)
    assert json.loads((out / "datalist.json").read_text()) == datalist
    records = [r for split in datalist.values() for r in split]
    assert len(records) == 20 and len({r["subject"] for r in records}) == 10
    by_subject = {s: _subjects(datalist, s) for s in datalist}
    assert all(by_subject[a].isdisjoint(by_subject[b]) for a in by_subject for b in by_subject if a != b)
    assert [len(by_subject[s]) for s in ("training", "validation", "test")] == [7, 1, 2]

    ed, es = (r for r in records if r["subject"] == "patient001")
    assert (ed["frame"], ed["phase"], ed["frame_index"]) == ("ED", "ED", 0)  # Info.cfg ED: 1 (1-based)
    assert (es["frame"], es["phase"], es["frame_index"]) == ("ES", "ES", 2)  # Info.cfg ES: 3
    assert ed["image"] == str((acdc_root / "patient001" / "patient001_frame01.nii.gz").resolve())
    assert ed["label"] == str((out / "labels" / "patient001" / "frame_00_gt.nii.gz").resolve())
    assert ed["group"] == "NOR" and "cine" not in ed
    assert ed["spacing_zyx_mm"] == [8.0, 1.25, 1.25]  # from the zooms: the affine is diag(-1, -1, 1)
    cine_record = next(r for r in records if r["subject"] == "patient002")
    assert cine_record["cine"] == str((acdc_root / "patient002" / "patient002_4d.nii.gz").resolve())

    original = nib.load(str(acdc_root / "patient001" / "patient001_frame01_gt.nii.gz"))
    ours = nib.load(ed["label"])
    raw, canonical = np.asanyarray(original.dataobj), np.asanyarray(ours.dataobj)
    assert canonical.dtype == np.uint8 and raw.shape == canonical.shape
    assert (raw == 3).any() and (raw == 1).any()
    np.testing.assert_array_equal(canonical == 1, raw == 3)  # ACDC LV cavity -> 1
    np.testing.assert_array_equal(canonical == 3, raw == 1)  # ACDC RV cavity -> 3
    np.testing.assert_array_equal(canonical == 2, raw == 2)
    np.testing.assert_array_equal(xyz(tiny.sax.labels[0]), canonical)  # back to the phantom's canonical truth
    np.testing.assert_array_equal(ours.affine, original.affine)
    assert ours.header.get_zooms() == original.header.get_zooms()
    assert int(ours.header["sform_code"]) == 2 and int(ours.header["qform_code"]) == 0
    # images are never copied: only label files were written
    written = sorted(p.name for p in (out / "labels").rglob("*") if p.is_file())
    assert written == sorted(["frame_00_gt.nii.gz", "frame_02_gt.nii.gz"] * 10)


def test_index_acdc_is_deterministic_per_seed(acdc_root, tmp_path):
    def splits(datalist):
        return {k: [(r["subject"], r["frame_index"]) for r in v] for k, v in datalist.items()}

    first = splits(index_acdc(acdc_root, tmp_path / "a", seed=5))
    assert splits(index_acdc(acdc_root, tmp_path / "b", seed=5)) == first
    assert splits(index_acdc(acdc_root, tmp_path / "c", seed=6)) != first


def test_index_acdc_explicit_ranges(acdc_root, tmp_path):
    datalist = index_acdc(acdc_root, tmp_path / "out", subjects={"training": "1-6", "test": ["7-8", 10]})
    assert _subjects(datalist, "training") == {f"patient{i:03d}" for i in range(1, 7)}
    assert _subjects(datalist, "test") == {"patient007", "patient008", "patient010"}
    assert datalist["validation"] == []
    assert not (tmp_path / "out" / "labels" / "patient009").exists()  # in no list: not indexed


def test_index_acdc_datalist_loads_unchanged_through_monai(acdc_root, tmp_path):
    from monai.data import load_decathlon_datalist

    datalist = index_acdc(acdc_root, tmp_path / "out")
    loaded = load_decathlon_datalist(str(tmp_path / "out" / "datalist.json"), True, "training")
    assert loaded == datalist["training"]


def test_index_acdc_refuses_existing_outputs(acdc_root, tmp_path):
    out = tmp_path / "out"
    index_acdc(acdc_root, out)
    with pytest.raises(FileExistsError, match="datalist.json"):
        index_acdc(acdc_root, out)
    with pytest.raises(FileExistsError, match="patient001"):
        index_acdc(acdc_root, out, datalist_path=tmp_path / "elsewhere.json")
    assert not (tmp_path / "elsewhere.json").exists()
    datalist = index_acdc(acdc_root, out, seed=1, overwrite=True)
    assert json.loads((out / "datalist.json").read_text()) == datalist


@pytest.mark.parametrize("damage, error, named", [
    ("label_value", ValueError, "patient004/patient004_frame03_gt.nii.gz: label values \\[7\\]"),
    ("empty", ValueError, "patient006/patient006_frame01_gt.nii.gz: empty label mask"),
    ("info", FileNotFoundError, "patient005/Info.cfg: missing"),
    ("no_ed", ValueError, "patient005/Info.cfg: no 'ED:' line"),
    ("gt_missing", FileNotFoundError, "patient003_frame03_gt.nii.gz: missing"),
])
def test_index_acdc_bad_input_names_the_file_and_writes_nothing(tmp_path, tiny, damage, error, named):
    root = write_acdc(tmp_path / "acdc", tiny, {n: "NOR" for n in range(1, 7)})
    if damage == "label_value":
        path = root / "patient004" / "patient004_frame03_gt.nii.gz"
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj).copy()
        data[0, 0, 0] = 7
        acdc_nifti(data, path)
    elif damage == "empty":
        path = root / "patient006" / "patient006_frame01_gt.nii.gz"
        acdc_nifti(np.zeros(nib.load(str(path)).shape, np.uint8), path)
    elif damage == "info":
        (root / "patient005" / "Info.cfg").unlink()
    elif damage == "no_ed":
        (root / "patient005" / "Info.cfg").write_text("ES: 3\nGroup: NOR\n")
    elif damage == "gt_missing":
        (root / "patient003" / "patient003_frame03_gt.nii.gz").unlink()
    out = tmp_path / "out"
    with pytest.raises(error, match=named):
        index_acdc(root, out)
    assert not out.exists() or not any(out.rglob("*"))


def test_canonical_label_image_rejects_non_integer_labels(tmp_path):
    path = tmp_path / "gt.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), 1.5, np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="gt.nii.gz: label image holds non-integer values"):
        canonical_label_image(path, ACDC_TO_CANONICAL)


# --------------------------------------------------------------------------- M&Ms and M&Ms-2


def _nifti4d(array_tzhw: np.ndarray, path: Path, zooms=(1.3, 1.3, 9.0, 30.0)) -> None:
    affine = np.diag(list(zooms[:3]) + [1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(array_tzhw, (3, 2, 1, 0))), affine)
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


@pytest.fixture(scope="module")
def mnms_root(tmp_path_factory, tiny) -> Path:
    root = tmp_path_factory.mktemp("mnms")
    pixels = tiny.sax.pixels.astype(np.int16)
    rows = []
    for folder, code, ed, es in (("Training/Labeled", "A1A1A1", 0, 2), ("Training/Labeled", "A2A2A2", 1, 3),
                                 ("Validation", "B1B1B1", 0, 2), ("Testing", "C1C1C1", 3, 1)):
        d = root / folder / code
        d.mkdir(parents=True)
        labels = np.zeros_like(tiny.sax.labels, dtype=np.uint8)  # labels only on ED and ES
        labels[[ed, es]] = tiny.sax.labels[[ed, es]]
        _nifti4d(pixels, d / f"{code}_sa.nii.gz")
        _nifti4d(labels, d / f"{code}_sa_gt.nii.gz")
        rows.append(f"{code},Siemens,A,1,{ed},{es},NOR")
    unlabelled = root / "Training" / "Unlabeled" / "U1U1U1"
    unlabelled.mkdir(parents=True)
    _nifti4d(pixels, unlabelled / "U1U1U1_sa.nii.gz")
    # the open data set's header, spacing and case as distributed
    (root / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv").write_text(
        "External code,VendorName,Vendor,Centre, ED , ES ,Pathology\n" + "\n".join(rows) + "\n")
    return root


def test_index_mnms_extracts_ed_es_frames_with_canonical_labels(mnms_root, tmp_path, tiny):
    out = tmp_path / "out"
    datalist = index_mnms(mnms_root, out)
    assert _subjects(datalist, "training") == {"A1A1A1", "A2A2A2"}  # the data set's own split
    assert _subjects(datalist, "validation") == {"B1B1B1"} and _subjects(datalist, "test") == {"C1C1C1"}
    records = {(r["subject"], r["phase"]): r for split in datalist.values() for r in split}
    assert len(records) == 8  # the unlabelled subject is not indexed
    r = records[("C1C1C1", "ED")]
    assert r["frame_index"] == 3 and r["frame"] == "ED" and records[("C1C1C1", "ES")]["frame_index"] == 1
    assert r["cine"] == str((mnms_root / "Testing" / "C1C1C1" / "C1C1C1_sa.nii.gz").resolve())
    assert r["vendor"] == "A" and r["centre"] == "1" and r["group"] == "NOR"
    np.testing.assert_allclose(r["spacing_zyx_mm"], [9.0, 1.3, 1.3], rtol=1e-6)
    assert r["image"] == str((out / "frames" / "C1C1C1" / "frame_03.nii.gz").resolve())
    image, label = nib.load(r["image"]), nib.load(r["label"])
    assert image.shape == label.shape == (32, 32, tiny.sax.num_slices)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), xyz(tiny.sax.pixels[3].astype(np.int16)))
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), xyz(tiny.sax.labels[3]))
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.header.get_zooms(), (1.3, 1.3, 9.0), rtol=1e-6)


def test_index_mnms_seeded_split_and_refusal(mnms_root, tmp_path):
    datalist = index_mnms(mnms_root, tmp_path / "out", dataset_split=False, seed=0)
    splits = ("training", "validation", "test")  # the result also lists "skipped" subjects
    assert sum(len(_subjects(datalist, s)) for s in splits) == 4 and all(datalist[s] for s in splits)
    assert datalist["skipped"] == []
    with pytest.raises(FileExistsError, match="datalist.json"):
        index_mnms(mnms_root, tmp_path / "out")


def test_index_mnms_bad_input_names_the_file(mnms_root, tmp_path):
    broken = tmp_path / "mnms"
    shutil.copytree(mnms_root, broken)
    csv_path = broken / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
    # an ES frame off by one: its label frame is empty
    csv_path.write_text(csv_path.read_text().replace("B1B1B1,Siemens,A,1,0,2", "B1B1B1,Siemens,A,1,0,1"))
    with pytest.raises(ValueError, match=r"B1B1B1_sa_gt.nii.gz \(frame 1, 0-based, ES in the CSV\): empty label mask"):
        index_mnms(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    csv_path.write_text(csv_path.read_text().replace("B1B1B1", "Z9Z9Z9"))
    with pytest.raises(ValueError, match="opendataset.csv: no row for subject B1B1B1"):
        index_mnms(broken, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: not an M&Ms layout"):
        index_mnms(empty, tmp_path / "out")


def test_index_mnms2_points_at_originals_and_matches_cine_frames(tmp_path, tiny):
    dataset = tmp_path / "mnms2" / "dataset"
    frames = {"001": (0, 2), "002": (1, 3), "003": (2, 0)}
    for code, (ed, es) in frames.items():
        d = dataset / code
        d.mkdir(parents=True)
        _nifti4d(tiny.sax.pixels, d / f"{code}_SA_CINE.nii.gz")
        for phase, t in (("ED", ed), ("ES", es)):
            affine = np.diag([1.3, 1.3, 9.0, 1.0])
            nib.save(nib.Nifti1Image(xyz(tiny.sax.pixels[t]), affine), str(d / f"{code}_SA_{phase}.nii.gz"))
            nib.save(nib.Nifti1Image(xyz(tiny.sax.labels[t]).astype(np.uint8), affine),
                     str(d / f"{code}_SA_{phase}_gt.nii.gz"))
    (tmp_path / "mnms2" / "dataset_information.csv").write_text(
        "SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD\n"
        "1,NOR,SIEMENS,Avanto,1.5\n2,DLV,GE,Signa,1.5\n3,HC,PHILIPS,Achieva,3\n")
    out = tmp_path / "out"
    datalist = index_mnms(tmp_path / "mnms2", out, seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["datalist.json"]  # nothing converted
    records = {(r["subject"], r["phase"]): r for split in datalist.values() for r in split}
    assert len(records) == 6
    for code, (ed, es) in frames.items():
        assert records[(code, "ED")]["frame_index"] == ed and records[(code, "ES")]["frame_index"] == es
        assert records[(code, "ED")]["image"] == str((dataset / code / f"{code}_SA_ED.nii.gz").resolve())
        assert records[(code, "ES")]["label"] == str((dataset / code / f"{code}_SA_ES_gt.nii.gz").resolve())
    assert records[("002", "ED")]["vendor"] == "GE" and records[("002", "ED")]["group"] == "DLV"


# --------------------------------------------------------------------------- Kaggle DSB


def _one_slice(study: CineStudy, z: int) -> CineStudy:
    return CineStudy(pixels=study.pixels[:, z : z + 1], slice_affines=study.slice_affines[z : z + 1],
                     slice_spacing_mm=0.0, trigger_times_ms=study.trigger_times_ms, view="sax")


def _write_dsb_study(study_dir: Path, tiny, slices=range(3, 8), duplicate=False) -> None:
    """``study/sax_NN``: one series (one slice position x T phases) per folder, one StudyInstanceUID."""
    from pydicom.uid import generate_uid

    uid = generate_uid()
    for number, z in enumerate(slices, start=5):
        write_dicom_series(_one_slice(tiny.sax, z), study_dir / f"sax_{number}", series_number=number,
                           study_instance_uid=uid)
    if duplicate:  # a repeated acquisition at the first position, as some DSB studies have
        write_dicom_series(_one_slice(tiny.sax, slices[0]), study_dir / "sax_40", series_number=40,
                           study_instance_uid=uid)
    write_dicom_series(tiny.lax_2ch, study_dir / "2ch_20", series_number=20, study_instance_uid=uid)


@pytest.fixture(scope="module")
def dsb_root(tmp_path_factory, tiny) -> Path:
    root = tmp_path_factory.mktemp("dsb")
    _write_dsb_study(root / "train" / "1" / "study", tiny)
    _write_dsb_study(root / "train" / "2" / "study", tiny, duplicate=True)
    _write_dsb_study(root / "validate" / "3" / "study", tiny)
    _write_dsb_study(root / "test" / "4" / "study", tiny)
    (root / "train.csv").write_text("Id,Systole,Diastole\n1,51.2,140.9\n2,40,100\n")
    (root / "validate.csv").write_text("Id,Systole,Diastole\n3,60.5,150.25\n")
    return root


def test_read_kaggle_study_reads_all_sax_folders_as_one_stack(dsb_root, tiny):
    study = read_kaggle_study(dsb_root / "train" / "1" / "study")
    assert study.pixels.shape == (4, 5, 32, 32)
    np.testing.assert_allclose(study.slice_spacing_mm, tiny.sax.slice_spacing_mm, rtol=1e-3)
    # the generic reader (what the bundles' loaders call) reads a DSB study folder the same way
    for folder in (dsb_root / "train" / "1" / "study", dsb_root / "train" / "1"):
        generic = read_cine(folder)
        np.testing.assert_array_equal(generic.pixels, study.pixels)
        np.testing.assert_allclose(generic.slice_affines, study.slice_affines)


def test_index_kaggle_dsb_records_splits_and_skips(dsb_root, tmp_path, caplog):
    path = tmp_path / "datalist.json"
    with caplog.at_level(logging.WARNING, logger="cmrssl.data.kaggle_dsb"):
        result = index_kaggle_dsb(dsb_root, path)
    assert [s["folder"] for s in result["skipped"]] == [str(dsb_root / "train" / "2" / "study")]
    assert "TriggerTime" in result["skipped"][0]["reason"] or "phases" in result["skipped"][0]["reason"]
    assert any(str(dsb_root / "train" / "2" / "study") in m for m in caplog.messages)
    written = json.loads(path.read_text())
    assert "skipped" not in written
    assert {s: _subjects(written, s) for s in written} == {"training": {"1"}, "validation": {"3"}, "test": {"4"}}
    first = written["training"]
    assert [r["frame_index"] for r in first] == [0, 1, 2, 3] and [r["frame"] for r in first] == ["0", "1", "2", "3"]
    assert first[0]["image"] == first[0]["cine"] == str((dsb_root / "train" / "1" / "study").resolve())
    assert (first[0]["edv_ml"], first[0]["esv_ml"]) == (140.9, 51.2)
    assert written["validation"][0]["edv_ml"] == 150.25 and "edv_ml" not in written["test"][0]
    assert first[0]["phase"] == "other" and len(first[0]["spacing_zyx_mm"]) == 3


# --------------------------------------------------------------------------- generic DICOM folder


def test_index_dicom_folder_subjects_skips_and_no_patient_data(tmp_path, tiny, caplog):
    import pydicom

    root = tmp_path / "dicoms"
    write_dicom_series(tiny.sax, root / "site_a" / "case_01" / "sax")
    write_dicom_series(tiny.lax_4ch, root / "site_a" / "case_01" / "4ch")
    write_dicom_series(tiny.sax, root / "site_b" / "case_02")
    (root / "site_b" / "notes").mkdir(parents=True)
    (root / "site_b" / "notes" / "readme.txt").write_text("not DICOM")
    for f in (root / "site_b" / "case_02").iterdir():  # identifying tags a real export would carry
        ds = pydicom.dcmread(str(f))
        ds.PatientName, ds.PatientID = "Doe^Jane", "MRN778899"
        ds.PatientBirthDate, ds.StudyDate = "19610203", "20150607"
        ds.save_as(str(f))
    path = tmp_path / "datalist.json"
    with caplog.at_level(logging.WARNING):
        result = index_dicom_folder(root, path, seed=0, fractions={"training": 1.0})
    assert _subjects(result, "training") == {"site_a/case_01/sax", "site_b/case_02"}
    assert len(result["training"]) == 2 * tiny.sax.num_frames
    skipped = {Path(s["folder"]).name: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"4ch", "notes"} and "1 slice position" in skipped["4ch"]
    assert any("notes" in m for m in caplog.messages)
    record = result["training"][0]
    assert record["image"] == record["cine"] and Path(record["image"]).is_dir()
    np.testing.assert_allclose(record["spacing_zyx_mm"], tiny.sax.spacing_zyx_mm, rtol=1e-3)
    text = path.read_text() + "\n".join(caplog.messages)
    for secret in ("Doe", "Jane", "MRN778899", "19610203", "20150607"):
        assert secret not in text


# --------------------------------------------------------------------------- command line


def test_cli_phantom_writes_and_refuses(phantom_cohort, tmp_path):
    path = tmp_path / "datalist.json"
    done = _run("phantom", phantom_cohort, "--datalist", path, "--seed", 0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "training: 1 subject, %d records" % len(json.loads(path.read_text())["training"]),
        "validation: 1 subject, %d records" % len(json.loads(path.read_text())["validation"]),
        "test: 1 subject, %d records" % len(json.loads(path.read_text())["test"]),
    ]
    before = path.read_text()
    refused = _run("phantom", phantom_cohort, "--datalist", path, "--seed", 3)
    assert refused.returncode == 2 and "already exists" in refused.stderr and "Traceback" not in refused.stderr
    assert path.read_text() == before
    missing = _run("phantom", phantom_cohort)
    assert missing.returncode == 2 and "--datalist" in missing.stderr
    fixed = _run("phantom", phantom_cohort, "--datalist", tmp_path / "fixed.json", "--train_subjects", "1-2",
                 "--test_subjects", "0")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.splitlines()[:3] == [
        "training: 2 subjects, %d records" % len(json.loads((tmp_path / "fixed.json").read_text())["training"]),
        "validation: 0 subjects, 0 records",
        "test: 1 subject, %d records" % len(json.loads((tmp_path / "fixed.json").read_text())["test"]),
    ]
    unknown = _run("phantom", phantom_cohort, "--datalist", tmp_path / "bad.json", "--test_subjects", "0-9")
    assert unknown.returncode == 2 and "phantom_003" in unknown.stderr and "Traceback" not in unknown.stderr
    assert not (tmp_path / "bad.json").exists()


def test_cli_acdc_ranges_and_refusal(acdc_root, tmp_path):
    out = tmp_path / "out"
    done = _run("acdc", acdc_root, "--out_dir", out, "--train_subjects", "1-8", "--test_subjects", "9-10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == ["training: 8 subjects, 16 records", "validation: 0 subjects, 0 records",
                                            "test: 2 subjects, 4 records"]
    datalist = json.loads((out / "datalist.json").read_text())
    assert _subjects(datalist, "test") == {"patient009", "patient010"}
    refused = _run("acdc", acdc_root, "--out_dir", out)
    assert refused.returncode == 2 and "datalist.json already exists" in refused.stderr
    assert "Traceback" not in refused.stderr
    bad = _run("acdc", acdc_root, "--out_dir", tmp_path / "other", "--test_subjects", "90-99")
    assert bad.returncode == 2 and "not found" in bad.stderr and not (tmp_path / "other").exists()
