"""LVQuan indices (2 areas, 3 cavity dimensions, 6 wall thicknesses, phase) per frame and slice.

    python tools/lv_indices.py STUDY [--out DIR] [--overwrite] [--slices mid|all|3,4,5] [--label_map acdc]
        [--assume_short_axis] [--spacing_from auto|sform|pixdim]

STUDY is a phantom subject folder (``sax_cine_gt.nii.gz``) or a labels NIfTI
(4D ``[x, y, z, t]`` or 3D ``[x, y, z]``, canonical labels unless
``--label_map``) of a short-axis stack or slice. A long-axis (2Ch/4Ch) label is
refused (exit code 2): by the header's orientation where it has one, else, for a
single slice, by an elongated LV cavity open towards the valve (see
:func:`cmrssl.data.lvquan.check_short_axis`); ``--assume_short_axis`` skips that
check for an unusual pose (e.g. dextrocardia).

Writes ``lv_indices.csv`` (one row per slice and labelled frame) into ``--out``
(default: the subject folder, or beside the file as ``<name>_lv_indices.csv``)
and prints a summary at ED and ES. Existing output is refused unless
``--overwrite``; the CSV appears whole or not at all.

Slices: LVQuan indices are defined on mid-ventricular short-axis slices.
``mid`` (default) keeps the middle third of the slices whose LV cavity is
present in every labelled frame (at least one slice); ``all`` keeps every
slice with a cavity in every labelled frame. Definitions:
:mod:`cmrssl.metrics.lv_indices` (STACOM18 radial sampling, sectors oriented
by the RV). In a slice where some frames show no RV, those frames use the
slice's mean septum direction of the frames that do; a slice without RV in
any frame is skipped with a message.

A NIfTI whose sform and pixdim give two pixel spacings the header cannot choose
between is refused naming both; ``--spacing_from sform`` or ``pixdim`` settles
it (:mod:`cmrssl.io.nifti`).
"""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import fire
import numpy as np

from cmrssl.cli_errors import tool_errors
from cmrssl.io import read_nifti_cine
from cmrssl.io.atomic import atomic_file, check_can_write
from cmrssl.io.nifti import check_spacing_from
from cmrssl.data.lvquan import check_short_axis, measure_slice, select_mid_slices
from cmrssl.metrics.lv_indices import INDEX_NAMES

PHANTOM_LABELS = "sax_cine_gt.nii.gz"
CSV_NAME = "lv_indices.csv"
COLUMNS = ("slice", "frame", "phase") + INDEX_NAMES + ("septum_angle_deg", "rv_present")


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def default_out(study: Path) -> Path:
    """The CSV path: ``STUDY/lv_indices.csv`` for a folder, ``<stem>_lv_indices.csv`` beside a file."""
    if study.is_dir():
        return study / CSV_NAME
    stem = study.name[: -len(".nii.gz")] if study.name.endswith(".nii.gz") else study.stem
    return study.with_name(f"{stem}_lv_indices.csv")


def load_labels(study: Path, label_map: Optional[str] = None, assume_short_axis: bool = False,
                spacing_from: str = "auto"):
    """``(labels [T, Z, H, W], labelled frames, (dy, dx))`` of STUDY (see module docstring).

    Raises:
        FileNotFoundError: no STUDY. CineReadError: unreadable NIfTI, labels outside the set.
        ValueError: not a phantom folder or NIfTI; a long-axis view (unless ``assume_short_axis``).
    """
    if not study.exists():
        raise FileNotFoundError(f"{study}: no such study file or folder")
    if study.is_dir():
        labels_path = study / PHANTOM_LABELS
        if not labels_path.is_file():
            raise ValueError(f"{study}: not a phantom subject folder (no {PHANTOM_LABELS})")
    elif _is_nifti(study):
        labels_path = study
    else:
        raise ValueError(f"{study}: expected a phantom subject folder or a labels NIfTI (.nii/.nii.gz)")
    cine = read_nifti_cine(labels_path, label_path=labels_path, label_map=label_map or "canonical",
                           spacing_from=spacing_from)
    frames = list(cine.labelled_frames)
    if not assume_short_axis:
        try:
            check_short_axis(cine.labels, frames, cine.slice_affines, cine.pixel_spacing_mm, name=str(labels_path))
        except ValueError as err:
            raise ValueError(f"{err} (a short-axis stack in an unusual pose: --assume_short_axis)") from None
    return cine.labels, frames, cine.pixel_spacing_mm


def measure(labels: np.ndarray, frames: Sequence[int], spacing, slices) -> List[dict]:
    """One row dict per (slice, labelled frame), in :data:`COLUMNS`."""
    rows = []
    whole_cycle = len(frames) == labels.shape[0]  # phase needs every frame of the cycle
    for z in slices:
        result = measure_slice(labels[frames, z], spacing, whole_cycle=whole_cycle)
        if result is None:
            print(f"lv_indices: slice {z}: no RV in any frame, sectors undefined; skipped", file=sys.stderr)
            continue
        for i, t in enumerate(frames):
            row = {"slice": z, "frame": t, "phase": "" if result["phase"] is None else int(result["phase"][i])}
            row.update({name: float(v) for name, v in zip(INDEX_NAMES, result["indices"][i])})
            row["septum_angle_deg"] = float(result["septum_angle_deg"][i])
            row["rv_present"] = bool(result["rv_present"][i])
            rows.append(row)
    return rows


def summary(rows: List[dict], labels: np.ndarray, frames: Sequence[int]) -> str:
    """Mean over the measured slices at ED and ES (max / min LV cavity volume of the labelled frames)."""
    cavity = [(labels[t] == 1).sum() for t in frames]
    ed, es = frames[int(np.argmax(cavity))], frames[int(np.argmin(cavity))]
    slices = sorted({r["slice"] for r in rows})
    if len(frames) == 1:  # a single labelled frame has no ED/ES pair
        columns, heading = [ed], f"frame {ed}"
        lines = [f"{len(slices)} slice(s) {slices}, 1 labelled frame ({ed}): no ED/ES pair"]
    else:
        columns, heading = [ed, es], None
        lines = [f"{len(slices)} slice(s) {slices}, {len(frames)} labelled frame(s); ED frame {ed}, ES frame {es}"]
    header = [f"{heading} mean"] if heading else ["ED mean", "ES mean"]
    lines.append(f"{'index':22s}" + "".join(f"{h:>10s}" for h in header))
    for name in INDEX_NAMES:
        with warnings.catch_warnings():  # an index undefined in every slice (NaN) stays NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            values = [np.nanmean([r[name] for r in rows if r["frame"] == f] or [np.nan]) for f in columns]
        lines.append(f"{name:22s}" + "".join(f"{v:>10.1f}" for v in values))
    return "\n".join(lines)


def compute_lv_indices(study: str, out: Optional[str] = None, overwrite: bool = False, slices="mid",
                       label_map: Optional[str] = None, assume_short_axis: bool = False,
                       spacing_from: str = "auto") -> Path:
    """Measure STUDY and write the CSV; returns its path."""
    study_path = Path(study)
    spacing_from = check_spacing_from(spacing_from)
    csv_path = Path(out) / CSV_NAME if out is not None else default_out(study_path)
    check_can_write(csv_path, overwrite)  # refuse before any work
    labels, frames, spacing = load_labels(study_path, label_map, assume_short_axis, spacing_from)
    chosen = select_mid_slices(labels, frames, slices)
    rows = measure(labels, frames, spacing, chosen)
    if not rows:
        raise ValueError(f"{study_path}: no measurable slice (LV cavity and RV needed)")
    with atomic_file(csv_path, overwrite=overwrite) as tmp:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"study: {study_path} (pixel spacing {spacing[0]:.3f} x {spacing[1]:.3f} mm)")
    print(summary(rows, labels, frames))
    print(f"wrote {csv_path} ({len(rows)} rows)")
    return csv_path


def main(study: str, out: Optional[str] = None, overwrite: bool = False, slices="mid",
         label_map: Optional[str] = None, assume_short_axis: bool = False, spacing_from: str = "auto") -> None:
    with tool_errors("lv_indices"):  # CineReadError is a ValueError
        compute_lv_indices(study, out=out, overwrite=overwrite, slices=slices, label_map=label_map,
                           assume_short_axis=assume_short_axis, spacing_from=spacing_from)


if __name__ == "__main__":
    fire.Fire(main)
