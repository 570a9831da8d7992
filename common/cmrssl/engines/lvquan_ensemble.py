"""The optimal ensemble of LVQuan configurations from their out-of-fold predictions (run step).

Reads each configuration's ``fold*/oof_predictions.npz`` (written by the bundle's
``configs/evaluate.json``, :class:`cmrssl.engines.lvquan.OutOfFoldWriter`), prints
each configuration's pooled out-of-fold Table 1, splits the patients in two
seeded halves (:func:`cmrssl.metrics.lvquan_ensemble.split_patients`), chooses
per task the subset of the ``top_k`` best configurations on one half
(:func:`cmrssl.metrics.lvquan_ensemble.search_ensemble`), scores it on the
other and writes the result as JSON, whole or not at all.

Used by the bundle's ``configs/ensemble.json``, ``tools/lvquan_ensemble.py`` and
``tools/lvquan_cv.py``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np

from cmrssl.flags import as_bool
from cmrssl.io.atomic import atomic_file, check_can_write
from cmrssl.metrics.lvquan_ensemble import (TASK_COLUMNS, ensemble_prediction, format_table, lvquan_table, patient_of,
                                            prediction_table, search_ensemble, split_patients)

__all__ = ["OOF_ARRAYS", "read_oof_predictions", "load_run", "run_ensemble"]

PathLike = Union[str, os.PathLike]


#: the arrays of an out-of-fold predictions file (cmrssl.engines.lvquan.write_oof_predictions)
OOF_ARRAYS = ("subject_names", "indices", "phase_probability", "target_indices", "target_phase", "subject_index",
              "frame")


def read_oof_predictions(path: PathLike) -> Dict[str, np.ndarray]:
    """The arrays of one ``oof_predictions.npz``, checked; never unpickles (``allow_pickle=False``).

    Raises:
        ValueError: naming the file: not a readable ``.npz`` (cut short, not a zip, Python objects
            pickled into it), arrays missing, or rows that do not line up.
    """
    try:
        with np.load(path, allow_pickle=False) as content:
            arrays = {key: content[key] for key in content.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "allow_pickle" in reason:
            reason = "it holds pickled Python objects, which are never loaded; write numeric arrays with np.savez"
        raise ValueError(f"{path}: not a readable out-of-fold predictions file ({reason})") from None
    missing = [key for key in OOF_ARRAYS if key not in arrays]
    if missing:
        raise ValueError(f"{path}: not an out-of-fold predictions file of configs/evaluate.json: no "
                         f"{', '.join(missing)} (it holds {', '.join(sorted(arrays)) or 'nothing'})")
    rows = {key: len(arrays[key]) if arrays[key].ndim else None for key in OOF_ARRAYS if key != "subject_names"}
    if len(set(rows.values())) != 1:
        raise ValueError(f"{path}: its arrays do not line up, one row per frame: rows {rows}")
    index = arrays["subject_index"]
    if index.size and (not np.issubdtype(index.dtype, np.integer) or index.min() < 0
                       or index.max() >= len(arrays["subject_names"])):
        count = len(arrays["subject_names"])
        raise ValueError(f"{path}: subject_index must be whole numbers below the {count} subject_names")
    return arrays


def load_run(run_dir: PathLike) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """One configuration's folds merged and sorted by (subject, frame); also the subject names.

    Returns:
        ``({"indices" [N, 11], "phase_probability" [N], "target_indices", "target_phase",
        "subject_index", "frame"}, subject_names)``.

    Raises:
        FileNotFoundError: no ``fold*/oof_predictions.npz``. ValueError: a frame predicted twice, folds
        of different subjects, or a file :func:`read_oof_predictions` refuses (named).
    """
    files = sorted(Path(run_dir).glob("fold*/oof_predictions.npz"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no fold*/oof_predictions.npz (run configs/evaluate.json per fold)")
    parts = [read_oof_predictions(f) for f in files]
    names = parts[0]["subject_names"]
    for f, part in zip(files[1:], parts[1:]):
        if list(part["subject_names"]) != list(names):  # subject_index would point at other subjects
            raise ValueError(f"{f}: its subject_names differ from those of {files[0]} (folds of another dataset)")
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "subject_names"}
    order = np.lexsort((merged["frame"], merged["subject_index"]))
    merged = {k: v[order] for k, v in merged.items()}
    keys = np.stack([merged["subject_index"], merged["frame"]], axis=1)
    if len(np.unique(keys, axis=0)) != len(keys):
        raise ValueError(f"{run_dir}: a subject frame is predicted by more than one fold")
    return merged, names


def run_ensemble(run_dirs: Sequence[PathLike], out: PathLike, top_k: int = 6, seed: int = 0,
                 overwrite: bool = False) -> Path:
    """Search, score and write the ensemble of the configurations in ``run_dirs`` (module docstring).

    Args:
        run_dirs: one folder per configuration (its name names the configuration) holding
            ``fold*/oof_predictions.npz`` that together predict every subject once.
        out: the JSON written: ``runs``, ``seed``, ``top_k``, ``cv_tables`` (each configuration's
            pooled table), ``search`` (per task: members, search/held-out errors, best single),
            ``held_out_table``, ``search_frames``, ``held_out_frames``.
        top_k: configurations entering the exhaustive search per task.
        seed: of the patient split.
        overwrite: replace an existing ``out``.

    Raises:
        FileExistsError: ``out`` exists and not ``overwrite`` (checked before any work).
        FileNotFoundError / ValueError: missing predictions, configurations predicting other
        frames, duplicate run folder names, nothing predicted.
    """
    overwrite = as_bool(overwrite, "overwrite")
    out_path = check_can_write(Path(out), overwrite)
    run_dirs = [str(r) for r in run_dirs]
    if not run_dirs:
        raise ValueError("no run folders given")
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
    patients = len({patient_of(names[s]) for s in np.unique(reference["subject_index"])})
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
    payload = {"runs": run_dirs, "seed": seed, "top_k": top_k, "cv_tables": cv_tables, "search": result,
               "held_out_table": table, "search_frames": int(len(search_rows)), "held_out_frames": int(len(holdout_rows))}
    with atomic_file(out_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out_path}", flush=True)
    return out_path
