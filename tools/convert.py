"""Convert a cine (DICOM folder, 4D NIfTI or folder of 3D NIfTI frames) to the project layout.

    python tools/convert.py INPUT OUT_DIR [--overwrite] [--labels LABELS.nii.gz] [--series N]
        [--view auto|sax|2ch|4ch] [--spacing_from auto|sform|pixdim] [--label_map canonical|acdc|mnms]

writes ``OUT_DIR/sax_cine.nii.gz`` (4D ``[x, y, z, t]``, RAS affine, slices base
to apex), ``OUT_DIR/frames/frame_XX.nii.gz`` (one 3D file per frame, 0-based),
``sax_cine_gt.nii.gz`` and ``frame_XX_gt.nii.gz`` when labels are given or found,
and prints the geometry it found. ``--label_map`` names the convention of NIfTI
labels, written canonical (0 background, 1 LV cavity, 2 LV myocardium, 3 RV
cavity): ``acdc`` for ACDC's own files (1 RV, 3 LV), ``mnms`` for M&Ms'
(default: canonical for a NIfTI cine, read from the file names in a frame folder).

A cine of one slice has no slice spacing and is usually a long-axis view. With
``--view auto`` (default) its header orientation decides: a plane whose normal
is more than 60 degrees from the usual LV long axis, or a header without
orientation, is written as ``lax_cine.nii.gz``, an oblique short-axis plane as
``sax_cine.nii.gz``; the printed line says which and why. ``--view 2ch`` /
``4ch`` name it ``lax_2ch`` / ``lax_4ch`` (the phantom's names), ``--view sax``
``sax_cine``. A stack of several slices is always short-axis.

A NIfTI input whose sform and pixdim give two voxel spacings the header
cannot choose between is refused naming both; ``--spacing_from sform`` or
``pixdim`` settles it (:mod:`cmrssl.io.nifti`). The files written carry the
spacing taken in both, so they read back without the option.

OUT_DIR is written whole (temporary folder renamed). An existing OUT_DIR is
refused unless ``--overwrite``, which replaces only the files named above; an
OUT_DIR that is the input, or a folder containing it, is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import fire

from cmrssl.io import CineReadError, read_cine, write_cine_nifti, write_frames_nifti
from cmrssl.io.nifti import check_spacing_from, resolve_label_map
from cmrssl.flags import as_bool
from cmrssl.io.atomic import atomic_folder, check_can_write
from cmrssl.io.geometry import MAX_SHORT_AXIS_TILT_DEG, short_axis_tilt_deg

VIEWS = ("auto", "sax", "2ch", "4ch")
STEMS = ("sax_cine", "lax_cine", "lax_2ch", "lax_4ch")
#: Everything this tool writes into OUT_DIR: an earlier conversion's files that this one does
#: not rewrite (labels, another view's name) are removed on --overwrite, never left as current.
OWN_ENTRIES = {f"{stem}{gt}.nii.gz" for stem in STEMS for gt in ("", "_gt")} | {"frames"}


def _cine_name(view: str, study, input: str) -> tuple:
    """``(file stem, what it is)``: ``sax_cine``, ``lax_cine``, ``lax_2ch`` or ``lax_4ch``."""
    if study.num_slices > 1:
        if view in ("2ch", "4ch"):
            raise ValueError(f"{input}: --view {view} given, but the cine holds {study.num_slices} slices "
                             "(a short-axis stack)")
        return "sax_cine", "a short-axis stack"
    if view != "auto":
        stem = {"sax": "sax_cine", "2ch": "lax_2ch", "4ch": "lax_4ch"}[view]
        return stem, "a single short-axis slice" if view == "sax" else f"a long-axis view ({view}, as given)"
    tilt = short_axis_tilt_deg(study.slice_affines[0])
    if tilt is None:
        return "lax_cine", ("a long-axis view, assumed: the header has no orientation (pass --view sax for a "
                            "single short-axis slice, or --view 2ch / 4ch to name the view)")
    if tilt > MAX_SHORT_AXIS_TILT_DEG:
        return "lax_cine", (f"a long-axis view: its normal is {tilt:.0f} degrees from the usual LV long axis "
                            "(pass --view 2ch or 4ch to name the view)")
    return "sax_cine", f"a single short-axis slice: its normal is {tilt:.0f} degrees from the usual LV long axis"


def convert(input: str, out_dir: str, overwrite: bool = False, labels: Optional[str] = None,
            series: Optional[str] = None, view: str = "auto", spacing_from: str = "auto",
            label_map: Optional[str] = None) -> Path:
    """Read ``input`` and write the NIfTI cine and frames into ``out_dir``; returns ``out_dir``."""
    overwrite = as_bool(overwrite, "overwrite")
    spacing_from = check_spacing_from(spacing_from)
    out = check_can_write(Path(out_dir), overwrite, inputs=[input, labels])  # before reading anything
    view = str(view)
    if view not in VIEWS:
        raise ValueError(f"--view must be one of {', '.join(VIEWS)}; got {view!r}")
    if label_map is not None:
        resolve_label_map(str(label_map))  # an unknown convention is refused before reading
    study = read_cine(input, label_path=labels, series=series, view="sax" if view == "auto" else view,
                      spacing_from=spacing_from, label_map=None if label_map is None else str(label_map))
    stem, kind = _cine_name(view, study, input)
    with atomic_folder(out, overwrite=overwrite, owned=OWN_ENTRIES.__contains__) as tmp:
        write_cine_nifti(study, tmp / f"{stem}.nii.gz")
        if study.labels is not None:
            write_cine_nifti(study, tmp / f"{stem}_gt.nii.gz", what="labels")
        write_frames_nifti(study, tmp / "frames")
    dz, dy, dx = study.spacing_zyx_mm
    size = f"{study.pixels.shape[2]}x{study.pixels.shape[3]} pixels"
    if study.num_slices == 1:
        print(f"{input}: {study.num_frames} frames of one slice of {size}: {kind}; pixel spacing "
              f"{dy:.3f} x {dx:.3f} mm (row, column), no slice spacing")
    else:
        print(f"{input}: {study.num_frames} frames x {study.num_slices} slices of {size}, spacing "
              f"{dz:.2f} x {dy:.3f} x {dx:.3f} mm (slice, row, column)")
    print(f"wrote {out / (stem + '.nii.gz')} and {study.num_frames} frames in {out / 'frames'}")
    return out


def main(input: str, out_dir: str, overwrite: bool = False, labels: Optional[str] = None,
         series: Optional[str] = None, view: str = "auto", spacing_from: str = "auto",
         label_map: Optional[str] = None) -> None:
    try:
        convert(input, out_dir, overwrite=overwrite, labels=labels, series=series, view=view,
                spacing_from=spacing_from, label_map=label_map)
    except (FileExistsError, FileNotFoundError, CineReadError, ValueError) as err:
        print(f"convert: error: {err}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
