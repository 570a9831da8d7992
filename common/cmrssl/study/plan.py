"""The study's plan: every bundle run (pretraining, fine-tuning, evaluation) as the command a user would type."""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Dict, List, Optional, Sequence, Tuple

from cmrssl.bundle_configs import config_files

from .arms import Repository, arm_parts, pretraining_methods
from .budgets import BUDGETS, budget_overlay

__all__ = ["Step", "bundle_command", "iterations", "option", "plan", "ranking_iterations", "run_configs", "run_key",
           "setting"]


@dataclass
class Step:
    """One bundle run (or a data-making command) and how to tell it is done."""

    name: str
    folder: Path
    commands: List[List[str]]
    done_file: Path
    cwd: Path
    kind: str  # "data", "pretrain", "train", "eval"
    checkpoint: Optional[Path] = None  # trainings: resumable through model.pt.partial/
    iterations: int = 0
    meta: dict = field(default_factory=dict)


def run_key(arm: str, labelled, seed) -> Tuple[str, str, int]:
    """One fine-tune of the study: (arm, labelled count as written, seed)."""
    return str(arm), str(labelled), int(seed)


def bundle_command(configs: Sequence[str]) -> List[str]:
    files = configs[0] if len(configs) == 1 else json.dumps(list(configs), separators=(",", ":"))
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]


def option(options: Sequence[str], name: str, default=None):
    """The value of ``--name`` in an override list (the last one wins)."""
    value = default
    for key, item in zip(options[::2], options[1::2]):
        if key == f"--{name}":
            value = item
    return value


def run_configs(budget_name: str, bundle: Path, configs: Sequence[str]) -> List[str]:
    """A run's config files: ``configs``, the bundle's size overlay of the budget (``configs/cpu.json`` or
    ``configs/gpu.json``) where the bundle has one, then the budget's own overlay for the bundle where it has one
    (:func:`cmrssl.study.budgets.budget_overlay`, an absolute path)."""
    budget = BUDGETS[budget_name]
    size = config_files(cpu=budget.get("overlay") == "cpu", gpu=budget.get("overlay") == "gpu")
    own = budget_overlay(budget_name, bundle)
    return list(configs) + [name for name in size if (bundle / name).is_file()] + ([str(own)] if own else [])


def setting(bundle: Path, configs: Sequence[str], options: Sequence[str], name: str):
    """The value ``name`` (``a#b`` for a nested key) takes in a run of ``bundle``: the last ``--name`` of
    ``options``, else what the merged ``configs`` say."""
    from monai.bundle import ConfigParser

    override = option(options, name)
    if override is not None:
        try:
            return json.loads(override)
        except ValueError:
            return override
    return ConfigParser(_merged_configs(bundle, tuple(configs))).get(name)


@functools.lru_cache(maxsize=None)
def _merged_configs(bundle: Path, configs: tuple) -> dict:
    """The merged config files of a run, read once per plan (every step of a kind shares them)."""
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_files([str(bundle / c) for c in configs])


def iterations(bundle: Path, configs: Sequence[str], options: Sequence[str], records: int) -> int:
    """``max_epochs`` x ``epoch_length``, or x one pass over ``records`` in batches of ``frames_per_batch``."""
    epochs = int(setting(bundle, configs, options, "max_epochs"))
    length = setting(bundle, configs, options, "epoch_length")
    per_batch = int(setting(bundle, configs, options, "frames_per_batch"))
    return epochs * (int(length) if length else math.ceil(records / per_batch))


def ranking_iterations(bundle: Path, configs: Sequence[str], options: Sequence[str]) -> int:
    """A ranking training's ``max_epochs`` x ``rounds_per_epoch`` rounds of ``supervised_steps`` and ``ranking_steps``
    iterations; 0 (unknown until run) when the rounds per epoch follow the labelled count (the bundle's default)."""
    rounds = setting(bundle, configs, options, "rounds_per_epoch")
    if not isinstance(rounds, int):
        return 0
    steps = int(setting(bundle, configs, options, "supervised_steps")) + int(
        setting(bundle, configs, options, "ranking_steps"))
    return int(setting(bundle, configs, options, "max_epochs")) * rounds * steps


def plan(repo: Repository, out: Path, split: dict, budget_name: str, arms: Sequence[str], labelled: Sequence,
         seeds: Sequence[int], recorded: AbstractSet[Tuple[str, str, int]] = frozenset()) -> List[Step]:
    """The steps of the study in order: data and pretraining (once per method), then per arm, labelled count and
    seed a fine-tune and its evaluation. Runs in ``recorded`` (:func:`run_key`; a ledger's rows of this budget)
    get no steps, and a pretraining only one of its fine-tunes still needs."""
    budget = BUDGETS[budget_name]
    methods = pretraining_methods(repo)
    datalist = split["datalists"]["acdc"]
    unlabelled = split["datalists"]["unlabelled"]
    pool = len(split["labelled_pool"])
    wanted = [(arm, n, seed) for arm in arms for n in labelled for seed in seeds
              if run_key(arm, n, seed) not in recorded]
    steps: List[Step] = []
    pretrained: Dict[str, Path] = {}
    for arm, _, _ in wanted:
        method, _ = arm_parts(arm)
        if method is None or method in pretrained:
            continue
        spec, folder = methods[method], out / "pretrain" / method
        checkpoint = folder / f"{method}.pt"
        if method == "position":
            steps += position_data_steps(repo, out, budget)
            source = ["--datalist", str(out / "data" / "position" / "datalist.json")]
        else:
            source = ["--datalist", unlabelled]
        configs = run_configs(budget_name, spec["bundle"], spec["configs"])
        steps.append(Step(
            f"pretrain {method}", folder,
            [bundle_command(configs) + ["--bundle_root", str(spec["bundle"]), *source, "--checkpoint", str(checkpoint),
                                        "--output_dir", str(folder / "runs")]],
            checkpoint, spec["bundle"], "pretrain", checkpoint=checkpoint,
            iterations=iterations(spec["bundle"], configs, [], split["unlabelled_pool"]["records"])))
        pretrained[method] = checkpoint
    seg = repo.segmentation
    for arm, n, seed in wanted:
        method, mode = arm_parts(arm)
        folder = out / "runs" / arm / f"n{n}_seed{seed}"
        count = "0" if n == "all" else str(n)
        meta = {"arm": arm, "labelled": n, "seed": seed}
        if mode == "ranking":
            cines = split["datalists"]["extra_cines"] if split["unlabelled_pool"].get("extra_records") else ""
            steps += ranking_steps(repo, folder, datalist, cines, count, seed, budget_name, meta)
            continue
        options = ["--datalist", datalist, "--num_labelled_subjects", count, "--seed", str(seed)]
        if budget.get("validation_per_group"):  # validated to watch the curve; the last epoch's model is kept
            options += ["--select_on_validation", "false"]
        if method is not None:
            options += ["--pretrained_checkpoint", str(pretrained[method]), "--finetune_mode", mode]
            if mode == "multitask" and method == "position":
                options += ["--multitask_schedule", "alternate", "--pretext_datalist",
                            str(out / "data" / "position" / "datalist.json")]
        checkpoint = folder / "train" / "model.pt"
        n_frames = 2 * (pool if n == "all" else int(n))
        train_configs = run_configs(budget_name, seg, config_files("train"))
        steps.append(Step(f"train {arm} n={n} seed {seed}", folder, [
            bundle_command(train_configs) + ["--bundle_root", str(seg), *options, "--output_dir", str(folder / "train")]],
            checkpoint, seg, "train", checkpoint=checkpoint,
            iterations=iterations(seg, train_configs, [], n_frames), meta={**meta, "overrides": options}))
        steps.append(Step(f"evaluate {arm} n={n} seed {seed}", folder, [
            bundle_command(run_configs(budget_name, seg, config_files("train", "evaluate")))
            + ["--bundle_root", str(seg), "--datalist", datalist, "--checkpoint", str(checkpoint),
               "--output_dir", str(folder / "eval")]],
            folder / "eval" / "summary.json", seg, "eval", meta=meta))
    return steps


def position_data_steps(repo: Repository, out: Path, budget: dict) -> List[Step]:
    """Phantom cohort -> datalist -> anatomical-position labels, through the tools' command lines."""
    data = out / "data"
    cohort, index, labels = data / "phantom", data / "phantom_datalist.json", data / "position"
    python = [sys.executable]
    return [
        Step("phantom cohort", data, [python + [str(repo.tool("phantom")), "--out", str(cohort),
                                                "--subjects", str(budget["phantom_subjects"])]],
             cohort / "cohort.json", repo.root, "data"),
        Step("phantom datalist", data, [python + [str(repo.tool("index")), "phantom", str(cohort),
                                                  "--datalist", str(index), "--fractions", "1.0,0.0,0.0"]],
             index, repo.root, "data"),
        Step("position labels", data, [python + [str(repo.tool("position_labels")), str(index),
                                                 "--out", str(labels)]],
             labels / "datalist.json", repo.root, "data"),
    ]


def ranking_steps(repo: Repository, folder: Path, datalist: str, unlabelled: str, count: str, seed: int,
                  budget_name: str, meta: dict) -> List[Step]:
    """The ranking arm: ``cmr_ranking_ssl`` (its segmentation U-Net, the labelled frames with the ranking terms on
    the pool's other studies and the extra cines) trained and evaluated; its evaluation scores the masks as the
    segmentation bundle's does, so the arm has every column of the tables."""
    ranking = repo.ranking
    checkpoint = folder / "train" / "model.pt"
    options = ["--datalist", datalist, "--unlabelled_datalists", json.dumps([unlabelled] if unlabelled else []),
               "--seed", str(seed), "--num_labelled_subjects", count]
    train_configs = run_configs(budget_name, ranking, config_files("train"))
    return [
        Step(f"train ranking n={meta['labelled']} seed {seed}", folder,
             [bundle_command(train_configs)
              + ["--bundle_root", str(ranking), *options, "--output_dir", str(folder / "train")]],
             checkpoint, ranking, "train", checkpoint=checkpoint,
             iterations=ranking_iterations(ranking, train_configs, options), meta={**meta, "overrides": options}),
        Step(f"evaluate ranking n={meta['labelled']} seed {seed}", folder,
             [bundle_command(run_configs(budget_name, ranking, config_files("train", "evaluate")))
              + ["--bundle_root", str(ranking), "--datalist", datalist, "--checkpoint", str(checkpoint),
                 "--output_dir", str(folder / "eval")]],
             folder / "eval" / "summary.json", ranking, "eval", meta=meta),
    ]
