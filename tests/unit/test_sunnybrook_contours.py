"""Sunnybrook contours on synthetic inputs: parsing, polygon fill (against a
brute-force reference and exact counts), image-number mapping from DICOM
headers, labels and the indexer's outputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cmrssl.data.sunnybrook import (
    find_contour_files,
    find_sunnybrook_subjects,
    image_number_to_slice_phase,
    index_sunnybrook,
    instance_number_map,
    polygon_mask,
    read_contour,
    read_sunnybrook_study,
)
from cmrssl.io.cine import CineStudy
from cmrssl.io.dicom import read_dicom_cine, write_dicom_series


def _brute_force_even_odd(polygon: np.ndarray, shape) -> np.ndarray:
    """Textbook per-pixel crossing test (slow, only for the comparison)."""
    out = np.zeros(shape, bool)
    n = len(polygon)
    for r in range(shape[0]):
        for c in range(shape[1]):
            inside = False
            for k in range(n):
                x0, y0 = polygon[k]
                x1, y1 = polygon[(k + 1) % n]
                if (y0 > r) != (y1 > r) and c < x0 + (r - y0) * (x1 - x0) / (y1 - y0):
                    inside = not inside
            out[r, c] = inside
    return out


def _write_contour(path, points) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.2f} {y:.2f}\n" for x, y in points))


def _square(c0, r0, c1, r1):
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]


# ------------------------------------------------------------------ parsing


def test_read_contour_parses_x_y_lines(tmp_path):
    path = tmp_path / "IM-0001-0048-icontour-manual.txt"
    path.write_text("130.50 118.00\n131.00 118.00\n\n131.50 117.50\n")
    pts = read_contour(path)
    np.testing.assert_allclose(pts, [[130.5, 118.0], [131.0, 118.0], [131.5, 117.5]])


@pytest.mark.parametrize(
    "text, message",
    [("1 2\n3 4 5\n6 7\n", r":2: expected 'x y'"), ("1 2\n3 abc\n6 7\n", r":2: expected two numbers"),
     ("1 2\n3 4\n", "at least 3 points"), ("1 2\nnan 4\n5 6\n", "non-finite")],
)
def test_read_contour_bad_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "IM-0001-0001-icontour-manual.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        read_contour(path)
    assert str(path) in str(err.value)


def test_read_contour_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such contour file"):
        read_contour(tmp_path / "nope.txt")


# ------------------------------------------------------------------ polygon fill


def test_square_on_pixel_centres_exact_counts():
    square = np.array(_square(2, 3, 6, 8), float)  # columns 2..6, rows 3..8
    closed = polygon_mask(square, (12, 10))
    assert closed.sum() == 5 * 6
    assert closed[3:9, 2:7].all()  # every edge's centres are in (the Sunnybrook convention)


def test_x_is_column_y_is_row():
    mask = polygon_mask(np.array(_square(10, 1, 12, 2), float), (5, 20))
    rows, cols = np.nonzero(mask)
    assert set(rows) == {1, 2} and set(cols) == {10, 11, 12}


def test_fill_matches_brute_force_on_random_polygons():
    rng = np.random.default_rng(3)
    for k in range(25):
        n = int(rng.integers(3, 12))
        pts = rng.uniform(-4, 24, size=(n, 2))
        if k % 2:  # half-pixel vertices like Sunnybrook's, with centres on edges
            pts = np.round(pts * 2) / 2
        expected = _brute_force_even_odd(pts, (20, 20))
        assert (polygon_mask(pts, (20, 20)) >= expected).all()  # the interior, plus centres on edges


def test_disc_polygon_area_close_to_analytic():
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius = 30.0
    pts = np.stack([64 + radius * np.cos(angles), 60 + radius * np.sin(angles)], axis=1)
    mask = polygon_mask(pts, (128, 128))
    assert mask.sum() == pytest.approx(np.pi * radius**2, rel=0.01)
    assert mask[60, 64] and not mask[60, 64 + 31]


def test_polygon_partly_outside_is_clipped_and_bad_polygons_raise():
    mask = polygon_mask(np.array(_square(-5, -5, 2, 2), float), (6, 6))
    assert mask.sum() == 9 and mask[:3, :3].all()
    assert not polygon_mask(np.array(_square(50, 50, 60, 60), float), (6, 6)).any()
    with pytest.raises(ValueError, match=r"\[N >= 3, 2\]"):
        polygon_mask(np.zeros((2, 2)), (6, 6))
    with pytest.raises(ValueError, match="non-finite"):
        polygon_mask(np.array([[0, 0], [1, np.nan], [2, 2]]), (6, 6))


# ------------------------------------------------------------------ files and mapping


def test_find_contour_files_groups_by_image(tmp_path):
    _write_contour(tmp_path / "i-contours" / "IM-0001-0048-icontour-manual.txt", _square(1, 1, 3, 3))
    _write_contour(tmp_path / "i-contours" / "IM-0001-0059-icontour-manual.txt", _square(1, 1, 3, 3))
    _write_contour(tmp_path / "o-contours" / "IM-0001-0059-ocontour-manual.txt", _square(0, 0, 4, 4))
    _write_contour(tmp_path / "p-contours" / "IM-0001-0059-p1contour-manual.txt", _square(0, 0, 4, 4))
    (tmp_path / "notes.txt").write_text("not a contour")
    found = find_contour_files(tmp_path)
    assert sorted(found) == [48, 59]
    assert set(found[59]) == {"i", "o"} and set(found[48]) == {"i"}
    with pytest.raises(ValueError, match="no IM-XXXX"):
        find_contour_files(tmp_path / "p-contours")


def test_image_number_to_slice_phase_sunnybrook_numbering():
    assert image_number_to_slice_phase(1) == (0, 0)
    assert image_number_to_slice_phase(48) == (2, 7)  # README: phase 8 (1-based)
    assert image_number_to_slice_phase(59) == (2, 18)  # README: phase 19 (1-based)
    with pytest.raises(ValueError):
        image_number_to_slice_phase(0)


NUM_FRAMES, NUM_SLICES, SIZE = 4, 3, 24


def _toy_study() -> CineStudy:
    rng = np.random.default_rng(7)
    pixels = rng.uniform(0, 100, size=(NUM_FRAMES, NUM_SLICES, SIZE, SIZE)).astype(np.float32)
    affines = np.repeat(np.diag([1.5, 1.5, 1.0, 1.0])[None], NUM_SLICES, axis=0)
    # A stack whose normal points to the patient's left-anterior-inferior (base -> apex).
    normal = np.array([1.0, -1.0, -1.0]) / np.sqrt(3)
    row_dir = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    col_dir = np.cross(normal, row_dir)
    for z in range(NUM_SLICES):
        affines[z, :3, 0] = row_dir * 1.5
        affines[z, :3, 1] = col_dir * 1.5
        affines[z, :3, 2] = normal
        affines[z, :3, 3] = np.array([10.0, 20.0, 30.0]) + z * 8.0 * normal
    return CineStudy(pixels=pixels, slice_affines=affines, slice_spacing_mm=8.0,
                     trigger_times_ms=np.arange(NUM_FRAMES) * 200.0, source="toy")


@pytest.fixture()
def toy_sunnybrook(tmp_path):
    """A Sunnybrook-shaped root whose InstanceNumbers are phase-major (not the
    Sunnybrook slice-major numbering), so only a header-based mapping is right."""
    root = tmp_path / "sunnybrook"
    dicom_dir = root / "dicoms" / "SCD9"
    write_dicom_series(_toy_study(), dicom_dir)
    instance_of = {}
    for path in sorted(dicom_dir.glob("*.dcm")):
        ds = pydicom.dcmread(str(path))
        n = int(ds.InstanceNumber)
        z, t = (n - 1) // NUM_FRAMES, (n - 1) % NUM_FRAMES
        ds.InstanceNumber = t * NUM_SLICES + z + 1
        ds.save_as(str(path), enforce_file_format=True)
        instance_of[(t, z)] = int(ds.InstanceNumber)
    contours = root / "contourfiles" / "SC-9"
    # ED = frame 2 (big cavity, slices 0 and 1, epicardium on slice 1), ES = frame 0 (small).
    for z in (0, 1):
        n = instance_of[(2, z)]
        _write_contour(contours / "i-contours" / f"IM-0001-{n:04d}-icontour-manual.txt", _square(6, 6, 15, 15))
        n = instance_of[(0, z)]
        _write_contour(contours / "i-contours" / f"IM-0001-{n:04d}-icontour-manual.txt", _square(8, 8, 12, 12))
    n = instance_of[(2, 1)]
    _write_contour(contours / "o-contours" / f"IM-0001-{n:04d}-ocontour-manual.txt", _square(4, 4, 17, 17))
    (root / "link.csv").write_text("patient_id,original_id\nSCD9,SC-9\n")
    return root, instance_of


def test_instance_map_from_headers_not_from_numbering(toy_sunnybrook):
    root, instance_of = toy_sunnybrook
    study = read_dicom_cine(root / "dicoms" / "SCD9")
    mapping = instance_number_map(root / "dicoms" / "SCD9", study)
    assert len(mapping) == NUM_FRAMES * NUM_SLICES
    for (t, z), n in instance_of.items():
        assert mapping[n][:2] == (t, z)


def test_labels_land_on_the_mapped_frames_and_slices(toy_sunnybrook):
    root, _ = toy_sunnybrook
    study, details = read_sunnybrook_study(root / "dicoms" / "SCD9", root / "contourfiles" / "SC-9")
    assert details.labelled_frames == [0, 2]
    assert details.labelled_slices == {0: [0, 1], 2: [0, 1]}
    labels = study.labels
    assert (labels[[1, 3]] == -1).all()  # unlabelled frames
    assert (labels[2, 0] == 1).sum() == 10 * 10
    assert (labels[0, 1] == 1).sum() == 5 * 5
    assert (labels[2, 1] == 2).sum() == 14 * 14 - 10 * 10  # o-contour minus i-contour
    assert (labels[2, 0] == 2).sum() == 0  # no epicardium drawn there
    assert (labels[2, 2] == 0).all()  # untraced slice of a labelled frame is background
    assert set(np.unique(labels[0])) == {0, 1}


def test_labels_report_where_the_myocardium_is_complete(toy_sunnybrook):
    root, _ = toy_sunnybrook
    _, details = read_sunnybrook_study(root / "dicoms" / "SCD9", root / "contourfiles" / "SC-9")
    assert details.endo_in_epi == {(2, 1): 1.0}  # the one slice with both contours
    assert details.myocardium_slices == {2: [1]} and details.myocardium_dropped == {}
    # an LV mass from frame 2 would miss slice 0 (traced cavity, no o-contour); ES has none at all
    assert details.myocardium_incomplete(2) == [0] and details.myocardium_incomplete(0) == [0, 1]


def test_index_sunnybrook_writes_frames_and_records(toy_sunnybrook, tmp_path):
    root, _ = toy_sunnybrook
    out = tmp_path / "converted"
    assert [s for s, _, _ in find_sunnybrook_subjects(root)] == ["SCD9"]
    records = index_sunnybrook(root, out)
    json.dumps(records)
    by_phase = {r["phase"]: r for r in records}
    assert set(by_phase) == {"ED", "ES"}
    ed, es = by_phase["ED"], by_phase["ES"]
    assert (ed["frame_index"], es["frame_index"]) == (2, 0)
    assert ed["frame"] == "ED" and ed["subject"] == "SCD9"
    assert ed["spacing_zyx_mm"] == pytest.approx([8.0, 1.5, 1.5], abs=1e-3)
    assert ed["labelled_slices"] == [0, 1] and ed["myocardium_dropped_slices"] == []
    image = nib.load(ed["image"])
    label = np.asarray(nib.load(ed["label"]).dataobj)
    assert image.shape == (SIZE, SIZE, NUM_SLICES) and label.shape == (SIZE, SIZE, NUM_SLICES)
    # On disk [x=col, y=row, z]: the 10x10 cavity square of slice 0 is columns/rows 6..15.
    assert (label[6:16, 6:16, 0] == 1).all() and (label[:, :, 0] == 1).sum() == 100
    study = read_dicom_cine(ed["cine"])
    np.testing.assert_allclose(np.asarray(image.dataobj)[:, :, 1].T, study.pixels[2, 1], rtol=1e-6)
    assert sorted(p.name for p in (out / "SCD9").iterdir()) == [
        "frame_00.nii.gz", "frame_00_gt.nii.gz", "frame_02.nii.gz", "frame_02_gt.nii.gz"]
    before = {p: p.stat().st_mtime_ns for p in (out / "SCD9").iterdir()}
    with pytest.raises(FileExistsError):
        index_sunnybrook(root, out)
    assert {p: p.stat().st_mtime_ns for p in (out / "SCD9").iterdir()} == before
    assert len(index_sunnybrook(root, out, overwrite=True)) == 2


def test_find_subjects_without_contours_is_an_error(tmp_path):
    (tmp_path / "dicoms" / "A").mkdir(parents=True)
    (tmp_path / "contourfiles").mkdir()
    with pytest.raises(ValueError, match="no subject with both"):
        find_sunnybrook_subjects(tmp_path)
    with pytest.raises(FileNotFoundError, match="contourfiles|dicoms"):
        find_sunnybrook_subjects(tmp_path / "dicoms")
