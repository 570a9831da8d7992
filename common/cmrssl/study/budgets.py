"""The study's budgets: which arms, labelled counts and seeds, and how big and long every bundle run is.

What a budget changes in a bundle run is a bundle config overlay, as ``configs/cpu.json`` is:
``budgets/<budget>/<bundle>.json`` beside this module, merged after the bundle's configs and its size
overlay (``--config_file "['configs/train.json','configs/cpu.json','.../budgets/small/cmr_unet_segmentation.json']"``),
for training and evaluation alike. A bundle without a file runs as its configs say.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional

from .arms import Repository, arm_parts, pretraining_methods

__all__ = ["BUDGETS", "BUDGET_OVERLAYS", "NOT_HASHED", "arm_bundles", "budget_hash", "budget_overlay"]

#: where the budgets' bundle overlays are: ``<budget>/<bundle name>.json``
BUDGET_OVERLAYS = Path(__file__).resolve().parent / "budgets"

#: Per budget: the arms, labelled counts and seeds it runs by default; ``overlay``: every bundle runs with its
#: ``configs/cpu.json`` (the CPU size) or ``configs/gpu.json`` (the papers' network and grid) where it has one
#: (``cmrssl.bundle_configs``), then the budget's own overlay (:func:`budget_overlay`: the fine-tuning's length is
#: ``max_epochs`` x ``epoch_length`` iterations whatever N is, so that arms and counts get the same training);
#: ``validation_per_group``: pool patients per ACDC group that validate every fine-tune (its curve decides
#: whether it plateaued; ``--select_on_validation false`` keeps the last epoch's model, so validation labels never
#: choose a model); 0: none. ``nominal_seconds`` estimates a step until one of its kind has been timed.
BUDGETS: Dict[str, dict] = {
    "cpu": {  # every fine-tune at its plateau on 2 CPU cores (docs/study.md, "The cpu budget")
        # the best +All method also runs +Decoder and +MultiTask once the +All rows say which it is
        "arms": ["scratch", "simclr_all", "pcl_all", "dino_all", "mim_all", "ranking"],
        "labelled": [1, 5, "all"],
        "seeds": [0, 1, 2],
        "overlay": "cpu",  # the overlay: widths 8-128, 64 px patches of 2 mm, 6000 iterations, last epoch kept
        "validation_per_group": 2,
        "phantom_subjects": 6,
        "nominal_seconds": {"data": 120, "pretrain": 4500, "train": 1260, "eval": 35},  # measured: 15 s a pretraining epoch
    },
    "small": {
        "arms": ["scratch", "mim_all"],
        "labelled": [1, 5, "all"],
        "seeds": [0, 1],
        "overlay": "cpu",
        "phantom_subjects": 6,
        "nominal_seconds": {"data": 60, "pretrain": 600, "train": 360, "eval": 60},  # until measured
    },
    "recipe": {  # the few-label recipe the bundles ship: 5 labelled subjects, each bundle's own CPU schedule
        "arms": ["scratch", "mim_all"],
        "labelled": [5],
        "seeds": [0, 1, 2],
        "overlay": "cpu",  # no budget overlay: cmr_unet_segmentation's cpu.json (300 epochs of the labelled
        "phantom_subjects": 6,  # frames, last epoch kept), cmr_ssp_pretraining's (15 epochs of the unlabelled pool)
        "nominal_seconds": {"data": 60, "pretrain": 1200, "train": 900, "eval": 60},  # until measured
    },
    "tiny": {  # checks the whole pipeline in minutes at a test size (the tests run it); its numbers mean nothing
        "arms": ["scratch", "mim_all"],
        "labelled": [1, "all"],
        "seeds": [0],
        "phantom_subjects": 2,
        "nominal_seconds": {"data": 10, "pretrain": 10, "train": 10, "eval": 10},
    },
    "full": {
        "arms": "all",
        "labelled": [1, 2, 5, 10, "all"],
        "seeds": [0, 1, 2],
        "overlay": "gpu",  # the papers' network and grid (configs/gpu.json of the U-Net bundles); the overlay:
        "phantom_subjects": 40,  # nnU-Net's 2D schedule (de Mooij et al. 2024), 1000 epochs of 250 iterations
        "nominal_seconds": {"data": 600, "pretrain": 36000, "train": 36000, "eval": 300},
    },
}


def budget_overlay(name: str, bundle: Path) -> Optional[Path]:
    """The budget's overlay for ``bundle`` (``budgets/<name>/<bundle folder name>.json``), or None."""
    path = BUDGET_OVERLAYS / name / f"{Path(bundle).name}.json"
    return path if path.is_file() else None


#: the budget settings that do not change what a run does: which runs there are, and the time estimates
NOT_HASHED = ("arms", "labelled", "seeds", "nominal_seconds")


def arm_bundles(repo: Repository, arm: str) -> List[Path]:
    """The bundles whose configs a run of ``arm`` loads: its pretraining's (none for scratch) and its fine-tuning's."""
    method, mode = arm_parts(arm)
    if mode == "ranking":
        return [repo.ranking]
    return ([pretraining_methods(repo)[method]["bundle"]] if method else []) + [repo.segmentation]


def budget_hash(repo: Repository, name: str, arm: str) -> str:
    """12 hex digits that change when what a run of ``arm`` under budget ``name`` does changes: the budget's
    settings but which runs it lists (:data:`NOT_HASHED`), its overlays for the arm's bundles and every config file
    that the arm's runs load (``configs/*.json`` of :func:`arm_bundles` but ``metadata.json``, which holds versions
    and changelogs, and ``inference.json``, which the study does not run). A ledger row counts for a budget only
    with its hash, so adding a seed, a count or an arm to a budget, or changing another bundle, keeps the rows.
    A pretrained arm's hash also holds the rule its fine-tuning starts by
    (``cmrssl.networks.checkpoint.INITIAL_SCALE_RULE``), code that changes what such a run does and no other."""
    settings = {k: v for k, v in BUDGETS[name].items() if k not in NOT_HASHED}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    if arm_parts(arm)[0] is not None:
        from cmrssl.networks.checkpoint import INITIAL_SCALE_RULE  # torch: only where a pretrained arm is hashed

        digest.update(f"start {INITIAL_SCALE_RULE}".encode() + b"\0")
    for bundle in arm_bundles(repo, arm):
        overlay = budget_overlay(name, bundle)
        if overlay is not None:
            digest.update(f"overlay {overlay.name}".encode() + b"\0" + overlay.read_bytes() + b"\0")
        for path in sorted(bundle.glob("configs/*.json")):
            if path.name not in ("metadata.json", "inference.json"):
                digest.update(str(path.relative_to(repo.bundles)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
