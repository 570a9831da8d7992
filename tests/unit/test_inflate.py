"""2D -> 2D+t conversion and weight inflation: a temporally constant input reproduces the 2D output."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet121, resnet18

from cmrssl.networks.heads import backbone_features
from cmrssl.networks.inflate import (
    TemporalConv3d,
    adapt_input_channels,
    convert_2d_to_3d,
    inflate_conv_weight,
    inflate_state_dict,
)

torch.set_num_threads(1)


def _constant_in_time(x2d: torch.Tensor, frames: int) -> torch.Tensor:
    return x2d.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()


@pytest.mark.parametrize("time_padding", ["circular", "replicate"])
def test_densenet121_constant_input_reproduces_2d(time_padding):
    torch.manual_seed(0)
    net2d = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).eval()
    net3d = convert_2d_to_3d(net2d, time_kernel=3, time_padding=time_padding).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out2d = net2d(x)
        out3d = net3d(_constant_in_time(x, 4))
    assert out3d.shape == (2, 3, 4, 1, 1)  # one prediction per frame: time never pooled
    for t in range(4):
        torch.testing.assert_close(out3d[:, :, t, 0, 0], out2d, atol=1e-4, rtol=1e-4)
    # and it does use time: a frame that differs changes its neighbours' outputs
    moving = _constant_in_time(x, 4)
    moving[:, :, 1] = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out_moving = net3d(moving)
    assert (out_moving[:, :, 0] - out3d[:, :, 0]).abs().max() > 1e-3


def test_resnet18_features_and_first_conv_channels():
    torch.manual_seed(1)
    net2d = resnet18(spatial_dims=2, n_input_channels=3, num_classes=2).eval()
    # 3D twin for grey input: first conv 1 channel; weights from the 3-channel 2D net
    target2d = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
    net3d = convert_2d_to_3d(target2d, time_kernel=3).eval()
    net3d.load_state_dict(inflate_state_dict(net2d.state_dict(), net3d))
    assert isinstance(net3d.conv1, TemporalConv3d) and net3d.conv1.stride == (1, *net2d.conv1.stride)
    assert net3d.layer2[0].conv1.stride == (1, 2, 2)  # spatial stride kept, time never strided
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        features2d = backbone_features(net2d, grey.expand(-1, 3, -1, -1))  # grey copied to RGB
        features3d = backbone_features(net3d, _constant_in_time(grey, 3))
    assert features3d.shape == (1, features2d.shape[1], 3, *features2d.shape[2:])
    for t in range(3):
        torch.testing.assert_close(features3d[:, :, t], features2d, atol=1e-4, rtol=1e-4)


def test_weight_rules():
    w = torch.randn(4, 3, 3, 3)
    inflated = inflate_conv_weight(w, 5)
    assert inflated.shape == (4, 3, 5, 3, 3)
    torch.testing.assert_close(inflated.sum(dim=2), w)
    torch.testing.assert_close(adapt_input_channels(w, 1), w.sum(1, keepdim=True))
    six = adapt_input_channels(w, 6)
    assert six.shape == (4, 6, 3, 3)
    torch.testing.assert_close(six.sum(1), w.sum(1))  # constant image -> same response
    assert adapt_input_channels(w, 3) is w


def test_errors_name_the_problem():
    net2d = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    net3d = convert_2d_to_3d(net2d)
    state = dict(net2d.state_dict())
    state.pop("class_layers.out.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"class_layers\.out\.bias.*extra\.weight"):
        inflate_state_dict(state, net3d)
    other = DenseNet121(spatial_dims=2, in_channels=1, out_channels=5).state_dict()
    with pytest.raises(ValueError, match="class_layers.out.weight"):
        inflate_state_dict(other, net3d)
    with pytest.raises(ValueError, match="odd"):
        convert_2d_to_3d(net2d, time_kernel=2)
    with pytest.raises(ValueError, match="time_padding"):
        TemporalConv3d(1, 1, 3, time_padding="reflect-ish")


def test_se_resnet_features_constant_input():
    from monai.networks.nets import SENet
    from monai.networks.nets.senet import SEResNetBottleneck

    torch.manual_seed(2)
    net2d = SENet(spatial_dims=2, in_channels=1, block=SEResNetBottleneck, layers=(1, 1, 1, 1), groups=1,
                  reduction=16, dropout_prob=None, inplanes=16, downsample_kernel_size=1, input_3x3=False,
                  num_classes=2).eval()
    net3d = convert_2d_to_3d(net2d).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        features2d = backbone_features(net2d, x)
        features3d = backbone_features(net3d, _constant_in_time(x, 3))
    for t in range(3):
        torch.testing.assert_close(features3d[:, :, t], features2d, atol=1e-4, rtol=1e-4)


def _as_torchvision(state, old_format):
    """MONAI DenseNet names -> torchvision's (the layout of ImageNet files), new or old style."""
    out = {}
    for key, value in state.items():
        if ".layers." in key:
            head, tail = key.split(".layers.")
            name, rest = tail.split(".", 1)
            key = f"{head}.{name[:-1]}.{name[-1]}.{rest}" if old_format else f"{head}.{tail}"
        out[key.replace("class_layers.out.", "classifier.")] = value
    return out


@pytest.mark.parametrize("old_format", [False, True])
def test_imagenet_densenet_file_loads_into_grey_2d_and_3d(tmp_path, old_format):
    from cmrssl.networks.pretrained import load_pretrained_backbone

    torch.manual_seed(3)
    imagenet = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000).eval()
    path = tmp_path / "densenet121_imagenet.pth"
    torch.save(_as_torchvision(imagenet.state_dict(), old_format), path)
    grey2d = DenseNet121(spatial_dims=2, in_channels=1, out_channels=13)
    untouched = load_pretrained_backbone(grey2d, path)
    assert untouched == ["class_layers.out.bias", "class_layers.out.weight"]
    grey3d = convert_2d_to_3d(DenseNet121(spatial_dims=2, in_channels=1, out_channels=13))
    load_pretrained_backbone(grey3d, path)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        reference = backbone_features(imagenet, x.expand(-1, 3, -1, -1))
        torch.testing.assert_close(backbone_features(grey2d.eval(), x), reference, atol=1e-4, rtol=1e-4)
        clip = backbone_features(grey3d.eval(), _constant_in_time(x, 2))
        torch.testing.assert_close(clip[:, :, 1], reference, atol=1e-4, rtol=1e-4)
    # a checkpoint missing backbone weights is refused with their names
    partial = {k: v for k, v in torch.load(path, weights_only=True).items() if "denseblock4" not in k}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="denseblock4"):
        load_pretrained_backbone(grey2d, tmp_path / "partial.pth")
