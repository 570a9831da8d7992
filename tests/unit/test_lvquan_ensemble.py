"""Ensemble subset search on synthetic out-of-fold predictions, and the Table 1 errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmrssl.metrics.lvquan_ensemble import format_table, lvquan_table, search_ensemble


def _synthetic(seed=0, n=4000):
    rng = np.random.default_rng(seed)
    target = rng.uniform(10, 60, (n, 11))
    target[:, :2] *= 40  # areas in mm^2
    phase = rng.integers(0, 2, n)
    predictions = {}
    # three unbiased configurations with independent noise: their average is the best
    for name in ("a", "b", "c"):
        predictions[name] = {"indices": target + rng.normal(0, 2.0, target.shape),
                             "phase_probability": np.where(rng.random(n) < 0.8, phase, 1 - phase) * 0.6 + 0.2}
    # a biased configuration (worse alone, and it spoils any average it joins)
    predictions["biased"] = {"indices": target + 3.0 + rng.normal(0, 1.0, target.shape),
                             "phase_probability": np.full(n, 0.7)}
    # phase: one configuration much better than the rest
    predictions["c"]["phase_probability"] = np.where(rng.random(n) < 0.97, phase, 1 - phase) * 0.8 + 0.1
    return predictions, target, phase


def test_search_finds_the_known_best_subset_and_reports_held_out():
    predictions, target, phase = _synthetic()
    rows = np.arange(target.shape[0])
    result = search_ensemble(predictions, target, phase, rows[:2000], rows[2000:], top_k=4)
    for task in ("areas", "dims", "rwt"):
        assert sorted(result[task]["members"]) == ["a", "b", "c"], task
        # averaging 3 independent N(0, 2) errors: MAE 2*sqrt(2/pi)/sqrt(3) ~ 0.92 mm; single ~ 1.60
        assert result[task]["holdout_error"] == pytest.approx(2 * np.sqrt(2 / np.pi) / np.sqrt(3), rel=0.05)
        assert result[task]["holdout_error"] < result[task]["best_single_holdout_error"]
    assert "c" in result["phase"]["members"]
    assert result["phase"]["holdout_error"] == pytest.approx(0.03, abs=0.015)
    with pytest.raises(ValueError, match="overlap"):
        search_ensemble(predictions, target, phase, rows[:10], rows[5:20])


def test_table_values_and_format():
    true = np.tile(np.arange(1, 12, dtype=float), (4, 1)) * np.array([[1], [2], [3], [4]])
    pred = true + np.array([[1], [-1], [1], [-1]])  # |error| 1 everywhere
    table = lvquan_table(pred, true, np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    assert table["areas"]["mae"] == pytest.approx(1.0) and table["rwt"]["sd"] == pytest.approx(0.0)
    assert table["phase"]["error_rate_percent"] == pytest.approx(25.0)
    assert table["dims"]["pcc"] > 0.9
    text = format_table(table, "fold 0")
    assert "areas (mm^2)" in text and "25.0 % error rate" in text
    with pytest.raises(ValueError, match=r"\[N, 11\]"):
        lvquan_table(pred[:, :10], true[:, :10])


def test_ensemble_tool_on_fold_files(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from cmrssl.engines.lvquan import write_oof_predictions

    predictions, target, phase = _synthetic(seed=1, n=400)
    names = [f"p{p:02d}:slice{z}" for p in range(10) for z in (4, 5)]  # 20 slice cycles x 20 frames
    subject_index, frame = np.repeat(np.arange(20), 20), np.tile(np.arange(20), 20)
    for config, pred in predictions.items():
        for fold in range(2):
            rows = np.flatnonzero(subject_index % 2 == fold)
            write_oof_predictions(tmp_path / config / f"fold{fold}" / "oof_predictions.npz", {
                "indices": pred["indices"][rows], "phase_probability": pred["phase_probability"][rows],
                "target_indices": target[rows], "target_phase": phase[rows],
                "subject_index": subject_index[rows], "frame": frame[rows]}, names)
    tool = Path(__file__).resolve().parents[2] / "tools" / "lvquan_ensemble.py"
    out = tmp_path / "ensemble.json"
    runs = [str(tmp_path / c) for c in predictions]
    result = subprocess.run([sys.executable, str(tool), *runs, "--out", str(out), "--top_k", "4"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert sorted(payload["search"]["rwt"]["members"]) == ["a", "b", "c"]
    assert payload["search_frames"] + payload["held_out_frames"] == 400
    assert "areas (mm^2)" in result.stdout
    # each configuration's pooled out-of-fold table, equal to its errors on all 400 frames
    assert "a: out-of-fold, 400 frames of 10 patients" in result.stdout
    expected = lvquan_table(predictions["a"]["indices"], target)["rwt"]["mae"]
    assert payload["cv_tables"]["a"]["rwt"]["mae"] == pytest.approx(expected)
    again = subprocess.run([sys.executable, str(tool), *runs, "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    # the bundle's own ensemble step (configs/ensemble.json) gives the same result
    bundle = Path(__file__).resolve().parents[2] / "bundles" / "cmr_lvquan_ensemble"
    from_bundle = tmp_path / "from_bundle.json"
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/ensemble.json",
                             "--run_dirs", json.dumps(runs), "--ensemble_file", str(from_bundle), "--top_k", "4"],
                            cwd=bundle, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(from_bundle.read_text())["search"] == payload["search"]
