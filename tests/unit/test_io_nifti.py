"""NIfTI cines: 4D and per-frame round trips, ACDC quirks, labels, and bad input."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from cmrssl.io import (
    CineReadError,
    CineWriteError,
    read_long_axis_nifti,
    read_nifti_cine,
    read_nifti_frames,
    write_cine_nifti,
    write_frames_nifti,
    write_long_axis_nifti,
)
from io_cine_cases import long_axis_study, sax_study


def _geometry_close(a, b, atol=1e-4):
    np.testing.assert_allclose(a.slice_affines[:, :3, [0, 1, 3]], b.slice_affines[:, :3, [0, 1, 3]], atol=atol)
    assert a.slice_spacing_mm == pytest.approx(b.slice_spacing_mm, abs=atol)


def test_4d_round_trip_pixels_labels_geometry_and_times(tmp_path):
    study = sax_study()
    write_cine_nifti(study, tmp_path / "cine.nii.gz")
    write_cine_nifti(study, tmp_path / "cine_gt.nii.gz", what="labels")
    img = nib.load(tmp_path / "cine.nii.gz")
    # on disk: [x = columns, y = rows, z = slices, t = frames]
    assert img.shape == (10, 12, 5, 4)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[3, 7, 2, 1], study.pixels[1, 2, 7, 3])
    # RAS affine: first two rows of the LPS stack affine negated
    np.testing.assert_allclose(img.affine[:2], -study.stack_affine[:2], atol=1e-5)
    assert nib.load(tmp_path / "cine_gt.nii.gz").get_data_dtype() == np.uint8

    read = read_nifti_cine(tmp_path / "cine.nii.gz", label_path=tmp_path / "cine_gt.nii.gz")
    np.testing.assert_array_equal(read.pixels, study.pixels)
    np.testing.assert_array_equal(read.labels, study.labels)
    _geometry_close(read, study)
    np.testing.assert_allclose(read.trigger_times_ms, study.trigger_times_ms, atol=1e-4)


def test_frames_round_trip_and_file_names(tmp_path):
    study = sax_study(num_frames=3)
    study.labels[1] = -1  # frame 1 has no reference
    study.labelled_frames = [0, 2]
    folder = write_frames_nifti(study, tmp_path / "frames")
    assert sorted(os.listdir(folder)) == [
        "frame_00.nii.gz", "frame_00_gt.nii.gz", "frame_01.nii.gz", "frame_02.nii.gz", "frame_02_gt.nii.gz"]
    read = read_nifti_frames(folder)
    assert list(read.labelled_frames) == [0, 2]
    assert read.source_frame_index.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(read.pixels, study.pixels)
    np.testing.assert_array_equal(read.labels[[0, 2]], study.labels[[0, 2]])
    assert np.all(read.labels[1] == -1)
    _geometry_close(read, study)


def test_long_axis_round_trip(tmp_path):
    lax = long_axis_study(view="4ch")
    write_long_axis_nifti(lax, tmp_path / "lax_4ch.nii.gz")
    assert nib.load(tmp_path / "lax_4ch.nii.gz").shape == (16, 14, 1, 4)
    read = read_long_axis_nifti(tmp_path / "lax_4ch.nii.gz", view="4ch")
    assert read.view == "4ch" and read.num_slices == 1 and read.slice_spacing_mm == 0.0
    _geometry_close(read, lax)
    with pytest.raises(CineWriteError, match="one slice"):
        write_long_axis_nifti(sax_study(), tmp_path / "not_lax.nii.gz")
    assert not (tmp_path / "not_lax.nii.gz").exists()


def _acdc_like(folder, labels_values=(0, 1, 2, 3)):
    """An ACDC-style patient: affine diag(-1,-1,1) without spacing, zooms in the header."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for frame in (1, 12):
        data = rng.integers(0, 300, size=(6, 5, 3)).astype(np.int16)
        img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
        img.header.set_zooms((1.5625, 1.5625, 10.0))
        img.header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
        nib.save(img, folder / f"patient007_frame{frame:02d}.nii.gz")
        gt = rng.choice(np.array(labels_values, dtype=np.uint8), size=(6, 5, 3))
        gt_img = nib.Nifti1Image(gt, img.affine, img.header)
        nib.save(gt_img, folder / f"patient007_frame{frame:02d}_gt.nii.gz")
    return folder


def test_acdc_affine_without_spacing_uses_header_zooms_and_maps_labels(tmp_path):
    folder = _acdc_like(tmp_path / "patient007")
    study = read_nifti_frames(folder)
    assert study.spacing_zyx_mm == pytest.approx((10.0, 1.5625, 1.5625))
    assert study.source_frame_index.tolist() == [0, 11]  # ACDC frame numbers are 1-based
    raw = np.asarray(nib.load(folder / "patient007_frame12_gt.nii.gz").dataobj)
    # ACDC 1 RV, 2 MYO, 3 LV -> canonical 1 LV, 2 MYO, 3 RV; stored slice order kept
    expected = np.choose(raw, [0, 3, 2, 1]).transpose(2, 1, 0)
    np.testing.assert_array_equal(study.labels[1], expected)
    # a single ACDC frame through the 3D reader has the same spacing
    one = read_nifti_cine(folder / "patient007_frame01.nii.gz")
    assert one.num_frames == 1 and one.spacing_zyx_mm == pytest.approx((10.0, 1.5625, 1.5625))
    np.testing.assert_allclose(one.slice_affines[1, :3, 3] - one.slice_affines[0, :3, 3], [0, 0, 10.0])


# ----------------------------------------------------------------------------- bad input


def test_nan_or_inf_names_the_file(tmp_path):
    for bad in (np.nan, np.inf):
        data = np.ones((4, 4, 2, 3), np.float32)
        data[1, 1, 1, 1] = bad
        path = tmp_path / f"bad_{bad}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        with pytest.raises(CineReadError, match=f"{path.name}: 1 voxels are NaN or infinite"):
            read_nifti_cine(path)


def test_labels_outside_the_expected_set_are_named(tmp_path):
    study = sax_study()
    write_cine_nifti(study, tmp_path / "cine.nii.gz")
    labels = np.asarray(study.labels).copy()
    labels[0, 0, 0, 0] = 7
    study.labels = labels
    write_cine_nifti(study, tmp_path / "gt.nii.gz", what="labels")
    with pytest.raises(CineReadError, match=r"gt.nii.gz: label values \[7\] outside the expected set"):
        read_nifti_cine(tmp_path / "cine.nii.gz", label_path=tmp_path / "gt.nii.gz")
    folder = _acdc_like(tmp_path / "patient008", labels_values=(0, 1, 2, 3, 4))
    with pytest.raises(CineReadError, match="patient007_frame01_gt.nii.gz: label values \\[4\\]"):
        read_nifti_frames(folder)


def test_non_integer_labels_are_refused(tmp_path):
    write_cine_nifti(sax_study(num_frames=1, num_slices=2), tmp_path / "cine.nii.gz")
    nib.save(nib.Nifti1Image(np.full((10, 12, 2, 1), 1.5, np.float32), np.eye(4)), tmp_path / "gt.nii.gz")
    with pytest.raises(CineReadError, match="non-integer"):
        read_nifti_cine(tmp_path / "cine.nii.gz", label_path=tmp_path / "gt.nii.gz")


def test_2d_image_where_a_cine_is_expected(tmp_path):
    path = tmp_path / "picture.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), path)
    with pytest.raises(CineReadError, match="picture.nii.gz: a 2D image"):
        read_nifti_cine(path)


def test_missing_or_damaged_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        read_nifti_cine(tmp_path / "absent.nii.gz")
    write_cine_nifti(sax_study(), tmp_path / "cine.nii.gz")
    data = (tmp_path / "cine.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CineReadError, match="cut.nii.gz"):
        read_nifti_cine(tmp_path / "cut.nii.gz")


def test_writers_refuse_existing_outputs_and_leave_nothing_on_failure(tmp_path, monkeypatch):
    study = sax_study()
    write_cine_nifti(study, tmp_path / "cine.nii.gz")
    with pytest.raises(FileExistsError, match="cine.nii.gz"):
        write_cine_nifti(study, tmp_path / "cine.nii.gz")
    write_cine_nifti(study, tmp_path / "cine.nii.gz", overwrite=True)

    no_labels = sax_study(labels=False)
    with pytest.raises(CineWriteError, match="no labels"):
        write_cine_nifti(no_labels, tmp_path / "gt.nii.gz", what="labels")
    assert not (tmp_path / "gt.nii.gz").exists()

    calls = {"n": 0}
    real_save = nib.save

    def failing_save(img, filename):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_frames_nifti(study, tmp_path / "frames")
    assert not (tmp_path / "frames").exists()
    assert sorted(os.listdir(tmp_path)) == ["cine.nii.gz"]  # no temporary leftovers


def test_partially_labelled_cine_round_trips_through_4d_and_frames(tmp_path):
    study = sax_study(num_frames=4)
    labels = np.asarray(study.labels).copy()
    labels[[1, 2]] = -1
    study.labels, study.labelled_frames = labels, [0, 3]
    write_cine_nifti(study, tmp_path / "cine.nii.gz")
    write_cine_nifti(study, tmp_path / "gt.nii.gz", what="labels")
    read = read_nifti_cine(tmp_path / "cine.nii.gz", label_path=tmp_path / "gt.nii.gz")
    assert list(read.labelled_frames) == [0, 3]
    np.testing.assert_array_equal(read.labels, labels)
    write_frames_nifti(study, tmp_path / "frames")
    assert nib.load(tmp_path / "frames" / "frame_03_gt.nii.gz").get_data_dtype() == np.uint8
    # -1 inside a labelled frame is still a value outside the set
    labels[0, 0, 0, 0] = -1
    study.labels = labels
    write_cine_nifti(study, tmp_path / "gt_bad.nii.gz", what="labels")
    with pytest.raises(CineReadError, match=r"label values \[-1\]"):
        read_nifti_cine(tmp_path / "cine.nii.gz", label_path=tmp_path / "gt_bad.nii.gz")


# ----------------------------------------------------------------------------- geometry of the header (issue 10)


def _zero_pixdim(path, out, axes=(1, 2, 3), sform_code=None):
    """Copy ``path`` with ``pixdim[axes]`` set to 0 (and ``sform_code``) in the raw header."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    pixdim = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    pixdim[list(axes)] = 0.0
    raw[76:108] = pixdim.tobytes()
    if sform_code is not None:
        raw[254:256] = np.int16(sform_code).astype("<i2").tobytes()
    out.write_bytes(gzip.compress(bytes(raw)))
    return out


def test_zero_pixdim_takes_the_spacing_from_the_sform(tmp_path):
    study = sax_study()
    write_cine_nifti(study, tmp_path / "cine.nii.gz")
    read = read_nifti_cine(_zero_pixdim(tmp_path / "cine.nii.gz", tmp_path / "zero.nii.gz"))
    assert read.spacing_zyx_mm == pytest.approx(study.spacing_zyx_mm, rel=1e-5)
    _geometry_close(read, study)
    with pytest.raises(CineReadError, match="zero_nosform.nii.gz: no valid voxel spacing along x"):
        read_nifti_cine(_zero_pixdim(tmp_path / "cine.nii.gz", tmp_path / "zero_nosform.nii.gz", sform_code=0))


def test_single_slice_needs_no_slice_spacing(tmp_path):
    study = long_axis_study()
    write_long_axis_nifti(study, tmp_path / "lax.nii.gz")
    flat = _zero_pixdim(tmp_path / "lax.nii.gz", tmp_path / "lax0.nii.gz", axes=(3,), sform_code=0)
    read = read_long_axis_nifti(flat)
    assert read.pixel_spacing_mm == pytest.approx(study.pixel_spacing_mm, rel=1e-5)


def _nifti_with_affine(path, affine, shape=(6, 5, 3)):
    img = nib.Nifti1Image(np.zeros(shape, np.float32), affine)
    img.header.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def test_sheared_or_flat_affines_are_refused_and_tiny_shear_is_accepted(tmp_path):
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[0, 1] = 1.5 * 0.5  # columns at ~63 degrees
    with pytest.raises(CineReadError, match="shear.nii.gz: .*not orthogonal.*sheared pixel grid"):
        read_nifti_cine(_nifti_with_affine(tmp_path / "shear.nii.gz", affine))
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 2] = [8.0, 0.0, 0.0]  # slice axis along x: no slice spacing
    with pytest.raises(CineReadError, match="flat.nii.gz: .*slice axis .* lies in the image plane"):
        read_nifti_cine(_nifti_with_affine(tmp_path / "flat.nii.gz", affine))
    valid = _nifti_with_affine(tmp_path / "valid.nii.gz", np.diag([1.5, 1.5, 8.0, 1.0]))
    raw = bytearray(gzip.decompress(valid.read_bytes()))
    raw[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]: nibabel cannot save a NaN affine itself
    (tmp_path / "nan.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(CineReadError, match="nan.nii.gz: the affine holds NaN"):
        read_nifti_cine(tmp_path / "nan.nii.gz")
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[0, 1] = 1.5 * 1e-4  # float rounding of a real scanner's affine
    read = read_nifti_cine(_nifti_with_affine(tmp_path / "tiny.nii.gz", affine))
    assert read.spacing_zyx_mm == pytest.approx((8.0, 1.5, 1.5), rel=1e-6)


def test_negative_pixdim_with_an_sform_keeps_the_sform(tmp_path):
    study = sax_study()
    write_cine_nifti(study, tmp_path / "cine.nii.gz")
    raw = bytearray(gzip.decompress((tmp_path / "cine.nii.gz").read_bytes()))
    pixdim = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    pixdim[3] = -pixdim[3]
    raw[76:108] = pixdim.tobytes()
    (tmp_path / "neg.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    read = read_nifti_cine(tmp_path / "neg.nii.gz")
    _geometry_close(read, study)
    raw[254:256] = np.int16(0).astype("<i2").tobytes()  # no sform: the sign is lost, nothing to trust
    (tmp_path / "neg_nosform.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(CineReadError, match="neg_nosform.nii.gz: no valid voxel spacing along z"):
        read_nifti_cine(tmp_path / "neg_nosform.nii.gz")


def test_frame_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    # Root lists through chmod 000, so the refusal is simulated.
    write_frames_nifti(sax_study(), tmp_path / "frames")
    real = type(tmp_path).iterdir

    def iterdir(self):
        if self == tmp_path / "frames":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(type(tmp_path), "iterdir", iterdir)
    with pytest.raises(CineReadError, match="frames: folder cannot be listed \\(Permission denied\\)"):
        read_nifti_frames(tmp_path / "frames")


def test_nan_frame_interval_means_no_trigger_times(tmp_path):
    write_cine_nifti(sax_study(), tmp_path / "cine.nii.gz")
    raw = bytearray(gzip.decompress((tmp_path / "cine.nii.gz").read_bytes()))
    pixdim = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    pixdim[4] = np.nan
    raw[76:108] = pixdim.tobytes()
    (tmp_path / "nan_dt.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    assert read_nifti_cine(tmp_path / "nan_dt.nii.gz").trigger_times_ms is None


def test_source_grid_puts_a_mask_back_in_the_file_order_and_affine(tmp_path):
    """SourceGridd (the segmentation postprocessing's last step) and its inverse, with slices reordered."""
    import torch
    from monai.data import MetaTensor

    from cmrssl.transforms.io import SOURCE_GRID, SourceGridd, to_study_grid

    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    path = tmp_path / "frame.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3), np.float32), affine), str(path))
    mask = torch.arange(60, dtype=torch.float32).reshape(1, 5, 4, 3)
    order = np.array([2, 1, 0])  # the loader's slice z is the file's slice order[z]
    meta = {"filename_or_obj": str(path), "source_slice_index": order}
    study_affine = torch.diag(torch.tensor([-1.5, -1.5, 8.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.zeros(1, 5, 4, 3), affine=study_affine, meta={**meta, "original_affine": study_affine})
    out = SourceGridd(keys="pred")({"pred": MetaTensor(mask, affine=study_affine, meta=dict(meta)), "image": image})
    placed = out["pred"]
    np.testing.assert_allclose(placed.affine.numpy(), affine)
    np.testing.assert_allclose(np.asarray(out["image"].meta["original_affine"]), affine)
    for z in range(3):
        assert torch.equal(placed[..., order[z]], mask[..., z])
    assert placed.meta[SOURCE_GRID]
    np.testing.assert_array_equal(to_study_grid(placed.numpy()[0], placed.meta), mask.numpy()[0])
    # a mask not of the file's shape (or a DICOM input) passes unchanged
    other = MetaTensor(torch.zeros(1, 6, 4, 3), meta=dict(meta))
    assert SourceGridd(keys="pred")({"pred": other})["pred"] is other
