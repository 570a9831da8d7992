"""Cardiac function (LV/RV EDV, ESV, SV, EF, LV mass, ED/ES frames) of a labelled study.

    python tools/function.py STUDY [--out DIR] [--overwrite] [--subject ID] [--label_map acdc]

STUDY is one of
  - a phantom subject folder (``sax_cine_gt.nii.gz``, with ``sax_cine.nii.gz`` beside it),
  - a labels NIfTI, 4D ``[x, y, z, t]`` canonical labels (``--label_map`` otherwise),
  - a folder of 3D NIfTI frames with ``*_gt.nii.gz`` labels (ACDC ``patientNNN_frameYY``,
    mapped from ACDC labels automatically, or this project's ``frame_XX``),
  - a Sunnybrook-style root (``dicoms/``, ``contourfiles/``, ``link.csv``), ``--subject``
    picking one patient when it holds several.

Prints the function table and writes ``function.json``, ``function.csv`` and
``volume_curve.png`` into ``--out`` (default ``STUDY/function`` for a folder,
``<name>_function`` beside a file). The folder is written whole (temporary
folder renamed); existing results are refused unless ``--overwrite``.
Volumes use the real voxel volume (slice spacing from slice positions).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

import fire

from cmrssl.io import CineReadError, CineStudy, read_nifti_cine, read_nifti_frames
from cmrssl.io.atomic import atomic_folder, check_can_write
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


def load_labelled_study(study: Path, subject: Optional[str] = None, label_map: Optional[str] = None) -> CineStudy:
    """Read STUDY (see the module docstring) into a :class:`CineStudy` with labels.

    Raises:
        FileNotFoundError: STUDY does not exist.
        ValueError: STUDY is none of the supported layouts, or holds no labels.
    """
    study = Path(study)
    if not study.exists():
        raise FileNotFoundError(f"{study}: no such study file or folder")
    if study.is_file():
        if not _is_nifti(study):
            raise ValueError(f"{study}: a study file must be a labels NIfTI (.nii / .nii.gz)")
        image = study.with_name(study.name.replace("_gt.nii", ".nii"))
        pixels = image if image != study and image.is_file() else study
        cine = read_nifti_cine(pixels, label_path=study, label_map=label_map or "canonical")
        cine.source = str(study)
        return cine
    if (study / PHANTOM_LABELS).is_file():
        labels = study / PHANTOM_LABELS
        image = study / PHANTOM_IMAGE
        cine = read_nifti_cine(image if image.is_file() else labels, label_path=labels,
                               label_map=label_map or "canonical")
        cine.source = str(study)
        return cine
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
        cine, _ = read_sunnybrook_study(dicom_dir, contour_dir)
        cine.source = f"{study}:{name}"
        return cine
    if any(p.name.endswith(("_gt.nii.gz", "_gt.nii")) for p in study.iterdir()):
        cine = read_nifti_frames(study, label_map=label_map or "auto")
        if cine.labels is None:
            raise ValueError(f"{study}: no label file matches a frame image (frame_XX_gt / patientNNN_frameYY_gt)")
        return cine
    raise ValueError(
        f"{study}: not a phantom subject ({PHANTOM_LABELS}), a labels NIfTI, a folder of *_gt.nii.gz "
        "frames, or a Sunnybrook root (dicoms/ + contourfiles/)"
    )


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
    dz, dy, dx = fn.spacing_mm
    labelled = ", ".join(str(t) for t in fn.labelled_frames)
    rows = [
        f"study: {fn.source}",
        f"{'':14s}{'LV':>9s}{'RV':>9s}",
        f"{'EDV (ml)':14s}{_fmt(fn.lv_edv_ml):>9s}{_fmt(fn.rv_edv_ml):>9s}",
        f"{'ESV (ml)':14s}{_fmt(fn.lv_esv_ml):>9s}{_fmt(fn.rv_esv_ml):>9s}",
        f"{'SV (ml)':14s}{_fmt(fn.lv_sv_ml):>9s}{_fmt(fn.rv_sv_ml):>9s}",
        f"{'EF (%)':14s}{_fmt(fn.lv_ef_percent):>9s}{_fmt(fn.rv_ef_percent):>9s}",
        f"{'LV mass (g)':14s}{_fmt(fn.lv_mass_g):>9s}",
        f"ED frame {fn.ed_frame}, ES frame {fn.es_frame} (0-based numbers in the cardiac cycle; "
        f"measured on frames {labelled})",
        f"spacing {dz:.2f} x {dy:.3f} x {dx:.3f} mm (slice from positions, row, column); "
        f"voxel {fn.voxel_volume_ml * 1000:.2f} mm^3",
    ]
    return "\n".join(rows)


def compute_function(study: str, out: Optional[str] = None, overwrite: bool = False, subject: Optional[str] = None,
                     label_map: Optional[str] = None) -> Path:
    """Measure STUDY and write the results folder; returns the folder."""
    study_path = Path(study)
    out_dir = Path(out) if out is not None else default_out(study_path)
    check_can_write(out_dir, overwrite)  # refuse before any work
    cine = load_labelled_study(study_path, subject=subject, label_map=label_map)
    fn = cardiac_function_from_study(cine)
    print(format_table(fn))
    from cmrssl.metrics.plots import plot_volume_curve

    result = fn.to_dict()
    result["study"] = str(study_path)
    result["method"] = (
        "voxel counts of canonical labels x voxel volume (slice spacing from positions); "
        "ED/ES = max/min LV cavity volume among labelled frames; LV mass = 1.05 g/ml x myocardium at ED"
    )
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
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
         label_map: Optional[str] = None) -> None:
    try:
        compute_function(study, out=out, overwrite=overwrite, subject=subject, label_map=label_map)
    except FileExistsError as err:
        print(f"function: error: {err} (use --overwrite)", file=sys.stderr)
        raise SystemExit(1)
    except (FileNotFoundError, CineReadError, ValueError) as err:
        print(f"function: error: {err}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    fire.Fire(main)
