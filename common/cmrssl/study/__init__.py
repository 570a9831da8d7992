"""The few-label study: split, pools, plan, budgets, run ledger, statistics, tables and plot.

``tools/study.py`` is its command line. The study composes bundle runs (``python -m monai.bundle run``
of this repository's bundles, as a user would type them), runs them one after another, records each
finished fine-tune in a ledger (:mod:`.ledger`) and tabulates with one pair per held-out subject
(:mod:`.statistics`).
"""

from .arms import STRUCTURE_ROWS, Repository, all_arms, arm_label, arm_parts, pretraining_methods
from .budgets import BUDGETS, budget_hash
from .ledger import add_rows, commit_of, current, read_ledger, recorded
from .plan import Step, plan, run_key
from .report import collect, comparison, table
from .runner import StepFailed, execute, measure_rates, restart, set_aside_stale, stale_runs
from .split import make_split, prepare_data

__all__ = ["BUDGETS", "STRUCTURE_ROWS", "Repository", "Step", "StepFailed", "add_rows", "all_arms", "arm_label",
           "arm_parts", "budget_hash", "collect", "commit_of", "comparison", "current", "execute", "make_split",
           "measure_rates", "plan", "prepare_data", "pretraining_methods", "read_ledger", "recorded", "restart",
           "run_key", "set_aside_stale", "stale_runs", "table"]
