"""The anatomical-position boxes against the phantom's true LV axis: the figure in cmr_position_ssl's README.

    .venv/bin/python tools/benchmarks/position_box_error.py [--seeds 51] [--num_frames 4]

For phantom subjects of seeds 0..N-1 (random heart poses, the phantom's default
image size), on every mid-ventricular short-axis slice (15-45 mm below the LV base
centre along the true long axis) it compares the crossing box (class 1) with the
true LV centre (the long axis meeting the slice plane): the analytic box centre,
and the centroid of the pixels labelled 1. Prints the largest errors in pixels and mm.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Optional, Union

import fire
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "common"))

from cmrssl.data.phantom import generate_subject  # noqa: E402
from cmrssl.data.position import sax_position_boxes, sax_position_labels  # noqa: E402
from cmrssl.io.geometry import world_to_pixel  # noqa: E402


def box_centre_errors(seeds: Union[int, Iterable[int]] = 51, num_frames: int = 4,
                      image_size: Optional[int] = None) -> dict:
    """Largest crossing-box errors over phantom subjects (see the module doc).

    Args:
        seeds: a number N (seeds 0..N-1) or the seeds themselves.
        num_frames, image_size: of each phantom subject (``image_size`` None: the phantom's default).
    """
    seeds = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    centre_px, centroid_px, centroid_mm, slices = 0.0, 0.0, 0.0, 0
    for seed in seeds:
        subject = generate_subject(seed, num_frames=num_frames, image_size=image_size)
        axis = np.asarray(subject.analytic["lv_long_axis_lps"])
        base = np.asarray(subject.analytic["lv_base_centre_ed_lps_mm"])
        boxes = sax_position_boxes(subject.sax, subject.lax_2ch, subject.lax_4ch)
        labels = sax_position_labels(subject.sax, subject.lax_2ch, subject.lax_4ch)
        pixel_mm = float(np.mean(subject.sax.pixel_spacing_mm))
        for z, box in enumerate(boxes):
            affine = subject.sax.slice_affines[z]
            depth = float((affine[:3, 3] - base) @ box.normal / (axis @ box.normal))
            if not 15.0 <= depth <= 45.0:
                continue
            truth = world_to_pixel(affine, base + depth * axis)[:2]
            rows, cols = np.nonzero(labels[z] == 1)
            error = float(np.linalg.norm([cols.mean() - truth[0], rows.mean() - truth[1]]))
            centre_px = max(centre_px, float(np.linalg.norm(box.centres_px()[0] - truth)))
            centroid_px, centroid_mm = max(centroid_px, error), max(centroid_mm, error * pixel_mm)
            slices += 1
    return {"subjects": len(seeds), "mid_ventricular_slices": slices, "max_box_centre_error_px": centre_px,
            "max_label_centroid_error_px": centroid_px, "max_label_centroid_error_mm": centroid_mm}


def main(seeds: int = 51, num_frames: int = 4) -> None:
    result = box_centre_errors(seeds, num_frames)
    print(f"{result['subjects']} phantom poses, {result['mid_ventricular_slices']} mid-ventricular slices: "
          f"crossing-box centre off the true LV axis by at most {result['max_box_centre_error_px']:.2g} px; "
          f"centroid of the class-1 pixels by at most {result['max_label_centroid_error_px']:.2f} px "
          f"({result['max_label_centroid_error_mm']:.2f} mm)")


if __name__ == "__main__":
    fire.Fire(main)
