"""The study's budgets: which arms, labelled counts and seeds, and the options every bundle run takes."""

from __future__ import annotations

import hashlib
import json
from typing import Dict

from .arms import Repository

__all__ = ["BUDGETS", "budget_hash"]

#: Per budget: arms, labelled counts, seeds; ``overlay``: every bundle runs with its ``configs/cpu.json`` (the
#: CPU size) or ``configs/gpu.json`` (the papers' network and grid) where it has one (``cmrssl.bundle_configs``);
#: the overrides of every network
#: (``network``), of the fine-tuning (``finetune``: ``--max_epochs`` x ``--epoch_length`` iterations whatever
#: N is, so that arms and counts get the same training), of pretraining (``pretrain``: all methods;
#: ``pretrain_<method>``: one) and of the ranking bundle. ``eval`` is added to every segmentation evaluation.
#: ``validation_per_group``: pool patients per ACDC group that validate every fine-tune (its curve decides
#: whether it plateaued; ``--select_on_validation false`` keeps the last epoch's model, so validation labels never
#: choose a model); 0: none.
BUDGETS: Dict[str, dict] = {
    "small": {
        "arms": ["scratch", "mim_all"],
        "labelled": [1, 5, "all"],
        "seeds": [0, 1],
        "overlay": "cpu",
        "network": [],
        "finetune": ["--max_epochs", "20", "--epoch_length", "10", "--frames_per_batch", "2", "--cache_rate", "1.0"],
        "eval": [],
        "pretrain": ["--max_epochs", "3"],
        "pretrain_position": [],
        "ranking": ["--max_epochs", "60"],
        "phantom_subjects": 6,
        "nominal_seconds": {"data": 60, "pretrain": 600, "train": 360, "eval": 60},  # until measured
    },
    "recipe": {  # the few-label recipe the bundles ship: 5 labelled subjects, each bundle's own CPU schedule
        "arms": ["scratch", "mim_all"],
        "labelled": [5],
        "seeds": [0, 1, 2],
        "overlay": "cpu",
        "network": [],
        "finetune": [],  # cmr_unet_segmentation's cpu.json: 300 epochs of the labelled frames, last epoch kept
        "eval": [],
        "pretrain": [],  # cmr_ssp_pretraining's cpu.json: 15 epochs of the unlabelled pool
        "pretrain_position": [],
        "ranking": [],
        "phantom_subjects": 6,
        "nominal_seconds": {"data": 60, "pretrain": 1200, "train": 900, "eval": 60},  # until measured
    },
    "tiny": {  # checks the whole pipeline in minutes at a test size (the tests run it); its numbers mean nothing
        "arms": ["scratch", "mim_all"],
        "labelled": [1, "all"],
        "seeds": [0],
        "network": ["--network_def#channels", "[4, 8, 16, 32]", "--pixdim_mm", "[2.0, 2.0]"],
        "finetune": ["--patch_size", "[32, 32]", "--max_epochs", "1", "--epoch_length", "2", "--num_workers", "0",
                     "--cache_rate", "0.0"],
        "eval": ["--num_workers", "0"],
        "pretrain": ["--image_size", "32", "--max_epochs", "1", "--epoch_length", "2", "--frames_per_batch", "2",
                     "--num_workers", "0"],
        "pretrain_position": ["--patch_size", "[32, 32]", "--max_epochs", "1", "--epoch_length", "2",
                              "--num_workers", "0"],
        "ranking": ["--backbone", "resnet10_small", "--pixdim_mm", "[4.0, 4.0]", "--roi_size", "32", "--num_workers", "0",
                    "--max_epochs", "1"],
        "phantom_subjects": 2,
        "nominal_seconds": {"data": 10, "pretrain": 10, "train": 10, "eval": 10},
    },
    "full": {
        "arms": "all",
        "labelled": [1, 2, 5, 10, "all"],
        "seeds": [0, 1, 2],
        "overlay": "gpu",  # the papers' network and grid (configs/gpu.json of the U-Net bundles)
        "network": [],
        # nnU-Net's 2D schedule (de Mooij et al. 2024 fine-tune with it): 1000 epochs of 250 iterations
        "finetune": ["--max_epochs", "1000", "--epoch_length", "250"],
        "eval": [],
        "pretrain": [],  # the bundle's 100 epochs of the whole pool (cmr_ssp_pretraining README)
        "pretrain_position": [],
        "ranking": [],
        "phantom_subjects": 40,
        "nominal_seconds": {"data": 600, "pretrain": 36000, "train": 36000, "eval": 300},
    },
}


def budget_hash(repo: Repository, name: str) -> str:
    """12 hex digits that change when what a run of budget ``name`` does changes: the budget's options and
    every config file the bundles' runs load (``configs/*.json`` but ``metadata.json``, which holds versions and
    changelogs, and ``inference.json``, which the study does not run). A ledger row counts for a budget only with
    its hash."""
    digest = hashlib.sha256(json.dumps(BUDGETS[name], sort_keys=True).encode())
    for path in sorted(repo.bundles.glob("*/configs/*.json")):
        if path.name not in ("metadata.json", "inference.json"):
            digest.update(str(path.relative_to(repo.bundles)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
