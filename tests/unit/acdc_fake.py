"""A fake ACDC tree written from a phantom subject (shared by the indexer and LVQuan tests).

Files as ACDC distributes them: ``patientNNN/Info.cfg`` and the ED/ES frames
``patientNNN_frameNN(_gt).nii.gz`` with ACDC label values and ACDC's header quirk.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from cmrssl.labels import ACDC_TO_CANONICAL

CANONICAL_TO_ACDC = {v: k for k, v in ACDC_TO_CANONICAL.items()}
ACDC_ZOOMS = (1.25, 1.25, 8.0)  # (dx, dy, dz) in the header; the affine carries none (ACDC quirk)


def xyz(volume_zhw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(volume_zhw, (2, 1, 0)))  # [Z, H, W] -> [x, y, z]


def acdc_nifti(data: np.ndarray, path: Path) -> None:
    """Save like ACDC: sform code 2 = diag(-1, -1, 1) without spacing, spacing only in the zooms."""
    img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header.set_zooms(ACDC_ZOOMS[: data.ndim] if data.ndim == 3 else ACDC_ZOOMS + (25.0,))
    img.header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    img.header.set_qform(None, code=0)
    nib.save(img, str(path))


def write_acdc(root: Path, tiny, patients: dict, ed: int = 1, es: int = 3, with_4d=()) -> Path:
    """ACDC layout: ``{number: group}`` patients, ED/ES 1-based, ACDC label values."""
    acdc_labels = np.vectorize(CANONICAL_TO_ACDC.get)(tiny.sax.labels).astype(np.uint8)
    for number, group in patients.items():
        name = f"patient{number:03d}"
        folder = root / name
        folder.mkdir(parents=True)
        info = f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 170.0\nNbFrame: 4\nWeight: 70.0\n"
        (folder / "Info.cfg").write_text(info)
        for frame in (ed, es):
            acdc_nifti(xyz(tiny.sax.pixels[frame - 1]).astype(np.int16), folder / f"{name}_frame{frame:02d}.nii.gz")
            acdc_nifti(xyz(acdc_labels[frame - 1]), folder / f"{name}_frame{frame:02d}_gt.nii.gz")
        if number in with_4d:
            acdc_nifti(np.transpose(tiny.sax.pixels, (3, 2, 1, 0)).astype(np.int16), folder / f"{name}_4d.nii.gz")
    return root
