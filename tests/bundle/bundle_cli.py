"""Run a bundle as a user does (``python -m monai.bundle run ...``) and read its last line.

One copy for the bundle tests that go through the command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["bundle_command", "bundle_env", "run_bundle", "last_line", "phantom_datalist"]


def bundle_command(config: str, **options) -> list:
    """``python -m monai.bundle run --config_file CONFIG --key value ...``."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    return command


def bundle_env() -> dict:
    """One thread per process (two test workers share two cores), no warnings on stderr's last line."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_bundle(bundle: Path, config: str, timeout: int = 600, **options) -> subprocess.CompletedProcess:
    """Run ``config`` from the bundle's folder; the options as ``--key value``."""
    return subprocess.run(bundle_command(config, **options), cwd=str(bundle), capture_output=True, text=True,
                          timeout=timeout, env=bundle_env())


def last_line(result: subprocess.CompletedProcess) -> str:
    """The last non-empty line of stderr: where a failed run names the file or option."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def phantom_datalist(root: Path, num_subjects: int) -> Path:
    """A phantom cohort of ``num_subjects`` subjects (4 frames, 48 px, NIfTI only) indexed into ``root/datalist.json``."""
    from cmrssl.data.phantom import generate_cohort
    from cmrssl.data.phantom_index import index_phantom

    generate_cohort(root / "cohort", num_subjects=num_subjects, seed=3, num_frames=4, image_size=48, write_dicom=False)
    index_phantom(root / "cohort", root / "datalist.json", seed=0)
    return root / "datalist.json"
