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
and grid (11-14 min a fine-tune alone on the 2-core CPU; its table takes more than one session, which the ledger
allows);
``small`` fits the 2-core CPU this project is developed on in about 90 minutes (two arms, N in {1, 5, all},
two seeds, CPU-sized network and short schedules: see ``docs/study.md``); ``full`` runs the bundles at the
papers' sizes (``configs/gpu.json``) and schedules, every arm, N in {1, 2, 5, 10, all} and three seeds: a GPU
job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.io.atomic import atomic_file  # noqa: E402
from cmrssl.study import (  # noqa: E402
    BUDGETS,
    Repository,
    StepFailed,
    budget_hash,
    check_labelled_counts,
    collect,
    commit_of,
    describe_plan,
    execute,
    ledger_tables,
    measure_rates,
    plan,
    planned_split,
    prepare_data,
    read_ledger,
    recorded,
    set_aside_stale,
    stale_runs,
    study_options,
    study_split,
)
from cmrssl.study.split import say  # noqa: E402

REPO = Repository(REPO_ROOT)


def main(data: str, out: str, *stray, budget: str = "small", methods=None, labelled=None, seeds=None,
         extra_unlabelled=(), eval_per_group: int = 4, ledger: str = "", dry_run: bool = False,
         tables_only: bool = False) -> None:
    """Run (or, with --dry_run, plan; with --tables_only, tabulate the ledger) the few-label study; see the module
    docstring."""
    options = study_options(REPO, data, out, stray, budget, methods, labelled, seeds, extra_unlabelled,
                            eval_per_group, ledger)  # every option checked before any work
    out_path, ledger_path, settings = options.out, options.ledger, options.settings
    validation_per_group = int(BUDGETS[options.budget].get("validation_per_group", 0))
    split = study_split(out_path, options.data, options.eval_per_group, validation_per_group)
    check_labelled_counts(options.counts, len(split["labelled_pool"]))
    config_hashes = {arm: budget_hash(REPO, options.budget, arm) for arm in options.arms}
    done = recorded(read_ledger(ledger_path), options.budget, config_hashes) if ledger_path is not None else set()
    runs = (options.arms, options.counts, options.seeds)
    if tables_only:
        rows = ledger_tables(out_path, split, settings, *runs, config_hashes, ledger_path, repo=REPO)
        say(f"{len(rows)} runs of the ledger -> {out_path / 'table.md'}, {out_path / 'runs.csv'}, "
            f"{out_path / 'dice_vs_labelled.png'}")
        return
    if dry_run:
        split = planned_split(split, out_path, options.data, options.extra)
        print(f"split: {split['rule']}: evaluation {', '.join(split['evaluation'])}")
        steps = plan(REPO, out_path, split, options.budget, *runs, recorded=done)
        wanted = [r for r in done if r[0] in options.arms and r[1] in map(str, options.counts)]
        skipped = len({r for r in wanted if r[2] in options.seeds})
        lines = describe_plan(steps, skipped, stale_runs(steps, config_hashes), measure_rates(REPO, options.budget))
        print("\n".join(lines))
        return
    if not options.record.exists() and out_path.is_dir() and any(out_path.iterdir()):
        # the study replaces its own data/ folder when it restarts: never in a folder it did not make
        raise ValueError(f"--out {out_path} holds files but no study.json; give an empty or new folder")
    if not options.record.exists():  # study_split above refused a folder that is not ACDC before anything was written
        out_path.mkdir(parents=True, exist_ok=True)
        with atomic_file(options.record) as tmp:
            tmp.write_text(json.dumps(settings, indent=2))
    split = prepare_data(out_path, options.data, options.eval_per_group, options.extra, validation_per_group)
    steps = plan(REPO, out_path, split, options.budget, *runs, recorded=done)
    set_aside_stale(steps, config_hashes)  # a run made under another recipe of its arm is not taken as done
    commit = commit_of(REPO_ROOT, ignore=ledger_path)  # the ledger changes as the study goes

    def provenance(step) -> dict:  # what a training runs under, recorded when it starts
        return {"commit": commit, "budget": options.budget, "config_hash": config_hashes[step.meta["arm"]]}

    def results(_step=None) -> list:  # after each evaluation and at the end: the ledger and tables grow
        return collect(out_path, steps, split, settings, *runs, config_hashes, ledger=ledger_path, repo=REPO)

    execute(out_path, steps, options.budget, after_eval=results, provenance=provenance)
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
