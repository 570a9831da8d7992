"""Real ACDC frames from ../shared/data (skipped when absent): header spacing, labels, frame numbers."""

import nibabel as nib
import numpy as np
import pytest

from cmrssl.io import read_nifti_cine, read_nifti_frames

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def patient001(acdc_root):
    folder = acdc_root / "patient001"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def test_acdc_3d_frame_reads_with_header_spacing(patient001):
    path = patient001 / "patient001_frame01.nii.gz"
    header = nib.load(path).header
    dx, dy, dz = (float(v) for v in header.get_zooms()[:3])
    study = read_nifti_cine(path)
    assert study.num_frames == 1 and study.num_slices == nib.load(path).shape[2]
    assert study.spacing_zyx_mm == pytest.approx((dz, dy, dx), abs=1e-5)
    assert study.spacing_zyx_mm == pytest.approx((10.0, 1.5625, 1.5625))


def test_acdc_patient_folder_gives_ed_es_with_mapped_labels(patient001):
    info = dict(line.split(":", 1) for line in (patient001 / "Info.cfg").read_text().splitlines() if ":" in line)
    ed, es = int(info["ED"]), int(info["ES"])
    study = read_nifti_frames(patient001)
    assert study.source_frame_index.tolist() == sorted([ed - 1, es - 1])
    assert list(study.labelled_frames) == [0, 1]
    raw = np.asarray(nib.load(patient001 / f"patient001_frame{ed:02d}_gt.nii.gz").dataobj)
    ed_labels = study.labels[list(study.source_frame_index).index(ed - 1)]
    # ACDC 3 (LV cavity) becomes canonical 1, ACDC 1 (RV) becomes 3
    assert int((ed_labels == 1).sum()) == int((raw == 3).sum()) > 0
    assert int((ed_labels == 3).sum()) == int((raw == 1).sum()) > 0
    assert set(np.unique(study.labels).tolist()) <= {0, 1, 2, 3}


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_acdc_frame_through_load_cine_framed_matches_monai_loadimaged(patient001):
    from monai.transforms import LoadImaged

    from cmrssl.transforms.io import LoadCineFramed

    path = str(patient001 / "patient001_frame01.nii.gz")
    ours = LoadCineFramed("image")({"image": path, "frame_index": 0})["image"]
    theirs = LoadImaged("image", ensure_channel_first=True)({"image": path})["image"]
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # MONAI rectifies the spacing-less sform from the header too: both give 1.5625 x 1.5625 x 10 mm
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours.affine.numpy()[:3, :3], axis=0), [1.5625, 1.5625, 10.0], atol=1e-5)
