"""The record checks every datalist load runs (``cmrssl.data.subsets.check_record_contents``): what is
refused, and the records of the indexers that share frame numbers legitimately (no false refusals).
The refusals themselves are tested through the bundles in tests/bundle/test_bad_input_records.py."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cmrssl.data.subsets import check_record_contents, frame_number, record_volumes


def _nifti(path, shape):
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), np.eye(4)), str(path))
    return str(path)


def test_views_of_one_subject_may_share_frame_numbers(tmp_path):
    # position datalists: one record per frame of the short-axis and of the 4Ch cine (4D images, no 'cine')
    sax, lax = _nifti(tmp_path / "sax.nii.gz", (8, 8, 3, 4)), _nifti(tmp_path / "lax.nii.gz", (8, 8, 1, 4))
    records = [{"image": image, "subject": "s", "frame_index": t} for image in (sax, lax) for t in range(4)]
    check_record_contents(records, "datalist.json", "training")


def test_kaggle_style_records_repeat_their_study_volumes(tmp_path):
    records = [{"image": str(tmp_path), "cine": str(tmp_path), "subject": "1", "frame_index": t,
                "edv_ml": 150.0, "esv_ml": 60.0} for t in range(3)]
    check_record_contents(records, "datalist.json", "training")
    records[2]["edv_ml"] = 140.0
    with pytest.raises(ValueError, match=r"record 2 of 'training' \(subject 1\): edv_ml 140 / esv_ml 60, but "
                                         r"record 0 of the same subject gives 150 / 60"):
        check_record_contents(records, "datalist.json", "training")


def test_3d_frame_files_of_one_subject_claiming_one_frame_are_refused_without_a_cine(tmp_path):
    frames = [_nifti(tmp_path / f"frame_{t}.nii.gz", (8, 8, 3)) for t in range(2)]
    records = [{"image": frames[0], "subject": "s", "frame_index": 5}, {"image": frames[1], "subject": "s",
                                                                        "frame_index": 5}]
    with pytest.raises(ValueError, match="record 1 .*claims frame_index 5 of the subject's 3D frame files"):
        check_record_contents(records, "datalist.json", "training")
    records[1]["subject"] = "t"  # another subject's frame 5
    check_record_contents(records, "datalist.json", "training")
    same_file = [{"image": frames[0], "label": frames[0]}, {"image": frames[0], "label": frames[1]}]
    with pytest.raises(ValueError, match="record 1 .*claims the 3D frame"):
        check_record_contents(same_file, "train#dataset#data")


@pytest.mark.parametrize("value, expected", [(None, None), (-1, None), (0, 0), (7, 7), (3.0, 3), ("4", 4)])
def test_frame_numbers(value, expected):
    assert frame_number({"frame_index": value}) == expected


@pytest.mark.parametrize("value", [-2, 1.5, "ED", True])
def test_a_frame_index_that_is_no_frame_number_is_refused(value):
    with pytest.raises(ValueError, match="is not a frame number"):
        frame_number({"frame_index": value}, "r")


def test_study_volumes():
    assert record_volumes({"edv_ml": "150", "esv_ml": 60}) == (150.0, 60.0)
    assert record_volumes({"subject": "s"}) is None
    with pytest.raises(ValueError, match=r"r: edv_ml 60 is smaller than esv_ml 150 \(EF -150 %\)"):
        record_volumes({"edv_ml": 60, "esv_ml": 150}, "r")
