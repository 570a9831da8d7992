"""What a bundle's ``configs/`` folder holds, read from the files rather than kept in lists.

Two kinds of overlay are merged after a bundle's ``configs/train.json`` (later files override,
``--config_file "['configs/train.json','configs/<overlay>.json']"``):

- a **method overlay** of ``cmr_ssp_pretraining`` (``simclr.json``, ``mim.json``, ...): a config that
  names its method with a top-level ``method_name``, and its display name with ``method_label``.
  :func:`method_overlays` finds them, so a new method is its overlay and its parts, with no list to
  edit in the study, the benchmarks or the tests;
- the **CPU size**, ``configs/cpu.json`` (:data:`CPU_OVERLAY`) in every bundle: what a 2-core CPU
  affords beyond the defaults (the schedule and data loading; for the LVQuan bundle, whose
  defaults are GPU-sized, also the network and grid) and what the README results, ``make demo`` and
  ``tools/study.py`` use. It is the only definition of the CPU size;
- the **GPU size**, ``configs/gpu.json`` (:data:`GPU_OVERLAY`) of the U-Net bundles (segmentation, SSP,
  position, ranking), whose defaults are the shipped model's network and grid (widths 16-256, 2 mm, 96 px;
  ranking 80 px crops): the papers' sizes (widths 32-512, 1.25 mm, 224-256 px; ranking 1.5 mm, 128 px).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Union

__all__ = ["CPU_OVERLAY", "GPU_OVERLAY", "config_files", "method_overlays"]

#: The CPU-size overlay of every bundle, relative to the bundle folder.
CPU_OVERLAY = "configs/cpu.json"
#: The GPU-size overlay of the bundles whose defaults are the shipped (CPU-friendly) network.
GPU_OVERLAY = "configs/gpu.json"


def method_overlays(bundle: Union[str, Path]) -> Dict[str, dict]:
    """``{method_name: {"name", "label", "path", "config"}}`` for every ``configs/*.json`` of ``bundle``
    with a top-level ``method_name``, sorted by file name. ``label`` is the overlay's ``method_label`` (the method name
    when it has none)."""
    found: Dict[str, dict] = {}
    for path in sorted((Path(bundle) / "configs").glob("*.json")):
        config = json.loads(path.read_text())
        if not isinstance(config, dict) or "method_name" not in config:
            continue
        name = str(config["method_name"])
        if name in found:
            raise ValueError(f"{path}: method_name {name!r} is also the method of {found[name]['path']}")
        found[name] = {"name": name, "label": str(config.get("method_label", name)), "path": path, "config": config}
    return found


def config_files(*names: str, cpu: bool = False, gpu: bool = False) -> List[str]:
    """``configs/<name>.json`` for each name, then ``configs/cpu.json`` when ``cpu`` and ``configs/gpu.json``
    when ``gpu``: the files of a ``--config_file`` list in merge order, relative to the bundle folder."""
    files = [f"configs/{name}.json" for name in names]
    return files + [CPU_OVERLAY] * bool(cpu) + [GPU_OVERLAY] * bool(gpu)
