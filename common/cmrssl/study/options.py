"""The study's options, checked before any work: each refusal names the option and what it takes.

``tools/study.py`` hands its command line to :func:`study_options`; what it returns is what the study runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

from cmrssl.io.atomic import check_not_input

from .arms import Repository, all_arms
from .budgets import BUDGETS
from .split import RECORD

__all__ = ["StudyOptions", "check_labelled_counts", "check_study_record", "labelled_counts", "no_repeats",
           "split_list", "study_options"]

def split_list(value, cast=str, option: str = "", spaces: bool = True) -> List:
    """``"a,b"``, ``"a b"`` (unless not ``spaces``: paths), ``("a", "b")`` or ``7`` (as fire hands them over) -> a list.

    Raises:
        ValueError: an item ``cast`` refuses, naming ``option``.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    parts = [part.strip() for item in items for part in (str(item).replace(",", " ").split() if spaces
                                                         else str(item).split(",")) if part.strip()]
    try:
        return [cast(part) for part in parts]
    except ValueError:
        raise ValueError(f"{option or 'a list option'} takes {'whole numbers' if cast is int else 'values'} "
                         f"separated by commas, e.g. 0,1; got {value!r}") from None


def no_repeats(option: str, values: Sequence) -> List:
    """``values`` when none is given twice: a repeated seed or count would run again and count twice in the tables."""
    repeated = sorted({str(v) for v in values if list(map(str, values)).count(str(v)) > 1})
    if repeated:
        raise ValueError(f"{option} gives {', '.join(repeated)} more than once ({','.join(map(str, values))}); "
                         "each run is made once and counted once: list each value once")
    return list(values)


def labelled_counts(value) -> List[Union[int, str]]:
    """``--labelled``: positive counts and ``all`` (the whole labelled pool)."""
    counts: List[Union[int, str]] = []
    for item in split_list(value) or [value]:
        if item.lower() == "all":
            counts.append("all")
        elif item.isdigit() and int(item) > 0:
            counts.append(int(item))
        else:
            raise ValueError(f"--labelled takes positive counts and 'all', e.g. 1,5,all; got {item!r}")
    return counts


def check_labelled_counts(counts: Sequence, pool: int) -> None:
    """Refuse a labelled count larger than the labelled pool (before any work; the bundle would refuse it later)."""
    too_many = [n for n in counts if n != "all" and int(n) > pool]
    if too_many:
        raise ValueError(f"--labelled {','.join(map(str, too_many))}: the labelled pool holds {pool} subjects (the "
                         f"patients not held out for evaluation); give at most {pool}, or 'all'")


@dataclass(frozen=True)
class StudyOptions:
    """A study's checked options: which runs (arms x counts x seeds) of which budget, on what, into where."""

    budget: str
    arms: List[str]
    counts: List[Union[int, str]]
    seeds: List[int]
    data: Path
    out: Path
    extra: List[str]
    eval_per_group: int
    ledger: Optional[Path]

    @property
    def settings(self) -> dict:
        """What ``OUT/study.json`` records: fixed per output folder (:func:`check_study_record`)."""
        return {"budget": self.budget, "data": str(self.data), "eval_per_group": self.eval_per_group,
                "extra_unlabelled": [str(Path(c).resolve()) for c in self.extra]}

    @property
    def record(self) -> Path:
        return self.out / RECORD


def _arms(repo: Repository, spec: dict, methods) -> List[str]:
    known = all_arms(repo)
    arms = split_list(methods) if methods is not None else (known if spec["arms"] == "all" else list(spec["arms"]))
    if not arms:
        raise ValueError(f"--methods names no arm; known: {', '.join(known)}")
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; known: {', '.join(known)}")
    arms = no_repeats("--methods", arms)
    if "scratch" not in arms and any(a != "ranking" for a in arms):
        arms = ["scratch"] + arms  # every comparison is against scratch
    return arms


def _paths(data: str, out: str, extra: List[str], ledger: str) -> tuple:
    """``--data``, ``--out`` and ``--ledger`` resolved; the study writes nothing into its inputs."""
    data_path, out_path = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    existing = next((p for p in (out_path, *out_path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--out {out_path}: {existing} is a file; the study writes a folder: give a new or empty "
                         "folder, or the folder of an earlier study to continue it")
    for cine in extra:
        if not Path(cine).exists():
            raise FileNotFoundError(f"--extra_unlabelled: {cine} does not exist")
    check_not_input(out_path, [data_path, *extra])
    ledger_path = Path(ledger).expanduser().resolve() if ledger else None
    if ledger_path is not None and (ledger_path.is_dir() or ledger_path.suffix != ".csv"):
        raise ValueError(f"--ledger {ledger_path}: give a .csv file (it is made when absent)")
    if ledger_path is not None and data_path in ledger_path.parents:
        raise ValueError(f"--ledger {ledger_path} lies inside --data {data_path}; the study writes nothing there")
    if data_path in out_path.parents:
        raise ValueError(f"--out {out_path} lies inside --data {data_path}; the study writes nothing there")
    return data_path, out_path, ledger_path


def study_options(repo: Repository, data: str, out: str, stray: Sequence = (), budget: str = "small", methods=None,
                  labelled=None, seeds=None, extra_unlabelled=(), eval_per_group: int = 4,
                  ledger: str = "") -> StudyOptions:
    """The command line's options checked, in the order a user reads them, before anything is read or written;
    a list option takes ``"a,b"`` (``methods``, ``labelled``, ``seeds``; ``extra_unlabelled``: paths, commas only).
    An arm list without ``scratch`` gains it (every comparison is against scratch) unless it is the ranking arm
    alone. Unset lists take the budget's (:data:`cmrssl.study.BUDGETS`).

    Raises:
        ValueError, FileNotFoundError: the option and what is wrong with it.
    """
    if stray:  # fire hands a value after a list option's first (--seeds 0 1) to the next free parameter
        raise ValueError(f"unexpected argument(s) {' '.join(map(str, stray))}: a list option takes its values "
                         "separated by commas, e.g. --seeds 0,1 --labelled 1,5,all")
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    spec = BUDGETS[budget]
    arms = _arms(repo, spec, methods)
    counts = no_repeats("--labelled", labelled_counts(labelled) if labelled is not None else list(spec["labelled"]))
    seed_list = no_repeats("--seeds", split_list(seeds, int, "--seeds") if seeds is not None else list(spec["seeds"]))
    if any(seed < 0 for seed in seed_list):
        raise ValueError(f"--seeds must be whole numbers >= 0, got {','.join(map(str, seed_list))}")
    extra = split_list(extra_unlabelled, spaces=False) if extra_unlabelled else []
    data_path, out_path, ledger_path = _paths(data, out, extra, ledger)
    options = StudyOptions(budget, arms, counts, seed_list, data_path, out_path, extra, int(eval_per_group),
                           ledger_path)
    check_study_record(options)
    return options


def check_study_record(options: StudyOptions) -> None:
    """Refuse an output folder whose ``study.json`` records another budget, data or pools: a study's runs are
    comparable only within one of them."""
    if options.record.exists():
        held = json.loads(options.record.read_text())
        if held != options.settings:
            raise ValueError(f"{options.out}: holds a study with {held}, not {options.settings}; use another --out")
