"""Ranking SSL pieces: losses against hand-computed values, the pairs they score, the study stack and its checks."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.losses import DiceCELoss

from cmrssl.data.ranking import ranking_studies
from cmrssl.engines.ranking import RankingMethod
from cmrssl.engines.rounds import AlternatingRounds
from cmrssl.losses.ranking import (
    invariance_loss,
    mid_ventricular_slices,
    pairwise_ranking_loss,
    spatial_pairs,
    temporal_pairs,
)
from cmrssl.metrics.function import cardiac_function_from_lv_curve, cardiac_function_from_study
from cmrssl.io.reader import read_cine
from cmrssl.labels import LV_CAVITY
from cmrssl.networks.regression import AreaRegressor, SegmentationAreas, area_network
from cmrssl.networks.unet import CMRUNet
from cmrssl.transforms.ranking import LoadStudyStack, mask_outside, nested_boxes, random_similarity_grids, warp


# --------------------------------------------------------------------------- losses
def test_pairwise_ranking_loss_by_hand():
    larger, smaller = torch.tensor([500.0, 300.0]), torch.tensor([400.0, 600.0])
    # violations 0 and 300 mm^2 = 3 cm^2 -> mean 1.5
    assert float(pairwise_ranking_loss(larger, smaller)) == pytest.approx(1.5)
    # a 100 mm^2 margin: max(0, 400 - 500 + 100) = 0, max(0, 600 - 300 + 100) = 400 -> mean 2.0
    assert float(pairwise_ranking_loss(larger, smaller, margin_mm2=100.0)) == pytest.approx(2.0)
    assert float(pairwise_ranking_loss(torch.zeros(0), torch.zeros(0))) == 0.0


def test_invariance_loss_by_hand():
    # smooth L1 in cm^2: |0.5| -> 0.5 * 0.5^2 = 0.125; |3| -> 2.5; mean 1.3125
    areas, augmented = torch.tensor([100.0, 1000.0]), torch.tensor([150.0, 1300.0])
    assert float(invariance_loss(areas, augmented)) == pytest.approx(1.3125)


def test_temporal_pairs_follow_the_cycle():
    # systole ED=1 -> ES=3 shrinks, diastole 3 -> 1 (through 0) grows
    assert temporal_pairs(6, ed=1, es=3) == [(1, 2), (2, 3), (4, 3), (5, 4), (0, 5), (1, 0)]
    assert temporal_pairs(2, ed=0, es=1) == [(0, 1)]  # ED/ES-only data: area(ED) >= area(ES)
    with pytest.raises(ValueError, match="same frame"):
        temporal_pairs(5, 2, 2)
    with pytest.raises(ValueError, match="at least two"):
        temporal_pairs(1, 0, 0)


def test_spatial_pairs_run_from_the_middle_to_the_apex():
    assert spatial_pairs(6) == [(3, 4), (4, 5)]
    assert mid_ventricular_slices(4) == [1, 2]
    assert mid_ventricular_slices(1) == [0]


def test_nested_windows_really_nest():
    rng = np.random.RandomState(0)
    for _ in range(500):
        outer, inner = nested_boxes((40, 56), rng, (0.3, 0.95))
        assert 0 <= outer[0] < outer[1] <= 40 and 0 <= outer[2] < outer[3] <= 56
        assert outer[0] <= inner[0] < inner[1] <= outer[1] and outer[2] <= inner[2] < inner[3] <= outer[3]
        outer_area, inner_area = (outer[1] - outer[0]) * (outer[3] - outer[2]), (inner[1] - inner[0]) * (inner[3] - inner[2])
        assert inner_area < outer_area < 40 * 56
    image = torch.arange(16.0).reshape(4, 4)
    masked = mask_outside(image, (1, 3, 1, 3))
    assert masked[1:3, 1:3].equal(image[1:3, 1:3]) and float(masked.sum() - masked[1:3, 1:3].sum()) == 0.0


# --------------------------------------------------------------------------- the method
class MeanArea(nn.Module):
    """area = 1000 x the slice's mean intensity: a network whose ranking we can compute by hand."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1000.0))

    def forward(self, x):
        return (x.mean(dim=(1, 2, 3)) * self.scale)[:, None]


def _ranking_inputs(frame_values, ed=-1, es=-1, slices=3):
    image = torch.tensor(frame_values, dtype=torch.float32)[:, None, None, None].expand(-1, slices, 8, 8).clone()
    return {"step": "ranking", "image": image, "ed_position": torch.tensor(ed), "es_position": torch.tensor(es)}


def test_temporal_pairs_follow_the_re_estimated_ed_es():
    method = RankingMethod(MeanArea(), ranking_weights={"spatial": 0, "nested": 0, "invariance": 0})
    # frame areas 1000, 3000, 500, 2000 mm^2: the model says ED = 1, ES = 2; pairs (1,2) (3,2) (0,3) (1,0);
    # (0,3) is violated by 1000 mm^2 = 10 units on the one mid slice of 3 -> 10 / 4
    out = method(_ranking_inputs([1.0, 3.0, 0.5, 2.0]))
    assert float(out["ranking_temporal"]) == pytest.approx(2.5)
    # known ED = 0, ES = 2: pairs (0,1) (1,2) (3,2) (0,3): violations 2000 and 1000 mm^2 -> 30 / 4
    out = method(_ranking_inputs([1.0, 3.0, 0.5, 2.0], ed=0, es=2))
    assert float(out["ranking_temporal"]) == pytest.approx(7.5)


def test_the_temporal_term_orders_every_frame_of_a_cine_by_default():
    class Counting(MeanArea):
        def forward(self, x):
            self.seen.append(x.shape[0])
            return super().forward(x)

    values = [3.0 - abs(t - 6) / 3.0 for t in range(12)]  # a 12-frame cycle
    weights = {"spatial": 0, "nested": 0, "invariance": 0}
    network = Counting()
    network.seen = []
    RankingMethod(network, ranking_weights=weights)(_ranking_inputs(values))
    assert network.seen == [12 * 3]  # every frame's slices, with gradients, in one pass
    network.seen = []
    RankingMethod(network, ranking_weights=weights, max_frames=4)(_ranking_inputs(values))
    assert network.seen[0] == 12 * 3 and network.seen[1] <= 6 * 3  # ED/ES from all, then a few frames scored


def test_one_frame_study_skips_the_temporal_term_and_counts_it():
    method = RankingMethod(MeanArea(), ranking_weights={"nested": 0, "invariance": 0})
    out = method(_ranking_inputs([1.0], slices=4))
    assert "ranking_temporal" not in out and "ranking_spatial" in out
    assert method.temporal_skipped == 1


def test_the_supervised_only_switch_turns_every_ranking_term_off():
    method = RankingMethod(MeanArea(), ranking=False)
    assert set(method.weights.values()) == {0.0}
    with pytest.raises(RuntimeError, match="supervised-only"):
        method(_ranking_inputs([1.0, 2.0]))
    labelled = [{"image": 0}] * 3
    rounds = iter(AlternatingRounds(labelled, None, supervised_steps=2, ranking_steps=5))
    assert {next(rounds)["step"] for _ in range(7)} == {"supervised"}
    rounds = iter(AlternatingRounds(labelled, [{"image": 1}], supervised_steps=2, ranking_steps=1))
    assert [next(rounds)["step"] for _ in range(6)] == ["supervised", "supervised", "ranking"] * 2


def test_volumes_only_supervision_goes_through_the_simpson_sum():
    method = RankingMethod(MeanArea())
    image = torch.tensor([2.0, 1.0])[:, None, None, None].expand(-1, 5, 4, 4).clone()
    # volumes: 5 slices x 2000 mm^2 x 10 mm = 100 ml at ED, 50 ml at ES; targets 100 / 50 -> loss 0
    inputs = {"step": "supervised", "image": image, "labelled": torch.zeros(2, dtype=torch.bool),
              "edv_ml": torch.tensor(100.0), "esv_ml": torch.tensor(50.0), "slice_spacing_mm": torch.tensor(10.0)}
    assert float(method(inputs)["loss"].detach()) == pytest.approx(0.0, abs=1e-6)
    inputs["edv_ml"] = torch.tensor(120.0)  # 20 ml = 2 units off on one of two -> smooth L1 (2 - 0.5) / 2
    assert float(method(inputs)["loss"].detach()) == pytest.approx(0.75)


# --------------------------------------------------------------------------- areas through a segmentation head
def test_a_segmenting_network_measures_its_soft_lv_area_and_keeps_the_unet_parameter_names():
    net = area_network("unet", pixdim_mm=[2.0, 2.0], channels=[4, 8, 16, 32], deep_supervision=True)
    assert isinstance(net, SegmentationAreas) and isinstance(area_network("resnet10_small"), AreaRegressor)
    x = torch.randn(3, 1, 16, 16)
    net.eval()
    probability = torch.softmax(net.segment(x), dim=1)[:, 1]
    np.testing.assert_allclose(net(x).detach().numpy()[:, 0], probability.sum(dim=(1, 2)).detach().numpy() * 4.0,
                               rtol=1e-5)
    net.train()  # deep supervision: the segment is stacked levels, the area the full-resolution one
    assert net.segment(x).shape == (3, 3, 4, 16, 16) and net(x).shape == (3, 1)
    with torch.no_grad():  # a head that says "LV" everywhere: the whole 16 x 16 field at 4 mm^2
        net.head.conv.conv.weight.zero_()
        net.head.conv.conv.bias.copy_(torch.tensor([0.0, 50.0, 0.0, 0.0]))
    assert float(net.eval()(x)[0].detach()) == pytest.approx(16 * 16 * 4.0, rel=1e-4)
    # the segmentation bundle's U-Net loads its weights as they are
    CMRUNet(channels=[4, 8, 16, 32], deep_supervision=True).load_state_dict(net.state_dict())
    with pytest.raises(ValueError, match="lv_class"):
        SegmentationAreas(lv_class=4, channels=[4, 8])


def test_ranking_losses_count_a_segmenting_networks_areas_in_fractions_of_the_field():
    """In cm^2 a U-Net's ranking gradients were about 50 times its Dice loss's and its supervised steps stopped
    learning; as fractions of the slice's field they are of the segmentation loss's size."""
    image = torch.randn(2, 4, 16, 16)
    unet = area_network("unet", pixdim_mm=2.0, channels=[4, 8], deep_supervision=False)
    assert RankingMethod(unet).ranking_scale(image) == 16 * 16 * 4.0
    assert RankingMethod(MeanArea()).ranking_scale(image) == 100.0
    assert RankingMethod(unet, ranking_scale_mm2=50.0).ranking_scale(image) == 50.0
    weights = {"spatial": 0, "nested": 0, "invariance": 0}
    inputs = _ranking_inputs([1.0, 3.0, 0.5, 2.0], ed=0, es=2)  # the violations of the by-hand test above: 30 / 4
    out = RankingMethod(MeanArea(), ranking_weights=weights, ranking_scale_mm2=1000.0)(inputs)
    assert float(out["ranking_temporal"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="ranking_scale_mm2"):
        RankingMethod(unet, ranking_scale_mm2=0)


def test_invariance_on_the_segmentation_compares_every_pixel():
    torch.manual_seed(0)
    unet = area_network("unet", pixdim_mm=2.0, channels=[4, 8], deep_supervision=False)
    weights = {"temporal": 0, "spatial": 0, "nested": 0}
    inputs = {"step": "ranking", "image": torch.randn(2, 4, 16, 16), "ed_position": torch.tensor(0),
              "es_position": torch.tensor(1)}
    same = RankingMethod(unet, ranking_weights=weights, invariance_on="segmentation", intensity_augment=lambda x: x)
    assert float(same(inputs)["ranking_invariance"]) == pytest.approx(0.0, abs=1e-10)
    changed = RankingMethod(unet, ranking_weights=weights, invariance_on="segmentation",
                            intensity_augment=lambda x: x * 3.0)
    out = changed(inputs)
    assert float(out["ranking_invariance"]) > 0
    out["loss"].backward()
    assert unet.head.conv.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="segmenting network"):
        RankingMethod(MeanArea(), invariance_on="segmentation")
    with pytest.raises(ValueError, match="invariance_on"):
        RankingMethod(unet, invariance_on="pixels")
    assert RankingMethod(unet).invariance_on == "segmentation"  # the default follows the network
    assert RankingMethod(MeanArea()).invariance_on == "area"


class PointwiseSegmenter(nn.Module):
    """Class probabilities from each pixel alone (a 1x1 convolution): moving the image moves them, up to
    interpolation."""

    pixel_area_mm2 = 1.0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        with torch.no_grad():  # probabilities that follow the intensity closely
            self.conv.weight.copy_(torch.tensor([-4.0, 4.0, 1.0, 0.0])[:, None, None, None])

    def segment(self, x):
        return self.conv(x)

    def probabilities(self, x):
        return torch.softmax(self.segment(x), dim=1)

    def forward(self, x):
        return self.probabilities(x)[:, 1].flatten(1).sum(dim=1, keepdim=True)


def test_similarity_grids_rotate_and_zoom_about_the_centre():
    rng = np.random.RandomState(0)
    yy, xx = torch.meshgrid(torch.arange(64.0) - 31.5, torch.arange(64.0) - 31.5, indexing="ij")
    disk = ((yy ** 2 + xx ** 2) < 8.0 ** 2).float()[None, None].expand(3, 1, 64, 64)
    identity = random_similarity_grids(3, (64, 64), rng)
    assert torch.allclose(warp(disk, identity), disk, atol=1e-5)
    doubled = warp(disk, random_similarity_grids(3, (64, 64), rng, rotate_deg=180.0, zoom=(2.0, 2.0)))
    assert doubled.sum(dim=(1, 2, 3)).tolist() == pytest.approx([4 * disk[0].sum().item()] * 3, rel=0.05)
    with pytest.raises(ValueError, match="zoom"):
        random_similarity_grids(1, (8, 8), rng, zoom=(1.2, 0.8))


def test_the_invariance_term_can_cover_every_slice_and_ask_for_equivariance_to_rotation_and_zoom():
    torch.manual_seed(0)
    net = PointwiseSegmenter()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blob = 3.0 * torch.exp(-((xx - 0.3) ** 2 + (yy + 0.2) ** 2) / 0.1) - 1.0  # off centre: a rotation moves it
    inputs = {"step": "ranking", "image": blob.expand(2, 3, 32, 32).clone(), "ed_position": torch.tensor(0),
              "es_position": torch.tensor(1)}
    weights = {"temporal": 0, "spatial": 0, "nested": 0}
    seen = []

    def identity(x):
        seen.append(x.shape[0])
        return x

    RankingMethod(net, ranking_weights=weights, nested_slices=2, intensity_augment=identity)(inputs)
    RankingMethod(net, ranking_weights=weights, invariance_slices=0, intensity_augment=identity)(inputs)
    RankingMethod(net, ranking_weights=weights, invariance_slices=4, intensity_augment=identity)(inputs)
    assert seen == [2, 6, 4]  # the nested picks (the default), every slice of both frames, 4 of them
    # the same slice moved must give the probabilities moved, compared where the moved slice covers the image
    moved = RankingMethod(net, ranking_weights=weights, invariance_slices=0, invariance_rotate_deg=60.0,
                          invariance_zoom=(0.7, 1.4), intensity_augment=identity)
    assert float(moved(inputs)["ranking_invariance"]) < 1e-4
    with torch.no_grad():
        unmoved_target = torch.nn.functional.mse_loss(
            net.probabilities(warp(blob[None, None], random_similarity_grids(1, (32, 32), np.random.RandomState(1),
                                                                             60.0, (0.7, 1.4)))),
            net.probabilities(blob[None, None]))
    assert float(unmoved_target) > 100 * 1e-4  # what a term that did not move its target would ask
    brighter = RankingMethod(net, ranking_weights=weights, invariance_slices=0, invariance_rotate_deg=60.0,
                             intensity_augment=lambda x: x * 3.0)
    out = brighter(inputs)
    out["loss"].backward()
    assert float(out["ranking_invariance"]) > 1e-3 and net.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="invariance_slices"):
        RankingMethod(net, invariance_slices=-1)
    with pytest.raises(ValueError, match="invariance_zoom"):
        RankingMethod(net, invariance_zoom=(0.0, 1.0))


def test_labelled_frames_supervise_every_pixel_through_the_segmentation_loss():
    net = area_network("unet", pixdim_mm=2.0, channels=[4, 8], deep_supervision=False)
    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    method = RankingMethod(net, segmentation_loss=loss, chunk_size=3)
    image = torch.randn(2, 5, 8, 8)
    label = torch.zeros(2, 5, 8, 8, dtype=torch.uint8)
    label[0, :, 2:6, 2:6] = 1
    inputs = {"step": "supervised", "image": image, "label": label, "labelled": torch.tensor([True, False]),
              "area_mm2": torch.tensor([[64.0] * 5, [float("nan")] * 5])}
    out = method(inputs)
    assert set(out) == {"loss", "supervised_segmentation"}
    net.eval()  # the loss is the segmentation bundle's on the labelled frame's 5 slices, chunked by 3
    expected = loss(net.segment(image[0][:, None]), label[0][:, None].long())
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    out["loss"].backward()
    assert net.head.conv.conv.weight.grad.abs().sum() > 0
    # a regressor keeps the area loss, even with a segmentation loss configured
    out = RankingMethod(MeanArea(), segmentation_loss=loss)(inputs)
    assert "supervised_area" in out


# --------------------------------------------------------------------------- the study stack
@pytest.fixture(scope="module")
def phantom_datalist(phantom_cohort, tmp_path_factory):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path_factory.mktemp("ranking") / "phantom.json"
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "tools/index.py", "phantom", str(phantom_cohort), "--datalist", str(out)],
                            cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_area_to_volume_matches_the_function_module_on_the_phantom(phantom_datalist):
    study = ranking_studies(phantom_datalist, ["training", "validation", "test"])["all"][0]
    stack = LoadStudyStack(pixdim_mm=2.0, roi_size=96)(study)
    cine = read_cine(study["cine"])
    labels = np.full(cine.pixels.shape, -1, dtype=np.int16)
    for frame in study["frames"]:
        labels[int(frame["frame_index"])] = np.rint(read_cine(frame["label"]).pixels[0])
    cine.labels, cine.labelled_frames = labels, [int(f["frame_index"]) for f in study["frames"]]
    reference = cardiac_function_from_study(cine)
    curve = stack["reference_volumes_ml"].numpy()[:, LV_CAVITY]
    labelled = np.isfinite(curve)
    np.testing.assert_allclose(curve[labelled], reference.lv_volume_curve_ml[labelled], rtol=1e-5)
    # the areas of the resampled crop give the same volumes within resampling error
    areas = stack["area_mm2"].numpy()
    from_areas = areas[labelled].sum(axis=1) * float(stack["slice_spacing_mm"]) / 1000.0
    np.testing.assert_allclose(from_areas, curve[labelled], rtol=0.05)
    function = cardiac_function_from_lv_curve(curve[labelled], reference.spacing_zyx_mm)
    assert function.lv_edv_ml == pytest.approx(reference.lv_edv_ml, rel=1e-5)
    assert function.lv_ef_percent == pytest.approx(reference.lv_ef_percent, rel=1e-5)
    assert function.lv_mass_g is None and function.rv_edv_ml is None
    assert stack["image"].shape[-2:] == (96, 96) and stack["image"].shape[:2] == (cine.num_frames, cine.num_slices)
    # the label maps ride with the image, and their LV is the area target
    label = stack["label"].numpy()
    assert label.shape == tuple(stack["image"].shape) and label.dtype == np.uint8
    np.testing.assert_allclose((label[labelled] == 1).sum(axis=(2, 3)) * 4.0, areas[labelled])
    assert not label[~labelled].any()


# --------------------------------------------------------------------------- bad input
def _datalist(tmp_path, records):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": records}))
    return path


def _nifti(path, data, zooms=(1.5, 1.5, 8.0)):
    affine = np.diag(list(zooms) + [1.0])
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return str(path)


def test_a_label_without_lv_is_refused_naming_the_file(tmp_path):
    image = _nifti(tmp_path / "frame.nii.gz", np.random.rand(16, 16, 4).astype(np.float32))
    label = _nifti(tmp_path / "frame_gt.nii.gz", np.full((16, 16, 4), 3, dtype=np.int16))
    records = [{"image": image, "label": label, "subject": "s1", "frame_index": 0}]
    with pytest.raises(ValueError, match="frame_gt.nii.gz: label has no LV cavity"):
        ranking_studies(_datalist(tmp_path, records))


def test_a_volumes_only_record_needs_both_volumes(tmp_path):
    image = _nifti(tmp_path / "frame.nii.gz", np.random.rand(16, 16, 4).astype(np.float32))
    records = [{"image": image, "subject": "s1", "edv_ml": 120.0}]
    with pytest.raises(ValueError, match="edv_ml but not esv_ml"):
        ranking_studies(_datalist(tmp_path, records))


@pytest.mark.parametrize("edv", [-5.0, "lots", float("nan")])
def test_a_study_volume_that_is_not_a_positive_number_is_refused(tmp_path, edv):
    image = _nifti(tmp_path / "frame.nii.gz", np.random.rand(16, 16, 4).astype(np.float32))
    records = [{"image": image, "subject": "s1", "edv_ml": edv, "esv_ml": 50.0}]
    with pytest.raises(ValueError, match=r"record 0 of .training. \(subject s1\): edv_ml"):
        ranking_studies(_datalist(tmp_path, records))


def test_a_stack_without_slice_spacing_is_refused_naming_the_file(tmp_path):
    image = _nifti(tmp_path / "single.nii.gz", np.random.rand(16, 16, 1).astype(np.float32))
    with pytest.raises(ValueError, match="single.nii.gz: no slice spacing"):
        LoadStudyStack(pixdim_mm=1.5, roi_size=16)({"subject": "s", "frames": [{"image": image, "frame_index": 0}]})


# --------------------------------------------------------------------------- the writer
def _fake_study(subject, volumes_scale=1.0):
    areas = np.array([[1500.0, 1200.0, 600.0], [900.0, 700.0, 300.0]]) * volumes_scale
    return {"subject": subject, "source": f"/data/{subject}", "areas_mm2": areas, "slice_spacing_mm": 10.0,
            "frame_index": [0, 11], "reference_volumes_ml": np.array([[0.0, 33.0, 0.0, 0.0], [0.0, 19.0, 0.0, 0.0]]), "ed_position": 0,
            "es_position": 1, "edv_ml": float("nan"), "esv_ml": float("nan")}


def test_volume_writer_reports_and_scores_mass_and_rv_from_a_segmenting_network(tmp_path):
    from cmrssl.engines.study_volumes import StudyVolumeWriter

    study = _fake_study("a")
    lv = study["areas_mm2"]
    # every class's soft areas [F, Z, 4]: myocardium 1000 mm^2 per slice, RV 2000 at ED and 1000 at ES
    study["areas_mm2"] = np.stack([np.zeros_like(lv), lv, np.full_like(lv, 1000.0),
                                   np.array([[2000.0] * 3, [1000.0] * 3])], axis=-1)
    study["reference_volumes_ml"] = np.array([[0.0, 33.0, 25.0, 60.0], [0.0, 19.0, 28.0, 40.0]])
    writer = StudyVolumeWriter(tmp_path / "eval", plots=False, pixdim_mm=2.0, score=True)
    writer.studies = [study]
    writer.write()
    report = json.loads((tmp_path / "eval" / "a" / "function.json").read_text())
    # 3 slices x 1000 mm^2 x 10 mm = 30 ml of myocardium at ED -> 31.5 g; RV 60 -> 30 ml
    assert report["lv_edv_ml"] == pytest.approx(33.0) and report["lv_mass_g"] == pytest.approx(31.5)
    assert report["rv_edv_ml"] == pytest.approx(60.0) and report["rv_esv_ml"] == pytest.approx(30.0)
    assert report["lv_area_mm2"] == lv.tolist()
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["function"]
    assert summary["lv_mass_g"]["mean_error"] == pytest.approx(31.5 - 1.05 * 25.0)
    assert summary["rv_esv_ml"]["mean_error"] == pytest.approx(30.0 - 40.0)
    assert summary["lv_ef_percent"]["mean_absolute_error"] == pytest.approx(0.0, abs=1e-3)


def test_volume_writer_scores_and_overwrites_only_its_own_outputs(tmp_path):
    from cmrssl.engines.study_volumes import StudyVolumeWriter

    out = tmp_path / "eval"
    writer = StudyVolumeWriter(out, plots=False, pixdim_mm=2.0, score=True)
    writer.studies = [_fake_study("a"), _fake_study("b", 1.1)]
    writer.write()
    summary = json.loads((out / "summary.json").read_text())
    # a: predicted EDV = (1500 + 1200 + 600) mm^2 x 10 mm = 33 ml, ESV 19 ml: exact; b: 10 % larger
    assert summary["function"]["lv_edv_ml"]["mean_absolute_error"] == pytest.approx(3.3 / 2)
    assert summary["frames"]["ed_frame"]["exact"] == 2
    assert json.loads((out / "a" / "function.json").read_text())["lv_edv_ml"] == pytest.approx(33.0)
    (out / "notes.txt").write_text("the user's own file")
    (out / "metrics.csv").write_text("subject\n")  # the scores' name before 0.3.0: this writer's, never left stale
    with pytest.raises(FileExistsError):
        StudyVolumeWriter(out, score=True)
    writer = StudyVolumeWriter(out, overwrite=True, plots=False, pixdim_mm=2.0, score=True)
    writer.studies = [_fake_study("c")]
    writer.write()
    assert sorted(p.name for p in out.iterdir()) == ["c", "function.csv", "notes.txt", "subjects.json", "summary.json"]


def test_an_unlabelled_datalist_gives_its_training_split_and_says_what_it_leaves(tmp_path, caplog):
    image = _nifti(tmp_path / "frame.nii.gz", np.random.rand(16, 16, 4).astype(np.float32))
    main = _datalist(tmp_path, [{"image": image, "subject": "s1", "edv_ml": 100.0, "esv_ml": 50.0}])
    extra = tmp_path / "cines.json"  # as tools/index.py dicom writes with its default fractions
    extra.write_text(json.dumps({"training": [{"image": image, "subject": "u1"}],
                                 "test": [{"image": image, "subject": "u2"}, {"image": image, "subject": "u3"}]}))
    with caplog.at_level("WARNING", logger="cmrssl.data.ranking"):
        studies = ranking_studies(main, unlabelled_datalists=[extra])
    assert [s["subject"] for s in studies["unlabelled"]] == ["u1"]
    assert "cines.json: 1 studies of training join the unlabelled pool" in caplog.text and "test 2 records" in caplog.text
    everything = ranking_studies(main, unlabelled_datalists=[extra], unlabelled_splits=["training", "test"])
    assert sorted(s["subject"] for s in everything["unlabelled"]) == ["u1", "u2", "u3"]


def test_stack_labels_go_back_onto_the_source_grid(phantom_datalist):
    """labels_on_source inverts the stack's resampling and crop: the label maps LoadStudyStack cut from the
    source come back onto the source pixels (nearest neighbour both ways), 0 outside the window."""
    from cmrssl.transforms.ranking import labels_on_source

    study = ranking_studies(phantom_datalist, ["training", "validation", "test"])["all"][0]
    stack = LoadStudyStack(pixdim_mm=2.0, roi_size=64)(study)
    frame = next(f for f in study["frames"] if f.get("label"))
    t = list(stack["frame_index"].numpy()).index(int(frame["frame_index"]))
    source = np.rint(read_cine(frame["label"]).pixels[0]).astype(np.uint8)  # [Z, H, W]
    back = labels_on_source(stack["label"].numpy()[t], stack["crop_geometry"].numpy())
    assert back.shape == source.shape
    lv = source == LV_CAVITY
    assert (back[lv] == LV_CAVITY).mean() > 0.9 and (source[back == LV_CAVITY] == LV_CAVITY).mean() > 0.9
    assert back.sum() < source.size  # outside the 64 px window (128 mm) nothing is drawn


def test_the_scale_augmentation_keeps_area_and_volume_targets_true():
    from cmrssl.transforms.ranking import RandZoomStackd

    label = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)
    label[0, :, 15:25, 15:25] = LV_CAVITY  # 100 pixels of 4 mm^2 on the labelled frame
    data = {"image": torch.randn(2, 3, 40, 40), "label": label, "labelled": torch.tensor([True, False]),
            "area_mm2": torch.tensor([[400.0] * 3, [float("nan")] * 3]), "edv_ml": torch.tensor(100.0),
            "esv_ml": torch.tensor(60.0)}
    out = RandZoomStackd(prob=1.0, min_zoom=1.4, max_zoom=1.4, pixdim_mm=2.0)(data)
    assert out["image"].shape == (2, 3, 40, 40) and out["label"].shape == (2, 3, 40, 40)
    # 10 px -> 14 px a side: the area measured again on the zoomed label; volumes x 1.96
    assert torch.allclose(torch.as_tensor(out["area_mm2"])[0], torch.full((3,), 196 * 4.0))
    assert torch.isnan(torch.as_tensor(out["area_mm2"])[1]).all()
    assert float(out["edv_ml"]) == pytest.approx(196.0) and float(out["esv_ml"]) == pytest.approx(117.6)
    assert RandZoomStackd(prob=0.0)(data)["edv_ml"] is data["edv_ml"]


def _writer_batch(stack: dict) -> dict:
    """A study stack collated as the evaluator's loader does (batch of one, ``decollate=False``)."""
    return {key: [value] if isinstance(value, str) else value[None] for key, value in stack.items()}


def test_volume_writer_scores_the_masks_on_each_labels_own_grid(phantom_datalist, tmp_path):
    """With the labels on the source grid (the evaluation's ``LoadStudyStack(source_labels=True)``), every labelled
    frame is scored as the segmentation bundle scores it: at the source's own pixel size a prediction equal to the
    stack's labels comes back exactly (Dice 1), and one moved by 3 pixels scores lower."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from cmrssl.engines.study_volumes import StudyVolumeWriter

    study = ranking_studies(phantom_datalist, ["training", "validation", "test"])["all"][0]
    # the source's own pixel (its two sides differ in the 8th digit: a hair smaller keeps both sizes)
    pixel_mm = float(min(read_cine(study["cine"]).pixel_spacing_mm)) * (1 - 1e-6)
    stack = LoadStudyStack(pixdim_mm=pixel_mm, roi_size=128, source_labels=True)(study)
    labelled = [int(f["frame_index"]) for f in study["frames"] if f.get("label")]
    frame = next(f for f in study["frames"] if f.get("label"))
    t = list(stack["frame_index"].numpy()).index(int(frame["frame_index"]))
    np.testing.assert_array_equal(stack["label_source"].numpy()[t], np.rint(read_cine(frame["label"]).pixels[0]))
    dice = {}
    for shift in (0, 3):
        label = torch.roll(stack["label"].long(), shifts=shift, dims=-1)
        pred = F.one_hot(label, 4).movedim(-1, 2).float()[None]  # [1, F, Z, 4, S, S]
        writer = StudyVolumeWriter(tmp_path / f"eval{shift}", plots=False, pixdim_mm=pixel_mm, score=True)
        writer.collect(SimpleNamespace(state=SimpleNamespace(batch=_writer_batch(stack), output={"pred": pred})))
        writer.write()
        with open(tmp_path / f"eval{shift}" / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert sorted(int(r["frame_index"]) for r in rows) == sorted(labelled)
        summary = json.loads((tmp_path / f"eval{shift}" / "summary.json").read_text())
        assert summary["frames_scored"] == len(labelled)
        dice[shift] = {name: summary["segmentation"][name]["dice"]["mean"] for name in summary["segmentation"]}
        assert {r["phase"] for r in rows} <= {"ED", "ES", "other"}
    assert dice[0] == pytest.approx({name: 1.0 for name in dice[0]}), dice[0]
    assert all(dice[3][name] < dice[0][name] - 0.05 for name in dice[0]), dice


def test_the_validation_dice_scores_the_labelled_frames_only():
    """StudyMeanDice: a frame whose label draws nothing is unlabelled and left out; a perfect prediction scores 1,
    one that draws the RV as LV loses both."""
    import torch.nn.functional as F

    from cmrssl.engines.study_volumes import StudyMeanDice

    label = torch.zeros(1, 3, 2, 16, 16, dtype=torch.long)  # [B, F, Z, S, S]: frames 0 and 2 labelled
    for t in (0, 2):
        label[0, t, :, 4:8, 4:8], label[0, t, :, 3:9, 3:4], label[0, t, :, 10:14, 10:14] = 1, 2, 3
    perfect = F.one_hot(label, 4).movedim(-1, 3).float()  # [B, F, Z, C, S, S]
    metric = StudyMeanDice()
    metric.update((perfect, label))
    assert metric.compute() == pytest.approx(1.0) and len(metric._scores) == 2
    wrong = label.clone()
    wrong[wrong == 3] = 1  # the RV drawn as LV cavity
    metric.reset()
    metric.update((F.one_hot(wrong, 4).movedim(-1, 3).float(), label))
    assert metric.compute() < 0.8
