"""Real ACDC as LVQuan data: indices of the expert ED/ES labels behave as physiology says, and the
LVQuan bundle trains and evaluates a fold on them through ``python -m monai.bundle run``.

Measured on all 100 training patients (``load_lvquan_source``): 357 mid-ventricular slices; mean
cavity area 2298 mm^2 at ED, 1456 at ES; mean wall thickness 8.2 mm at ED, 12.2 at ES.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmrssl.data.lvquan import load_lvquan_source

pytestmark = pytest.mark.realdata

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_lvquan_ensemble"


def test_acdc_indices_follow_the_cycle(acdc_root):
    data = load_lvquan_source(acdc_root)
    assert not data.whole_cycle and data.images.shape[1] == 2
    assert len({s.split(":")[0] for s in data.subjects}) == 100 and len(data.subjects) >= 300
    cavity, wall = data.indices[..., 0], data.indices[..., 5:].mean(axis=-1)
    assert np.mean(cavity[:, 0] > cavity[:, 1]) > 0.97  # the cavity empties from ED to ES
    assert np.mean(wall[:, 1] > wall[:, 0]) > 0.9  # and the wall thickens
    assert 1500 < cavity[:, 0].mean() < 3500 and 5 < wall[:, 0].mean() < 12
    np.testing.assert_array_equal(data.phase, np.tile([0, 1], (len(data.subjects), 1)))


#: a test-sized network and schedule (one epoch of two batches of two slices, 64 px at 4 mm)
_TINY = ["--max_epochs", "1", "--epoch_length", "2", "--batch_size", "2", "--crop_size", "72", "--patch_size", "64",
         "--pixdim_mm", "[4.0, 4.0]", "--backbone_2d#_target_", "monai.networks.nets.DenseNet",
         "--backbone_2d#init_features", "16", "--backbone_2d#growth_rate", "8", "--backbone_2d#block_config", "[2,2,2,2]"]


@pytest.mark.slow
def test_bundle_fold_on_acdc(acdc_root, tmp_path):
    tiny = [*_TINY, "--dataset_dir", str(acdc_root), "--output_dir", str(tmp_path)]
    run = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(BUNDLE), "--config_file"]
    train = str(BUNDLE / "configs" / "train.json")
    result = subprocess.run(run + [train] + tiny, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluate = f"['{train}','{BUNDLE / 'configs' / 'evaluate.json'}']"
    result = subprocess.run(run + [evaluate] + tiny, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "areas (mm^2)" in result.stdout
    oof = np.load(tmp_path / "oof_predictions.npz")
    held_out = {str(oof["subject_names"][s]).split(":")[0] for s in oof["subject_index"]}
    assert 15 <= len(held_out) <= 25  # one fold of five: a fifth of the 100 patients, all of their slices
    assert np.isfinite(oof["indices"]).all() and set(oof["frame"].tolist()) == {0, 1}


def test_bundle_refuses_2d_plus_t_on_acdc_naming_why(acdc_root, tmp_path):
    """2D+t needs whole cycles, which ACDC (ED and ES only) does not have: refused with the reason."""
    train, clips = BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "train_3d.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(BUNDLE), "--config_file",
               f"['{train}','{clips}']", *_TINY, "--dataset_dir", str(acdc_root), "--output_dir", str(tmp_path)]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "whole cycles" in result.stderr
