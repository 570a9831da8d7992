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
