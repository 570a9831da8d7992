"""The few-label study: split, pools, plan, budgets, run ledger, statistics, tables and plot.

``tools/study.py`` is its command line (:mod:`.options` checks what it is given). The study composes bundle
runs (``python -m monai.bundle run`` of this repository's bundles, as a user would type them), runs them one
after another, records each finished fine-tune in a ledger (:mod:`.ledger`) and tabulates with one pair per
held-out subject (:mod:`.statistics`).
"""

from .arms import STRUCTURE_ROWS, Repository, all_arms, arm_label, arm_parts, pretraining_methods
from .budgets import BUDGETS, budget_hash
from .ledger import add_rows, commit_of, current, read_ledger, recorded
from .options import StudyOptions, check_labelled_counts, study_options
from .plan import Step, plan, run_key
from .report import collect, comparison, ledger_tables, table
from .runner import StepFailed, describe_plan, execute, measure_rates, restart, set_aside_stale, stale_runs
from .split import make_split, planned_split, prepare_data, study_split

__all__ = ["BUDGETS", "STRUCTURE_ROWS", "Repository", "Step", "StepFailed", "StudyOptions", "add_rows", "all_arms",
           "arm_label", "arm_parts", "budget_hash", "check_labelled_counts", "collect", "commit_of", "comparison",
           "current", "describe_plan", "execute", "ledger_tables", "make_split", "measure_rates", "plan",
           "planned_split", "prepare_data", "pretraining_methods", "read_ledger", "recorded", "restart", "run_key",
           "set_aside_stale", "stale_runs", "study_options", "study_split", "table"]
