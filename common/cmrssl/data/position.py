"""Anatomical-position pretext labels (Bai et al., MICCAI 2019), from image geometry only.

Bai W. et al. "Self-supervised learning for cardiac MR image segmentation by
anatomical position prediction", MICCAI 2019: on every short-axis (SA) slice
the 2-chamber (2Ch) and 4-chamber (4Ch) long-axis planes cut two lines that
cross in the LV; nine boxes along those lines become a 10-class segmentation
target, and the network that learns to predict them learns where the heart is.
The same nine boxes are drawn on the 4Ch image, along the LV long axis
(2Ch plane ∩ 4Ch plane) and the mid short-axis line (plane of the middle SA
slice ∩ 4Ch plane). Nothing but the headers (DICOM ImageOrientationPatient /
ImagePositionPatient / PixelSpacing, or NIfTI affines) is needed.

Boxes. Squares of :data:`BOX_SIZE_MM` oriented along their line (one side
parallel to it), centred on the crossing and at ``±1`` and ``±2`` times
:data:`BOX_STEP_MM` along each line (the paper's 11 px and 30 px at its
1.82 mm pixels). A pixel belongs to a box when its centre lies inside the
square; where boxes overlap (lines closer than ~25 degrees, refused below
:data:`MIN_PLANE_ANGLE_DEG` anyway) the higher class wins. Labels:
0 background, 1-9 the boxes (:data:`NUM_POSITION_CLASSES` = 10).

Classes are fixed by patient directions (world LPS), never by pixel order, so a
rotated or flipped acquisition gives each world point the same class:

========  ==========================================================================
class     short-axis slice                        4Ch image
========  ==========================================================================
1         crossing of the 2Ch and 4Ch lines       crossing of the long axis and mid-SA line
2, 3      4Ch line, 1 and 2 steps lateral         mid-SA line, 1 and 2 steps lateral
4, 5      4Ch line, septal (RV) side              mid-SA line, septal (RV) side
6, 7      2Ch line, anterior                      long axis, towards the base
8, 9      2Ch line, inferior (posterior)          long axis, towards the apex
========  ==========================================================================

Each line direction is oriented by the sign of its dot product with a reference
direction. The references are an orthonormal heart frame in LPS built on
:data:`cmrssl.io.geometry.APEX_DIRECTION_LPS` (apex left, anterior, inferior):
:data:`LATERAL_REFERENCE_LPS` (patient left-posterior, where the LV lateral wall
lies from the septum), :data:`ANTERIOR_REFERENCE_LPS` (apex x lateral:
left-anterior-superior, the LV anterior wall seen across the short axis) and
:data:`BASE_REFERENCE_LPS` (minus the apex direction). Measured on the phantom
(51 random poses, seeds 0-50, :func:`cmrssl.data.phantom.generate_subject`),
the oriented line directions have cosines 0.94-1.00 (4Ch line / mid-SA line
with the lateral reference), 0.95-1.00 (2Ch line with the anterior reference)
and 0.96-1.00 (long axis with the base reference); the simpler axis references
are much weaker (patient left alone 0.48-0.76, anterior alone 0.25-0.67). Real
hearts deviate from the heuristic axis by tens of degrees (Sunnybrook
SCD0000101: 16), well inside the margin. A cosine below
:data:`MIN_ORIENTATION_COS` (0.3, 72.5 degrees off) is refused as "orientation
ambiguous" (:class:`PositionSkip`), never guessed.

Refusals (:class:`PositionSkip`, a ``ValueError``): a missing view, a long-axis
view with several slices, views that cannot be placed in one world (see below),
planes within :data:`MIN_PLANE_ANGLE_DEG` of parallel (2Ch/4Ch to each other or to
the SA slices), a long axis lying (nearly) in the SA plane, a crossing outside the
image on the mid-ventricular SA slice (or on the 4Ch image), an ambiguous
orientation.

One world (:func:`check_one_world`, run first by every function here that derives
boxes). The three views' geometry is only comparable in one patient coordinate
system. DICOM says which: series share one world when they share a
FrameOfReferenceUID. A long-axis series whose UID differs from the short-axis
series' (or the 2Ch from the 4Ch) is refused, naming both folders: its
coordinates are in another world, and boxes drawn from them are wrong (a phantom
study with another study's long-axis series: 1 % of the boxed pixels right,
exit 0 before). A NIfTI file without orientation (``qform_code`` and
``sform_code`` both 0) is refused, naming the file: its affine is nibabel's
placeholder built from the voxel sizes, not a place in the scanner (one phantom
4Ch image so damaged: 6 % right before). Not refused, but logged as a warning:
a DICOM series whose files carry no FrameOfReferenceUID, or several (an anonymiser
that replaced the UID per file, as in the Sunnybrook data: 240 UIDs for 240
files): the frames of reference cannot be compared, and the views are assumed to
share one world, as the geometry checks above still guard. FrameOfReferenceUID
is mandatory (type 1) in MR images, so refusing would only refuse anonymised
data whose world coordinates are intact. NIfTI has no frame of reference: two
NIfTI files with orientation, or a NIfTI and a DICOM view, are assumed to share
the scanner world, which their headers cannot prove.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import nibabel as nib
import numpy as np

from cmrssl.io.cine import CineStudy
from cmrssl.io.geometry import (
    APEX_DIRECTION_LPS,
    Line,
    Plane,
    intersect_planes,
    plane_from_affine,
    project_line_to_pixels,
    world_to_pixel,
)
from cmrssl.io.nifti import write_cine_nifti

logger = logging.getLogger(__name__)

__all__ = [
    "BOX_SIZE_MM",
    "BOX_STEP_MM",
    "NUM_POSITION_CLASSES",
    "MIN_ORIENTATION_COS",
    "MIN_PLANE_ANGLE_DEG",
    "LATERAL_REFERENCE_LPS",
    "ANTERIOR_REFERENCE_LPS",
    "BASE_REFERENCE_LPS",
    "PositionSkip",
    "PositionBoxes",
    "check_one_world",
    "position_boxes",
    "sax_position_boxes",
    "lax_position_boxes",
    "sax_position_labels",
    "lax_position_labels",
    "write_position_labels",
    "box_parameters",
]

#: Side of each square box (mm): the paper's 11 px at 1.82 mm.
BOX_SIZE_MM = 20.0
#: Distance between consecutive box centres along a line (mm): the paper's 30 px at 1.82 mm.
BOX_STEP_MM = 54.6
#: Background plus nine boxes.
NUM_POSITION_CLASSES = 10
#: Smallest accepted |cosine| between a line and its reference direction (72.5 degrees).
MIN_ORIENTATION_COS = 0.3
#: Smallest accepted angle (degrees) between two of the three planes, and between the LV
#: long axis (2Ch ∩ 4Ch) and the SA plane. Real views are 60-90 degrees apart.
MIN_PLANE_ANGLE_DEG = 20.0


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


#: Reference for the 4Ch line on SA slices and the mid-SA line on the 4Ch image: patient
#: left-posterior, from the septum towards the LV lateral wall. Orthogonal to the apex direction.
LATERAL_REFERENCE_LPS = _unit([1.0, 1.0, 0.0])
#: Reference for the 2Ch line on SA slices: apex x lateral = left-anterior-superior, from the
#: inferior towards the anterior LV wall across the short axis.
ANTERIOR_REFERENCE_LPS = np.cross(APEX_DIRECTION_LPS, LATERAL_REFERENCE_LPS)
#: Reference for the long axis on the 4Ch image: from the apex towards the base.
BASE_REFERENCE_LPS = -np.asarray(APEX_DIRECTION_LPS, dtype=np.float64)

# class of each (line, signed step): line 0 = first line (classes 2-5), line 1 = second (6-9)
_STEPS = ((1, 0, 0.0), (2, 0, 1.0), (3, 0, 2.0), (4, 0, -1.0), (5, 0, -2.0),
          (6, 1, 1.0), (7, 1, 2.0), (8, 1, -1.0), (9, 1, -2.0))


class PositionSkip(ValueError):
    """A study whose position labels cannot be drawn without guessing; the message says why.

    ``written`` is the message as files written may hold it (``summary.json``, the
    tool's summary line): the same, less internal identifiers (FrameOfReferenceUIDs),
    which only the error message itself names.
    """

    def __init__(self, message: str, written: Optional[str] = None) -> None:
        super().__init__(message, message if written is None else written)

    def __str__(self) -> str:
        return str(self.args[0])

    @property
    def written(self) -> str:
        return str(self.args[1])


@dataclass(frozen=True)
class PositionBoxes:
    """The nine boxes on one image plane.

    Attributes:
        slice_affine: 4x4 pixel ``(col, row, 0, 1)`` -> LPS mm of the image.
        crossing: ``(3,)`` LPS mm, centre of box 1.
        directions: ``[2, 3]`` unit directions of the two lines, oriented: row 0 towards
            classes 2-3, row 1 towards classes 6-7.
        centres: ``[9, 3]`` LPS mm, the centre of class ``i + 1`` in row ``i``.
    """

    slice_affine: np.ndarray
    crossing: np.ndarray
    directions: np.ndarray
    centres: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return plane_from_affine(self.slice_affine).normal

    def _box_axes(self) -> np.ndarray:
        """``[9, 2, 3]``: for each box, the unit axes along and across its line."""
        axes = []
        for _cls, line, _ in _STEPS:
            d = self.directions[line]
            axes.append([d, _unit(np.cross(self.normal, d))])
        return np.asarray(axes)

    def label_map(self, shape: Tuple[int, int]) -> np.ndarray:
        """``uint8 [H, W]``: the class of every pixel whose centre lies inside a box, else 0."""
        height, width = int(shape[0]), int(shape[1])
        rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                                 indexing="ij")
        a = np.asarray(self.slice_affine, dtype=np.float64)
        points = a[:3, 3] + cols[..., None] * a[:3, 0] + rows[..., None] * a[:3, 1]  # [H, W, 3]
        labels = np.zeros((height, width), dtype=np.uint8)
        half = BOX_SIZE_MM / 2.0
        for (cls, _, _), centre, (along, across) in zip(_STEPS, self.centres, self._box_axes()):
            rel = points - centre
            inside = (np.abs(rel @ along) <= half) & (np.abs(rel @ across) <= half)
            labels[inside] = cls
        return labels

    def centres_px(self) -> np.ndarray:
        """``[9, 2]`` box centres as ``(col, row)`` pixel coordinates."""
        return world_to_pixel(self.slice_affine, self.centres)[:, :2]

    def corners_px(self) -> np.ndarray:
        """``[9, 4, 2]`` box corners as ``(col, row)``, in drawing order."""
        half = BOX_SIZE_MM / 2.0
        signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64) * half
        corners = self.centres[:, None, :] + np.einsum("ks,bsd->bkd", signs, self._box_axes())
        return world_to_pixel(self.slice_affine, corners)[..., :2]

    def lines_px(self, shape: Tuple[int, int]) -> List[Optional[np.ndarray]]:
        """The two lines clipped to the image, ``[[col0, row0], [col1, row1]]`` each (None: outside)."""
        return [project_line_to_pixels(Line(point=self.crossing, direction=d), self.slice_affine, shape)
                for d in self.directions]


def box_parameters() -> dict:
    """The box geometry and references, as written to the tool's ``summary.json``."""
    return {
        "box_size_mm": BOX_SIZE_MM,
        "box_step_mm": BOX_STEP_MM,
        "box_centre_offsets_mm": [0.0, BOX_STEP_MM, 2 * BOX_STEP_MM, -BOX_STEP_MM, -2 * BOX_STEP_MM],
        "num_classes": NUM_POSITION_CLASSES,
        "min_orientation_cos": MIN_ORIENTATION_COS,
        "min_plane_angle_deg": MIN_PLANE_ANGLE_DEG,
        "lateral_reference_lps": [float(v) for v in LATERAL_REFERENCE_LPS],
        "anterior_reference_lps": [float(v) for v in ANTERIOR_REFERENCE_LPS],
        "base_reference_lps": [float(v) for v in BASE_REFERENCE_LPS],
        "classes": {
            "1": "crossing",
            "2-3": "SA: 4Ch line lateral; 4Ch: mid-SA line lateral",
            "4-5": "SA: 4Ch line septal; 4Ch: mid-SA line septal",
            "6-7": "SA: 2Ch line anterior; 4Ch: long axis towards the base",
            "8-9": "SA: 2Ch line inferior; 4Ch: long axis towards the apex",
        },
    }


# --------------------------------------------------------------------------- one world


def _nifti_files(source: str) -> List[Path]:
    """The NIfTI image files a study was read from: the file, or a folder's frames (labels left out)."""
    if not source:
        return []
    path = Path(source)
    name = path.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return [path]
    if path.is_dir():
        return sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                      and (f.name.lower().endswith(".nii") or f.name.lower().endswith(".nii.gz"))
                      and not f.name.lower().split(".nii")[0].endswith("_gt"))
    return []


def _check_nifti_orientation(study: CineStudy) -> None:
    for path in _nifti_files(study.source):
        try:
            header = nib.load(str(path)).header
            codes = int(header["qform_code"]), int(header["sform_code"])
        except Exception as err:  # the reader read it a moment ago; say so rather than guess
            raise PositionSkip(f"{path}: its header cannot be read to check its orientation ({err})") from err
        if codes == (0, 0):
            raise PositionSkip(
                f"{path}: no orientation in the header (qform_code and sform_code are 0): its world position is "
                "unknown, position labels cannot be derived")


def _frame_of_reference(study: CineStudy, what: str, notes: List[str]) -> Optional[str]:
    """The study's one FrameOfReferenceUID; None (and a note) when DICOM gives none or several; None for NIfTI."""
    uids = tuple(study.frame_of_reference_uids)
    if not uids:  # not DICOM: NIfTI has no frame of reference
        return None
    known = [u for u in uids if u]
    if len(known) == 1 and len(uids) == 1:
        return known[0]
    if not known:
        why = "its files carry no FrameOfReferenceUID"
    elif "" in uids:
        why = "some of its files carry no FrameOfReferenceUID"
    else:
        why = f"its files carry {len(known)} different FrameOfReferenceUIDs (replaced per file by an anonymiser?)"
    notes.append(f"{study.source}: {why}: whether the {what} shares one frame of reference with the other views "
                 "cannot be checked; they are assumed to share one world")
    return None


def check_one_world(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]) -> List[str]:
    """Refuse views that cannot be placed in one world; returns notes on what could not be checked.

    The rule (module docstring, "One world"): every NIfTI view needs an orientation
    (``qform_code`` or ``sform_code`` > 0); DICOM views with one FrameOfReferenceUID
    each must share it. A DICOM series with none or several cannot be compared:
    a note says so, and the views are assumed to share one world.

    Raises:
        PositionSkip: a NIfTI file without orientation, or two DICOM series from two
            frames of reference (both folders named; ``written`` leaves the UIDs out).
    """
    views = [(sax, "short-axis series"), (lax_2ch, "2Ch long-axis series"), (lax_4ch, "4Ch long-axis series")]
    views = [(study, what) for study, what in views if study is not None]
    for study, _ in views:
        if not study.frame_of_reference_uids:  # not read from DICOM
            _check_nifti_orientation(study)
    notes: List[str] = []
    known = [(study, what, uid) for study, what in views
             if (uid := _frame_of_reference(study, what, notes)) is not None]
    if known:
        first, first_what, first_uid = known[0]  # the short-axis series when it has one
        others = [(study, uid) for study, _, uid in known[1:] if uid != first_uid]
        if others:
            names = " and ".join(str(study.source) for study, _ in others)
            uids = sorted({uid for _, uid in others})
            one = len(others) == 1
            tail = (f"differ{'s' if one else ''} from the {first_what}' {{}}({first.source}): the "
                    f"{'two' if one else 'views'} cannot be placed in one world; position labels need one frame "
                    "of reference")
            raise PositionSkip(
                f"{names}: FrameOfReferenceUID{'' if len(uids) == 1 else 's'} {', '.join(uids)} "
                + tail.format(f"{first_uid} "),
                written=f"{names}: {'its' if one else 'their'} FrameOfReferenceUID " + tail.format(""))
    return notes


# --------------------------------------------------------------------------- geometry


def _angle_deg(n_a: np.ndarray, n_b: np.ndarray) -> float:
    """Angle (0-90 degrees) between two planes given their unit normals."""
    return float(np.degrees(np.arcsin(min(1.0, float(np.linalg.norm(np.cross(n_a, n_b)))))))


def _long_axis_plane(study: Optional[CineStudy], view: str) -> Plane:
    if study is None:
        raise PositionSkip(f"no {view} long-axis view")
    if study.num_slices != 1:
        raise PositionSkip(f"the {view} long-axis view holds {study.num_slices} slices; expected one")
    return plane_from_affine(study.slice_affines[0])


def _check_not_parallel(planes: dict) -> None:
    names = list(planes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            angle = _angle_deg(planes[a].normal, planes[b].normal)
            if angle < MIN_PLANE_ANGLE_DEG:
                raise PositionSkip(
                    f"the {a} and {b} planes are parallel (angle {angle:.1f} degrees < {MIN_PLANE_ANGLE_DEG:g})")


def _crossing(a: Plane, b: Plane, c: Plane) -> np.ndarray:
    """The point where three planes meet."""
    m = np.stack([a.normal, b.normal, c.normal])
    rhs = np.array([a.normal @ a.point, b.normal @ b.point, c.normal @ c.point])
    return np.linalg.solve(m, rhs)


def _oriented(a: Plane, b: Plane, reference: np.ndarray, what: str) -> np.ndarray:
    """Unit direction of the line ``a ∩ b``, its sign chosen by ``reference``."""
    line = intersect_planes(a, b)
    if line is None:  # _check_not_parallel ran first; kept for direct callers
        raise PositionSkip(f"{what}: the planes are parallel")
    cosine = float(line.direction @ reference)
    if abs(cosine) < MIN_ORIENTATION_COS:
        raise PositionSkip(f"orientation ambiguous: the {what} makes |cos| {abs(cosine):.2f} < "
                           f"{MIN_ORIENTATION_COS:g} with its reference direction {np.round(reference, 3).tolist()}")
    return line.direction if cosine > 0 else -line.direction


def _boxes(slice_affine: np.ndarray, crossing: np.ndarray, first: np.ndarray, second: np.ndarray) -> PositionBoxes:
    directions = np.stack([first, second])
    centres = np.stack([crossing + step * BOX_STEP_MM * directions[line] for _, line, step in _STEPS])
    return PositionBoxes(slice_affine=np.asarray(slice_affine, dtype=np.float64), crossing=crossing,
                         directions=directions, centres=centres)


def _inside(slice_affine: np.ndarray, point: np.ndarray, shape: Tuple[int, int]) -> bool:
    col, row = world_to_pixel(slice_affine, point)[:2]
    return bool(-0.5 <= col <= shape[1] - 0.5 and -0.5 <= row <= shape[0] - 0.5)


@dataclass(frozen=True)
class _Planes:
    p2: Plane
    p4: Plane
    mid: int
    p_mid: Plane
    notes: Tuple[str, ...]


def _planes(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]) -> _Planes:
    """The view planes, once the views are known to be placeable in one world (:func:`check_one_world`)."""
    if sax is None:
        raise PositionSkip("no short-axis stack")
    p2 = _long_axis_plane(lax_2ch, "2Ch")
    p4 = _long_axis_plane(lax_4ch, "4Ch")
    notes = tuple(check_one_world(sax, lax_2ch, lax_4ch))
    mid = sax.num_slices // 2
    p_mid = plane_from_affine(sax.slice_affines[mid])
    _check_not_parallel({"2Ch": p2, "4Ch": p4, "short-axis": p_mid})
    long_axis = intersect_planes(p2, p4)
    tilt = 90.0 - _angle_deg(p_mid.normal, long_axis.direction)  # angle between the axis and the SA plane
    if tilt < MIN_PLANE_ANGLE_DEG:
        raise PositionSkip(f"the LV long axis (2Ch ∩ 4Ch) lies within {tilt:.1f} degrees of the short-axis plane")
    return _Planes(p2=p2, p4=p4, mid=mid, p_mid=p_mid, notes=notes)


def _log_notes(planes: _Planes) -> None:
    for note in planes.notes:
        logger.warning(note)


def _sax_boxes(sax: CineStudy, planes: _Planes) -> List[PositionBoxes]:
    p2, p4, mid = planes.p2, planes.p4, planes.mid
    shape = sax.pixels.shape[2:]
    boxes = []
    for z in range(sax.num_slices):
        s = plane_from_affine(sax.slice_affines[z])
        if z != mid:
            _check_not_parallel({"2Ch": p2, "4Ch": p4, f"short-axis slice {z}": s})
        crossing = _crossing(s, p2, p4)
        if z == mid and not _inside(sax.slice_affines[z], crossing, shape):
            raise PositionSkip(f"the long-axis planes miss the stack: their crossing lies outside the image on "
                               f"the mid-ventricular slice {z}")
        lateral = _oriented(s, p4, LATERAL_REFERENCE_LPS, f"4Ch line on short-axis slice {z}")
        anterior = _oriented(s, p2, ANTERIOR_REFERENCE_LPS, f"2Ch line on short-axis slice {z}")
        boxes.append(_boxes(sax.slice_affines[z], crossing, lateral, anterior))
    return boxes


def _lax_boxes(lax_4ch: CineStudy, planes: _Planes) -> PositionBoxes:
    p2, p4, p_mid = planes.p2, planes.p4, planes.p_mid
    crossing = _crossing(p_mid, p2, p4)
    affine = lax_4ch.slice_affines[0]
    if not _inside(affine, crossing, lax_4ch.pixels.shape[2:]):
        raise PositionSkip("the crossing of the long axis and the mid short-axis slice lies outside the 4Ch image")
    lateral = _oriented(p_mid, p4, LATERAL_REFERENCE_LPS, "mid short-axis line on the 4Ch image")
    base = _oriented(p2, p4, BASE_REFERENCE_LPS, "LV long axis on the 4Ch image")
    return _boxes(affine, crossing, lateral, base)


def position_boxes(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]
                   ) -> Tuple[List[PositionBoxes], PositionBoxes, List[str]]:
    """The boxes of every SA slice and of the 4Ch image, and the notes of :func:`check_one_world`.

    The views are checked once (each note is logged once, as a warning); the notes
    name what could not be checked, e.g. a DICOM series without FrameOfReferenceUID.

    Raises:
        PositionSkip: see the module docstring.
    """
    planes = _planes(sax, lax_2ch, lax_4ch)
    sax_boxes, lax_boxes = _sax_boxes(sax, planes), _lax_boxes(lax_4ch, planes)
    _log_notes(planes)
    return sax_boxes, lax_boxes, list(planes.notes)


def sax_position_boxes(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]
                       ) -> List[PositionBoxes]:
    """The nine boxes on every SA slice (base to apex, as ``sax``), from the three views' geometry.

    Args:
        sax: short-axis cine (only ``slice_affines`` and the image size are used).
        lax_2ch, lax_4ch: single-slice long-axis cines in the same patient coordinates (None: absent).

    Raises:
        PositionSkip: see the module docstring.
    """
    planes = _planes(sax, lax_2ch, lax_4ch)
    boxes = _sax_boxes(sax, planes)
    _log_notes(planes)
    return boxes


def lax_position_boxes(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]) -> PositionBoxes:
    """The nine boxes on the 4Ch image: along the mid-SA line (2-5) and the LV long axis (6-9).

    Raises:
        PositionSkip: see the module docstring; also a crossing outside the 4Ch image.
    """
    planes = _planes(sax, lax_2ch, lax_4ch)
    boxes = _lax_boxes(lax_4ch, planes)
    _log_notes(planes)
    return boxes


def sax_position_labels(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]) -> np.ndarray:
    """``uint8 [Z, H, W]`` box map of the SA stack (0 background, 1-9 boxes).

    Raises:
        PositionSkip: see the module docstring.
    """
    shape = sax.pixels.shape[2:]
    return np.stack([b.label_map(shape) for b in sax_position_boxes(sax, lax_2ch, lax_4ch)])


def lax_position_labels(sax: CineStudy, lax_2ch: Optional[CineStudy], lax_4ch: Optional[CineStudy]) -> np.ndarray:
    """``uint8 [1, H, W]`` box map of the 4Ch image.

    Raises:
        PositionSkip: see the module docstring.
    """
    return lax_position_boxes(sax, lax_2ch, lax_4ch).label_map(lax_4ch.pixels.shape[2:])[None]


def write_position_labels(reference: CineStudy, labels: np.ndarray, path: Union[str, Path], *,
                          overwrite: bool = False) -> Path:
    """Write a box map ``[Z, H, W]`` on ``reference``'s grid as a one-frame NIfTI ``[x, y, z, 1]`` (uint8).

    The affine is the one :func:`cmrssl.io.reader.study_ras_affine` gives ``reference``, so
    :class:`cmrssl.transforms.io.LoadCineFramed` loads image and label with the same shape
    and affine, whether ``reference`` came from NIfTI or DICOM.
    """
    labels = np.asarray(labels)
    if labels.shape != reference.pixels.shape[1:]:
        raise ValueError(f"position labels {labels.shape} differ from the image grid {reference.pixels.shape[1:]}")
    study = CineStudy(pixels=labels[None].astype(np.float32), slice_affines=reference.slice_affines,
                      slice_spacing_mm=reference.slice_spacing_mm, labels=labels[None].astype(np.int16),
                      source=reference.source, view=reference.view)
    return write_cine_nifti(study, path, what="labels", overwrite=overwrite)
