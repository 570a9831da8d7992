"""Ensemble subset search on synthetic out-of-fold predictions, and the Table 1 errors."""

from __future__ import annotations

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
