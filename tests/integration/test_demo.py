"""Smoke test of tools/demo.py (what `make demo` runs) at tiny sizes; the demo itself is the full run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "tools" / "demo.py"
TINY = ["--subjects", "4", "--epochs", "1", "--num_frames", "6", "--image_size", "64"]


def _demo(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), "--workdir", str(workdir), *args], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_demo_runs_reuses_and_refuses(tmp_path):
    workdir = tmp_path / "demo"
    first = _demo(workdir, *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "analytic" in first.stdout and "LV EDV" in first.stdout and "verdict: " in first.stdout
    # the bundle's CPU size (configs/cpu.json), in training and inference alike, and no size of the demo's own
    assert first.stdout.count('"configs/cpu.json"]') == 2 and "--network_def" not in first.stdout
    for png in ("contours_ed.png", "contours_es.png"):
        assert png in first.stdout
    assert list((workdir / "inference").glob("*/contours_ed.png"))
    again = _demo(workdir, *TINY)
    assert again.returncode == 0 and "train: reusing" in again.stdout and "inference: reusing" in again.stdout
    other = _demo(workdir, *TINY[:-1], "48")
    assert other.returncode == 2 and "refused" in other.stderr and "--fresh" in other.stderr
