"""cmr_ranking_ssl through ``python -m monai.bundle run``, as a user runs it: train (ranking SSL and
supervised-only), evaluate, infer on a DICOM cine; and the bad inputs the issue names. CPU-sized:
32 px crops at 5 mm, a narrow U-Net (the default network; the direct regressor once), one epoch of two iterations."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cmrssl.io.reader import read_cine
from cmrssl.labels import LV_CAVITY

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_ranking_ssl"
TINY = {"network_def#channels": "[4,8,16,32]", "pixdim_mm": "[5.0, 5.0]", "roi_size": "32", "max_epochs": "1", "num_workers": "0",
        "supervised_steps": "1", "ranking_steps": "1", "max_frames": "4", "nested_slices": "2"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
SPLITS = "['training','validation']"


def _run(command, cwd=BUNDLE) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=str(cwd), capture_output=True, text=True, timeout=600, env=ENV)


def _bundle_run(config: str, tiny: bool = True, **overrides) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    settings = {**TINY, **overrides} if tiny else overrides
    for key, value in settings.items():
        command += [f"--{key}", value]
    return _run(command)


@pytest.fixture(scope="module")
def datalist(phantom_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranking_bundle") / "phantom.json"
    result = _run([sys.executable, "tools/index.py", "phantom", phantom_cohort, "--datalist", out], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def trained(datalist, tmp_path_factory) -> dict:
    """A ranking-SSL run: one labelled and one unlabelled phantom study, a supervised then a ranking step."""
    folder = tmp_path_factory.mktemp("ranking_model")
    result = _bundle_run("configs/train.json", datalist=str(datalist), train_split=SPLITS, num_labelled_subjects="1",
                         output_dir=str(folder))
    assert result.returncode == 0, result.stderr[-4000:]
    return {"checkpoint": folder / "model.pt", "log": result.stdout + result.stderr}


def test_ranking_training_alternates_and_saves_the_unet(trained):
    log = trained["log"]
    assert "1 labelled and 1 unlabelled studies" in log
    assert re.search(r"Iter: 1/2 -- .*supervised_segmentation", log) and re.search(r"Iter: 2/2 -- .*ranking_temporal", log)
    state = torch.load(trained["checkpoint"], weights_only=True)
    # the segmentation bundle's U-Net, under its parameter names: its weights load there as they are
    assert state and {k.split(".")[0] for k in state} == {"encoder", "decoder", "head", "aux_heads"}


def test_training_starts_from_a_segmentation_checkpoint_with_the_segmentation_bundles_modes(trained, datalist, tmp_path):
    """--pretrained_checkpoint / --finetune_mode as in the segmentation bundle: a U-Net checkpoint (here the ranking
    run's, the same format as the segmentation bundle's model.pt) is loaded by name; ``decoder`` keeps the encoder."""
    start = torch.load(trained["checkpoint"], weights_only=True)
    result = _bundle_run("configs/train.json", datalist=str(datalist), train_split=SPLITS, num_labelled_subjects="1",
                         output_dir=str(tmp_path), pretrained_checkpoint=str(trained["checkpoint"]),
                         finetune_mode="decoder")
    assert result.returncode == 0, result.stderr[-4000:]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    encoder = [k for k in state if k.startswith("encoder.") and state[k].is_floating_point()]
    assert encoder and all(torch.equal(state[k], start[k]) for k in encoder)
    assert any(not torch.equal(state[k], start[k]) for k in state if k.startswith("decoder.") and "weight" in k)
    refused = _bundle_run("configs/train.json", datalist=str(datalist), train_split=SPLITS, output_dir=str(tmp_path / "x"),
                          pretrained_checkpoint=str(tmp_path / "missing.pt"), finetune_mode="all")
    assert refused.returncode != 0 and "missing.pt" in refused.stderr
    assert not (tmp_path / "x" / "model.pt").exists()


def test_supervised_only_runs_no_ranking_step_and_the_regressor_stays_an_option(datalist, tmp_path):
    result = _bundle_run("configs/train.json", datalist=str(datalist), train_split=SPLITS, num_labelled_subjects="1",
                         output_dir=str(tmp_path), ranking="false", ranking_steps="0", backbone="resnet10_small")
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert re.search(r"Iter: 1/1 -- .*supervised_area", log) and not re.search(r"Iter: .* -- .*ranking_", log)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state and all(k.startswith("net.") for k in state)


def test_evaluate_scores_volumes_against_the_references(trained, datalist, tmp_path):
    out = tmp_path / "eval"
    result = _bundle_run("['configs/train.json','configs/evaluate.json']", datalist=str(datalist),
                         checkpoint=str(trained["checkpoint"]), output_dir=str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    # the segmentation bundle's evaluation schema: summary["function"] and a function.csv row per subject
    assert summary["subjects_with_function"] == 1
    # the U-Net's myocardium and RV are scored beside the LV, as the segmentation bundle scores them
    assert set(summary["function"]) == {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml",
                                        "rv_esv_ml", "rv_ef_percent"}
    assert summary["function"]["lv_edv_ml"]["unit"] == "ml" and summary["function"]["lv_ef_percent"]["unit"] == "%"
    with open(out / "function.csv") as handle:
        row = next(csv.DictReader(handle))
    reference = float(row["reference_lv_edv_ml"])
    assert 40 < reference < 400  # the phantom's LV, in ml
    assert float(row["error_lv_edv_ml"]) == pytest.approx(float(row["predicted_lv_edv_ml"]) - reference, abs=1e-2)
    # every labelled frame scored as the segmentation bundle scores it: metrics.csv and summary["segmentation"]
    with open(out / "metrics.csv") as handle:
        frames = list(csv.DictReader(handle))
    assert len(frames) == summary["frames_scored"] >= 2 and {"ED", "ES"} <= {f["phase"] for f in frames}
    assert set(summary["segmentation"]) == {"lv_cavity", "lv_myocardium", "rv_cavity"}
    assert 0.0 <= summary["segmentation"]["lv_cavity"]["dice"]["mean"] <= 1.0
    # and the quality count both U-Net bundles' summaries hold: the frames that lost their LV cavity
    lost = sum(f["dice_lv_cavity"] not in ("", "nan") and float(f["dice_lv_cavity"]) < 0.05 for f in frames)
    assert summary["quality"]["frames_with_lv_cavity_dice_below_0.05"] == lost


def test_inference_on_a_dicom_cine_gives_the_function_report(trained, phantom_cohort, tmp_path):
    dicom = next(p for p in sorted(Path(phantom_cohort).glob("*/dicom/sax")) if p.is_dir())
    out = tmp_path / "inference"
    result = _bundle_run("configs/inference.json", tiny=False, input=str(dicom), checkpoint=str(trained["checkpoint"]),
                         output_dir=str(out), pixdim_mm="[5.0, 5.0]", roi_size="32", **{"network_def#channels": "[4,8,16,32]"})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "function.json").read_text())
    assert report["status"] == "ok"
    curve = report["lv_volume_curve_ml"]
    assert report["lv_edv_ml"] == pytest.approx(max(curve)) and report["lv_esv_ml"] == pytest.approx(min(curve))
    assert report["lv_ef_percent"] == pytest.approx(100 * (max(curve) - min(curve)) / max(curve))
    # the U-Net segments: LV mass and RV volumes from its summed class probabilities, as the report's other numbers
    assert report["lv_mass_g"] > 0 and report["rv_edv_ml"] > 0 and report["method"].startswith("summed class")
    assert report["ed_frame"] == curve.index(max(curve)) and report["es_frame"] == curve.index(min(curve))
    assert np.asarray(report["lv_area_mm2"]).shape[0] == len(curve)
    # the same schema as the segmentation bundle's function report, so one tool reads both
    with open(out / "function.csv") as handle:
        columns = next(csv.reader(handle))
    assert {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "ed_frame", "es_frame", "status"} <= set(columns)
    assert (out / "volume_curve.png").stat().st_size > 0
    # the U-Net's masks, back in the input's geometry (the DICOM series' stack), as the segmentation bundle writes them
    masks = nib.load(str(out / "segmentation.nii.gz"))
    cine = read_cine(str(dicom))
    assert masks.shape == (cine.pixels.shape[3], cine.pixels.shape[2], cine.pixels.shape[1], len(curve))
    assert set(np.unique(np.asarray(masks.dataobj))) <= {0, 1, 2, 3} and report["files"]["segmentation"] == "segmentation.nii.gz"


def test_inference_runs_with_no_override_on_the_shipped_model(phantom_cohort, tmp_path):
    """``models/model.pt`` ships (a safe state dict under 25 MB with its provenance in the metadata), so the README's
    first inference command needs only an input and an output folder."""
    shipped = BUNDLE / "models" / "model.pt"
    assert shipped.is_file() and shipped.stat().st_size < 25e6
    state = torch.load(shipped, map_location="cpu", weights_only=True)
    assert {key.split(".")[0] for key in state} <= {"encoder", "decoder", "head", "aux_heads"}
    weights = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["trained_weights"]
    assert weights["file"] == "models/model.pt"
    for key in ("data", "command", "commit", "seed", "epochs", "terms", "pretrained_from"):
        assert weights[key] not in ("", None), key
    assert "017-020" in weights["data"] and "ACDC" in weights["terms"] and "Sunnybrook" in weights["terms"]
    dicom = next(p for p in sorted(Path(phantom_cohort).glob("*/dicom/sax")) if p.is_dir())
    result = _bundle_run("configs/inference.json", tiny=False, input=str(dicom), output_dir=str(tmp_path),
                         write_plots="false")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "function.json").read_text())
    assert report["status"] == "ok" and report["lv_edv_ml"] > report["lv_esv_ml"] > 0


def test_volumes_from_masks_reports_the_volumes_of_the_segmentation_it_writes(phantom_cohort, tmp_path):
    """``--volumes_from masks``: the report's LV volume of each frame is the written mask's (argmax, heart kept), up to
    the nearest-neighbour return from the 2 mm crop to the source grid; an unknown value is refused by name."""
    dicom = next(p for p in sorted(Path(phantom_cohort).glob("*/dicom/sax")) if p.is_dir())
    result = _bundle_run("configs/inference.json", tiny=False, input=str(dicom), output_dir=str(tmp_path / "out"),
                         write_plots="false", volumes_from="masks")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "function.json").read_text())
    assert report["method"].startswith("the U-Net's masks")
    mask = nib.load(str(tmp_path / "out" / "segmentation.nii.gz"))
    voxel_ml = float(np.prod(mask.header.get_zooms()[:3])) / 1000.0
    from_mask = (np.asarray(mask.dataobj) == LV_CAVITY).sum(axis=(0, 1, 2)) * voxel_ml  # [x, y, z, t]
    assert np.allclose(from_mask, report["lv_volume_curve_ml"], rtol=0.1, atol=1.0)
    bad = _bundle_run("configs/inference.json", tiny=False, input=str(dicom), output_dir=str(tmp_path / "bad"),
                      volumes_from="argmax")
    assert bad.returncode != 0 and "volumes_from" in bad.stderr and not (tmp_path / "bad").exists()


def test_lv_only_withholds_the_numbers_a_volumes_only_model_never_learned(trained, phantom_cohort, tmp_path):
    dicom = next(p for p in sorted(Path(phantom_cohort).glob("*/dicom/sax")) if p.is_dir())
    result = _bundle_run("configs/inference.json", tiny=False, input=str(dicom), checkpoint=str(trained["checkpoint"]),
                         output_dir=str(tmp_path), pixdim_mm="[5.0, 5.0]", roi_size="32", lv_only="true",
                         write_plots="false", **{"network_def#channels": "[4,8,16,32]"})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "function.json").read_text())
    assert report["lv_edv_ml"] > 0 and report["lv_mass_g"] is None and report["rv_edv_ml"] is None


def test_training_validates_on_the_validation_split_each_epoch(datalist, tmp_path):
    """With a ``validation`` split the U-Net's training logs the mean Dice of its labelled frames after every epoch
    (``val_interval``), in the segmentation bundle's log line, the one the study reads its plateau from; without one
    it says so and trains on. The study reads the subjects it drew from the same log, as it reads the segmentation
    bundle's."""
    from cmrssl.study.report import drawn_subjects, validation_curve

    result = _bundle_run("configs/train.json", datalist=str(datalist), num_labelled_subjects="1", max_epochs="2",
                         output_dir=str(tmp_path / "validated"))
    assert result.returncode == 0, result.stderr[-4000:]
    log = tmp_path / "train.log"
    log.write_text(result.stdout + result.stderr)
    curve = validation_curve(log)
    assert len(curve) == 2 and all(0.0 <= v <= 1.0 for v in curve)
    training = {r["subject"] for r in json.loads(Path(datalist).read_text())["training"] if r.get("label")}
    assert drawn_subjects(log) in training  # one subject, by name
    content = json.loads(Path(datalist).read_text())
    bare = tmp_path / "no_validation.json"
    bare.write_text(json.dumps({"training": content["training"]}))
    result = _bundle_run("configs/train.json", datalist=str(bare), num_labelled_subjects="1",
                         output_dir=str(tmp_path / "unvalidated"))
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert "training without a validation curve" in output and "val_mean_dice" not in output


def test_a_stack_without_geometry_is_refused_before_training(tmp_path):
    image = tmp_path / "single.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 1).astype(np.float32), np.diag([1.5, 1.5, 8.0, 1.0])), str(image))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": str(image), "subject": "s1", "edv_ml": 100, "esv_ml": 50}]}))
    result = _bundle_run("configs/train.json", datalist=str(datalist), output_dir=str(tmp_path / "out"))
    assert result.returncode != 0
    assert "single.nii.gz: no slice spacing" in result.stderr
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_ranking_training_under_ddp(datalist, tmp_path):
    """Two processes (gloo), each drawing its share of both pools through DistributedSampler."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29549",
               "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']"]
    for key, value in {**TINY, "datalist": str(datalist), "train_split": SPLITS, "output_dir": str(tmp_path)}.items():
        command += [f"--{key}", value]
    result = _run(command)
    assert result.returncode == 0, result.stderr[-4000:]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state and all(k.split(".")[0] in ("encoder", "decoder", "head", "aux_heads") for k in state)
