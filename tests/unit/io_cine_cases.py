"""Tiny synthetic cine studies with known geometry for the I/O tests (not a test module)."""

from __future__ import annotations

import numpy as np

from cmrssl.io.cine import CineStudy

# A short-axis pose: normal close to the heuristic long axis (apex left, anterior, inferior in LPS),
# tilted so that no axis is trivially aligned.
SAX_NORMAL = np.array([0.62, -0.55, -0.56])


def rotation_about(axis, angle_rad) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * k @ k


def sax_study(
    num_frames: int = 4,
    num_slices: int = 5,
    rows: int = 12,
    cols: int = 10,
    spacing=(8.0, 1.25, 1.4),
    seed: int = 0,
    apex_first: bool = False,
    labels: bool = True,
    origin=(12.0, -30.0, 45.0),
) -> CineStudy:
    """A cine with random pixels (and labels) on a rotated short-axis stack, base first
    unless ``apex_first``. ``spacing`` is ``(dz, dy, dx)`` mm."""
    rng = np.random.default_rng(seed)
    normal = SAX_NORMAL / np.linalg.norm(SAX_NORMAL)
    u = np.cross(normal, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    rot = rotation_about(normal, 0.4)  # in-plane rotation
    u, v = rot @ u, rot @ v
    dz, dy, dx = spacing
    step = -normal if apex_first else normal
    affines = np.zeros((num_slices, 4, 4))
    for z in range(num_slices):
        a = np.eye(4)
        a[:3, 0] = u * dx
        a[:3, 1] = v * dy
        a[:3, 2] = step
        a[:3, 3] = np.asarray(origin) + z * dz * step
        affines[z] = a
    pixels = (rng.random((num_frames, num_slices, rows, cols)) * 900 + 50).astype(np.float32)
    lab = rng.integers(0, 4, size=pixels.shape).astype(np.int16) if labels else None
    return CineStudy(
        pixels=pixels,
        slice_affines=affines,
        slice_spacing_mm=dz,
        trigger_times_ms=np.arange(num_frames) * 45.0 + 12.0,
        labels=lab,
    )


def long_axis_study(num_frames: int = 4, rows: int = 14, cols: int = 16, seed: int = 1, view: str = "4ch") -> CineStudy:
    """A single-slice long-axis cine whose plane contains the SAX normal direction."""
    rng = np.random.default_rng(seed)
    long_axis = SAX_NORMAL / np.linalg.norm(SAX_NORMAL)
    other = np.cross(long_axis, [1.0, 0.0, 0.0])
    other /= np.linalg.norm(other)
    a = np.eye(4)
    a[:3, 0] = long_axis * 1.5
    a[:3, 1] = other * 1.5
    a[:3, 2] = np.cross(long_axis, other)
    a[:3, 3] = [0.0, 10.0, 20.0]
    pixels = (rng.random((num_frames, 1, rows, cols)) * 500).astype(np.float32)
    return CineStudy(pixels=pixels, slice_affines=a[None], slice_spacing_mm=0.0,
                     trigger_times_ms=np.arange(num_frames) * 50.0, view=view)
