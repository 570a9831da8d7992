"""tools/lvquan_cv.py end to end on the phantom: 2 configurations x 2 folds (tiny), out-of-fold
predictions for every slice cycle, the ensemble chosen on one patient half and scored on the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "lvquan_cv.py"
TINY = {"epochs": 1, "epoch_length": 1, "batch_size": 2, "crop_size": 72, "patch_size": 64, "target_spacing_mm": 2.0,
        "backbone_2d#_target_": "monai.networks.nets.DenseNet", "backbone_2d#init_features": 16,
        "backbone_2d#growth_rate": 8, "backbone_2d#block_config": [2, 2, 2, 2]}


@pytest.mark.slow
def test_cross_validation_and_ensemble(phantom_cohort, tmp_path):
    work = tmp_path / "cv"
    command = [sys.executable, str(TOOL), "--dataset_dir", str(phantom_cohort), "--workdir", str(work),
               "--configs", "densenet121_2d,densenet121_3d", "--num_folds", "2", "--overrides", json.dumps(TINY)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((work / "ensemble.json").read_text())
    assert set(payload["search"]) == {"areas", "dims", "rwt", "phase"}
    for task in payload["search"].values():
        assert set(task["members"]) <= {"densenet121_2d", "densenet121_3d"} and task["members"]
    # the two folds together predict every slice cycle of the cohort exactly once
    for config in ("densenet121_2d", "densenet121_3d"):
        folds = [np.load(work / "runs" / config / f"fold{k}" / "oof_predictions.npz") for k in range(2)]
        subjects = np.concatenate([f["subject_index"] for f in folds])
        assert set(subjects.tolist()) == set(range(len(folds[0]["subject_names"])))
        assert not set(folds[0]["subject_index"].tolist()) & set(folds[1]["subject_index"].tolist())
    assert "held-out half" in result.stdout
    assert "train_loss" in (work / "runs" / "densenet121_2d" / "fold0" / "train.log").read_text()
    assert "areas (mm^2)" in (work / "runs" / "densenet121_3d" / "fold1" / "evaluate.log").read_text()
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    # resume: a fold whose evaluation is missing is evaluated again, its trained model kept
    fold = work / "runs" / "densenet121_2d" / "fold1"
    model_time = (fold / "model.pt").stat().st_mtime_ns
    (fold / "oof_predictions.npz").unlink()
    resumed = subprocess.run(command + ["--overwrite"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "densenet121_2d fold 1: evaluate" in resumed.stdout and "fold 1: train" not in resumed.stdout
    assert (fold / "oof_predictions.npz").exists() and (fold / "model.pt").stat().st_mtime_ns == model_time


def test_named_configurations_set_their_options(tmp_path):
    command = [sys.executable, str(TOOL), "--dataset_dir", "DATA", "--workdir", str(tmp_path), "--configs",
               "densenet121_2d,densenet121_2d_nosr,densenet161_2d", "--num_folds", "2", "--dry_run",
               "--overrides", '{"epochs": 3}']
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * 2 * 2  # configurations x folds x (train, evaluate)
    nosr = [line for line in lines if "densenet121_2d_nosr/fold" in line]
    assert len(nosr) == 4 and all("--segmentation_weight 0" in line and "--epochs 3" in line for line in nosr)
    assert not any("--segmentation_weight" in line for line in lines if "densenet121_2d/fold" in line)
    assert all("densenet161.json" in line for line in lines if "densenet161_2d/fold" in line)
    unknown = subprocess.run(command[:6] + ["resnet7_2d", "--dry_run"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 2 and "resnet7_2d" in unknown.stderr
