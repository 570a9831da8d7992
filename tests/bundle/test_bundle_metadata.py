"""Every bundle carries the model zoo's mandatory metadata and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
MANDATORY_KEYS = ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                  "required_packages_version", "task", "description", "authors", "copyright", "network_data_format",
                  "name")
#: files beyond configs/metadata.json, per bundle
FILES = {
    "cmr_unet_segmentation": ("configs/train.json", "configs/evaluate.json", "configs/inference.json",
                              "configs/multi_gpu_train.json"),
    "cmr_ssp_pretraining": ("configs/train.json", "configs/simclr.json", "configs/pcl.json", "configs/dino.json",
                            "configs/mim.json", "configs/multi_gpu_train.json"),
    "cmr_lvquan_ensemble": ("configs/train.json", "configs/train_3d.json", "configs/evaluate.json"),
    "cmr_position_ssl": ("configs/train.json", "configs/train_lax.json", "configs/multi_gpu_train.json"),
    "cmr_ranking_ssl": ("configs/train.json", "configs/evaluate.json", "configs/inference.json",
                        "configs/multi_gpu_train.json"),
}


def test_every_bundle_folder_is_checked():
    assert {p.name for p in BUNDLES.iterdir() if p.is_dir()} == set(FILES)


@pytest.mark.parametrize("bundle", sorted(FILES))
def test_metadata_has_the_mandatory_model_zoo_keys_and_files(bundle):
    metadata = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    for key in MANDATORY_KEYS:
        assert metadata.get(key), key
    assert metadata["version"] in metadata["changelog"]
    assert set(metadata["network_data_format"]) == {"inputs", "outputs"}
    for name in ("LICENSE", "docs/README.md", "configs/logging.conf") + FILES[bundle]:
        assert (BUNDLES / bundle / name).is_file(), name


def test_segmentation_output_channels_are_the_canonical_labels():
    metadata = json.loads((BUNDLES / "cmr_unet_segmentation" / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background", "1": "left ventricle cavity", "2": "left ventricle myocardium", "3": "right ventricle cavity",
    }
