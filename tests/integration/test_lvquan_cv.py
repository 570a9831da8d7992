"""tools/lvquan_cv.py end to end on a small phantom: configurations x 2 folds (tiny), out-of-fold
predictions for every slice cycle, the ensemble chosen on one patient half and scored on the other,
resuming a cross-validation where it stopped.

The cross-validation of the 2D configuration is run once for the module (4 bundle runs); the
tests build on it, each adding few runs, so that no test runs more than about 5 bundle processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "lvquan_cv.py"
TINY = {"max_epochs": 1, "epoch_length": 1, "batch_size": 2, "crop_size": 72, "patch_size": 64, "pixdim_mm": [2.0, 2.0],
        "backbone_2d#_target_": "monai.networks.nets.DenseNet", "backbone_2d#init_features": 16,
        "backbone_2d#growth_rate": 8, "backbone_2d#block_config": [2, 2, 2, 2]}


def _command(cohort: Path, work: Path, configs: str):
    return [sys.executable, str(TOOL), "--dataset_dir", str(cohort), "--workdir", str(work), "--configs", configs,
            "--num_folds", "2", "--overrides", json.dumps(TINY)]


def _assert_folds_cover_every_cycle(work: Path, config: str):
    """The two folds together predict every slice cycle of the cohort exactly once."""
    folds = [np.load(work / "runs" / config / f"fold{k}" / "oof_predictions.npz") for k in range(2)]
    subjects = np.concatenate([f["subject_index"] for f in folds])
    assert set(subjects.tolist()) == set(range(len(folds[0]["subject_names"])))
    assert not set(folds[0]["subject_index"].tolist()) & set(folds[1]["subject_index"].tolist())


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    """2 phantom subjects without DICOM (a patient per fold): cheaper to load in each bundle run."""
    from cmrssl.data.phantom import generate_cohort

    out = tmp_path_factory.mktemp("lvquan_cv") / "cohort"
    generate_cohort(out, num_subjects=2, seed=0, write_dicom=False)
    return out


@pytest.fixture(scope="module")
def cv_2d(small_cohort, tmp_path_factory):
    """``(workdir, completed process)`` of the 2D configuration's 2-fold cross-validation."""
    work = tmp_path_factory.mktemp("lvquan_cv") / "cv"
    result = subprocess.run(_command(small_cohort, work, "densenet121_2d"), cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


@pytest.mark.slow
def test_cross_validation_of_one_configuration(cv_2d):
    work, result = cv_2d
    _assert_folds_cover_every_cycle(work, "densenet121_2d")
    assert "held-out half" in result.stdout
    assert "train_loss" in (work / "runs" / "densenet121_2d" / "fold0" / "train.log").read_text()
    assert "areas (mm^2)" in (work / "runs" / "densenet121_2d" / "fold1" / "evaluate.log").read_text()
    payload = json.loads((work / "ensemble.json").read_text())
    assert set(payload["search"]) == {"areas", "dims", "rwt", "phase"}
    assert all(task["members"] == ["densenet121_2d"] for task in payload["search"].values())


@pytest.mark.slow
def test_second_configuration_joins_the_ensemble(cv_2d, small_cohort):
    work, _ = cv_2d
    command = _command(small_cohort, work, "densenet121_2d,densenet121_3d") + ["--overwrite"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "densenet121_2d fold" not in result.stdout  # its folds are done: neither trained nor evaluated again
    assert "densenet121_3d fold 1: evaluate" in result.stdout
    payload = json.loads((work / "ensemble.json").read_text())
    assert set(payload["search"]) == {"areas", "dims", "rwt", "phase"}
    for task in payload["search"].values():
        assert set(task["members"]) <= {"densenet121_2d", "densenet121_3d"} and task["members"]
    assert set(payload["cv_tables"]) == {"densenet121_2d", "densenet121_3d"}
    _assert_folds_cover_every_cycle(work, "densenet121_3d")
    assert "areas (mm^2)" in (work / "runs" / "densenet121_3d" / "fold1" / "evaluate.log").read_text()
    assert "held-out half" in result.stdout


@pytest.mark.slow
def test_existing_result_refused_and_missing_evaluation_resumed(cv_2d, small_cohort):
    work, _ = cv_2d
    command = _command(small_cohort, work, "densenet121_2d")
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    # resume: a fold whose evaluation is missing is evaluated again, its trained model kept
    fold = work / "runs" / "densenet121_2d" / "fold1"
    model_time = (fold / "model.pt").stat().st_mtime_ns
    (fold / "oof_predictions.npz").unlink()
    resumed = subprocess.run(command + ["--overwrite"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "densenet121_2d fold 1: evaluate" in resumed.stdout and "fold 1: train" not in resumed.stdout
    assert "fold 0:" not in resumed.stdout
    assert (fold / "oof_predictions.npz").exists() and (fold / "model.pt").stat().st_mtime_ns == model_time


def test_named_configurations_set_their_options(tmp_path):
    command = [sys.executable, str(TOOL), "--dataset_dir", "DATA", "--workdir", str(tmp_path), "--configs",
               "densenet121_2d,densenet121_2d_nosr,densenet161_2d", "--num_folds", "2", "--dry_run",
               "--overrides", '{"max_epochs": 3}']
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * 2 * 2  # configurations x folds x (train, evaluate)
    nosr = [line for line in lines if "densenet121_2d_nosr/fold" in line]
    assert len(nosr) == 4 and all("--segmentation_weight 0" in line and "--max_epochs 3" in line for line in nosr)
    assert not any("--segmentation_weight" in line for line in lines if "densenet121_2d/fold" in line)
    assert all("densenet161.json" in line for line in lines if "densenet161_2d/fold" in line)
    unknown = subprocess.run(command[:6] + ["resnet7_2d", "--dry_run"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 2 and "resnet7_2d" in unknown.stderr
