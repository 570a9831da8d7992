"""Anatomical-position labels (``cmrssl.data.position``): geometry, invariance, refusals, indexers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cmrssl.data.dicom_folder import index_dicom_folder
from cmrssl.data.kaggle_dsb import long_axis_folders
from cmrssl.data.phantom import generate_subject, write_phantom_subject
from cmrssl.data.position import (
    ANTERIOR_REFERENCE_LPS,
    BASE_REFERENCE_LPS,
    BOX_SIZE_MM,
    BOX_STEP_MM,
    LATERAL_REFERENCE_LPS,
    NUM_POSITION_CLASSES,
    PositionSkip,
    check_one_world,
    lax_position_labels,
    sax_position_boxes,
    sax_position_labels,
)
from cmrssl.io import CineStudy, read_cine, write_dicom_series
from cmrssl.io.geometry import APEX_DIRECTION_LPS

SEEDS = (0, 3, 11, 29, 50)


def _small(seed: int):
    return generate_subject(seed, num_frames=4, image_size=48)


# --------------------------------------------------------------------------- phantom geometry


@pytest.mark.parametrize("seed", SEEDS)
def test_crossing_box_is_on_the_true_lv_axis(seed):
    """On every mid-ventricular slice (15-45 mm below the LV base centre) box 1 sits on the long axis:
    the README's figure, measured by tools/benchmarks/position_box_error.py, on small phantoms."""
    from position_box_error import box_centre_errors

    errors = box_centre_errors([seed], num_frames=4, image_size=48)
    assert errors["mid_ventricular_slices"] >= 2
    assert errors["max_box_centre_error_px"] < 1e-6 and errors["max_label_centroid_error_px"] < 2.0
    subject = _small(seed)
    boxes = sax_position_boxes(subject.sax, subject.lax_2ch, subject.lax_4ch)
    labels = sax_position_labels(subject.sax, subject.lax_2ch, subject.lax_4ch)
    assert labels.dtype == np.uint8 and labels.shape == subject.sax.pixels.shape[1:]
    assert labels.max() < NUM_POSITION_CLASSES
    # the directions follow the anatomy: lateral away from the RV, base away from the apex
    rv = np.array(subject.analytic["rv_direction_lps"])
    assert boxes[0].directions[0] @ rv < -0.9
    lax = lax_position_labels(subject.sax, subject.lax_2ch, subject.lax_4ch)
    assert lax.shape == (1,) + subject.lax_4ch.pixels.shape[2:] and set(np.unique(lax)) >= {0, 1, 2, 4, 6, 8}


def test_references_form_an_orthonormal_heart_frame():
    frame = np.stack([LATERAL_REFERENCE_LPS, ANTERIOR_REFERENCE_LPS, APEX_DIRECTION_LPS])
    np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(BASE_REFERENCE_LPS, -np.asarray(APEX_DIRECTION_LPS))


def _transformed(study: CineStudy, kind: str) -> CineStudy:
    """The same acquisition stored with its pixel grid flipped / rotated (each pixel keeps its world point)."""
    pixels, affines = study.pixels.copy(), study.slice_affines.copy()
    height, width = pixels.shape[2:]
    if kind in ("flip_columns", "rot90"):
        if kind == "rot90":  # transpose, then flip columns: a 90-degree in-plane rotation
            pixels = np.swapaxes(pixels, 2, 3)
            affines[:, :3, [0, 1]] = affines[:, :3, [1, 0]]
            height, width = width, height
        pixels = pixels[..., ::-1]
        affines[:, :3, 3] += (width - 1) * affines[:, :3, 0]
        affines[:, :3, 0] *= -1
    elif kind == "flip_rows":
        pixels = pixels[:, :, ::-1]
        affines[:, :3, 3] += (height - 1) * affines[:, :3, 1]
        affines[:, :3, 1] *= -1
    affines[:, :3, 2] = np.cross(affines[:, :3, 0], affines[:, :3, 1]) / np.linalg.norm(
        np.cross(affines[:, :3, 0], affines[:, :3, 1]), axis=-1, keepdims=True)
    return CineStudy(pixels=np.ascontiguousarray(pixels), slice_affines=affines,
                     slice_spacing_mm=study.slice_spacing_mm, view=study.view)


def _undo(labels: np.ndarray, kind: str) -> np.ndarray:
    if kind == "flip_columns":
        return labels[..., ::-1]
    if kind == "flip_rows":
        return labels[..., ::-1, :]
    return np.swapaxes(labels[..., ::-1], -2, -1)


@pytest.mark.parametrize("kind", ["rot90", "flip_columns", "flip_rows"])
def test_classes_follow_the_anatomy_not_the_pixel_order(kind):
    subject = _small(3)
    sax, lax_2ch, lax_4ch = subject.sax, subject.lax_2ch, subject.lax_4ch
    reference = sax_position_labels(sax, lax_2ch, lax_4ch)
    moved = sax_position_labels(_transformed(sax, kind), lax_2ch, lax_4ch)
    np.testing.assert_array_equal(_undo(moved, kind), reference)
    # the 4Ch image and the other long-axis view stored another way: the same classes too
    reference_lax = lax_position_labels(sax, lax_2ch, lax_4ch)
    moved_lax = lax_position_labels(sax, _transformed(lax_2ch, kind), _transformed(lax_4ch, kind))
    np.testing.assert_array_equal(_undo(moved_lax, kind), reference_lax)


def test_dicom_and_nifti_inputs_give_the_same_labels(tmp_path):
    subject = _small(11)
    folder = write_phantom_subject(subject, tmp_path / "phantom_011")
    nifti = [read_cine(folder / "sax_cine.nii.gz"), read_cine(folder / "lax_2ch.nii.gz", view="2ch"),
             read_cine(folder / "lax_4ch.nii.gz", view="4ch")]
    dicom = [read_cine(folder / "dicom" / "sax"), read_cine(folder / "dicom" / "2ch", view="2ch"),
             read_cine(folder / "dicom" / "4ch", view="4ch")]
    np.testing.assert_array_equal(sax_position_labels(*dicom), sax_position_labels(*nifti))
    np.testing.assert_array_equal(lax_position_labels(*dicom), lax_position_labels(*nifti))
    np.testing.assert_array_equal(sax_position_labels(*nifti),
                                  sax_position_labels(subject.sax, subject.lax_2ch, subject.lax_4ch))


# --------------------------------------------------------------------------- hand-computed case


def _plane_study(origin, col, row, shape=(64, 64), view="4ch") -> CineStudy:
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 3] = col, row, origin
    affine[:3, 2] = np.cross(col, row) / np.linalg.norm(np.cross(col, row))
    return CineStudy(pixels=np.zeros((2, 1) + shape, np.float32), slice_affines=affine[None], slice_spacing_mm=0.0,
                     view=view)


def _axis_aligned_views(two_ch_x: float = 0.0):
    """SA slices z = 0, -10, -20 mm (64 x 64 px of 2 mm, pixel (c, r) at (2c - 64, 2r - 64, z));
    4Ch plane y = 0 and 2Ch plane x = two_ch_x, both 64 x 64 px of 2 mm with rows going down (-z)."""
    affines = np.stack([np.eye(4)] * 3)
    for z, height in enumerate((0.0, -10.0, -20.0)):
        affines[z, :3, 0], affines[z, :3, 1] = (2.0, 0, 0), (0, 2.0, 0)
        affines[z, :3, 3] = (-64.0, -64.0, height)
    sax = CineStudy(pixels=np.zeros((2, 3, 64, 64), np.float32), slice_affines=affines, slice_spacing_mm=10.0)
    lax_4ch = _plane_study((-64.0, 0.0, 54.0), (2.0, 0, 0), (0, 0, -2.0))
    lax_2ch = _plane_study((two_ch_x, -64.0, 54.0), (0, 2.0, 0), (0, 0, -2.0), view="2ch")
    return sax, lax_2ch, lax_4ch


def _box(labels, rows, cols, value):
    expected = np.zeros_like(labels)
    expected[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = value
    return expected


def test_hand_computed_axis_aligned_case():
    """Worked from the headers alone.

    SA: the 4Ch plane y = 0 cuts row 32, the 2Ch plane x = 0 column 32; crossing (32, 32).
    Lateral reference (1, 1, 0)/sqrt2 picks +x (cos 0.71), anterior (1, -1, 2)/sqrt6 picks -y
    (cos 0.41). Box 1: |2c - 64| <= 10 -> c 27..37, rows the same. Box 2 (x = 54.6):
    44.6 <= 2c - 64 <= 64.6 -> c 55..63 (image edge); box 4 (x = -54.6) c 0..9; box 6 (y = -54.6)
    rows 0..9; box 8 rows 55..63; boxes 3, 5, 7, 9 (109.2 mm) lie outside the 128 mm field.
    4Ch: pixel (c, r) at (2c - 64, 0, 54 - 2r); mid SA slice z = -10 -> row 32. Lateral +x gives
    box 2 at c 55..63; base reference (-1, 1, 1)/sqrt3 picks +z (cos 0.58): box 6 at
    z = 44.6 -> rows 0..9, box 8 at z = -64.6 -> rows 55..63.
    """
    sax, lax_2ch, lax_4ch = _axis_aligned_views()
    labels = sax_position_labels(sax, lax_2ch, lax_4ch)
    expected = (_box(labels[0], (27, 37), (27, 37), 1) + _box(labels[0], (27, 37), (55, 63), 2)
                + _box(labels[0], (27, 37), (0, 9), 4) + _box(labels[0], (0, 9), (27, 37), 6)
                + _box(labels[0], (55, 63), (27, 37), 8))
    for z in range(3):
        np.testing.assert_array_equal(labels[z], expected)
    lax = lax_position_labels(sax, lax_2ch, lax_4ch)[0]
    expected_lax = (_box(lax, (27, 37), (27, 37), 1) + _box(lax, (27, 37), (55, 63), 2)
                    + _box(lax, (27, 37), (0, 9), 4) + _box(lax, (0, 9), (27, 37), 6)
                    + _box(lax, (55, 63), (27, 37), 8))
    np.testing.assert_array_equal(lax, expected_lax)
    assert BOX_SIZE_MM == 20.0 and BOX_STEP_MM == 54.6


@pytest.mark.parametrize("case, match", [
    ("no_2ch", "no 2Ch long-axis view"),
    ("no_4ch", "no 4Ch long-axis view"),
    ("parallel", "parallel"),
    ("parallel_to_sax", "parallel"),
    ("miss", "miss the stack"),
    ("ambiguous", "orientation ambiguous"),
])
def test_refusals_say_why(case, match):
    sax, lax_2ch, lax_4ch = _axis_aligned_views()
    if case == "no_2ch":
        lax_2ch = None
    elif case == "no_4ch":
        lax_4ch = None
    elif case == "parallel":
        lax_2ch = _plane_study((-64.0, 5.0, 54.0), (2.0, 0, 0), (0, 0, -2.0), view="2ch")
    elif case == "parallel_to_sax":
        lax_2ch = _plane_study((-64.0, -64.0, -5.0), (2.0, 0, 0), (0, 2.0, 0), view="2ch")
    elif case == "miss":
        sax, lax_2ch, lax_4ch = _axis_aligned_views(two_ch_x=300.0)
    elif case == "ambiguous":  # 4Ch line along (1, -1, 0): perpendicular to the lateral reference
        s = np.sqrt(0.5)
        lax_4ch = _plane_study((-64.0 * s, 64.0 * s, 54.0), (2 * s, -2 * s, 0), (0, 0, -2.0))
        lax_2ch = _plane_study((-64.0 * s, -64.0 * s, 54.0), (2 * s, 2 * s, 0), (0, 0, -2.0), view="2ch")
    with pytest.raises(PositionSkip, match=match) as info:
        sax_position_labels(sax, lax_2ch, lax_4ch)
    assert isinstance(info.value, ValueError)


def _with_frames(study: CineStudy, *uids: str) -> CineStudy:
    study.frame_of_reference_uids = tuple(uids)
    study.source = f"/data/{study.view}"
    return study


def test_one_world_rule_compares_frames_of_reference():
    """Series of two frames of reference are refused (UIDs only in the message); none or several per series
    cannot be compared: a note, and the boxes are drawn as without UIDs."""
    sax, lax_2ch, lax_4ch = _axis_aligned_views()
    expected = sax_position_labels(sax, lax_2ch, lax_4ch)
    views = _with_frames(sax, "1.2.3"), _with_frames(lax_2ch, "1.2.3"), _with_frames(lax_4ch, "4.5.6")
    with pytest.raises(PositionSkip, match=r"^/data/4ch: FrameOfReferenceUID 4.5.6 differs from the short-axis "
                                           r"series' 1.2.3 \(/data/sax\): the two cannot") as info:
        sax_position_labels(*views)
    assert "4.5.6" not in info.value.written and "1.2.3" not in info.value.written
    with pytest.raises(PositionSkip, match="/data/4ch: FrameOfReferenceUID"):
        lax_position_labels(*views)
    assert check_one_world(*[_with_frames(v, "1.2.3") for v in views]) == []
    notes = check_one_world(_with_frames(sax, "1.2.3", "1.2.4"), _with_frames(lax_2ch, ""),
                            _with_frames(lax_4ch, "4.5.6"))
    assert [n.split(":")[0] for n in notes] == ["/data/sax", "/data/2ch"]
    assert "2 different FrameOfReferenceUIDs" in notes[0] and "carry no FrameOfReferenceUID" in notes[1]
    np.testing.assert_array_equal(sax_position_labels(*views[:2], _with_frames(lax_4ch, "")), expected)


def test_dicom_reader_carries_the_frame_of_reference(tmp_path):
    subject = generate_subject(3, num_frames=4, image_size=32)
    write_dicom_series(subject.lax_4ch, tmp_path / "4ch", frame_of_reference_uid="1.2.3.4")
    assert read_cine(tmp_path / "4ch", view="4ch").frame_of_reference_uids == ("1.2.3.4",)
    assert subject.lax_4ch.frame_of_reference_uids == ()  # not read from DICOM


# --------------------------------------------------------------------------- indexers


def test_dicom_folder_and_dsb_records_name_the_long_axis_series(tmp_path, caplog):
    subject = generate_subject(7, num_frames=4, image_size=32)
    root = tmp_path / "dicoms"
    write_dicom_series(subject.sax, root / "case_01" / "sax", study_instance_uid="1.2.3.1")
    write_dicom_series(subject.lax_2ch, root / "case_01" / "series_7", series_description="CINE 2CH",
                       study_instance_uid="1.2.3.1")
    write_dicom_series(subject.lax_4ch, root / "case_01" / "4Ch_cine", study_instance_uid="1.2.3.1")
    write_dicom_series(subject.sax, root / "case_02" / "sax", study_instance_uid="1.2.3.2")
    with caplog.at_level(logging.WARNING):
        result = index_dicom_folder(root, tmp_path / "datalist.json", fractions={"training": 1.0})
    by_subject = {r["subject"]: r for r in result["training"]}
    assert by_subject["case_01/sax"]["lax_2ch"] == str((root / "case_01" / "series_7").resolve())
    assert by_subject["case_01/sax"]["lax_4ch"] == str((root / "case_01" / "4Ch_cine").resolve())
    assert "lax_2ch" not in by_subject["case_02/sax"] and "lax_4ch" not in by_subject["case_02/sax"]
    assert not caplog.messages  # attached long-axis series are no lost data: no warning
    assert all("long-axis series of case_01/sax" in s["reason"] for s in result["skipped"])
    # Kaggle DSB: the lowest-numbered 2ch_N / 4ch_N folder of a study
    study = tmp_path / "dsb" / "1" / "study"
    for name in ("sax_5", "2ch_21", "2ch_9", "4ch_20"):
        (study / name).mkdir(parents=True)
    assert long_axis_folders(study.parent) == {"lax_2ch": str((study / "2ch_9").resolve()),
                                               "lax_4ch": str((study / "4ch_20").resolve())}
    assert long_axis_folders(Path(tmp_path / "dsb" / "none")) == {}
