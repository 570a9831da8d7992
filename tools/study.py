"""What does self-supervision buy with N labelled subjects? One command runs the comparison on ACDC.

    python tools/study.py --data ../shared/data/acdc/training --out results/study --budget small
        [--methods scratch,mim_all] [--labelled 1,5,all] [--seeds 0,1] [--extra_unlabelled CINE,...]
        [--eval_per_group 4] [--dry_run]

(``make study`` runs the small budget on ``../shared/data``.) Every training and evaluation is a
``python -m monai.bundle run`` of a bundle of this repository with command-line overrides, as a user
would type it; the tool only composes them, runs them one after another and tabulates.

Steps:

1. **Split** (``OUT/split.json``, reused): ACDC's patients grouped by ``Info.cfg``'s ``Group``; per group
   the ``--eval_per_group`` highest-numbered patients form the untouched evaluation set (with 100
   patients: 017-020, 037-040, 057-060, 077-080, 097-100), the rest is the labelled pool. The unlabelled
   pretraining pool holds the images of every pool patient (labels never read), each ``patientNNN_4d``
   cine of a pool patient, frame by frame, and the ``--extra_unlabelled`` cines (the Sunnybrook series).
   ``OUT/data/acdc/`` holds the canonical labels and datalist (``tools/index.py acdc`` does the same),
   ``OUT/data/unlabelled.json`` the pretraining datalist.
2. **Pretraining**, once per method and shared by every fine-tune that uses it
   (``OUT/pretrain/<method>/``): ``cmr_ssp_pretraining`` with ``configs/<method>.json`` (SimCLR, PCL,
   DINO, MIM); ``cmr_position_ssl`` (anatomical position) on a phantom cohort the tool makes with
   ``tools/phantom.py``, ``tools/index.py phantom`` and ``tools/position_labels.py``, since ACDC holds
   no long-axis views.
3. **Fine-tuning** of ``cmr_unet_segmentation`` per arm (``scratch``, ``<method>_all``,
   ``<method>_decoder``, and ``<method>_multitask`` for the pixel-wise pretext heads: MIM, position),
   labelled count N and seed (``--num_labelled_subjects N --seed S``: the seed draws the subjects, and
   the draw is nested, the 1 among the 2 among the 5 ...), then its ``configs/evaluate.json`` on the
   evaluation set (``OUT/runs/<arm>/n<N>_seed<S>/{train,eval}``). The ``ranking`` arm trains and
   evaluates ``cmr_ranking_ssl`` (LV volumes regressed directly): volume columns only.
4. **Tables**: ``OUT/runs.csv`` (one row per fine-tune: overrides, seed, subjects, wall times, scores),
   ``OUT/table.md`` (Dice per structure in the layout of Bai et al. 2019 Table 1: mean +- SD over
   seeds, best per row in bold, a paired Wilcoxon test against scratch; then HD95 and the clinical
   numbers) and ``OUT/dice_vs_labelled.png`` (one line per arm, SD band).

Resuming: a step is done when its output exists (a checkpoint, an evaluation's ``summary.json``; both are
written whole, under a temporary name first) and is never redone; an interrupted training continues from
its last epoch; one stopped before its first checkpoint starts over. Stop with Ctrl-C and run the same
command again. ``--budget`` and ``--data`` are fixed per output folder (``OUT/study.json``); more
methods, labelled counts or seeds may be added later. ``--dry_run`` prints the plan (runs, commands,
and the time they take at iteration rates measured on this machine's device) and writes nothing.

Budgets (:data:`BUDGETS`): ``small`` fits the 2-core CPU this project is developed on in about 90 minutes
(two arms, N in {1, 5, all}, two seeds, CPU-sized network and schedules: see ``docs/study.md``); ``full``
runs the bundles at the papers' sizes (``configs/gpu.json``) and schedules, every arm, N in {1, 2, 5, 10, all}
and three seeds: a GPU job.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import fire
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.bundle_configs import config_files, method_overlays  # noqa: E402
from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.io.atomic import atomic_file, check_not_input  # noqa: E402
from cmrssl.io.run_state import LAST_CHECKPOINT, partial_dir  # noqa: E402

BUNDLES = REPO_ROOT / "bundles"
SEG = BUNDLES / "cmr_unet_segmentation"
SSP = BUNDLES / "cmr_ssp_pretraining"
POSITION = BUNDLES / "cmr_position_ssl"
RANKING = BUNDLES / "cmr_ranking_ssl"
STRUCTURES = (("lv_cavity", "LV cavity"), ("lv_myocardium", "LV myocardium"), ("rv_cavity", "RV cavity"))


def _say(message: str) -> None:
    print(f"[study] {message}", flush=True)


# --------------------------------------------------------------------------- arms, read from the bundles


def pretraining_methods() -> Dict[str, dict]:
    """``{method: {"bundle", "configs", "label", "pixelwise"}}``: every method overlay of cmr_ssp_pretraining
    (``cmrssl.bundle_configs.method_overlays``: a config with a ``method_name``), and position.

    ``pixelwise``: the pretext head predicts per pixel (MIM's reconstruction decoder, position's
    10-class map), so ``--finetune_mode multitask`` can keep it (cmrssl.networks.checkpoint).
    """
    methods = {}
    for name, overlay in method_overlays(SSP).items():
        saved = overlay["config"].get("method", {}).get("saved_parts", ["encoder"])
        methods[name] = {"bundle": SSP, "configs": config_files("train", overlay["path"].stem), "label": overlay["label"],
                         "pixelwise": "decoder" in saved}
    methods["position"] = {"bundle": POSITION, "configs": config_files("train"), "label": "Position", "pixelwise": True}
    return methods


def all_arms() -> List[str]:
    """scratch, then per method ``_all``, ``_decoder`` (and ``_multitask`` for pixel-wise heads), then ranking."""
    arms = ["scratch"]
    for method, spec in pretraining_methods().items():
        arms += [f"{method}_all", f"{method}_decoder"] + ([f"{method}_multitask"] if spec["pixelwise"] else [])
    return arms + ["ranking"]


def arm_parts(arm: str) -> tuple:
    """``mim_all`` -> ("mim", "all"); ``scratch`` -> (None, "scratch"); ``ranking`` -> (None, "ranking")."""
    if arm in ("scratch", "ranking"):
        return None, arm
    method, _, mode = arm.rpartition("_")
    return method, mode


def arm_label(arm: str) -> str:
    """Bai et al.'s names: Scratch, SSL(MIM)+All, SSL(MIM)+Decoder, SSL(MIM)+MultiTask."""
    method, mode = arm_parts(arm)
    if method is None:
        return {"scratch": "Scratch", "ranking": "Ranking (volumes)"}[arm]
    label = pretraining_methods().get(method, {}).get("label", method)
    return f"SSL({label})+{ {'all': 'All', 'decoder': 'Decoder', 'multitask': 'MultiTask'}[mode]}"


# --------------------------------------------------------------------------- budgets

#: Per budget: arms, labelled counts, seeds; ``overlay``: every bundle runs with its ``configs/cpu.json`` (the
#: CPU size) or ``configs/gpu.json`` (the papers' network and grid) where it has one (``cmrssl.bundle_configs``);
#: the overrides of every network
#: (``network``), of the fine-tuning (``finetune``: ``--max_epochs`` x ``--epoch_length`` iterations whatever
#: N is, so that arms and counts get the same training), of pretraining (``pretrain``: all methods;
#: ``pretrain_<method>``: one) and of the ranking bundle. ``eval`` is added to every segmentation evaluation.
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


def _split_list(value, cast=str, option: str = "", spaces: bool = True) -> List:
    """``"a,b"``, ``"a b"`` (unless not ``spaces``: paths), ``("a", "b")`` or ``7`` (as fire hands them over) -> a list.

    Raises:
        ValueError: an item ``cast`` refuses, naming ``option``.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    parts = [part.strip() for item in items for part in (str(item).replace(",", " ").split() if spaces
                                                         else str(item).split(",")) if part.strip()]
    try:
        return [cast(part) for part in parts]
    except ValueError:
        raise ValueError(f"{option or 'a list option'} takes {'whole numbers' if cast is int else 'values'} "
                         f"separated by commas, e.g. 0,1; got {value!r}") from None


def _no_repeats(option: str, values: Sequence) -> List:
    """``values`` when none is given twice: a repeated seed or count would run again and count twice in the tables."""
    repeated = sorted({str(v) for v in values if list(map(str, values)).count(str(v)) > 1})
    if repeated:
        raise ValueError(f"{option} gives {', '.join(repeated)} more than once ({','.join(map(str, values))}); "
                         "each run is made once and counted once: list each value once")
    return list(values)


def check_labelled_counts(counts: Sequence, pool: int) -> None:
    """Refuse a labelled count larger than the labelled pool (before any work; the bundle would refuse it later)."""
    too_many = [n for n in counts if n != "all" and int(n) > pool]
    if too_many:
        raise ValueError(f"--labelled {','.join(map(str, too_many))}: the labelled pool holds {pool} subjects (the "
                         f"patients not held out for evaluation); give at most {pool}, or 'all'")


def _labelled(value) -> List:
    counts = []
    for item in _split_list(value) or [value]:
        if item.lower() == "all":
            counts.append("all")
        elif item.isdigit() and int(item) > 0:
            counts.append(int(item))
        else:
            raise ValueError(f"--labelled takes positive counts and 'all', e.g. 1,5,all; got {item!r}")
    return counts


# --------------------------------------------------------------------------- split and data


def make_split(data: Path, eval_per_group: int) -> dict:
    """The fixed split of an ACDC root: per ``Group`` the highest-numbered patients are held out."""
    from cmrssl.data.acdc import find_acdc_patients, read_info_cfg

    groups: Dict[str, List[str]] = {}
    for folder in find_acdc_patients(data):
        group = read_info_cfg(folder / "Info.cfg").get("Group")
        if not group:
            raise ValueError(f"{folder / 'Info.cfg'}: no 'Group:' line; the split is stratified by group")
        groups.setdefault(group, []).append(folder.name)
    evaluation, pool = [], []
    for group, patients in sorted(groups.items()):
        if len(patients) <= eval_per_group:
            raise ValueError(f"{data}: group {group} has {len(patients)} patients, too few to hold out "
                             f"{eval_per_group} (--eval_per_group) and keep any for training")
        evaluation += patients[-eval_per_group:]
        pool += patients[:-eval_per_group]
    return {"rule": f"per Info.cfg group, the {eval_per_group} highest-numbered patients are the evaluation set",
            "groups": {g: len(p) for g, p in sorted(groups.items())},
            "evaluation": sorted(evaluation), "labelled_pool": sorted(pool)}


def _cine_frames(path: str) -> int:
    from cmrssl.io.reader import read_cine

    return int(read_cine(path).pixels.shape[0])


def prepare_data(out: Path, data: Path, eval_per_group: int, extra_unlabelled: Sequence[str]) -> dict:
    """split.json, the ACDC datalist (training: pool, test: evaluation) and the unlabelled datalist; reused."""
    from cmrssl.data.acdc import index_acdc

    split_path = out / "split.json"
    if split_path.exists():
        return json.loads(split_path.read_text())
    split = make_split(data, eval_per_group)
    acdc_dir = out / "data" / "acdc"
    shutil.rmtree(out / "data", ignore_errors=True)  # only a run that died before split.json left this
    _say(f"indexing {data}: {len(split['labelled_pool'])} pool and {len(split['evaluation'])} evaluation patients")
    datalist = index_acdc(data, acdc_dir, subjects={"training": split["labelled_pool"], "test": split["evaluation"]})
    records, cines = [], []
    for record in datalist["training"]:  # the images only: the labels of the pool are never read here
        records.append({"image": record["image"], "subject": record["subject"], "frame_index": record["frame_index"]})
        if record.get("cine") and record["cine"] not in cines:
            cines.append(record["cine"])
    extra = [str(Path(c).resolve()) for c in extra_unlabelled]
    extra_records = []
    for cine in cines + extra:
        frames = _cine_frames(cine)
        name = Path(cine).name.split(".")[0]
        cine_records = [{"image": cine, "subject": name, "frame_index": t} for t in range(frames)]
        records += cine_records
        if cine in extra:  # the ranking bundle's extra pool (a pool patient's cine is in its ACDC study already)
            extra_records += [dict(r, cine=cine) for r in cine_records]
    cines += extra
    split["unlabelled_pool"] = {"acdc_frames": len(datalist["training"]), "cines": cines,
                                "records": len(records), "extra_records": len(extra_records)}
    split["datalists"] = {"acdc": str(acdc_dir / "datalist.json"), "unlabelled": str(out / "data" / "unlabelled.json"),
                          "extra_cines": str(out / "data" / "extra_cines.json")}
    with atomic_file(out / "data" / "unlabelled.json") as tmp:
        tmp.write_text(json.dumps({"training": records}, indent=1))
    with atomic_file(out / "data" / "extra_cines.json") as tmp:
        tmp.write_text(json.dumps({"training": extra_records}, indent=1))
    with atomic_file(split_path) as tmp:
        tmp.write_text(json.dumps(split, indent=2))
    return split


# --------------------------------------------------------------------------- the plan


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


def _bundle(configs: Sequence[str]) -> List[str]:
    files = configs[0] if len(configs) == 1 else json.dumps(list(configs), separators=(",", ":"))
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]


def _option(options: Sequence[str], name: str, default=None):
    """The value of ``--name`` in an override list (the last one wins)."""
    value = default
    for key, item in zip(options[::2], options[1::2]):
        if key == f"--{name}":
            value = item
    return value


def _configs(budget: dict, bundle: Path, configs: Sequence[str]) -> List[str]:
    """A run's config files: ``configs``, then the bundle's size overlay of the budget (``configs/cpu.json`` or
    ``configs/gpu.json``) where the bundle has one."""
    overlay = config_files(cpu=budget.get("overlay") == "cpu", gpu=budget.get("overlay") == "gpu")
    return list(configs) + [name for name in overlay if (bundle / name).is_file()]


def _setting(bundle: Path, configs: Sequence[str], options: Sequence[str], name: str):
    """The value ``name`` (``a#b`` for a nested key) takes in a run of ``bundle``: the last ``--name`` of
    ``options``, else what the merged ``configs`` say."""
    from monai.bundle import ConfigParser

    override = _option(options, name)
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


def _iterations(bundle: Path, configs: Sequence[str], options: Sequence[str], records: int) -> int:
    """``max_epochs`` x ``epoch_length``, or x one pass over ``records`` in batches of ``frames_per_batch``."""
    epochs = int(_setting(bundle, configs, options, "max_epochs"))
    length = _setting(bundle, configs, options, "epoch_length")
    per_batch = int(_setting(bundle, configs, options, "frames_per_batch"))
    return epochs * (int(length) if length else math.ceil(records / per_batch))


def plan(out: Path, split: dict, budget_name: str, arms: Sequence[str], labelled: Sequence, seeds: Sequence[int]
         ) -> List[Step]:
    budget = BUDGETS[budget_name]
    methods = pretraining_methods()
    datalist = split["datalists"]["acdc"]
    unlabelled = split["datalists"]["unlabelled"]
    pool = len(split["labelled_pool"])
    steps: List[Step] = []
    pretrained: Dict[str, Path] = {}
    for arm in arms:
        method, _ = arm_parts(arm)
        if method is None or method in pretrained:
            continue
        spec, folder = methods[method], out / "pretrain" / method
        checkpoint = folder / f"{method}.pt"
        extra = budget["pretrain"] + budget.get(f"pretrain_{method}", [])
        if method == "position":
            steps += _position_data_steps(out, budget)
            extra = budget.get("pretrain_position", [])
            source = ["--datalist", str(out / "data" / "position" / "datalist.json")]
        else:
            source = ["--datalist", unlabelled]
        configs = _configs(budget, spec["bundle"], spec["configs"])
        steps.append(Step(
            f"pretrain {method}", folder,
            [_bundle(configs) + ["--bundle_root", str(spec["bundle"]), *source, "--checkpoint", str(checkpoint),
                                 "--output_dir", str(folder / "runs"), *budget["network"], *extra]],
            checkpoint, spec["bundle"], "pretrain", checkpoint=checkpoint,
            iterations=_iterations(spec["bundle"], configs, extra, split["unlabelled_pool"]["records"])))
        pretrained[method] = checkpoint
    for arm in arms:
        method, mode = arm_parts(arm)
        for n in labelled:
            for seed in seeds:
                folder = out / "runs" / arm / f"n{n}_seed{seed}"
                count = "0" if n == "all" else str(n)
                meta = {"arm": arm, "labelled": n, "seed": seed}
                if mode == "ranking":
                    cines = split["datalists"]["extra_cines"] if split["unlabelled_pool"].get("extra_records") else ""
                    steps += _ranking_steps(folder, datalist, cines, count, seed, budget, meta)
                    continue
                options = ["--datalist", datalist, "--num_labelled_subjects", count, "--seed", str(seed),
                           *budget["network"], *budget["finetune"]]
                if method is not None:
                    options += ["--pretrained_checkpoint", str(pretrained[method]), "--finetune_mode", mode]
                    if mode == "multitask" and method == "position":
                        options += ["--multitask_schedule", "alternate", "--pretext_datalist",
                                    str(out / "data" / "position" / "datalist.json")]
                checkpoint = folder / "train" / "model.pt"
                n_frames = 2 * (pool if n == "all" else int(n))
                train_configs = _configs(budget, SEG, config_files("train"))
                steps.append(Step(f"train {arm} n={n} seed {seed}", folder, [
                    _bundle(train_configs) + ["--bundle_root", str(SEG), *options,
                                              "--output_dir", str(folder / "train")]],
                    checkpoint, SEG, "train", checkpoint=checkpoint,
                    iterations=_iterations(SEG, train_configs, budget["finetune"], n_frames),
                    meta={**meta, "overrides": options}))
                steps.append(Step(f"evaluate {arm} n={n} seed {seed}", folder, [
                    _bundle(_configs(budget, SEG, config_files("train", "evaluate")))
                    + ["--bundle_root", str(SEG), "--datalist", datalist, "--checkpoint", str(checkpoint),
                       *budget["network"], *budget["eval"], "--output_dir", str(folder / "eval")]],
                    folder / "eval" / "summary.json", SEG, "eval", meta=meta))
    return steps


def _position_data_steps(out: Path, budget: dict) -> List[Step]:
    """Phantom cohort -> datalist -> anatomical-position labels, through the tools' command lines."""
    data = out / "data"
    cohort, index, labels = data / "phantom", data / "phantom_datalist.json", data / "position"
    python = [sys.executable]
    return [
        Step("phantom cohort", data, [python + [str(REPO_ROOT / "tools" / "phantom.py"), "--out", str(cohort),
                                                "--subjects", str(budget["phantom_subjects"])]],
             cohort / "cohort.json", REPO_ROOT, "data"),
        Step("phantom datalist", data, [python + [str(REPO_ROOT / "tools" / "index.py"), "phantom", str(cohort),
                                                  "--datalist", str(index), "--fractions", "1.0,0.0,0.0"]],
             index, REPO_ROOT, "data"),
        Step("position labels", data, [python + [str(REPO_ROOT / "tools" / "position_labels.py"), str(index),
                                                 "--out", str(labels)]],
             labels / "datalist.json", REPO_ROOT, "data"),
    ]


def _ranking_steps(folder: Path, datalist: str, unlabelled: str, count: str, seed: int, budget: dict,
                   meta: dict) -> List[Step]:
    checkpoint = folder / "train" / "model.pt"
    options = ["--datalist", datalist, "--unlabelled_datalists", json.dumps([unlabelled] if unlabelled else []),
               "--seed", str(seed),
               "--num_labelled_subjects", count, *budget["ranking"]]
    return [
        Step(f"train ranking n={meta['labelled']} seed {seed}", folder,
             [_bundle(_configs(budget, RANKING, config_files("train"))) + ["--bundle_root", str(RANKING), *options,
                                                                  "--output_dir", str(folder / "train")]],
             checkpoint, RANKING, "train", checkpoint=checkpoint, meta={**meta, "overrides": options}),
        Step(f"evaluate ranking n={meta['labelled']} seed {seed}", folder,
             [_bundle(_configs(budget, RANKING, config_files("train", "evaluate")))
              + ["--bundle_root", str(RANKING), "--datalist", datalist, "--checkpoint", str(checkpoint),
                 *budget["ranking"], "--output_dir", str(folder / "eval")]],
             folder / "eval" / "summary.json", RANKING, "eval", meta=meta),
    ]


# --------------------------------------------------------------------------- running


def _restart(step: Step) -> tuple:
    """Options and a note for a training that was interrupted: resume it, or start it over."""
    if step.checkpoint is None or step.done_file.exists():
        return [], ""
    unfinished = partial_dir(step.checkpoint)
    if (unfinished / LAST_CHECKPOINT).is_file():
        return ["--resume", "true"], "resumes the interrupted training from its last epoch"
    if unfinished.exists():  # stopped before its first checkpoint: nothing worth keeping
        return ["--overwrite", "true"], "starts over (interrupted before its first checkpoint)"
    return [], ""


class StepFailed(RuntimeError):
    """A bundle run or data command exited with an error (its log is named)."""


def _run_step(step: Step) -> float:
    """Run a step's commands (log beside its outputs); resume or restart an interrupted training."""
    step.folder.mkdir(parents=True, exist_ok=True)
    commands = [list(c) for c in step.commands]
    commands[-1] += _restart(step)[0]
    log = step.folder / (step.name.replace(" ", "_") + ".log" if step.kind == "data" else f"{step.kind}.log")
    started = time.perf_counter()
    with open(log, "a") as handle:
        for command in commands:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            completed = subprocess.run(command, cwd=step.cwd, stdout=handle, stderr=subprocess.STDOUT)
            if completed.returncode != 0:
                tail = log.read_text().splitlines()[-15:]
                raise StepFailed(f"{step.name} failed (exit {completed.returncode}); log {log}:\n" + "\n".join(tail))
    if not step.done_file.exists():
        raise StepFailed(f"{step.name}: finished without writing {step.done_file} (log {log})")
    return time.perf_counter() - started


def _timings(out: Path) -> dict:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _estimate(step: Step, timings: dict, budget_name: str) -> float:
    """Seconds a step will take: the mean of finished steps of its kind (per iteration for trainings)."""
    same = [t for t in timings.values() if t["kind"] == step.kind]
    if step.kind in ("train", "pretrain"):
        rates = [t["seconds"] / t["iterations"] for t in same if t.get("iterations")]
        if rates and step.iterations:
            return float(np.mean(rates)) * step.iterations
    elif same:
        return float(np.mean([t["seconds"] for t in same]))
    return float(BUDGETS[budget_name]["nominal_seconds"][step.kind])


def _hms(seconds: float) -> str:
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def execute(out: Path, steps: Sequence[Step], budget_name: str) -> None:
    todo = [s for s in steps if not s.done_file.exists()]
    _say(f"{len(steps) - len(todo)} of {len(steps)} steps already done, {len(todo)} to run")
    started = time.perf_counter()
    for number, step in enumerate(todo, start=1):
        timings = _timings(out)
        left = sum(_estimate(s, timings, budget_name) for s in todo[number - 1:])
        _say(f"step {number} of {len(todo)}: {step.name} (elapsed {_hms(time.perf_counter() - started)}, "
             f"about {_hms(left)} left)")
        seconds = _run_step(step)
        timings[step.name] = {"kind": step.kind, "seconds": round(seconds, 1), "iterations": step.iterations}
        with atomic_file(out / "timings.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(timings, indent=1))
        if step.kind == "eval":
            write_results(out, steps)  # the tables grow as the runs finish
    _say(f"all {len(steps)} steps done in {_hms(time.perf_counter() - started)}")


# --------------------------------------------------------------------------- results


def _per_subject_dice(eval_dir: Path) -> Dict[str, Dict[str, float]]:
    """``{structure: {subject: mean Dice over its frames}}`` from an evaluation's metrics.csv."""
    values: Dict[str, Dict[str, list]] = {key: {} for key, _ in STRUCTURES}
    with open(eval_dir / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            for key, _ in STRUCTURES:
                if row.get(f"dice_{key}") not in (None, ""):
                    values[key].setdefault(row["subject"], []).append(float(row[f"dice_{key}"]))
    return {key: {s: float(np.mean(v)) for s, v in subjects.items()} for key, subjects in values.items()}


def run_rows(out: Path, steps: Sequence[Step]) -> List[dict]:
    """One row per finished fine-tune (its evaluation's summary.json exists)."""
    from cmrssl.data.subsets import choose_subjects

    pool = json.loads((out / "split.json").read_text())["labelled_pool"]
    timings = _timings(out)
    trains = {s.folder: s for s in steps if s.kind == "train"}
    rows = []
    for step in steps:
        if step.kind != "eval" or not step.done_file.exists():
            continue
        summary = json.loads(step.done_file.read_text())
        train = trains[step.folder]
        row = {"arm": step.meta["arm"], "labelled": step.meta["labelled"], "seed": step.meta["seed"],
               "train_seconds": timings.get(train.name, {}).get("seconds", ""),
               "eval_seconds": timings.get(step.name, {}).get("seconds", ""),
               "overrides": " ".join(train.meta["overrides"])}
        if "segmentation" in summary:
            for key, _ in STRUCTURES:
                row[f"dice_{key}"] = summary["segmentation"][key]["dice"]["mean"]
                row[f"hd95_mm_{key}"] = summary["segmentation"][key]["hd95_mm"]["mean"]
            function = summary.get("function", {})
            volumes = {name: function.get(f"lv_{name}", {}) for name in ("edv_ml", "esv_ml", "ef_percent", "mass_g")}
            row["frames_lv_cavity_lost"] = summary.get("quality", {}).get("frames_with_lv_cavity_dice_below_0.05", "")
        else:  # cmr_ranking_ssl
            volumes = summary.get("volumes", {})
        for name, stats in volumes.items():
            row[f"lv_{name}_mae"] = stats.get("mean_absolute_error", "")
            row[f"lv_{name}_bias"] = stats.get("mean_error", "")
        n = step.meta["labelled"]  # the bundle's own draw (cmrssl.data.subsets), recomputed
        row["labelled_subjects"] = "all" if n == "all" else " ".join(choose_subjects(pool, int(n), step.meta["seed"]))
        rows.append(row)
    return rows


def _mean_sd(values: Sequence[float], digits: int) -> str:
    values = [float(v) for v in values if v not in ("", None)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def paired_test(out: Path, arm: str, n, seeds: Sequence[int], structure: str) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p of an arm against scratch, over (seed, evaluation subject) pairs.

    Both runs of a pair share the seed, so the same labelled subjects; a pair is one held-out
    subject's Dice (mean over its ED and ES frames). None without scratch runs or with fewer than 6 pairs.
    """
    from scipy.stats import wilcoxon

    differences = []
    for seed in seeds:
        ours = out / "runs" / arm / f"n{n}_seed{seed}" / "eval"
        base = out / "runs" / "scratch" / f"n{n}_seed{seed}" / "eval"
        if not (ours / "metrics.csv").exists() or not (base / "metrics.csv").exists():
            continue
        a, b = _per_subject_dice(ours)[structure], _per_subject_dice(base)[structure]
        differences += [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if len(differences) < 6:
        return None
    if not any(differences):
        return 1.0
    return float(wilcoxon(differences).pvalue)


def _table(out: Path, rows: List[dict], arms: Sequence[str], labelled: Sequence, seeds: Sequence[int]) -> str:
    def cell_values(arm, n, column):
        return [r[column] for r in rows if r["arm"] == arm and str(r["labelled"]) == str(n) and r.get(column) != ""
                and column in r]

    seg_arms = [a for a in arms if a != "ranking"]
    lines = ["## Dice on the held-out subjects (mean ± SD over seeds; p: paired Wilcoxon test against scratch)", "",
             "| structure | labelled subjects | " + " | ".join(arm_label(a) for a in seg_arms) + " |",
             "|---|---|" + "---|" * len(seg_arms)]
    for key, name in STRUCTURES:
        for n in labelled:
            means = {a: np.mean(cell_values(a, n, f"dice_{key}")) for a in seg_arms if cell_values(a, n, f"dice_{key}")}
            best = max(means, key=means.get) if means else None
            cells = []
            for arm in seg_arms:
                text = _mean_sd(cell_values(arm, n, f"dice_{key}"), 3)
                if arm == best and len(means) > 1:
                    text = f"**{text}**"
                p = paired_test(out, arm, n, seeds, key) if arm != "scratch" and text != "-" else None
                cells.append(text + (f" (p {p:.2g})" if p is not None else ""))
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    columns = [("hd95_mm_lv_cavity", "HD95 LV cavity (mm)", 1), ("hd95_mm_lv_myocardium", "HD95 LV myocardium (mm)", 1),
               ("hd95_mm_rv_cavity", "HD95 RV cavity (mm)", 1), ("lv_edv_ml_mae", "LV EDV MAE (ml)", 1),
               ("lv_esv_ml_mae", "LV ESV MAE (ml)", 1), ("lv_ef_percent_mae", "LV EF MAE (%)", 1),
               ("lv_mass_g_bias", "LV mass bias (g)", 1),
               ("frames_lv_cavity_lost", "frames with LV cavity Dice < 0.05", 0)]
    lines += ["", "## Distances and clinical numbers (mean ± SD over seeds)", "",
              "| arm | labelled subjects | " + " | ".join(c[1] for c in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    for arm in arms:
        for n in labelled:
            if not cell_values(arm, n, "seed"):
                continue
            lines.append(f"| {arm_label(arm)} | {n} | "
                         + " | ".join(_mean_sd(cell_values(arm, n, c), d) for c, _, d in columns) + " |")
    seeds_done = sorted({r["seed"] for r in rows})
    lines += ["", f"Seeds: {', '.join(map(str, seeds_done))} (each seed also draws the labelled subjects). "
              f"'all' = the whole labelled pool. Runs: {len(rows)}; per-run numbers in runs.csv."]
    return "\n".join(lines) + "\n"


def _plot(out: Path, rows: List[dict], arms: Sequence[str], labelled: Sequence, pool: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    x_of = {n: (pool if n == "all" else int(n)) for n in labelled}
    for axis, (key, name) in zip(axes, STRUCTURES):
        for arm in [a for a in arms if a != "ranking"]:
            xs, means, sds = [], [], []
            for n in labelled:
                values = [r[f"dice_{key}"] for r in rows if r["arm"] == arm and str(r["labelled"]) == str(n)]
                if values:
                    xs.append(x_of[n])
                    means.append(np.mean(values))
                    sds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
            if xs:
                means, sds = np.array(means), np.array(sds)
                line, = axis.plot(xs, means, marker="o", label=arm_label(arm))
                axis.fill_between(xs, means - sds, means + sds, color=line.get_color(), alpha=0.2)
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(list(x_of.values()))
        axis.set_xticklabels([f"all ({pool})" if n == "all" else str(n) for n in labelled])
        axis.set_title(name)
        axis.set_xlabel("labelled subjects")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("mean Dice on held-out subjects")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_results(out: Path, steps: Sequence[Step]) -> List[dict]:
    """runs.csv, table.md and dice_vs_labelled.png from the finished runs (rewritten whole each time)."""
    rows = run_rows(out, steps)
    if not rows:
        return rows
    settings = json.loads((out / "study.json").read_text())
    split = json.loads((out / "split.json").read_text())
    arms = list(dict.fromkeys(s.meta["arm"] for s in steps if s.kind == "eval"))
    labelled = list(dict.fromkeys(s.meta["labelled"] for s in steps if s.kind == "eval"))
    seeds = sorted({s.meta["seed"] for s in steps if s.kind == "eval"})
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_file(out / "runs.csv", overwrite=True) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    header = (f"# What self-supervision buys with N labelled subjects (budget `{settings['budget']}`)\n\n"
              f"Evaluation: {len(split['evaluation'])} held-out ACDC subjects ({split['rule']}), ED and ES frames, "
              f"segmentation bundle's `configs/evaluate.json`. Labelled pool: {len(split['labelled_pool'])} "
              f"subjects.\n\n")
    with atomic_file(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(header + _table(out, rows, arms, labelled, seeds))
    if any(a != "ranking" for a in arms):
        _plot(out, rows, arms, labelled, len(split["labelled_pool"]), out / "dice_vs_labelled.png")
    return rows


# --------------------------------------------------------------------------- dry run


def measure_rates(budget: dict, repeats: int = 3) -> dict:
    """Seconds per training iteration of the fine-tuned U-Net at the budget's sizes, on this machine's device.

    A batch is ``frames_per_batch`` frames of 10 slices (ACDC's median stack), forward, loss and backward.
    """
    import torch

    from cmrssl.networks.unet import CMRUNet

    configs, options = _configs(budget, SEG, config_files("train")), [*budget["network"], *budget["finetune"]]
    channels = _setting(SEG, configs, options, "network_def#channels")
    patch = _setting(SEG, configs, options, "patch_size")
    frames = int(_setting(SEG, configs, options, "frames_per_batch"))
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    net = CMRUNet(1, 4, channels=channels).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3)
    batch = torch.randn(frames * 10, 1, *patch, device=device)
    target = torch.randint(0, 4, (frames * 10, *patch), device=device)

    def step():
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(batch), target).backward()
        optimiser.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"device": str(device), "seconds_per_iteration": (time.perf_counter() - started) / repeats,
            "batch": [frames * 10, 1, *patch]}


def print_plan(steps: Sequence[Step], budget: dict) -> None:
    for step in steps:
        status = "# done: " if step.done_file.exists() else ""
        flags, note = _restart(step)
        print(f"{status}[{step.kind}] {step.name}" + (f" ({note})" if note else ""))
        for command in step.commands[:-1] + [step.commands[-1] + flags]:
            print("    " + " ".join(command[1:]))
    rate = measure_rates(budget)
    iterations = sum(s.iterations for s in steps if s.kind in ("train", "pretrain") and not s.done_file.exists())
    evals = sum(1 for s in steps if s.kind == "eval" and not s.done_file.exists())
    seconds = iterations * rate["seconds_per_iteration"]
    print(f"\n{len(steps)} steps: {sum(s.kind == 'pretrain' for s in steps)} pretrainings, "
          f"{sum(s.kind == 'train' for s in steps)} trainings, {evals} evaluations to run; "
          f"{iterations} training iterations.")
    print(f"Measured on {rate['device']}: {rate['seconds_per_iteration']:.3f} s per iteration of the U-Net "
          f"(batch {rate['batch']}, forward + backward + step) -> about {seconds / 3600.0:.1f} hours of training "
          f"on this device, plus the evaluations (about 1-2 min each on a CPU). Pretraining iterations are "
          f"counted as U-Net iterations; two-view methods (SimCLR, PCL, DINO) cost about twice that.")


# --------------------------------------------------------------------------- command line


def main(data: str, out: str, *stray, budget: str = "small", methods=None, labelled=None, seeds=None,
         extra_unlabelled=(), eval_per_group: int = 4, dry_run: bool = False) -> None:
    """Run (or, with --dry_run, plan) the few-label study; see the module docstring."""
    if stray:  # fire hands a value after a list option's first (--seeds 0 1) to the next free parameter
        raise ValueError(f"unexpected argument(s) {' '.join(map(str, stray))}: a list option takes its values "
                         "separated by commas, e.g. --seeds 0,1 --labelled 1,5,all")
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    spec = BUDGETS[budget]
    known = all_arms()
    arms = _split_list(methods) if methods is not None else (known if spec["arms"] == "all" else list(spec["arms"]))
    if not arms:
        raise ValueError(f"--methods names no arm; known: {', '.join(known)}")
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; known: {', '.join(known)}")
    arms = _no_repeats("--methods", arms)
    if "scratch" not in arms and any(a != "ranking" for a in arms):
        arms = ["scratch"] + arms  # every comparison is against scratch
    counts = _no_repeats("--labelled", _labelled(labelled) if labelled is not None else list(spec["labelled"]))
    seed_list = _no_repeats("--seeds", _split_list(seeds, int, "--seeds") if seeds is not None
                            else list(spec["seeds"]))
    if any(seed < 0 for seed in seed_list):
        raise ValueError(f"--seeds must be whole numbers >= 0, got {','.join(map(str, seed_list))}")
    extra = _split_list(extra_unlabelled, spaces=False) if extra_unlabelled else []
    data_path, out_path = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    existing = next((p for p in (out_path, *out_path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--out {out_path}: {existing} is a file; the study writes a folder: give a new or empty "
                         "folder, or the folder of an earlier study to continue it")
    for cine in extra:
        if not Path(cine).exists():
            raise FileNotFoundError(f"--extra_unlabelled: {cine} does not exist")
    check_not_input(out_path, [data_path, *extra])
    if data_path in out_path.parents:
        raise ValueError(f"--out {out_path} lies inside --data {data_path}; the study writes nothing there")
    settings = {"budget": budget, "data": str(data_path), "eval_per_group": int(eval_per_group), "extra_unlabelled":
                [str(Path(c).resolve()) for c in extra]}
    record = out_path / "study.json"
    if record.exists() and json.loads(record.read_text()) != settings:
        raise ValueError(f"{out_path}: holds a study with {json.loads(record.read_text())}, not {settings}; "
                         "use another --out")
    # the split this study has (or will make): a labelled count must fit its pool, checked before any work
    earlier = out_path / "split.json"
    split = json.loads(earlier.read_text()) if record.exists() and earlier.exists() else None
    fresh = make_split(data_path, int(eval_per_group)) if split is None else None
    check_labelled_counts(counts, len((split or fresh)["labelled_pool"]))
    if dry_run:
        if split is None:
            split = fresh
            records = 2 * len(split["labelled_pool"])
            split["unlabelled_pool"] = {"records": records + sum(_cine_frames(c) for c in extra)}
            split["datalists"] = {"acdc": str(out_path / "data" / "acdc" / "datalist.json"),
                                  "unlabelled": str(out_path / "data" / "unlabelled.json")}
        print(f"split: {split['rule']}: evaluation {', '.join(split['evaluation'])}")
        print_plan(plan(out_path, split, budget, arms, counts, seed_list), spec)
        return
    if not record.exists() and out_path.is_dir() and any(out_path.iterdir()):
        # the study replaces its own data/ folder when it restarts: never in a folder it did not make
        raise ValueError(f"--out {out_path} holds files but no study.json; give an empty or new folder")
    if not record.exists():  # make_split above refused a folder that is not ACDC before anything was written
        out_path.mkdir(parents=True, exist_ok=True)
        with atomic_file(record) as tmp:
            tmp.write_text(json.dumps(settings, indent=2))
    split = prepare_data(out_path, data_path, int(eval_per_group), extra)
    steps = plan(out_path, split, budget, arms, counts, seed_list)
    execute(out_path, steps, budget)
    rows = write_results(out_path, steps)
    _say(f"{len(rows)} runs -> {out_path / 'runs.csv'}, {out_path / 'table.md'}, {out_path / 'dice_vs_labelled.png'}")


if __name__ == "__main__":
    try:
        with tool_errors("study", overwrite_option=False):  # a study resumes: it has no --overwrite
            fire.Fire(main)
    except StepFailed as failed:  # the study so far is kept: the same command resumes it
        print(f"study: error: {failed}", file=sys.stderr)
        sys.exit(3)
