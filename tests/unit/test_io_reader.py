"""MONAI integration: CineImageReader through LoadImaged, LoadCineFramed, read_cine, tools/convert.py."""

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from cmrssl.io import CineImageReader, read_cine, write_cine_nifti, write_dicom_series, write_frames_nifti
from cmrssl.transforms.io import LoadCineFrame, LoadCineFramed
from io_cine_cases import sax_study

REPO = Path(__file__).resolve().parents[2]

# MONAI's LoadImage instantiates every default reader, and its nvImageCodec DICOM
# reader warns when the optional GPU codec is absent: noise from MONAI, not from us.
pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("cine")
    study = sax_study()
    write_cine_nifti(study, root / "sax_cine.nii.gz")
    write_cine_nifti(study, root / "sax_cine_gt.nii.gz", what="labels")
    write_frames_nifti(study, root / "frames")
    write_dicom_series(study, root / "dicom")
    return root, study


def _quantum(study):
    return (float(study.pixels.max()) - float(study.pixels.min())) / 65535.0


def test_loadimaged_with_cine_reader_on_dicom_folder(written):
    root, study = written
    load = Compose([LoadImaged("image", reader=CineImageReader()), EnsureChannelFirstd("image")])
    out = load({"image": str(root / "dicom")})["image"]
    t, z, h, w = study.pixels.shape
    assert tuple(out.shape) == (t, w, h, z)  # frames become channels
    np.testing.assert_allclose(out.numpy(), study.pixels.transpose(0, 3, 2, 1), atol=_quantum(study) * 0.51)
    expected_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ study.stack_affine
    np.testing.assert_allclose(out.affine.numpy(), expected_affine, atol=1e-4)
    np.testing.assert_allclose(out.meta["trigger_times_ms"], study.trigger_times_ms, atol=1e-6)
    np.testing.assert_allclose(out.meta["spacing_xyz_mm"], [1.4, 1.25, 8.0], atol=1e-5)


def test_cine_reader_on_4d_nifti_matches_monai_default_reader(written):
    root, _ = written
    ours = Compose([LoadImaged("image", reader=CineImageReader()), EnsureChannelFirstd("image")])
    theirs = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    a = ours({"image": str(root / "sax_cine.nii.gz")})["image"]
    b = theirs({"image": str(root / "sax_cine.nii.gz")})["image"]
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-5)


def test_cine_reader_accepts_folders_and_nifti_only():
    reader = CineImageReader()
    assert reader.verify_suffix("a/b.nii.gz") and reader.verify_suffix("x.dcm")
    assert not reader.verify_suffix("image.png")


def test_load_cine_frame_equals_loadimaged_on_our_frames(written):
    root, study = written
    reference = LoadImaged("image", ensure_channel_first=True)({"image": str(root / "frames" / "frame_02.nii.gz")})["image"]
    loader = LoadCineFramed("image")
    from_frame = loader({"image": str(root / "frames" / "frame_02.nii.gz"), "frame_index": 2})["image"]
    from_cine = loader({"image": str(root / "sax_cine.nii.gz"), "frame_index": 2})["image"]
    from_dicom = loader({"image": str(root / "dicom"), "frame_index": 2})["image"]
    assert tuple(reference.shape) == (1, 10, 12, 5)
    for out in (from_frame, from_cine, from_dicom):
        assert out.shape == reference.shape and out.dtype == torch.float32
        np.testing.assert_allclose(out.affine.numpy(), reference.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(from_frame.numpy(), reference.numpy())
    np.testing.assert_array_equal(from_cine.numpy(), reference.numpy())
    np.testing.assert_allclose(from_dicom.numpy(), reference.numpy(), atol=_quantum(study) * 0.51)
    assert from_cine.meta["frame_index"] == 2 and from_frame.meta["frame_index"] == 2


def test_load_cine_frame_label_key_and_bad_frame_index(written):
    root, study = written
    d = LoadCineFramed(["image", "label"])({"image": str(root / "sax_cine.nii.gz"),
                                             "label": str(root / "sax_cine_gt.nii.gz"), "frame_index": 3})
    np.testing.assert_array_equal(d["label"][0].numpy(), study.labels[3].transpose(2, 1, 0))
    loader = LoadCineFrame()
    with pytest.raises(ValueError, match="frame_index 9 outside"):
        loader(root / "sax_cine.nii.gz", 9)
    with pytest.raises(ValueError, match="give frame_index"):
        loader(root / "sax_cine.nii.gz")


def test_read_cine_dispatches_on_the_path(written):
    root, study = written
    for path in ("sax_cine.nii.gz", "frames", "dicom"):
        read = read_cine(root / path)
        assert read.pixels.shape == study.pixels.shape, path
        np.testing.assert_allclose(read.slice_affines[:, :3, 3], study.slice_affines[:, :3, 3], atol=1e-4)
    with pytest.raises(FileNotFoundError):
        read_cine(root / "nothing_here")


def _convert_module():
    spec = importlib.util.spec_from_file_location("convert_tool", REPO / "tools" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_tool_writes_layout_and_refuses_existing_output(written, tmp_path, capsys):
    root, study = written
    convert = _convert_module()
    out = tmp_path / "converted"
    convert.main(str(root / "dicom"), str(out))
    assert (out / "sax_cine.nii.gz").is_file()
    assert len(list((out / "frames").glob("frame_*.nii.gz"))) == study.num_frames
    assert nib.load(out / "sax_cine.nii.gz").shape == (10, 12, 5, 4)
    assert "4 frames x 5 slices" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        convert.main(str(root / "dicom"), str(out))
    assert "already exists" in capsys.readouterr().err
    convert.main(str(root / "sax_cine.nii.gz"), str(out), overwrite=True, labels=str(root / "sax_cine_gt.nii.gz"))
    assert (out / "sax_cine_gt.nii.gz").is_file() and (out / "frames" / "frame_00_gt.nii.gz").is_file()


def test_labels_beside_a_non_nifti_input_are_refused_not_dropped(written, tmp_path, capsys):
    root, _ = written
    from cmrssl.io import CineReadError

    for path in ("dicom", "frames"):
        with pytest.raises(CineReadError, match="sax_cine_gt.nii.gz: a label file can only accompany a NIfTI cine"):
            read_cine(root / path, label_path=root / "sax_cine_gt.nii.gz")
    with pytest.raises(SystemExit):
        _convert_module().main(str(root / "dicom"), str(tmp_path / "out"), labels=str(root / "sax_cine_gt.nii.gz"))
    assert "can only accompany a NIfTI cine" in capsys.readouterr().err and not (tmp_path / "out").exists()
