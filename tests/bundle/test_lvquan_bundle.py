"""cmr_lvquan_ensemble: 2-iteration 2D and 2D+t (inflated) runs with segmentation regularisation on the
phantom through `python -m monai.bundle run`, the checkpoint reloads into the network definition, and
the trained fold is evaluated and used for inference (one training per configuration, shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_lvquan_ensemble"
# CPU-sized: a narrow DenseNet (stride 32 like DenseNet121), 64 px patches, 3 folds (fewer held-out slices)
TINY = ["--max_epochs", "1", "--epoch_length", "2", "--batch_size", "2", "--crop_size", "72", "--patch_size", "64",
        "--num_folds", "3", "--pixdim_mm", "[2.0, 2.0]",
        "--backbone_2d#_target_", "monai.networks.nets.DenseNet", "--backbone_2d#init_features", "16",
        "--backbone_2d#growth_rate", "8", "--backbone_2d#block_config", "[2,2,2,2]"]


def _run(command):
    return subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", params=[["train.json"], ["train.json", "train_3d.json"]], ids=["2d", "2d+t"])
def trained(request, phantom_cohort, tmp_path_factory):
    """One tiny training run per configuration, shared by the tests below:
    ``(config files, output folder, train command, completed process)``."""
    out = tmp_path_factory.mktemp("lvquan_bundle") / "run"
    files = [str(BUNDLE / "configs" / c) for c in request.param]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg,
               "--bundle_root", str(BUNDLE), "--dataset_dir", str(phantom_cohort), "--output_dir", str(out), *TINY]
    result = _run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    return files, out, command, result


@pytest.mark.slow
def test_bundle_trains_on_the_phantom(trained):
    files, out, command, result = trained
    assert "train_loss" in result.stdout + result.stderr
    assert "BatchNorm statistics recalibrated on" in result.stdout + result.stderr  # before the final save
    scale = json.loads((out / "index_scale.json").read_text())
    assert len(scale["index_scale"]) == 11 and all(v > 0 for v in scale["index_scale"])
    state = torch.load(out / "model.pt", weights_only=True)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(files)
    for key, value in zip(TINY[::2], TINY[1::2]):
        if key.startswith("--backbone_2d"):
            parser[key[2:]] = json.loads(value) if value[0] in "[0123456789" else value
    network = parser.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(state)  # strict: every weight of the definition, decoder included
    assert any(k.startswith("decoder.") for k in state)
    before = (out / "model.pt").stat().st_mtime_ns
    again = _run(command)
    assert again.returncode != 0 and "model.pt already exists" in again.stderr  # a trained fold is kept
    assert (out / "model.pt").stat().st_mtime_ns == before


def test_inference_config_builds_what_training_built():
    """inference.json stands alone; what it shares with train.json (network, preprocessing) must not drift."""
    from monai.bundle import ConfigParser

    train, inference = ConfigParser(), ConfigParser()
    train.read_config(str(BUNDLE / "configs" / "train.json"))
    inference.read_config(str(BUNDLE / "configs" / "inference.json"))
    # what differs by design: training computes the index scale and trains the network, inference loads both;
    # each writes into its own output_dir (the fold's run folder, the predictions' folder)
    shared = set(train.get()) & set(inference.get()) - {"imports", "option_rules", "checkpoint", "overwrite",
                                                          "output_dir", "index_scale", "network", "initialize", "run",
                                                          "finalize"}
    assert {"network_def", "backbone_2d", "preprocessing", "bundle_root", "device", "crop_shape"} <= shared
    for key in sorted(shared):
        assert inference[key] == train[key], key
    for key, rule in inference["option_rules"].items():
        assert key == "input" or train["option_rules"][key] == rule, key


@pytest.mark.slow
def test_inference_on_a_new_cine(trained, phantom_cohort):
    """Per-frame indices of the chosen slices of any read_cine input, as a CSV."""
    import csv

    import nibabel as nib

    files, out, _, _ = trained
    study = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())[0] / "sax_cine.nii.gz"
    # inference.json stands alone (as the model zoo runs it), with the training's overlays (train_3d.json)
    infer = json.dumps([str(BUNDLE / "configs" / "inference.json")] + files[1:])
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", infer, "--bundle_root", str(BUNDLE),
               "--checkpoint", str(out / "model.pt"), "--input", str(study), "--output_dir", str(out / "infer"),
               *[a for k, v in zip(TINY[::2], TINY[1::2]) if k not in ("--max_epochs", "--epoch_length", "--num_folds")
                 for a in (k, v)]]
    result = _run(command + ["--slices", "3,4"])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "infer" / "lvquan_predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    num_frames = nib.load(str(study)).shape[3]
    assert len(rows) == 2 * num_frames and {r["slice"] for r in rows} == {"3", "4"}
    assert all(np.isfinite(float(r["rwt_AS_mm"])) and r["phase"] in ("0", "1") for r in rows)
    assert str(study.parent.name) not in (out / "infer" / "lvquan_predictions.csv").read_text()
    again = _run(command)
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = _run(command + ["--slices", "99", "--output_dir", str(out / "bad")])
    assert bad.returncode != 0 and "slice(s) [99]" in bad.stderr and "sax_cine.nii.gz" in bad.stderr
    assert not (out / "bad").exists()


@pytest.mark.slow
def test_evaluation_of_the_held_out_fold(trained, phantom_cohort):
    """Multi-crop (and multi-window) out-of-fold predictions + the Table 1 errors."""
    files, out, _, _ = trained
    evaluate = json.dumps(files + [str(BUNDLE / "configs" / "evaluate.json")])
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", evaluate, "--bundle_root", str(BUNDLE),
               "--dataset_dir", str(phantom_cohort), "--output_dir", str(out), *TINY]
    result = _run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "areas (mm^2)" in result.stdout and "% error rate" in result.stdout
    oof = np.load(out / "oof_predictions.npz")
    assert oof["indices"].shape == oof["target_indices"].shape and oof["indices"].shape[1] == 11
    assert np.isfinite(oof["indices"]).all() and ((oof["phase_probability"] >= 0) & (oof["phase_probability"] <= 1)).all()
    again = _run(command)
    assert again.returncode != 0 and "already exists" in again.stderr  # never overwritten silently


@pytest.mark.slow  # six deep backbones built twice each: about a minute on 2 CPU cores
@pytest.mark.parametrize("backbone", ["resnet50", "seresnet101", "seresnet152", "seresnext101", "densenet169",
                                      "densenet161"])
def test_backbone_configs_build_2d_and_2d_plus_t(backbone):
    from monai.bundle import ConfigParser

    torch.manual_seed(0)
    for extra in ([], ["train_3d.json"]):
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / n) for n in ["train.json", f"{backbone}.json", *extra]])
        network = parser.get_parsed_content("network_def", instantiate=True).eval()
        x = torch.randn(1, 1, 2, 64, 64) if extra else torch.randn(1, 1, 64, 64)
        with torch.no_grad():
            out = network(x)
        assert out.shape == ((1, 13, 2) if extra else (1, 13))
