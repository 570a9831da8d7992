"""The study's ledger: one CSV row per finished fine-tune, kept (and committed) as the study grows.

A row is a run of one arm, labelled count and seed under one budget and the config hash of that budget
(:func:`cmrssl.study.budgets.budget_hash`, per arm); the study skips a run whose row is already in the ledger for
the same budget and hash, so the table can be completed over several machines and sessions. Rows of
another hash stay in the file and out of the tables.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from cmrssl.io.atomic import atomic_file

from .plan import run_key

__all__ = ["FIRST_FIELDS", "add_rows", "commit_of", "current", "read_ledger", "recorded"]

#: the columns that name a run, first in the file; the metrics follow, ``per_subject`` (JSON) last
FIRST_FIELDS = ["budget", "config_hash", "arm", "labelled", "seed", "labelled_subjects", "commit", "iterations",
                "train_seconds", "eval_seconds", "overrides"]
LAST_FIELDS = ["per_subject"]


def commit_of(root: Path, ignore: Optional[Path] = None) -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes to tracked files but ``ignore``: the ledger,
    which the study itself changes as it goes), or ``""`` outside a git checkout."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD")
    exclude = [f":(exclude){Path(ignore).resolve()}"] if ignore is not None else []
    changed = git("status", "--porcelain", "--untracked-files=no", "--", str(Path(root).resolve()), *exclude)
    return commit + ("-dirty" if commit and changed else "")


def read_ledger(path: Path) -> List[dict]:
    """The ledger's rows (``per_subject`` parsed; the rest as written); none when the file does not exist."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["per_subject"] = json.loads(row["per_subject"]) if row.get("per_subject") else {}
    return rows


def current(rows: Iterable[dict], budget: str, config_hashes: Mapping[str, str]) -> List[dict]:
    """The rows of ``budget`` made at their arm's present config hash (``config_hashes``: arm -> hash)."""
    return [r for r in rows if r.get("budget") == budget and r.get("config_hash")
            and r.get("config_hash") == config_hashes.get(r.get("arm"))]


def recorded(rows: Iterable[dict], budget: str, config_hashes: Mapping[str, str]) -> Set[Tuple[str, str, int]]:
    """The runs (:func:`cmrssl.study.plan.run_key`) the ledger holds for ``budget`` at their arm's config hash."""
    return {run_key(r["arm"], r["labelled"], r["seed"]) for r in current(rows, budget, config_hashes)}


def _key(row: dict) -> tuple:
    return (row["budget"], row["config_hash"], *run_key(row["arm"], row["labelled"], row["seed"]))


def add_rows(path: Path, new: Sequence[dict]) -> int:
    """Add ``new`` rows to the ledger at ``path`` (a row of the same run, budget and hash is replaced), written
    whole under a temporary name first; returns how many rows were not there before."""
    rows = read_ledger(path)
    known = {_key(r): i for i, r in enumerate(rows)}
    added = 0
    for row in new:
        if _key(row) in known:
            rows[known[_key(row)]] = row
        else:
            known[_key(row)] = len(rows)
            rows.append(row)
            added += 1
    fields = list(FIRST_FIELDS)
    for row in rows:
        fields += [k for k in row if k not in fields and k not in LAST_FIELDS]
    fields += LAST_FIELDS
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "per_subject": json.dumps(row.get("per_subject") or {}, sort_keys=True,
                                                          separators=(",", ":"))})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(text.getvalue())
    return added
