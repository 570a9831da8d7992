"""The ranking README's Results come from the committed per-subject evaluations (``docs/results/ranking_heldout/``):
each row's MAE (mean ± SD over seeds) recomputed from the files, and each paired row reprinted by ``tools/compare.py``
as the README's command block runs it. No training: the files are the runs' own ``function.csv`` and, under
``frames/``, ``metrics.csv``."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from cmrssl.study.report import function_errors
from tool_cli import run_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "bundles" / "cmr_ranking_ssl" / "docs" / "README.md"
HELDOUT = REPO_ROOT / "docs" / "results" / "ranking_heldout"
#: the README's "labelled" cell -> the files' tag (sup5_s0.csv, rankall_s0.csv, ...)
COUNTS = {"5": "5", "10": "10", "all 80": "all"}
ARMS = {"supervised only": "sup", "ranking SSL, 0.6": "rank", "ranking SSL, 0.7": "rank07_"}
#: arms every count has rows for (0.7's where its runs are committed)
REQUIRED_ARMS = ("supervised only", "ranking SSL, 0.6")
QUANTITIES = ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent")
DICE = ("dice_lv_cavity", "dice_lv_myocardium", "dice_rv_cavity")
#: the paired table's row names -> the compared quantity
ROWS = dict(zip(("LV EDV (ml)", "LV ESV (ml)", "LV EF (%)", "Dice LV cavity", "Dice LV myocardium", "Dice RV cavity"),
                QUANTITIES + DICE))


def _results() -> str:
    text = README.read_text()
    return text[text.index("## Results"):]


def _numbers(cell: str) -> list:
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?", cell.replace("−", "-"))]


def _seed_files(arm: str, tag: str, folder: Path = HELDOUT) -> list:
    return sorted(folder.glob(f"{arm}{tag}_s[0-9].csv"))


def _mae(path: Path, quantity: str) -> float:
    return statistics.mean(function_errors(path, [quantity])[quantity].values())


def _cells(line: str) -> list:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _summary_rows() -> list:
    rows = []
    for line in _results().splitlines():
        cells = _cells(line)
        if len(cells) == 7 and cells[0] in COUNTS and cells[1] in ARMS:
            rows.append(cells)
    return rows


def _ours(tag: str) -> str:
    """The ranking arm a count's paired rows compare: the current default's (0.7) where its runs are committed."""
    return "rank07_" if _seed_files("rank07_", tag) else "rank"


def test_every_count_and_arm_of_the_results_table_is_there():
    found = {(c[0], c[1]) for c in _summary_rows()}
    expected = {(n, a) for n in COUNTS for a in ARMS if a in REQUIRED_ARMS or _seed_files(ARMS[a], COUNTS[n])}
    assert found == expected


@pytest.mark.parametrize("cells", _summary_rows(), ids=lambda c: f"{c[0]}-{c[1]}")
def test_each_row_is_the_mean_over_its_seed_files(cells):
    files = _seed_files(ARMS[cells[1]], COUNTS[cells[0]])
    assert len(files) == int(cells[6]) >= 1
    for quantity, cell in zip(QUANTITIES, cells[2:5]):
        values = [_mae(path, quantity) for path in files]
        stated = _numbers(cell)
        assert stated[0] == pytest.approx(statistics.mean(values), abs=0.051), (quantity, cells)
        if len(values) > 1:
            assert stated[1] == pytest.approx(statistics.stdev(values), abs=0.051), (quantity, cells)


@pytest.mark.parametrize("count", list(COUNTS))
def test_each_paired_row_is_what_the_compare_tool_prints(count):
    """The MAE rows from the runs' function.csv, the Dice rows from their metrics.csv (``frames/``); the ranking
    column is the current default's (0.7) where its runs are committed, else 0.6's."""
    tag = COUNTS[count]
    stated = {}
    for line in _results().splitlines():
        cells = _cells(line)
        if len(cells) == 7 and cells[0].startswith(f"{count} (") and cells[1].startswith(("LV ", "Dice ")):
            stated[cells[1]] = cells[2:]
    assert set(stated) == set(ROWS)
    ours = _ours(tag)
    for folder, quantities in ((HELDOUT, QUANTITIES), (HELDOUT / "frames", DICE)):
        files = {arm: ",".join(str(p) for p in _seed_files(arm, tag, folder)) for arm in ("sup", ours)}
        result = run_tool("compare", "--base", files["sup"], "--ours", files[ours], "--labels", "supervised,ranking",
                          "--quantities", ",".join(quantities))
        assert result.returncode == 0, result.stderr
        printed = {}
        for line in result.stdout.splitlines():
            cells = _cells(line)
            if cells[0] in quantities:
                printed[cells[0]] = cells[1:]
        for name, quantity in ROWS.items():
            if quantity in quantities:
                assert [c.replace("−", "-") for c in stated[name]] == printed[quantity], name
