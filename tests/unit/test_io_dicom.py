"""DICOM cine series: write/read round trips and every bad input named in issue 2."""

import logging
import os
import random
import shutil

import numpy as np
import pydicom
import pytest

from cmrssl.io import CineReadError, CineWriteError, read_dicom_cine, read_long_axis_dicom, write_dicom_series
from io_cine_cases import long_axis_study, sax_study


def _quantum(study):
    # uint16 storage with slope (max - min) / 65535: error at most half a step
    return (float(study.pixels.max()) - float(study.pixels.min())) / 65535.0


@pytest.fixture()
def study():
    return sax_study()


@pytest.fixture()
def series(tmp_path, study):
    return write_dicom_series(study, tmp_path / "sax", series_number=7, series_description="sax cine")


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def _by_slice(folder):
    """{projection on normal rounded: [files]} of a written series."""
    groups = {}
    for f in _files(folder):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, float)
        n = np.cross(iop[:3], iop[3:])
        groups.setdefault(round(float(np.dot(n, np.array(ds.ImagePositionPatient, float))), 2), []).append(f)
    return [groups[k] for k in sorted(groups)]


def test_round_trip_with_shuffled_names_and_lying_slice_location(tmp_path, study, series):
    # Shuffle file names so that neither names nor InstanceNumber order the files,
    # and check the SliceLocation written is indeed misleading.
    files = _files(series)
    names = [f"img_{i:03d}.dcm" for i in range(len(files))]
    random.Random(3).shuffle(names)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for f, name in zip(files, names):
        shutil.copy(f, shuffled / name)
    locations = [float(pydicom.dcmread(f, stop_before_pixels=True).SliceLocation) for f in _files(series)[:: study.num_frames]]
    assert np.all(np.diff(locations) < 0)  # decreases base -> apex, whereas positions increase

    read = read_dicom_cine(shuffled)
    assert read.pixels.shape == study.pixels.shape
    np.testing.assert_allclose(read.slice_affines[:, :3, [0, 1, 3]], study.slice_affines[:, :3, [0, 1, 3]], atol=1e-4)
    assert read.slice_spacing_mm == pytest.approx(8.0, abs=1e-4)
    assert read.pixel_spacing_mm == pytest.approx((1.25, 1.4), abs=1e-6)
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)
    np.testing.assert_allclose(read.trigger_times_ms, study.trigger_times_ms, atol=1e-6)
    np.testing.assert_allclose(read.slice_normal, study.slice_normal, atol=1e-6)


def test_apex_first_source_is_reordered_base_to_apex(tmp_path):
    apex_first = sax_study(apex_first=True, labels=False)
    folder = write_dicom_series(apex_first, tmp_path / "sax")
    read = read_dicom_cine(folder)
    assert read.source_slice_index.tolist() == [4, 3, 2, 1, 0]
    np.testing.assert_allclose(read.pixels, apex_first.pixels[:, ::-1], atol=_quantum(apex_first) * 0.51)
    kept = read_dicom_cine(folder, slice_order="source")
    np.testing.assert_allclose(kept.pixels, apex_first.pixels, atol=_quantum(apex_first) * 0.51)


def test_phases_ordered_by_trigger_time_not_instance_number(tmp_path, study, series):
    # Reverse InstanceNumber within each slice: TriggerTime must win.
    for group in _by_slice(series):
        numbers = [int(pydicom.dcmread(f).InstanceNumber) for f in group]
        for f, n in zip(group, numbers[::-1]):
            ds = pydicom.dcmread(f)
            ds.InstanceNumber = n
            ds.save_as(f)
    read = read_dicom_cine(series)
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)


def test_instance_number_orders_phases_without_trigger_time(series, study):
    for f in _files(series):
        ds = pydicom.dcmread(f)
        del ds.TriggerTime
        ds.save_as(f)
    read = read_dicom_cine(series)
    assert read.trigger_times_ms is None
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)


def test_per_slice_trigger_jitter_gives_median_times(series, study):
    # Each slice is its own breath-hold: shift the times of one slice by 3 ms.
    for f in _by_slice(series)[1]:
        ds = pydicom.dcmread(f)
        ds.TriggerTime = float(ds.TriggerTime) + 3.0
        ds.save_as(f)
    read = read_dicom_cine(series)
    np.testing.assert_allclose(read.trigger_times_ms, study.trigger_times_ms, atol=1e-6)
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)


def test_kaggle_layout_one_series_per_folder(tmp_path, study):
    folders = []
    for z in reversed(range(study.num_slices)):  # folder order deliberately apex first
        one = sax_study(labels=False)
        one.pixels = study.pixels[:, z : z + 1].copy()
        one.slice_affines = study.slice_affines[z : z + 1].copy()
        folders.append(write_dicom_series(one, tmp_path / f"sax_{z + 5}", series_number=z + 5,
                                          study_instance_uid="1.2.3.4"))
    read = read_dicom_cine(folders)
    assert read.num_slices == study.num_slices
    assert read.slice_spacing_mm == pytest.approx(8.0, abs=1e-4)
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)


def test_long_axis_series_reads_as_one_slice(tmp_path):
    lax = long_axis_study(view="2ch")
    folder = write_dicom_series(lax, tmp_path / "2ch")
    read = read_long_axis_dicom(folder, view="2ch")
    assert read.view == "2ch" and read.num_slices == 1 and read.num_frames == lax.num_frames
    assert read.slice_spacing_mm == 0.0
    np.testing.assert_allclose(read.slice_affines[0, :3, [0, 1, 3]], lax.slice_affines[0, :3, [0, 1, 3]], atol=1e-4)
    with pytest.raises(CineReadError, match="one slice"):
        read_long_axis_dicom(write_dicom_series(sax_study(labels=False), tmp_path / "sax"))


def test_written_files_are_anonymous_mr_with_required_tags(series, study):
    ds = pydicom.dcmread(_files(series)[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert str(ds.PatientName) == "Anonymous" and "PatientBirthDate" not in ds
    assert int(ds.CardiacNumberOfImages) == study.num_frames
    assert float(ds.SpacingBetweenSlices) == pytest.approx(8.0)
    assert ds.pixel_array.dtype == np.uint16
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in _files(series)}
    assert len(uids) == study.num_frames * study.num_slices


# ----------------------------------------------------------------------------- bad input


def test_truncated_and_non_dicom_files_are_skipped_with_a_warning(series, study, caplog):
    (series / "notes.txt").write_text("not a dicom file\n")
    data = _files(series)[0].read_bytes()
    (series / "broken.dcm").write_bytes(data[:300])  # cut inside the header
    with caplog.at_level(logging.WARNING, logger="cmrssl.io.dicom"):
        read = read_dicom_cine(series)
    assert read.pixels.shape == study.pixels.shape
    assert "notes.txt" in caplog.text and "broken.dcm" in caplog.text


def test_truncated_member_is_named_and_breaks_phase_count(series, caplog):
    victim = _files(series)[6]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100])  # cut inside the pixel data
    with caplog.at_level(logging.WARNING, logger="cmrssl.io.dicom"):
        with pytest.raises(CineReadError, match=f"unequal number of phases.*1 files were skipped.*{victim.name}"):
            read_dicom_cine(series)
    assert victim.name in caplog.text


def test_mixed_series_are_named_and_one_can_be_picked(tmp_path, study, series):
    other = write_dicom_series(sax_study(num_frames=3, seed=5, labels=False), tmp_path / "other",
                               series_number=9, series_description="other")
    mixed = tmp_path / "mixed"
    shutil.copytree(series, mixed)
    for f in _files(other):
        shutil.copy(f, mixed / f"b_{f.name}")
    with pytest.raises(CineReadError) as err:
        read_dicom_cine(mixed)
    message = str(err.value)
    assert "2 series mixed" in message and "SeriesNumber 7" in message and "SeriesNumber 9" in message
    assert f"{study.num_frames * study.num_slices} files" in message and "15 files" in message
    picked = read_dicom_cine(mixed, series=9)
    assert picked.num_frames == 3
    assert read_dicom_cine(mixed, series="sax cine").num_frames == study.num_frames


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_tag_names_file_and_tag(series, tag):
    victim = _files(series)[3]
    ds = pydicom.dcmread(victim)
    delattr(ds, tag)
    ds.save_as(victim)
    with pytest.raises(CineReadError, match=f"{victim.name}.*missing {tag}"):
        read_dicom_cine(series)


def test_non_uniform_pixel_spacing_is_named(series):
    victim = _files(series)[5]
    ds = pydicom.dcmread(victim)
    ds.PixelSpacing = [1.5, 1.5]
    ds.save_as(victim)
    with pytest.raises(CineReadError, match=f"non-uniform PixelSpacing.*{victim.name}"):
        read_dicom_cine(series)


def test_inconsistent_orientation_is_named(series):
    victim = _files(series)[9]
    ds = pydicom.dcmread(victim)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(victim)
    with pytest.raises(CineReadError, match=f"inconsistent ImageOrientationPatient.*{victim.name}"):
        read_dicom_cine(series)


def test_gap_from_a_missing_slice_is_an_error(series):
    for f in _by_slice(series)[2]:
        f.unlink()
    with pytest.raises(CineReadError, match="irregular slice spacing: 16.00 mm"):
        read_dicom_cine(series)
    assert read_dicom_cine(series, allow_irregular_spacing=True).num_slices == 4


def test_unequal_phase_counts_per_slice_are_named(series):
    _by_slice(series)[1][2].unlink()
    with pytest.raises(CineReadError, match="unequal number of phases per slice"):
        read_dicom_cine(series)


def test_empty_or_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_dicom_cine(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(CineReadError, match="no readable DICOM image among 1 files.*a.txt"):
        read_dicom_cine(tmp_path / "junk")


def test_writer_refuses_existing_output_and_leaves_nothing_on_failure(tmp_path, study, series, monkeypatch):
    before = sorted(os.listdir(series))
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dicom_series(study, series)
    assert sorted(os.listdir(series)) == before

    bad = sax_study(labels=False)
    bad.pixels[0, 0, 0, 0] = np.nan
    with pytest.raises(CineWriteError, match="NaN"):
        write_dicom_series(bad, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()

    calls = {"n": 0}
    original = pydicom.dataset.Dataset.save_as

    def failing_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(study, tmp_path / "half")
    assert not (tmp_path / "half").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []
    with pytest.raises(OSError, match="disk full"):
        calls["n"] = 0
        write_dicom_series(study, series, overwrite=True)
    assert sorted(os.listdir(series)) == before  # the old series survives a failed overwrite


def test_mixed_series_listed_file_by_file_are_still_detected(tmp_path, series):
    other = write_dicom_series(sax_study(num_frames=3, seed=5, labels=False), tmp_path / "other", series_number=9)
    mixed = tmp_path / "mixed"
    shutil.copytree(series, mixed)
    for f in _files(other):
        shutil.copy(f, mixed / f"b_{f.name}")
    with pytest.raises(CineReadError, match="2 series mixed"):
        read_dicom_cine(_files(mixed))


def test_same_depth_but_shifted_in_plane_is_an_error(series):
    victim = _by_slice(series)[2][1]
    ds = pydicom.dcmread(victim)
    iop = np.array(ds.ImageOrientationPatient, float)
    ds.ImagePositionPatient = list(np.array(ds.ImagePositionPatient, float) + 5.0 * iop[:3])
    ds.save_as(victim)
    with pytest.raises(CineReadError, match="lies 5.00 mm in-plane") as err:
        read_dicom_cine(series)
    assert victim.name in str(err.value)


# ----------------------------------------------------------------------------- bad input (issue 10)


def _permission_denied(path):
    return PermissionError(13, "Permission denied", str(path))


def test_file_that_cannot_be_opened_is_named_not_skipped(series, monkeypatch):
    # Root reads through chmod 000, so the refusal is simulated; skipping the file
    # would silently drop a phase (or a whole slice at the end of the stack).
    import cmrssl.io.dicom as dicom_module

    victim = _files(series)[4]
    real = dicom_module.pydicom.dcmread

    def dcmread(path, *args, **kwargs):
        if str(path) == str(victim):
            raise _permission_denied(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(dicom_module.pydicom, "dcmread", dcmread)
    with pytest.raises(CineReadError, match=f"^{victim}: file cannot be read \\(Permission denied\\)"):
        read_dicom_cine(series)


def test_folder_that_cannot_be_listed_is_named(tmp_path, study, monkeypatch):
    # A sub-folder without read permission: Path.rglob skipped it silently, losing its files.
    root = tmp_path / "study"
    write_dicom_series(study, root / "a")
    locked = root / "b"
    locked.mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise _permission_denied(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CineReadError, match=f"^{locked}: folder cannot be listed \\(Permission denied\\)"):
        read_dicom_cine(root)


def test_phases_without_tags_are_ordered_by_numeric_names(tmp_path, study, series):
    # 4 phases per slice, names 1..20 slice-major: text order would read 1, 10, 11, 12 ... for slice 3.
    folder = tmp_path / "numbered"
    folder.mkdir()
    for i, f in enumerate(_files(series)):
        ds = pydicom.dcmread(f)
        del ds.TriggerTime, ds.InstanceNumber
        ds.save_as(folder / f"IM{i + 1}")
    read = read_dicom_cine(folder)
    assert read.trigger_times_ms is None
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)
    first_slice = sorted(folder.iterdir(), key=lambda p: int(p.name[2:]))[:4]
    for name, f in zip(["x.dcm", "y.dcm", "z.dcm", "w.dcm"], first_slice):
        f.rename(folder / name)  # the first slice's names now say nothing about the order
    with pytest.raises(CineReadError, match="neither TriggerTime nor InstanceNumber.*not numbered alike"):
        read_dicom_cine(folder)


@pytest.mark.parametrize("keyword, value, message", [
    ("TriggerTime", "nan", "TriggerTime is nan"),
    ("InstanceNumber", "2.5", "InstanceNumber is not an integer"),
    ("RescaleSlope", "0", "RescaleSlope is 0"),
    ("RescaleSlope", "inf", "RescaleSlope is inf"),
])
def test_header_numbers_that_would_give_wrong_pixels_or_order_are_named(series, keyword, value, message):
    victim = _files(series)[2]
    ds = pydicom.dcmread(victim)
    if keyword == "InstanceNumber":
        ds[keyword].VR = "DS"  # IS cannot hold 2.5; a DS can, as some converters write it
    setattr(ds, keyword, value)
    ds.save_as(victim)
    with pytest.raises(CineReadError, match=f"^{victim}: {message}"):
        read_dicom_cine(series)


def test_slightly_rounded_orientation_is_accepted(series, study):
    # Cosines written with 4 decimals: off unit length and orthogonality by ~1e-4, far within tolerance.
    for f in _files(series):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [f"{float(v):.4f}" for v in ds.ImageOrientationPatient]
        ds.save_as(f)
    read = read_dicom_cine(series)
    np.testing.assert_allclose(read.pixels, study.pixels, atol=_quantum(study) * 0.51)
