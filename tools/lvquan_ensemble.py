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
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Sequence, Tuple

import fire
import numpy as np

from cmrssl.io.atomic import atomic_file, check_can_write
from cmrssl.metrics.lvquan_ensemble import (TASK_COLUMNS, ensemble_prediction, format_table, lvquan_table,
                                            prediction_table, search_ensemble)


def load_run(run_dir: Path) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """One configuration's folds merged and sorted by (subject, frame); also the subject names."""
    files = sorted(Path(run_dir).glob("fold*/oof_predictions.npz"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no fold*/oof_predictions.npz (run configs/evaluate.json per fold)")
    parts = [dict(np.load(f)) for f in files]
    names = parts[0]["subject_names"]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "subject_names"}
    order = np.lexsort((merged["frame"], merged["subject_index"]))
    merged = {k: v[order] for k, v in merged.items()}
    keys = np.stack([merged["subject_index"], merged["frame"]], axis=1)
    if len(np.unique(keys, axis=0)) != len(keys):
        raise ValueError(f"{run_dir}: a subject frame is predicted by more than one fold")
    return merged, names


def split_patients(names: Sequence[str], subject_index: np.ndarray, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of the search half and of the held-out half, by patient (name before ``:``)."""
    patients = sorted({str(names[s]).split(":")[0] for s in np.unique(subject_index)})
    if len(patients) < 2:
        raise ValueError("the search/held-out split needs at least 2 patients")
    order = np.random.default_rng(seed).permutation(len(patients))
    held_out = {patients[i] for i in order[: len(patients) // 2]}
    in_held_out = np.array([str(names[s]).split(":")[0] in held_out for s in subject_index])
    return np.flatnonzero(~in_held_out), np.flatnonzero(in_held_out)


def run_ensemble(run_dirs: Sequence[str], out: str, top_k: int = 6, seed: int = 0, overwrite: bool = False) -> Path:
    out_path = check_can_write(Path(out), overwrite)
    predictions, reference, names = {}, None, None
    for run_dir in run_dirs:
        merged, run_names = load_run(Path(run_dir))
        key = np.stack([merged["subject_index"], merged["frame"]], axis=1)
        if reference is None:
            reference, names = merged, run_names
        elif not np.array_equal(key, np.stack([reference["subject_index"], reference["frame"]], axis=1)) \
                or list(run_names) != list(names):
            raise ValueError(f"{run_dir}: predicts other subjects/frames than {run_dirs[0]}")
        predictions[Path(run_dir).name] = {"indices": merged["indices"], "phase_probability": merged["phase_probability"]}
    if len(predictions) != len(run_dirs):
        raise ValueError("run folders must have distinct names (they name the configurations)")
    # Each configuration alone, every fold pooled: the cross-validation numbers of single models.
    patients = len({str(names[s]).split(":")[0] for s in np.unique(reference["subject_index"])})
    cv_tables = {}
    for name, p in predictions.items():
        cv_tables[name] = prediction_table(p["indices"], p["phase_probability"], reference["target_indices"],
                                           reference["target_phase"])
        print(format_table(cv_tables[name], f"{name}: out-of-fold, {len(p['indices'])} frames of {patients} patients"))
    search_rows, holdout_rows = split_patients(names, reference["subject_index"], seed)
    has_phase = all(np.isfinite(p["phase_probability"]).all() for p in predictions.values())
    has_indices = all(np.isfinite(p["indices"]).all() for p in predictions.values())
    tasks = [t for t in ("areas", "dims", "rwt") if has_indices] + (["phase"] if has_phase else [])
    if not tasks:
        raise ValueError("no configuration predicts every row (indices or phase)")
    result = search_ensemble(predictions, reference["target_indices"], reference["target_phase"], search_rows,
                             holdout_rows, top_k=top_k, tasks=tasks)
    # Held-out Table 1: each task's rows from its own chosen subset.
    target = reference["target_indices"][holdout_rows]
    combined = target.copy()
    for task in ("areas", "dims", "rwt"):
        if task in result:
            chosen = ensemble_prediction(predictions, result[task]["members"])["indices"][holdout_rows]
            combined[:, list(TASK_COLUMNS[task])] = chosen[:, list(TASK_COLUMNS[task])]
    phase_pred = None
    if "phase" in result:
        phase_pred = (ensemble_prediction(predictions, result["phase"]["members"])["phase_probability"][holdout_rows] > 0.5)
    table = lvquan_table(combined, target, None if phase_pred is None else phase_pred.astype(int),
                         None if phase_pred is None else reference["target_phase"][holdout_rows])
    print(format_table(table, f"held-out half: {len(holdout_rows)} frames; subsets chosen on {len(search_rows)} frames"))
    for task, row in result.items():
        print(f"{task:6s} subset {row['members']}  search {row['search_error']:.4g}  held-out {row['holdout_error']:.4g}"
              f"  (best single {row['best_single']}: {row['best_single_holdout_error']:.4g})")
    payload = {"runs": [str(r) for r in run_dirs], "seed": seed, "top_k": top_k, "cv_tables": cv_tables, "search": result,
               "held_out_table": table, "search_frames": int(len(search_rows)), "held_out_frames": int(len(holdout_rows))}
    with atomic_file(out_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out_path}")
    return out_path


def main(*run_dirs: str, out: str = "lvquan_ensemble.json", top_k: int = 6, seed: int = 0,
         overwrite: bool = False) -> None:
    try:
        run_ensemble(run_dirs, out, top_k=top_k, seed=seed, overwrite=overwrite)
    except FileExistsError as err:
        print(f"lvquan_ensemble: error: {err} (use --overwrite)", file=sys.stderr)
        raise SystemExit(1)
    except (FileNotFoundError, ValueError) as err:
        print(f"lvquan_ensemble: error: {err}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    fire.Fire(main)
