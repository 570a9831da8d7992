"""View generators: slice extraction with positions, SimCLR/PCL views, DINO multi-crop, crops, solarisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrssl.transforms.views import (
    CineSlicesd,
    DINOMultiCropd,
    MultiViewd,
    RandCMRAugment,
    RandCMRAugmentd,
    RandResizedCrop,
    RandSolarize,
    TwoViewsd,
)


def _slice(size=48):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2).float()
    return (disc * 2.0 - 0.5)[None]  # [1, H, W], z-score-like range


def test_cine_slices_gives_every_slice_with_its_position():
    frame = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    samples = CineSlicesd(keys="image")({"image": frame, "subject": "s1", "frame_index": 4})
    assert len(samples) == 5
    assert [s["slice_position"] for s in samples] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [s["slice_index"] for s in samples] == [0, 1, 2, 3, 4]
    assert all(s["num_slices"] == 5 and s["subject"] == "s1" for s in samples)
    assert torch.equal(samples[3]["image"], frame[..., 3])


def test_cine_slices_picks_the_frame_of_a_whole_cine():
    cine = torch.stack([torch.full((2, 2, 3), float(t)) for t in range(4)])  # [T=4, W, H, Z]
    samples = CineSlicesd()({"image": cine, "frame_index": 2})
    assert len(samples) == 3 and all(float(s["image"].max()) == 2.0 for s in samples)
    every_frame = CineSlicesd()({"image": cine})
    assert len(every_frame) == 12
    with pytest.raises(ValueError, match="frame_index=7"):
        CineSlicesd()({"image": cine, "frame_index": 7})
    with pytest.raises(ValueError, match="3D frame"):
        CineSlicesd()({"image": torch.zeros(1, 4, 4)})


def test_two_views_differ_and_keep_shape_and_metadata():
    views = TwoViewsd(keys="image").set_random_state(0)({"image": _slice(), "slice_position": 0.25})
    assert set(views) == {"view_0", "view_1", "slice_position"}
    assert views["view_0"].shape == views["view_1"].shape == (1, 48, 48)
    assert not torch.allclose(views["view_0"], views["view_1"])
    assert torch.isfinite(views["view_0"]).all()


def test_views_are_reproducible_with_a_seed():
    first = TwoViewsd().set_random_state(3)({"image": _slice()})
    second = TwoViewsd().set_random_state(3)({"image": _slice()})
    assert torch.equal(first["view_0"], second["view_0"]) and torch.equal(first["view_1"], second["view_1"])


def test_augment_scale_range_changes_the_visible_field():
    image = _slice(64)
    zoom_out = RandCMRAugment(rotate_range_deg=0, scale_range=(1.4, 1.4), translate_fraction=0, flip_prob=0,
                              noise_prob=0, blur_prob=0, scale_intensity_prob=0, shift_intensity_prob=0, gamma_prob=0)
    identity = RandCMRAugment(rotate_range_deg=0, scale_range=(1.0, 1.0), translate_fraction=0, flip_prob=0,
                              noise_prob=0, blur_prob=0, scale_intensity_prob=0, shift_intensity_prob=0, gamma_prob=0)
    assert torch.allclose(identity(image), image, atol=1e-4)
    # scale 1.4 shows more of the field: the bright disc covers fewer pixels
    bright = lambda x: float((x > 0.5).float().sum())  # noqa: E731
    assert bright(zoom_out(image)) < 0.7 * bright(image)
    with pytest.raises(ValueError, match="scale_range"):
        RandCMRAugment(scale_range=(1.4, 0.7))


def test_augment_dictionary_twin_and_intensity_ranges():
    out = RandCMRAugmentd(keys="image", noise_prob=0.0, blur_prob=0.0).set_random_state(0)({"image": _slice()})
    assert out["image"].shape == (1, 48, 48)
    with pytest.raises(ValueError, match="noise_prob"):
        RandCMRAugment(noise_prob=2.0)


def test_dino_multicrop_sizes_and_keys():
    transform = DINOMultiCropd(keys="image", global_size=32, local_size=16, num_local_crops=6).set_random_state(0)
    crops = transform({"image": _slice(64)})
    assert transform.global_keys == ["global_0", "global_1"]
    assert transform.local_keys == [f"local_{i}" for i in range(6)]
    for key in transform.global_keys:
        assert crops[key].shape == (1, 32, 32)
    for key in transform.local_keys:
        assert crops[key].shape == (1, 16, 16)
    assert "image" not in crops


def test_rand_resized_crop_covers_the_requested_area():
    crop = RandResizedCrop(spatial_size=(8, 8), area_range=(0.25, 0.25), aspect_range=(1.0, 1.0)).set_random_state(0)
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    out = crop(image)
    top, left, height, width = crop._box
    assert out.shape == (1, 8, 8) and (height, width) == (32, 32)
    assert float(out.min()) >= float(image[0, top, left]) - 1e-3


def test_solarize_inverts_above_threshold_within_range():
    image = torch.tensor([[[-1.0, 0.0, 0.5, 2.0]]])
    always = RandSolarize(prob=1.0, threshold=0.0)
    # min + max = 1: values >= 0 become 1 - x, below stay
    assert torch.allclose(always(image), torch.tensor([[[-1.0, 1.0, 0.5, -1.0]]]))
    assert torch.equal(RandSolarize(prob=0.0)(image), image)
    unit = torch.tensor([[[0.0, 0.25, 0.75, 1.0]]])
    assert torch.allclose(RandSolarize(prob=1.0, threshold=0.5)(unit), torch.tensor([[[0.0, 0.25, 0.25, 0.0]]]))


def test_multiview_validates_arguments():
    with pytest.raises(ValueError, match="one view key per view transform"):
        MultiViewd("image", [lambda x: x], ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        MultiViewd("image", [lambda x: x, lambda x: x], ["a", "a"])
    out = MultiViewd("image", [lambda x: x + 1, lambda x: x * 0], ["plus", "zero"], delete_source=False)(
        {"image": torch.ones(1, 2, 2)}
    )
    assert float(out["plus"].max()) == 2.0 and float(out["zero"].max()) == 0.0 and "image" in out


def test_solarize_probability_is_respected():
    solarize = RandSolarize(prob=0.2).set_random_state(0)
    image = torch.tensor([[[-1.0, 1.0]]])
    changed = np.mean([not torch.equal(solarize(image), image) for _ in range(500)])
    assert 0.14 < changed < 0.26
