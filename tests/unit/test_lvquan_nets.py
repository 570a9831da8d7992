"""LVQuan regression heads and segmentation-regularisation decoder: shapes (2D, 2D+t) and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet, DenseNet121, resnet18

from lv_indices_reference import synthetic_lv_frames
from cmrssl.networks.inflate import convert_2d_to_3d
from cmrssl.networks.lvquan import LVQuanHead, LVQuanNet, SegmentationDecoder, split_outputs

torch.set_num_threads(1)


def small_densenet(**kwargs):
    # stride 32 like DenseNet121, a fraction of its width: a training test in seconds
    return DenseNet(spatial_dims=2, in_channels=1, out_channels=2, init_features=16, growth_rate=8,
                    block_config=(2, 2, 2, 2), **kwargs)


@pytest.mark.parametrize("task,outputs", [("indices", 11), ("phase", 2), ("both", 13)])
def test_2d_shapes_per_task(task, outputs):
    net = LVQuanNet(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), task=task)
    x = torch.randn(2, 1, 64, 64)
    prediction, segmentation = net.train()(x)
    assert prediction.shape == (2, outputs)
    assert segmentation.shape == (2, 3, 64, 64)  # 5 stages x2 undo DenseNet's stride 32
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, outputs)  # decoder dropped at inference
    parts = split_outputs(prediction, task)
    assert sum(p.shape[1] for p in parts.values()) == outputs


def test_2d_plus_t_one_prediction_per_frame():
    backbone = convert_2d_to_3d(small_densenet())
    net = LVQuanNet(backbone, task="both", spatial_dims=3).train()
    prediction, segmentation = net(torch.randn(2, 1, 5, 64, 64))
    assert prediction.shape == (2, 13, 5)
    assert segmentation.shape == (2, 3, 5, 64, 64)
    assert split_outputs(prediction, "both")["phase_logits"].shape == (2, 2, 5)


def test_resnet_stride_16_segmentation_resampled_to_input():
    net = LVQuanNet(resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), task="indices").train()
    prediction, segmentation = net(torch.randn(2, 1, 64, 64))
    assert prediction.shape == (2, 11) and segmentation.shape == (2, 3, 64, 64)


def test_parts_and_errors():
    decoder = SegmentationDecoder(64, num_classes=3, num_stages=5)
    assert decoder(torch.randn(1, 64, 2, 3)).shape == (1, 3, 64, 96)
    assert len(decoder.stages) == 5
    assert [s[0].out_channels for s in decoder.stages] == [32, 16, 8, 4, 2]  # 1x1 conv halves channels
    head = LVQuanHead(64, "phase", spatial_dims=3)
    assert head(torch.randn(2, 64, 7, 3, 3)).shape == (2, 2, 7)
    with pytest.raises(ValueError, match="task"):
        LVQuanHead(64, "volumes")
    with pytest.raises(ValueError, match="halved"):
        SegmentationDecoder(16, num_stages=5)
    with pytest.raises(ValueError, match="13 outputs"):
        split_outputs(torch.zeros(1, 11), "both")
    net = LVQuanNet(small_densenet(), segmentation_classes=0).train()
    assert isinstance(net(torch.randn(2, 1, 32, 32)), torch.Tensor)  # no decoder: no tuple


def test_trains_on_a_tiny_batch():
    torch.manual_seed(0)
    masks = torch.as_tensor(synthetic_lv_frames(4, size=64, seed=5)).long()
    image = (masks == 2).float() * 1.0 + (masks == 1).float() * 2.0 + 0.1 * torch.randn(4, 64, 64)
    image = image[:, None]
    segmentation_target = torch.where(masks == 3, 0, masks)  # decoder classes: bg, cavity, myocardium
    indices_target = torch.rand(4, 11)  # scaled to 0-1 as in the paper
    phase_target = torch.tensor([0, 1, 1, 0])
    net = LVQuanNet(small_densenet(), task="both").train()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        prediction, segmentation = net(image)
        parts = split_outputs(prediction, "both")
        loss = (F.mse_loss(parts["indices"], indices_target)
                + 0.05 * F.cross_entropy(parts["phase_logits"], phase_target)
                + 0.1 * F.cross_entropy(segmentation, segmentation_target))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_loss_terms_and_batch_preparation():
    from cmrssl.engines.lvquan import prepare_lvquan_batch
    from cmrssl.losses.lvquan import LVQuanLoss

    batch = {"image": torch.zeros(2, 1, 8, 8), "indices": torch.full((2, 11), 0.5), "phase": torch.tensor([0, 1]),
             "label": torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "subject": ["a", "b"]}
    image, target = prepare_lvquan_batch(batch, torch.device("cpu"))
    assert image.shape == (2, 1, 8, 8) and set(target) == {"indices", "phase", "label"}
    prediction = torch.zeros(2, 13)
    prediction[:, 11] = 10.0  # confident "diastole" for both frames
    segmentation = torch.zeros(2, 3, 8, 8)
    segmentation[:, 0] = 10.0  # confident background everywhere (the label)
    loss = LVQuanLoss("both", phase_weight=0.05, segmentation_weight=0.1)
    mse = 0.25
    phase_ce = (0.0 + 10.0) / 2  # frame 0 right (~0), frame 1 wrong (~10)
    assert loss((prediction, segmentation), target).item() == pytest.approx(mse + 0.05 * phase_ce, abs=1e-3)
    assert LVQuanLoss("indices")(prediction[:, :11], target).item() == pytest.approx(mse)
    with pytest.raises(KeyError, match="label"):
        prepare_lvquan_batch({k: v for k, v in batch.items() if k != "label"})


class _CropMean(torch.nn.Module):
    """Fake LVQuan network: every output is the mean intensity of its input crop (per frame for 2D+t)."""

    task = "both"

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        mean = x.mean(dim=(-2, -1))[:, 0]  # [B] or [B, N_S]
        return mean.unsqueeze(1).expand(-1, 13, *mean.shape[1:]) + self.dummy


def test_multi_crop_and_multi_window_averaging():
    from cmrssl.data.lvquan import lvquan_samples_from_labels, scale_percentiles
    from monai.transforms import ResizeWithPadOrCrop

    from cmrssl.engines.lvquan import multi_crop_offsets, predict_lvquan

    labels = np.stack([synthetic_lv_frames(5, size=40, seed=z) for z in range(3)], axis=1)
    pixels = labels.astype(np.float32) + np.random.default_rng(0).random(labels.shape).astype(np.float32)
    data = lvquan_samples_from_labels(labels, (1.0, 1.0), pixels=pixels, slices="all")
    scale = np.full(11, 2.0)
    two_d = predict_lvquan(_CropMean(), data, [0, 1], scale, crop_size=48, patch_size=32, target_spacing_mm=None)
    assert two_d["indices"].shape == (10, 11) and two_d["target_indices"].shape == (10, 11)
    # frame 3 of subject 1: the mean of its 4 corner crops, times the index scale
    image = ResizeWithPadOrCrop((48, 48))(torch.as_tensor(scale_percentiles(data.images[1, 3]))[None])[0]  # as training
    expected = np.mean([image[r:r + 32, c:c + 32].mean().item() for r, c in multi_crop_offsets(48, 32)])
    np.testing.assert_allclose(two_d["indices"][5 + 3], expected * 2.0, rtol=1e-5)
    # 2D+t: every cyclic window holding a frame agrees for a per-frame network; averaging keeps it
    clips = predict_lvquan(_CropMean(), data, [0, 1], scale, crop_size=48, patch_size=32, clip_frames=3,
                           target_spacing_mm=None)
    np.testing.assert_allclose(clips["indices"], two_d["indices"], rtol=1e-5)
    assert np.array_equal(clips["frame"], np.tile(np.arange(5), 2))


def test_zoom_augmentation_scales_targets_like_the_masks():
    from cmrssl.metrics.lv_indices import indices_matrix, lv_indices
    from cmrssl.transforms.lvquan import RandZoomLVQuand

    label = synthetic_lv_frames(1, size=96, seed=2)[0]
    truth = indices_matrix(lv_indices(label, (1.0, 1.0)))[0]
    sample = {"image": label[None].astype(np.float32), "label": label[None].astype(np.float32),
              "indices": truth.astype(np.float32)}
    transform = RandZoomLVQuand(["image", "label"], prob=1.0, min_zoom=1.15, max_zoom=1.15, mode=["bilinear", "nearest"])
    out = transform(sample)
    zoomed = np.asarray(out["label"][0]).round().astype(np.uint8)
    measured = indices_matrix(lv_indices(zoomed, (1.0, 1.0)))[0]
    np.testing.assert_allclose(out["indices"][:2], truth[:2] * 1.15**2, rtol=1e-5)
    np.testing.assert_allclose(measured[:2], out["indices"][:2], rtol=0.04)  # areas of the zoomed masks
    np.testing.assert_allclose(measured[2:5], out["indices"][2:5], atol=1.0)  # dimensions (mm)
    # 2D+t clip: time untouched, per-frame targets scaled
    clip = {"image": np.stack([label] * 3)[None].astype(np.float32), "indices": np.tile(truth[:, None], (1, 3))}
    out_clip = RandZoomLVQuand("image", prob=1.0, min_zoom=0.9, max_zoom=0.9)(clip)
    assert out_clip["image"].shape == (1, 3, 96, 96)
    np.testing.assert_allclose(out_clip["indices"][5:, 1], truth[5:] * 0.9, rtol=1e-6)


def test_batchnorm_recalibration_uses_the_evaluation_crops():
    from monai.transforms import ResizeWithPadOrCrop

    from cmrssl.engines.lvquan import multi_crop_offsets, recalibrate_batchnorm

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    network[1].running_mean.fill_(7.0)  # stale statistics, as after augmented training
    weights = {k: v.clone() for k, v in network.state_dict().items() if "running" not in k and "num_batches" not in k}
    rng = np.random.default_rng(0)
    records = [{"image": rng.random((1, 40, 44)).astype(np.float32) + i} for i in range(5)]
    assert recalibrate_batchnorm(network, records, crop_size=48, patch_size=32, batch_size=5) == 5 * 4
    padded = torch.stack([ResizeWithPadOrCrop((48, 48))(torch.as_tensor(r["image"])).as_tensor() for r in records])
    crops = torch.cat([padded[..., a:a + 32, b:b + 32]
                       for a, b in multi_crop_offsets(48, 32)])
    with torch.no_grad():
        features = network[0](crops)
    np.testing.assert_allclose(network[1].running_mean.numpy(), features.mean(dim=(0, 2, 3)).numpy(), rtol=1e-5)
    # variance: the mean of the 4 batches' (one per crop position) unbiased variances
    per_batch = [f.transpose(0, 1).reshape(4, -1).var(dim=1) for f in features.split(len(records))]
    np.testing.assert_allclose(network[1].running_var.numpy(), torch.stack(per_batch).mean(0).numpy(), rtol=1e-4)
    assert network[1].momentum == 0.1 and not network.training
    assert all(torch.equal(network.state_dict()[k], v) for k, v in weights.items())  # weights untouched
