"""``python tools/compare.py``: two arms' evaluations paired over subjects, as the ranking README's table uses it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from tool_cli import assert_refused, run_tool


def _evaluation(path: Path, errors: dict) -> Path:
    """A function.csv as the bundles write it: subject, reference, predicted, error."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "reference_lv_edv_ml", "predicted_lv_edv_ml",
                                                    "error_lv_edv_ml"])
        writer.writeheader()
        for subject, error in errors.items():
            writer.writerow({"subject": subject, "reference_lv_edv_ml": 150.0, "predicted_lv_edv_ml": 150.0 + error,
                             "error_lv_edv_ml": error})
    return path


def test_arms_are_paired_per_subject_over_the_seeds(tmp_path):
    subjects = [f"patient{i:03d}" for i in range(1, 9)]
    rng = np.random.default_rng(0)
    base = {seed: {s: float(e) for s, e in zip(subjects, rng.normal(0, 20, 8))} for seed in (0, 1)}
    # ours: closer on 7 of 8 subjects (the last one worse), with signed errors of either sign
    ours = {seed: {s: (0.5 * e if s != subjects[-1] else 3 * abs(e) + 1) for s, e in base[seed].items()}
            for seed in (0, 1)}
    files = {arm: ",".join(str(_evaluation(tmp_path / f"{arm}_{seed}.csv", values[seed])) for seed in (0, 1))
             for arm, values in (("base", base), ("ours", ours))}
    result = run_tool("compare", "--base", files["base"], "--ours", files["ours"], "--quantities", "lv_edv_ml",
                      "--labels", "supervised,ranking")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| lv_edv_ml"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean_abs = {arm: {s: np.mean([abs(v[seed][s]) for seed in (0, 1)]) for s in subjects}
                for arm, v in (("base", base), ("ours", ours))}
    assert cells[1] == f"{np.mean(list(mean_abs['base'].values())):.1f}"
    assert cells[2] == f"{np.mean(list(mean_abs['ours'].values())):.1f}"
    assert cells[3] == "7 of 8"
    differences = [mean_abs["ours"][s] - mean_abs["base"][s] for s in subjects]
    assert cells[4].startswith(f"{np.mean(differences):+.1f} (")
    assert cells[5] == f"{wilcoxon(differences).pvalue:.3f}"
    assert "supervised MAE" in result.stdout and "2 seed(s)" in result.stdout


def test_a_missing_evaluation_and_unequal_seeds_are_refused(tmp_path):
    one = _evaluation(tmp_path / "one.csv", {"a": 1.0})
    missing = tmp_path / "missing.csv"
    assert_refused(run_tool("compare", "--base", one, "--ours", missing), "compare", 2, missing, "no such")
    result = run_tool("compare", "--base", f"{one},{one}", "--ours", one)
    assert result.returncode == 2 and "one evaluation per seed in each arm: 2 against 1" in result.stderr


def _frames(path: Path, dice: dict) -> Path:
    """A metrics.csv as the evaluations write it: a row per frame (subject, frame_index, dice_lv_cavity)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "frame_index", "phase", "dice_lv_cavity"])
        writer.writeheader()
        for subject, (ed, es) in dice.items():
            writer.writerow({"subject": subject, "frame_index": 0, "phase": "ED", "dice_lv_cavity": ed})
            writer.writerow({"subject": subject, "frame_index": 9, "phase": "ES", "dice_lv_cavity": es})
    return path


def test_dice_is_paired_per_subject_over_its_frames_higher_better(tmp_path):
    """``dice_`` quantities read metrics.csv: a subject's Dice is its frames' mean (a lost frame's NaN left out), and a
    positive difference is better; mixing them with function errors is refused."""
    subjects = [f"patient{i:03d}" for i in range(1, 9)]
    base = {s: (0.80, 0.70) for s in subjects}
    ours = {s: (0.85, 0.75 if s != subjects[-1] else 0.55) for s in subjects}
    ours[subjects[0]] = (0.85, float("nan"))  # a frame without a score counts for nothing
    files = {arm: _frames(tmp_path / f"{arm}.csv", values) for arm, values in (("base", base), ("ours", ours))}
    result = run_tool("compare", "--base", files["base"], "--ours", files["ours"], "--quantities", "dice_lv_cavity")
    assert result.returncode == 0, result.stderr
    cells = [c.strip() for c in next(l for l in result.stdout.splitlines() if l.startswith("| dice_lv_cavity"))
             .strip("|").split("|")]
    differences = [0.85 - 0.75] + [0.05] * 6 + [0.70 - 0.75]  # the first subject: its ED only
    assert cells[1] == "0.750" and cells[3] == "7 of 8" and "subjects ours higher" in result.stdout
    assert cells[4].startswith(f"{np.mean(differences):+.3f} (")
    mixed = run_tool("compare", "--base", files["base"], "--ours", files["ours"],
                     "--quantities", "dice_lv_cavity,lv_edv_ml")
    assert mixed.returncode == 2 and "in one table" in mixed.stderr
