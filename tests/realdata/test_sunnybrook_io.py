"""The real Sunnybrook SCD0000101 cine series read from ../shared/data (skipped when absent).

What the data actually is (checked file by file): 240 single-frame files =
12 slice positions x 20 phases, all in one SeriesInstanceUID but each slice
with its own FrameOfReferenceUID. The data README and issue 2 say 11 slices;
there are 12 (images 221-240 are a 12th position, 10 mm beyond image 201-220,
below the apex: the expert contours cover slices 2-10). Slices are 10 mm apart
along the normal; SliceLocation steps by 6.72 mm and cannot be trusted.
"""

import warnings

import numpy as np
import pydicom
import pytest

from cmrssl.io import read_dicom_cine

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def series_folder(sunnybrook_root):
    folder = sunnybrook_root / "dicoms" / "SCD0000101"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def study(series_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reader must keep pydicom's UID complaints quiet
        return read_dicom_cine(series_folder)


def test_sunnybrook_loads_as_20_phases_by_12_positions(series_folder, study):
    assert len(list(series_folder.glob("*.dcm"))) == 240
    assert study.pixels.shape == (20, 12, 256, 256)
    assert study.slice_spacing_mm == pytest.approx(10.0, abs=0.05)
    assert study.pixel_spacing_mm == pytest.approx((1.367, 1.367), abs=5e-4)
    assert np.isfinite(study.pixels).all() and study.pixels.max() > 100


def test_sunnybrook_order_is_base_to_apex_and_matches_image_numbers(series_folder, study):
    # Image number N is slice (N-1)//20 and phase (N-1)%20+1; the LV contours shrink
    # towards image 201-220, so source order is already base -> apex.
    assert study.source_slice_index.tolist() == list(range(12))
    for z, t in ((0, 0), (5, 7), (11, 19)):
        ds = pydicom.dcmread(series_folder / f"{z * 20 + t + 1}.dcm")
        np.testing.assert_array_equal(study.pixels[t, z], ds.pixel_array.astype(np.float32))
        np.testing.assert_allclose(study.slice_affines[z, :3, 3], np.array(ds.ImagePositionPatient, float), atol=1e-6)


def test_sunnybrook_slice_location_disagrees_with_positions(series_folder, study):
    locations = [float(pydicom.dcmread(series_folder / f"{z * 20 + 1}.dcm", stop_before_pixels=True).SliceLocation)
                 for z in range(12)]
    assert np.median(np.abs(np.diff(locations))) == pytest.approx(6.72, abs=0.01)  # not the true 10 mm
    positions = study.slice_affines[:, :3, 3] @ study.slice_normal
    np.testing.assert_allclose(np.diff(positions), 10.0, atol=0.05)


def test_sunnybrook_trigger_times_are_medians_over_slices(study):
    times = study.trigger_times_ms
    assert times.shape == (20,)
    assert np.all(np.diff(times) > 0)
    assert times[0] == pytest.approx(19.0, abs=1.0)
    assert np.median(np.diff(times)) == pytest.approx(37.5, abs=1.0)
