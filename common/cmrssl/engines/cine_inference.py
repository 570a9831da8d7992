"""Cine inference glue for the segmentation bundle: what its config cannot say.

The bundle's ``preprocessing``, ``inferer`` and ``postprocessing`` work on one
3D frame ``[C=1, W, H, Z]`` (the unit MONAI Label sends). A cine is segmented by
giving the evaluator one record per frame (:func:`cine_frame_records`) and
attaching :class:`CineSegmentationWriter`, which gathers the frame predictions
of each cine into ``[T, Z, H, W]`` and, once every frame is done, writes

- ``segmentation.nii.gz``: canonical labels (0 background, 1 LV cavity,
  2 LV myocardium, 3 RV cavity) as a 4D NIfTI ``[x, y, z, t]`` aligned with
  the input (same shape and affine as a 4D NIfTI input; the first frame's
  affine for a folder of 3D frames; the DICOM series' stack geometry, slices
  base to apex, for a DICOM folder);
- ``function.json`` and ``function.csv``: EDV, ESV, SV, EF, LV mass, ED/ES frames;
- ``volume_curve.png`` (LV/RV volume over the cycle, ED/ES marked) and
  ``contours_ed.png`` / ``contours_es.png`` (contours on every segmented slice).

With several cines, each gets a sub-folder named by its subject made a safe
folder name, and ``subjects.json`` maps the folders to the subjects as given.

Everything is written into a temporary folder that is moved into the output
folder at the end, so a failing run leaves nothing half-written. An output
folder that already holds results is refused unless ``overwrite``, which
replaces only the entries this writer makes; an output folder that is an
input, or contains one, is refused.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np
import torch

from cmrssl.flags import as_bool
from cmrssl.io.atomic import check_not_input, safe_folder_name
from cmrssl.io.geometry import LPS_TO_RAS

__all__ = [
    "read_cine_for_inference",
    "CineStudyCache",
    "resolve_cine_inputs",
    "cine_frame_records",
    "check_output_dir",
    "segmentation_nifti",
    "cardiac_function_report",
    "write_cine_outputs",
    "CineSegmentationWriter",
]

logger = logging.getLogger(__name__)

SEGMENTATION_FILE = "segmentation.nii.gz"
FUNCTION_JSON = "function.json"
FUNCTION_CSV = "function.csv"
VOLUME_CURVE_PNG = "volume_curve.png"
CONTOURS_ED_PNG = "contours_ed.png"
CONTOURS_ES_PNG = "contours_es.png"
SUBJECTS_JSON = "subjects.json"


# --------------------------------------------------------------------------- inputs
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def _check_nifti_dimensions(path: Path, expected_channels: int) -> None:
    """Reject, with a message naming ``path``, a NIfTI that is 2D or has several channels.

    A 5D NIfTI ``[x, y, z, t, c]`` with ``c > 1`` (RGB, multi-echo) cannot be
    fed to a grayscale network; a 2D image ``[x, y]`` (or ``[x, y, 1]`` with a
    single slice and no time axis) is a single picture, not a cine or a frame stack.
    """
    import nibabel as nib

    shape = tuple(int(s) for s in nib.load(str(path)).shape)
    if len(shape) < 3:
        raise ValueError(
            f"{path}: is a 2D image of shape {shape}; expected a cine (4D NIfTI [x, y, z, t], "
            "a DICOM folder or a folder of 3D NIfTI frames) or a 3D frame [x, y, z]"
        )
    if len(shape) >= 5:
        channels = int(np.prod(shape[4:]))
        if channels != expected_channels:
            raise ValueError(
                f"{path}: has {channels} channels (shape {shape}); the network expects "
                f"{expected_channels} (grayscale cine)"
            )


def read_cine_for_inference(path: Union[str, os.PathLike], expected_channels: int = 1):
    """Read a cine (or a single 3D frame) as a :class:`cmrssl.io.CineStudy`.

    Args:
        path: a DICOM folder, a 4D NIfTI ``[x, y, z, t]``, a folder of 3D NIfTI
            frames, or a single 3D NIfTI frame ``[x, y, z]`` (read as a one-frame cine).
        expected_channels: channels the network takes; other counts are refused.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a 2D image or an unexpected channel count (the message names ``path``).
    """
    from cmrssl.io import read_cine

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such cine (expected a DICOM folder, a 4D NIfTI or a folder of 3D NIfTI frames)")
    if path.is_file() and _is_nifti(path):
        _check_nifti_dimensions(path, expected_channels)
    study = read_cine(path)
    if study.num_frames == 1 and study.num_slices == 1:
        raise ValueError(
            f"{path}: is a single 2D image (one frame, one slice, {study.pixels.shape[2]}x{study.pixels.shape[3]}); "
            "expected a cine or a 3D frame (a stack of slices)"
        )
    if min(study.pixels.shape[2:]) < 2:
        raise ValueError(f"{path}: image of shape {study.pixels.shape} [T, Z, H, W] is not a cine")
    return study


class CineStudyCache:
    """Keeps the last few studies read, keyed by path and modification time.

    Frame-by-frame inference visits the frames of one cine in a row; reading a
    DICOM folder of 250 files for each of its 25 frames would dominate the run.
    """

    def __init__(self, max_studies: int = 1, expected_channels: int = 1) -> None:
        if max_studies < 1:
            raise ValueError(f"max_studies must be >= 1, got {max_studies}")
        self.max_studies = int(max_studies)
        self.expected_channels = int(expected_channels)
        self._studies: "OrderedDict[tuple, object]" = OrderedDict()

    def get(self, path: Union[str, os.PathLike]):
        path = Path(path).resolve()
        key = (str(path), path.stat().st_mtime_ns if path.exists() else None)
        if key in self._studies:
            self._studies.move_to_end(key)
            return self._studies[key]
        study = read_cine_for_inference(path, expected_channels=self.expected_channels)
        self._studies[key] = study
        while len(self._studies) > self.max_studies:
            self._studies.popitem(last=False)
        return study


def _unique_folder_name(name: object, taken: set) -> str:
    folder = safe_folder_name(name)
    candidate, number = folder, 1
    while candidate in taken:
        candidate, number = f"{folder}_{number}", number + 1
    taken.add(candidate)
    return candidate


def resolve_cine_inputs(
    input: Union[str, os.PathLike, None] = "",
    datalist: Union[str, os.PathLike, None] = "",
    dataset_dir: Union[str, os.PathLike, None] = "",
    split: str = "test",
) -> List[dict]:
    """The cines to segment, as ``[{"cine_key": folder name, "subject": key, "cine": absolute path}]``.

    ``input`` (one cine) wins; otherwise every distinct cine of the datalist's
    ``split`` (the record's ``cine``, else its ``image``), keyed by ``subject``.
    Relative datalist paths resolve against ``dataset_dir`` when given, else
    against the datalist's folder.

    ``cine_key`` names the cine's output sub-folder: the subject made a safe
    folder name (:func:`cmrssl.io.atomic.safe_folder_name`: a subject such as
    ``../../x`` or ``/abs/p`` must not write outside the output folder) and
    unique (``_1``, ``_2`` appended); ``subject`` keeps the key as the user gave it.

    Raises:
        ValueError: neither ``input`` nor ``datalist`` is given, or the split is empty.
        FileNotFoundError: the input or datalist does not exist.
    """
    if input:
        path = Path(input).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: input cine not found (give a DICOM folder, a 4D NIfTI or a folder of 3D NIfTI frames)"
            )
        name = path.name
        for suffix in (".nii.gz", ".nii"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        return [{"cine_key": safe_folder_name(name), "subject": name, "cine": str(path)}]
    if not datalist:
        raise ValueError("no input: pass --input PATH (a cine) or --datalist JSON")
    datalist = Path(datalist).expanduser().resolve()
    if not datalist.is_file():
        raise FileNotFoundError(f"{datalist}: datalist not found")
    try:
        content = json.loads(datalist.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{datalist}: not valid JSON ({error})") from error
    records = content.get(split, []) if isinstance(content, dict) else []
    if not records:
        raise ValueError(f"{datalist}: split '{split}' is empty or missing")
    base = Path(dataset_dir).expanduser().resolve() if dataset_dir else datalist.parent
    cines: List[dict] = []
    seen: set = set()
    taken: set = set()
    for number, record in enumerate(records):
        if not isinstance(record, dict) or not (record.get("cine") or record.get("image")):
            raise ValueError(f"{datalist}: record {number} of '{split}' has neither 'cine' nor 'image': {record}")
        cine = Path(record.get("cine") or record["image"])
        cine = cine if cine.is_absolute() else (base / cine).resolve()
        if str(cine) in seen:
            continue
        seen.add(str(cine))
        subject = str(record.get("subject") or cine.name)
        cines.append({"cine_key": _unique_folder_name(subject, taken), "subject": subject, "cine": str(cine)})
    return cines


def cine_frame_records(cines: Sequence[dict], cache: CineStudyCache) -> List[dict]:
    """One dataset record per frame of each cine: ``{"image", "frame_index", "cine_key"}``."""
    records = []
    for cine in cines:
        study = cache.get(cine["cine"])
        for t in range(study.num_frames):
            records.append({"image": cine["cine"], "frame_index": t, "cine_key": cine["cine_key"]})
    return records


# --------------------------------------------------------------------------- outputs
def check_output_dir(
    output_dir: Union[str, os.PathLike], overwrite: bool = False, inputs: Sequence[Union[str, os.PathLike]] = ()
) -> Path:
    """Refuse an output folder that already holds files unless ``overwrite``, or that is or holds an input.

    Raises:
        OutputOverlapsInputError: ``output_dir`` is one of ``inputs`` or a folder containing one.
        FileExistsError: ``output_dir`` is a non-empty folder (or a file) and not ``overwrite``.
    """
    overwrite = as_bool(overwrite, "overwrite")
    check_not_input(output_dir, inputs)
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.is_file():
        raise FileExistsError(f"{output_dir}: output path is a file, expected a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output_dir}: output folder already holds results; pass --overwrite true to replace them"
        )
    return output_dir


def _source_kind(source: Path) -> str:
    if source.is_dir():
        has_nifti = any(p.name.lower().endswith((".nii", ".nii.gz")) for p in source.iterdir())
        return "nifti_frames" if has_nifti else "dicom"
    return "nifti"


def segmentation_nifti(study, labels_tzhw: np.ndarray, source: Union[str, os.PathLike, None] = None):
    """The masks ``[T, Z, H, W]`` as a 4D ``Nifti1Image`` ``[x, y, z, t]`` in the input's geometry.

    For a NIfTI input (4D file or folder of 3D frames) the voxel grid is the
    file's own: slices are put back in the source order
    (``study.source_slice_index``) and the file's affine and orientation codes
    are kept, so the mask overlays the input in any viewer. For a DICOM folder
    the grid is the series' stack (slices base to apex) with its LPS geometry
    converted to RAS.
    """
    import nibabel as nib

    labels = np.asarray(labels_tzhw)
    if labels.shape != study.pixels.shape:
        raise ValueError(
            f"{study.source or 'cine'}: labels {labels.shape} differ from the study's pixels {study.pixels.shape}"
        )
    source = Path(source or study.source)
    kind = _source_kind(source) if source.exists() else "dicom"
    data_xyzt = np.zeros(labels.shape[::-1], dtype=np.uint8)  # [W, H, Z, T]
    order = np.asarray(study.source_slice_index) if kind != "dicom" else np.arange(study.num_slices)
    for z in range(study.num_slices):
        data_xyzt[:, :, int(order[z]), :] = labels[:, z].transpose(2, 1, 0)
    reference = None
    if kind == "nifti":
        reference = nib.load(str(source))
    elif kind == "nifti_frames":
        # Every frame shares one grid (the reader checks it); any image frame gives the geometry.
        frames = sorted(
            p for p in source.iterdir()
            if p.name.lower().endswith((".nii", ".nii.gz")) and "frame" in p.name and "_gt" not in p.name
        )
        reference = nib.load(str(frames[0])) if frames else None
    if reference is not None and tuple(reference.shape[:3]) == data_xyzt.shape[:3]:
        # a single 3D frame (what MONAI Label sends) gets a 3D mask, like its input
        data = data_xyzt[..., 0] if kind == "nifti" and len(reference.shape) == 3 else data_xyzt
        header = reference.header.copy()
        header.set_data_dtype(np.uint8)
        image = nib.Nifti1Image(data, reference.affine, header)
        image.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]) or 1)
        image.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]) or 1)
        return image
    affine = LPS_TO_RAS @ study.stack_affine
    image = nib.Nifti1Image(data_xyzt, affine)
    image.header.set_xyzt_units("mm", "msec")
    return image


def _segmented(study, labels_tzhw: np.ndarray):
    """A shallow copy of ``study`` carrying ``labels_tzhw`` as its labels on every frame."""
    segmented = copy.copy(study)
    segmented.labels = np.asarray(labels_tzhw).astype(np.int16)
    segmented.labelled_frames = list(range(study.num_frames))
    return segmented


def cardiac_function_report(study, labels_tzhw: np.ndarray):
    """Cardiac function of the segmented cine: ``(CardiacFunction or None, report dict)``.

    The dict is :meth:`CardiacFunction.to_dict` plus ``"status": "ok"``. When
    the segmentation gives no function (no LV cavity on the ED or ES frame, a
    flat volume curve) the run still delivers its masks: the function is None
    and the dict holds ``"status": "no function: <reason>"`` and the LV volume curve.
    """
    from cmrssl.metrics.function import LV_CAVITY, cardiac_function_from_study, volume_curve_ml

    segmented = _segmented(study, labels_tzhw)
    try:
        function = cardiac_function_from_study(segmented)
    except ValueError as error:
        logger.warning("%s: no cardiac function from the segmentation: %s", study.source, error)
        curve = volume_curve_ml(segmented.labels, study.voxel_volume_ml, LV_CAVITY, source=str(study.source))
        return None, {
            "status": f"no function: {error}",
            "lv_volume_curve_ml": [float(v) for v in curve],
            "spacing_mm": [float(s) for s in study.spacing_mm],
            "num_frames": study.num_frames,
            "source": str(study.source),
        }
    return function, dict(function.to_dict(), status="ok")


def _write_function_csv(report: dict, path: Path) -> None:
    """One row: every scalar of the report (lists such as the volume curve stay in the JSON)."""
    scalars = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(scalars))
        writer.writeheader()
        writer.writerow(scalars)


def write_cine_outputs(
    study,
    labels_tzhw: np.ndarray,
    folder: Union[str, os.PathLike],
    source: Union[str, os.PathLike, None] = None,
    plots: bool = True,
) -> dict:
    """Write the masks, the function report (JSON + CSV) and the PNGs of one cine into ``folder``.

    Args:
        study: the input :class:`cmrssl.io.CineStudy` (pixels ``[T, Z, H, W]``).
        labels_tzhw: canonical labels ``[T, Z, H, W]`` (the segmentation of every frame).
        folder: written in place; callers wanting all-or-nothing pass a
            temporary folder (:class:`CineSegmentationWriter` does).
        source: the input path, for the output geometry (default ``study.source``).
        plots: write the volume curve and the ED/ES contour overlays.

    Returns:
        The report dict, with ``"files"``: output name -> file name in ``folder``.
    """
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(segmentation_nifti(study, labels_tzhw, source), str(folder / SEGMENTATION_FILE))
    function, report = cardiac_function_report(study, labels_tzhw)
    files = {"segmentation": SEGMENTATION_FILE, "function_json": FUNCTION_JSON, "function_csv": FUNCTION_CSV}
    if plots:
        from cmrssl.metrics.plots import plot_contour_overlays, plot_volume_curve

        name = Path(source or study.source).name
        cycle = [int(t) for t in study.source_frame_index]
        if function is not None:
            plot_volume_curve(function, folder / VOLUME_CURVE_PNG, title=name)
            files["volume_curve_png"] = VOLUME_CURVE_PNG
            phases = (("ED", cycle.index(int(function.ed_frame))), ("ES", cycle.index(int(function.es_frame))))
        else:
            # No function, but the contours still show the user what the network did:
            # frames of largest and smallest segmented LV (first and middle frame if none).
            curve = np.asarray(report["lv_volume_curve_ml"], dtype=np.float64)
            largest, smallest = int(np.argmax(curve)), int(np.argmin(curve))
            if largest == smallest:
                largest, smallest = 0, study.num_frames // 2
            phases = (("largest LV", largest), ("smallest LV", smallest))
        for (phase, t), png in zip(phases, (CONTOURS_ED_PNG, CONTOURS_ES_PNG)):
            plot_contour_overlays(
                study.pixels[t], labels_tzhw[t], folder / png, title=f"{name}: {phase} (frame {cycle[t]})"
            )
            files[png.replace(".png", "_png")] = png
    report = dict(report, input=str(source or study.source), files=files)
    (folder / FUNCTION_JSON).write_text(json.dumps(report, indent=2))
    _write_function_csv(report, folder / FUNCTION_CSV)
    return report


class CineSegmentationWriter:
    """Ignite handler gathering per-frame predictions into cines and writing their outputs.

    Args:
        output_dir: folder that receives the results (for several cines, one
            sub-folder per ``cine_key``).
        cines: the cines being segmented (:func:`resolve_cine_inputs`).
        cache: the :class:`CineStudyCache` the frames were loaded through.
        overwrite: replace an output folder that already holds results.
        pred_key: key of the discrete prediction ``[1, W, H, Z]`` in the engine output.
        plots: write the PNGs (needs matplotlib).

    The output folder is checked at construction (before any inference runs),
    and written at ``COMPLETED`` through a temporary sibling folder renamed at the end.
    """

    def __init__(
        self,
        output_dir: Union[str, os.PathLike],
        cines: Sequence[dict],
        cache: CineStudyCache,
        overwrite: bool = False,
        pred_key: str = "pred",
        plots: bool = True,
    ) -> None:
        self.cines = list(cines)
        self.output_dir = check_output_dir(output_dir, overwrite, inputs=[c["cine"] for c in self.cines])
        self.overwrite = as_bool(overwrite, "overwrite")
        self.cache = cache
        self.pred_key = pred_key
        self.plots = as_bool(plots, "write_plots")
        self.labels: Dict[str, np.ndarray] = {}
        self.reports: Dict[str, dict] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.labels = {}
        self.reports = {}

    def collect(self, engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, dict):  # decollate=False: one record per batch row
            raise ValueError("CineSegmentationWriter needs the evaluator's decollate=True")
        for record, result in zip(batch, output):
            key, t = str(record["cine_key"]), int(record["frame_index"])
            cine = next(c for c in self.cines if c["cine_key"] == key)
            study = self.cache.get(cine["cine"])
            if key not in self.labels:
                self.labels[key] = np.full(study.pixels.shape, -1, dtype=np.int16)
            pred = result[self.pred_key]
            pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            if pred.ndim == 4:
                pred = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
            expected = study.pixels.shape[1:][::-1]
            if pred.shape != expected:
                raise ValueError(
                    f"{cine['cine']}: frame {t} prediction {pred.shape} is not in the input grid "
                    f"[W, H, Z] = {expected}; the postprocessing must invert the preprocessing"
                )
            self.labels[key][t] = np.rint(pred).astype(np.int16).transpose(2, 1, 0)

    def write(self, engine=None) -> None:
        from cmrssl.io.atomic import atomic_folder

        for cine in self.cines:
            labels = self.labels.get(cine["cine_key"])
            if labels is None or (labels < 0).any():
                missing = "all" if labels is None else int((labels < 0).any(axis=(1, 2, 3)).sum())
                raise RuntimeError(f"{cine['cine']}: {missing} frames were not segmented")
        with atomic_folder(self.output_dir, overwrite=self._may_replace(), owned=self._owned_entries().__contains__) as tmp:
            for cine in self.cines:
                folder = tmp if len(self.cines) == 1 else tmp / cine["cine_key"]
                study = self.cache.get(cine["cine"])
                self.reports[cine["cine_key"]] = write_cine_outputs(
                    study, self.labels[cine["cine_key"]], folder, cine["cine"], plots=self.plots
                )
            if len(self.cines) > 1:
                # which sub-folder holds which subject: folder names are made safe, subjects kept as given
                subjects = [{"folder": c["cine_key"], "subject": c.get("subject", c["cine_key"]), "input": c["cine"]}
                            for c in self.cines]
                (tmp / SUBJECTS_JSON).write_text(json.dumps(subjects, indent=2) + "\n")
        for key, report in self.reports.items():
            if report.get("status") == "ok":
                logger.info(
                    "%s: LV EDV %.1f ml, ESV %.1f ml, EF %.1f %% -> %s", key, report["lv_edv_ml"],
                    report["lv_esv_ml"], report["lv_ef_percent"], self.output_dir,
                )
            else:
                logger.warning("%s: %s -> %s", key, report.get("status"), self.output_dir)

    def _owned_entries(self) -> set:
        """Names in the output folder that an earlier run of this writer made (replaced, never left stale)."""
        owned = {SEGMENTATION_FILE, FUNCTION_JSON, FUNCTION_CSV, VOLUME_CURVE_PNG, CONTOURS_ED_PNG, CONTOURS_ES_PNG,
                 SUBJECTS_JSON}
        try:
            owned |= {str(entry["folder"]) for entry in json.loads((self.output_dir / SUBJECTS_JSON).read_text())}
        except (OSError, ValueError, TypeError, KeyError):
            pass  # no earlier multi-cine run here
        return owned

    def _may_replace(self) -> bool:
        # An empty folder made by the user (or by a previous refused run) may be replaced.
        return self.overwrite or (self.output_dir.is_dir() and not any(self.output_dir.iterdir()))
