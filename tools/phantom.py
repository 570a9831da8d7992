"""Write a deterministic phantom cohort of beating-heart cine studies.

    python tools/phantom.py --out DIR --subjects N --seed S [--overwrite] [--no_dicom]
        [--num_frames T] [--image_size PX]

Prints one line per subject with its analytic EDV, ESV, EF and LV mass. The model
and the file layout are documented in ``cmrssl.data.phantom``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import fire

from cmrssl.cli_errors import tool_errors
from cmrssl.data.phantom import generate_cohort


def main(out: str, subjects: int = 10, seed: int = 0, overwrite: bool = False, no_dicom: bool = False,
         num_frames: int = None, image_size: int = None) -> None:
    """Generate the cohort in ``out`` (refused if it exists and is not empty, unless --overwrite)."""
    start = time.perf_counter()
    with tool_errors("phantom", errors=(ValueError,)):
        folders = generate_cohort(out, subjects, seed, write_dicom=not no_dicom, overwrite=overwrite,
                                  num_frames=num_frames, image_size=image_size)
    for folder in folders:
        a = json.loads((folder / "analytic.json").read_text())
        dz, dy, dx = a["spacing_zyx_mm"]
        print(f"{folder.name}: EDV {a['edv_ml']:6.1f} ml  ESV {a['esv_ml']:5.1f} ml  EF {a['ef_percent']:4.1f} %  "
              f"LV mass {a['lv_mass_g']:5.1f} g  RV EDV {a['rv_edv_ml']:5.1f} ml  ED/ES frame "
              f"{a['ed_frame']}/{a['es_frame']} of {a['num_frames']}  {a['num_slices']} slices "
              f"{dz:.1f} x {dy:.2f} x {dx:.2f} mm")
    print(f"wrote {len(folders)} subjects to {Path(out)} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    fire.Fire(main)
