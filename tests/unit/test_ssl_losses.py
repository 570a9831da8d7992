"""Self-supervised losses against hand-computed values and the invariants each method relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmrssl.losses.contrastive import NTXentLoss, PositionalContrastiveLoss, supervised_contrastive_loss
from cmrssl.losses.dino import DINOLoss, linear_warmup
from cmrssl.losses.masked import MaskedMSELoss
from cmrssl.networks.masking import random_patch_mask
from cmrssl.transforms.masking import RandPatchMask, RandPatchMaskd

E1 = [1.0, 0.0]
E2 = [0.0, 1.0]


# ---------------------------------------------------------------- NT-Xent
def test_ntxent_matches_hand_computed_value_for_matched_views():
    # anchors e1, e2, e1, e2: positive similarity 1, two negatives at 0
    # l = -log(e^(1/t) / (e^(1/t) + 2)) for every anchor
    views = torch.tensor([E1, E2])
    assert NTXentLoss(temperature=1.0)(views, views.clone()).item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    assert NTXentLoss(temperature=0.1)(views, views.clone()).item() == pytest.approx(
        math.log(math.exp(10) + 2) - 10, abs=1e-6
    )


def test_ntxent_matches_hand_computed_value_for_swapped_views():
    # anchor e1's positive is e2 (similarity 0); denominator e^0 + e^0 + e^1
    view_0 = torch.tensor([E1, E2])
    view_1 = torch.tensor([E2, E1])
    assert NTXentLoss(temperature=1.0)(view_0, view_1).item() == pytest.approx(math.log(2 + math.e), abs=1e-6)


def test_ntxent_is_lower_for_matched_than_shuffled_views():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(16, 32, generator=generator)
    view_0 = base + 0.05 * torch.randn(16, 32, generator=generator)
    view_1 = base + 0.05 * torch.randn(16, 32, generator=generator)
    loss = NTXentLoss(temperature=0.1)
    matched = loss(view_0, view_1)
    shuffled = loss(view_0, view_1[torch.randperm(16, generator=generator)])
    assert matched < shuffled - 1.0


def test_ntxent_agrees_with_monai_contrastive_loss():
    from monai.losses import ContrastiveLoss

    generator = torch.Generator().manual_seed(1)
    view_0, view_1 = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    ours = NTXentLoss(temperature=0.1)(view_0, view_1)
    theirs = ContrastiveLoss(temperature=0.1)(view_0, view_1)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_ntxent_gradient_flows_and_rejects_bad_shapes():
    view_0 = torch.randn(4, 8, requires_grad=True)
    NTXentLoss()(view_0, torch.randn(4, 8)).backward()
    assert view_0.grad is not None and torch.isfinite(view_0.grad).all()
    with pytest.raises(ValueError, match="views"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature=0.0)


# ---------------------------------------------------------------- PCL
def test_pcl_positive_mask_includes_pairs_within_threshold_only():
    loss = PositionalContrastiveLoss(threshold=0.1)
    positions = torch.tensor([0.0, 0.1, 0.21, 0.3, 0.4])
    mask = loss.positive_mask(positions)
    assert mask[0, 1] and mask[1, 0]  # exactly 0.1 apart: positive
    assert not mask[1, 2]  # 0.11 apart: negative
    assert mask[3, 4]  # 0.4 - 0.3 is 0.10000000000000003 in floating point: still within 0.1
    assert not mask[0, 2]


def test_pcl_hand_computed_values():
    views = torch.tensor([E1, E2])
    loss = PositionalContrastiveLoss(temperature=1.0, threshold=0.1)
    # slices 0.5 apart: only the other view is positive, which is NT-Xent
    far = loss(views, views.clone(), torch.tensor([0.0, 0.5]))
    assert far.item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    # 0.1 apart: all three other projections are positives (similarities 0, 1, 0)
    # l = log(2 + e) - (0 + 1 + 0) / 3
    near = loss(views, views.clone(), torch.tensor([0.0, 0.1]))
    assert near.item() == pytest.approx(math.log(2 + math.e) - 1 / 3, abs=1e-6)
    # 0.11 apart is not within 0.1: back to the NT-Xent value
    just_outside = loss(views, views.clone(), torch.tensor([0.0, 0.11]))
    assert just_outside.item() == pytest.approx(far.item(), abs=1e-6)


def test_pcl_rewards_embeddings_that_follow_position():
    # embeddings clustered by slice level score lower than embeddings clustered against it
    positions = torch.tensor([0.0, 0.05, 0.5, 0.55])
    by_level = torch.tensor([E1, E1, E2, E2])
    against_level = torch.tensor([E1, E2, E1, E2])
    loss = PositionalContrastiveLoss(temperature=0.1)
    assert loss(by_level, by_level.clone(), positions) < loss(against_level, against_level.clone(), positions)


def test_pcl_rejects_wrong_position_count():
    with pytest.raises(ValueError, match="positions"):
        PositionalContrastiveLoss()(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0.0, 0.5]))


def test_supervised_contrastive_loss_needs_a_positive():
    with pytest.raises(ValueError, match="positive"):
        supervised_contrastive_loss(torch.randn(3, 4), torch.zeros(3, 3, dtype=torch.bool), 0.1)


# ---------------------------------------------------------------- DINO
def test_dino_loss_hand_computed_and_centre_update():
    loss = DINOLoss(output_dim=2, student_temperature=0.1, teacher_temperature=0.04, warmup_teacher_temperature_epochs=0,
                    center_momentum=0.9)
    assert loss.teacher_temperature == pytest.approx(0.04)
    # teacher logits / 0.04 = [0, log 3] -> probabilities [1/4, 3/4]
    teacher = [torch.tensor([[0.0, 0.04 * math.log(3.0)]])]
    # student: view 0 (same crop as the teacher's, ignored) and view 1 uniform -> log(1/2)
    student = [torch.tensor([[5.0, -5.0]]), torch.tensor([[0.3, 0.3]])]
    value = loss(teacher, student)
    assert value.item() == pytest.approx(math.log(2.0), abs=1e-6)
    # centre: 0.9 * 0 + 0.1 * teacher mean
    assert torch.allclose(loss.center, torch.tensor([[0.0, 0.1 * 0.04 * math.log(3.0)]]))
    # second call: the centre is subtracted from the teacher before its softmax
    student_1 = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.1 * math.log(3.0)]])]  # log q = [log 1/4, log 3/4]
    centred = 0.04 * math.log(3.0) * 0.9 / 0.04  # teacher logit gap after centring
    p1 = 1 / (1 + math.exp(-centred))
    expected = -((1 - p1) * math.log(0.25) + p1 * math.log(0.75))
    assert loss(teacher, student_1).item() == pytest.approx(expected, abs=1e-6)


def test_dino_loss_averages_over_all_cross_crop_pairs():
    torch.manual_seed(0)
    loss = DINOLoss(output_dim=4, warmup_teacher_temperature_epochs=0)
    teacher = [torch.randn(3, 4) for _ in range(2)]
    student = [torch.randn(3, 4) for _ in range(4)]
    center = loss.center.clone()
    value = loss(teacher, student)
    terms = []
    for t, teacher_view in enumerate(teacher):
        p = torch.softmax((teacher_view - center) / 0.04, dim=-1)
        for s, student_view in enumerate(student):
            if s == t:
                continue
            terms.append(-(p * torch.log_softmax(student_view / 0.1, dim=-1)).sum(-1).mean())
    assert value.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_dino_teacher_temperature_warms_up_linearly():
    loss = DINOLoss(output_dim=4, teacher_temperature=0.04, warmup_teacher_temperature=0.02, warmup_teacher_temperature_epochs=4)
    assert loss.teacher_temperature == pytest.approx(0.02)
    loss.set_epoch(2)
    assert loss.teacher_temperature == pytest.approx(0.03)
    loss.set_epoch(10)
    assert loss.teacher_temperature == pytest.approx(0.04)
    assert linear_warmup(0.02, 0.04, 0, 0) == pytest.approx(0.04)


def test_dino_loss_sends_no_gradient_to_the_teacher():
    loss = DINOLoss(output_dim=4)
    teacher = torch.randn(2, 4, requires_grad=True)
    student = torch.randn(2, 4, requires_grad=True)
    loss([teacher], [student.clone(), student * 2]).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


# ---------------------------------------------------------------- MIM
def test_masked_mse_hand_computed_and_ignores_unmasked_pixels():
    target = torch.zeros(1, 1, 2, 2)
    prediction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert MaskedMSELoss()(prediction, target, mask).item() == pytest.approx((1.0 + 16.0) / 2)
    # changing unmasked pixels (even to nan) changes neither value nor gradient
    wild = prediction.clone()
    wild[0, 0, 0, 1] = float("nan")
    wild[0, 0, 1, 0] = 1e6
    wild.requires_grad_(True)
    value = MaskedMSELoss()(wild, target, mask)
    value.backward()
    assert value.item() == pytest.approx(8.5)
    assert wild.grad[0, 0, 0, 1] == 0 and wild.grad[0, 0, 1, 0] == 0
    with pytest.raises(ValueError, match="no pixel"):
        MaskedMSELoss()(prediction, target, torch.zeros_like(mask))


def test_patch_mask_ratio_holds_and_patches_are_whole():
    mask = random_patch_mask((3, 1, 128, 96), patch_size=(32, 32), mask_ratio=0.75, generator=np.random.RandomState(0))
    assert mask.shape == (3, 1, 128, 96) and mask.dtype == torch.bool
    for image_mask in mask[:, 0]:
        assert image_mask.float().mean().item() == pytest.approx(0.75)  # 9 of 12 patches
        blocks = image_mask.reshape(4, 32, 3, 32).permute(0, 2, 1, 3).reshape(12, -1)
        assert bool(((blocks.all(dim=1)) | (~blocks.any(dim=1))).all())  # each patch fully in or out
    assert not torch.equal(mask[0], mask[1]) or not torch.equal(mask[1], mask[2])


def test_rand_patch_mask_sets_masked_pixels_to_zero_and_keeps_the_rest():
    image = torch.rand(1, 64, 64) + 1.0
    masked, mask = RandPatchMask(patch_size=(32, 32), mask_ratio=0.75).set_random_state(0)(image)
    assert mask.shape == (1, 64, 64) and mask.mean().item() == pytest.approx(0.75)
    assert bool((masked[mask.bool()] == 0).all())
    assert torch.equal(masked[~mask.bool()], image[~mask.bool()])
    d = RandPatchMaskd(keys="image", patch_size=(32, 32)).set_random_state(1)({"image": image})
    assert set(d) == {"image", "image_masked", "image_mask"} and torch.equal(d["image"], image)
    with pytest.raises(ValueError, match="mask_ratio"):
        RandPatchMask(mask_ratio=1.5)
