"""The alternating multi-task schedule (Bai 2019) on MONAI's SupervisedTrainer: one pretext sub-iteration
before every beta-th segmentation iteration, on its own data, updating the shared weights."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.networks.blocks.dynunet_block import UnetOutBlock

from cmrssl.engines.multitask import AlternatingPretextSteps, check_multitask_schedule
from cmrssl.networks.multitask import MultiTaskUNet
from cmrssl.networks.unet import CMRUNet


def _batches(n: int, classes: int = 0):
    torch.manual_seed(n)
    out = []
    for _ in range(n):
        batch = {"image": torch.randn(2, 1, 32, 32)}
        if classes:
            batch["position_label"] = torch.randint(0, classes, (2, 1, 32, 32)).float()
        else:
            batch["label"] = torch.randint(0, 4, (2, 1, 32, 32)).float()
        out.append(batch)
    return out


@pytest.mark.parametrize("pretext_channels", [1, 10])
def test_pretext_runs_once_per_beta_segmentation_iterations(pretext_channels):
    torch.manual_seed(0)
    unet = CMRUNet(in_channels=1, out_channels=4, channels=(4, 8, 16, 32))
    network = MultiTaskUNet(unet, UnetOutBlock(2, 4, pretext_channels), mask_patch_size=(8, 8), schedule="alternate")
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, epoch_length=7, train_data_loader=_batches(7),
        network=network, optimizer=optimizer, loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
    )
    pretext = AlternatingPretextSteps(network, optimizer, _batches(2, classes=10 if pretext_channels > 1 else 0),
                                      segmentation_steps=3)
    pretext.attach(trainer)
    head_before = network.pretext_head.conv.conv.weight.detach().clone()
    trainer.run()
    assert pretext.num_steps == 3 and trainer.state.pretext_steps == 3  # before iterations 1, 4 and 7
    assert not torch.equal(head_before, network.pretext_head.conv.conv.weight), "the pretext step trains its head"
    assert not network.pretext_pass


def test_handler_and_options_refuse_what_cannot_alternate():
    unet = CMRUNet(in_channels=1, out_channels=4, channels=(4, 8, 16, 32))
    summed = MultiTaskUNet(unet, UnetOutBlock(2, 4, 1), mask_patch_size=(8, 8))
    with pytest.raises(ValueError, match="schedule sum"):
        AlternatingPretextSteps(summed, torch.optim.SGD(summed.parameters(), lr=0.1), _batches(1))
    alternate = MultiTaskUNet(unet, UnetOutBlock(2, 4, 1), mask_patch_size=(8, 8), schedule="alternate")
    with pytest.raises(ValueError, match="integer >= 1"):
        AlternatingPretextSteps(alternate, torch.optim.SGD(alternate.parameters(), lr=0.1), _batches(1), segmentation_steps=0)
    with pytest.raises(ValueError, match="no records"):
        AlternatingPretextSteps(alternate, torch.optim.SGD(alternate.parameters(), lr=0.1), [])
    check_multitask_schedule("multitask", "alternate", "pool.json")
    check_multitask_schedule("all", "sum", "")
    with pytest.raises(ValueError, match="needs --finetune_mode multitask"):
        check_multitask_schedule("all", "alternate", "pool.json")
    with pytest.raises(ValueError, match="read only with"):
        check_multitask_schedule("multitask", "sum", "pool.json")
    with pytest.raises(ValueError, match="must be one of"):
        check_multitask_schedule("multitask", "interleaved", "")
