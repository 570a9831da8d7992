"""The study's results: a row per finished run (with its per-subject values), the tables and the plot."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from cmrssl.data.subsets import drawn_subjects_in
from cmrssl.io.atomic import atomic_file
from cmrssl.metrics.quality import LV_CAVITY_LOST_DICE, frames_lv_cavity_lost

from .arms import STRUCTURE_ROWS, Repository, arm_label, arm_parts
from .ledger import add_rows, current, read_ledger
from .plan import Step, run_key
from .runner import read_provenance, timings
from .statistics import (PLATEAU_GAIN, PRETEXT_FLAT, bootstrap_interval, hd95_counting_lost, paired_differences,
                         plateau_gain, pretext_drop, subject_means, wilcoxon_p)

__all__ = ["CLINICAL_COMPARED", "clinical_comparison_lines", "collect", "comparison", "convergence_note",
           "drawn_subjects", "epoch_losses", "frame_scores", "function_errors", "image_diagonals", "ledger_tables",
           "paired_function_table", "plot", "pretext_columns", "rows_from_steps", "run_row", "table",
           "validation_curve", "write_results"]

#: per-subject clinical errors, from an evaluation's function.csv
CLINICAL = ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "lv_mass_g")


def _number(value) -> Optional[float]:
    if value in (None, ""):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def image_diagonals(datalist: Path) -> Dict[tuple, float]:
    """``{(subject, frame_index): the image's diagonal in mm}`` of a datalist's test records (the HD95 of a lost
    structure, :func:`cmrssl.study.statistics.hd95_counting_lost`), from the headers and the records' spacing."""
    import nibabel as nib

    diagonals = {}
    for record in json.loads(Path(datalist).read_text()).get("test", []):
        shape = nib.load(record["image"]).shape[:3]  # x, y, z
        dz, dy, dx = record["spacing_zyx_mm"]
        diagonals[(record["subject"], int(record["frame_index"]))] = float(
            math.sqrt((shape[0] * dx) ** 2 + (shape[1] * dy) ** 2 + (shape[2] * dz) ** 2))
    return diagonals


def _segmentation_values(eval_dir: Path, diagonals: Dict[tuple, float]) -> tuple:
    """Run-level HD95 (a lost structure at the image diagonal), lost counts and the frames that lost their LV
    cavity (:func:`cmrssl.metrics.quality.frames_lv_cavity_lost`, from ``metrics.csv``, which every bundle's
    evaluation writes), and per subject these and Dice (a run's Dice is its evaluation's summary)."""
    frames: Dict[str, Dict[str, list]] = {}
    run: Dict[str, list] = {}
    with open(eval_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        subject = frames.setdefault(row["subject"], {})
        for key, _ in STRUCTURE_ROWS:
            predicted, reference = _number(row.get(f"volume_ml_{key}")), _number(row.get(f"reference_volume_ml_{key}"))
            lost = bool(reference) and not predicted
            diagonal = diagonals.get((row["subject"], int(row["frame_index"])), float("nan"))
            values = {f"dice_{key}": _number(row.get(f"dice_{key}")),
                      f"hd95_mm_{key}": hd95_counting_lost(_number(row.get(f"hd95_mm_{key}")), lost, diagonal),
                      f"lost_{key}": float(lost)}
            for name, value in values.items():
                if value is not None:
                    subject.setdefault(name, []).append(value)
                    if not name.startswith("dice_"):
                        run.setdefault(name, []).append(value)
    per_subject = {s: {name: (float(np.sum(v)) if name.startswith("lost_") else float(np.mean(v)))
                       for name, v in values.items()} for s, values in frames.items()}
    summary = {name: (int(np.sum(v)) if name.startswith("lost_") else float(np.mean(v))) for name, v in run.items()}
    summary["frames_lv_cavity_lost"] = frames_lv_cavity_lost(_number(r.get("dice_lv_cavity")) for r in rows)
    return summary, per_subject


_VALIDATION = re.compile(r"Epoch\[(\d+)\] Metrics -- val_mean_dice: ([0-9.]+)")
_TRAIN_LOSS = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/\d+ -- train_loss: ([-0-9.eE+]+|nan|inf)")


def drawn_subjects(log: Path) -> str:
    """The labelled subjects a training drew, as its log states them (``cmrssl.data.subsets.log_drawn_subjects``),
    space-separated; ``""`` when the log names none (every subject, or no log)."""
    return " ".join(drawn_subjects_in(log.read_text(errors="replace"))) if log.exists() else ""


def validation_curve(log: Path) -> List[float]:
    """The mean validation Dice after each validation of a training, from its log (MONAI's StatsHandler lines;
    a resumed run's log holds both attempts: the last value of an epoch counts)."""
    if not log.exists():
        return []
    by_epoch = {int(m.group(1)): float(m.group(2)) for m in _VALIDATION.finditer(log.read_text(errors="replace"))}
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_losses(log: Path) -> List[float]:
    """The mean training loss of each epoch of a run, from its log (the bundles' per-iteration ``train_loss``
    lines; a resumed run's log holds both attempts: the last value of an iteration counts)."""
    if not log.exists():
        return []
    by_iteration: Dict[int, Dict[int, float]] = {}
    for match in _TRAIN_LOSS.finditer(log.read_text(errors="replace")):
        by_iteration.setdefault(int(match.group(1)), {})[int(match.group(2))] = float(match.group(3))
    return [float(np.mean(list(by_iteration[e].values()))) for e in sorted(by_iteration)]


def pretext_columns(log: Path) -> dict:
    """A pretraining's pretext-loss curve summed up for the ledger rows of the fine-tunes that use it: epochs,
    the last epoch's mean loss, the last quarter's relative drop (:func:`statistics.pretext_drop`) and whether
    that is under :data:`statistics.PRETEXT_FLAT` (``flat``: yes / no)."""
    losses = epoch_losses(log)
    if not losses:
        return {}
    drop = pretext_drop(losses)
    return {"pretext_epochs": len(losses), "pretext_loss_last": round(losses[-1], 6),
            "pretext_drop_last_quarter": "" if drop is None else round(drop, 4),
            "pretext_flat": "" if drop is None else ("yes" if drop < PRETEXT_FLAT else "no")}


def run_row(step: Step, budget: str, config_hash: str, commit: str, train: Step, known_timings: dict,
            diagonals: Dict[tuple, float], labelled_subjects: str) -> dict:
    """The ledger row of a finished fine-tune (``step`` its evaluation, ``train`` its training)."""
    summary = json.loads(step.done_file.read_text())
    row = {"budget": budget, "config_hash": config_hash, "arm": step.meta["arm"], "labelled": str(step.meta["labelled"]),
           "seed": int(step.meta["seed"]), "labelled_subjects": labelled_subjects, "commit": commit,
           "iterations": train.iterations, "train_seconds": known_timings.get(train.name, {}).get("seconds", ""),
           "eval_seconds": known_timings.get(step.name, {}).get("seconds", ""),
           "overrides": " ".join(train.meta["overrides"])}
    curve = validation_curve(train.folder / f"{train.kind}.log")
    if curve:  # the plateau, decided as cmrssl.study.statistics.plateau_gain says
        gain = plateau_gain(curve)
        row.update(validations=len(curve), val_dice_last=curve[-1], val_dice_best=max(curve),
                   val_curve=" ".join(f"{v:.4f}" for v in curve),  # the whole curve: a later rule can be applied
                   val_gain_last_quarter="" if gain is None else gain,
                   plateau="" if gain is None else ("yes" if gain < PLATEAU_GAIN else "no"))
    per_subject: Dict[str, dict] = {}
    if "segmentation" in summary:
        values, per_subject = _segmentation_values(step.done_file.parent, diagonals)
        for key, _ in STRUCTURE_ROWS:  # the run's Dice as its evaluation states it
            row[f"dice_{key}"] = summary["segmentation"][key]["dice"]["mean"]
        row.update(values)
    # both bundles' evaluations share the function schema: summary["function"] and function.csv's error columns
    volumes = {name: summary["function"][name] for name in CLINICAL if name in summary.get("function", {})}
    function_csv = step.done_file.parent / "function.csv"
    if function_csv.exists():
        for subject, errors in _signed_errors(_csv_rows(function_csv), CLINICAL).items():
            per_subject.setdefault(subject, {}).update({f"error_{name}": e for name, e in errors.items()})
    for name, stats in volumes.items():
        row[f"{name}_mae"] = stats.get("mean_absolute_error", "")
        row[f"{name}_bias"] = stats.get("mean_error", "")
    row["per_subject"] = per_subject
    return row


def _mean_sd(values: Sequence, digits: int) -> str:
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    if not numbers:
        return "-"
    if len(numbers) == 1:
        return f"{numbers[0]:.{digits}f}"
    return f"{np.mean(numbers):.{digits}f} ± {np.std(numbers, ddof=1):.{digits}f}"


def _per_seed(rows: Sequence[dict], arm: str, n, name: str,
              absolute: bool = False) -> Dict[int, Dict[str, float]]:
    """``{seed: {subject: value}}`` of ``name`` in the per-subject values of an arm's runs at count ``n`` (its
    absolute value when ``absolute``: a signed error's size)."""
    return {int(r["seed"]): {s: (abs(v[name]) if absolute else v[name]) for s, v in r.get("per_subject", {}).items()
                             if v.get(name) is not None}
            for r in rows if r["arm"] == arm and str(r["labelled"]) == str(n)}


def comparison(rows: Sequence[dict], arm: str, n, name: str, absolute: bool = False) -> Optional[dict]:
    """An arm against scratch at count ``n`` on per-subject ``name`` (its absolute value when ``absolute``): subjects,
    each arm's mean over them, mean difference, how many subjects the arm has the higher and the lower value, 95 %
    bootstrap interval and Wilcoxon p (one pair per subject, its mean over the seeds both ran)."""
    ours, base = _per_seed(rows, arm, n, name, absolute), _per_seed(rows, "scratch", n, name, absolute)
    differences = paired_differences(ours, base)
    if not differences:
        return None
    values = list(differences.values())
    seeds = sorted(set(ours) & set(base))
    means = [float(np.mean([m[s] for s in differences]))
             for m in (subject_means(ours, seeds), subject_means(base, seeds))]
    return {"subjects": len(values), "seeds": len(seeds), "ours": means[0], "base": means[1],
            "difference": float(np.mean(values)),
            "higher": sum(v > 0 for v in values), "lower": sum(v < 0 for v in values),
            "interval": bootstrap_interval(values), "p": wilcoxon_p(values)}


#: the clinical errors the study compares against scratch, subject by subject: (per-subject name, label, digits)
CLINICAL_COMPARED = (("error_lv_edv_ml", "LV EDV (ml)", 1), ("error_lv_esv_ml", "LV ESV (ml)", 1),
                     ("error_lv_ef_percent", "LV EF (%)", 1))


def _p_text(p: Optional[float]) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _difference_cells(difference: float, interval: Optional[tuple], p: Optional[float], digits: int) -> str:
    """The paired tables' last two cells: the mean difference with its 95 % interval, and the p."""
    text = f"{difference:+.{digits}f}"
    if interval:
        text += f" ({interval[0]:+.{digits}f} to {interval[1]:+.{digits}f})"
    return f"{text} | {_p_text(p)}"


def clinical_comparison_lines(rows: Sequence[dict], arms: Sequence[str], labelled: Sequence,
                              repo: Optional[Repository] = None) -> List[str]:
    """Markdown rows: each arm against scratch on the LV EDV, ESV and EF absolute errors (:data:`CLINICAL_COMPARED`),
    one pair per held-out subject (its absolute error averaged over the seeds both arms ran)."""
    lines = []
    for arm in arms:
        if arm == "scratch":
            continue
        for n in labelled:
            for name, label, digits in CLINICAL_COMPARED:
                found = comparison(rows, arm, n, name, absolute=True)
                if found is not None:
                    lines.append(
                        f"| {arm_label(arm, repo)} | {n} | {found['seeds']} | {label} | {found['base']:.{digits}f} "
                        f"| {found['ours']:.{digits}f} | {found['lower']} of {found['subjects']} "
                        f"| {_difference_cells(found['difference'], found['interval'], found['p'], digits)} |")
    return lines


def function_errors(path: Path, names: Sequence[str] = CLINICAL) -> Dict[str, Dict[str, float]]:
    """``{name: {subject: absolute error}}`` from an evaluation's ``function.csv`` (either bundle's: ``subject`` and
    ``error_<name>`` columns); a subject without a value for ``name`` is left out of it."""
    rows = _csv_rows(path)
    if not rows or "subject" not in rows[0]:
        raise ValueError(f"{path}: not an evaluation's function.csv (no 'subject' column)")
    for name in names:
        if f"error_{name}" not in rows[0]:
            raise ValueError(f"{path}: no column error_{name}")
    signed = _signed_errors(rows, names)
    return {name: {subject: abs(e[name]) for subject, e in signed.items() if name in e} for name in names}


def _csv_rows(path: Path) -> List[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _signed_errors(rows: Sequence[dict], names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{subject: {name: signed error}}`` of a function.csv's ``error_<name>`` columns, empty values left out."""
    out: Dict[str, Dict[str, float]] = {}
    for row in rows:
        for name in names:
            error = _number(row.get(f"error_{name}"))
            if error is not None:
                out.setdefault(row["subject"], {})[name] = error
    return out


def frame_scores(path: Path, names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{name: {subject: mean over its frames}}`` from an evaluation's ``metrics.csv`` (either bundle's: ``subject``
    and per-frame columns such as ``dice_lv_cavity``); a frame without a value is left out of its subject's mean."""
    rows = _csv_rows(path)
    if not rows or "subject" not in rows[0]:
        raise ValueError(f"{path}: not an evaluation's metrics.csv (no 'subject' column)")
    missing = [name for name in names if name not in rows[0]]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)}")
    out: Dict[str, Dict[str, float]] = {}
    for name in names:
        values: Dict[str, list] = {}
        for row in rows:
            value = _number(row.get(name))
            if value is not None and math.isfinite(value):
                values.setdefault(row["subject"], []).append(value)
        out[name] = {subject: float(np.mean(v)) for subject, v in values.items()}
    return out


def paired_function_table(base: Sequence[Path], ours: Sequence[Path], names: Sequence[str] = CLINICAL[:3],
                          labels: Sequence[str] = ("base", "ours")) -> str:
    """Two arms' evaluations, seed by seed (``base[i]`` and ``ours[i]`` ran seed ``i``), paired over subjects as the
    study pairs them (one value per subject: its mean absolute error over the seeds), in Markdown: each arm's MAE,
    the subjects ``ours`` got closer, the mean difference with its 95 % bootstrap interval, and the Wilcoxon p.
    Names starting ``dice_`` read each seed's ``metrics.csv`` instead (a subject's Dice: its frames' mean), where
    higher is better."""
    if len(base) != len(ours) or not base:
        raise ValueError(f"one evaluation per seed in each arm: {len(base)} against {len(ours)}")
    dice = [name.startswith("dice_") for name in names]
    if any(dice) and not all(dice):
        raise ValueError(f"Dice (metrics.csv) and function errors (function.csv) in one table: {list(names)}")
    load, higher, digits, what = ((frame_scores, True, 3, "Dice (its frames' mean)") if all(dice)
                                  else (function_errors, False, 1, "absolute error"))
    base_values = [load(Path(p), names) for p in base]
    ours_values = [load(Path(p), names) for p in ours]
    column = "mean" if higher else "MAE"
    lines = [f"{len(base)} seed(s); each subject's {what} averaged over them; paired Wilcoxon signed-rank.", "",
             f"| | {labels[0]} {column} | {labels[1]} {column} "
             f"| subjects {labels[1]} {'higher' if higher else 'closer'} | difference (95 % interval) | p |",
             "|---|---|---|---|---|---|"]
    for name in names:
        a = {seed: values[name] for seed, values in enumerate(base_values)}
        b = {seed: values[name] for seed, values in enumerate(ours_values)}
        differences = paired_differences(b, a)
        values = list(differences.values())
        better = sum((v > 0) if higher else (v < 0) for v in values)
        cells = _difference_cells(float(np.mean(values)), bootstrap_interval(values), wilcoxon_p(values), digits)
        lines.append(
            f"| {name} | {np.mean(list(subject_means(a).values())):.{digits}f} "
            f"| {np.mean(list(subject_means(b).values())):.{digits}f} "
            f"| {better} of {len(values)} | {cells} |")
    return "\n".join(lines) + "\n"


def table(rows: Sequence[dict], arms: Sequence[str], labelled: Sequence, repo: Optional[Repository] = None) -> str:
    """The study's tables in Markdown: Dice with the comparison against scratch, then distances and clinical
    numbers; each says how many subjects and seeds stand behind it."""
    def cell_values(arm, n, column):
        return [r[column] for r in rows if r["arm"] == arm and str(r["labelled"]) == str(n)
                and r.get(column) not in ("", None)]

    def seeds_of(arm, n):
        return sorted({int(r["seed"]) for r in rows if r["arm"] == arm and str(r["labelled"]) == str(n)})

    subjects = sorted({s for r in rows for s in r.get("per_subject", {})})
    lines = ["## Dice on the held-out subjects", "",
             f"Mean ± SD over seeds of each run's mean Dice; against scratch: the mean difference over the "
             f"{len(subjects)} held-out subjects (each subject's mean over the seeds both arms ran), its 95 % "
             f"bootstrap interval and the paired Wilcoxon p. Seeds per cell in brackets; bold: the best mean among the "
             f"cells with the row's most seeds (a one-seed cell is not ranked against three).", "",
             "| structure | labelled subjects | " + " | ".join(arm_label(a, repo) for a in arms) + " |",
             "|---|---|" + "---|" * len(arms)]
    for key, name in STRUCTURE_ROWS:
        for n in labelled:
            means = {a: np.mean([float(v) for v in cell_values(a, n, f"dice_{key}")])
                     for a in arms if cell_values(a, n, f"dice_{key}")}
            most = max((len(seeds_of(a, n)) for a in means), default=0)
            eligible = {a: m for a, m in means.items() if len(seeds_of(a, n)) == most}
            best = max(eligible, key=eligible.get) if len(eligible) > 1 else None
            cells = []
            for arm in arms:
                text = _mean_sd(cell_values(arm, n, f"dice_{key}"), 3)
                if text != "-":
                    text += f" [{len(seeds_of(arm, n))}]"
                if arm == best:
                    text = f"**{text}**"
                found = comparison(rows, arm, n, f"dice_{key}") if arm != "scratch" and text != "-" else None
                if found is not None:
                    text += f" Δ {found['difference']:+.3f}"
                    if found["interval"] is not None:
                        text += f" [{found['interval'][0]:+.3f}, {found['interval'][1]:+.3f}]"
                    if found["p"] is not None:
                        text += f" p {found['p']:.2g}"
                cells.append(text)
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    columns = [(f"hd95_mm_{key}", f"HD95 {name} (mm)", 1) for key, name in STRUCTURE_ROWS]
    columns += [(f"lost_{key}", f"{name} lost (frames)", 1) for key, name in STRUCTURE_ROWS]
    columns += [("frames_lv_cavity_lost", f"LV cavity Dice < {LV_CAVITY_LOST_DICE:g} (frames)", 1)]
    columns += [("lv_edv_ml_mae", "LV EDV MAE (ml)", 1), ("lv_esv_ml_mae", "LV ESV MAE (ml)", 1),
                ("lv_ef_percent_mae", "LV EF MAE (%)", 1), ("lv_mass_g_bias", "LV mass bias (g)", 1)]
    lines += ["", "## Distances and clinical numbers (mean ± SD over seeds)", "",
              "HD95 counts a lost structure (none predicted where the reference has one) at the image's "
              "diagonal; the lost columns count such frames per run. A cavity drawn in the wrong place is not "
              f"lost by that count; the LV cavity Dice < {LV_CAVITY_LOST_DICE:g} column counts the frames whose "
              "LV cavity was missed either way (the volumes and EF of such frames are not the heart's).", "",
              "| arm | labelled subjects | seeds | " + " | ".join(c[1] for c in columns) + " |",
              "|---|---|---|" + "---|" * len(columns)]
    for arm in arms:
        for n in labelled:
            if not seeds_of(arm, n):
                continue
            lines.append(f"| {arm_label(arm, repo)} | {n} | {len(seeds_of(arm, n))} | "
                         + " | ".join(_mean_sd(cell_values(arm, n, c), d) for c, _, d in columns) + " |")
    compared = clinical_comparison_lines(rows, arms, labelled, repo)
    if compared:
        lines += ["", "## Clinical errors against scratch", "",
                  "Each held-out subject's absolute error, averaged over the seeds both arms ran (the seeds column), "
                  "paired with scratch's; the subjects the arm got closer (a tie is not closer), the mean difference "
                  "(negative: the arm is closer) with its 95 % bootstrap interval, and the paired Wilcoxon p.", "",
                  "| arm | labelled subjects | seeds | quantity | Scratch MAE | arm MAE | subjects closer "
                  "| difference (95 % interval) | p |", "|---|---|---|---|---|---|---|---|---|"] + compared
    seeds_done = sorted({int(r["seed"]) for r in rows})
    lines += ["", f"Seeds: {', '.join(map(str, seeds_done))} (each seed also draws the labelled subjects). "
              f"'all' = the whole labelled pool. Runs: {len(rows)}; held-out subjects: {len(subjects)}."]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], arms: Sequence[str], labelled: Sequence, pool: int, path: Path,
         repo: Optional[Repository] = None) -> None:
    """Dice against the labelled count, one line per arm with its SD band over seeds, one panel per structure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    x_of = {n: (pool if n == "all" else int(n)) for n in labelled}
    for axis, (key, name) in zip(axes, STRUCTURE_ROWS):
        for arm in arms:
            xs, means, sds = [], [], []
            for n in labelled:
                values = [float(r[f"dice_{key}"]) for r in rows if r["arm"] == arm and str(r["labelled"]) == str(n)
                          and r.get(f"dice_{key}") not in ("", None)]
                if values:
                    xs.append(x_of[n])
                    means.append(np.mean(values))
                    sds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
            if xs:
                means, sds = np.array(means), np.array(sds)
                line, = axis.plot(xs, means, marker="o", label=arm_label(arm, repo))
                axis.fill_between(xs, means - sds, means + sds, color=line.get_color(), alpha=0.2)
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(list(x_of.values()))
        axis.set_xticklabels([f"all ({pool})" if n == "all" else str(n) for n in labelled])
        axis.set_title(name)
        axis.set_xlabel("labelled subjects")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("mean Dice on held-out subjects")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def convergence_note(rows: Sequence[dict]) -> str:
    """How many of the runs reached their plateau, and from pretrainings whose pretext loss flattened, by the
    rules of :mod:`cmrssl.study.statistics` (a paragraph; empty when no run says)."""
    notes = []
    validated = [r for r in rows if str(r.get("plateau", "")) in ("yes", "no")]
    if validated:
        late = sorted(f"{r['arm']} n={r['labelled']} seed {r['seed']}" for r in validated if r["plateau"] == "no")
        notes.append(f"Plateau (the last quarter of a run's validations raised its best mean Dice by under "
                     f"{PLATEAU_GAIN}): {len(validated) - len(late)} of {len(validated)} runs"
                     + (f"; not: {', '.join(late)}" if late else "") + ".")
    pretrained = {r["arm"]: r for r in rows if str(r.get("pretext_flat", "")) in ("yes", "no")}
    if pretrained:
        rising = sorted(arm for arm, r in pretrained.items() if r["pretext_flat"] == "no")
        notes.append(f"Pretext loss flattened (its last quarter of epochs lowered it by under {PRETEXT_FLAT:.0%}): "
                     f"{len(pretrained) - len(rising)} of {len(pretrained)} arms"
                     + (f"; still falling: {', '.join(rising)}" if rising else "") + ".")
    return " ".join(notes) + "\n\n" if notes else ""


def write_results(out: Path, rows: Sequence[dict], arms: Sequence[str], labelled: Sequence, settings: dict,
                  split: dict, repo: Optional[Repository] = None) -> None:
    """``OUT/runs.csv``, ``OUT/table.md`` and ``OUT/dice_vs_labelled.png`` from ``rows`` (rewritten whole)."""
    if not rows:
        return
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields and k != "per_subject"]
    with atomic_file(out / "runs.csv", overwrite=True) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    header = (f"# What self-supervision buys with N labelled subjects (budget `{settings['budget']}`)\n\n"
              f"Evaluation: {len(split['evaluation'])} held-out ACDC subjects ({split['rule']}), ED and ES frames, "
              f"each arm's bundle's `configs/evaluate.json` (the masks on each label's grid). Labelled pool: "
              f"{len(split['labelled_pool'])} subjects.\n\n{convergence_note(rows)}")
    with atomic_file(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(header + table(rows, arms, labelled, repo))
    plot(rows, arms, labelled, len(split["labelled_pool"]), out / "dice_vs_labelled.png", repo)


def rows_from_steps(out: Path, steps: Sequence[Step], split: dict, budget: str) -> List[dict]:
    """A ledger row per fine-tune of ``steps`` whose evaluation has finished in ``out``, with the commit and config
    hash its training recorded when it started (``provenance.json``)."""
    known = timings(out)
    trains = {s.folder: s for s in steps if s.kind == "train"}
    finished = [s for s in steps if s.kind == "eval" and s.done_file.exists()]
    diagonals = image_diagonals(Path(split["datalists"]["acdc"])) if finished else {}
    rows = []
    for step in finished:
        train = trains[step.folder]  # the subjects the training drew, as it logged them
        drawn = "all" if step.meta["labelled"] == "all" else drawn_subjects(train.folder / f"{train.kind}.log")
        provenance = read_provenance(step.folder)  # what the training ran under; unknown ("") for one without it
        row = run_row(step, budget, provenance.get("config_hash", ""), provenance.get("commit", ""), train, known,
                      diagonals, drawn)
        method, _ = arm_parts(step.meta["arm"])
        if method is not None:  # the pretraining it started from: did its pretext loss flatten?
            row.update(pretext_columns(out / "pretrain" / method / "pretrain.log"))
        rows.append(row)
    return rows


def collect(out: Path, steps: Sequence[Step], split: dict, settings: dict, arms: Sequence[str], labelled: Sequence,
            seeds: Sequence[int], config_hashes: Mapping[str, str], ledger: Optional[Path] = None,
            repo: Optional[Repository] = None) -> List[dict]:
    """The finished runs into the ledger (when given; those that recorded what they ran under), then the tables
    from every row of this budget at its arm's present config hash (``config_hashes``) that the ledger holds for the requested arms, counts and
    seeds (without a ledger: the runs of ``out``); returns those rows."""
    budget = settings["budget"]
    rows = rows_from_steps(out, steps, split, budget)
    if ledger is not None:
        known = [r for r in rows if r["config_hash"]]
        if known:
            add_rows(ledger, known)
        rows = current(read_ledger(ledger), budget, config_hashes)
    wanted = {run_key(a, n, s) for a in arms for n in labelled for s in seeds}
    rows = [r for r in rows if run_key(r["arm"], r["labelled"], r["seed"]) in wanted]
    write_results(out, rows, arms, labelled, settings, split, repo)
    return rows


def ledger_tables(out: Path, split: dict, settings: dict, arms: Sequence[str], labelled: Sequence, seeds: Sequence[int],
                  config_hashes: Mapping[str, str], ledger: Optional[Path], repo: Optional[Repository] = None
                  ) -> List[dict]:
    """``--tables_only``: the tables of what ``ledger`` holds for these arms, counts and seeds at their present config
    hashes, into ``out`` (:func:`collect` of no steps); nothing is run, and ``out`` holds no study.

    Raises:
        ValueError: no ledger, or one that holds none of these runs.
    """
    if ledger is None or not ledger.exists():
        raise ValueError("--tables_only tabulates a ledger: give --ledger, an existing .csv file")
    budget = settings["budget"]
    wanted = {run_key(a, n, s) for a in arms for n in labelled for s in seeds}
    if not any(run_key(r["arm"], r["labelled"], r["seed"]) in wanted
               for r in current(read_ledger(ledger), budget, config_hashes)):
        raise ValueError(f"--ledger {ledger} holds no run of budget {budget} for these arms, counts and "
                         "seeds at their present config hashes")
    out.mkdir(parents=True, exist_ok=True)
    return collect(out, [], split, settings, arms, labelled, seeds, config_hashes, ledger=ledger, repo=repo)
