"""The shipped MIM encoder (cmr_ssp_pretraining/models/mim.pt): a safe state dict that the segmentation
bundle's default network takes whole with --pretrained_checkpoint, with its provenance in the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SSP = REPO_ROOT / "bundles" / "cmr_ssp_pretraining"
SEG = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
CHECKPOINT = SSP / "models" / "mim.pt"


def test_shipped_encoder_loads_whole_into_the_default_segmentation_network():
    from monai.bundle import ConfigParser

    assert CHECKPOINT.is_file() and CHECKPOINT.stat().st_size < 25e6
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert {key.split(".")[0] for key in state} == {"encoder", "decoder", "pretext_head"}
    parser = ConfigParser()
    parser.read_config(str(SEG / "configs" / "train.json"))
    parser.update({"bundle_root": str(SEG), "pretrained_checkpoint": str(CHECKPOINT), "finetune_mode": "all"})
    network = parser.get_parsed_content("finetuned_network", instantiate=True)
    loaded = network.state_dict()
    transferred = [key for key in state if key.split(".")[0] in ("encoder", "decoder")]
    assert len(transferred) > 50
    from cmrssl.networks.checkpoint import scale_free_weights

    scale_free = set(scale_free_weights(network))
    assert len(scale_free & set(transferred)) > 10
    for key in transferred:  # every encoder and decoder weight arrives (the head stays new): the convolutions that
        value = loaded[key].cpu()  # feed a norm at the fresh network's norms in the same direction, the rest as is
        if key in scale_free:
            assert torch.allclose(value / value.norm(), state[key] / state[key].norm(), atol=1e-6), key
        else:
            assert torch.equal(value, state[key]), key


def test_shipped_encoder_states_where_it_comes_from():
    metadata = json.loads((SSP / "configs" / "metadata.json").read_text())
    weights = metadata["trained_weights"]
    assert weights["file"] == "models/mim.pt" and (SSP / weights["file"]).is_file()
    for key in ("data", "command", "commit", "seed", "epochs", "terms"):
        assert weights[key] not in ("", None), key
    assert "017-020" in weights["data"] and "Sunnybrook" in weights["terms"] and "ACDC" in weights["terms"]
