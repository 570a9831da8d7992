"""The phantom cohort's DICOM and NIfTI copies read back as the same cine with the same geometry."""

import json

import numpy as np

from cmrssl.io import read_dicom_cine, read_long_axis_dicom, read_long_axis_nifti, read_nifti_cine, read_nifti_frames


def test_phantom_dicom_and_nifti_agree(phantom_cohort):
    subject = phantom_cohort / json.loads((phantom_cohort / "cohort.json").read_text())["subjects"][0]
    analytic = json.loads((subject / "analytic.json").read_text())
    nifti = read_nifti_cine(subject / "sax_cine.nii.gz", label_path=subject / "sax_cine_gt.nii.gz")
    dicom = read_dicom_cine(subject / "dicom" / "sax")  # base -> apex by the long-axis heuristic
    frames = read_nifti_frames(subject / "frames")
    assert dicom.pixels.shape == nifti.pixels.shape == frames.pixels.shape
    assert dicom.num_frames == analytic["num_frames"] and dicom.num_slices == analytic["num_slices"]
    np.testing.assert_allclose(dicom.spacing_zyx_mm, analytic["spacing_zyx_mm"], atol=1e-3)
    np.testing.assert_allclose(dicom.slice_affines[:, :3, [0, 1, 3]], nifti.slice_affines[:, :3, [0, 1, 3]], atol=1e-4)
    step = (float(nifti.pixels.max()) - float(nifti.pixels.min())) / 65535.0
    np.testing.assert_allclose(dicom.pixels, nifti.pixels, atol=step)
    np.testing.assert_array_equal(frames.labels, nifti.labels)
    for view in ("2ch", "4ch"):
        lax_dicom = read_long_axis_dicom(subject / "dicom" / view, view=view)
        lax_nifti = read_long_axis_nifti(subject / f"lax_{view}.nii.gz", view=view)
        np.testing.assert_allclose(lax_dicom.slice_affines[0, :3, [0, 1, 3]], lax_nifti.slice_affines[0, :3, [0, 1, 3]],
                                   atol=1e-4)
