"""``configs/cpu.json`` (the CPU size, every bundle) and ``configs/gpu.json`` (the papers' size, the U-Net
bundles), ``cmrssl.bundle_configs``: each only overrides ids its bundle has (a misspelt id would be merged in and
ignored, the run going on at another size), and a model trained with one loads into inference with it. That the study and the demo run at it: ``tests/integration/test_study_cli.py``,
``tests/integration/test_demo.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cmrssl.bundle_configs import CPU_OVERLAY, GPU_OVERLAY, config_files

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
_MISSING = object()
#: (bundle, overlay) for every size overlay a bundle has
OVERLAYS = [(b, o) for b in BUNDLES for o in (CPU_OVERLAY, GPU_OVERLAY) if (b / o).is_file()]


def _id(case: tuple) -> str:
    return f"{case[0].name}/{Path(case[1]).name or 'defaults'}"


def _parser(bundle: Path, *names: str, overlay: str = CPU_OVERLAY):
    from monai.bundle import ConfigParser

    files = [f"configs/{name}.json" for name in names] + ([overlay] if overlay else [])
    parser = ConfigParser(ConfigParser.load_config_files([str(bundle / f) for f in files]))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    return parser


def test_every_bundle_has_a_cpu_size_and_every_unet_bundle_a_gpu_size():
    assert all((b / CPU_OVERLAY).is_file() for b in BUNDLES)
    assert {b.name for b, o in OVERLAYS if o == GPU_OVERLAY} == {
        "cmr_unet_segmentation", "cmr_ssp_pretraining", "cmr_position_ssl", "cmr_ranking_ssl"}


@pytest.mark.parametrize("bundle,overlay", OVERLAYS, ids=[_id(c) for c in OVERLAYS])
def test_size_overlay_overrides_only_ids_the_bundle_has(bundle, overlay):
    values = json.loads((bundle / overlay).read_text())
    assert values, f"{bundle.name}: empty {overlay}"
    base = _parser(bundle, "train", overlay="")
    unknown = [key for key in values if base.get(key, _MISSING) is _MISSING]
    assert not unknown, f"{bundle.name}/{overlay} sets ids train.json does not have: {unknown}"
    changed = [key for key in values if base.get(key) != values[key]]
    assert changed, f"{bundle.name}/{overlay} changes nothing"


def _shapes(network: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


_INFERENCE_CASES = [(b, o) for b, o in OVERLAYS + [(b, "") for b in BUNDLES] if (b / "configs" / "inference.json").is_file()]


@pytest.mark.parametrize("bundle,overlay", _INFERENCE_CASES, ids=[_id(c) for c in _INFERENCE_CASES])
def test_a_model_trained_at_a_size_loads_into_inference_at_that_size(bundle, overlay):
    """Training and inference read the same overlay (or none): same network shapes, same preprocessing grid."""
    train, infer = _parser(bundle, "train", overlay=overlay), _parser(bundle, "inference", overlay=overlay)
    values = json.loads((bundle / overlay).read_text()) if overlay else {}
    trained = {k: v for k, v in _shapes(train.get_parsed_content("network_def")).items() if "aux_heads" not in k}
    built = {k: v for k, v in _shapes(infer.get_parsed_content("network_def")).items() if "aux_heads" not in k}
    assert trained == built
    if "network_def#channels" in values or "backbone" in values:
        default = _parser(bundle, "inference", overlay="").get_parsed_content("network_def")
        assert trained != {k: v for k, v in _shapes(default).items() if "aux_heads" not in k}
    for key in ("pixdim_mm", "roi_size", "crop_size", "patch_size", "backbone"):
        if infer.get(key, _MISSING) is not _MISSING:
            setting = infer.get_parsed_content(key)
            if isinstance(setting, torch.nn.Module):
                continue  # a backbone module: the network shapes above compare it
            assert setting == train.get_parsed_content(key), key
            assert key not in values or values[key] == setting, key


_ABBREVIATIONS = {"cmr_unet_segmentation": "seg", "cmr_ssp_pretraining": "ssp", "cmr_position_ssl": "pos",
                  "cmr_ranking_ssl": "rank", "cmr_lvquan_ensemble": "lvq"}


def test_docs_options_states_each_size_overlay_as_it_is():
    """docs/options.md lists every bundle's CPU and GPU sizes; the table must say what the files hold."""
    rows = {}
    for line in (REPO_ROOT / "docs" / "options.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in _ABBREVIATIONS.values():
            rows[cells[0]] = {CPU_OVERLAY: cells[1], GPU_OVERLAY: cells[2]}
    assert set(rows) == {_ABBREVIATIONS[b.name] for b in BUNDLES}
    for bundle in BUNDLES:
        for overlay, row in rows[_ABBREVIATIONS[bundle.name]].items():
            stated = dict(re.findall(r"`([^`]+)` ([^`]+?)(?:, (?=`)|$)", row))
            values = json.loads((bundle / overlay).read_text()) if (bundle / overlay).is_file() else {}
            assert set(stated) == set(values), (bundle.name, overlay)
            for key, value in values.items():
                written = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
                assert stated[key] == written, (bundle.name, overlay, key)
