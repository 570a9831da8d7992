"""Inference of the segmentation bundle: cine in, masks in the input geometry, function report out."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cmrssl.engines import cine_inference
from cmrssl.engines.cine_inference import CineSegmentationWriter, write_cine_outputs
from cmrssl.io.reader import CineStudyCache, read_cine_for_inference
from cmrssl.networks.checkpoint import load_network_checkpoint
from cmrssl.io import read_cine
from cmrssl.io.geometry import LPS_TO_RAS

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
INFERENCE = BUNDLE / "configs" / "inference.json"


def _parser():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser["bundle_root"] = str(BUNDLE)
    return parser


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """Randomly initialised weights of the bundle's network_def (geometry does not need training)."""
    torch.manual_seed(0)
    network = _parser().get_parsed_content("network_def", instantiate=True)
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small_cine(tmp_path_factory) -> Path:
    """A 4-frame phantom cine (48x48 px) as a 4D NIfTI with its label cine beside it."""
    from cmrssl.data.phantom import generate_subject
    from cmrssl.io import write_cine_nifti

    folder = tmp_path_factory.mktemp("small_cine")
    sax = generate_subject(3, num_frames=4, image_size=48).sax
    write_cine_nifti(sax, folder / "sax_cine.nii.gz")
    write_cine_nifti(sax, folder / "sax_cine_gt.nii.gz", what="labels")
    return folder / "sax_cine.nii.gz"


def _messages(error: BaseException) -> str:
    """Messages of an exception and its causes (MONAI wraps config errors in RuntimeError)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return "\n".join(messages)


def _run_workflow(input_path: Path, output_dir: Path, checkpoint: Path, **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(INFERENCE), workflow_type="infer", bundle_root=str(BUNDLE),
        input=str(input_path) if input_path else "", output_dir=str(output_dir), checkpoint=str(checkpoint),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def test_infer_properties_for_monai_label(small_cine, random_checkpoint, tmp_path):
    """What MONAI Label's bundle app reads is there, and the infer workflow has every required property.

    The metadata's own keys are checked with the bundle's metadata.json; until it exists a
    minimal one stands in, so this test is about inference.json.
    """
    from monai.bundle import ConfigWorkflow

    meta_file = BUNDLE / "configs" / "metadata.json"
    if not meta_file.exists():
        meta_file = tmp_path / "metadata.json"
        meta_file.write_text(json.dumps({
            "version": "0.0.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "1.26",
            "required_packages_version": {}, "task": "cine segmentation", "description": "-", "authors": "-",
            "copyright": "-", "network_data_format": {"inputs": {}, "outputs": {}},
        }))
    workflow = ConfigWorkflow(
        config_file=str(INFERENCE), meta_file=str(meta_file), workflow_type="infer", bundle_root=str(BUNDLE),
        input=str(small_cine), output_dir=str(tmp_path / "out"), checkpoint=str(random_checkpoint),
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    for key in ("network_def", "network", "preprocessing", "postprocessing", "inferer", "bundle_root", "device",
                "dataset_dir", "datalist"):
        assert key in workflow.parser, key
    assert workflow.parser["dataset"]["transform"] == "@preprocessing"
    assert workflow.parser["evaluator"]["postprocessing"] == "@postprocessing"


def test_single_3d_frame_as_monai_label_runs_it(small_cine, random_checkpoint, tmp_path):
    """preprocessing -> inferer -> postprocessing on one 3D frame gives labels on that frame's grid."""
    from monai.data import decollate_batch

    frame = nib.load(str(small_cine)).slicer[..., 1]
    frame_path = tmp_path / "frame_01.nii.gz"
    nib.save(frame, str(frame_path))
    parser = _parser()
    parser["checkpoint"] = str(random_checkpoint)
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    network = parser.get_parsed_content("network").eval()
    # MONAI Label's infer task adds the image's path as "image_path" (its writer reads it back);
    # MONAI 1.6.1's own Spacingd fails on that string after resampling a NIfTI
    data = preprocessing({"image": str(frame_path), "image_path": str(frame_path)})
    assert data["image_path"] == str(frame_path)
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None].to(parser.get_parsed_content("device")), network)
    data["pred"] = decollate_batch(data["pred"])[0]
    out = postprocessing(data)
    assert tuple(out["pred"].shape) == (1, *frame.shape)
    assert set(np.unique(out["pred"].numpy())) <= {0, 1, 2, 3}


def test_monai_label_path_gives_the_acdc_frame_its_own_affine(small_cine, random_checkpoint, tmp_path):
    """A frame whose sform says 1 mm and whose pixdim holds the spacing (ACDC): the mask MONAI Label's
    writer takes (postprocessing's ``pred`` and its affine) overlays the image as nibabel reads it, voxel
    for voxel what inference.json's own writer puts in segmentation.nii.gz."""
    from monai.data import decollate_batch

    frame = nib.load(str(small_cine)).slicer[..., 1]
    data = np.asarray(frame.dataobj)[:, :, ::-1]  # slices apex to base in the file: the loader reorders them
    acdc = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    acdc.header.set_zooms(tuple(float(z) for z in frame.header.get_zooms()[:3]))
    acdc.header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    frame_path = tmp_path / "patient_frame01.nii.gz"
    nib.save(acdc, str(frame_path))
    image = nib.load(str(frame_path))
    parser = _parser()
    parser["checkpoint"] = str(random_checkpoint)
    preprocessing, postprocessing = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    inferer, network = parser.get_parsed_content("inferer"), parser.get_parsed_content("network").eval()
    loaded = preprocessing({"image": str(frame_path), "image_path": str(frame_path)})
    assert not np.allclose(loaded["image"].meta["original_affine"], image.affine)  # the loader's grid differs
    with torch.no_grad():
        loaded["pred"] = decollate_batch(inferer(loaded["image"][None].to(parser.get_parsed_content("device")),
                                                 network))[0]
    out = postprocessing(loaded)
    np.testing.assert_allclose(out["pred"].affine.numpy(), image.affine, atol=1e-6)
    # MONAI Label's Restored, after the postprocessing, gives the mask the image's original_affine
    np.testing.assert_allclose(np.asarray(out["image"].meta["original_affine"]), image.affine, atol=1e-6)
    _run_workflow(frame_path, tmp_path / "own", random_checkpoint, write_plots=False)
    own = nib.load(str(tmp_path / "own" / "segmentation.nii.gz"))
    np.testing.assert_allclose(own.affine, image.affine, atol=1e-6)
    np.testing.assert_array_equal(out["pred"].numpy()[0].astype(np.uint8), np.asarray(own.dataobj))


def test_nifti_input_masks_keep_input_geometry(small_cine, random_checkpoint, tmp_path):
    output_dir = tmp_path / "result"
    _run_workflow(small_cine, output_dir, random_checkpoint, write_plots=False)
    source, mask = nib.load(str(small_cine)), nib.load(str(output_dir / "segmentation.nii.gz"))
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    report = json.loads((output_dir / "function.json").read_text())
    assert report["input"] == str(small_cine.resolve())
    assert len(report["lv_volume_curve_ml"]) == source.shape[3]


@pytest.mark.slow
def test_bundle_run_on_phantom_dicom(phantom_cohort, tmp_path):
    """The quick start: `configs/inference.json` on a DICOM folder with no option but input and output, so the
    shipped `models/model.pt` segments it: the masks in the series' geometry, and the heart found."""
    assert (BUNDLE / "models" / "model.pt").is_file(), "the shipped model is missing from models/"
    subject = phantom_cohort / "phantom_001"
    dicom = subject / "dicom" / "sax"
    output_dir = tmp_path / "dicom_result"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
        "--input", str(dicom), "--output_dir", str(output_dir),
    ]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    study = read_cine(dicom)
    mask = nib.load(str(output_dir / "segmentation.nii.gz"))
    assert mask.shape == (study.pixels.shape[3], study.pixels.shape[2], study.num_slices, study.num_frames)
    np.testing.assert_allclose(mask.affine, LPS_TO_RAS @ study.stack_affine, atol=1e-4)
    for name in ("function.json", "function.csv", "contours_ed.png", "contours_es.png"):
        assert (output_dir / name).stat().st_size > 0, name
    report = json.loads((output_dir / "function.json").read_text())
    assert report["status"] == "ok", report["status"]
    # trained on ACDC, never on the phantom: LV / MYO / RV Dice 0.85 / 0.76 / 0.94 over the cine (random weights ~0)
    labels = np.asarray(nib.load(str(subject / "sax_cine_gt.nii.gz")).dataobj)
    predicted = np.asarray(mask.dataobj)
    for label, least in ((1, 0.7), (2, 0.6), (3, 0.7)):
        overlap = 2 * np.sum((predicted == label) & (labels == label))
        dice = overlap / (np.sum(predicted == label) + np.sum(labels == label))
        assert dice > least, (label, dice)
    # Nothing identifying from DICOM headers goes to the outputs: only the path the user gave.
    assert "PatientName" not in (output_dir / "function.json").read_text()


def test_perfect_segmentation_reports_analytic_volumes(phantom_cohort, tmp_path):
    """The post-processing -> report step on the phantom's own labels: EDV/ESV within 3 % of analytic."""
    subject = phantom_cohort / "phantom_000"
    analytic = json.loads((subject / "analytic.json").read_text())
    study = read_cine(subject / "sax_cine.nii.gz", label_path=subject / "sax_cine_gt.nii.gz")
    report = write_cine_outputs(study, study.labels, tmp_path / "perfect", subject / "sax_cine.nii.gz")
    assert report["status"] == "ok"
    assert report["lv_edv_ml"] == pytest.approx(analytic["edv_ml"], rel=0.03)
    assert report["lv_esv_ml"] == pytest.approx(analytic["esv_ml"], rel=0.03)
    assert report["ed_frame"] == analytic["ed_frame"] and report["es_frame"] == analytic["es_frame"]
    assert report["lv_mass_g"] == pytest.approx(analytic["lv_mass_g"], rel=0.05)
    for name in report["files"].values():
        assert (tmp_path / "perfect" / name).stat().st_size > 0, name
    with open(tmp_path / "perfect" / "function.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["lv_edv_ml"]) == pytest.approx(report["lv_edv_ml"])
    assert report["quality_flags"] == [] and row["num_quality_flags"] == "0"  # the truth raises no flag
    # the same cine with the cavity gone on two frames: flagged in the JSON and the CSV
    damaged = study.labels.copy()
    damaged[[1, 2]] = np.where(damaged[[1, 2]] == 1, 2, damaged[[1, 2]])
    flagged = write_cine_outputs(study, damaged, tmp_path / "damaged", subject / "sax_cine.nii.gz")
    assert "no LV cavity (frames 1-2)" in flagged["quality_flags"]
    assert json.loads((tmp_path / "damaged" / "function.json").read_text())["num_quality_flags"] >= 1
    written = nib.load(str(tmp_path / "perfect" / "segmentation.nii.gz"))
    reference = nib.load(str(subject / "sax_cine_gt.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(reference.dataobj))


def test_refuses_output_folder_with_results(small_cine, random_checkpoint, tmp_path):
    output_dir = tmp_path / "taken"
    output_dir.mkdir()
    (output_dir / "segmentation.nii.gz").write_bytes(b"earlier result")
    with pytest.raises(Exception) as caught:
        _run_workflow(small_cine, output_dir, random_checkpoint, write_plots=False)
    assert f"{output_dir}: output folder already holds results" in _messages(caught.value)
    assert sorted(p.name for p in output_dir.iterdir()) == ["segmentation.nii.gz"]
    assert (output_dir / "segmentation.nii.gz").read_bytes() == b"earlier result"
    _run_workflow(small_cine, output_dir, random_checkpoint, write_plots=False, overwrite=True)
    assert nib.load(str(output_dir / "segmentation.nii.gz")).shape == nib.load(str(small_cine)).shape
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_failed_write_leaves_nothing(small_cine, tmp_path, monkeypatch):
    """A failure while writing (here: the report) leaves no output folder and no temporary."""
    study = CineStudyCache().get(small_cine)
    cines = [{"cine_key": "c", "cine": str(small_cine.resolve())}]
    cache = CineStudyCache()
    writer = CineSegmentationWriter(tmp_path / "out", cines, cache, plots=False)
    writer.labels = {"c": np.zeros(study.pixels.shape, dtype=np.int16)}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cine_inference, "write_function_report", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.write()
    assert list(tmp_path.iterdir()) == []


def test_missing_frames_are_an_error(small_cine, tmp_path):
    cines = [{"cine_key": "c", "cine": str(small_cine.resolve())}]
    writer = CineSegmentationWriter(tmp_path / "out", cines, CineStudyCache(), plots=False)
    with pytest.raises(RuntimeError, match="not segmented"):
        writer.write()
    assert not (tmp_path / "out").exists()


def test_2d_image_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(32, 32).astype(np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="2D image") as caught:
        read_cine_for_inference(path)
    assert str(path) in str(caught.value)
    single = tmp_path / "single_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(32, 32, 1).astype(np.float32), np.eye(4)), str(single))
    with pytest.raises(ValueError, match=f"{single}.*single 2D image"):
        read_cine_for_inference(single)


def test_unexpected_channel_count_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "rgb_cine.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 3, 4, 3).astype(np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="3 channels") as caught:
        read_cine_for_inference(path)
    assert str(path) in str(caught.value)


def test_checkpoint_with_wrong_keys_is_refused_naming_file_and_keys(small_cine, random_checkpoint, tmp_path):
    network = _parser().get_parsed_content("network_def", instantiate=True)
    state = torch.load(random_checkpoint, weights_only=True)
    first = next(iter(state))
    state["encoder_from_elsewhere.weight"] = state.pop(first)
    bad = tmp_path / "wrong_keys.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError) as caught:
        load_network_checkpoint(network, bad)
    message = str(caught.value)
    assert str(bad) in message and first in message and "encoder_from_elsewhere.weight" in message
    with pytest.raises(FileNotFoundError, match="no_such.pt"):
        load_network_checkpoint(network, tmp_path / "no_such.pt")
    # the same through the workflow, before anything is written
    with pytest.raises(Exception) as through_config:
        _run_workflow(small_cine, tmp_path / "o", bad)
    assert f"{bad}: checkpoint does not match" in _messages(through_config.value)
    assert not (tmp_path / "o").exists()


def test_wrapped_and_ddp_checkpoints_load(random_checkpoint, tmp_path):
    network = _parser().get_parsed_content("network_def", instantiate=True)
    state = torch.load(random_checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    loaded = load_network_checkpoint(network, wrapped)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_datalist_input_writes_one_folder_per_cine(small_cine, random_checkpoint, tmp_path):
    """`--datalist` (MONAI datalist, test split): every distinct cine, outputs under its subject key."""
    shutil.copy(small_cine, tmp_path / "b.nii.gz")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [
        {"image": str(small_cine), "subject": "a", "frame_index": 0, "cine": str(small_cine)},
        {"image": str(small_cine), "subject": "a", "frame_index": 2, "cine": str(small_cine)},
        {"image": "b.nii.gz", "subject": "b", "frame_index": 0, "cine": "b.nii.gz"},
    ]}))
    output_dir = tmp_path / "results"
    _run_workflow("", output_dir, random_checkpoint, datalist=str(datalist), write_plots=False)
    assert sorted(p.name for p in output_dir.iterdir()) == ["a", "b", "subjects.json"]
    subjects = json.loads((output_dir / "subjects.json").read_text())
    assert [(s["folder"], s["subject"]) for s in subjects] == [("a", "a"), ("b", "b")]
    for subject in ("a", "b"):
        mask = nib.load(str(output_dir / subject / "segmentation.nii.gz"))
        assert mask.shape == nib.load(str(small_cine)).shape
        assert (output_dir / subject / "function.json").is_file()


def test_single_3d_frame_input_gives_a_3d_mask(small_cine, random_checkpoint, tmp_path):
    """`--input frame.nii.gz`: the per-cine loop runs on one frame; the mask is 3D like the input."""
    frame_path = tmp_path / "frame_02.nii.gz"
    nib.save(nib.load(str(small_cine)).slicer[..., 2], str(frame_path))
    _run_workflow(frame_path, tmp_path / "out", random_checkpoint, write_plots=False)
    mask, frame = nib.load(str(tmp_path / "out" / "segmentation.nii.gz")), nib.load(str(frame_path))
    assert mask.shape == frame.shape
    np.testing.assert_allclose(mask.affine, frame.affine, atol=1e-5)
    report = json.loads((tmp_path / "out" / "function.json").read_text())
    assert report["status"].startswith("no function")  # one frame: no ED/ES, but the masks are there
    assert report["verdict"] == ("review" if report["quality_flags"] else "ok")  # no function is no fault here


def test_postprocessing_keeps_the_heart():
    """A stray LV blob far from the heart (what few-label models produce) is removed, also when it is larger
    than the true end-systolic cavity; --label_cleanup largest_per_label is the old per-label step (which
    deletes that cavity), none switches postprocessing off."""
    parser = _parser()
    pred = torch.zeros(1, 32, 32, 4)
    pred[0, 10:20, 10:20, 1:3] = 2  # myocardium
    pred[0, 13:17, 13:17, 1:3] = 1  # LV cavity: 32 voxels
    pred[0, 24:32, 24:32, 0] = 1  # stray cavity blob: 64 voxels

    def cleaned(mode):
        parser["label_cleanup"] = mode
        transforms = [t for t in parser.get_parsed_content("postprocessing", lazy=False).transforms
                      if type(t).__name__ in ("KeepHeartd", "KeepLargestConnectedComponentd")]
        out = {"pred": pred.clone()}
        for transform in transforms:
            out = transform(out)
        return out["pred"], [type(t).__name__ for t in transforms]

    out, names = cleaned("heart")
    assert names == ["KeepHeartd"] and out[0, 24:32, 24:32, 0].sum() == 0 and torch.equal(out[0, :22], pred[0, :22])
    out, names = cleaned("largest_per_label")
    assert names == ["KeepLargestConnectedComponentd"] and (out[0, 13:17, 13:17] == 1).sum() == 0
    _, names = cleaned("none")
    assert names == []
