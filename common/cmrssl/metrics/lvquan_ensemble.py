"""LVQuan evaluation table and the optimal ensemble subset search (Gessert & Schlaefer, LVQuan19).

The paper trains many configurations, keeps their out-of-fold predictions,
and for each task (areas, dimensions, wall thicknesses, phase) searches
exhaustively the subset of the best configurations whose averaged prediction
minimises the error. Choosing a subset on the same predictions it is scored
on is optimistic, so the search runs on one part of the subjects and the
chosen subset is scored on the other (:func:`search_ensemble`).

Errors follow the challenge: per index mean absolute error (MAE) +- SD of
the absolute errors and Pearson correlation (PCC); a group (areas, dims,
RWT) reports the mean over its indices; phase error rate in percent.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from cmrssl.metrics.lv_indices import INDEX_NAMES

__all__ = ["TASK_COLUMNS", "TASKS", "lvquan_table", "prediction_table", "format_table", "search_ensemble",
           "ensemble_prediction", "patient_of", "split_patients"]

#: Columns of each regression task in the 11-index order.
TASK_COLUMNS = {"areas": (0, 1), "dims": (2, 3, 4), "rwt": (5, 6, 7, 8, 9, 10)}
TASKS = ("areas", "dims", "rwt", "phase")


def _pcc(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def lvquan_table(pred_indices: np.ndarray, true_indices: np.ndarray, pred_phase: Optional[np.ndarray] = None,
                 true_phase: Optional[np.ndarray] = None) -> Dict[str, dict]:
    """Errors per index and per task.

    Args:
        pred_indices, true_indices: ``[N, 11]`` in mm / mm^2 (:data:`INDEX_NAMES` order).
        pred_phase, true_phase: optional ``[N]`` 0/1.

    Returns:
        ``{name: {"mae", "sd", "pcc"}}`` for every index and for ``areas``/``dims``/``rwt``
        (means over their indices), and ``phase: {"error_rate_percent"}`` when phases are given.
    """
    pred_indices = np.asarray(pred_indices, np.float64)
    true_indices = np.asarray(true_indices, np.float64)
    if pred_indices.shape != true_indices.shape or pred_indices.ndim != 2 or pred_indices.shape[1] != 11:
        raise ValueError(f"predictions {pred_indices.shape} and targets {true_indices.shape} must both be [N, 11]")
    errors = np.abs(pred_indices - true_indices)
    table: Dict[str, dict] = {}
    for column, name in enumerate(INDEX_NAMES):
        table[name] = {"mae": float(errors[:, column].mean()), "sd": float(errors[:, column].std()),
                       "pcc": _pcc(pred_indices[:, column], true_indices[:, column])}
    for task, columns in TASK_COLUMNS.items():
        rows = [table[INDEX_NAMES[c]] for c in columns]
        table[task] = {key: float(np.mean([r[key] for r in rows])) for key in ("mae", "sd", "pcc")}
    if pred_phase is not None and true_phase is not None:
        pred_phase, true_phase = np.asarray(pred_phase).ravel(), np.asarray(true_phase).ravel()
        if pred_phase.shape != true_phase.shape:
            raise ValueError(f"phase predictions {pred_phase.shape} and targets {true_phase.shape} differ")
        table["phase"] = {"error_rate_percent": float(100.0 * np.mean(pred_phase != true_phase))}
    return table


def prediction_table(indices: np.ndarray, phase_probability: np.ndarray, target_indices: np.ndarray,
                     target_phase: np.ndarray) -> Dict[str, dict]:
    """:func:`lvquan_table` of one model's predictions: phase (probability > 0.5 is systole) only
    when every ``phase_probability`` is a number; index rows of a phase-only model (NaN indices)
    are the targets themselves."""
    has_phase = not np.isnan(phase_probability).any()
    has_indices = not np.isnan(indices).any()
    return lvquan_table(indices if has_indices else target_indices, target_indices,
                        (phase_probability > 0.5).astype(int) if has_phase else None,
                        target_phase if has_phase else None)


def format_table(table: Mapping[str, dict], title: str = "") -> str:
    """The paper's Table 1 layout: areas (mm^2), dims and RWT (mm) as MAE +- SD and PCC, phase error rate."""
    lines = [title] if title else []
    lines.append(f"{'':10s}{'MAE +- SD':>22s}{'PCC':>8s}")
    for task, unit in (("areas", "mm^2"), ("dims", "mm"), ("rwt", "mm")):
        row = table[task]
        lines.append(f"{task + ' (' + unit + ')':10s}{row['mae']:>12.2f} +- {row['sd']:<6.2f}{row['pcc']:>8.3f}")
    if "phase" in table:
        lines.append(f"{'phase':10s}{table['phase']['error_rate_percent']:>12.1f} % error rate")
    return "\n".join(lines)


def ensemble_prediction(predictions: Mapping[str, Mapping[str, np.ndarray]], members: Sequence[str]) -> Dict[str, np.ndarray]:
    """Mean of the members' ``indices [N, 11]`` and of their ``phase_probability [N]`` (systole)."""
    out = {"indices": np.mean([predictions[m]["indices"] for m in members], axis=0)}
    if all("phase_probability" in predictions[m] for m in members):
        out["phase_probability"] = np.mean([predictions[m]["phase_probability"] for m in members], axis=0)
    return out


def _task_error(prediction: Mapping[str, np.ndarray], target_indices, target_phase, task: str, rows) -> float:
    if task == "phase":
        return float(np.mean((prediction["phase_probability"][rows] > 0.5) != target_phase[rows]))
    columns = list(TASK_COLUMNS[task])
    return float(np.abs(prediction["indices"][rows][:, columns] - target_indices[rows][:, columns]).mean())


def search_ensemble(predictions: Mapping[str, Mapping[str, np.ndarray]], target_indices: np.ndarray,
                    target_phase: Optional[np.ndarray], search_rows: Sequence[int], holdout_rows: Sequence[int],
                    top_k: int = 6, tasks: Sequence[str] = TASKS) -> Dict[str, dict]:
    """Per task, the subset of the ``top_k`` best configurations minimising the search-split error.

    Args:
        predictions: ``{config: {"indices": [N, 11] mm, "phase_probability": [N]}}`` out-of-fold.
        target_indices: ``[N, 11]``; target_phase: ``[N]`` 0/1 (needed for the phase task).
        search_rows, holdout_rows: disjoint row indices (split by subject, not by frame).
        top_k: configurations (best single ones on the search rows) entering the exhaustive
            search (2**top_k - 1 subsets).

    Returns:
        ``{task: {"members", "search_error", "holdout_error", "best_single", "best_single_holdout_error"}}``
        (errors: mean absolute error in mm / mm^2, or phase error rate as a fraction).

    Raises:
        ValueError: overlapping splits, no predictions, or phase without targets/probabilities.
    """
    search_rows, holdout_rows = np.asarray(search_rows, int), np.asarray(holdout_rows, int)
    if np.intersect1d(search_rows, holdout_rows).size:
        raise ValueError("search and held-out rows overlap: the held-out score would be optimistic")
    if not predictions:
        raise ValueError("no predictions to ensemble")
    if top_k < 1 or top_k > 12:
        raise ValueError(f"top_k must be 1..12 (2**top_k subsets), got {top_k}")
    target_indices = np.asarray(target_indices, np.float64)
    result: Dict[str, dict] = {}
    for task in tasks:
        if task == "phase":
            if target_phase is None or not all("phase_probability" in p for p in predictions.values()):
                raise ValueError("the phase task needs target_phase and every config's phase_probability")
            target_phase = np.asarray(target_phase)
        single = {name: _task_error(p, target_indices, target_phase, task, search_rows) for name, p in predictions.items()}
        ranked: List[str] = sorted(single, key=lambda n: (single[n], n))[:top_k]
        best_members, best_error = None, np.inf
        for size in range(1, len(ranked) + 1):
            for members in itertools.combinations(ranked, size):
                error = _task_error(ensemble_prediction(predictions, members), target_indices, target_phase, task,
                                    search_rows)
                if error < best_error - 1e-12:
                    best_members, best_error = list(members), error
        chosen = ensemble_prediction(predictions, best_members)
        best_single = ranked[0]
        result[task] = {
            "members": best_members,
            "search_error": best_error,
            "holdout_error": _task_error(chosen, target_indices, target_phase, task, holdout_rows),
            "best_single": best_single,
            "best_single_holdout_error": _task_error(predictions[best_single], target_indices, target_phase, task,
                                                     holdout_rows),
        }
    return result


def patient_of(subject_name: str) -> str:
    """The patient of a slice-cycle subject name ``patient:sliceZ`` (the name itself without ``:``)."""
    return str(subject_name).split(":")[0]


def split_patients(names: Sequence[str], subject_index: np.ndarray, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of the search half and of the held-out half, split by patient (seeded).

    Args:
        names: subject names (``patient:sliceZ``) indexed by ``subject_index``.
        subject_index: ``[N]`` the subject of each prediction row.
        seed: of the permutation of the sorted patients; the first half of it is held out.

    Returns:
        ``(search_rows, holdout_rows)`` row indices.

    Raises:
        ValueError: fewer than 2 patients.
    """
    patients = sorted({patient_of(names[s]) for s in np.unique(subject_index)})
    if len(patients) < 2:
        raise ValueError("the search/held-out split needs at least 2 patients")
    order = np.random.default_rng(seed).permutation(len(patients))
    held_out = {patients[i] for i in order[: len(patients) // 2]}
    in_held_out = np.array([patient_of(names[s]) in held_out for s in subject_index])
    return np.flatnonzero(~in_held_out), np.flatnonzero(in_held_out)
