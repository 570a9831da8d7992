"""Shared fixtures: the phantom cohort (generated once per test session/worker)
and the real data folder beside the repository (skipped when absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The test oracle of cmrssl.metrics.lv_indices lives with its benchmark, outside the installed package.
sys.path.insert(0, str(REPO_ROOT / "tools" / "benchmarks"))
SHARED_DATA = Path(os.environ.get("CMRSSL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Under pytest-xdist (``make test``: ``-n 2``) each worker, and every bundle process it starts, would use as many
# torch threads as there are cores: two workers on two cores then run four busy threads and each test slows 2-4x.
# Each worker gets its share of the cores instead (an OMP_NUM_THREADS already set is kept), before torch is imported.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real ACDC / Sunnybrook scans); skips when not present."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def acdc_root(shared_data) -> Path:
    root = shared_data / "acdc" / "training"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.fixture(scope="session")
def sunnybrook_root(shared_data) -> Path:
    root = shared_data / "sunnybrook"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> Path:
    """A small deterministic phantom cohort (3 subjects, NIfTI + DICOM), made once per worker."""
    from cmrssl.data.phantom import generate_cohort

    out = tmp_path_factory.mktemp("phantom") / "cohort"
    generate_cohort(out, num_subjects=3, seed=0)
    return out
