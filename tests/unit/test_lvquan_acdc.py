"""ACDC as an LVQuan source: ED/ES slice pairs measured from the expert labels.

A fake ACDC tree is written from a phantom subject (ACDC label values and
header quirk); its LVQuan samples must equal the ones measured directly on the
phantom's canonical labels at the same frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from acdc_fake import write_acdc

from cmrssl.data.lvquan import (
    fold_subjects,
    load_lvquan_source,
    lvquan_clip_records,
    lvquan_from_acdc,
    lvquan_records,
    lvquan_samples_from_labels,
)
from cmrssl.data.phantom import generate_subject

ED, ES = 1, 3  # Info.cfg frames (1-based)


@pytest.fixture(scope="module")
def subject():
    return generate_subject(3, num_frames=4, image_size=64)


@pytest.fixture(scope="module")
def fake_acdc(tmp_path_factory, subject):
    return write_acdc(tmp_path_factory.mktemp("acdc") / "training", subject, {n: "NOR" for n in range(1, 6)}, ed=ED, es=ES)


def test_acdc_slices_equal_the_phantom_measured_directly(fake_acdc, subject):
    data = load_lvquan_source(fake_acdc)
    assert not data.whole_cycle and data.images.shape[1] == 2
    direct = lvquan_samples_from_labels(subject.sax.labels[[ED - 1, ES - 1]], (1.25, 1.25),  # the fake's zooms
                                        pixels=subject.sax.pixels[[ED - 1, ES - 1]], name="x", frame_phase=(0, 1))
    per_patient = len(direct.subjects)
    assert per_patient >= 1 and len(data.subjects) == 5 * per_patient
    assert data.subjects[:per_patient] == [n.replace("x:", "patient001:") for n in direct.subjects]
    np.testing.assert_allclose(data.indices[:per_patient], direct.indices, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(data.phase, np.tile([0, 1], (len(data.subjects), 1)))
    np.testing.assert_allclose(data.pixel_spacing_mm, 1.25)  # ACDC zooms, not the affine
    # canonical LVQuan masks: 1 cavity, 2 myocardium, RV dropped
    assert set(np.unique(data.labels)) == {0, 1, 2}
    # the ED cavity is the larger one (phase 0 first)
    assert (data.indices[:, 0, 0] > data.indices[:, 1, 0]).all()


def test_acdc_selection_and_refusals(fake_acdc):
    data = lvquan_from_acdc(fake_acdc, subjects="2-3")
    assert {s.split(":")[0] for s in data.subjects} == {"patient002", "patient003"}
    with pytest.raises(ValueError, match="patient009"):
        lvquan_from_acdc(fake_acdc, subjects=[9])
    training, validation = fold_subjects(data.subjects, 0, 2)
    scale = np.ones(11)
    assert len(lvquan_records(data, training, scale, None)) == 2 * len(training)
    with pytest.raises(ValueError, match="whole cycles"):
        lvquan_clip_records(data, training, scale, 2, None)
    with pytest.raises(ValueError, match="neighbours"):
        lvquan_records(data, training, scale, None, input_mode="neighbours")


def test_frame_phase_length_is_checked(subject):
    with pytest.raises(ValueError, match="frame_phase"):
        lvquan_samples_from_labels(subject.sax.labels[:2], subject.sax.pixel_spacing_mm, frame_phase=(0, 1, 1))


def test_unknown_folder_names_the_layouts(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(ValueError, match="ACDC folder"):
        load_lvquan_source(tmp_path)


def test_resampling_matches_the_former_scipy_zoom_inside_the_slice():
    """MONAI Resize replaced scipy's zoom: same grid and values (float32), but no zeroed last row/column."""
    from scipy.ndimage import zoom

    from cmrssl.data.lvquan import resample_slice

    image = np.random.default_rng(0).random((48, 52)).astype(np.float32)
    for factor in (0.8, 1.3):
        ours, scipy_zoom = resample_slice(image, factor, "bilinear"), zoom(image, factor, order=1)
        assert ours.shape == scipy_zoom.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours[:-1, :-1], scipy_zoom[:-1, :-1], atol=1e-5)
        np.testing.assert_allclose(ours[[0, -1], :][:, [0, -1]], image[[0, -1], :][:, [0, -1]], atol=1e-6)  # corners kept
    labels = np.zeros((40, 40), np.uint8)
    labels[10:30, 12:28] = 2
    labels[15:25, 16:24] = 1
    resampled = resample_slice(labels, 0.8, "nearest-exact")
    assert resampled.dtype == np.uint8 and set(np.unique(resampled)) == {0, 1, 2}
    assert np.mean(resampled != zoom(labels, 0.8, order=0)) < 0.02
