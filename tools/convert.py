"""Convert a cine (DICOM folder, 4D NIfTI or folder of 3D NIfTI frames) to the project layout.

    python tools/convert.py INPUT OUT_DIR [--overwrite] [--labels LABELS.nii.gz] [--series N]

writes ``OUT_DIR/sax_cine.nii.gz`` (4D ``[x, y, z, t]``, RAS affine, slices base
to apex), ``OUT_DIR/frames/frame_XX.nii.gz`` (one 3D file per frame, 0-based),
``sax_cine_gt.nii.gz`` and ``frame_XX_gt.nii.gz`` when labels are given or found,
and prints the geometry it found. OUT_DIR is written whole (temporary folder
renamed) and an existing OUT_DIR is refused unless ``--overwrite``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import fire

from cmrssl.io import CineReadError, read_cine, write_cine_nifti, write_frames_nifti
from cmrssl.io.atomic import atomic_folder


def convert(input: str, out_dir: str, overwrite: bool = False, labels: Optional[str] = None,
            series: Optional[str] = None) -> Path:
    """Read ``input`` and write the NIfTI cine and frames into ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    study = read_cine(input, label_path=labels, series=series)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        write_cine_nifti(study, tmp / "sax_cine.nii.gz")
        if study.labels is not None:
            write_cine_nifti(study, tmp / "sax_cine_gt.nii.gz", what="labels")
        write_frames_nifti(study, tmp / "frames")
    dz, dy, dx = study.spacing_mm
    print(f"{input}: {study.num_frames} frames x {study.num_slices} slices of {study.pixels.shape[2]}x"
          f"{study.pixels.shape[3]} pixels, spacing {dz:.2f} x {dy:.3f} x {dx:.3f} mm (slice, row, column)")
    print(f"wrote {out / 'sax_cine.nii.gz'} and {study.num_frames} frames in {out / 'frames'}")
    return out


def main(input: str, out_dir: str, overwrite: bool = False, labels: Optional[str] = None,
         series: Optional[str] = None) -> None:
    try:
        convert(input, out_dir, overwrite=overwrite, labels=labels, series=series)
    except (FileExistsError, FileNotFoundError, CineReadError) as err:
        print(f"convert: error: {err}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
