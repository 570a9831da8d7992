"""SSL engine: the generic trainer, the methods, DINO's teacher EMA, heads on every backbone, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import DataLoader, Dataset
from ignite.engine import Events
from monai.transforms import Compose

from cmrssl.engines.ssl import (
    ContrastiveMethod,
    DINOMethod,
    EpochSetter,
    FreezeParametersHandler,
    MaskedImageModellingMethod,
    SSLTrainer,
    TeacherEMAHandler,
    cosine_momentum,
)
from cmrssl.losses.contrastive import NTXentLoss, PositionalContrastiveLoss
from cmrssl.losses.dino import DINOLoss
from cmrssl.losses.masked import MaskedMSELoss
from cmrssl.networks.heads import DINOHead, ProjectionHead, SSLEncoder, backbone_feature_dim, backbone_state_dict
from cmrssl.transforms.masking import RandPatchMaskd
from cmrssl.transforms.views import CineSlicesd, DINOMultiCropd, RandCMRAugmentd, TwoViewsd

torch.set_num_threads(1)


def tiny_unet(out_channels: int = 4):
    """The shared segmentation U-Net, narrow enough for CPU unit tests."""
    from cmrssl.networks.unet import CMRUNet

    torch.manual_seed(0)
    return CMRUNet(in_channels=1, out_channels=out_channels, channels=(4, 8, 16, 32))


def _loader(views, num_frames=2, size=32, slices=3, frames_per_batch=2):
    generator = torch.Generator().manual_seed(0)
    records = [{"image": torch.randn(1, size, size, slices, generator=generator)} for _ in range(num_frames)]
    return DataLoader(Dataset(records, Compose([CineSlicesd("image"), views])), batch_size=frames_per_batch, num_workers=0)


def _trainer(method, loader, handlers=(), epochs=1):
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    return SSLTrainer("cpu", epochs, loader, method, optimizer, train_handlers=list(handlers))


def _dino(output_dim=32):
    student = SSLEncoder(tiny_unet(), DINOHead(backbone_feature_dim(tiny_unet()), 32, 16, output_dim))
    loss = DINOLoss(output_dim=output_dim, warmup_teacher_temperature_epochs=2)
    return DINOMethod(student, loss, local_keys=[f"local_{i}" for i in range(2)]), loss


def _dino_views():
    return DINOMultiCropd("image", global_size=32, local_size=16, num_local_crops=2)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0, 50, 100) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0, 100, 100) == pytest.approx(1.0)


def test_dino_teacher_is_an_ema_of_the_student_and_gets_no_gradient():
    method, loss = _dino()
    assert all(not p.requires_grad for p in method.teacher.parameters())
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    center_before = loss.center.clone()
    trainer = _trainer(method, _loader(_dino_views()), [TeacherEMAHandler(method, 0.996, 1.0)])
    trainer.run()
    # one iteration of 1: momentum at step 0 is the base value
    assert trainer.state.iteration == 1 and trainer.state.teacher_momentum == pytest.approx(0.996)
    for before, teacher, student in zip(teacher_before, method.teacher.parameters(), method.student.parameters()):
        assert teacher.grad is None
        assert torch.allclose(teacher, 0.996 * before + 0.004 * student.detach(), atol=1e-6)
    trained = [p for p in method.student.parameters() if p.requires_grad]
    assert any(not torch.equal(b, p) for b, p in zip(teacher_before, method.student.parameters()) if p.requires_grad)
    assert len(trained) > 0
    # the centre moved towards the teacher's mean output
    assert not torch.equal(loss.center, center_before)


def test_dino_update_teacher_formula():
    method, _ = _dino()
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    method.update_teacher(0.9)
    for before, teacher, student in zip(teacher_before, method.teacher.parameters(), method.student.parameters()):
        assert torch.allclose(teacher, 0.9 * before + 0.1 * student, atol=1e-6)


def test_dino_handlers_warm_up_temperature_and_freeze_the_prototypes_in_epoch_one():
    method, loss = _dino()
    last_layer = method.student.head.last_layer
    prototypes_before = [p.detach().clone() for p in last_layer.parameters()]
    handlers = [EpochSetter(loss), FreezeParametersHandler(last_layer, epochs=1), TeacherEMAHandler(method)]
    trainer = _trainer(method, _loader(_dino_views()), handlers, epochs=1)
    trainer.run()
    assert loss.teacher_temperature == pytest.approx(0.02)  # epoch 0 of a 2-epoch warm-up
    assert all(torch.equal(b, p) for b, p in zip(prototypes_before, last_layer.parameters()))
    trainer.state.max_epochs = 3
    trainer.run()
    assert loss.teacher_temperature == pytest.approx(0.04)
    assert any(not torch.equal(b, p) for b, p in zip(prototypes_before, last_layer.parameters()))


@pytest.mark.parametrize("positional", [False, True])
def test_contrastive_method_trains_the_encoder_only(positional):
    unet = tiny_unet()
    network = SSLEncoder(unet, ProjectionHead(backbone_feature_dim(unet), (16,), 16))
    loss = PositionalContrastiveLoss() if positional else NTXentLoss()
    method = ContrastiveMethod(network, loss, position_key="slice_position" if positional else None)
    encoder_before = {k: v.clone() for k, v in unet.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in unet.decoder.state_dict().items()}
    trainer = _trainer(method, _loader(TwoViewsd("image")))
    trainer.run()
    output = trainer.state.output
    assert isinstance(output, list) and torch.isfinite(output[0]["loss"])
    assert any(not torch.equal(encoder_before[k], v) for k, v in unet.encoder.state_dict().items())
    assert all(torch.equal(decoder_before[k], v) for k, v in unet.decoder.state_dict().items())
    saved = method.backbone_state_dict()
    assert saved and all(k.startswith("encoder.") for k in saved)
    assert set(saved) == {f"encoder.{k}" for k in unet.encoder.state_dict()}


def test_mim_method_saves_encoder_and_decoder_not_the_head():
    unet = tiny_unet(out_channels=1)
    method = MaskedImageModellingMethod(unet, MaskedMSELoss())
    views = Compose([RandCMRAugmentd("image"), RandPatchMaskd("image", patch_size=(8, 8))])
    trainer = _trainer(method, _loader(views))
    trainer.run()
    assert torch.isfinite(trainer.state.output[0]["loss"])
    saved = method.backbone_state_dict()
    assert any(k.startswith("encoder.") for k in saved) and any(k.startswith("decoder.") for k in saved)
    assert not any(k.startswith("head.") for k in saved)
    assert {k for k in saved if k.startswith("pretext_head.")} == {f"pretext_head.{k}" for k in unet.head.state_dict()}


def test_trainer_refuses_an_object_that_is_not_a_method():
    with pytest.raises(TypeError, match="prepare_batch"):
        SSLTrainer("cpu", 1, [], torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))


def test_method_names_missing_batch_keys():
    method = ContrastiveMethod(SSLEncoder(tiny_unet(), None), NTXentLoss())
    with pytest.raises(KeyError, match="view_0"):
        method.prepare_batch({"image": torch.zeros(2, 1, 8, 8)})


@pytest.mark.parametrize(
    "backbone_name",
    ["DenseNet121", "ResNet18", "ResNet18-no-fc", "SEResNet50"],
)
def test_ssl_encoder_on_classification_backbones(backbone_name):
    from monai.networks import nets

    if backbone_name == "DenseNet121":
        backbone, width, classifier = nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=11), 1024, "class_layers.out."
    elif backbone_name == "ResNet18":
        backbone, width, classifier = nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=11), 512, "fc."
    elif backbone_name == "ResNet18-no-fc":
        backbone, width, classifier = nets.resnet18(spatial_dims=2, n_input_channels=1, feed_forward=False), 512, "fc."
    else:
        backbone, width, classifier = nets.SEResNet50(spatial_dims=2, in_channels=1, num_classes=11), 2048, "last_linear."
    assert backbone_feature_dim(backbone) == width
    encoder = SSLEncoder(backbone, ProjectionHead(width, (8,), 8)).eval()
    with torch.no_grad():
        assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, 8)
    saved = backbone_state_dict(backbone)
    assert saved and not any(k.startswith(classifier) for k in saved)
    assert set(saved) == {k for k in backbone.state_dict() if not k.startswith(classifier)}


def test_ssl_encoder_rejects_mismatched_head_and_unknown_backbones():
    with pytest.raises(ValueError, match="input features"):
        SSLEncoder(tiny_unet(), ProjectionHead(backbone_feature_dim(tiny_unet()) + 1, (4,), 4))
    with pytest.raises(TypeError, match="unsupported backbone"):
        SSLEncoder(torch.nn.Conv2d(1, 2, 3))


def test_dino_head_prototype_layer_is_weight_normalised():
    head = DINOHead(in_dim=8, hidden_dim=16, bottleneck_dim=4, output_dim=10)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad and torch.allclose(magnitude, torch.ones_like(magnitude))
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(10), atol=1e-5)
    assert head(torch.randn(3, 8)).shape == (3, 10)


def test_training_run_writes_the_backbone_only_when_training_completes(tmp_path):
    from cmrssl.engines.training_run import TrainingRun, check_training_run, partial_dir

    unet = tiny_unet()
    method = ContrastiveMethod(SSLEncoder(unet, ProjectionHead(backbone_feature_dim(unet), (8,), 8)), NTXentLoss())
    path = tmp_path / "models" / "simclr.pt"
    seen_during_training = []
    trainer = _trainer(method, _loader(TwoViewsd("image")), epochs=2)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: seen_during_training.append(path.exists()))
    TrainingRun(path, method.backbone_state_dict, {"method": method}).attach(trainer)
    check_training_run(path)
    trainer.run()
    assert seen_during_training == [False, False]  # never a finished-looking file before the end
    state = torch.load(path, weights_only=True)
    assert set(state) == set(method.backbone_state_dict())
    assert all(torch.equal(state[k], v) for k, v in method.backbone_state_dict().items())
    assert not partial_dir(path).exists() and not list(path.parent.glob(".tmp-*"))
    with pytest.raises(FileExistsError, match="simclr.pt"):
        check_training_run(path)
    check_training_run(path, overwrite="true")


@pytest.mark.parametrize("method_name", ["simclr", "pcl", "dino", "mim"])
def test_every_method_checkpoint_loads_into_the_segmentation_unet(tmp_path, method_name):
    from cmrssl.networks.checkpoint import load_pretrained

    if method_name == "mim":
        method = MaskedImageModellingMethod(tiny_unet(out_channels=1), MaskedMSELoss())
    elif method_name == "dino":
        method, _ = _dino()
    else:
        unet = tiny_unet()
        loss = PositionalContrastiveLoss() if method_name == "pcl" else NTXentLoss()
        method = ContrastiveMethod(SSLEncoder(unet, ProjectionHead(backbone_feature_dim(unet), (8,), 8)), loss)
    path = tmp_path / f"{method_name}.pt"
    torch.save(method.backbone_state_dict(), path)  # what TrainingRun writes at the end of pretraining
    segmentation = tiny_unet(out_channels=4)
    report = load_pretrained(segmentation, path)
    missing = list(getattr(report, "missing_keys", report.get("missing_keys", []) if isinstance(report, dict) else []))
    assert not [k for k in missing if k.startswith("encoder.")]
    saved = torch.load(path, weights_only=True)
    for name, value in segmentation.state_dict().items():
        if name in saved:
            assert torch.equal(value, saved[name]), name
    assert math.isfinite(float(sum(v.float().sum() for v in saved.values())))
