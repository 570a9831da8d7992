"""``python tools/function.py`` end to end on phantom subjects: numbers against
the analytic JSON, outputs whole, no silent overwrite."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "function.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ["function.csv", "function.json", "volume_curve.png"]


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _assert_matches_analytic(result: dict, analytic: dict) -> None:
    for ours, theirs in (("lv_edv_ml", "edv_ml"), ("lv_esv_ml", "esv_ml"), ("lv_mass_g", "lv_mass_g"),
                         ("rv_edv_ml", "rv_edv_ml"), ("rv_esv_ml", "rv_esv_ml")):
        assert result[ours] == pytest.approx(analytic[theirs], rel=0.03), ours
    assert result["lv_ef_percent"] == pytest.approx(analytic["ef_percent"], rel=0.03)
    assert (result["ed_frame"], result["es_frame"]) == (analytic["ed_frame"], analytic["es_frame"])
    assert result["num_frames"] == analytic["num_frames"]
    assert result["spacing_zyx_mm"] == pytest.approx(analytic["spacing_zyx_mm"], rel=1e-3)


def test_cli_on_phantom_subjects_matches_analytic(phantom_cohort, tmp_path):
    subjects = json.loads((phantom_cohort / "cohort.json").read_text())["subjects"]
    assert any(json.loads((phantom_cohort / s / "analytic.json").read_text())["ed_frame"] != 0
               for s in subjects), "the cohort should exercise ED != frame 0"
    for name in subjects:
        # A private copy of the subject: the default output goes inside the study
        # folder, and the session cohort is shared with other tests.
        subject = tmp_path / name
        subject.mkdir()
        for file_name in ("sax_cine.nii.gz", "sax_cine_gt.nii.gz", "analytic.json"):
            shutil.copy2(phantom_cohort / name / file_name, subject / file_name)
        proc = _run(subject)
        assert proc.returncode == 0, proc.stderr
        assert "EDV (ml)" in proc.stdout and "ED frame" in proc.stdout
        out = subject / "function"
        assert sorted(p.name for p in out.iterdir()) == OUTPUTS
        analytic = json.loads((subject / "analytic.json").read_text())
        result = json.loads((out / "function.json").read_text())
        _assert_matches_analytic(result, analytic)
        assert len(result["lv_volume_curve_ml"]) == analytic["num_frames"]
        assert (out / "volume_curve.png").read_bytes()[:8] == PNG_MAGIC
        with (out / "function.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 1 and float(rows[0]["lv_edv_ml"]) == pytest.approx(result["lv_edv_ml"])


def test_cli_refuses_to_overwrite_and_leaves_files_untouched(phantom_cohort, tmp_path):
    subject = phantom_cohort / "phantom_001"
    out = tmp_path / "fn"
    assert _run(subject, "--out", out).returncode == 0
    before = _snapshot(out)
    proc = _run(subject, "--out", out)
    assert proc.returncode != 0
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fn"]  # no temporary folder left
    proc = _run(subject, "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS


def test_cli_on_labels_nifti_and_frame_folder_agree(phantom_cohort, tmp_path):
    subject = phantom_cohort / "phantom_002"
    analytic = json.loads((subject / "analytic.json").read_text())
    for study, out in ((subject / "sax_cine_gt.nii.gz", tmp_path / "from_nifti"),
                       (subject / "frames", tmp_path / "from_frames")):
        proc = _run(study, "--out", out)
        assert proc.returncode == 0, proc.stderr
        _assert_matches_analytic(json.loads((out / "function.json").read_text()), analytic)


def test_cli_bad_study_is_a_clear_error_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = _run(tmp_path / "empty", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "not a phantom subject" in proc.stderr and str(tmp_path / "empty") in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = _run(tmp_path / "missing", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "no such study" in proc.stderr
