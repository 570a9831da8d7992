"""Anatomical-position pretext labels (Bai et al., MICCAI 2019) for a study or a datalist.

    python tools/position_labels.py STUDY_OR_DATALIST --out DIR [--overwrite] [--subject NAME] [--splits ...]

Input, one of:

- a phantom subject folder (``sax_cine.nii.gz``, ``lax_2ch.nii.gz``, ``lax_4ch.nii.gz``);
- a DICOM study folder (or a tree of them): short-axis series folders with their
  single-slice 2Ch/4Ch series beside them, found as ``tools/index.py dicom`` finds
  them (:func:`cmrssl.data.dicom_folder.find_dicom_studies`). One study found is named
  after the folder (or ``--subject``); several by their folders relative to it;
- a datalist JSON whose records carry the short-axis cine (``cine``, else ``image``)
  and ``lax_2ch`` / ``lax_4ch``, grouped by ``subject`` (``tools/index.py`` writes them).
  Every split but ``test`` is read, so held-out subjects stay out of the pretraining
  pool; ``--splits training,validation,test`` names the splits explicitly.

Output in DIR (refused when DIR holds files, unless ``--overwrite``, which replaces
only these entries; written whole or not at all)::

    labels/<subject>_sax_position.nii.gz   SA box map [x, y, z, 1] uint8 on the SA grid
    labels/<subject>_4ch_position.nii.gz   4Ch box map [x, y, 1, 1] on the 4Ch grid
    png/<subject>.png                      mid SA slice and 4Ch image, lines and numbered boxes
    datalist.json                          {"training": [{"subject", "image", "position_label", "frame_index"}]}
    datalist_lax.json                      the same for the 4Ch image
    summary.json                           labelled and skipped studies (with reasons), notes, box parameters

``LoadCineFramed(keys=["image", "position_label"], frame_key="frame_index")`` gives
image and label maps of one shape and affine. Classes and geometry:
:mod:`cmrssl.data.position`.

A study that cannot be labelled without guessing (a missing long-axis view, views that
cannot be placed in one world: a long-axis DICOM series from another FrameOfReferenceUID
than the short-axis series, a NIfTI without orientation; parallel planes, planes missing
the stack, ambiguous orientation, an unreadable cine) is skipped: a warning names its
subject key and the reason, the summary line counts it and ``summary.json`` lists it
(without the FrameOfReferenceUIDs, which only the warning names). A labelled study whose
frames of reference could not be compared (DICOM series without a FrameOfReferenceUID,
or with one per file) gets a warning and ``summary.json``'s ``notes``. Exit status 0 when
at least one study was labelled, 1 when none could be (nothing is written), 2 for bad
input (a missing file, named).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import fire
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.data.datalist import SPLITS  # noqa: E402
from cmrssl.data.dicom_folder import find_dicom_studies  # noqa: E402
from cmrssl.data.position import (  # noqa: E402
    PositionSkip,
    box_parameters,
    position_boxes,
    write_position_labels,
)
from cmrssl.data.subsets import datalist_records  # noqa: E402
from cmrssl.io.atomic import atomic_folder, check_output_dir, safe_folder_name  # noqa: E402
from cmrssl.io.errors import CineReadError  # noqa: E402
from cmrssl.io.reader import read_cine  # noqa: E402
from cmrssl.metrics.plots import plot_position_boxes  # noqa: E402

logger = logging.getLogger("position_labels")

_OWNED = ("labels", "png", "datalist.json", "datalist_lax.json", "summary.json")


class _NothingLabelled(RuntimeError):
    """No study of the input could be labelled."""


def _studies_of_datalist(path: Path, splits: Optional[Sequence[str]] = None) -> List[dict]:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if splits is None:  # the held-out test subjects stay out of the pretraining pool
        splits = [s for s in SPLITS if s != "test" and isinstance(content, dict) and s in content] or ["training"]
    studies: Dict[str, dict] = {}
    for record in datalist_records(path, splits=splits):
        subject = str(record.get("subject", ""))
        if not subject:
            raise ValueError(f"{path}: a record lacks 'subject': {record}")
        if subject not in studies:
            studies[subject] = {"subject": subject, "sax": record.get("cine") or record["image"],
                                "lax_2ch": record.get("lax_2ch"), "lax_4ch": record.get("lax_4ch")}
    return list(studies.values())


def _find_studies(source: Path, subject: Optional[str], splits: Optional[Sequence[str]] = None) -> List[dict]:
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such study folder or datalist")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise ValueError(f"{source}: expected a study folder or a datalist .json")
        return _studies_of_datalist(source, splits)
    if (source / "sax_cine.nii.gz").is_file():  # a phantom subject folder
        lax = {key: str(source / f"{key}.nii.gz") if (source / f"{key}.nii.gz").is_file() else None
               for key in ("lax_2ch", "lax_4ch")}
        return [{"subject": subject or source.resolve().name, "sax": str(source / "sax_cine.nii.gz"), **lax}]
    found, _ = find_dicom_studies(source)
    if not found:
        raise ValueError(f"{source}: no short-axis cine (sax_cine.nii.gz, or a DICOM series of several slices)")
    studies = [{"subject": s["subject"], "sax": s["folder"], "lax_2ch": s.get("lax_2ch"),
                "lax_4ch": s.get("lax_4ch")} for s in found]
    if len(studies) == 1:
        studies[0]["subject"] = subject or source.resolve().name
    return studies


def _file_names(studies: List[dict]) -> None:
    used = set()
    for study in studies:
        name, k = safe_folder_name(study["subject"]), 1
        while name in used:
            k += 1
            name = f"{safe_folder_name(study['subject'])}_{k}"
        used.add(name)
        study["name"] = name


def _label_study(study: dict, tmp: Path) -> dict:
    """Read the three views, write the maps and the picture; returns the study's records."""
    for view in ("2ch", "4ch"):
        if not study.get(f"lax_{view}"):
            raise PositionSkip(f"no {view[0]}Ch long-axis view")
    sax = read_cine(study["sax"])
    lax_2ch = read_cine(study["lax_2ch"], view="2ch")
    lax_4ch = read_cine(study["lax_4ch"], view="4ch")
    sax_boxes, lax_boxes, notes = position_boxes(sax, lax_2ch, lax_4ch)
    name = study["name"]
    sax_path = tmp / "labels" / f"{name}_sax_position.nii.gz"
    lax_path = tmp / "labels" / f"{name}_4ch_position.nii.gz"
    shape = sax.pixels.shape[2:]
    write_position_labels(sax, np.stack([b.label_map(shape) for b in sax_boxes]), sax_path)
    write_position_labels(lax_4ch, lax_boxes.label_map(lax_4ch.pixels.shape[2:])[None], lax_path)
    mid = sax.num_slices // 2
    panels = [
        {"image": sax.pixels[0, mid], "lines": sax_boxes[mid].lines_px(shape), "corners": sax_boxes[mid].corners_px(),
         "centres": sax_boxes[mid].centres_px(), "title": f"short axis, slice {mid} (4Ch line, 2Ch line)"},
        {"image": lax_4ch.pixels[0, 0], "lines": lax_boxes.lines_px(lax_4ch.pixels.shape[2:]),
         "corners": lax_boxes.corners_px(), "centres": lax_boxes.centres_px(),
         "title": "4Ch (mid short-axis line, long axis)"},
    ]
    plot_position_boxes(panels, tmp / "png" / f"{name}.png", title=f"{study['subject']}: anatomical position boxes")
    # the final paths: tmp's entries are moved into the output folder on success
    out = study["out"]
    sax_image, lax_image = str(Path(study["sax"]).resolve()), str(Path(study["lax_4ch"]).resolve())
    return {
        "notes": notes,
        "sax": [{"subject": study["subject"], "image": sax_image,
                 "position_label": str(out / "labels" / sax_path.name), "frame_index": t}
                for t in range(sax.num_frames)],
        "lax": [{"subject": study["subject"], "image": lax_image,
                 "position_label": str(out / "labels" / lax_path.name), "frame_index": t}
                for t in range(lax_4ch.num_frames)],
    }


def position_labels(source: str, out: str, overwrite: bool = False, subject: Optional[str] = None,
                    splits=None) -> None:
    """Write the anatomical-position box maps, pictures and datalists of SOURCE into OUT (see the module doc).

    ``--splits training,validation`` picks the datalist splits read (default: every split but ``test``).
    """
    started = time.perf_counter()
    source_path = Path(source)
    if isinstance(splits, str):
        splits = [part.strip() for part in splits.split(",") if part.strip()]
    elif splits is not None:
        splits = [str(part) for part in splits]
    studies = _find_studies(source_path, subject, splits)
    inputs = [source] + [s[k] for s in studies for k in ("sax", "lax_2ch", "lax_4ch") if s.get(k)]
    out_dir = check_output_dir(out, overwrite, inputs=inputs)
    _file_names(studies)
    records_sax: List[dict] = []
    records_lax: List[dict] = []
    labelled: List[str] = []
    skipped: Dict[str, str] = {}  # as written (summary.json, the summary line): no internal UIDs
    refusals: Dict[str, str] = {}  # the error messages
    notes: Dict[str, List[str]] = {}
    replace = out_dir.is_dir()  # an empty folder, or one check_output_dir let through with --overwrite
    with atomic_folder(out_dir, overwrite=replace, owned=lambda name: name in _OWNED) as tmp:
        (tmp / "labels").mkdir()
        (tmp / "png").mkdir()
        for study in studies:
            study["out"] = out_dir
            try:
                records = _label_study(study, tmp)
            except (PositionSkip, CineReadError) as err:
                logger.warning("skipping %s: %s", study["subject"], err)
                refusals[study["subject"]] = str(err)
                skipped[study["subject"]] = getattr(err, "written", str(err))
                continue
            records_sax += records["sax"]
            records_lax += records["lax"]
            labelled.append(study["subject"])
            if records["notes"]:
                notes[study["subject"]] = records["notes"]
        if not labelled:
            raise _NothingLabelled(
                f"no study could be labelled ({len(refusals)} skipped: "
                + "; ".join(f"{k}: {v}" for k, v in refusals.items()) + "); nothing was written")
        (tmp / "datalist.json").write_text(json.dumps({"training": records_sax}, indent=1) + "\n")
        (tmp / "datalist_lax.json").write_text(json.dumps({"training": records_lax}, indent=1) + "\n")
        summary = {"source": str(source_path.resolve()), "labelled": labelled, "skipped": skipped,
                   "notes": notes, "num_records": len(records_sax), "num_records_lax": len(records_lax),
                   "box_parameters": box_parameters()}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    line = f"labelled {len(labelled)} of {len(studies)} studies ({len(records_sax)} SA records, " \
           f"{len(records_lax)} 4Ch records); skipped {len(skipped)}"
    if skipped:
        line += " (" + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")"
    print(line)
    print(f"wrote {out_dir} in {time.perf_counter() - started:.1f} s")


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tool_errors("position_labels"):
        try:
            fire.Fire(position_labels, command=argv)
        except _NothingLabelled as err:
            print(f"position_labels: error: {err}", file=sys.stderr)
            raise SystemExit(1)


if __name__ == "__main__":
    main()
