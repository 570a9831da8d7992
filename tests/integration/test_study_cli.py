"""tools/study.py through its command line, on a fake ACDC tree (10 patients, 2 per group, one 4D cine).

- the plan (``--dry_run``): the stratified split, the bundle commands of each arm, the resume or
  restart of an interrupted training, and nothing written;
- one real run of the ``tiny`` budget (scratch, 1 labelled subject: 2 bundle processes), its outputs,
  and a second run that redoes nothing;
- the tables from finished runs (fabricated evaluation outputs: bold best, the paired test);
- bad input refused before any work.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from acdc_fake import write_acdc  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "study.py"
GROUPS = ["DCM", "HCM", "MINF", "NOR", "RV"]


@pytest.fixture(scope="module")
def fake_acdc(tmp_path_factory) -> Path:
    from cmrssl.data.phantom import generate_subject

    tiny = generate_subject(7, num_frames=4, image_size=32)
    patients = {n: GROUPS[(n - 1) // 2] for n in range(1, 11)}  # 2 per group, as ACDC's blocks of 20
    return write_acdc(tmp_path_factory.mktemp("study") / "training", tiny, patients, with_4d=(1,))


def _study(data: Path, out: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, str(TOOL), "--data", str(data), "--out", str(out), "--eval_per_group", "1", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def test_dry_run_plans_every_arm_from_the_bundles_and_writes_nothing(fake_acdc, tmp_path):
    out = tmp_path / "study"
    result = _study(fake_acdc, out, "--budget", "tiny", "--methods", "mim_multitask,simclr_decoder", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    # the highest-numbered patient of each group is held out
    assert "evaluation patient002, patient004, patient006, patient008, patient010" in text
    assert "[pretrain] pretrain mim" in text and "configs/mim.json" in text and "configs/simclr.json" in text
    assert text.count("[pretrain]") == 2  # one pretraining per method, shared by its fine-tunes
    assert "--finetune_mode multitask" in text and "--finetune_mode decoder" in text
    assert "[train] train scratch n=1 seed 0" in text  # scratch joins every comparison
    assert "--num_labelled_subjects 0" in text  # 'all'
    assert "s per iteration" in text
    assert not out.exists()


def test_small_budget_runs_every_bundle_at_its_cpu_size_and_redefines_none_of_it(fake_acdc, tmp_path):
    """The CPU size has one definition, each bundle's ``configs/cpu.json``: every bundle command of the small budget
    adds it, then the budget's own overlay of that bundle where it has one, and neither overrides an option
    cpu.json sets but the study's own length (``max_epochs``)."""
    out = tmp_path / "study"
    result = _study(fake_acdc, out, "--budget", "small", "--methods", "mim_all,ranking", "--labelled", "1",
                    "--seeds", "0", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line.split() for line in result.stdout.splitlines() if "monai.bundle run" in line]
    assert len(commands) == 7  # pretrain mim; train + evaluate of scratch, mim_all and ranking
    # the estimate counts every frame of a pool patient's 4D cine: 5 pool patients' ED and ES and patient001_4d's
    # 4 frames are 14 pretraining records, ceil(14 / 4) x 3 epochs = 12 iterations; 2 x 200 fine-tuning ones
    assert "412 training iterations" in result.stdout
    for command in commands:
        bundle = Path(command[command.index("--bundle_root") + 1])
        files = json.loads(command[command.index("--config_file") + 1])
        own = [f for f in files if Path(f).is_absolute()]
        assert files[len(files) - len(own) - 1] == "configs/cpu.json", command
        assert [Path(f).relative_to(REPO_ROOT / "common").as_posix() for f in own] in (
            [], [f"cmrssl/study/budgets/small/{bundle.name}.json"]), command
        sizes = set(json.loads((bundle / "configs" / "cpu.json").read_text())) - {"max_epochs"}
        given = {word[2:] for word in command if word.startswith("--")}
        for overlay in own:
            given |= set(json.loads(Path(overlay).read_text()))
        assert not given & sizes, (bundle.name, sorted(given & sizes))


def test_dry_run_shows_how_an_interrupted_training_continues(fake_acdc, tmp_path):
    out = tmp_path / "study"
    first = _study(fake_acdc, out, "--budget", "tiny", "--methods", "scratch", "--labelled", "1,all", "--dry_run")
    assert first.returncode == 0, first.stderr[-3000:]
    resumable = out / "runs" / "scratch" / "n1_seed0" / "train" / "model.pt.partial"
    resumable.mkdir(parents=True)
    (resumable / "last.pt").write_bytes(b"")
    (out / "runs" / "scratch" / "nall_seed0" / "train" / "model.pt.partial").mkdir(parents=True)
    text = _study(fake_acdc, out, "--budget", "tiny", "--methods", "scratch", "--labelled", "1,all",
                  "--dry_run").stdout
    assert "train scratch n=1 seed 0 (resumes the interrupted training from its last epoch)" in text
    assert "train scratch n=all seed 0 (starts over (interrupted before its first checkpoint))" in text
    assert "--resume true" in text and "--overwrite true" in text
    # a finished run made under another recipe of its arm: a real run sets it aside and trains again, and says so
    (out / "runs" / "scratch" / "n1_seed0" / "provenance.json").write_text(json.dumps({"config_hash": "0123abcd"}))
    (out / "runs" / "scratch" / "n1_seed0" / "train" / "model.pt").write_bytes(b"")
    result = _study(fake_acdc, out, "--budget", "tiny", "--methods", "scratch", "--labelled", "1,all", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("[train] train scratch n=1 seed 0"))
    assert "run again: made under config hash 0123abcd" in lines[header]
    assert "n1_seed0.hash-0123abcd" in lines[header]
    commands = [x for x in lines[header + 1:header + 4] if x.startswith("    ")]  # its commands, indented
    assert commands and not any("--resume true" in x for x in commands)  # started afresh in the emptied folder
    assert (out / "runs" / "scratch" / "n1_seed0" / "train" / "model.pt").exists()  # the plan moves nothing


@pytest.mark.slow
def test_tiny_study_runs_the_bundles_and_a_second_run_redoes_nothing(fake_acdc, tmp_path):
    out = tmp_path / "study"
    result = _study(fake_acdc, out, "--budget", "tiny", "--methods", "scratch", "--labelled", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2 of 2: evaluate scratch n=1 seed 0" in result.stdout
    split = json.loads((out / "split.json").read_text())
    assert split["evaluation"] == ["patient002", "patient004", "patient006", "patient008", "patient010"]
    assert split["labelled_pool"] == ["patient001", "patient003", "patient005", "patient007", "patient009"]
    unlabelled = json.loads((out / "data" / "unlabelled.json").read_text())["training"]
    assert all("label" not in r for r in unlabelled)  # the pretraining pool never carries labels
    assert {r["subject"] for r in unlabelled} >= {"patient001", "patient001_4d"}
    assert not {r["subject"] for r in unlabelled} & set(split["evaluation"])
    with open(out / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["arm"] == "scratch" and rows[0]["labelled"] == "1"
    assert rows[0]["labelled_subjects"] in split["labelled_pool"]
    assert 0.0 <= float(rows[0]["dice_lv_cavity"]) <= 1.0 and float(rows[0]["train_seconds"]) > 0
    assert "--num_labelled_subjects 1 --seed 0" in rows[0]["overrides"]
    assert "| LV cavity | 1 |" in (out / "table.md").read_text()
    assert (out / "dice_vs_labelled.png").read_bytes()[:4] == b"\x89PNG"

    again = _study(fake_acdc, out, "--budget", "tiny", "--methods", "scratch", "--labelled", "1", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 steps already done, 0 to run" in again.stdout

    other = _study(fake_acdc, out, "--budget", "small", "--dry_run")
    assert other.returncode == 2 and "use another --out" in other.stderr  # budgets never mix in one table


def _fake_finished_run(folder: Path, dice: float, subjects, arm: str) -> None:
    """What a finished fine-tune leaves: a checkpoint and its evaluation's metrics.csv and summary.json."""
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "model.pt").write_bytes(b"")
    (folder / "eval").mkdir()
    fields = ["subject", "frame_index", "dice_lv_cavity", "dice_lv_myocardium", "dice_rv_cavity"]
    with open(folder / "eval" / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for number, subject in enumerate(subjects):
            for frame in (0, 5):
                value = dice + 0.01 * number
                writer.writerow({"subject": subject, "frame_index": frame, "dice_lv_cavity": value,
                                 "dice_lv_myocardium": value, "dice_rv_cavity": value})
    structure = {"dice": {"mean": dice + 0.02}, "hd95_mm": {"mean": 5.0}}
    summary = {"segmentation": {k: structure for k in ("lv_cavity", "lv_myocardium", "rv_cavity")},
               "function": {"lv_ef_percent": {"mean_absolute_error": 10.0, "mean_error": -2.0}},
               "quality": {"frames_with_lv_cavity_dice_below_0.05": 0}}
    (folder / "eval" / "summary.json").write_text(json.dumps(summary))
    # what the study records when it starts a training: the commit and the budget's config hash for the arm
    from cmrssl.study import Repository, budget_hash

    (folder / "provenance.json").write_text(json.dumps({"commit": "0123abcd", "budget": "tiny", "config_hash":
                                                        budget_hash(Repository(REPO_ROOT), "tiny", arm)}))


def _fabricated_study(tmp_path: Path, *extra: str) -> tuple:
    """A study folder whose 4 fine-tunes (scratch and MIM+All, 1 labelled, seeds 0 and 1) have finished."""
    from cmrssl.data.phantom import generate_subject

    tiny = generate_subject(7, num_frames=4, image_size=32)
    # 4 patients per group: 2 held out per group (10 evaluation subjects: enough pairs for the test)
    data = write_acdc(tmp_path / "training", tiny, {n: GROUPS[(n - 1) // 4] for n in range(1, 21)})
    out = tmp_path / "study"
    args = ["--data", str(data), "--out", str(out), "--eval_per_group", "2", "--budget", "tiny",
            "--methods", "scratch,mim_all", "--labelled", "1", "--seeds", "0,1", *extra]
    plan = subprocess.run([sys.executable, str(TOOL), *args, "--dry_run"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    evaluation = [f"patient{n:03d}" for n in (3, 4, 7, 8, 11, 12, 15, 16, 19, 20)]
    # the record of a study started in this folder (a folder without one is not taken as an output)
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"budget": "tiny", "data": str(data.resolve()), "eval_per_group": 2,
                                                "extra_unlabelled": []}))
    (out / "pretrain" / "mim").mkdir(parents=True, exist_ok=True)
    (out / "pretrain" / "mim" / "mim.pt").write_bytes(b"")
    (out / "pretrain" / "mim" / "pretrain.log").write_text(  # its pretext loss still falling in the last quarter
        "".join(f"x - INFO - Epoch: {e}/8, Iter: 1/1 -- train_loss: {1.0 / e:.4f} \n" for e in range(1, 9)))
    for seed in (0, 1):
        _fake_finished_run(out / "runs" / "scratch" / f"n1_seed{seed}", 0.70 + 0.01 * seed, evaluation, "scratch")
        _fake_finished_run(out / "runs" / "mim_all" / f"n1_seed{seed}", 0.80 + 0.01 * seed, evaluation, "mim_all")
    return data, out, args


def test_tables_from_finished_runs_bold_the_best_and_test_against_scratch(tmp_path):
    data, out, args = _fabricated_study(tmp_path)
    result = subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "9 of 9 steps already done" in result.stdout
    table = (out / "table.md").read_text()
    # mean +- SD over the two seeds (seeds in brackets), the better arm in bold; against scratch one pair per
    # held-out subject (its mean over the seeds), not one per subject and seed: 10 pairs, not 20
    row = next(line for line in table.splitlines() if line.startswith("| LV cavity | 1 |"))
    assert row.startswith("| LV cavity | 1 | 0.725 ± 0.007 [2] | **0.825 ± 0.007 [2]** Δ +0.100 [+0.100, +0.100] p ")
    assert float(row.split(" p ")[1].split(" ")[0]) == pytest.approx(0.002, abs=5e-4)  # 10 pairs, all for MIM
    assert "10 held-out subjects" in table
    assert "| SSL(MIM)+All | 1 |" in table and "| 10.0 ± 0.0 |" in table
    with open(out / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("mim_all", "0"), ("mim_all", "1"), ("scratch", "0"),
                                                           ("scratch", "1")]
    assert (out / "dice_vs_labelled.png").exists()


def test_runs_in_the_ledger_are_not_run_again_from_another_folder(tmp_path):
    ledger = tmp_path / "docs" / "study" / "ledger.csv"
    data, out, args = _fabricated_study(tmp_path, "--ledger", str(ledger))
    result = subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(ledger) as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["arm"], r["labelled"], r["seed"]) for r in rows) == [
        ("mim_all", "1", "0"), ("mim_all", "1", "1"), ("scratch", "1", "0"), ("scratch", "1", "1")]
    assert {r["budget"] for r in rows} == {"tiny"}
    assert len({r["config_hash"] for r in rows if r["arm"] == "scratch"}) == 1  # one hash per arm
    hashes = {arm: {r["config_hash"] for r in rows if r["arm"] == arm} for arm in ("scratch", "mim_all")}
    assert hashes["scratch"] != hashes["mim_all"]
    assert {r["commit"] for r in rows} == {"0123abcd"}  # the commit each training started under
    # whether the pretraining each run started from had flattened: recorded beside it (MIM's loss still fell)
    pretexts = {(r["arm"], r["pretext_epochs"], r["pretext_flat"]) for r in rows}
    assert pretexts == {("scratch", "", ""), ("mim_all", "8", "no")}
    assert "Pretext loss flattened (its last quarter of epochs lowered it by under 2%): 0 of 1 arms; still " \
           "falling: mim_all." in (out / "table.md").read_text()
    assert all(json.loads(r["per_subject"]) for r in rows)  # 10 held-out subjects each, for the paired test
    # another machine, another output folder, the committed ledger: nothing of it is planned again
    elsewhere = [a if a != str(out) else str(tmp_path / "elsewhere") for a in args]
    again = subprocess.run([sys.executable, str(TOOL), *elsewhere, "--seeds", "0,1,2", "--dry_run"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 runs are in the ledger for this budget at their arms' config hashes: not planned." in again.stdout
    trains = [line for line in again.stdout.splitlines() if line.startswith("[train]")]
    assert trains == ["[train] train scratch n=1 seed 2", "[train] train mim_all n=1 seed 2"]
    # the tables from the committed ledger alone, into a folder of their own: what the study itself wrote
    tables = tmp_path / "tables"
    made = subprocess.run([sys.executable, str(TOOL), *[a if a != str(out) else str(tables) for a in args],
                           "--tables_only"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert (tables / "table.md").read_text() == (out / "table.md").read_text()
    assert sorted(p.name for p in tables.iterdir()) == ["dice_vs_labelled.png", "runs.csv", "table.md"]
    none = subprocess.run([sys.executable, str(TOOL), *[a if a != str(out) else str(tmp_path / "t2") for a in args],
                           "--tables_only", "--seeds", "5"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert none.returncode == 2 and "holds no run of budget tiny" in none.stderr
    assert not (tmp_path / "t2").exists()


@pytest.mark.parametrize("args, named", [
    # each option's own refusals are cmrssl.study.options' (tests/unit/test_study_library.py); here what reaches
    # the command line: exit 2 with the option named, nothing written
    (["--labelled", "0"], "--labelled takes positive counts"),
    (["--seeds", "0", "0", "--dry_run"], "unexpected argument(s) 0: a list option takes its values separated by"),
    # before: planned by the dry run, refused by the bundle after the data were indexed
    (["--labelled", "1,6", "--dry_run"], "--labelled 6: the labelled pool holds 5 subjects"),
    (["--labelled", "6", "--budget", "tiny"], "--labelled 6: the labelled pool holds 5 subjects"),
])
def test_bad_options_are_refused_before_any_work(fake_acdc, tmp_path, args, named):
    out = tmp_path / "study"
    result = _study(fake_acdc, out, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_an_output_that_is_a_file_is_refused_without_suggesting_an_option_the_tool_lacks(fake_acdc, tmp_path):
    mine = tmp_path / "results.txt"
    mine.write_text("mine")
    for out in (mine, mine / "study"):
        result = _study(fake_acdc, out, "--budget", "tiny")
        assert result.returncode == 2, result.stderr[-2000:]
        # before: "study: error: [Errno 17] File exists: '...' (use --overwrite)"; study has no --overwrite
        assert f"--out {out}: {mine} is a file; the study writes a folder" in result.stderr
        assert "--overwrite" not in result.stderr and "Traceback" not in result.stderr
    assert mine.read_text() == "mine"


def test_a_folder_that_is_not_acdc_is_named(tmp_path):
    (tmp_path / "notacdc").mkdir()
    result = _study(tmp_path / "notacdc", tmp_path / "study", "--budget", "tiny")
    assert result.returncode == 2 and "no patientNNN folders" in result.stderr
    assert str(tmp_path / "notacdc") in result.stderr
    assert not (tmp_path / "study").exists()


def test_a_folder_of_the_users_is_not_taken_as_an_output(fake_acdc, tmp_path):
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "notes.txt").write_text("mine")
    result = _study(fake_acdc, out, "--budget", "tiny")
    assert result.returncode == 2 and "holds files but no study.json" in result.stderr
    assert (out / "data" / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["data"]
