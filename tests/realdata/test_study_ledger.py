"""The few-label study's committed results come from its committed ledger: ``docs/study/cpu/table.md`` is what
``tools/study.py --tables_only`` makes from ``docs/study/ledger.csv`` (the command docs/study.md gives), and every
row of the ledger names what it ran under."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.realdata

REPO_ROOT = Path(__file__).resolve().parents[2]
LEDGER = REPO_ROOT / "docs" / "study" / "ledger.csv"
TABLES = REPO_ROOT / "docs" / "study" / "cpu"


def _cpu_rows() -> list:
    if not LEDGER.exists():
        pytest.skip(f"{LEDGER} is not there yet")
    with open(LEDGER, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["budget"] == "cpu"]


def test_every_ledger_row_names_its_commit_hash_subjects_and_plateau():
    rows = _cpu_rows()
    assert rows
    for row in rows:
        assert len(row["config_hash"]) == 12 and row["commit"] and not row["commit"].endswith("-dirty"), row["arm"]
        # every arm trains 6000 supervised iterations; the ranking arm alternates each with a ranking one
        assert row["iterations"] == ("12000" if row["arm"] == "ranking" else "6000"), row["arm"]
        assert row["plateau"] in ("yes", "no")
        assert row["labelled_subjects"] if row["labelled"] != "all" else row["labelled_subjects"] == "all"


def test_the_committed_cpu_table_is_what_the_ledger_makes(tmp_path, acdc_root, sunnybrook_root):
    _cpu_rows()
    out = tmp_path / "tables"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "study.py"), "--data", str(acdc_root), "--out", str(out),
         "--budget", "cpu", "--extra_unlabelled", str(sunnybrook_root / "dicoms" / "SCD0000101"),
         "--ledger", str(LEDGER), "--tables_only"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "table.md").read_text() == (TABLES / "table.md").read_text(), (
        "docs/study/cpu/table.md differs from what the ledger makes: run the --tables_only command of docs/study.md")
