"""Synthetic beating-heart cine cohort with known (analytic) cardiac function.

The phantom is the project's embedded default data set: every study is a
short-axis (SAX) cine stack plus 2-chamber and 4-chamber long-axis (LAX)
cines, all sampled from *one* continuous 3D model of the heart in world
(DICOM patient LPS, millimetre) coordinates, with canonical labels on every
frame and a JSON of the analytic function numbers.

Model
-----
Heart frame. Each subject gets an LV long axis ``u`` (base -> apex) in a random
pose around the usual orientation (apex left, anterior and inferior: about
(0.6, -0.45, -0.65) in LPS, perturbed by up to 12 degrees), a unit vector
``e1`` perpendicular to it pointing to the RV (patient right-anterior, rotated
about ``u`` by up to 15 degrees) and ``e2 = u x e1``. Heart coordinates
``(x, y, s)`` are along ``(e1, e2, u)`` from the LV base centre at end-diastole
``O`` (random position in the chest).

LV. Endocardium and epicardium are confocal-axis prolate half-ellipsoids
(radial semi-axis ``a``, long semi-axis ``c``), centred on the mitral plane and
cut by it. The mitral plane passes through their common centre but is tilted by
8-16 degrees about ``e2`` (``s >= s_c + tan(theta) x``), as the real annulus is
oblique to a short-axis stack. A plane through the centre halves an ellipsoid
exactly (central symmetry), so the cavity volume stays ``2/3 pi a^2 c`` and the
myocardial volume ``2/3 pi (a_epi^2 c_epi - a^2 c)`` in closed form.

Cycle. A normalised filling curve ``f(phase)`` (1 at ED, 0 at ES) has fast
early ejection (cosine in ``(phase/phase_es)^0.75``), ES at 30-40 % of the RR
interval, fast early filling to 65-80 % of the stroke volume (E wave),
slow diastasis and an atrial kick (A wave) back to ED. The LV volume is
``ESV + (EDV - ESV) f``; the endocardium follows ``a ~ q^0.4``, ``c ~ q^0.2``
(``q = V/EDV``: mostly radial, some longitudinal shortening, ``a^2 c ~ q``
exactly). The myocardial volume is held constant: the epicardium is
``a_epi = a + w``, ``c_epi = c + 0.7 w`` (thinner apex) with the wall
thickness ``w(t)`` solved from the mass, so the wall thickens by about 40-60 %
in systole. The epicardial apex is fixed in space and the base descends
(longitudinal shortening, ~10 mm), as in real hearts. The acquisition starts at
a random frame of the cycle: ED is frame ``ed_frame`` (0 to T/3), not always 0.

RV. A half-ellipsoid (semi-axes ``b1`` towards the RV, ``b2`` wrapping
around the septum, ``c_rv`` 70-85 % of the LV length) centred on the tilted
valve plane, whose septal side dips into the LV: minus the LV epicardium it is
the RV crescent. A 3 mm free wall (myocardial signal, label 0) surrounds it. Its
semi-axes shrink in systole with the same filling curve (RV EF ~ 40-60 %).
Atria are blood ellipsoids on the basal side of the valve plane (label 0),
filling while the ventricles empty. Two papillary muscles (cylinders of
myocardial signal on the lateral side of the mid and apical cavity) are labelled
as cavity, as in ACDC and Sunnybrook contours, so they change no volume.

Contrast (bSSFP-like). Blood bright (1.0), myocardium dark (~0.28), body an
elliptic cylinder of soft tissue (~0.45) with a bright subcutaneous fat rim,
dark lungs, air 0; +-8 % per subject. A smooth multiplicative coil field
(a sum of four Gaussian coil sensitivities on the chest wall, in world
coordinates so SAX and LAX agree) and Rician noise (magnitude of a complex
Gaussian-corrupted signal, blood SNR 18-35), in whole numbers (blood ~400).

Images. A pixel of a slice of thickness ``th`` (<= 8 mm, <= the spacing) averages
the tissue signal over ``K = 5`` sub-planes across the slab (through-plane
partial volume), then a Gaussian point-spread function (sigma 0.5 px, finite
in-plane resolution) and the coil field apply before the noise. Long-axis
images use the same sampling with an 8 mm slab.

Labels and volumes. A short-axis label must make ``sum(voxels) x dx dy dz``
equal the continuous volume. Point-sampling the slice's centre plane is
Cavalieri's estimator, which is unbiased but, with 8-10 mm slices, off by up to
5 % for a small end-systolic cavity whose basal cross-section appears within
one slice (measured). Instead each slice owns its slab ``[s_z - dz/2, s_z + dz/2]``
(the slabs tile the stack): the stack is perpendicular to the long axis, so a
pixel's column through the slab is a segment along ``s`` whose intersections
with the endocardial, epicardial and RV half-ellipsoids (cut by the valve
plane) are intervals in closed form. That gives every pixel its volume fraction
of cavity, myocardium (epi - endo) and RV (RV - epi). Per slice, the cavity
label goes to the ``round(sum of fractions)`` pixels with the largest cavity
fraction, then the myocardium to the pixels with the largest myocardial
fraction among the rest, then the RV: each labelled area equals the slab's
partial-volume area to a pixel, and because fraction maps vary smoothly the
labelled set is a level set of the fraction (a clean contour, near the 50 %
partial-volume line in mid-ventricular slices). Label volumes then match the
analytic ones to ~0.1-0.2 % (in-plane quantisation only). Long-axis labels are
the tissue class at the image plane. The stack starts 0.2-0.9 slices above the
highest point of the ventricles at ED and ends beyond the LV apex, so no part of
the ventricles is outside it.

Analytic numbers (``analytic.json``) come from the continuous geometry: LV
volumes and mass in closed form (mass = 1.05 g/ml x myocardial volume at ED),
RV volumes by fine 2D quadrature (0.2 mm) of the chord lengths of RV-minus-LV.
ED/ES frames are the max/min of the sampled LV volume curve.

Random per subject (numpy ``Generator``; same seed, same arrays): pose, pixel
spacing 1.3-1.9 mm (raised so the field of view is >= 165 mm), matrix
96-128 px, slice spacing 7.5-10 mm (slice thickness 6-8 mm), 11-17 slices
(as many as cover the ventricles), 16-25 frames, RR 750-1100 ms, EDV 100-160 ml,
EF 45-70 %, wall 7-10 mm, RV shape, contrast, coils, noise.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from pydicom.uid import generate_uid
from scipy.ndimage import gaussian_filter

from cmrssl.io.atomic import atomic_folder
from cmrssl.io.cine import CineStudy
from cmrssl.io.dicom import write_dicom_series
from cmrssl.io.nifti import write_cine_nifti, write_frames_nifti, write_long_axis_nifti
from cmrssl.labels import BACKGROUND, LV_CAVITY, LV_MYOCARDIUM, MYOCARDIAL_DENSITY_G_PER_ML, RV_CAVITY

__all__ = [
    "PhantomSubject",
    "generate_subject",
    "generate_cohort",
    "write_phantom_subject",
    "subject_seed",
]

logger = logging.getLogger(__name__)

# Tissue classes of the model (rendered to intensities), and the canonical label of each.
# Papillary muscles look like myocardium but belong to the cavity label (ACDC / Sunnybrook habit).
AIR, LV_BLOOD, LV_MYO, RV_BLOOD, RV_WALL, ATRIAL_BLOOD, TISSUE, FAT, LUNG, PAPILLARY = range(10)
_LABEL_OF_TISSUE = np.array(
    [BACKGROUND, LV_CAVITY, LV_MYOCARDIUM, RV_CAVITY, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND,
     LV_CAVITY],
    dtype=np.int16,
)
_NOMINAL_SIGNAL = np.array([0.0, 1.0, 0.28, 1.0, 0.28, 0.95, 0.45, 0.85, 0.07, 0.28])
_SIGNAL_SCALE = 400.0  # arbitrary units; blood ~400 keeps magnitudes DICOM-friendly

_SUBPLANES = 5  # odd, so the centre plane (labels) is one of the slab samples
_RV_WALL_MM = 3.0
_APEX_WALL_RATIO = 0.7  # apical wall thickness / lateral wall thickness
_MIN_FOV_MM = 165.0
_LAX_THICKNESS_MM = 8.0
_PSF_SIGMA_PX = 0.5
#: Prefix of phantom subject names (``phantom_000``); numbers in subject selections get it.
SUBJECT_PREFIX = "phantom_"


@dataclass
class PhantomSubject:
    """One phantom study.

    Attributes:
        sax: short-axis cine ``[T, Z, H, W]`` (base -> apex) with labels on every frame.
        lax_2ch: 2-chamber long-axis cine ``[T, 1, H, W]`` with labels.
        lax_4ch: 4-chamber long-axis cine ``[T, 1, H, W]`` with labels.
        analytic: continuous-geometry function numbers (the ``analytic.json`` content).
        subject: the study key (e.g. ``"phantom_000"``).
    """

    sax: CineStudy
    lax_2ch: CineStudy
    lax_4ch: CineStudy
    analytic: dict
    subject: str = "phantom_000"


# --------------------------------------------------------------------------- model


@dataclass
class _HeartModel:
    """World pose (constant) and per-frame shape parameters of one subject's heart."""

    origin: np.ndarray  # (3,) LPS mm: LV base centre at ED
    axes: np.ndarray  # (3, 3) columns e1 (to RV), e2, u (base -> apex)
    tan_valve_tilt: float
    # per frame [T], heart coordinates in mm
    base_s: np.ndarray  # s of the LV base centre (mitral plane through it)
    a_endo: np.ndarray
    c_endo: np.ndarray
    a_epi: np.ndarray
    c_epi: np.ndarray
    rv_offset: np.ndarray  # x of the RV ellipsoid centre
    rv_b1: np.ndarray
    rv_b2: np.ndarray
    rv_c: np.ndarray
    atrium_scale: np.ndarray
    la_radius: float
    la_length: float
    ra_radius: float
    ra_length: float
    papillary_angles: np.ndarray  # (2,) radians about u, from the +e1 axis
    papillary_radius_mm: float
    # static world
    body_semi_axes: np.ndarray  # (2,) LR, AP semi-axes of the chest (mm)
    body_centre: np.ndarray  # (2,) LR, AP centre
    fat_mm: float
    lungs: np.ndarray  # (2, 6): centre xyz, semi-axes xyz
    coils: np.ndarray  # (n, 4): centre xyz, gain
    coil_width_mm: float
    signal: np.ndarray  # per tissue class, arbitrary units
    noise_sigma: float
    heart_box: np.ndarray = field(default=None)  # (3, 2) min/max of x, y, s over the cycle

    def to_heart(self, points: np.ndarray) -> np.ndarray:
        """World LPS points ``[..., 3]`` -> heart coordinates ``[..., 3]`` (x, y, s)."""
        return (points - self.origin) @ self.axes

    def to_world(self, heart: np.ndarray) -> np.ndarray:
        return self.origin + np.asarray(heart) @ self.axes.T

    def heart_tissue(self, h: np.ndarray, t: int) -> np.ndarray:
        """Tissue class of heart points ``h [N, 3]`` at frame ``t`` (0 where no heart)."""
        # Python floats keep float32 input in float32 (NumPy 2 promotes to float64 on numpy scalars).
        base, tilt = float(self.base_s[t]), float(self.tan_valve_tilt)
        a_endo, c_endo = float(self.a_endo[t]), float(self.c_endo[t])
        a_epi, c_epi = float(self.a_epi[t]), float(self.c_epi[t])
        d = float(self.rv_offset[t])
        b1, b2, cr = float(self.rv_b1[t]), float(self.rv_b2[t]), float(self.rv_c[t])
        k = float(self.atrium_scale[t])
        w = _RV_WALL_MM

        x, y, s = h[:, 0], h[:, 1], h[:, 2]
        zc = s - base
        apical = zc >= tilt * x  # ventricular side of the valve plane
        x2, y2, zc2 = x * x, y * y, zc * zc
        r2 = x2 + y2
        in_endo = r2 * (1.0 / a_endo**2) + zc2 * (1.0 / c_endo**2) <= 1.0
        in_epi = r2 * (1.0 / a_epi**2) + zc2 * (1.0 / c_epi**2) <= 1.0
        zr = zc - tilt * d
        xr2, zr2 = (x - d) ** 2, zr * zr
        rv_blood = xr2 * (1.0 / b1**2) + y2 * (1.0 / b2**2) + zr2 * (1.0 / cr**2) <= 1.0
        rv_outer = xr2 * (1.0 / (b1 + w) ** 2) + y2 * (1.0 / (b2 + w) ** 2) + zr2 * (1.0 / (cr + w) ** 2) <= 1.0
        la_c, ra_c = self.la_length * k, self.ra_length * k
        la = r2 * (1.0 / (self.la_radius * k) ** 2) + ((zc + 0.8 * la_c) * (1.0 / la_c)) ** 2 <= 1.0
        ra = (xr2 + y2) * (1.0 / (self.ra_radius * k) ** 2) + ((zr + 0.8 * ra_c) * (1.0 / ra_c)) ** 2 <= 1.0

        # two papillary muscles: cylinders along u, 65 % of the way to the lateral wall, spanning
        # the mid and apical thirds of the cavity
        papillary = np.zeros(h.shape[0], dtype=bool)
        for angle in self.papillary_angles:
            px, py = 0.65 * a_endo * float(np.cos(angle)), 0.65 * a_endo * float(np.sin(angle))
            papillary |= (x - px) ** 2 + (y - py) ** 2 <= self.papillary_radius_mm**2
        papillary &= (zc >= 0.35 * c_endo) & (zc <= 0.8 * c_endo)

        tissue = np.zeros(h.shape[0], dtype=np.int8)
        tissue[~apical & (la | ra)] = ATRIAL_BLOOD
        tissue[apical & rv_outer] = RV_WALL
        tissue[apical & rv_blood] = RV_BLOOD
        tissue[apical & in_epi] = LV_MYO
        in_cavity = apical & in_endo
        tissue[in_cavity] = LV_BLOOD
        tissue[in_cavity & papillary] = PAPILLARY
        return tissue

    def static_tissue(self, p: np.ndarray) -> np.ndarray:
        """Tissue class of world points ``p [..., 3]`` outside the heart (body, fat, lungs, air)."""
        bx, by = self.body_semi_axes
        dx = p[..., 0] - self.body_centre[0]
        dy = p[..., 1] - self.body_centre[1]
        outer = (dx / bx) ** 2 + (dy / by) ** 2 <= 1.0
        inner = (dx / (bx - self.fat_mm)) ** 2 + (dy / (by - self.fat_mm)) ** 2 <= 1.0
        tissue = np.full(p.shape[:-1], AIR, dtype=np.int8)
        tissue[outer] = FAT
        tissue[inner] = TISSUE
        for lung in self.lungs:
            q = (((p - lung[:3]) / lung[3:]) ** 2).sum(-1) <= 1.0
            tissue[q & inner] = LUNG
        return tissue

    def coil_field(self, p: np.ndarray) -> np.ndarray:
        """Smooth receive sensitivity at world points ``p [..., 3]`` (1 at the LV centre)."""

        def raw(q):
            out = np.zeros(q.shape[:-1])
            for c in self.coils:
                out += c[3] * np.exp(-((q - c[:3]) ** 2).sum(-1) / (2 * self.coil_width_mm**2))
            return out

        centre = self.to_world(np.array([0.0, 0.0, float(self.base_s[0] + 0.5 * self.c_epi[0])]))
        return raw(p) / raw(centre[None])[0]


def _filling_fraction(phase: np.ndarray, cycle: dict) -> np.ndarray:
    """Normalised LV volume ``(V - ESV) / (EDV - ESV)`` at cycle phase in [0, 1) (0 = ED)."""
    phase = np.mod(np.asarray(phase, dtype=np.float64), 1.0)
    es, e_end, a_start = cycle["end_systole"], cycle["early_filling_end"], cycle["atrial_start"]
    f_e, f_d = cycle["early_filling_fraction"], cycle["diastasis_fraction"]

    def rise(y):  # smooth 0 -> 1 with zero slope at both ends
        return 0.5 * (1.0 - np.cos(np.pi * np.clip(y, 0.0, 1.0)))

    f = np.empty_like(phase)
    ej = phase < es
    # x**0.75 front-loads the ejection: most of the stroke volume leaves early in systole
    f[ej] = 1.0 - rise((phase[ej] / es) ** 0.75)
    m = (phase >= es) & (phase < e_end)
    f[m] = f_e * rise((phase[m] - es) / (e_end - es))
    m = (phase >= e_end) & (phase < a_start)
    f[m] = f_e + (f_d - f_e) * rise((phase[m] - e_end) / (a_start - e_end))
    m = phase >= a_start
    f[m] = f_d + (1.0 - f_d) * rise((phase[m] - a_start) / (1.0 - a_start))
    return f


def _solve_wall_thickness(a: np.ndarray, c: np.ndarray, myo_volume_mm3: float, w0: float) -> np.ndarray:
    """Wall ``w`` with ``2/3 pi ((a+w)^2 (c+k w) - a^2 c) = myo_volume`` (Newton, monotone in w)."""
    k = _APEX_WALL_RATIO
    target = a * a * c + 3.0 * myo_volume_mm3 / (2.0 * np.pi)
    w = np.full_like(a, w0)
    for _ in range(50):
        g = (a + w) ** 2 * (c + k * w) - target
        dg = 2 * (a + w) * (c + k * w) + k * (a + w) ** 2
        w = w - g / dg
    return w


def _random_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    return _axis_angle(axis, angle)


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------ random subject


@dataclass
class _Acquisition:
    num_frames: int
    ed_frame: int
    rr_ms: float
    height: int
    width: int
    pixel_mm: float
    slice_spacing_mm: float
    slice_thickness_mm: float
    num_slices: int
    sax_affines: np.ndarray  # [Z, 4, 4]
    lax_2ch_affine: np.ndarray  # [4, 4]
    lax_4ch_affine: np.ndarray


def _image_size(image_size) -> Optional[tuple]:
    if image_size is None:
        return None
    if np.isscalar(image_size):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"image_size must be an int or (H, W) with both >= 16, got {image_size!r}")
    return size


def _build_subject(rng: np.random.Generator, num_frames, image_size):
    """Draw a subject's anatomy, cycle and acquisition. Returns ``(model, acquisition, cycle)``."""
    # --- cycle and timing
    if num_frames is None:
        num_frames = int(rng.integers(16, 26))
    num_frames = int(num_frames)
    if num_frames < 4:
        raise ValueError(f"num_frames must be >= 4 to resolve a cardiac cycle, got {num_frames}")
    cycle = {
        "end_systole": float(rng.uniform(0.30, 0.40)),
        "early_filling_fraction": float(rng.uniform(0.65, 0.80)),
    }
    cycle["early_filling_end"] = cycle["end_systole"] + float(rng.uniform(0.15, 0.22))
    cycle["atrial_start"] = float(rng.uniform(0.78, 0.86))
    cycle["diastasis_fraction"] = cycle["early_filling_fraction"] + float(rng.uniform(0.03, 0.08))
    ed_frame = int(rng.integers(0, num_frames // 3 + 1))
    rr_ms = float(rng.uniform(750.0, 1100.0))
    phase = np.mod((np.arange(num_frames) - ed_frame) / num_frames, 1.0)
    f = _filling_fraction(phase, cycle)

    # --- LV
    edv_mm3 = float(rng.uniform(100.0, 160.0)) * 1000.0
    ef = float(rng.uniform(0.45, 0.70))
    q = (1.0 - ef) + ef * f  # V / EDV per frame
    c_ed = float(rng.uniform(72.0, 90.0))
    a_ed = float(np.sqrt(3.0 * edv_mm3 / (2.0 * np.pi * c_ed)))
    wall_ed = float(rng.uniform(7.0, 10.0))
    k = _APEX_WALL_RATIO
    myo_mm3 = 2.0 / 3.0 * np.pi * ((a_ed + wall_ed) ** 2 * (c_ed + k * wall_ed) - a_ed**2 * c_ed)
    a_endo = a_ed * q**0.4
    c_endo = c_ed * q**0.2
    wall = _solve_wall_thickness(a_endo, c_endo, myo_mm3, wall_ed)
    a_epi = a_endo + wall
    c_epi = c_endo + k * wall
    apex_s = c_ed + k * wall_ed  # fixed epicardial apex; base centre at s = 0 at ED
    base_s = apex_s - c_epi

    # --- RV crescent: an ellipsoid spanning (along e1) from just past the LV axis to the free wall
    # a crescent thickness beyond the LV epicardium, wide along e2 so its horns wrap the septum
    septal_reach = float(rng.uniform(0.0, 0.15)) * a_epi
    crescent_mm = float(rng.uniform(18.0, 26.0)) * (1.0 - float(rng.uniform(0.45, 0.55)) * (1.0 - f))
    rv_b1 = (a_epi + crescent_mm + septal_reach) / 2.0
    rv_offset = (a_epi + crescent_mm - septal_reach) / 2.0
    rv_b2 = float(rng.uniform(1.3, 1.5)) * (a_ed + wall_ed) * (1.0 - 0.15 * (1.0 - f))
    rv_c = float(rng.uniform(0.75, 0.88)) * (c_ed + k * wall_ed) * (1.0 - 0.08 * (1.0 - f))

    tilt = np.deg2rad(rng.uniform(8.0, 16.0)) * rng.choice([-1.0, 1.0])

    # --- pose: LV long axis apex-left-anterior-inferior, RV to the right-anterior
    u = _random_rotation(rng, 12.0) @ _unit(np.array([0.6, -0.45, -0.65]))
    rv_dir = np.array([-0.7, -0.7, 0.0])
    e1 = _unit(rv_dir - np.dot(rv_dir, u) * u)
    e1 = _axis_angle(u, np.deg2rad(rng.uniform(-15.0, 15.0))) @ e1
    e2 = np.cross(u, e1)
    axes = np.stack([e1, e2, u], axis=1)
    origin = np.array([rng.uniform(0.0, 20.0), rng.uniform(-30.0, -10.0), rng.uniform(-20.0, 20.0)])

    body = np.array([rng.uniform(150.0, 175.0), rng.uniform(105.0, 125.0)])
    body_centre = np.array([0.0, rng.uniform(0.0, 10.0)])
    lungs = []
    for side in (-1.0, 1.0):
        centre = [side * rng.uniform(85.0, 100.0), rng.uniform(5.0, 25.0), origin[2] + rng.uniform(10.0, 40.0)]
        semi = [rng.uniform(45.0, 60.0), rng.uniform(65.0, 85.0), rng.uniform(120.0, 150.0)]
        lungs.append(centre + semi)
    coils = []
    for ap in (-1.0, 1.0):  # anterior and posterior arrays, two elements each
        for lr in (-1.0, 1.0):
            coils.append([lr * rng.uniform(40.0, 80.0), ap * (body[1] + 20.0), origin[2] + rng.uniform(-40.0, 40.0),
                          rng.uniform(0.7, 1.3)])
    signal = _NOMINAL_SIGNAL * rng.uniform(0.92, 1.08, size=_NOMINAL_SIGNAL.shape) * _SIGNAL_SCALE
    signal[AIR] = 0.0
    noise_sigma = float(signal[LV_BLOOD] / rng.uniform(18.0, 35.0))

    model = _HeartModel(
        origin=origin, axes=axes, tan_valve_tilt=float(np.tan(tilt)), base_s=base_s,
        a_endo=a_endo, c_endo=c_endo, a_epi=a_epi, c_epi=c_epi, rv_offset=rv_offset,
        rv_b1=rv_b1, rv_b2=rv_b2, rv_c=rv_c, atrium_scale=1.0 + 0.15 * (1.0 - f),
        la_radius=float(rng.uniform(0.55, 0.75)) * a_ed, la_length=float(rng.uniform(22.0, 30.0)),
        ra_radius=float(rng.uniform(0.7, 0.9)) * rv_b1[ed_frame], ra_length=float(rng.uniform(22.0, 30.0)),
        papillary_angles=np.pi + np.deg2rad([rng.uniform(45.0, 70.0), -rng.uniform(45.0, 70.0)]),
        papillary_radius_mm=float(rng.uniform(3.5, 5.0)),
        body_semi_axes=body, body_centre=body_centre, fat_mm=float(rng.uniform(6.0, 14.0)),
        lungs=np.array(lungs), coils=np.array(coils), coil_width_mm=float(rng.uniform(110.0, 160.0)),
        signal=signal, noise_sigma=noise_sigma,
    )
    ed = ed_frame
    x_lo = -(a_epi[ed] + 5.0)
    x_hi = rv_offset[ed] + rv_b1[ed] + _RV_WALL_MM + 5.0
    y_hi = max(rv_b2[ed] + _RV_WALL_MM, a_epi[ed]) + 5.0
    atria = 1.8 * max(model.la_length, model.ra_length) * float(model.atrium_scale.max())
    s_lo = -abs(model.tan_valve_tilt) * max(-x_lo, x_hi) - atria - 5.0
    model.heart_box = np.array([[x_lo, x_hi], [-y_hi, y_hi], [s_lo, apex_s + 5.0]])

    # --- acquisition geometry
    size = _image_size(image_size)
    if size is None:
        n = int(rng.choice([96, 104, 112, 120, 128]))
        size = (n, n)
    height, width = size
    pixel_mm = max(float(rng.uniform(1.3, 1.9)), _MIN_FOV_MM / min(height, width))
    dz = float(rng.uniform(7.5, 10.0))
    thickness = min(dz, float(rng.uniform(6.0, 8.0)))
    # highest point of the ventricles (valve-plane ring) at ED, the most basal moment
    lv_rim, rv_rim = -a_epi[ed], rv_offset[ed] + rv_b1[ed] + _RV_WALL_MM
    top_s = min(model.tan_valve_tilt * lv_rim, model.tan_valve_tilt * rv_rim)
    first_s = top_s - float(rng.uniform(0.2, 0.9)) * dz
    num_slices = int(np.ceil((apex_s - first_s) / dz)) + 1 + int(rng.integers(0, 2))

    # SAX in-plane axes: anterior at the top, RV on the image's left (radiological habit)
    row_dir = _unit(np.array([0.0, 1.0, 0.0]) - u[1] * u)
    col_dir = np.cross(row_dir, u)
    if np.dot(col_dir, e1) > 0:
        col_dir = -col_dir
    spin = _axis_angle(u, np.deg2rad(rng.uniform(-10.0, 10.0)))
    row_dir, col_dir = spin @ row_dir, spin @ col_dir
    # centre the field of view between LV and RV, with a random shift
    centre_xy = np.array([0.3 * x_hi, 0.0]) + rng.uniform(-10.0, 10.0, size=2)
    sax = np.zeros((num_slices, 4, 4))
    for z in range(num_slices):
        centre = model.to_world(np.array([centre_xy[0], centre_xy[1], first_s + z * dz]))
        sax[z] = _plane_affine(centre, col_dir, row_dir, pixel_mm, height, width)

    # LAX planes contain the LV long axis: 4Ch through the RV (span e1, u), 2Ch perpendicular (span e2, u)
    lax_centre = model.to_world(np.array([0.0, 0.0, 0.4 * apex_s]))
    lax_4ch = _plane_affine(lax_centre + 15.0 * e1, -e1, -u, pixel_mm, height, width)
    lax_2ch = _plane_affine(lax_centre, e2, -u, pixel_mm, height, width)

    acq = _Acquisition(
        num_frames=num_frames, ed_frame=ed_frame, rr_ms=rr_ms, height=height, width=width,
        pixel_mm=pixel_mm, slice_spacing_mm=dz, slice_thickness_mm=thickness,
        num_slices=num_slices, sax_affines=sax, lax_2ch_affine=lax_2ch, lax_4ch_affine=lax_4ch,
    )
    return model, acq, {"cycle": cycle, "ef": ef, "edv_mm3": edv_mm3, "myo_mm3": myo_mm3}


def _plane_affine(centre, col_dir, row_dir, pixel_mm, height, width) -> np.ndarray:
    """Affine ``(col, row, 0, 1) -> LPS`` of an ``H x W`` image centred on ``centre``."""
    aff = np.eye(4)
    aff[:3, 0] = _unit(col_dir) * pixel_mm
    aff[:3, 1] = _unit(row_dir) * pixel_mm
    aff[:3, 2] = _unit(np.cross(col_dir, row_dir))
    aff[:3, 3] = centre - aff[:3, 0] * (width - 1) / 2.0 - aff[:3, 1] * (height - 1) / 2.0
    return aff


# ------------------------------------------------------------------------ rendering


def _render(model: _HeartModel, affines: np.ndarray, height: int, width: int, thickness: float,
            num_frames: int, rng: np.random.Generator):
    """Sample slices ``affines [Z, 4, 4]``: pixels float32 and labels int16, both ``[T, Z, H, W]``."""
    num_slices = affines.shape[0]
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                             indexing="ij")
    offsets = ((np.arange(_SUBPLANES) + 0.5) / _SUBPLANES - 0.5) * thickness
    normal = np.stack([_unit(np.cross(a[:3, 0], a[:3, 1])) for a in affines])  # [Z, 3]
    centre_plane = (affines[:, None, None, :3, 3] + cols[None, ..., None] * affines[:, None, None, :3, 0]
                    + rows[None, ..., None] * affines[:, None, None, :3, 1])  # [Z, H, W, 3]
    points = centre_plane[:, None] + offsets[None, :, None, None, None] * normal[:, None, None, None, :]
    # [Z, K, H, W, 3]
    static = model.static_tissue(points)
    heart = model.to_heart(points)
    box = model.heart_box
    candidate = np.all((heart >= box[:, 0]) & (heart <= box[:, 1]), axis=-1)
    # float32 halves the memory traffic of the per-frame work; 1e-5 mm is far below a pixel
    heart_points = heart[candidate].astype(np.float32)
    static_candidates = static[candidate]
    coil = model.coil_field(centre_plane).astype(np.float32)  # [Z, H, W]; smooth: one plane per slab
    signal_of_tissue = model.signal.astype(np.float32)
    mid = _SUBPLANES // 2

    pixels = np.empty((num_frames, num_slices, height, width), dtype=np.float32)
    labels = np.empty((num_frames, num_slices, height, width), dtype=np.int16)
    tissue = static.copy()
    for t in range(num_frames):
        h = model.heart_tissue(heart_points, t)
        tissue[candidate] = np.where(h > 0, h, static_candidates)
        # slab average = through-plane partial volume
        signal = signal_of_tissue[tissue].mean(axis=1, dtype=np.float32) * coil
        # finite in-plane resolution (apodised k-space): a Gaussian point-spread function
        signal = gaussian_filter(signal, sigma=(0.0, _PSF_SIGMA_PX, _PSF_SIGMA_PX), mode="nearest")
        noise = rng.standard_normal(size=(2,) + signal.shape, dtype=np.float32) * np.float32(model.noise_sigma)
        # Rician magnitude, kept to whole numbers as scanners store it (the step is << the noise,
        # and integer-valued floats compress to half the size in .nii.gz)
        pixels[t] = np.rint(np.hypot(signal + noise[0], noise[1]))
        labels[t] = _LABEL_OF_TISSUE[tissue[:, mid]]
    return pixels, labels


def _interval_in_ellipsoid(x, y, centre_s, cut_s, a_x, a_y, c, x0=0.0):
    """Along-axis interval ``[lo, hi]`` of the column ``(x, y)`` inside a half-ellipsoid.

    The ellipsoid is centred on ``(x0, 0, centre_s)`` with semi-axes ``a_x, a_y, c``, and only
    its part with ``s >= cut_s`` (the valve plane, ventricular side) counts. Empty columns get
    ``lo >= hi``.
    """
    q = 1.0 - ((x - x0) / a_x) ** 2 - (y / a_y) ** 2
    half = c * np.sqrt(np.clip(q, 0.0, None))
    hi = np.where(q > 0, centre_s + half, -np.inf)
    lo = np.maximum(cut_s, centre_s - half)
    return lo, hi


def _overlap(lo, hi, slab_lo, slab_hi):
    return np.clip(np.minimum(hi, slab_hi) - np.maximum(lo, slab_lo), 0.0, None)


def _keep_largest_fractions(fraction: np.ndarray, taken: Optional[np.ndarray] = None) -> np.ndarray:
    """Per row of ``fraction [N, P]``, mark the ``round(sum)`` pixels with the largest fractions.

    The marked area equals the partial-volume area of the row (to one pixel), and because the
    fraction maps are smooth the marked set is a level set of the fraction (a clean contour).
    Pixels already ``taken [N, P]`` by another structure are skipped (the area target is kept).
    """
    mask = np.zeros(fraction.shape, dtype=bool)
    targets = np.rint(fraction.sum(axis=1)).astype(int)
    if taken is not None:
        fraction = np.where(taken, 0.0, fraction)
    for i, row in enumerate(fraction):
        positive = row[row > 0]
        n = min(int(targets[i]), positive.size)
        if n <= 0:
            continue
        threshold = np.partition(positive, positive.size - n)[positive.size - n]
        mask[i] = row >= threshold
    return mask


def _slab_labels(model: _HeartModel, xy: np.ndarray, slice_s: np.ndarray, slab_mm: float) -> np.ndarray:
    """Canonical labels ``[T, Z, P]`` of SAX pixels whose columns run along the LV long axis.

    ``xy [P, 2]`` are the pixels' heart coordinates (the same in every slice: the stack is
    perpendicular to the long axis), ``slice_s [Z]`` the slice centres. Each pixel's column
    through its slab ``[s_z - dz/2, s_z + dz/2]`` is intersected in closed form with the
    endocardial, epicardial and RV half-ellipsoids; per slice and structure the pixels with the
    largest volume fractions are labelled, as many as the slab's partial-volume area. The slabs
    tile the stack, so label volumes equal the continuous volumes up to in-plane quantisation.
    """
    x, y = xy[:, 0], xy[:, 1]
    slab_lo = (slice_s - slab_mm / 2.0)[:, None]
    slab_hi = (slice_s + slab_mm / 2.0)[:, None]
    labels = np.zeros((model.base_s.size, slice_s.size, x.size), dtype=np.int16)
    for t in range(model.base_s.size):
        base = model.base_s[t]
        cut = base + model.tan_valve_tilt * x
        endo = _interval_in_ellipsoid(x, y, base, cut, model.a_endo[t], model.a_endo[t], model.c_endo[t])
        epi = _interval_in_ellipsoid(x, y, base, cut, model.a_epi[t], model.a_epi[t], model.c_epi[t])
        d = model.rv_offset[t]
        rv = _interval_in_ellipsoid(x, y, base + model.tan_valve_tilt * d, cut, model.rv_b1[t],
                                    model.rv_b2[t], model.rv_c[t], x0=d)
        rv_in_epi = (np.maximum(rv[0], epi[0]), np.minimum(rv[1], epi[1]))
        f_endo = _overlap(*endo, slab_lo, slab_hi) / slab_mm  # [Z, P]
        f_epi = _overlap(*epi, slab_lo, slab_hi) / slab_mm
        f_rv = (_overlap(*rv, slab_lo, slab_hi) - _overlap(*rv_in_epi, slab_lo, slab_hi)) / slab_mm
        # Cavity first, then the myocardium's own fraction (epi - endo) among the remaining pixels,
        # so each structure's labelled area matches its partial-volume area separately.
        cavity = _keep_largest_fractions(f_endo)
        myocardium = _keep_largest_fractions(f_epi - f_endo, taken=cavity)
        right = _keep_largest_fractions(f_rv, taken=cavity | myocardium)
        lab = labels[t]
        lab[right] = RV_CAVITY
        lab[myocardium] = LV_MYOCARDIUM
        lab[cavity] = LV_CAVITY
    return labels


# ------------------------------------------------------------------ analytic values


def _rv_cavity_volume_mm3(model: _HeartModel, t: int, step_mm: float = 0.2) -> float:
    """RV cavity volume at frame ``t`` by quadrature of chord lengths along ``y``.

    Both the RV ellipsoid and the LV epicardium are symmetric about ``y = 0`` in heart
    coordinates, so at each ``(x, s)`` the cavity chord is ``2 max(0, Y_rv - Y_lv)``; the valve
    plane depends on ``x`` only. Midpoint rule on a ``step_mm`` grid.
    """
    d, b1, b2, cr = model.rv_offset[t], model.rv_b1[t], model.rv_b2[t], model.rv_c[t]
    base = model.base_s[t]
    s_rv = base + model.tan_valve_tilt * d
    x = np.arange(d - b1 + step_mm / 2, d + b1, step_mm)
    s = np.arange(s_rv - cr + step_mm / 2, s_rv + cr, step_mm)
    xx, ss = np.meshgrid(x, s, indexing="ij")
    y_rv = b2 * np.sqrt(np.clip(1.0 - ((xx - d) / b1) ** 2 - ((ss - s_rv) / cr) ** 2, 0.0, None))
    zc = ss - base
    y_lv = np.sqrt(np.clip(model.a_epi[t] ** 2 * (1.0 - (zc / model.c_epi[t]) ** 2) - xx**2, 0.0, None))
    inside_lv_length = np.abs(zc) <= model.c_epi[t]
    y_lv = np.where(inside_lv_length, y_lv, 0.0)
    chord = 2.0 * np.clip(y_rv - y_lv, 0.0, None) * (zc >= model.tan_valve_tilt * xx)
    return float(chord.sum() * step_mm * step_mm)


def _analytic(model: _HeartModel, acq: _Acquisition) -> dict:
    lv_ml = 2.0 / 3.0 * np.pi * model.a_endo**2 * model.c_endo / 1000.0
    epi_ml = 2.0 / 3.0 * np.pi * model.a_epi**2 * model.c_epi / 1000.0
    myo_ml = epi_ml - lv_ml
    ed = int(np.argmax(lv_ml))
    es = int(np.argmin(lv_ml))
    if ed != acq.ed_frame:  # the model puts phase 0 exactly on ed_frame
        raise RuntimeError(f"phantom ED frame {ed} differs from the designed {acq.ed_frame}")
    rv_ml = [_rv_cavity_volume_mm3(model, t) / 1000.0 for t in range(acq.num_frames)]
    edv, esv = float(lv_ml[ed]), float(lv_ml[es])
    dz, dy, dx = acq.slice_spacing_mm, acq.pixel_mm, acq.pixel_mm
    return {
        "edv_ml": edv,
        "esv_ml": esv,
        "sv_ml": edv - esv,
        "ef_percent": 100.0 * (edv - esv) / edv,
        "lv_mass_g": MYOCARDIAL_DENSITY_G_PER_ML * float(myo_ml[ed]),
        "rv_edv_ml": float(rv_ml[ed]),
        "rv_esv_ml": float(rv_ml[es]),
        "ed_frame": ed,
        "es_frame": es,
        "lv_volume_curve_ml": [float(v) for v in lv_ml],
        "rv_volume_curve_ml": [float(v) for v in rv_ml],
        "lv_myocardial_volume_curve_ml": [float(v) for v in myo_ml],
        "lv_wall_thickness_mm": {"ed": float(model.a_epi[ed] - model.a_endo[ed]),
                                 "es": float(model.a_epi[es] - model.a_endo[es])},
        "num_frames": int(acq.num_frames),
        "num_slices": int(acq.num_slices),
        "spacing_zyx_mm": [float(dz), float(dy), float(dx)],
        "image_size": [int(acq.height), int(acq.width)],
        "slice_thickness_mm": float(acq.slice_thickness_mm),
        "rr_interval_ms": float(acq.rr_ms),
        "trigger_times_ms": [float(v) for v in np.arange(acq.num_frames) * acq.rr_ms / acq.num_frames],
        "mitral_plane_tilt_deg": float(np.rad2deg(np.arctan(model.tan_valve_tilt))),
        "lv_long_axis_lps": [float(v) for v in model.axes[:, 2]],
        "rv_direction_lps": [float(v) for v in model.axes[:, 0]],
        "lv_base_centre_ed_lps_mm": [float(v) for v in model.to_world(np.array([0.0, 0.0, model.base_s[ed]]))],
    }


def _sax_labels(model: _HeartModel, acq: _Acquisition) -> np.ndarray:
    """Slab labels ``[T, Z, H, W]`` of the SAX stack (see :func:`_slab_labels`)."""
    h, w = acq.height, acq.width
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    a = acq.sax_affines[0]
    plane = a[:3, 3] + cols[..., None] * a[:3, 0] + rows[..., None] * a[:3, 1]
    xy = model.to_heart(plane)[..., :2].reshape(-1, 2)
    slice_s = np.array([model.to_heart(aff[:3, 3])[2] for aff in acq.sax_affines])
    box = model.heart_box
    candidate = np.all((xy >= box[:2, 0]) & (xy <= box[:2, 1]), axis=-1)
    labels = np.zeros((acq.num_frames, acq.num_slices, h * w), dtype=np.int16)
    labels[:, :, candidate] = _slab_labels(model, xy[candidate], slice_s, acq.slice_spacing_mm)
    return labels.reshape(acq.num_frames, acq.num_slices, h, w)


# ----------------------------------------------------------------------- public API


def generate_subject(
    seed: int,
    *,
    subject: str = "phantom_000",
    num_frames: Optional[int] = None,
    image_size: Union[int, Sequence[int], None] = None,
) -> PhantomSubject:
    """Generate one phantom study, deterministic in ``seed``.

    Args:
        seed: seed of the ``numpy.random.Generator`` drawing anatomy, pose, acquisition and noise.
        subject: study key stored as the studies' ``source``.
        num_frames: frames per cardiac cycle (default: random 16-25). Must be >= 4.
        image_size: matrix ``H = W`` (int) or ``(H, W)`` for all views (default: random
            96-128). Pixel spacing grows so the field of view stays >= 165 mm.

    Returns:
        :class:`PhantomSubject`: SAX ``[T, Z, H, W]``, 2Ch and 4Ch ``[T, 1, H, W]`` cines
        (float32 pixels, int16 canonical labels on every frame) and the analytic numbers.

    Raises:
        ValueError: ``num_frames`` < 4 or a bad ``image_size``.
    """
    rng = np.random.default_rng(seed)
    model, acq, _ = _build_subject(rng, num_frames, image_size)
    trigger = np.arange(acq.num_frames) * acq.rr_ms / acq.num_frames
    pixels, _ = _render(model, acq.sax_affines, acq.height, acq.width, acq.slice_thickness_mm,
                        acq.num_frames, rng)
    labels = _sax_labels(model, acq)
    sax = CineStudy(pixels=pixels, slice_affines=acq.sax_affines, slice_spacing_mm=acq.slice_spacing_mm,
                    trigger_times_ms=trigger, labels=labels, source=f"phantom:{subject}/sax", view="sax")
    views = {}
    for view, affine in (("2ch", acq.lax_2ch_affine), ("4ch", acq.lax_4ch_affine)):
        p, lab = _render(model, affine[None], acq.height, acq.width, _LAX_THICKNESS_MM, acq.num_frames, rng)
        views[view] = CineStudy(pixels=p, slice_affines=affine[None], slice_spacing_mm=0.0,
                                trigger_times_ms=trigger.copy(), labels=lab,
                                source=f"phantom:{subject}/{view}", view=view)
    analytic = _analytic(model, acq)
    analytic["subject"] = subject
    analytic["seed"] = int(seed)
    return PhantomSubject(sax=sax, lax_2ch=views["2ch"], lax_4ch=views["4ch"], analytic=analytic,
                          subject=subject)


def subject_seed(cohort_seed: int, index: int) -> int:
    """Seed of subject ``index`` of a cohort: independent streams from ``SeedSequence``."""
    return int(np.random.SeedSequence([int(cohort_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def write_phantom_subject(subject: PhantomSubject, folder: Union[str, Path], *, write_dicom: bool = True,
                          overwrite: bool = False) -> Path:
    """Write one phantom study in the cohort layout (see :func:`generate_cohort`).

    The folder appears whole or not at all. DICOM series of one subject share a deterministic
    StudyInstanceUID and FrameOfReferenceUID (derived from the subject's seed), so readers can
    pair the short- and long-axis series.

    Raises:
        FileExistsError: ``folder`` exists and not ``overwrite``.
    """
    folder = Path(folder)
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        write_cine_nifti(subject.sax, tmp / "sax_cine.nii.gz", what="pixels")
        write_cine_nifti(subject.sax, tmp / "sax_cine_gt.nii.gz", what="labels")
        write_frames_nifti(subject.sax, tmp / "frames")
        for view, study in (("2ch", subject.lax_2ch), ("4ch", subject.lax_4ch)):
            write_long_axis_nifti(study, tmp / f"lax_{view}.nii.gz", what="pixels")
            write_long_axis_nifti(study, tmp / f"lax_{view}_gt.nii.gz", what="labels")
        if write_dicom:
            key = [f"cmrssl-phantom:{subject.subject}:{subject.analytic.get('seed', '')}"]
            study_uid = generate_uid(entropy_srcs=key + ["study"])
            frame_uid = generate_uid(entropy_srcs=key + ["frame-of-reference"])
            series = (("sax", subject.sax, 1, "SAX cine"), ("2ch", subject.lax_2ch, 2, "2CH cine"),
                      ("4ch", subject.lax_4ch, 3, "4CH cine"))
            for name, study, number, description in series:
                write_dicom_series(study, tmp / "dicom" / name, series_number=number,
                                   series_description=description, study_instance_uid=study_uid,
                                   frame_of_reference_uid=frame_uid)
        (tmp / "analytic.json").write_text(json.dumps(subject.analytic, indent=1) + "\n")
    return folder


def generate_cohort(
    out_dir: Union[str, Path],
    num_subjects: int,
    seed: int,
    *,
    write_dicom: bool = True,
    overwrite: bool = False,
    num_frames: Optional[int] = None,
    image_size: Union[int, Sequence[int], None] = None,
) -> list:
    """Write a phantom cohort: ``out_dir/cohort.json`` and one folder per subject.

    Layout per subject ``phantom_XXX`` (frames and slices 0-based)::

        sax_cine.nii.gz, sax_cine_gt.nii.gz   4D [x, y, z, t] float32 / uint8 canonical labels
        frames/frame_XX.nii.gz, frames/frame_XX_gt.nii.gz   3D, every frame
        dicom/sax/*.dcm                        one single-frame file per slice and phase
        dicom/2ch/*.dcm, dicom/4ch/*.dcm       long-axis cine (one slice, T phases)
        lax_2ch.nii.gz, lax_4ch.nii.gz         [x, y, 1, t] (and *_gt.nii.gz labels)
        analytic.json                          continuous-geometry EDV/ESV/SV/EF/mass, ...

    Subject ``i`` is :func:`generate_subject` with seed ``subject_seed(seed, i)``, so a cohort
    is reproducible and its first subjects do not change when ``num_subjects`` grows.

    Args:
        out_dir: output folder; must be absent or empty unless ``overwrite``.
        num_subjects: number of studies (>= 1).
        seed: cohort seed.
        write_dicom: also write the DICOM series (the slow part).
        overwrite: replace an existing non-empty ``out_dir``.
        num_frames, image_size: see :func:`generate_subject`.

    Returns:
        The subject folders, in order.

    Raises:
        FileExistsError: ``out_dir`` is a file, or a non-empty folder and not ``overwrite``.
        ValueError: ``num_subjects`` < 1 (and see :func:`generate_subject`).
    """
    out_dir = Path(out_dir)
    num_subjects = int(num_subjects)
    if num_subjects < 1:
        raise ValueError(f"num_subjects must be >= 1, got {num_subjects}")
    replace = False
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
        replace = True
    names = [f"{SUBJECT_PREFIX}{i:03d}" for i in range(num_subjects)]
    seeds = [subject_seed(seed, i) for i in range(num_subjects)]
    # Everything goes to a temporary sibling folder renamed at the end: a crash or Ctrl-C
    # never leaves a half-written cohort that a later run would mistake for a complete one.
    # the cohort's own entries: a smaller cohort written over a larger one leaves no stale subject
    own = re.compile(rf"^({SUBJECT_PREFIX}\d+|cohort\.json)$")
    with atomic_folder(out_dir, overwrite=replace, owned=lambda name: bool(own.match(name))) as tmp:
        for name, s in zip(names, seeds):
            subject = generate_subject(s, subject=name, num_frames=num_frames, image_size=image_size)
            write_phantom_subject(subject, tmp / name, write_dicom=write_dicom)
            logger.info("%s: EDV %.1f ml, ESV %.1f ml, EF %.1f %%, LV mass %.1f g", name,
                        subject.analytic["edv_ml"], subject.analytic["esv_ml"],
                        subject.analytic["ef_percent"], subject.analytic["lv_mass_g"])
        cohort = {"seed": int(seed), "subjects": names, "subject_seeds": seeds,
                  "generator": "cmrssl.data.phantom", "dicom": bool(write_dicom)}
        (tmp / "cohort.json").write_text(json.dumps(cohort, indent=1) + "\n")
    return [out_dir / name for name in names]
