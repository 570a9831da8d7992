"""What does self-supervision buy with N labelled subjects? One command runs the comparison on ACDC.

    python tools/study.py --data ../shared/data/acdc/training --out results/study --budget small
        [--methods scratch,mim_all] [--labelled 1,5,all] [--seeds 0,1] [--extra_unlabelled CINE,...]
        [--eval_per_group 4] [--ledger docs/study/ledger.csv] [--dry_run | --tables_only]

(``make study`` runs the small budget on ``../shared/data``.) Every training and evaluation is a
``python -m monai.bundle run`` of a bundle of this repository with command-line overrides, as a user
would type it; the tool only composes them, runs them one after another and tabulates. It is the
command line of :mod:`cmrssl.study`, which holds the split, plan, budgets, ledger, statistics and tables.

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
   evaluates ``cmr_ranking_ssl`` (its segmentation U-Net with the ranking terms on the unlabelled
   studies), scored as the segmentation bundle scores its masks.
4. **Ledger** (``--ledger CSV``, e.g. the committed ``docs/study/ledger.csv``): a row per finished
   fine-tune (budget and its config hash, arm, count, seed, subjects drawn, commit, iterations, wall
   times, scores, and each held-out subject's values). A run whose row the ledger already holds for
   the same budget and its arm's config hash (what the arm's runs load: ``cmrssl.study.budget_hash``)
   is not run again, and a pretraining only when a fine-tune still needs it,
   so the table can be completed over several machines: commit the ledger as it grows.
5. **Tables**: ``OUT/runs.csv`` (one row per fine-tune), ``OUT/table.md`` (Dice per structure in the
   layout of Bai et al. 2019 Table 1: mean +- SD over seeds, best per row in bold, and against scratch
   the mean difference over held-out subjects with its 95 % bootstrap interval and paired Wilcoxon p,
   one pair per subject; then HD95 counting a lost structure at the image diagonal, lost counts and the
   clinical numbers; then each arm's LV EDV / ESV / EF absolute errors paired against scratch's) and
   ``OUT/dice_vs_labelled.png`` (one line per arm, SD band). With ``--ledger``
   they hold every row of the ledger for this budget, arms, counts and seeds at the arms' hashes.
   ``--tables_only --ledger CSV`` writes these three files into ``--out`` from the ledger alone, running
   nothing (``docs/study/cpu/`` is made so).

Resuming: a step is done when its output exists (a checkpoint, an evaluation's ``summary.json``; both are
written whole, under a temporary name first) and is never redone; an interrupted training continues from
its last epoch; one stopped before its first checkpoint starts over. Stop with Ctrl-C and run the same
command again. ``--budget`` and ``--data`` are fixed per output folder (``OUT/study.json``); more
methods, labelled counts or seeds may be added later. ``--dry_run`` prints the plan (runs, commands,
and the time they take at iteration rates measured on this machine's device) and writes nothing.

Budgets (:data:`cmrssl.study.BUDGETS`): ``cpu`` trains every fine-tune to its plateau at a small network
and grid (about 12 min a fine-tune here; its table takes more than one session, which the ledger allows);
``small`` fits the 2-core CPU this project is developed on in about 90 minutes (two arms, N in {1, 5, all},
two seeds, CPU-sized network and short schedules: see ``docs/study.md``); ``full`` runs the bundles at the
papers' sizes (``configs/gpu.json``) and schedules, every arm, N in {1, 2, 5, 10, all} and three seeds: a GPU
job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Sequence

import fire

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.data.acdc import read_acdc_patient  # noqa: E402
from cmrssl.io.atomic import atomic_file, check_not_input  # noqa: E402
from cmrssl.study import (  # noqa: E402
    BUDGETS,
    Repository,
    StepFailed,
    all_arms,
    budget_hash,
    collect,
    commit_of,
    current,
    execute,
    make_split,
    measure_rates,
    plan,
    prepare_data,
    read_ledger,
    recorded,
    restart,
    run_key,
    set_aside_stale,
    stale_runs,
)
from cmrssl.study.split import cine_frames, say  # noqa: E402

REPO = Repository(REPO_ROOT)


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


def print_plan(steps, budget_name: str, skipped: int, stale: dict) -> None:
    """The steps with their commands; ``stale``: run folders a real run sets aside (:func:`stale_runs`)."""
    def to_run(step) -> bool:
        return step.folder in stale or not step.done_file.exists()

    for step in steps:
        status = "" if to_run(step) else "# done: "
        flags, note = ([], "") if step.folder in stale else restart(step)  # set aside: starts afresh
        if step.folder in stale and step.kind == "train":
            old, new = stale[step.folder]
            note = f"run again: made under config hash {old}, its arm's is now {new}; set aside as " \
                   f"{step.folder.name}.hash-{old}"
        print(f"{status}[{step.kind}] {step.name}" + (f" ({note})" if note else ""))
        for command in step.commands[:-1] + [step.commands[-1] + flags]:
            print("    " + " ".join(command[1:]))
    rate = measure_rates(REPO, budget_name)
    iterations = sum(s.iterations for s in steps if s.kind in ("train", "pretrain") and to_run(s))
    evals = sum(1 for s in steps if s.kind == "eval" and to_run(s))
    seconds = iterations * rate["seconds_per_iteration"]
    if skipped:
        print(f"\n{skipped} runs are in the ledger for this budget at their arms' config hashes: not planned.")
    print(f"\n{len(steps)} steps: {sum(s.kind == 'pretrain' for s in steps)} pretrainings, "
          f"{sum(s.kind == 'train' for s in steps)} trainings, {evals} evaluations to run; "
          f"{iterations} training iterations.")
    print(f"Measured on {rate['device']}: {rate['seconds_per_iteration']:.3f} s per iteration of the U-Net "
          f"(batch {rate['batch']}, forward + backward + step) -> about {seconds / 3600.0:.1f} hours of training "
          f"on this device, plus the evaluations (about 1-2 min each on a CPU). Pretraining iterations are "
          f"counted as U-Net iterations; two-view methods (SimCLR, PCL, DINO) cost about twice that.")


def main(data: str, out: str, *stray, budget: str = "small", methods=None, labelled=None, seeds=None,
         extra_unlabelled=(), eval_per_group: int = 4, ledger: str = "", dry_run: bool = False,
         tables_only: bool = False) -> None:
    """Run (or, with --dry_run, plan; with --tables_only, tabulate the ledger) the few-label study; see the module
    docstring."""
    if stray:  # fire hands a value after a list option's first (--seeds 0 1) to the next free parameter
        raise ValueError(f"unexpected argument(s) {' '.join(map(str, stray))}: a list option takes its values "
                         "separated by commas, e.g. --seeds 0,1 --labelled 1,5,all")
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    spec = BUDGETS[budget]
    known = all_arms(REPO)
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
    ledger_path = Path(ledger).expanduser().resolve() if ledger else None
    if ledger_path is not None and (ledger_path.is_dir() or ledger_path.suffix != ".csv"):
        raise ValueError(f"--ledger {ledger_path}: give a .csv file (it is made when absent)")
    if ledger_path is not None and data_path in ledger_path.parents:
        raise ValueError(f"--ledger {ledger_path} lies inside --data {data_path}; the study writes nothing there")
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
    validation_per_group = int(spec.get("validation_per_group", 0))
    fresh = make_split(data_path, int(eval_per_group), validation_per_group) if split is None else None
    check_labelled_counts(counts, len((split or fresh)["labelled_pool"]))
    config_hashes = {arm: budget_hash(REPO, budget, arm) for arm in arms}
    done = recorded(read_ledger(ledger_path), budget, config_hashes) if ledger_path is not None else set()
    if tables_only:  # the tables of what the ledger holds, into OUT; nothing is run, OUT holds no study
        if ledger_path is None or not ledger_path.exists():
            raise ValueError("--tables_only tabulates a ledger: give --ledger, an existing .csv file")
        wanted = {run_key(a, n, s) for a in arms for n in counts for s in seed_list}
        if not any(run_key(r["arm"], r["labelled"], r["seed"]) in wanted
                   for r in current(read_ledger(ledger_path), budget, config_hashes)):
            raise ValueError(f"--ledger {ledger_path} holds no run of budget {budget} for these arms, counts and "
                             "seeds at their present config hashes")
        out_path.mkdir(parents=True, exist_ok=True)
        rows = collect(out_path, [], split or fresh, settings, arms, counts, seed_list, config_hashes,
                       ledger=ledger_path, repo=REPO)
        say(f"{len(rows)} runs of the ledger -> {out_path / 'table.md'}, {out_path / 'runs.csv'}, "
            f"{out_path / 'dice_vs_labelled.png'}")
        return
    if dry_run:
        if split is None:
            split = fresh
            patients = split["labelled_pool"] + split.get("validation", [])
            cines = [str(cine) for cine in (read_acdc_patient(data_path / patient).cine for patient in patients) if cine]
            # every frame of every cine is a pretraining record, as prepare_data counts them
            split["unlabelled_pool"] = {"records": 2 * len(patients) + sum(cine_frames(c) for c in cines + extra)}
            split["datalists"] = {"acdc": str(out_path / "data" / "acdc" / "datalist.json"),
                                  "unlabelled": str(out_path / "data" / "unlabelled.json")}
        print(f"split: {split['rule']}: evaluation {', '.join(split['evaluation'])}")
        steps = plan(REPO, out_path, split, budget, arms, counts, seed_list, recorded=done)
        print_plan(steps, budget, len({r for r in done
                                       if r[0] in arms and r[1] in map(str, counts) and r[2] in seed_list}),
                   stale_runs(steps, config_hashes))
        return
    if not record.exists() and out_path.is_dir() and any(out_path.iterdir()):
        # the study replaces its own data/ folder when it restarts: never in a folder it did not make
        raise ValueError(f"--out {out_path} holds files but no study.json; give an empty or new folder")
    if not record.exists():  # make_split above refused a folder that is not ACDC before anything was written
        out_path.mkdir(parents=True, exist_ok=True)
        with atomic_file(record) as tmp:
            tmp.write_text(json.dumps(settings, indent=2))
    split = prepare_data(out_path, data_path, int(eval_per_group), extra, validation_per_group)
    steps = plan(REPO, out_path, split, budget, arms, counts, seed_list, recorded=done)
    set_aside_stale(steps, config_hashes)  # a run made under another recipe of its arm is not taken as done
    commit = commit_of(REPO_ROOT, ignore=ledger_path)  # the ledger changes as the study goes

    def provenance(step) -> dict:  # what a training runs under, recorded when it starts
        return {"commit": commit, "budget": budget, "config_hash": config_hashes[step.meta["arm"]]}

    def results(_step=None) -> list:  # after each evaluation and at the end: the ledger and tables grow
        return collect(out_path, steps, split, settings, arms, counts, seed_list, config_hashes, ledger=ledger_path,
                       repo=REPO)

    execute(out_path, steps, budget, after_eval=results, provenance=provenance)
    rows = results()
    say(f"{len(rows)} runs -> {out_path / 'runs.csv'}, {out_path / 'table.md'}, {out_path / 'dice_vs_labelled.png'}"
        + (f"; ledger {ledger_path}" if ledger_path is not None else ""))


if __name__ == "__main__":
    try:
        with tool_errors("study", overwrite_option=False):  # a study resumes: it has no --overwrite
            fire.Fire(main)
    except StepFailed as failed:  # the study so far is kept: the same command resumes it
        print(f"study: error: {failed}", file=sys.stderr)
        sys.exit(3)
