"""``python tools/lv_indices.py`` on a phantom subject: CSV against the label file, phase against
the analytic ED/ES, no silent overwrite, clear refusals."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "lv_indices.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_on_phantom_subject(phantom_cohort, tmp_path):
    subject = phantom_cohort / "phantom_000"
    analytic = json.loads((subject / "analytic.json").read_text())
    out = tmp_path / "out"
    result = _run(subject, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "ED frame" in result.stdout and "rwt_AS_mm" in result.stdout
    rows = list(csv.DictReader((out / "lv_indices.csv").open()))
    slices = sorted({int(r["slice"]) for r in rows})
    num_frames = analytic["num_frames"]
    assert len(rows) == len(slices) * num_frames and 1 <= len(slices) < analytic["num_slices"]
    # mid-ventricular: no basal or apical slice
    assert slices[0] > 0 and slices[-1] < analytic["num_slices"] - 1

    labels = np.asarray(nib.load(str(subject / "sax_cine_gt.nii.gz")).dataobj)  # [x, y, z, t]
    _, dy, dx = analytic["spacing_zyx_mm"]
    for r in rows:
        z, t = int(r["slice"]), int(r["frame"])
        cavity_px = int((labels[:, :, z, t] == 1).sum())
        assert float(r["cavity_area_mm2"]) == pytest.approx(cavity_px * dy * dx, rel=1e-3)
        # the phantom LV is near circular: every dimension is close to the equivalent diameter
        diameter = 2 * np.sqrt(float(r["cavity_area_mm2"]) / np.pi)
        for name in ("dim1_IS_AL_mm", "dim2_I_A_mm", "dim3_IL_AS_mm"):
            assert float(r[name]) == pytest.approx(diameter, rel=0.1)
        assert r["rv_present"] == "True"
    for z in slices:
        phase = {int(r["frame"]): int(r["phase"]) for r in rows if int(r["slice"]) == z}
        assert phase[analytic["ed_frame"]] == 0 and phase[analytic["es_frame"]] == 1
        assert 0 < sum(phase.values()) < num_frames

    before = (out / "lv_indices.csv").read_bytes()
    again = _run(subject, "--out", out)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert (out / "lv_indices.csv").read_bytes() == before
    assert _run(subject, "--out", out, "--overwrite", "--slices", "all").returncode == 0
    assert len(list(csv.DictReader((out / "lv_indices.csv").open()))) > len(rows)


def test_cli_refuses_bad_input(tmp_path):
    missing = _run(tmp_path / "nothing")
    assert missing.returncode == 2 and "no such" in missing.stderr
    (tmp_path / "notes.txt").write_text("x")
    wrong = _run(tmp_path / "notes.txt")
    assert wrong.returncode == 2 and "labels NIfTI" in wrong.stderr
    assert not list(tmp_path.glob("*.csv"))


def test_cli_on_a_single_labelled_frame_reports_no_ed_es_pair(phantom_cohort, tmp_path):
    frame = phantom_cohort / "phantom_000" / "frames" / "frame_00_gt.nii.gz"
    result = _run(frame, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "1 labelled frame (0): no ED/ES pair" in result.stdout and "frame 0 mean" in result.stdout
    assert "ES mean" not in result.stdout
