"""The study's arms, read from the bundles: scratch, each pretraining method with each fine-tuning mode, ranking."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from cmrssl.bundle_configs import config_files, method_overlays
from cmrssl.labels import STRUCTURE_NAMES, STRUCTURES

__all__ = ["Repository", "STRUCTURE_ROWS", "all_arms", "arm_label", "arm_parts", "pretraining_methods"]

#: the rows of the study's tables: (key in the evaluation's outputs, name), from :mod:`cmrssl.labels`
STRUCTURE_ROWS = tuple((key, STRUCTURE_NAMES[value]) for key, value in STRUCTURES.items())


@dataclass(frozen=True)
class Repository:
    """Where the study finds the bundles it runs and the tools that make its data (a checkout of this project)."""

    root: Path

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def segmentation(self) -> Path:
        return self.bundles / "cmr_unet_segmentation"

    @property
    def pretraining(self) -> Path:
        return self.bundles / "cmr_ssp_pretraining"

    @property
    def position(self) -> Path:
        return self.bundles / "cmr_position_ssl"

    @property
    def ranking(self) -> Path:
        return self.bundles / "cmr_ranking_ssl"

    def tool(self, name: str) -> Path:
        return self.root / "tools" / f"{name}.py"


def pretraining_methods(repo: Repository) -> Dict[str, dict]:
    """``{method: {"bundle", "configs", "label", "pixelwise"}}``: every method overlay of cmr_ssp_pretraining
    (``cmrssl.bundle_configs.method_overlays``: a config with a ``method_name``), and position.

    ``pixelwise``: the pretext head predicts per pixel (MIM's reconstruction decoder, position's
    10-class map), so ``--finetune_mode multitask`` can keep it (cmrssl.networks.checkpoint).
    """
    methods = {}
    for name, overlay in method_overlays(repo.pretraining).items():
        saved = overlay["config"].get("method", {}).get("saved_parts", ["encoder"])
        methods[name] = {"bundle": repo.pretraining, "configs": config_files("train", overlay["path"].stem),
                         "label": overlay["label"], "pixelwise": "decoder" in saved}
    methods["position"] = {"bundle": repo.position, "configs": config_files("train"), "label": "Position",
                           "pixelwise": True}
    return methods


def all_arms(repo: Repository) -> List[str]:
    """scratch, then per method ``_all``, ``_decoder`` (and ``_multitask`` for pixel-wise heads), then ranking."""
    arms = ["scratch"]
    for method, spec in pretraining_methods(repo).items():
        arms += [f"{method}_all", f"{method}_decoder"] + ([f"{method}_multitask"] if spec["pixelwise"] else [])
    return arms + ["ranking"]


def arm_parts(arm: str) -> Tuple[Optional[str], str]:
    """``mim_all`` -> ("mim", "all"); ``scratch`` -> (None, "scratch"); ``ranking`` -> (None, "ranking")."""
    if arm in ("scratch", "ranking"):
        return None, arm
    method, _, mode = arm.rpartition("_")
    return method, mode


def arm_label(arm: str, repo: Optional[Repository] = None) -> str:
    """Bai et al.'s names: Scratch, SSL(MIM)+All, SSL(MIM)+Decoder, SSL(MIM)+MultiTask."""
    method, mode = arm_parts(arm)
    if method is None:
        return {"scratch": "Scratch", "ranking": "Ranking"}[arm]
    label = pretraining_methods(repo).get(method, {}).get("label", method) if repo is not None else method.upper()
    return f"SSL({label})+{ {'all': 'All', 'decoder': 'Decoder', 'multitask': 'MultiTask'}[mode]}"
