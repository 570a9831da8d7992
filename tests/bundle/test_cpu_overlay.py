"""``configs/cpu.json``, the CPU size of every bundle (``cmrssl.bundle_configs``): it only overrides ids its
bundle has (a misspelt id would be merged in and ignored, the run going on at the GPU size), a model trained with
it loads into inference with it. That the study and the demo run at it: ``tests/integration/test_study_cli.py``,
``tests/integration/test_demo.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cmrssl.bundle_configs import CPU_OVERLAY, config_files

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
_MISSING = object()


def _parser(bundle: Path, *names: str, cpu: bool = True):
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_files([str(bundle / f) for f in config_files(*names, cpu=cpu)]))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    return parser


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_cpu_overlay_overrides_only_ids_the_bundle_has(bundle):
    overlay = json.loads((bundle / CPU_OVERLAY).read_text())
    assert overlay, f"{bundle.name}: empty {CPU_OVERLAY}"
    base = _parser(bundle, "train", cpu=False)
    unknown = [key for key in overlay if base.get(key, _MISSING) is _MISSING]
    assert not unknown, f"{bundle.name}/{CPU_OVERLAY} sets ids train.json does not have: {unknown}"
    changed = [key for key in overlay if base.get(key) != overlay[key]]
    assert changed, f"{bundle.name}/{CPU_OVERLAY} changes nothing"


def _shapes(network: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if (b / "configs" / "inference.json").is_file()],
                         ids=lambda b: b.name)
def test_a_model_trained_at_the_cpu_size_loads_into_inference_at_the_cpu_size(bundle):
    """Training and inference read the same overlay: same network shapes, same preprocessing grid."""
    train, infer = _parser(bundle, "train"), _parser(bundle, "inference")
    overlay = json.loads((bundle / CPU_OVERLAY).read_text())
    trained = {k: v for k, v in _shapes(train.get_parsed_content("network_def")).items() if "aux_heads" not in k}
    built = {k: v for k, v in _shapes(infer.get_parsed_content("network_def")).items() if "aux_heads" not in k}
    assert trained == built
    assert trained != {k: v for k, v in _shapes(_parser(bundle, "inference", cpu=False).get_parsed_content(
        "network_def")).items() if "aux_heads" not in k} or "network_def#channels" not in overlay
    for key in ("pixdim_mm", "roi_size", "crop_size", "patch_size", "backbone"):
        if key in overlay and infer.get(key, _MISSING) is not _MISSING:
            assert infer.get_parsed_content(key) == train.get_parsed_content(key) == overlay[key], key


_ABBREVIATIONS = {"cmr_unet_segmentation": "seg", "cmr_ssp_pretraining": "ssp", "cmr_position_ssl": "pos",
                  "cmr_ranking_ssl": "rank", "cmr_lvquan_ensemble": "lvq"}


def test_docs_options_states_each_cpu_overlay_as_it_is():
    """docs/options.md lists every bundle's CPU size; the table must say what the files hold."""
    rows = {}
    for line in (REPO_ROOT / "docs" / "options.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in _ABBREVIATIONS.values():
            rows[cells[0]] = cells[1]
    assert set(rows) == {_ABBREVIATIONS[b.name] for b in BUNDLES}
    for bundle in BUNDLES:
        row = rows[_ABBREVIATIONS[bundle.name]]
        stated = dict(re.findall(r"`([^`]+)` ([^`]+?)(?:, (?=`)|$)", row))
        overlay = json.loads((bundle / CPU_OVERLAY).read_text())
        assert set(stated) == set(overlay), bundle.name
        for key, value in overlay.items():
            written = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
            assert stated[key] == written, key
