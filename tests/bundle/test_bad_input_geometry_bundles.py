"""Geometry a header cannot prove, through ``python -m monai.bundle run`` (issue 29, classes 1 and 3).

The segmentation bundle refuses, before training, a datalist record whose label
lies off its image's grid, naming both files; its inference refuses a NIfTI
whose sform and pixdim give two spacings the header cannot choose between, and
``--spacing_from`` settles it. The rules are the readers' (:mod:`cmrssl.io.nifti`),
so every bundle that loads through them gets the same answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_cli import last_line as _last_line, phantom_datalist, run_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
TINY = {"pixdim_mm": "[3.5, 3.5]", "network_def#channels": "[4, 8, 16, 32]"}

sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))
from nifti_header import patch_nifti_header as _patch  # noqa: E402  (the raw-header helper, one copy)


def _run(config: str, timeout: int = 300, **options) -> subprocess.CompletedProcess:
    return run_bundle(SEGMENTATION, config, timeout=timeout, **{**TINY, **options})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three phantom subjects of four frames (48 px) and their datalist."""
    return phantom_datalist(tmp_path_factory.mktemp("geometry_cohort"), num_subjects=3)


def test_training_refuses_a_label_off_its_image_grid_naming_both(cohort, tmp_path):
    # Before: a label of the image's shape 30 mm away trained the network without a word.
    datalist = json.loads(cohort.read_text())
    record = datalist["training"][0]
    shifted = tmp_path / "shifted" / "frame_gt.nii.gz"
    _patch(Path(record["label"]), shifted, translate_mm=[0.0, 30.0, 0.0])
    record["label"] = str(shifted)
    damaged = tmp_path / "datalist.json"
    damaged.write_text(json.dumps(datalist))
    result = _run("configs/train.json", datalist=damaged, output_dir=tmp_path / "run", max_epochs=1,
                  num_workers=0, patch_size="[48, 48]")
    assert result.returncode != 0
    last = _last_line(result)
    # named before any data is cached (a loader thread that found it crashed the run: 'terminate called')
    assert last.startswith(f"error: CineReadError: {damaged}: record 0 of 'training' (subject {record['subject']}): "
                           f"{shifted}: the label is not on the grid of its image {record['image']}"), last
    assert "30.0 mm apart" in last, last
    assert "Loading dataset" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "model.pt").exists()


def test_records_handed_in_get_the_grid_check_too(cohort, tmp_path):
    # MONAI Label hands its records in as --train#dataset#data; the same check applies.
    datalist = json.loads(cohort.read_text())
    record = dict(datalist["training"][0])
    shifted = tmp_path / "shifted" / "frame_gt.nii.gz"
    _patch(Path(record["label"]), shifted, translate_mm=[0.0, 30.0, 0.0])
    record["label"] = str(shifted)
    result = _run("configs/train.json", datalist=cohort, output_dir=tmp_path / "run", max_epochs=1, num_workers=0,
                  patch_size="[48, 48]", **{"train#dataset#data": json.dumps([record]),
                                             "validate#dataset#data": "[]"})
    assert result.returncode != 0
    last = _last_line(result)
    assert last.startswith("error: CineReadError: train#dataset#data: record 0"), last
    assert "the label is not on the grid of its image" in last, last


def test_inference_refuses_two_spacings_until_spacing_from_settles_it(cohort, tmp_path):
    from cmrssl.networks.unet import CMRUNet

    cine = Path(json.loads(cohort.read_text())["training"][0]["image"]).parents[1] / "sax_cine.nii.gz"
    spacing = np.asarray(nib.load(str(cine)).header.get_zooms()[:3], dtype=np.float64)
    damaged = tmp_path / "two_spacings.nii.gz"
    _patch(cine, damaged, pixdim_xyz=0.8 * spacing)
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    network = CMRUNet(in_channels=1, out_channels=4, channels=[4, 8, 16, 32], deep_supervision=True,
                      num_deep_supervision_heads=2)
    torch.save(network.state_dict(), checkpoint)

    refused = _run("configs/inference.json", input=damaged, checkpoint=checkpoint, output_dir=tmp_path / "refused",
                   write_plots="false")
    assert refused.returncode != 0
    last = _last_line(refused)
    assert last.startswith(f"error: CineReadError: {damaged}: the header holds two voxel spacings"), last
    assert "--spacing_from" in last, last
    assert not (tmp_path / "refused").exists()

    settled = _run("configs/inference.json", input=damaged, checkpoint=checkpoint, output_dir=tmp_path / "sform",
                   write_plots="false", spacing_from="sform")
    assert settled.returncode == 0, settled.stderr[-3000:]
    report = json.loads((tmp_path / "sform" / "function.json").read_text())
    np.testing.assert_allclose(report["spacing_zyx_mm"][1:], spacing[:2][::-1], rtol=1e-4)


def test_a_record_names_which_spacing_is_true_and_training_takes_it(cohort, tmp_path):
    # Two spacings in the image and its label header: refused until the record says which is
    # true, as an indexer that knows its dataset's convention writes it (ACDC: "pixdim").
    datalist = json.loads(cohort.read_text())
    training = [dict(r) for r in datalist["training"] if r["subject"] == datalist["training"][0]["subject"]]
    for number, record in enumerate(training):
        for key in ("image", "label"):
            spacing = np.asarray(nib.load(record[key]).header.get_zooms()[:3], dtype=np.float64)
            copy = tmp_path / "frames" / f"{number}_{key}.nii.gz"
            _patch(Path(record[key]), copy, pixdim_xyz=0.8 * spacing)
            record[key] = str(copy)
    damaged = tmp_path / "datalist.json"
    damaged.write_text(json.dumps({"training": training, "validation": []}))
    options = dict(output_dir=tmp_path / "run", max_epochs=1, num_workers=0, patch_size="[48, 48]")
    refused = _run("configs/train.json", datalist=damaged, **options)
    assert refused.returncode != 0
    assert "the header holds two voxel spacings" in _last_line(refused), _last_line(refused)

    for record in training:
        record["spacing_from"] = "header"
    damaged.write_text(json.dumps({"training": training, "validation": []}))
    refused = _run("configs/train.json", datalist=damaged, **options)
    assert _last_line(refused).endswith("spacing_from must be one of auto, sform, pixdim; got 'header'"), \
        _last_line(refused)

    for record in training:
        record["spacing_from"] = "sform"
    damaged.write_text(json.dumps({"training": training, "validation": []}))
    trained = _run("configs/train.json", datalist=damaged, **options)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "run" / "model.pt").is_file()
