"""Optimal ensemble subset of LVQuan configurations from their out-of-fold predictions.

    python tools/lvquan_ensemble.py RUN_DIR [RUN_DIR ...] --out result.json [--top_k 6] [--seed 0] [--overwrite]

Each RUN_DIR is one configuration's output (``bundles/cmr_lvquan_ensemble/runs/<name>``) with
``fold*/oof_predictions.npz`` written by ``configs/evaluate.json``; together its folds must
predict every subject once. The patients are split in two halves (seeded): the subset of the
``top_k`` best configurations minimising each task's error (areas, dims, RWT, phase) is chosen
on one half and scored on the other (Gessert & Schlaefer's guard against optimistic bias).
Prints each configuration's out-of-fold Table 1 (all folds pooled, its cross-validation
score), then the held-out Table 1 (chosen subsets per task) and writes ``--out`` (JSON), never
overwriting it unless ``--overwrite``.

A thin command line over ``cmrssl.engines.lvquan_ensemble.run_ensemble``, which the bundle's
``configs/ensemble.json`` runs too (``python -m monai.bundle run --config_file configs/ensemble.json
--run_dirs "['runs/a','runs/b']" --ensemble_file result.json``).
"""

from __future__ import annotations

import fire

from cmrssl.cli_errors import tool_errors
from cmrssl.engines.lvquan_ensemble import run_ensemble


def main(*run_dirs: str, out: str = "lvquan_ensemble.json", top_k: int = 6, seed: int = 0,
         overwrite: bool = False) -> None:
    with tool_errors("lvquan_ensemble"):
        run_ensemble(run_dirs, out, top_k=top_k, seed=seed, overwrite=overwrite)


if __name__ == "__main__":
    fire.Fire(main)
