"""Cardiac function (LV/RV EDV, ESV, SV, EF, LV mass, ED/ES frames) of a labelled study.

    python tools/function.py STUDY [--out DIR] [--overwrite] [--subject ID] [--label_map acdc]
                               [--spacing_from auto|sform|pixdim]

STUDY is one of
  - a phantom subject folder (``sax_cine_gt.nii.gz``, with ``sax_cine.nii.gz`` beside it),
  - a labels NIfTI, 4D ``[x, y, z, t]`` canonical labels (``--label_map`` otherwise),
  - a folder of 3D NIfTI frames with ``*_gt.nii.gz`` labels (ACDC ``patientNNN_frameYY``,
    mapped from ACDC labels automatically, or this project's ``frame_XX``),
  - an M&Ms-2 subject folder ``NNN/`` (``NNN_SA_ED.nii.gz`` + ``NNN_SA_ED_gt.nii.gz`` and the
    same for ES; ED/ES from the file names, their frame numbers from ``NNN_SA_CINE`` when
    it is there),
  - a Sunnybrook-style root (``dicoms/``, ``contourfiles/``, ``link.csv``), ``--subject``
    picking one patient when it holds several.

Prints the function table and writes ``function.json``, ``function.csv`` and
``volume_curve.png`` into ``--out`` (default ``STUDY/function`` for a folder,
``<name>_function`` beside a file). The folder is written whole (temporary
folder renamed); existing results are refused unless ``--overwrite``, which
replaces only the three files this tool writes. An ``--out`` that is the study,
or a folder containing it, is refused.
Volumes use the real voxel volume (slice spacing from slice positions). A NIfTI
whose sform and pixdim give two spacings the header cannot choose between is
refused naming both; ``--spacing_from sform`` or ``pixdim`` settles it (see
:mod:`cmrssl.io.nifti`). The spacing measured is printed with the table.

No number is reported that the labels cannot support: frames whose labels
are all background (M&Ms 4D labels hold contours on ED and ES only) are not
measured; an LV mass with the myocardium missing on a traced slice at ED
(Sunnybrook contours that fail the containment check) is reported as "-"
(null), and unknown frame numbers as well; each such case is a printed note
kept in ``function.json`` under ``notes``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import List, Optional, Tuple

import fire
import numpy as np

from cmrssl.cli_errors import tool_errors
from cmrssl.io import CineStudy, read_nifti_cine, read_nifti_frames
from cmrssl.io.atomic import atomic_folder, check_can_write
from cmrssl.io.nifti import check_spacing_from
from cmrssl.metrics.function import CardiacFunction, cardiac_function_from_study

PHANTOM_LABELS = "sax_cine_gt.nii.gz"
PHANTOM_IMAGE = "sax_cine.nii.gz"


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_labelled_study(study: Path, subject: Optional[str] = None, label_map: Optional[str] = None,
                        spacing_from: str = "auto") -> Tuple[CineStudy, dict]:
    """Read STUDY (see the module docstring) into a :class:`CineStudy` with labels.

    ``spacing_from`` (``auto``, ``sform``, ``pixdim``) applies to NIfTI studies.

    Returns:
        ``(cine, caveats)``; ``caveats`` may hold ``"mass_incomplete"``
        (``{frame: [slices whose myocardium is missing]}``), ``"frame_numbers_unknown"``
        (True) and ``"notes"`` (sentences for the user).

    Raises:
        FileNotFoundError: STUDY does not exist.
        ValueError: STUDY is none of the supported layouts, or holds no labels.
    """
    study = Path(study)
    caveats: dict = {"notes": []}
    if not study.exists():
        raise FileNotFoundError(f"{study}: no such study file or folder")
    if study.is_file():
        if not _is_nifti(study):
            raise ValueError(f"{study}: a study file must be a labels NIfTI (.nii / .nii.gz)")
        image = study.with_name(study.name.replace("_gt.nii", ".nii"))
        pixels = image if image != study and image.is_file() else study
        cine = read_nifti_cine(pixels, label_path=study, label_map=label_map or "canonical", spacing_from=spacing_from)
        cine.source = str(study)
        return _drop_empty_frames(cine, caveats), caveats
    if (study / PHANTOM_LABELS).is_file():
        labels = study / PHANTOM_LABELS
        image = study / PHANTOM_IMAGE
        cine = read_nifti_cine(image if image.is_file() else labels, label_path=labels,
                               label_map=label_map or "canonical", spacing_from=spacing_from)
        cine.source = str(study)
        return _drop_empty_frames(cine, caveats), caveats
    if (study / "dicoms").is_dir() and (study / "contourfiles").is_dir():
        from cmrssl.data.sunnybrook import find_sunnybrook_subjects, read_sunnybrook_study

        pairs = find_sunnybrook_subjects(study)
        if subject is not None:
            pairs = [p for p in pairs if p[0] == subject]
            if not pairs:
                raise ValueError(f"{study}: no Sunnybrook subject {subject!r}")
        elif len(pairs) > 1:
            raise ValueError(f"{study}: holds {len(pairs)} subjects {[p[0] for p in pairs]}; pick one with --subject")
        name, dicom_dir, contour_dir = pairs[0]
        cine, details = read_sunnybrook_study(dicom_dir, contour_dir, subject=name)
        cine.source = f"{study}:{name}"
        caveats["mass_incomplete"] = {int(t): details.myocardium_incomplete(t) for t in details.labelled_frames}
        return cine, caveats
    from cmrssl.data.mnms import is_mnms2_subject_folder, mnms2_subject_records

    if is_mnms2_subject_folder(study):
        records = mnms2_subject_records(study)  # ED then ES
        known = [r["frame_index"] for r in records]
        if any(t is None for t in known):
            caveats["frame_numbers_unknown"] = True
            caveats["notes"].append("ED/ES frame numbers unknown (no NNN_SA_CINE frame matches the ED/ES files)")
        frame_indices = known if all(t is not None for t in known) and known[0] != known[1] else [0, 1]
        cine = read_nifti_frames([r["image"] for r in records], label_paths={i: r["label"] for i, r in enumerate(records)},
                                 frame_indices=frame_indices, label_map=label_map or "mnms", spacing_from=spacing_from)
        cine.source = str(study)
        return cine, caveats
    if any(p.name.endswith(("_gt.nii.gz", "_gt.nii")) for p in study.iterdir()):
        cine = read_nifti_frames(study, label_map=label_map or "auto", spacing_from=spacing_from)
        if cine.labels is None:
            raise ValueError(f"{study}: no label file matches a frame image (frame_XX_gt / patientNNN_frameYY_gt)")
        return cine, caveats
    raise ValueError(
        f"{study}: not a phantom subject ({PHANTOM_LABELS}), a labels NIfTI, a folder of *_gt.nii.gz "
        "frames, an M&Ms-2 subject folder (NNN_SA_ED[_gt].nii.gz) or a Sunnybrook root (dicoms/ + contourfiles/)"
    )


def _drop_empty_frames(cine: CineStudy, caveats: dict) -> CineStudy:
    """Mark frames whose labels are all background as unlabelled (M&Ms 4D labels: ED and ES only).

    A frame without any structure is no measurement (an empty LV cavity would be
    taken for the ES volume); a cine without any labelled structure is refused.
    """
    labelled: List[int] = [int(t) for t in cine.labelled_frames]
    empty = [t for t in labelled if not np.any(cine.labels[t] > 0)]
    if empty and len(empty) == len(labelled):
        raise ValueError(f"{cine.source}: every labelled frame is background only; nothing to measure")
    if empty:
        cine.labels[empty] = -1
        cine.labelled_frames = [t for t in labelled if t not in empty]
        frames = [int(cine.source_frame_index[t]) for t in cine.labelled_frames]
        caveats["notes"].append(f"frames whose labels are all background are not measured; measured frames {frames}")
    return cine


def default_out(study: Path) -> Path:
    """``STUDY/function`` for a folder, ``<name>_function`` beside a file."""
    study = Path(study)
    if study.is_dir():
        return study / "function"
    return study.with_name(f"{_nifti_stem(study)}_function")


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(fn: CardiacFunction) -> str:
    """Human-readable function table (LV and RV columns)."""
    dz, dy, dx = fn.spacing_zyx_mm
    labelled = ", ".join(str(t) for t in fn.labelled_frames)
    rows = [
        f"study: {fn.source}",
        f"{'':14s}{'LV':>9s}{'RV':>9s}",
        f"{'EDV (ml)':14s}{_fmt(fn.lv_edv_ml):>9s}{_fmt(fn.rv_edv_ml):>9s}",
        f"{'ESV (ml)':14s}{_fmt(fn.lv_esv_ml):>9s}{_fmt(fn.rv_esv_ml):>9s}",
        f"{'SV (ml)':14s}{_fmt(fn.lv_sv_ml):>9s}{_fmt(fn.rv_sv_ml):>9s}",
        f"{'EF (%)':14s}{_fmt(fn.lv_ef_percent):>9s}{_fmt(fn.rv_ef_percent):>9s}",
        f"{'LV mass (g)':14s}{_fmt(fn.lv_mass_g):>9s}",
        f"ED frame {_fmt(fn.ed_frame, 0)}, ES frame {_fmt(fn.es_frame, 0)} (0-based numbers in the cardiac cycle; "
        f"measured on frames {labelled})",
        f"spacing {dz:.2f} x {dy:.3f} x {dx:.3f} mm (slice from positions, row, column); "
        f"voxel {fn.voxel_volume_ml * 1000:.2f} mm^3",
    ]
    return "\n".join(rows)


def compute_function(study: str, out: Optional[str] = None, overwrite: bool = False, subject: Optional[str] = None,
                     label_map: Optional[str] = None, spacing_from: str = "auto") -> Path:
    """Measure STUDY and write the results folder; returns the folder."""
    study_path = Path(study)
    spacing_from = check_spacing_from(spacing_from)
    out_dir = Path(out) if out is not None else default_out(study_path)
    check_can_write(out_dir, overwrite, inputs=[study_path])  # refuse before any work
    cine, caveats = load_labelled_study(study_path, subject=subject, label_map=label_map, spacing_from=spacing_from)
    fn = cardiac_function_from_study(cine)
    notes = list(caveats["notes"])
    missing_myocardium = caveats.get("mass_incomplete", {}).get(int(fn.ed_frame), [])
    if missing_myocardium and fn.lv_mass_g is not None:
        fn.lv_mass_g = None  # a sum over part of the wall is not a mass
        notes.append(f"LV mass not reported: no myocardium label on traced ED slices {missing_myocardium} "
                     "(epicardial contour missing, or not around the endocardium)")
    # the plot places ED/ES at their positions among the measured frames; the numbers report them unknown
    shown = dataclasses.replace(fn, ed_frame=None, es_frame=None) if caveats.get("frame_numbers_unknown") else fn
    print(format_table(shown))
    for note in notes:
        print(f"note: {note}")
    from cmrssl.metrics.plots import plot_volume_curve

    result = shown.to_dict()
    result["study"] = str(study_path)
    result["notes"] = notes
    result["method"] = (
        "voxel counts of canonical labels x voxel volume (slice spacing from positions); "
        "ED/ES = max/min LV cavity volume among labelled frames; LV mass = 1.05 g/ml x myocardium at ED"
    )
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:  # always the same three files
        (tmp / "function.json").write_text(json.dumps(result, indent=2) + "\n")
        with (tmp / "function.csv").open("w", newline="") as fh:
            names = ["study"] + [name for name, _ in CardiacFunction.SCALARS]
            writer = csv.writer(fh)
            writer.writerow(names)
            writer.writerow([str(study_path)] + ["" if result[n] is None else result[n] for n in names[1:]])
        plot_volume_curve(fn, tmp / "volume_curve.png", title=str(study_path))
    print(f"wrote {out_dir / 'function.json'}, function.csv and volume_curve.png")
    return out_dir


def main(study: str, out: Optional[str] = None, overwrite: bool = False, subject: Optional[str] = None,
         label_map: Optional[str] = None, spacing_from: str = "auto") -> None:
    with tool_errors("function"):  # CineReadError is a ValueError
        compute_function(study, out=out, overwrite=overwrite, subject=subject, label_map=label_map,
                         spacing_from=spacing_from)


if __name__ == "__main__":
    fire.Fire(main)
