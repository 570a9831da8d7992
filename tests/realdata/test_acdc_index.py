"""Indexing the real ACDC training set from ../shared/data (skipped when absent); outputs in tmp_path only."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrssl.data.acdc import index_acdc, read_info_cfg

pytestmark = pytest.mark.realdata

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def acdc_index(acdc_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("acdc_index")
    return out, index_acdc(acdc_root, out, seed=0)


def test_all_patients_two_frames_each(acdc_root, acdc_index):
    out, datalist = acdc_index
    records = [r for split in datalist.values() for r in split]
    assert len({r["subject"] for r in records}) == 100 and len(records) == 200
    assert json.loads((out / "datalist.json").read_text()) == datalist
    splits = [{r["subject"] for r in datalist[s]} for s in ("training", "validation", "test")]
    assert [len(s) for s in splits] == [70, 10, 20]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    for split in splits:  # stratified: each group keeps its fifth of every split
        groups = [next(r["group"] for r in records if r["subject"] == s) for s in split]
        assert {groups.count(g) for g in ("NOR", "MINF", "DCM", "HCM", "RV")} == {len(split) // 5}


def test_ed_es_frames_match_info_cfg(acdc_root, acdc_index):
    _, datalist = acdc_index
    for record in (r for split in datalist.values() for r in split):
        info = read_info_cfg(acdc_root / record["subject"] / "Info.cfg")
        assert record["frame_index"] == int(info[record["phase"]]) - 1
        assert record["group"] == info["Group"]
        assert Path(record["image"]).name == f"{record['subject']}_frame{int(info[record['phase']]):02d}.nii.gz"
        assert Path(record["image"]).parent == (acdc_root / record["subject"]).resolve()
        dx, dy, dz = (float(z) for z in nib.load(record["image"]).header.get_zooms()[:3])
        assert record["spacing_zyx_mm"] == [dz, dy, dx]


def test_labels_are_canonical(acdc_root, acdc_index):
    _, datalist = acdc_index
    ed = next(r for split in datalist.values() for r in split if r["subject"] == "patient001" and r["phase"] == "ED")
    raw = np.asanyarray(nib.load(str(acdc_root / "patient001" / "patient001_frame01_gt.nii.gz")).dataobj)
    ours = np.asanyarray(nib.load(ed["label"]).dataobj)
    assert ours.dtype == np.uint8 and set(np.unique(ours).tolist()) == {0, 1, 2, 3}
    assert (raw == 3).sum() > 0
    np.testing.assert_array_equal(ours == 1, raw == 3)  # LV cavity: ACDC 3 -> canonical 1
    np.testing.assert_array_equal(ours == 3, raw == 1)  # RV cavity: ACDC 1 -> canonical 3
    np.testing.assert_array_equal(ours == 2, raw == 2)


def test_patient090_cine_is_recorded(acdc_root, acdc_index):
    _, datalist = acdc_index
    with_cine = {r["subject"] for split in datalist.values() for r in split if "cine" in r}
    expected = {p.parent.name for p in acdc_root.glob("patient*/patient*_4d.nii.gz")}
    assert with_cine == expected


def test_cli_range_split_puts_81_to_100_in_test(acdc_root, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "index.py"), "acdc", str(acdc_root), "--out_dir", str(out),
         "--train_subjects", "1-80", "--test_subjects", "81-100"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == ["training: 80 subjects, 160 records", "validation: 0 subjects, 0 records",
                                            "test: 20 subjects, 40 records"]
    datalist = json.loads((out / "datalist.json").read_text())
    assert {r["subject"] for r in datalist["test"]} == {f"patient{i:03d}" for i in range(81, 101)}
    assert {r["subject"] for r in datalist["training"]} == {f"patient{i:03d}" for i in range(1, 81)}
