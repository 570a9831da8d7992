"""cmr_position_ssl: the README's path from a phantom cohort to a fine-tuned segmentation model.

``tools/index.py phantom`` -> ``tools/position_labels.py`` -> ``configs/train.json`` (and ``train_lax.json``)
through ``python -m monai.bundle run`` -> the checkpoint fine-tuned by cmr_unet_segmentation in the paper's
three modes (SSL+Decoder, SSL+All, SSL+MultiTask with the alternating schedule), all CPU-sized.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_position_ssl"
SEGMENTATION = REPO_ROOT / "bundles" / "cmr_unet_segmentation"

# CPU-sized: 64 px slices at 5 mm (the boxes, 109 mm either side of the crossing, stay in the field of view),
# a narrow U-Net, one epoch of two iterations of one frame each.
TINY = {
    "patch_size": "[64, 64]",
    "pixdim_mm": "[5.0, 5.0]",
    "max_epochs": "1",
    "epoch_length": "2",
    "frames_per_batch": "1",
    "num_workers": "0",
    "network_def#channels": "[4, 8, 16, 32]",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(command, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=str(cwd), capture_output=True, text=True, timeout=600, env=ENV)


def _bundle_run(bundle: Path, config: str, **overrides) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    for key, value in {**TINY, **overrides}.items():
        command += [f"--{key}", value]
    return _run(command, cwd=bundle)


@pytest.fixture(scope="module")
def position_data(phantom_cohort, tmp_path_factory) -> dict:
    """The phantom's segmentation datalist and the position-label datalists of tools/position_labels.py."""
    folder = tmp_path_factory.mktemp("position")
    datalist = folder / "phantom.json"
    result = _run([sys.executable, "tools/index.py", "phantom", phantom_cohort, "--datalist", datalist])
    assert result.returncode == 0, result.stderr[-3000:]
    labels = folder / "labels"
    result = _run([sys.executable, "tools/position_labels.py", datalist, "--out", labels])
    assert result.returncode == 0, result.stderr[-3000:]
    return {"segmentation": datalist, "sax": labels / "datalist.json", "lax": labels / "datalist_lax.json"}


@pytest.fixture(scope="module")
def position_checkpoint(position_data, tmp_path_factory) -> Path:
    checkpoint = tmp_path_factory.mktemp("position_model") / "model.pt"
    result = _bundle_run(BUNDLE, "configs/train.json", datalist=str(position_data["sax"]), checkpoint=str(checkpoint),
                         output_dir=str(checkpoint.parent))
    assert result.returncode == 0, result.stderr[-4000:]
    return checkpoint


def _tiny_segmentation_unet():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(SEGMENTATION / "configs" / "train.json"))
    parser["network_def#channels"] = json.loads(TINY["network_def#channels"])
    return parser.get_parsed_content("network_def", instantiate=True)


def _assert_position_checkpoint(checkpoint: Path) -> None:
    from cmrssl.networks.checkpoint import load_pretrained

    state = torch.load(checkpoint, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"encoder", "decoder", "pretext_head"}
    assert state["pretext_head.conv.conv.weight"].shape[0] == 10, "background + nine boxes"
    segmentation = _tiny_segmentation_unet()
    report = load_pretrained(segmentation, checkpoint)
    assert not [k for k in report.missing_keys if k.startswith(("encoder.", "decoder."))]
    loaded = segmentation.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if k.startswith("encoder."))


@pytest.mark.slow
def test_short_axis_pretraining_checkpoint_loads_into_the_segmentation_unet(position_checkpoint):
    _assert_position_checkpoint(position_checkpoint)


@pytest.mark.slow
def test_long_axis_variant(position_data, tmp_path):
    result = _bundle_run(BUNDLE, "['configs/train.json','configs/train_lax.json']", dataset_dir=str(position_data["lax"].parent),
                         output_dir=str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Iter: 2/2" in result.stdout + result.stderr
    _assert_position_checkpoint(tmp_path / "model_lax.pt")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decoder", "all", "multitask"])
def test_fine_tuning_in_the_three_modes(mode, position_data, position_checkpoint, tmp_path):
    """SSL+Decoder, SSL+All and SSL+MultiTask from the position checkpoint; the multi-task run alternates one
    pretext sub-iteration (on the position datalist) with beta = 2 segmentation sub-iterations: over 6
    trainer iterations the pretext runs 3 times (before iterations 1, 3 and 5)."""
    overrides = {"datalist": str(position_data["segmentation"]), "output_dir": str(tmp_path),
                 "finetune_mode": mode, "pretrained_checkpoint": str(position_checkpoint)}
    if mode == "multitask":
        overrides.update(multitask_schedule="alternate", pretext_datalist=str(position_data["sax"]),
                         multitask_segmentation_steps="2", epoch_length="6")
    result = _bundle_run(SEGMENTATION, "configs/train.json", **overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    counts = [int(n) for n in re.findall(r"(\d+) pretext sub-iterations \(1 per 2 segmentation\)", log)]
    assert counts == ([3] if mode == "multitask" else [])
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert any(k.startswith("pretext_head.") for k in state) == (mode == "multitask")


@pytest.mark.slow
@pytest.mark.parametrize("schedule, extra, message", [
    ("sum", {}, "has no labels on the segmentation images"),
    ("alternate", {}, "needs --pretext_datalist"),
])
def test_a_schedule_the_checkpoint_cannot_serve_is_refused(schedule, extra, message, position_data, position_checkpoint,
                                                           tmp_path):
    result = _bundle_run(SEGMENTATION, "configs/train.json", datalist=str(position_data["segmentation"]),
                         output_dir=str(tmp_path), finetune_mode="multitask", multitask_schedule=schedule,
                         pretrained_checkpoint=str(position_checkpoint), **extra)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_alternating_schedule_under_ddp(position_data, position_checkpoint, tmp_path):
    """Two processes (gloo): the pretext step goes through the DDP wrapper (unused parameters allowed, since a
    pretext step leaves the segmentation heads idle and a segmentation step the pretext head), each process
    drawing its share of the pretext pool."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547",
               "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']"]
    overrides = {**TINY, "datalist": str(position_data["segmentation"]), "output_dir": str(tmp_path),
                 "finetune_mode": "multitask", "pretrained_checkpoint": str(position_checkpoint),
                 "multitask_schedule": "alternate", "pretext_datalist": str(position_data["sax"]),
                 "multitask_segmentation_steps": "2", "epoch_length": "4"}
    for key, value in overrides.items():
        command += [f"--{key}", value]
    result = _run(command, cwd=SEGMENTATION)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert re.findall(r"(\d+) pretext sub-iterations \(1 per 2 segmentation\)", log) == ["2", "2"]  # one line per rank
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state) and any(k.startswith("pretext_head.") for k in state)
