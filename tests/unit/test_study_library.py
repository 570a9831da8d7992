"""cmrssl.study in-process: statistics one pair per subject, HD95 counting lost structures, the ledger, the plan."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cmrssl.io.run_state import partial_dir, restart_options
from cmrssl.study import (BUDGETS, Repository, add_rows, budget_hash, commit_of, plan, read_ledger, recorded,
                          run_key)
from cmrssl.study.report import comparison, run_row
from cmrssl.study.plan import Step
from cmrssl.study.statistics import (bootstrap_interval, hd95_counting_lost, paired_differences, subject_means,
                                     wilcoxon_p)

REPO = Repository(Path(__file__).resolve().parents[2])
sys.path.insert(0, str(Path(__file__).resolve().parent))  # acdc_fake


def test_a_subject_is_one_pair_whatever_the_number_of_seeds():
    ours = {0: {"a": 0.9, "b": 0.8}, 1: {"a": 0.7, "b": 0.8}, 2: {"a": 0.5}}  # seed 2 has no scratch run
    base = {0: {"a": 0.6, "b": 0.8}, 1: {"a": 0.6, "b": 0.6}}
    assert subject_means(ours) == pytest.approx({"a": 0.7, "b": 0.8})
    assert paired_differences(ours, base) == pytest.approx({"a": 0.2, "b": 0.1})  # seeds 0, 1 only
    # 3 seeds x 8 subjects all in favour: 8 pairs (p 0.0078), where 24 pairs would claim p < 1e-4
    many = {s: {f"p{i}": 0.8 + 0.01 * i for i in range(8)} for s in range(3)}
    few = {s: {f"p{i}": 0.7 + 0.005 * i for i in range(8)} for s in range(3)}
    differences = list(paired_differences(many, few).values())
    assert len(differences) == 8 and wilcoxon_p(differences) == pytest.approx(0.0078125)
    assert wilcoxon_p(differences[:5]) is None and wilcoxon_p([0.0] * 6) == 1.0


def test_the_bootstrap_interval_holds_the_mean_difference_and_narrows_with_more_subjects():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.05, 0.05, 8), rng.normal(0.05, 0.05, 80)
    low, high = bootstrap_interval(small)
    assert low < small.mean() < high
    assert bootstrap_interval(large)[1] - bootstrap_interval(large)[0] < high - low
    assert bootstrap_interval(small[:5]) is None


def test_a_lost_structure_counts_at_the_image_diagonal():
    assert hd95_counting_lost(4.2, False, 400.0) == 4.2
    assert hd95_counting_lost(None, True, 400.0) == 400.0
    assert hd95_counting_lost(float("nan"), False, 400.0) is None  # no reference structure, none predicted


def _finished(folder: Path, lost_rv: bool, lost: str = "rv_cavity") -> Step:
    """A finished evaluation: two frames of one subject, the second with structure ``lost`` lost when ``lost_rv``;
    its summary has no ``quality`` section (as an evaluation that writes only the shared schema)."""
    (folder / "eval").mkdir(parents=True)
    fields = ["subject", "frame_index"] + [f"{m}_{k}" for k in ("lv_cavity", "lv_myocardium", "rv_cavity")
                                           for m in ("dice", "hd95_mm", "volume_ml", "reference_volume_ml")]
    with open(folder / "eval" / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for frame, lost_frame in ((0, False), (1, lost_rv)):
            row = {"subject": "patient017", "frame_index": frame}
            for key in ("lv_cavity", "lv_myocardium", "rv_cavity"):
                gone = lost_frame and key == lost
                row.update({f"dice_{key}": 0.0 if gone else 0.9, f"hd95_mm_{key}": "" if gone else 5.0,
                            f"volume_ml_{key}": 0.0 if gone else 100.0, f"reference_volume_ml_{key}": 100.0})
            writer.writerow(row)
    structure = {"dice": {"mean": 0.9}, "hd95_mm": {"mean": 5.0}}  # the evaluation's HD95 leaves the lost frame out
    (folder / "eval" / "summary.json").write_text(json.dumps({
        "segmentation": {k: structure for k in ("lv_cavity", "lv_myocardium", "rv_cavity")}, "function": {}}))
    return Step("evaluate scratch n=1 seed 0", folder, [], folder / "eval" / "summary.json", folder, "eval",
                meta={"arm": "scratch", "labelled": 1, "seed": 0})


def test_a_run_row_counts_the_lost_structure_in_hd95_and_beside_it(tmp_path):
    train = Step("train scratch n=1 seed 0", tmp_path, [], tmp_path / "model.pt", tmp_path, "train", iterations=30,
                 meta={"overrides": ["--seed", "0"]})
    diagonals = {("patient017", 0): 400.0, ("patient017", 1): 400.0}
    (tmp_path / "train.log").write_text("".join(f"INFO - Epoch[{e}] Metrics -- val_mean_dice: {v}\n"
                                                for e, v in ((2, 0.5), (4, 0.7), (6, 0.75), (8, 0.74))))
    kept = run_row(_finished(tmp_path / "kept", False), "cpu", "abc", "c0ffee", train, {}, diagonals, "patient001")
    lost = run_row(_finished(tmp_path / "lost", True), "cpu", "abc", "c0ffee", train, {}, diagonals, "patient001")
    assert kept["hd95_mm_rv_cavity"] == 5.0 and kept["lost_rv_cavity"] == 0
    # the model that lost the RV no longer shows the better distance
    assert lost["hd95_mm_rv_cavity"] == pytest.approx((5.0 + 400.0) / 2) and lost["lost_rv_cavity"] == 1
    assert lost["per_subject"]["patient017"]["lost_rv_cavity"] == 1.0
    assert lost["iterations"] == 30 and lost["commit"] == "c0ffee" and lost["labelled_subjects"] == "patient001"
    # the validation curve, whole (any later plateau rule can be applied to it), and the plateau by today's rule
    assert kept["val_curve"] == "0.5000 0.7000 0.7500 0.7400" and kept["validations"] == 4
    assert kept["val_gain_last_quarter"] == pytest.approx(0.74 - 0.75) and kept["plateau"] == "yes"


def test_a_run_row_counts_the_frames_that_lost_their_lv_cavity_from_the_per_frame_scores(tmp_path):
    train = Step("train ranking n=1 seed 0", tmp_path, [], tmp_path / "model.pt", tmp_path, "train",
                 meta={"overrides": []})
    diagonals = {("patient017", 0): 400.0, ("patient017", 1): 400.0}
    rows = [run_row(_finished(tmp_path / str(lost), lost, "lv_cavity"), "cpu", "abc", "c0ffee", train, {},
                    diagonals, "") for lost in (False, True)]
    # read from metrics.csv, so a bundle whose summary.json has no quality section still fills the column
    assert [r["frames_lv_cavity_lost"] for r in rows] == [0, 1]
    assert [r["lost_lv_cavity"] for r in rows] == [0, 1]


def _row(arm, seed, dice, budget="cpu", config_hash="abc"):
    return {"budget": budget, "config_hash": config_hash, "arm": arm, "labelled": "5", "seed": seed,
            "dice_lv_cavity": dice, "per_subject": {f"patient{i:03d}": {"dice_lv_cavity": dice + 0.01 * i}
                                                    for i in range(8)}}


def test_the_ledger_keeps_one_row_per_run_and_budget_and_reads_back_what_the_tables_need(tmp_path):
    ledger = tmp_path / "docs" / "study" / "ledger.csv"
    assert add_rows(ledger, [_row("scratch", 0, 0.80), _row("mim_all", 0, 0.85)]) == 2
    assert add_rows(ledger, [_row("scratch", 0, 0.81), _row("scratch", 0, 0.70, config_hash="old")]) == 1
    rows = read_ledger(ledger)
    assert len(rows) == 3 and rows[0]["dice_lv_cavity"] == "0.81"  # replaced, not added
    assert recorded(rows, "cpu", {"scratch": "abc", "mim_all": "abc"}) == {run_key("scratch", 5, 0),
                                                                           run_key("mim_all", 5, 0)}
    assert recorded(rows, "cpu", {"scratch": "old", "mim_all": "abc"}) == {run_key("scratch", 5, 0),
                                                                           run_key("mim_all", 5, 0)}
    assert recorded(rows, "cpu", {"scratch": "old"}) == {run_key("scratch", 5, 0)}  # arms have their own hash
    assert list(csv.reader(open(ledger)))[0][:5] == ["budget", "config_hash", "arm", "labelled", "seed"]
    found = comparison([r for r in rows if r["config_hash"] == "abc"], "mim_all", 5, "dice_lv_cavity")
    assert found["subjects"] == 8 and found["difference"] == pytest.approx(0.04)


def test_a_run_is_marked_dirty_by_uncommitted_changes_but_not_by_the_ledger_the_study_writes(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    ledger, code = tmp_path / "docs" / "ledger.csv", tmp_path / "code.py"
    ledger.parent.mkdir()
    ledger.write_text("budget\n")
    code.write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    clean = commit_of(tmp_path)
    assert clean and not clean.endswith("-dirty")
    ledger.write_text("budget\ncpu\n")
    assert commit_of(tmp_path, ignore=ledger) == clean and commit_of(tmp_path) == clean + "-dirty"
    code.write_text("x = 2\n")
    assert commit_of(tmp_path, ignore=ledger) == clean + "-dirty"


def test_the_budget_hash_changes_with_a_config_the_arm_loads_and_not_with_metadata_or_the_list_of_runs(
        tmp_path, monkeypatch):
    for bundle in ("cmr_unet_segmentation", "cmr_ssp_pretraining", "cmr_position_ssl", "cmr_ranking_ssl"):
        (tmp_path / "bundles" / bundle / "configs").mkdir(parents=True)
        for name in ("train.json", "cpu.json", "metadata.json"):
            (tmp_path / "bundles" / bundle / "configs" / name).write_text("{}")
    ssp = tmp_path / "bundles" / "cmr_ssp_pretraining" / "configs"
    (ssp / "mim.json").write_text('{"method_name": "mim"}')
    repo = Repository(tmp_path)
    scratch, mim = budget_hash(repo, "small", "scratch"), budget_hash(repo, "small", "mim_all")
    assert scratch != mim
    (tmp_path / "bundles" / "cmr_unet_segmentation" / "configs" / "metadata.json").write_text('{"version": "9"}')
    assert budget_hash(repo, "small", "scratch") == scratch
    (ssp / "mim.json").write_text('{"method_name": "mim", "mask_ratio": 0.5}')  # a pretraining changes: its arms
    assert budget_hash(repo, "small", "scratch") == scratch and budget_hash(repo, "small", "mim_all") != mim
    mim = budget_hash(repo, "small", "mim_all")
    # the rule a pretrained start is fine-tuned by is code, not config: it changes the pretrained arms only
    monkeypatch.setattr("cmrssl.networks.checkpoint.INITIAL_SCALE_RULE", "kept as pretrained")
    assert budget_hash(repo, "small", "scratch") == scratch and budget_hash(repo, "small", "mim_all") != mim
    monkeypatch.undo()
    assert budget_hash(repo, "small", "mim_all") == mim
    (tmp_path / "bundles" / "cmr_ranking_ssl" / "configs" / "train.json").write_text('{"max_epochs": 9}')
    assert (budget_hash(repo, "small", "scratch"), budget_hash(repo, "small", "mim_all")) == (scratch, mim)
    # more seeds, counts or arms in a budget keep its rows; what a run does changes them
    monkeypatch.setitem(BUDGETS, "small", {**BUDGETS["small"], "seeds": [0, 1, 2], "labelled": [1, 5, 10, "all"]})
    assert budget_hash(repo, "small", "scratch") == scratch
    (tmp_path / "bundles" / "cmr_unet_segmentation" / "configs" / "cpu.json").write_text('{"max_epochs": 9}')
    assert budget_hash(repo, "small", "scratch") != scratch and budget_hash(repo, "small", "mim_all") != mim
    assert budget_hash(repo, "tiny", "scratch") != budget_hash(repo, "small", "scratch")


def test_a_run_in_the_ledger_is_not_planned_nor_its_pretraining(tmp_path):
    split = {"datalists": {"acdc": "d.json", "unlabelled": "u.json", "extra_cines": "e.json"},
             "labelled_pool": [f"patient{i:03d}" for i in range(1, 9)], "unlabelled_pool": {"records": 16}}
    arms, counts = ["scratch", "mim_all"], [1]
    everything = plan(REPO, tmp_path, split, "tiny", arms, counts, [0])
    assert [s.kind for s in everything] == ["pretrain", "train", "eval", "train", "eval"]
    some = plan(REPO, tmp_path, split, "tiny", arms, counts, [0], recorded={run_key("mim_all", 1, 0)})
    assert [s.name for s in some] == ["train scratch n=1 seed 0", "evaluate scratch n=1 seed 0"]


def test_the_cpu_ranking_arm_trains_the_fine_tunes_supervised_iterations_and_as_many_ranking_ones(tmp_path):
    """Its overlay fixes the rounds per epoch, so its length does not follow the labelled count and the plan counts
    it: 60 epochs x 100 rounds of one supervised and one ranking step; without the overlay the rounds follow the
    labelled count and the plan says it cannot count them (0)."""
    split = {"datalists": {"acdc": "d.json", "unlabelled": "u.json", "extra_cines": "e.json"},
             "labelled_pool": [f"patient{i:03d}" for i in range(1, 71)], "unlabelled_pool": {"records": 16}}
    steps = plan(REPO, tmp_path, split, "cpu", ["ranking"], [1, "all"], [0])
    assert [(s.kind, s.iterations) for s in steps] == [("train", 12000), ("eval", 0)] * 2
    scratch = plan(REPO, tmp_path, split, "cpu", ["scratch"], [1], [0])
    assert scratch[0].iterations == 6000  # the fine-tunes' 6000 iterations of 2 frames: one supervised step each
    assert plan(REPO, tmp_path, split, "small", ["ranking"], [1], [0])[0].iterations == 0


def test_one_rule_continues_an_interrupted_training(tmp_path):
    checkpoint = tmp_path / "model.pt"
    assert restart_options(checkpoint) == ([], "")
    partial_dir(checkpoint).mkdir()
    assert restart_options(checkpoint)[0] == ["--overwrite", "true"]  # stopped before its first checkpoint
    (partial_dir(checkpoint) / "last.pt").write_bytes(b"")
    assert restart_options(checkpoint)[0] == ["--resume", "true"]
    checkpoint.write_bytes(b"")
    assert restart_options(checkpoint) == ([], "")


def test_validation_patients_come_from_the_pool_never_from_the_held_out_set(tmp_path):
    from acdc_fake import write_acdc
    from cmrssl.data.phantom import generate_subject
    from cmrssl.study import make_split

    groups = ["DCM", "HCM", "MINF", "NOR", "RV"]
    data = write_acdc(tmp_path / "training", generate_subject(3, num_frames=4, image_size=24),
                      {n: groups[(n - 1) // 4] for n in range(1, 21)})
    split = make_split(data, eval_per_group=1, validation_per_group=1)
    assert split["evaluation"] == [f"patient{n:03d}" for n in (4, 8, 12, 16, 20)]
    assert split["validation"] == [f"patient{n:03d}" for n in (3, 7, 11, 15, 19)]
    assert len(split["labelled_pool"]) == 10 and not set(split["labelled_pool"]) & set(split["validation"])
    assert make_split(data, 1)["validation"] == [] and len(make_split(data, 1)["labelled_pool"]) == 15
    with pytest.raises(ValueError, match="too few to hold out 2 .* and 2 for validation"):
        make_split(data, eval_per_group=2, validation_per_group=2)


def test_a_run_has_plateaued_when_its_last_quarter_adds_under_a_hundredth(tmp_path):
    from cmrssl.study.report import validation_curve
    from cmrssl.study.statistics import PLATEAU_GAIN, plateau_gain

    flat = [0.3, 0.6, 0.7, 0.8, 0.85, 0.86, 0.858, 0.865]
    rising = [0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.75, 0.78]
    assert plateau_gain(flat) == pytest.approx(0.005) and plateau_gain(flat) < PLATEAU_GAIN
    assert plateau_gain(rising) == pytest.approx(0.06) and plateau_gain([0.5, 0.6, 0.7]) is None
    log = tmp_path / "train.log"  # MONAI's StatsHandler lines; epoch 2 again after a resume
    log.write_text("x - INFO - Epoch[1] Metrics -- val_mean_dice: 0.3124 \n"
                   "x - INFO - Epoch[2] Metrics -- val_mean_dice: 0.5000 \n"
                   "x - INFO - Epoch: 2/30, Iter: 51/100 -- train_loss: 2.5650 \n"
                   "x - INFO - Epoch[2] Metrics -- val_mean_dice: 0.6340 \n")
    assert validation_curve(log) == [0.3124, 0.634]
    assert validation_curve(tmp_path / "none.log") == []


def test_a_pretext_loss_has_flattened_when_its_last_quarter_lowers_it_by_under_two_percent(tmp_path):
    from cmrssl.study.report import epoch_losses, pretext_columns
    from cmrssl.study.statistics import PRETEXT_FLAT, pretext_drop

    falling = [4.0, 3.0, 2.5, 2.2, 2.0, 1.9, 1.8, 1.7]
    flat = [4.0, 3.0, 2.0, 1.5, 1.41, 1.40, 1.39, 1.385]
    assert pretext_drop(falling) == pytest.approx((1.95 - 1.75) / 1.95) and pretext_drop(falling) > PRETEXT_FLAT
    assert pretext_drop(flat) == pytest.approx((1.405 - 1.3875) / 1.405) and pretext_drop(flat) < PRETEXT_FLAT
    assert pretext_drop([1.0, 0.9, 0.8]) is None
    log = tmp_path / "pretrain.log"  # the bundles' per-iteration lines; epoch 2 iteration 1 again after a resume
    log.write_text("".join(f"x - INFO - Epoch: {e}/4, Iter: {i}/2 -- train_loss: {v} \n" for e, i, v in
                           [(1, 1, 4.0), (1, 2, 3.0), (2, 1, 9.9), (2, 1, 2.0), (2, 2, 2.0), (3, 1, 1.9), (3, 2, 1.9),
                            (4, 1, 1.88), (4, 2, 1.9)]))
    assert epoch_losses(log) == pytest.approx([3.5, 2.0, 1.9, 1.89])
    assert pretext_columns(log) == {"pretext_epochs": 4, "pretext_loss_last": 1.89, "pretext_drop_last_quarter":
                                    pytest.approx(0.0053, abs=1e-4), "pretext_flat": "yes"}
    assert pretext_columns(tmp_path / "missing.log") == {}


def test_the_subjects_a_training_drew_are_read_from_its_log(tmp_path):
    from cmrssl.study.report import drawn_subjects

    log = tmp_path / "train.log"
    log.write_text("2026-12-06 02:10:04,010 - cmrssl.data.subsets - INFO - few-label training on 2 subjects "
                   "(seed 0): patient006, patient024\nx - INFO - Epoch: 1/30, Iter: 1/5 -- train_loss: 2.5\n")
    assert drawn_subjects(log) == "patient006 patient024"
    assert drawn_subjects(tmp_path / "missing.log") == ""


def test_the_ranking_arm_has_a_dice_column_and_is_compared_with_scratch(tmp_path):
    """The ranking bundle's evaluation scores its masks as the segmentation bundle's does, so its arm stands in the
    Dice table and the plot beside the others, against scratch on the same subjects."""
    from cmrssl.study.arms import STRUCTURE_ROWS
    from cmrssl.study.report import table, write_results

    subjects = [f"patient{n:03d}" for n in range(1, 11)]
    rows = []
    for arm, level in (("scratch", 0.70), ("ranking", 0.75)):
        for seed in (0, 1):
            row = {"arm": arm, "labelled": "5", "seed": seed, "lv_ef_percent_mae": 6.0,
                   "per_subject": {s: {f"dice_{k}": level + 0.01 * i for k, _ in STRUCTURE_ROWS}
                                   for i, s in enumerate(subjects)}}
            row.update({f"dice_{k}": level for k, _ in STRUCTURE_ROWS})
            rows.append(row)
    text = table(rows, ["scratch", "ranking"], [5])
    assert "| structure | labelled subjects | Scratch | Ranking |" in text
    line = next(x for x in text.splitlines() if x.startswith("| LV cavity | 5 |"))
    assert line.endswith("| **0.750 ± 0.000 [2]** Δ +0.050 [+0.050, +0.050] p 0.002 |")
    assert "| Ranking | 5 | 2 |" in text
    split = {"evaluation": subjects, "rule": "fake", "labelled_pool": ["patient011"] * 70}
    write_results(tmp_path, rows, ["scratch", "ranking"], [5], {"budget": "cpu"}, split)
    assert (tmp_path / "dice_vs_labelled.png").read_bytes()[:4] == b"\x89PNG"


def test_clinical_errors_are_compared_with_scratch_by_their_size_one_pair_per_subject():
    """A signed error's size is what is compared: an arm whose errors are smaller but of the other sign is closer."""
    from cmrssl.study.report import table

    subjects = [f"patient{n:03d}" for n in range(1, 11)]
    rows = []
    for arm, error in (("scratch", 8.0), ("ranking", -3.0)):  # ranking underestimates, by less than scratch over
        for seed in (0, 1, 2):
            rows.append({"arm": arm, "labelled": "5", "seed": seed, "per_subject": {
                s: {"error_lv_edv_ml": error + 0.1 * i + seed, "error_lv_esv_ml": 2.0, "error_lv_ef_percent": None}
                for i, s in enumerate(subjects)}})
    edv = comparison(rows, "ranking", 5, "error_lv_edv_ml", absolute=True)
    assert edv["seeds"] == 3 and edv["subjects"] == 10 and edv["lower"] == 10 and edv["p"] < 0.01
    assert edv["base"] == pytest.approx(8.0 + 0.45 + 1.0) and edv["ours"] == pytest.approx(3.0 - 0.45 - 1.0)
    text = table(rows, ["scratch", "ranking"], [5])
    assert "## Clinical errors against scratch" in text
    line = next(x for x in text.splitlines() if x.startswith("| Ranking | 5 | 3 | LV EDV (ml) |"))
    assert "| 9.4 | 1.5 | 10 of 10 | -7.9 (" in line
    # equal errors: no subject closer, no difference; a quantity no subject has is left out
    assert "| Ranking | 5 | 3 | LV ESV (ml) | 2.0 | 2.0 | 0 of 10 | +0.0" in text and "LV EF (%)" not in text


def test_a_one_seed_cell_is_not_bolded_over_three_and_misplaced_cavities_are_counted():
    """Bold ranks only the cells with the row's most seeds; the clinical table counts the frames whose LV cavity
    was missed (Dice below 0.05), which the lost columns (nothing drawn) do not when it is drawn elsewhere."""
    from cmrssl.study.arms import STRUCTURE_ROWS
    from cmrssl.study.report import table

    subjects = [f"patient{n:03d}" for n in range(1, 11)]
    rows = []
    for arm, level, seeds in (("scratch", 0.70, (0, 1, 2)), ("simclr_all", 0.80, (0,)), ("ranking", 0.72, (0, 1, 2))):
        for seed in seeds:
            row = {"arm": arm, "labelled": "5", "seed": seed, "frames_lv_cavity_lost": 16 if arm == "simclr_all" else 0,
                   "lost_lv_cavity": 0, "per_subject": {s: {f"dice_{k}": level for k, _ in STRUCTURE_ROWS}
                                                        for s in subjects}}
            row.update({f"dice_{k}": level for k, _ in STRUCTURE_ROWS})
            rows.append(row)
    text = table(rows, ["scratch", "simclr_all", "ranking"], [5])
    line = next(x for x in text.splitlines() if x.startswith("| LV cavity | 5 |"))
    cells = [c.strip() for c in line.split("|")[3:-1]]
    assert cells[0] == "0.700 ± 0.000 [3]" and cells[1].startswith("0.800 [1]")  # higher, but one seed: not bold
    assert cells[2].startswith("**0.720 ± 0.000 [3]**")
    header = next(x for x in text.splitlines() if x.startswith("| arm | labelled subjects | seeds | HD95"))
    column = [c.strip() for c in header.split("|")].index("LV cavity Dice < 0.05 (frames)")
    simclr = next(x for x in text.splitlines() if x.startswith("| SSL(") and "| 5 | 1 |" in x)
    assert [c.strip() for c in simclr.split("|")][column] == "16.0"
    assert [c.strip() for c in simclr.split("|")][column - 3] == "0.0"  # nothing drawn: never


def test_a_run_made_under_another_recipe_of_its_arm_is_set_aside_and_run_again(tmp_path):
    """A finished run folder whose provenance names another config hash is not taken as done (its row would be
    written under the old hash and the table would never fill): it is renamed, kept, and the step runs again."""
    import json

    from cmrssl.study.plan import Step
    from cmrssl.study.runner import StepFailed, set_aside_stale

    def step(name, arm):
        folder = tmp_path / "runs" / arm / name
        return Step(name, folder, [], folder / "train" / "model.pt", tmp_path, "train", meta={"arm": arm})

    old, current, unknown = step("n5_seed0", "simclr_all"), step("n5_seed1", "simclr_all"), step("n1_seed0", "scratch")
    for s, made in ((old, "aaaa"), (current, "bbbb"), (unknown, "")):
        s.done_file.parent.mkdir(parents=True)
        s.done_file.write_text("weights")
        (s.folder / "provenance.json").write_text(json.dumps({"config_hash": made, "commit": "c"}))
    moved = set_aside_stale([old, current, unknown], {"simclr_all": "bbbb", "scratch": "cccc"})
    assert moved == [tmp_path / "runs" / "simclr_all" / "n5_seed0.hash-aaaa"]
    assert not old.done_file.exists() and (moved[0] / "train" / "model.pt").read_text() == "weights"
    assert current.done_file.exists() and unknown.done_file.exists()  # the same hash, or none recorded: kept
    old.done_file.parent.mkdir(parents=True)
    (old.folder / "provenance.json").write_text(json.dumps({"config_hash": "aaaa"}))
    with pytest.raises(StepFailed, match="n5_seed0.hash-aaaa exists already"):
        set_aside_stale([old], {"simclr_all": "bbbb"})


@pytest.mark.parametrize("given, named", [
    ({"labelled": "0"}, "--labelled takes positive counts"),
    ({"methods": "scratch,byol_all"}, "unknown ['byol_all']"),
    ({"methods": ""}, "--methods names no arm"),
    ({"budget": "huge"}, "--budget must be one of"),
    ({"extra_unlabelled": "/nonexistent/cine.nii.gz"}, "/nonexistent/cine.nii.gz"),
    # before: run twice and counted twice in the tables
    ({"seeds": "0,0"}, "--seeds gives 0 more than once (0,0)"),
    ({"seeds": "0,x"}, "--seeds takes whole numbers separated by commas"),
    ({"seeds": -1}, "--seeds must be whole numbers >= 0"),
    ({"labelled": "1,1"}, "--labelled gives 1 more than once"),
    ({"stray": ("0",)}, "unexpected argument(s) 0: a list option takes its values separated by"),
    # the ledger is a CSV the study rewrites whole: never a folder or another kind of file of the user's
    ({"ledger": "/tmp/notes.txt"}, "give a .csv file (it is made when absent)"),
])
def test_each_bad_study_option_is_refused_by_name_before_anything_is_read_or_written(tmp_path, given, named):
    from cmrssl.study import study_options

    with pytest.raises((ValueError, FileNotFoundError)) as refused:
        study_options(REPO, str(tmp_path / "acdc"), str(tmp_path / "study"), **given)
    assert named in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_study_options_complete_the_arms_with_scratch_and_take_the_budgets_lists(tmp_path):
    from cmrssl.study import study_options

    data, out = tmp_path / "acdc", tmp_path / "study"
    options = study_options(REPO, str(data), str(out), budget="cpu", methods="simclr_all", labelled="1,all",
                            seeds=(0, 2))
    assert (options.arms, options.counts, options.seeds) == (["scratch", "simclr_all"], [1, "all"], [0, 2])
    assert options.ledger is None and options.settings == {"budget": "cpu", "data": str(data), "eval_per_group": 4,
                                                           "extra_unlabelled": []}
    assert study_options(REPO, str(data), str(out), budget="cpu", methods="ranking").arms == ["ranking"]
    default = study_options(REPO, str(data), str(out), budget="cpu")
    assert (default.counts, default.seeds) == (list(BUDGETS["cpu"]["labelled"]), list(BUDGETS["cpu"]["seeds"]))
    for inside in ({"ledger": str(data / "ledger.csv")}, {"out": str(data / "study")}):  # never into the data
        with pytest.raises(ValueError, match="lies inside --data"):
            study_options(REPO, str(data), **{"out": str(out), **inside})
    out.mkdir()
    (out / "study.json").write_text(json.dumps(dict(options.settings, budget="small")))
    with pytest.raises(ValueError, match="holds a study with .*'small'.* use another --out"):
        study_options(REPO, str(data), str(out), budget="cpu")


def test_the_dry_run_counts_every_cine_frame_and_shows_what_is_done_and_skipped(tmp_path):
    from acdc_fake import write_acdc
    from cmrssl.data.phantom import generate_subject
    from cmrssl.study import describe_plan, planned_split, study_split

    data = write_acdc(tmp_path / "training", generate_subject(3, num_frames=4, image_size=24),
                      {n: "NOR" for n in range(1, 5)}, with_4d=(1, 2, 4))
    out = tmp_path / "study"
    split = planned_split(study_split(out, data, 1), out, data, [])
    assert len(split["labelled_pool"]) == 3 and not out.exists()
    # ED and ES of each pool patient, and each frame of the 4-frame cines of the two that have one (4 is held out)
    assert split["unlabelled_pool"]["records"] == 3 * 2 + 2 * 4
    assert split["datalists"]["acdc"] == str(out / "data" / "acdc" / "datalist.json")
    assert planned_split(split, out, data, []) is split  # a split the study made is kept as it is
    steps = plan(REPO, out, split, "tiny", ["scratch"], [1, 2], [0])
    steps[0].done_file.parent.mkdir(parents=True)
    steps[0].done_file.write_bytes(b"weights")
    lines = describe_plan(steps, 3, {}, {"device": "cpu", "seconds_per_iteration": 0.5, "batch": [2, 1, 8, 8]})
    assert lines[0] == "# done: [train] train scratch n=1 seed 0" and "[train] train scratch n=2 seed 0" in lines
    assert "\n3 runs are in the ledger for this budget at their arms' config hashes: not planned." in lines
    assert f"{steps[2].iterations} training iterations." in lines[-2] and "Measured on cpu: 0.500 s" in lines[-1]
