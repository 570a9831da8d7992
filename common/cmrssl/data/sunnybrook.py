"""Sunnybrook Cardiac Data: DICOM cine + expert contour text files -> canonical labels.

Layout (as distributed, and under ``../shared/data/sunnybrook``)::

    ROOT/link.csv                                   patient_id,original_id  (SCD0000101,SC-HF-I-1)
    ROOT/dicoms/SCD0000101/*.dcm                    single-frame short-axis cine
    ROOT/contourfiles/SC-HF-I-1/i-contours/IM-0001-0048-icontour-manual.txt
    ROOT/contourfiles/SC-HF-I-1/o-contours/IM-0001-0059-ocontour-manual.txt

Contour files hold one ``x y`` point per line in pixel coordinates of the
image whose number is in the file name: ``x`` is the column and ``y`` the row,
with ``(0, 0)`` the centre of the first pixel (checked on the real data: the
filled i-contour lies on the bright blood pool; swapping the axes puts it on
darker tissue, see ``tests/realdata/test_sunnybrook_function.py``).
``i-contour`` is the LV endocardium (papillary muscles inside the cavity),
``o-contour`` the LV epicardium (drawn at ED only).

Image number -> (slice, phase): the image number is the DICOM InstanceNumber;
the mapping is derived from each file's header (position along the slice
normal -> slice of the study, rank of TriggerTime within the slice -> phase,
the same rules as :func:`cmrssl.io.dicom.read_dicom_cine`) and checked pixel
by pixel against the study. Only when a contour's image has no DICOM file the
Sunnybrook numbering ``slice = (N-1) // T, phase = (N-1) % T`` (0-based, slices
in acquisition order) is used, with a warning.

Masks: a pixel belongs to a contour when its centre lies inside the closed
polygon or on its boundary (:func:`polygon_mask`, scikit-image's ``polygon2mask``).
Sunnybrook contours run along pixel centres and half-pixel points, so many
centres sit exactly on the contour; counting them reproduces the published
reference volumes of the data set (EDV 196 ml / ESV 145 ml for SC-HF-I-1),
while the open interior alone gives about 2.5 % less.

Labels: i-contour -> 1 (LV cavity); o-contour minus i-contour -> 2 (LV
myocardium) on slices that have both. On a labelled frame, slices without a
contour are background (0): the experts traced every slice holding LV cavity
at ED and ES, so this is right for volumes; ``labelled_slices`` in the
datalist records which slices were traced, for training code that prefers to
skip the others.

Endocardium inside epicardium: an o-contour only makes a myocardium when the
i-contour of the same image lies inside it. On some patients of the data set
the o-contours sit 11-18 px off the i-contours (only 60-70 % of the cavity
inside the epicardium), which turned "inside-epi minus inside-endo" into a
wall twice too heavy. Each (frame, slice) with both contours is checked: when
less than :data:`MIN_ENDO_IN_EPI` of the i-contour's pixels lie inside (or on)
the o-contour, the slice keeps its LV cavity but gets no myocardium, with a
warning naming the subject, image number, frame, slice and the fraction.
:class:`SunnybrookLabels` lists those slices (``myocardium_dropped``) and, for
LV mass, every traced slice of a frame that lacks a myocardium
(:meth:`SunnybrookLabels.myocardium_incomplete`); the datalist records carry
``myocardium_dropped_slices``.

Subject keys (``link.csv`` ``patient_id``) become output folder names and the
contour ids folder names under ``ROOT``: both must be plain folder names (no
``/``, ``\\``, ``.`` or ``..``), or the root is refused.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
import pydicom
from skimage.draw import polygon2mask

from cmrssl.io.atomic import atomic_folder, check_can_write
from cmrssl.io.cine import CineStudy, swap_layout
from cmrssl.io.dicom import read_dicom_cine
from cmrssl.io.geometry import LPS_TO_RAS
from cmrssl.io.nifti import frame_file_name
from cmrssl.labels import LV_CAVITY, LV_MYOCARDIUM, UNLABELLED
from cmrssl.metrics.function import cardiac_function_from_study

__all__ = [
    "CONTOUR_FILE_PATTERN",
    "MIN_ENDO_IN_EPI",
    "SunnybrookLabels",
    "read_contour",
    "polygon_mask",
    "find_contour_files",
    "image_number_to_slice_phase",
    "instance_number_map",
    "sunnybrook_labels",
    "read_sunnybrook_study",
    "find_sunnybrook_subjects",
    "index_sunnybrook",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: ``IM-0001-0048-icontour-manual.txt``: series 0001, image 48, inner contour.
CONTOUR_FILE_PATTERN = re.compile(
    r"^IM-(?P<series>\d+)-(?P<image>\d+)-(?P<kind>icontour|ocontour|p1contour|p2contour)-(?P<who>\w+)\.txt$"
)
#: Contour kinds used for labels (papillary-muscle contours p1/p2 are ignored:
#: the papillary muscles are already inside the i-contour).
_USED_KINDS = {"icontour": "i", "ocontour": "o"}
_SAME_SLICE_MM = 1.0
#: Smallest share of an i-contour's pixels (centres inside or on the polygon) that must
#: lie inside the o-contour of the same image for the pair to make a myocardium.
#: A matching pair contains the whole cavity: on SC-HF-I-1 the worst slice has 99.9 %
#: inside (1 boundary pixel of 1071 where the two lines touch). 95 % leaves room for
#: lines that touch or cross over a short stretch of a very thin wall (a 20th of the
#: cavity), while an o-contour displaced by more than the wall thickness, as the
#: 11-18 px offsets on SCD0000501 (60-70 % inside), fails by a wide margin.
MIN_ENDO_IN_EPI = 0.95


# --------------------------------------------------------------------------- contours and masks


def read_contour(path: PathLike) -> np.ndarray:
    """Read a Sunnybrook contour file.

    Returns:
        float64 ``[N, 2]`` points ``(x = column, y = row)`` in pixels, N >= 3.

    Raises:
        FileNotFoundError: missing file.
        ValueError: a line that is not two numbers, non-finite values, fewer than 3 points
            (message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such contour file")
    points = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected 'x y', got {line!r}")
        try:
            x, y = float(fields[0]), float(fields[1])
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: expected two numbers 'x y', got {line!r}") from exc
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError(f"{path}:{number}: non-finite coordinate {line!r}")
        points.append((x, y))
    if len(points) < 3:
        raise ValueError(f"{path}: a contour needs at least 3 points, got {len(points)}")
    return np.asarray(points, dtype=np.float64)


def polygon_mask(polygon, shape: Sequence[int]) -> np.ndarray:
    """Fill a closed polygon into a boolean mask, evaluated at pixel centres (boundary included).

    :func:`skimage.draw.polygon2mask` does the fill: a pixel is in when its centre
    lies inside the polygon or on an edge, which is the Sunnybrook reference
    convention (see the module docstring).

    Args:
        polygon: ``[N, 2]`` vertices ``(x = column, y = row)`` in pixels; pixel ``(r, c)``
            has its centre at ``(x, y) = (c, r)``. The last vertex joins the first.
        shape: ``(H, W)`` of the mask.

    Returns:
        bool ``[H, W]``. A polygon partly outside the image is clipped.

    Raises:
        ValueError: not ``[N, 2]`` with N >= 3, or non-finite vertices.
    """
    pts = np.asarray(polygon, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
        raise ValueError(f"polygon must be [N >= 3, 2] (x, y) points, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("polygon has non-finite vertices")
    return polygon2mask(tuple(int(v) for v in shape), pts[:, ::-1])  # skimage takes (row, col) vertices


def find_contour_files(contour_dir: PathLike) -> Dict[int, Dict[str, Path]]:
    """Contour files under ``contour_dir`` (searched recursively), by image number.

    Returns:
        ``{image number: {"i": path, "o": path}}`` (kinds present only).

    Raises:
        FileNotFoundError: missing folder.
        ValueError: no contour file, or two files for one image and kind.
    """
    contour_dir = Path(contour_dir)
    if not contour_dir.is_dir():
        raise FileNotFoundError(f"{contour_dir}: no such contour folder")
    found: Dict[int, Dict[str, Path]] = {}
    for path in sorted(contour_dir.rglob("*.txt")):
        m = CONTOUR_FILE_PATTERN.match(path.name)
        if not m:
            logger.debug("%s: not a Sunnybrook contour file name, ignored", path)
            continue
        kind = _USED_KINDS.get(m.group("kind"))
        if kind is None:
            continue
        image = int(m.group("image"))
        slot = found.setdefault(image, {})
        if kind in slot:
            raise ValueError(f"{contour_dir}: two {m.group('kind')} files for image {image}: {slot[kind]} and {path}")
        slot[kind] = path
    if not found:
        raise ValueError(f"{contour_dir}: no IM-XXXX-NNNN-icontour/ocontour-*.txt contour files")
    return found


# --------------------------------------------------------------------------- image number -> (frame, slice)


def image_number_to_slice_phase(image_number: int, num_phases: int = 20) -> Tuple[int, int]:
    """Sunnybrook numbering: image ``N`` (1-based) -> 0-based ``(slice, phase)``, slices in acquisition order."""
    if image_number < 1:
        raise ValueError(f"Sunnybrook image numbers start at 1, got {image_number}")
    return (image_number - 1) // num_phases, (image_number - 1) % num_phases


def _read_headers(dicom_dir: Path) -> List[dict]:
    headers = []
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(
                str(path), stop_before_pixels=True,
                specific_tags=["InstanceNumber", "ImagePositionPatient", "TriggerTime", "SeriesInstanceUID"],
            )
        except Exception:  # the cine reader already warned about unreadable files
            continue
        if ds.get("InstanceNumber") in (None, "") or ds.get("ImagePositionPatient") is None:
            continue
        trigger = ds.get("TriggerTime")
        headers.append({
            "path": path,
            "instance": int(ds.InstanceNumber),
            "position": np.asarray([float(v) for v in ds.ImagePositionPatient]),
            "trigger": None if trigger in (None, "") else float(trigger),
        })
    return headers


def instance_number_map(dicom_dir: PathLike, study: CineStudy) -> Dict[int, Tuple[int, int, Path]]:
    """InstanceNumber -> ``(frame t, slice z, file)`` of ``study`` (read from ``dicom_dir``).

    The slice is the study slice at the file's position along the slice normal;
    the frame is the file's TriggerTime rank among the files of that slice
    (InstanceNumber when a slice lacks TriggerTime), as the cine reader orders them.
    Files of another position or an InstanceNumber used twice are skipped with
    a warning.
    """
    dicom_dir = Path(dicom_dir)
    normal = study.slice_normal
    slice_positions = study.slice_affines[:, :3, 3] @ normal
    per_slice: Dict[int, List[dict]] = {}
    for h in _read_headers(dicom_dir):
        distance = np.abs(slice_positions - h["position"] @ normal)
        z = int(np.argmin(distance))
        if distance[z] > _SAME_SLICE_MM:
            logger.warning("%s: position matches no slice of the study, ignored", h["path"])
            continue
        per_slice.setdefault(z, []).append(h)
    mapping: Dict[int, Tuple[int, int, Path]] = {}
    for z, files in per_slice.items():
        use_trigger = all(f["trigger"] is not None for f in files)
        files.sort(key=lambda f: ((f["trigger"], f["instance"]) if use_trigger else (f["instance"],)) + (str(f["path"]),))
        if len(files) != study.num_frames:
            logger.warning("%s: slice %d has %d files for %d frames", dicom_dir, z, len(files), study.num_frames)
        for t, f in enumerate(files[: study.num_frames]):
            if f["instance"] in mapping:
                logger.warning("%s: InstanceNumber %d used twice (%s), ignored", dicom_dir, f["instance"], f["path"])
                continue
            mapping[f["instance"]] = (t, z, f["path"])
    return mapping


def _check_pixels(path: Path, study: CineStudy, t: int, z: int) -> None:
    """The DICOM file's pixels must be the study's frame ``t`` slice ``z`` (guards the mapping)."""
    ds = pydicom.dcmread(str(path))
    pixels = ds.pixel_array.astype(np.float32) * np.float32(float(ds.get("RescaleSlope", 1) or 1))
    pixels = pixels + np.float32(float(ds.get("RescaleIntercept", 0) or 0))
    if pixels.shape != study.pixels.shape[2:] or not np.allclose(pixels, study.pixels[t, z]):
        raise ValueError(
            f"{path}: pixels differ from frame {t} slice {z} of the study it was mapped to; "
            "the image number -> (slice, phase) mapping is inconsistent"
        )


# --------------------------------------------------------------------------- labels


@dataclass
class SunnybrookLabels:
    """Labels built from the contours of one study.

    Attributes:
        labels: int16 ``[T, Z, H, W]``, canonical on labelled frames, -1 elsewhere.
        labelled_frames: frames with at least one i-contour.
        labelled_slices: ``{frame: [slices with an i-contour]}``.
        image_numbers: ``{image number: (frame, slice)}`` of every contour used.
        myocardium_slices: ``{frame: [slices labelled with myocardium]}`` (frames with one).
        myocardium_dropped: ``{frame: [slices]}`` whose o-contour failed the containment
            check (:data:`MIN_ENDO_IN_EPI`): LV cavity labelled, myocardium not.
        endo_in_epi: ``{(frame, slice): share of the i-contour's pixels inside the o-contour}``
            (0-1) for every slice with both contours.
    """

    labels: np.ndarray
    labelled_frames: List[int]
    labelled_slices: Dict[int, List[int]] = field(default_factory=dict)
    image_numbers: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    myocardium_slices: Dict[int, List[int]] = field(default_factory=dict)
    myocardium_dropped: Dict[int, List[int]] = field(default_factory=dict)
    endo_in_epi: Dict[Tuple[int, int], float] = field(default_factory=dict)

    def myocardium_incomplete(self, frame: int) -> List[int]:
        """Slices of ``frame`` with a traced LV cavity but no myocardium label.

        Empty when every traced slice of ``frame`` has its myocardium, the condition for an
        LV mass from ``frame``: a slice listed here (o-contour missing or dropped by the
        containment check) leaves its myocardium out of the sum. Frames without any
        o-contour (ES in this data set) list all their traced slices.
        """
        done = set(self.myocardium_slices.get(frame, []))
        return [z for z in self.labelled_slices.get(frame, []) if z not in done]


def sunnybrook_labels(study: CineStudy, contour_dir: PathLike, dicom_dir: Optional[PathLike] = None, *,
                      subject: Optional[str] = None) -> SunnybrookLabels:
    """Fill the contours of ``contour_dir`` into canonical labels on ``study``'s grid.

    An o-contour whose image's i-contour is not inside it (less than
    :data:`MIN_ENDO_IN_EPI` of its pixels) gives no myocardium: the slice keeps its
    LV cavity, a warning names it and ``myocardium_dropped`` lists it.

    Args:
        study: the cine read from ``dicom_dir`` (:func:`cmrssl.io.dicom.read_dicom_cine`).
        contour_dir: the subject's contour folder (``i-contours/``, ``o-contours/`` inside).
        dicom_dir: the DICOM folder for the header-based image number mapping;
            default ``study.source``.
        subject: the study key for the warnings (default: ``contour_dir``).

    Raises:
        ValueError: unreadable contour, an image number with no slice/phase in
            the study, pixels of a mapped file not matching the study.
    """
    contour_dir = Path(contour_dir)
    who = subject if subject is not None else str(contour_dir)
    dicom_dir = Path(dicom_dir if dicom_dir is not None else study.source)
    files = find_contour_files(contour_dir)
    mapping = instance_number_map(dicom_dir, study) if dicom_dir.is_dir() else {}
    num_frames, num_slices, height, width = study.pixels.shape
    labels = np.full(study.pixels.shape, UNLABELLED, dtype=np.int16)
    labelled_slices: Dict[int, List[int]] = {}
    image_numbers: Dict[int, Tuple[int, int]] = {}
    pending: List[Tuple[int, int, Dict[str, Path], int]] = []
    for image, kinds in sorted(files.items()):
        if image in mapping:
            t, z, path = mapping[image]
            _check_pixels(path, study, t, z)
        else:
            z, t = image_number_to_slice_phase(image, num_frames)
            logger.warning(
                "%s: no DICOM header with InstanceNumber %d; using the Sunnybrook numbering (slice %d, phase %d)",
                contour_dir, image, z, t,
            )
            if z >= num_slices:
                raise ValueError(
                    f"{contour_dir}: image {image} maps to slice {z} but the study has {num_slices} slices"
                )
        if "i" not in kinds:
            logger.warning("%s: o-contour of image %d without an i-contour, ignored", contour_dir, image)
            continue
        image_numbers[image] = (t, z)
        pending.append((t, z, kinds, image))
    labelled_frames = sorted({t for t, _, _, _ in pending})
    labels[labelled_frames] = 0
    myocardium: Dict[int, List[int]] = {}
    dropped: Dict[int, List[int]] = {}
    endo_in_epi: Dict[Tuple[int, int], float] = {}
    for t, z, kinds, image in pending:
        cavity = polygon_mask(read_contour(kinds["i"]), (height, width))
        if not cavity.any():
            raise ValueError(f"{kinds['i']}: the contour encloses no pixel centre of the {height}x{width} image")
        if "o" in kinds:
            epicardium = polygon_mask(read_contour(kinds["o"]), (height, width))
            inside = float((cavity & epicardium).sum()) / float(cavity.sum())
            endo_in_epi[(t, z)] = inside
            if inside >= MIN_ENDO_IN_EPI:
                labels[t, z][epicardium & ~cavity] = LV_MYOCARDIUM
                myocardium.setdefault(t, []).append(z)
            else:
                # "inside-epi minus inside-endo" of a displaced pair is no myocardium: a
                # wall labelled from it made the LV mass of SCD0000501 137 g instead of ~78 g.
                logger.warning(
                    "%s: image %d (frame %d, slice %d): only %.1f %% of the i-contour lies inside the "
                    "o-contour (>= %.0f %% expected); the contours do not match, myocardium not labelled "
                    "on this slice (LV cavity kept)", who, image, t, z, 100.0 * inside, 100.0 * MIN_ENDO_IN_EPI,
                )
                dropped.setdefault(t, []).append(z)
        labels[t, z][cavity] = LV_CAVITY
        labelled_slices.setdefault(t, []).append(z)
    return SunnybrookLabels(
        labels=labels,
        labelled_frames=labelled_frames,
        labelled_slices={t: sorted(zs) for t, zs in labelled_slices.items()},
        image_numbers=image_numbers,
        myocardium_slices={t: sorted(zs) for t, zs in myocardium.items()},
        myocardium_dropped={t: sorted(zs) for t, zs in dropped.items()},
        endo_in_epi=endo_in_epi,
    )


def read_sunnybrook_study(dicom_dir: PathLike, contour_dir: PathLike, *,
                          subject: Optional[str] = None) -> Tuple[CineStudy, SunnybrookLabels]:
    """Read a Sunnybrook cine with its contour labels.

    Args:
        dicom_dir, contour_dir: the subject's DICOM and contour folders.
        subject: the study key for the warnings (default: ``contour_dir``).

    Returns:
        ``(study, labels)``: the :class:`CineStudy` (``labels`` and
        ``labelled_frames`` filled) and the :class:`SunnybrookLabels` details. An LV
        mass from ``study`` is complete only when ``labels.myocardium_incomplete(ed_frame)``
        is empty (myocardium dropped or missing on a traced slice otherwise).
    """
    study = read_dicom_cine(dicom_dir)
    result = sunnybrook_labels(study, contour_dir, dicom_dir, subject=subject)
    study.labels = result.labels
    study.labelled_frames = list(result.labelled_frames)
    return study, result


# --------------------------------------------------------------------------- indexer


def _plain_name(name: str) -> bool:
    """One path component: no separator, not ``.`` / ``..``, no NUL."""
    return name not in (".", "..") and not any(c in name for c in "/\\\0")


def find_sunnybrook_subjects(root: PathLike) -> List[Tuple[str, Path, Path]]:
    """``(subject, dicom folder, contour folder)`` for each subject of a Sunnybrook root.

    Uses ``link.csv`` (``patient_id,original_id``) when present, else pairs the
    folders of ``dicoms/`` and ``contourfiles/`` by name.

    Raises:
        FileNotFoundError: ``root/dicoms`` or ``root/contourfiles`` missing.
        ValueError: no subject with both DICOM and contours; a ``link.csv`` id that is
            not a plain folder name (``../x``, ``a/b``: the patient id becomes an output
            folder name), naming the file and row.
    """
    root = Path(root)
    dicoms, contours = root / "dicoms", root / "contourfiles"
    for folder in (dicoms, contours):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing; expected a Sunnybrook root with dicoms/ and contourfiles/")
    pairs: List[Tuple[str, Path, Path]] = []
    link = root / "link.csv"
    if link.is_file():
        with link.open(newline="") as fh:
            for number, row in enumerate(csv.DictReader(fh), start=2):
                patient, original = (row.get("patient_id") or "").strip(), (row.get("original_id") or "").strip()
                if not patient or not original:
                    raise ValueError(f"{link}: row {row} lacks patient_id or original_id")
                for column, value in (("patient_id", patient), ("original_id", original)):
                    if not _plain_name(value):
                        # index_sunnybrook writes out_dir/<patient_id>: "../../x" would write outside it
                        raise ValueError(f"{link}:{number}: {column} {value!r} is not a plain folder name "
                                         "(no '/', '\\', '.' or '..'); it names a folder under the root "
                                         "and the subject's output folder")
                d, c = dicoms / patient, contours / original
                if d.is_dir() and c.is_dir():
                    pairs.append((patient, d, c))
                else:
                    logger.warning("%s: %s or %s missing, subject %s skipped", link, d, c, patient)
    else:
        for d in sorted(p for p in dicoms.iterdir() if p.is_dir()):
            c = contours / d.name
            if c.is_dir():
                pairs.append((d.name, d, c))
    if not pairs:
        raise ValueError(f"{root}: no subject with both a DICOM folder and a contour folder")
    return pairs


def _frame_nifti(volume_zhw: np.ndarray, study: CineStudy) -> nib.Nifti1Image:
    data = np.ascontiguousarray(swap_layout(volume_zhw))  # [Z,H,W] -> [x=col, y=row, z]
    affine = LPS_TO_RAS @ study.stack_affine
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def index_sunnybrook(
    root: PathLike,
    out_dir: PathLike,
    *,
    subjects: Optional[Sequence[str]] = None,
    overwrite: bool = False,
) -> List[dict]:
    """Convert the labelled frames of every Sunnybrook subject to NIfTI and list them.

    For each subject ``out_dir/<subject>/`` receives ``frame_XX.nii.gz`` (image)
    and ``frame_XX_gt.nii.gz`` (canonical labels) for each frame carrying
    contours (``XX`` 0-based). The subject folder appears whole or not at all.

    Args:
        root: Sunnybrook root (``dicoms/``, ``contourfiles/``, ``link.csv``).
        out_dir: output folder for the converted frames.
        subjects: restrict to these patient ids.
        overwrite: replace existing subject folders.

    Returns:
        Datalist records (one per subject and labelled frame): ``image``, ``label``
        (absolute paths), ``subject``, ``frame`` ("ED"/"ES"/index), ``frame_index``,
        ``phase`` ("ED"/"ES"/"other"), ``spacing`` ``[dz, dy, dx]``, ``cine`` (the
        DICOM folder, read by :func:`cmrssl.io.dicom.read_dicom_cine`, whose frame
        ``frame_index`` this is), ``labelled_slices``, ``myocardium_dropped_slices`` (slices
        of this frame whose o-contour failed the containment check: LV cavity labelled,
        myocardium not; see the module docstring). ED/ES are the labelled frames of
        largest/smallest contoured LV cavity.

    Raises:
        FileExistsError: a subject folder exists and not ``overwrite``.
        ValueError: see :func:`find_sunnybrook_subjects` and :func:`sunnybrook_labels`.
    """
    out_dir = Path(out_dir).resolve()
    pairs = find_sunnybrook_subjects(root)
    if subjects is not None:
        wanted = {str(s) for s in subjects}
        missing = wanted - {p[0] for p in pairs}
        if missing:
            raise ValueError(f"{root}: subjects {sorted(missing)} not found")
        pairs = [p for p in pairs if p[0] in wanted]
    for subject, _, _ in pairs:  # refuse before converting anything
        check_can_write(out_dir / subject, overwrite)
    records: List[dict] = []
    for subject, dicom_dir, contour_dir in pairs:
        study, details = read_sunnybrook_study(dicom_dir, contour_dir, subject=subject)
        study.source = subject  # the study key the user gave, nothing from the headers
        phases = dict.fromkeys(details.labelled_frames, "other")
        if len(details.labelled_frames) >= 2:
            function = cardiac_function_from_study(study)
            phases[function.ed_frame] = "ED"
            phases[function.es_frame] = "ES"
        subject_dir = out_dir / subject
        with atomic_folder(subject_dir, overwrite=overwrite) as tmp:
            for t in details.labelled_frames:
                name = frame_file_name(t, study.num_frames)
                gt_name = frame_file_name(t, study.num_frames, labels=True)
                nib.save(_frame_nifti(study.pixels[t].astype(np.float32), study), str(tmp / name))
                nib.save(_frame_nifti(study.labels[t].astype(np.uint8), study), str(tmp / gt_name))
        for t in details.labelled_frames:
            phase = phases[t]
            records.append({
                "image": str(subject_dir / frame_file_name(t, study.num_frames)),
                "label": str(subject_dir / frame_file_name(t, study.num_frames, labels=True)),
                "subject": subject,
                "frame": phase if phase != "other" else str(t),
                "frame_index": int(t),
                "phase": phase,
                "spacing_zyx_mm": [float(s) for s in study.spacing_zyx_mm],
                "cine": str(Path(dicom_dir).resolve()),
                "labelled_slices": [int(z) for z in details.labelled_slices.get(t, [])],
                "myocardium_dropped_slices": [int(z) for z in details.myocardium_dropped.get(t, [])],
            })
        logger.info("%s: %d labelled frames written to %s", subject, len(details.labelled_frames), subject_dir)
    return records
