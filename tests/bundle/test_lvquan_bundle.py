"""cmr_lvquan_ensemble: 2-iteration 2D and 2D+t (inflated) runs with segmentation regularisation on the
phantom through `python -m monai.bundle run`, and the checkpoint reloads into the network definition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_lvquan_ensemble"
TINY = ["--epochs", "1", "--epoch_length", "2", "--batch_size", "2", "--crop_size", "96", "--patch_size", "64",
        "--num_folds", "2"]


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "train_3d.json"]], ids=["2d", "2d+t"])
def test_bundle_trains_on_the_phantom(phantom_cohort, tmp_path, configs):
    out = tmp_path / "run"
    files = [str(BUNDLE / "configs" / c) for c in configs]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg,
               "--bundle_root", str(BUNDLE), "--dataset_dir", str(phantom_cohort), "--output_dir", str(out), *TINY]
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_loss" in result.stdout + result.stderr
    scale = json.loads((out / "index_scale.json").read_text())
    assert len(scale["index_scale"]) == 11 and all(v > 0 for v in scale["index_scale"])
    state = torch.load(out / "model.pt", weights_only=True)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(files)
    network = parser.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(state)  # strict: every weight of the definition, decoder included
    assert any(k.startswith("decoder.") for k in state)
